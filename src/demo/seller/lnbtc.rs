//! The seller's x402 `exact` on `lnbtc` routes, written from the merged scheme
//! (x402-foundation/x402 `specs/schemes/exact/scheme_exact_lnbtc.md`), the server's side:
//!
//! - `/x402/…` — every challenge carries a fresh invoice whose description hash is the
//!   `http:1` binding of the request it answers (method, URL, body digest, the `accept`
//!   header); a paid retry is served only when the invoice it carries commits to the binding
//!   recomputed from the retry itself and its preimage is new. The answer carries
//!   `PAYMENT-RESPONSE`.
//! - `/x402lie/…` — a hostile server: `extra.requestHash` states this request's digest, but the
//!   invoice commits to another request (the same URL with `/other` appended). It must never be
//!   paid.

use super::dialects::spend;
use super::{response, text, Seller, ServedOver};
use crate::body::Body;
use crate::core::{PaymentHash, Preimage};
use crate::pay::dialect::x402::binding::{self, Binding};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The headers the seller binds (its configuration for these resources).
const BOUND_HEADERS: [&str; 1] = ["accept"];
/// Largest body the seller reads to bind.
const MAX_BODY: usize = 64 * 1024;

/// The `lnbtc` network id of a Lightning network (the BIP-122 reference of its genesis block).
pub(super) fn network_id(n: crate::invoice::Network) -> &'static str {
    use crate::invoice::Network::*;
    match n {
        Bitcoin => "lnbtc:000000000019d6689c085ae165831e93",
        Testnet => "lnbtc:000000000933ea01ad0ee984209779ba",
        Signet => "lnbtc:00000008819873e925422c1ff0f99f7c",
        Regtest => "lnbtc:0f9188f13cb7b2c71f2a335e3a4fc328",
    }
}

/// The URL the client called: the scheme it reached us over, its authority, the target as sent.
fn called_url(parts: &Parts) -> String {
    let scheme = parts.extensions.get::<ServedOver>().map_or("http", |s| s.0);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{authority}{target}")
}

/// The `http:1` binding of a request to `url`.
fn bind(parts: &Parts, url: &str, body: &[u8]) -> Result<Binding, binding::BindingError> {
    let names: Vec<String> = BOUND_HEADERS.iter().map(|s| s.to_string()).collect();
    binding::http(
        binding::HttpRequest {
            method: parts.method.as_str(),
            url,
            body,
        },
        &names,
        |name| {
            parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect()
        },
    )
}

impl Seller {
    /// The `/x402/…` and `/x402lie/…` routes.
    pub(super) async fn lnbtc(&self, req: Request<Incoming>, lie: bool) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "body unreadable or too large\n"),
        };
        let url = called_url(&parts);
        let bound = match bind(&parts, &url, &body) {
            Ok(b) => b,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        let network = network_id(self.config.minter.network());
        if let Some(hash) = self.lnbtc_verify(&parts, &bound) {
            let mut r = self.paid_content("x402", parts.uri.path());
            let settled =
                json!({"success": true, "transaction": hash.to_hex(), "network": network});
            if let Ok(v) = HeaderValue::from_str(&STANDARD.encode(settled.to_string())) {
                r.headers_mut().insert("payment-response", v);
            }
            return r;
        }
        // The lie: the invoice commits to another request than the one stated.
        let committed = if lie {
            match bind(&parts, &format!("{url}/other"), &body) {
                Ok(b) => b,
                Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        } else {
            bound.clone()
        };
        let amount = self.price("x402");
        let expiry = self.config.invoice_expiry_secs;
        let invoice = match self
            .config
            .invoices
            .invoice_hashed(
                amount,
                committed.canonical.as_bytes(),
                expiry,
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
        self.issued.insert(invoice.payment_hash, false);
        self.stats.challenges.fetch_add(1, Ordering::Relaxed);
        let decoded = crate::invoice::decode(&invoice.bolt11).ok();
        let required = json!({
            "x402Version": 2,
            "error": "Payment required",
            "resource": { "url": url },
            "accepts": [
                {
                    "scheme": "exact",
                    "network": "eip155:84532",
                    "amount": "1000",
                    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                    "maxTimeoutSeconds": 300,
                    "extra": { "name": "USDC", "version": "2" },
                },
                {
                    "scheme": "exact",
                    "network": network,
                    // LNbits invoices are whole sats: the amount is what the invoice carries.
                    "amount": decoded.as_ref().and_then(|d| d.amount).unwrap_or(amount).get().to_string(),
                    "asset": "BTC",
                    "payTo": decoded.as_ref().map(|d| hex::encode(d.payee)).unwrap_or_default(),
                    "maxTimeoutSeconds": decoded.as_ref().map_or(expiry, |d| d.expiry_secs),
                    "extra": {
                        "assetTransferMethod": "bolt11",
                        "paymentFlow": "upfront",
                        "requestHash": bound.hash_hex(),
                        "requestBindingProfile": "http:1",
                        "requestBindingParams": { "headers": BOUND_HEADERS },
                        "invoice": invoice.bolt11,
                    },
                },
            ],
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

    /// A `PAYMENT-SIGNATURE` whose invoice this seller issued, commits to the binding of the
    /// request as received now, and whose preimage is new: the payment hash, spent.
    fn lnbtc_verify(&self, parts: &Parts, bound: &Binding) -> Option<PaymentHash> {
        let value = parts.headers.get("payment-signature")?.to_str().ok()?;
        let json: Value = serde_json::from_slice(&STANDARD.decode(value.trim()).ok()?).ok()?;
        let invoice =
            crate::invoice::decode(json["accepted"]["extra"]["invoice"].as_str()?).ok()?;
        if invoice.description_hash != Some(bound.hash) {
            return None;
        }
        Preimage::verify_hex(json["payload"]["preimage"].as_str()?, &invoice.payment_hash).ok()?;
        spend(self, invoice.payment_hash).then_some(invoice.payment_hash)
    }
}
