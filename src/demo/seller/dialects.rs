//! The seller's other ways of asking to be paid, each as a real server of that kind behaves:
//!
//! - `/mpp/…` — MPP `Payment` with a Lightning `charge`: one credential per request, answered
//!   with `Payment-Receipt` (as mppx does); `/mpplie/…` states an amount its invoice does not
//!   carry (must never be paid);
//! - `/x402/…` and `/x402lie/…` — x402 `exact` on `lnbtc`, in `lnbtc.rs`;
//! - `/evm/…` — x402 on an EVM chain only: not payable from a Lightning wallet;
//! - `/mixed/…` — Aperture's `l402+mpp`: `LSAT`, `L402` (one invoice) and `Payment` (another
//!   invoice) in one 402; either answer is accepted;
//! - `/strict/…` — an LSAT-only server that refuses any other prefix (lsat-js, boltwall);
//! - `/single/…` — single-use tokens: a used token gets `401 {"error":"Token already used"}`
//!   with no challenge (l402kit), and so does a token of another service (`Invalid token`), as
//!   a server that answers any token it cannot use with a bare 401;
//! - `/svc/mpp` — an MPP charge among the L402 services of `/svc/`: one directory, two dialects
//!   (a token of a `/svc/` service sent there is answered with the MPP challenge).

use super::{challenge_response, response, text, Seller};
use crate::body::Body;
use crate::core::{PaymentHash, Preimage};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// A preimage proving payment of an invoice this seller issued for `kind`; single use.
pub(super) fn spend(seller: &Seller, hash: PaymentHash) -> bool {
    match seller.issued.get_mut(&hash) {
        Some(mut used) if !*used => {
            *used = true;
            seller.paid.insert(hash);
            true
        }
        _ => false,
    }
}

impl Seller {
    /// Routes for the non-default kinds; `None` for the plain L402 routes.
    pub(super) async fn other_kinds(
        &self,
        kind: &str,
        req: &Request<Incoming>,
        service: &str,
        path: &str,
    ) -> Option<Response<Body>> {
        if service == "svc-mpp" {
            return Some(self.mpp(req, path, false).await);
        }
        Some(match kind {
            "mpp" => self.mpp(req, path, false).await,
            "mpplie" => self.mpp(req, path, true).await,
            "evm" => evm_402(),
            "mixed" => self.mixed(req, service, path).await,
            "strict" => self.strict(req, service, path).await,
            "single" => self.single(req, service, path).await,
            _ => return None,
        })
    }

    /// A fresh invoice for `kind`, remembered as issued and unused.
    pub(super) async fn issue(
        &self,
        kind: &str,
    ) -> Result<crate::demo::mint::MintedInvoice, Response<Body>> {
        let invoice = self
            .config
            .invoices
            .invoice(
                self.price(kind),
                &format!("{kind} payment"),
                self.config.invoice_expiry_secs,
                self.config.clock.now_unix(),
            )
            .await
            .map_err(|e| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("challenge failure: {e}\n"),
                )
            })?;
        self.issued.insert(invoice.payment_hash, false);
        self.stats.challenges.fetch_add(1, Ordering::Relaxed);
        Ok(invoice)
    }

    pub(super) fn paid_content(&self, kind: &str, path: &str) -> Response<Body> {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        text(
            StatusCode::OK,
            &format!("paid content for {kind}: {path}\n"),
        )
    }

    /// The `Payment` challenge for a fresh invoice, as a header value.
    async fn mpp_challenge(&self, realm: &str, lie: bool) -> Result<String, Response<Body>> {
        let invoice = self.issue("mpp").await?;
        let network = match self.config.minter.network() {
            crate::invoice::Network::Bitcoin => "mainnet",
            crate::invoice::Network::Testnet => "testnet",
            crate::invoice::Network::Signet => "signet",
            crate::invoice::Network::Regtest => "regtest",
        };
        let amount = self.price("mpp");
        let stated = amount.get() / 1000 + u64::from(lie);
        let request = json!({
            "amount": stated.to_string(),
            "currency": "sat",
            "methodDetails": {
                "invoice": invoice.bolt11,
                "network": network,
                "paymentHash": invoice.payment_hash.to_hex(),
            },
        });
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let expires = crate::admin::render::rfc3339(self.config.clock.now() + 300);
        self.mpp_ids.insert(id.clone(), invoice.payment_hash);
        Ok(format!(
            "Payment id=\"{id}\", realm=\"{realm}\", method=\"lightning\", intent=\"charge\", request=\"{}\", expires=\"{expires}\"",
            URL_SAFE_NO_PAD.encode(request.to_string())
        ))
    }

    /// Checks `Authorization: Payment <b64url JSON>`; returns the receipt on success.
    fn mpp_verify(&self, req: &Request<Incoming>) -> Option<String> {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let encoded = value.strip_prefix("Payment ")?;
        let json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded.trim()).ok()?).ok()?;
        let id = json["challenge"]["id"].as_str()?;
        let hash = *self.mpp_ids.get(id)?;
        // The request must be echoed exactly as it was sent.
        json["challenge"]["request"].as_str()?;
        let preimage = json["payload"]["preimage"].as_str()?;
        Preimage::verify_hex(preimage, &hash).ok()?;
        if !spend(self, hash) {
            return None;
        }
        let receipt = json!({
            "status": "success",
            "method": "lightning",
            "timestamp": crate::admin::render::rfc3339(self.config.clock.now()),
            "reference": hash.to_hex(),
            "challengeId": id,
        });
        Some(URL_SAFE_NO_PAD.encode(receipt.to_string()))
    }

    async fn mpp(&self, req: &Request<Incoming>, path: &str, lie: bool) -> Response<Body> {
        if let Some(receipt) = self.mpp_verify(req) {
            let mut r = self.paid_content("mpp", path);
            if let Ok(v) = HeaderValue::from_str(&receipt) {
                r.headers_mut().insert("payment-receipt", v);
            }
            return r;
        }
        let challenge = match self.mpp_challenge("127.0.0.1", lie).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let body = json!({
            "type": "https://paymentauth.org/problems/payment-required",
            "title": "Payment Required",
            "status": 402,
            "detail": "Payment is required.",
        });
        let mut r = response(
            StatusCode::PAYMENT_REQUIRED,
            "application/problem+json",
            Bytes::from(body.to_string()),
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    async fn mixed(&self, req: &Request<Incoming>, service: &str, path: &str) -> Response<Body> {
        if self.mpp_verify(req).is_some() || self.authorized(req, service) {
            return self.paid_content(service, path);
        }
        let invoice = match self.issue(service).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let token = self.mint_token(service, &invoice.payment_hash);
        let payment = match self.mpp_challenge("127.0.0.1", false).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut r = challenge_response("aperture", &token, &invoice.bolt11);
        if let Ok(v) = HeaderValue::from_str(&payment) {
            r.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
        r
    }

    async fn strict(&self, req: &Request<Incoming>, service: &str, path: &str) -> Response<Body> {
        let lsat = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("LSAT "));
        if lsat && self.authorized(req, service) {
            return self.paid_content(service, path);
        }
        let invoice = match self.issue(service).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let token = self.mint_token(service, &invoice.payment_hash);
        challenge_response("lsat", &token, &invoice.bolt11)
    }

    async fn single(&self, req: &Request<Incoming>, service: &str, path: &str) -> Response<Body> {
        if req.headers().contains_key(header::AUTHORIZATION) {
            if let Some(hash) = self.l402_hash(req, service) {
                if spend(self, hash) {
                    return self.paid_content(service, path);
                }
                return response(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    Bytes::from_static(br#"{"error":"Token already used"}"#),
                );
            }
            if self.signed_here(req) {
                return response(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    Bytes::from_static(br#"{"error":"Invalid token"}"#),
                );
            }
        }
        let invoice = match self.issue(service).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let token = self.mint_token(service, &invoice.payment_hash);
        challenge_response("bare", &token, &invoice.bolt11)
    }
}

impl Seller {
    /// Whether the request carries an L402/LSAT token this seller signed (for any service).
    fn signed_here(&self, req: &Request<Incoming>) -> bool {
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((_, rest)) = value.split_once(' ') else {
            return false;
        };
        let token = rest.rsplit_once(':').map_or(rest, |(t, _)| t);
        crate::pay::dialect::l402::macaroon::decode_token(token)
            .is_ok_and(|mac| crate::demo::macaroon::verify_signature(&self.root_key(), &mac))
    }
}

/// An x402 402 offering only USDC on an EVM chain (as `@x402/express` sends).
fn evm_402() -> Response<Body> {
    let required = json!({
        "x402Version": 2,
        "error": "Payment required",
        "accepts": [{
            "scheme": "exact",
            "network": "eip155:84532",
            "amount": "1000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "maxTimeoutSeconds": 300,
            "extra": { "name": "USDC", "version": "2" },
        }],
    });
    let mut r = response(
        StatusCode::PAYMENT_REQUIRED,
        "application/json",
        Bytes::from_static(b"{}"),
    );
    if let Ok(v) = HeaderValue::from_str(&STANDARD.encode(required.to_string())) {
        r.headers_mut().insert("payment-required", v);
    }
    r
}
