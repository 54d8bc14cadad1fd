//! A small L402 seller: mints Aperture-style macaroons bound to invoices from its invoice source
//! (the dev minter, or an LNbits wallet) and checks the `Authorization: L402 <token>:<preimage>`
//! it gets back. Used by `l402-proxy demo` and by the tests, which is why it speaks every
//! challenge dialect servers are seen to use.
//!
//! Routes (the first path segment is the service):
//! - `/free/…` — no payment.
//! - `/sse/…` — paid; an event stream (`?n=` events, `?ms=` apart).
//! - `/echo/…` — paid; echoes the method and request body.
//! - `/hostile/<kind>` — a 402 whose invoice must never be paid (amountless, expired,
//!   wrong-network, garbage, unknown-feature, mismatch, huge).
//! - `/inspect/…` — free; lists the request headers the seller received.
//! - `/offers/…` — a Fewsats-style JSON 402 with no L402 challenge (must pass through).
//! - `/basic/…` — a plain 401 Basic challenge (must pass through).
//! - `/never/…` — a fresh challenge even for a valid token.
//! - `/upgrade/…` — paid; `Upgrade: echo` switches protocols and echoes bytes back.
//! - `/fragile/…` — paid; a token is taken once, then answered 431 (headers too large), as a
//!   server that cannot take a token does.
//! - anything else — paid content for that service.
//!
//! `?dialect=` picks the challenge form: aperture (default: LSAT line then L402 line, `macaroon=`),
//! spec (`version="0", token=`), bare (unquoted), lsat, folded (both on one line), params (no
//! scheme), urlsafe (unpadded URL-safe token), status401 (spec form on a 401).

mod dialects;
mod lnbtc;
mod mcp;

use super::lnbits::LnbitsInvoices;
use super::macaroon::{self as mint_macaroon, identifier_v0};
use super::mint::{DevInvoiceMinter, MintedInvoice};
use crate::body::{self, Body, BoxError};
use crate::core::time::{Clock, SystemClock};
use crate::core::{Msat, PaymentHash, Preimage};
use crate::pay::dialect::l402::macaroon;
use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashSet;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// BOLT 11's own amountless example: valid signature, no amount.
const AMOUNTLESS_INVOICE: &str = "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql";
/// BOLT 11's example with an unknown required feature bit: readers must refuse it.
const UNKNOWN_FEATURE_INVOICE: &str = "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q4psqqqqqqqqqqqqqqqqsgqtqyx5vggfcsll4wu246hz02kp85x4katwsk9639we5n5yngc3yhqkm35jnjw4len8vrnqnf5ejh0mzj9n3vz2px97evektfm2l6wqccp3y7372";

/// Where the seller's invoices come from.
#[derive(Clone)]
pub enum InvoiceSource {
    /// Minted locally for the dev network (the demo and most tests).
    Dev(DevInvoiceMinter),
    /// Created on an LNbits wallet, so a real LNbits can pay them (tests with LNbits).
    Lnbits(Box<LnbitsInvoices>),
}

impl InvoiceSource {
    async fn invoice(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u64,
        now: u64,
    ) -> Result<MintedInvoice, String> {
        match self {
            InvoiceSource::Dev(minter) => minter
                .mint_at(amount, memo, now, expiry_secs, minter.network())
                .map_err(|e| e.to_string()),
            InvoiceSource::Lnbits(lnbits) => lnbits
                .create(amount, memo, expiry_secs)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// An invoice committing to SHA-256(`description`) (an x402 `lnbtc` request binding).
    async fn invoice_hashed(
        &self,
        amount: Msat,
        description: &[u8],
        expiry_secs: u64,
        now: u64,
    ) -> Result<MintedInvoice, String> {
        match self {
            InvoiceSource::Dev(minter) => {
                let hash = sha2::Sha256::digest(description).into();
                minter
                    .mint_hashed_at(amount, hash, now, expiry_secs)
                    .map_err(|e| e.to_string())
            }
            InvoiceSource::Lnbits(lnbits) => lnbits
                .create_hashed(amount, description, expiry_secs)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// What the seller charges and how its tokens behave.
#[derive(Clone)]
pub struct SellerConfig {
    /// Mints the `/hostile/…` invoices, which must never be paid, whatever `invoices` is.
    pub minter: DevInvoiceMinter,
    /// Where paid routes get their invoices (default: `minter`).
    pub invoices: InvoiceSource,
    /// What one paid request costs, unless `prices` or a later [`Seller::set_price`] names its
    /// service.
    pub price: Msat,
    /// Per-service prices overriding `price`.
    pub prices: HashMap<String, Msat>,
    /// When set, tokens carry `<service>_valid_until=now+ttl`.
    pub token_ttl_secs: Option<u64>,
    /// The `services=` caveat a service's tokens carry instead of its own name (a hostile
    /// seller's text, for tests of what reaches the operator).
    pub caveat_names: HashMap<String, String>,
    /// How long each invoice it issues stays payable, in seconds.
    pub invoice_expiry_secs: u64,
    /// When set, each SSE event after the first waits for a permit (`release_events`), so a
    /// test can prove events arrive one by one without relying on timing.
    pub gate_events: bool,
    /// The seller's clock: invoice timestamps and token expiry (tests share theirs with the
    /// proxy).
    pub clock: Arc<dyn Clock>,
}

impl SellerConfig {
    /// A seller around `minter`: its invoices, 10 sats a request, no per-service prices,
    /// tokens that never expire, invoices payable for 600 s, ungated SSE, the system clock.
    pub fn new(minter: DevInvoiceMinter) -> SellerConfig {
        SellerConfig {
            invoices: InvoiceSource::Dev(minter.clone()),
            minter,
            price: Msat::from_sats(10),
            prices: HashMap::new(),
            token_ttl_secs: None,
            caveat_names: HashMap::new(),
            invoice_expiry_secs: 600,
            gate_events: false,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Counters a test or the demo can read.
#[derive(Debug, Default)]
pub struct SellerStats {
    /// 402 challenges issued, each with a fresh invoice (`/hostile/` ones included).
    pub challenges: AtomicU64,
    /// Paid requests let through on a valid credential.
    pub accepted: AtomicU64,
    /// Requests whose `Authorization` was not accepted (each answered with a fresh challenge).
    pub rejected_tokens: AtomicU64,
    /// Requests to `/free/…`.
    pub free: AtomicU64,
}

/// The seller: its config, the root key its macaroons are signed with (until
/// [`Seller::rotate_root_key`]), and what it has seen paid. Serve it with [`serve_http`],
/// [`serve_https`] or [`start`].
pub struct Seller {
    config: SellerConfig,
    root_key: std::sync::RwLock<[u8; 32]>,
    events: Arc<tokio::sync::Semaphore>,
    /// What it has done so far.
    pub stats: SellerStats,
    /// Payment hashes proven paid by a presented preimage.
    paid: DashSet<PaymentHash>,
    /// Invoices of the single-use kinds (MPP, x402, `/single/`), and whether each was spent.
    issued: dashmap::DashMap<PaymentHash, bool>,
    /// MPP challenge ids and the invoice each is for.
    mpp_ids: dashmap::DashMap<String, PaymentHash>,
    /// Prices changed while running (a seller raising its price).
    repriced: dashmap::DashMap<String, Msat>,
    /// `/fragile/` credentials already taken once.
    fragile_seen: DashSet<Vec<u8>>,
    /// How many of the next requests carrying a credential get their connection dropped with
    /// no response (a seller resetting paid replays, for tests).
    resets: AtomicU64,
}

impl Seller {
    /// A seller with a fresh random root key and nothing paid yet.
    pub fn new(config: SellerConfig) -> Arc<Seller> {
        Arc::new(Seller {
            config,
            root_key: std::sync::RwLock::new(rand::random()),
            events: Arc::new(tokio::sync::Semaphore::new(0)),
            stats: SellerStats::default(),
            paid: DashSet::new(),
            issued: dashmap::DashMap::new(),
            mpp_ids: dashmap::DashMap::new(),
            repriced: dashmap::DashMap::new(),
            fragile_seen: DashSet::new(),
            resets: AtomicU64::new(0),
        })
    }

    /// Changes a service's price from now on (what a seller raising its price does).
    pub fn set_price(&self, service: &str, price: Msat) {
        self.repriced.insert(service.to_string(), price);
    }

    /// Distinct payments this seller has seen proven.
    pub fn paid_count(&self) -> usize {
        self.paid.len()
    }

    /// 402 challenges issued so far (`stats.challenges`).
    pub fn challenges(&self) -> u64 {
        self.stats.challenges.load(Ordering::Relaxed)
    }

    /// Paid requests let through so far (`stats.accepted`).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Lets `n` more gated SSE events out.
    pub fn release_events(&self, n: usize) {
        self.events.add_permits(n);
    }

    /// Forgets every token issued so far, as a server whose root key rotated does.
    pub fn rotate_root_key(&self) {
        *self.root_key.write().unwrap_or_else(|p| p.into_inner()) = rand::random();
    }

    fn root_key(&self) -> [u8; 32] {
        *self.root_key.read().unwrap_or_else(|p| p.into_inner())
    }

    fn price(&self, service: &str) -> Msat {
        if let Some(p) = self.repriced.get(service) {
            return *p;
        }
        self.config
            .prices
            .get(service)
            .copied()
            .unwrap_or(self.config.price)
    }

    /// Drops the connection of the next `n` requests that carry a credential, before any
    /// response byte, as a seller whose connection resets on the paid replay does.
    pub fn reset_next_paid(&self, n: u64) {
        self.resets.store(n, Ordering::Relaxed);
    }

    /// Whether this request's connection is to be dropped (see [`Seller::reset_next_paid`]).
    fn resets_now(&self, req: &Request<Incoming>) -> bool {
        let carries = ["authorization", "payment-signature", "x-payment"]
            .iter()
            .any(|h| req.headers().contains_key(*h));
        carries
            && self
                .resets
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let mut segments = path.trim_start_matches('/').split('/');
        let kind = segments.next().unwrap_or("").to_string();
        // Under `/svc/` and the other kinds, the second segment is the service: several
        // services on one origin, one directory (as Sats4AI's tools are).
        let service = match kind.as_str() {
            "svc" | "mixed" | "strict" | "single" => segments
                .next()
                .filter(|s| !s.is_empty())
                .map(|s| format!("{kind}-{s}"))
                .unwrap_or_else(|| kind.clone()),
            _ => kind.clone(),
        };
        if kind == "mcp" || kind == "mcpsse" {
            return self.mcp(req, kind == "mcpsse").await;
        }
        if kind == "x402" || kind == "x402lie" {
            return self.lnbtc(req, kind == "x402lie").await;
        }
        if let Some(r) = self.other_kinds(&kind, &req, &service, &path).await {
            return r;
        }
        match service.as_str() {
            "" => {
                return text(
                    StatusCode::OK,
                    "l402-proxy demo seller: try /weather/today (paid), /free/hello\n",
                )
            }
            "free" => {
                self.stats.free.fetch_add(1, Ordering::Relaxed);
                return text(StatusCode::OK, "free content\n");
            }
            "offers" => return offers_402(),
            "inspect" => {
                let mut seen = String::new();
                for (name, value) in req.headers() {
                    seen.push_str(&format!(
                        "{name}: {}\n",
                        String::from_utf8_lossy(value.as_bytes())
                    ));
                }
                return text(StatusCode::OK, &seen);
            }
            "basic" => {
                let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"seller\""),
                );
                return r;
            }
            "hostile" => return self.hostile(&path),
            // `/invoice/<sats>`: a fresh invoice of this seller's, for a test server that sells
            // through it (the mppx MCP server of tests/paid_tools.rs).
            "invoice" => return self.invoice_json(&path).await,
            _ => {}
        }
        // `never` answers every token with a fresh challenge, as a server with a bug or a
        // metered balance would: the proxy must pay once and hand back the second 402.
        if service == "never" || !self.authorized(&req, &service) {
            let dialect = query_param(&query, "dialect").unwrap_or("aperture");
            return self.challenge(&service, dialect).await;
        }
        if service == "fragile" {
            let credential = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            if !self.fragile_seen.insert(credential) {
                return response(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "text/plain",
                    Bytes::from_static(b"request header fields too large\n"),
                );
            }
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        match service.as_str() {
            "sse" => sse(&query, self.config.gate_events.then(|| self.events.clone())),
            "upgrade" => echo_upgrade(req),
            "echo" => {
                let method = req.method().clone();
                match req.into_body().collect().await {
                    Ok(body) => {
                        let mut out = format!("{method} ").into_bytes();
                        out.extend_from_slice(&body.to_bytes());
                        response(StatusCode::OK, "application/octet-stream", Bytes::from(out))
                    }
                    Err(_) => text(StatusCode::BAD_REQUEST, "body read failed\n"),
                }
            }
            _ => text(
                StatusCode::OK,
                &format!("paid content for {service}: {path}\n"),
            ),
        }
    }

    /// Checks `Authorization: L402|LSAT <token>:<preimage>` against our root key and the service.
    async fn invoice_json(&self, path: &str) -> Response<Body> {
        let Some(sats) = path.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
            return text(StatusCode::BAD_REQUEST, "GET /invoice/<sats>\n");
        };
        match self
            .config
            .invoices
            .invoice(
                Msat::from_sats(sats),
                "invoice",
                self.config.invoice_expiry_secs,
                self.config.clock.now_unix(),
            )
            .await
        {
            Ok(i) => {
                self.issued.insert(i.payment_hash, false);
                let json = serde_json::json!({"bolt11": i.bolt11, "payment_hash": i.payment_hash.to_hex()});
                response(
                    StatusCode::OK,
                    "application/json",
                    Bytes::from(json.to_string()),
                )
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        }
    }

    fn authorized(&self, req: &Request<Incoming>, service: &str) -> bool {
        let ok = self.l402_hash(req, service).is_some();
        if !ok && req.headers().contains_key(header::AUTHORIZATION) {
            self.stats.rejected_tokens.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The payment hash a valid L402/LSAT credential for `service` proves paid.
    fn l402_hash(&self, req: &Request<Incoming>, service: &str) -> Option<PaymentHash> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?;
        self.verify(value, service)
    }

    fn verify(&self, value: &str, service: &str) -> Option<PaymentHash> {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("l402") && !scheme.eq_ignore_ascii_case("lsat") {
            return None;
        }
        let (token, preimage) = rest.rsplit_once(':')?;
        let mac = macaroon::decode_token(token).ok()?;
        if !mint_macaroon::verify_signature(&self.root_key(), &mac) {
            return None;
        }
        let hash = mac.payment_hash_v0().map(PaymentHash)?;
        if Preimage::verify_hex(preimage, &hash).is_err() {
            return None;
        }
        let wanted = format!("{}:", self.caveat_name(service));
        if !mac
            .services()
            .is_some_and(|s| s.split(',').any(|x| x.starts_with(&wanted)))
        {
            return None;
        }
        let until_key = format!("{service}_valid_until=");
        let expired = mac.caveats.iter().any(|c| {
            c.strip_prefix(&until_key)
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|until| self.config.clock.now_unix() >= until)
        });
        if expired {
            return None;
        }
        self.paid.insert(hash);
        Some(hash)
    }

    /// What the `services=` caveat calls `service` (`caveat_names`, else its own name).
    fn caveat_name<'a>(&'a self, service: &'a str) -> &'a str {
        self.config
            .caveat_names
            .get(service)
            .map_or(service, String::as_str)
    }

    fn mint_token(&self, service: &str, hash: &PaymentHash) -> Vec<u8> {
        let id = identifier_v0(&hash.0, &rand::random());
        let mut caveats = vec![
            format!("services={}:0", self.caveat_name(service)),
            format!("{service}_capabilities="),
        ];
        if let Some(ttl) = self.config.token_ttl_secs {
            caveats.push(format!(
                "{service}_valid_until={}",
                self.config.clock.now_unix() + ttl
            ));
        }
        mint_macaroon::encode_v2(&mint_macaroon::mint(
            &self.root_key(),
            "lsat",
            &id,
            &caveats,
        ))
    }

    async fn challenge(&self, service: &str, dialect: &str) -> Response<Body> {
        let invoice = match self
            .config
            .invoices
            .invoice(
                self.price(service),
                &format!("L402 {service}"),
                self.config.invoice_expiry_secs,
                self.config.clock.now_unix(),
            )
            .await
        {
            Ok(i) => i,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("challenge failure: {e}\n"),
                )
            }
        };
        self.stats.challenges.fetch_add(1, Ordering::Relaxed);
        let token = self.mint_token(service, &invoice.payment_hash);
        challenge_response(dialect, &token, &invoice.bolt11)
    }

    fn hostile(&self, path: &str) -> Response<Body> {
        let kind = path
            .trim_start_matches("/hostile/")
            .split('/')
            .next()
            .unwrap_or("");
        let minter = &self.config.minter;
        let fresh = |amount: Msat| {
            minter
                .mint_at(
                    amount,
                    "hostile",
                    self.config.clock.now_unix(),
                    600,
                    minter.network(),
                )
                .map(|i| (i.bolt11, i.payment_hash))
        };
        let made = match kind {
            "amountless" => Ok((AMOUNTLESS_INVOICE.to_string(), PaymentHash([0; 32]))),
            "unknown-feature" => Ok((UNKNOWN_FEATURE_INVOICE.to_string(), PaymentHash([0; 32]))),
            "expired" => minter
                .mint_at(
                    Msat(10_000),
                    "old",
                    self.config.clock.now_unix() - 7200,
                    60,
                    minter.network(),
                )
                .map(|i| (i.bolt11, i.payment_hash)),
            "wrong-network" => {
                let other = match minter.network() {
                    crate::invoice::Network::Bitcoin => crate::invoice::Network::Testnet,
                    _ => crate::invoice::Network::Bitcoin,
                };
                minter
                    .mint_at(
                        Msat(10_000),
                        "elsewhere",
                        self.config.clock.now_unix(),
                        600,
                        other,
                    )
                    .map(|i| (i.bolt11, i.payment_hash))
            }
            "garbage" => Ok(("lnbcrt10u1notaninvoice".to_string(), PaymentHash([0; 32]))),
            "bad-checksum" => fresh(Msat(10_000)).map(|(b, h)| (corrupt_last_char(&b), h)),
            "huge" => fresh(Msat::from_sats(10_000_000)),
            "mismatch" => fresh(Msat(10_000)).map(|(b, _)| (b, PaymentHash([7; 32]))),
            _ => return text(StatusCode::NOT_FOUND, "unknown hostile kind\n"),
        };
        match made {
            Ok((bolt11, hash)) => {
                self.stats.challenges.fetch_add(1, Ordering::Relaxed);
                let token = self.mint_token("hostile", &hash);
                challenge_response("spec", &token, &bolt11)
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        }
    }
}

/// Switches protocols (`Upgrade: echo`) and echoes every byte back: a paid WebSocket-like stream
/// without the framing, enough to prove upgrades cross the proxy.
fn echo_upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"));
    if !wants {
        return text(StatusCode::BAD_REQUEST, "send Upgrade: echo\n");
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on.await {
            let mut io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("echo"));
    r
}

fn corrupt_last_char(s: &str) -> String {
    let mut out: String = s.chars().take(s.len().saturating_sub(1)).collect();
    out.push(if s.ends_with('q') { 'p' } else { 'q' });
    out
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A 402 (or 401) with the challenge written in one of the dialects seen in the wild.
fn challenge_response(dialect: &str, token: &[u8], invoice: &str) -> Response<Body> {
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(token);
    let mut status = StatusCode::PAYMENT_REQUIRED;
    let lines: Vec<String> = match dialect {
        "spec" => vec![format!("L402 version=\"0\", token=\"{std_b64}\", invoice=\"{invoice}\"")],
        "bare" => vec![format!("L402 macaroon={std_b64}, invoice={invoice}")],
        "lsat" => vec![format!("LSAT macaroon=\"{std_b64}\", invoice=\"{invoice}\"")],
        "folded" => vec![format!(
            "LSAT macaroon=\"{std_b64}\", invoice=\"{invoice}\", L402 macaroon=\"{std_b64}\", invoice=\"{invoice}\""
        )],
        "params" => vec![format!("macaroon=\"{std_b64}\" invoice=\"{invoice}\"")],
        "urlsafe" => {
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
            vec![format!("L402 macaroon=\"{url}\",invoice=\"{invoice}\"")]
        }
        "status401" => {
            status = StatusCode::UNAUTHORIZED;
            vec![format!("L402 version=\"0\", token=\"{std_b64}\", invoice=\"{invoice}\"")]
        }
        _ => vec![
            format!("LSAT macaroon=\"{std_b64}\", invoice=\"{invoice}\""),
            format!("L402 macaroon=\"{std_b64}\", invoice=\"{invoice}\""),
        ],
    };
    let mut r = text(status, "payment required\n");
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for line in lines {
        if let Ok(v) = HeaderValue::from_str(&line) {
            h.append(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

fn offers_402() -> Response<Body> {
    let body = r#"{"version":"0.2.2","payment_request_url":"http://127.0.0.1/pay","payment_context_token":"x","offers":[{"offer_id":"o1","amount":1,"currency":"USD"}]}"#;
    response(
        StatusCode::PAYMENT_REQUIRED,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    )
}

fn sse(query: &str, gate: Option<Arc<tokio::sync::Semaphore>>) -> Response<Body> {
    let n: u32 = query_param(query, "n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .min(1000);
    let ms: u64 = query_param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .min(10_000);
    let events = futures_util::stream::unfold(0u32, move |i| {
        let gate = gate.clone();
        async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                match gate {
                    Some(gate) => gate.acquire().await.ok()?.forget(),
                    None => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            let frame = Frame::data(Bytes::from(format!("id: {i}\ndata: event {i}\n\n")));
            Some((Ok::<_, BoxError>(frame), i + 1))
        }
    });
    let mut r = Response::new(StreamBody::new(events).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}

fn response(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Body> {
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The seller's own TLS identity: a throwaway CA (PEM, for `tls.upstream_roots` or a client's
/// trust store) and a leaf for localhost and 127.0.0.1.
pub struct SellerTls {
    /// The CA certificate, PEM: what a client must trust to reach the seller over HTTPS.
    pub ca_pem: String,
    /// The server side: the leaf and the CA as its chain, ALPN `h2` and `http/1.1`.
    pub server: Arc<rustls::ServerConfig>,
}

impl SellerTls {
    /// A fresh CA and a leaf for `localhost` and `127.0.0.1`.
    pub fn generate() -> anyhow::Result<SellerTls> {
        SellerTls::generate_for(&["localhost".to_string(), "127.0.0.1".to_string()])
    }

    /// As `generate`, with a leaf naming `names` (DNS names or IP addresses), e.g. the seller's
    /// service name on a compose network.
    pub fn generate_for(names: &[String]) -> anyhow::Result<SellerTls> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "l402-proxy demo seller CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(names.to_vec())?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SellerTls {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        })
    }
}

/// Serves the seller on a plain-HTTP listener until the task is dropped.
pub async fn serve_http(seller: Arc<Seller>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_io(seller.clone(), TokioIo::new(stream), "http"));
    }
}

/// Serves the seller over TLS (h2 or HTTP/1.1) until the task is dropped.
pub async fn serve_https(
    seller: Arc<Seller>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let seller = seller.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                serve_io(seller, TokioIo::new(tls), "https").await;
            }
        });
    }
}

/// The scheme a request reached the seller over (`http`, `https`): the x402 `lnbtc` route
/// binds the URL the client called.
#[derive(Debug, Clone, Copy)]
struct ServedOver(&'static str);

async fn serve_io<I>(seller: Arc<Seller>, io: I, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        let seller = seller.clone();
        req.extensions_mut().insert(ServedOver(scheme));
        async move {
            if seller.resets_now(&req) {
                return Err(ConnectionReset);
            }
            Ok(seller.handle(req).await)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await;
}

/// Why a connection was dropped without a response (tests' resets).
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the seller")
    }
}

impl std::error::Error for ConnectionReset {}

/// A running seller: where it listens and the CA its HTTPS side uses.
/// Dropping it stops both listeners.
pub struct RunningSeller {
    /// The seller being served.
    pub seller: Arc<Seller>,
    /// Its plain-HTTP address, with the port actually bound.
    pub http: SocketAddr,
    /// Its HTTPS address, with the port actually bound.
    pub https: SocketAddr,
    /// The CA its HTTPS side chains to, PEM (see [`SellerTls::ca_pem`]).
    pub ca_pem: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningSeller {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Starts the seller on `ip` with ephemeral HTTP and HTTPS ports.
pub async fn start(seller: Arc<Seller>, ip: std::net::IpAddr) -> anyhow::Result<RunningSeller> {
    start_on(seller, SocketAddr::new(ip, 0), SocketAddr::new(ip, 0)).await
}

/// Starts the seller on the given HTTP and HTTPS addresses (port 0: any free one).
pub async fn start_on(
    seller: Arc<Seller>,
    http: SocketAddr,
    https: SocketAddr,
) -> anyhow::Result<RunningSeller> {
    let tls = SellerTls::generate()?;
    let http_listener = TcpListener::bind(http).await?;
    let https_listener = TcpListener::bind(https).await?;
    let http = http_listener.local_addr()?;
    let https = https_listener.local_addr()?;
    let tasks = vec![
        tokio::spawn(serve_http(seller.clone(), http_listener)),
        tokio::spawn(serve_https(seller.clone(), https_listener, tls.server)),
    ];
    Ok(RunningSeller {
        seller,
        http,
        https,
        ca_pem: tls.ca_pem,
        tasks,
    })
}
