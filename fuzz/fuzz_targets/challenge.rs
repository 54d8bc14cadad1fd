//! Every dialect's challenge grammar (L402/LSAT, MPP `Payment`, x402 `PAYMENT-REQUIRED`) on
//! hostile response headers. Must never panic.
//!
//! Input: a header block, one line per `\n` (a trailing `\r` is dropped), the shape of the
//! `tests/fixtures/third-party-402s/*.headers` files, so those are seeds as they are:
//! - `HTTP/<v> <code> ...` sets the status (default 402);
//! - `name: value`, where `name` is a valid header name, appends that header (so
//!   `payment-required: ...`, `content-type: ...` and `www-authenticate: ...` lines);
//! - `x-fuzz-payment-required-json: <json>` appends `PAYMENT-REQUIRED: base64(<json>)`, so
//!   the fuzzer can mutate x402's JSON directly rather than through base64;
//! - any other line is one more `WWW-Authenticate` value, as raw bytes (a challenge line
//!   such as `L402 token="…", invoice="…"` is not a header name, so it lands here).
//!
//! Every payable offer is then exercised the way the payment layer would: its invoice decoded,
//! `terms.check` against it, the credential built and, for stored credentials, restored.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use l402_proxy::config::PayScheme;
use l402_proxy::core::money::{PaymentHash, Preimage};
use l402_proxy::pay::dialect::l402::grammar;
use l402_proxy::pay::dialect::{Dialects, RequestHead, ResponseHead};
use l402_proxy::pay::mcp;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The dialects as a default config builds them, and with every scheme paid.
fn dialects() -> &'static [Dialects; 2] {
    static D: OnceLock<[Dialects; 2]> = OnceLock::new();
    D.get_or_init(|| [Dialects::default(), Dialects::from_names(&PayScheme::ALL)])
}

/// A preimage and its own hash: credentials are built from any verified pair (the layer
/// checks the invoice's hash before; here only the building is under test).
fn preimage() -> Preimage {
    let raw = [0x5a; 32];
    let hash = PaymentHash(Sha256::digest(raw).into());
    Preimage::verify(raw, &hash).expect("sha256(raw) is its hash")
}

fn status_of(line: &[u8]) -> Option<StatusCode> {
    let text = std::str::from_utf8(line).ok()?;
    let code = text.split_whitespace().nth(1)?;
    StatusCode::from_bytes(code.as_bytes()).ok()
}

fn head_of(data: &[u8]) -> (StatusCode, HeaderMap) {
    let mut status = StatusCode::PAYMENT_REQUIRED;
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"HTTP/") {
            if let Some(s) = status_of(line) {
                status = s;
            }
            continue;
        }
        let named = line.iter().position(|&b| b == b':').and_then(|colon| {
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = line[colon + 1..].trim_ascii();
            if name == "x-fuzz-payment-required-json" {
                let encoded = STANDARD.encode(value);
                return Some((
                    HeaderName::from_static("payment-required"),
                    HeaderValue::from_str(&encoded).ok()?,
                ));
            }
            Some((name, HeaderValue::from_bytes(value).ok()?))
        });
        match named {
            Some((name, value)) => {
                headers.append(name, value);
            }
            None => {
                if let Ok(value) = HeaderValue::from_bytes(line) {
                    headers.append(http::header::WWW_AUTHENTICATE, value);
                }
            }
        }
    }
    (status, headers)
}

fuzz_target!(|data: &[u8]| {
    // The L402 grammar straight on the bytes, as one value and line by line.
    let _ = grammar::parse_challenges([data]);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let parsed = grammar::parse_challenges(lines.iter().copied());
    if let Some(chosen) = grammar::select(&parsed) {
        let _ = grammar::authorization_value(chosen.scheme, &chosen.token, &preimage());
    }

    let (status, headers) = head_of(data);
    let proof = preimage();
    // The agent's request the offers bind to (x402 lnbtc): the bytes are its body too, so
    // the tool-call and binding paths read hostile input as well.
    let (method, uri) = (Method::POST, Uri::from_static("https://shop.test/mcp?x=1"));
    let request = RequestHead {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: Some(data),
    };
    // A JSON-RPC answer carrying a payment requirement (MCP tool calls), on the same bytes.
    if let (Some(call), Ok(message)) = (
        mcp::ToolCall::of(&request),
        serde_json::from_slice::<serde_json::Value>(data),
    ) {
        if let Some((_, offers)) = mcp::requirement(&message, &request, &call) {
            for offer in &offers.payable {
                let _ = offer.terms.credential(&proof);
            }
        }
    }
    for (i, dialects) in dialects().iter().enumerate() {
        let offers = dialects.offers(&ResponseHead {
            status,
            headers: &headers,
            request: Some(request),
        });
        let _ = offers.is_empty();
        for offer in &offers.payable {
            let terms = &offer.terms;
            let _ = (terms.service(), terms.expires_at(), terms.reusable());
            if let Ok(invoice) = l402_proxy::invoice::decode(&offer.invoice) {
                let _ = terms.check(&invoice, b"", 0);
                let _ = terms.check(&invoice, data, invoice.timestamp);
                let _ = terms.check(&invoice, data, u64::MAX);
            }
            let credential = terms.credential(&proof);
            if let Some(stored) = terms.stored() {
                let restored = dialects.restore(&stored, &proof);
                // A stored credential rebuilds the one the offer gave (how tokens survive
                // restarts and cross replicas).
                if offer.dialect == "l402" {
                    assert_eq!(
                        restored.as_ref().map(|c| (&c.header, c.value.as_bytes())),
                        credential
                            .as_ref()
                            .ok()
                            .map(|c| (&c.header, c.value.as_bytes())),
                        "dialects {i}: restore({stored:?}) differs from the offer's credential"
                    );
                }
            }
        }
    }
});
