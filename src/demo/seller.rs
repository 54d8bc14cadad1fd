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

mod challenge;
mod dialects;
mod lnbtc;
mod mcp;
mod responses;
mod serve;
mod token;

use super::lnbits::LnbitsInvoices;
use super::mint::{DevInvoiceMinter, MintedInvoice};
use crate::body::Body;
use crate::core::time::{Clock, SystemClock};
use crate::core::{Msat, PaymentHash};
use bytes::Bytes;
use challenge::challenge_response;
use dashmap::DashSet;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use responses::{echo_upgrade, offers_402, query_param, response, sse, text};
use serve::ServedOver;
pub use serve::{serve_http, serve_https, start, start_on, RunningSeller, SellerTls};
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}
