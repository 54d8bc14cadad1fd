//! The ways servers ask to be paid. A dialect reads the offers in a response (a 402, or a 401
//! carrying a challenge), and each offer says what to pay (a BOLT11 invoice), what the invoice
//! must agree with, and how to build the credential once a verified preimage exists. Adding a
//! scheme means adding one implementation of [`Dialect`]; nothing else in the payment layer
//! knows any dialect's wire format.

pub mod auth_params;
pub mod l402;
pub mod mpp;
pub mod x402;

use crate::core::{Decline, Preimage};
use crate::invoice::Invoice;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use std::fmt;

/// What a dialect may read of an upstream response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The status (402, or 401 for servers that challenge a bad token that way).
    pub status: StatusCode,
    /// Every header, all lines of repeated ones.
    pub headers: &'a HeaderMap,
    /// The agent's request it answers, for offers bound to their request (x402 `lnbtc`);
    /// `None` only where no request exists (unit tests), and then such offers are refused.
    pub request: Option<RequestHead<'a>>,
}

/// The agent's request as sent upstream (before any credential is attached), as dialects
/// that bind an offer to its request read it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, case preserved.
    pub method: &'a Method,
    /// The absolute upstream URI.
    pub uri: &'a Uri,
    /// The headers sent (all lines of repeated ones).
    pub headers: &'a HeaderMap,
    /// The content bytes, when buffered (`None`: streamed, cannot be bound or replayed).
    pub body: Option<&'a [u8]>,
}

impl RequestHead<'_> {
    /// The target URI as RFC 9421 `@target-uri` spells it: scheme, authority (the port only
    /// when it is not the scheme's default), path and query exactly as sent.
    pub fn target_uri(&self) -> String {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let host = self.uri.host().unwrap_or("");
        let default = match scheme {
            "https" => 443,
            _ => 80,
        };
        let port = self
            .uri
            .port_u16()
            .filter(|p| *p != default)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{scheme}://{host}{port}{path}")
    }

    /// The `params` of an MCP `tools/call` when the request is one (a POSTed JSON-RPC request
    /// object, not a batch or a notification).
    pub fn tool_call(&self) -> Option<serde_json::Value> {
        if self.method != Method::POST {
            return None;
        }
        let body = self.body?;
        if !body.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        // Strict: a member name twice is outside what a binding can commit to.
        let mut v = x402::binding::parse_strict(body).ok()?;
        let call = v.as_object_mut()?;
        if call.get("jsonrpc")? != "2.0" || call.get("method")? != "tools/call" {
            return None;
        }
        call.get("id")?;
        call.remove("params")
    }
}

/// One dialect: reads offers from responses and rebuilds stored credentials.
pub trait Dialect: Send + Sync + 'static {
    /// The name in `pay.schemes`, declines and logs (`l402`, `payment`, `x402`).
    fn name(&self) -> &'static str;

    /// Adds the payable offer in `response` to `out` — at most one per dialect, the one it
    /// would pay (a dialect that sees several equivalent lines picks one) — or, when the
    /// response speaks this dialect in a way the proxy cannot pay, why not.
    fn offers(&self, response: &ResponseHead<'_>, out: &mut Offers);

    /// Rebuilds the credential of a token stored by this dialect (after a restart, or bought
    /// by another replica). `None` when the stored form is not this dialect's.
    fn restore(&self, stored: &StoredCredential, proof: &Preimage) -> Option<Credential>;
}

/// What a response offers.
#[derive(Debug, Default)]
pub struct Offers {
    /// Payable offers, in the operator's order of preference.
    pub payable: Vec<Offer>,
    /// `(dialect, why)` for offers seen that cannot be paid.
    pub unsupported: Vec<(&'static str, String)>,
    /// Set when the challenge is over a size limit (then nothing is payable): which limit. The
    /// 402 goes back declined `challenge-too-large`, whatever else it holds.
    pub too_large: Option<String>,
}

impl Offers {
    /// Nothing offered at all: the response passes through untouched.
    pub fn is_empty(&self) -> bool {
        self.payable.is_empty() && self.unsupported.is_empty() && self.too_large.is_none()
    }

    /// Records that the challenge is over a limit (the first reason is kept).
    pub fn too_large(&mut self, reason: String) {
        self.too_large.get_or_insert(reason);
    }
}

/// The most `WWW-Authenticate` lines a 402 may carry (servers send one to three).
pub const MAX_CHALLENGE_LINES: usize = 16;

/// The most bytes of challenge headers (`WWW-Authenticate` and `PAYMENT-REQUIRED` together) a
/// 402 may carry; a real one is well under 4 KiB. The same cap as one `Payment` challenge's or
/// one `PAYMENT-REQUIRED` header's, so every oversized 402 gets this one answer.
pub const MAX_CHALLENGE_BYTES: usize = 16 * 1024;

/// Why this response's challenge headers are over [`MAX_CHALLENGE_LINES`] or
/// [`MAX_CHALLENGE_BYTES`], if they are. Checked before any dialect parses them.
fn oversized(response: &ResponseHead<'_>) -> Option<String> {
    let lines = response.headers.get_all(http::header::WWW_AUTHENTICATE);
    let count = lines.iter().count();
    let bytes: usize = lines
        .iter()
        .chain(response.headers.get_all(&x402::PAYMENT_REQUIRED).iter())
        .map(|v| v.len())
        .sum();
    if count > MAX_CHALLENGE_LINES {
        Some(format!(
            "{count} WWW-Authenticate lines, over {MAX_CHALLENGE_LINES}"
        ))
    } else if bytes > MAX_CHALLENGE_BYTES {
        Some(format!(
            "{bytes} bytes of challenge headers, over {MAX_CHALLENGE_BYTES}"
        ))
    } else {
        None
    }
}

/// Whether a 401 speaks a paying scheme (a plain `Basic`/`Bearer` 401 is not a 402's business).
fn names_a_paying_scheme(response: &ResponseHead<'_>) -> bool {
    response
        .headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .any(|v| {
            let v = v.as_bytes();
            let lower: Vec<u8> = v.iter().take(16).map(u8::to_ascii_lowercase).collect();
            ["l402", "lsat", "payment", "macaroon"]
                .iter()
                .any(|s| lower.windows(s.len()).any(|w| w == s.as_bytes()))
        })
}

/// One way to pay for a request.
#[derive(Debug)]
pub struct Offer {
    /// The dialect that read it (its `pay.schemes` name).
    pub dialect: &'static str,
    /// The BOLT11 invoice to pay.
    pub invoice: String,
    /// The dialect's own part: what the invoice must agree with and how to answer.
    pub terms: Box<dyn Terms>,
}

/// What an offer promises in exchange for paying its invoice.
pub trait Terms: Send + Sync + fmt::Debug {
    /// Refuses an invoice that disagrees with what the offer states (hash, amount, payee), or
    /// an offer that cannot be honoured for this request (expired, a body digest that does not
    /// match `body`). `now` is unix seconds.
    fn check(&self, invoice: &Invoice, body: &[u8], now: u64) -> Result<(), Decline>;

    /// The service the credential is for, when the offer names one (L402 `services=`): the
    /// key that keeps tokens and single-flight per service on one origin.
    fn service(&self) -> Option<&str>;

    /// Unix second after which the credential is not used (caveat expiry), if known.
    fn expires_at(&self) -> Option<u64>;

    /// Whether the credential serves later requests (a cached token) or only this one.
    fn reusable(&self) -> bool;

    /// The credential for a preimage verified against this offer's invoice.
    fn credential(&self, proof: &Preimage) -> Result<Credential, Decline>;

    /// What the ledger keeps so the credential can be rebuilt later; `None` for single-use
    /// credentials, whose proof is never persisted.
    fn stored(&self) -> Option<StoredCredential>;
}

/// A header that proves payment, ready to attach.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Where it goes (`Authorization` for L402 and MPP).
    pub header: HeaderName,
    /// Marked sensitive: kept out of Debug output and HPACK tables.
    pub value: HeaderValue,
}

impl Credential {
    /// Builds a sensitive header value, refusing text that cannot be sent in a header.
    pub fn new(header: HeaderName, value: &str) -> Result<Credential, Decline> {
        let mut value = HeaderValue::from_str(value).map_err(|_| Decline::ChallengeInvalid {
            reason: "the token cannot be sent in a header".into(),
        })?;
        value.set_sensitive(true);
        Ok(Credential { header, value })
    }
}

/// The persisted form of a reusable credential, without its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The scheme to answer in (`L402`, `LSAT`).
    pub scheme: String,
    /// The token exactly as the server sent it.
    pub token: String,
}

/// The dialects the proxy pays, in the operator's order of preference (`pay.schemes`), and
/// the ones it recognises but does not pay (so their 402s carry a decline saying why).
pub struct Dialects {
    ordered: Vec<Box<dyn Dialect>>,
    known_unpaid: Vec<Box<dyn Dialect>>,
}

impl Default for Dialects {
    fn default() -> Self {
        Dialects::from_names(&crate::config::PayScheme::defaults())
    }
}

/// Every dialect, by its `pay.schemes` name.
fn dialect(scheme: crate::config::PayScheme) -> Box<dyn Dialect> {
    use crate::config::PayScheme::*;
    match scheme {
        L402 => Box::new(l402::L402),
        Payment => Box::new(mpp::Mpp),
        X402 => Box::new(x402::X402),
    }
}

impl Dialects {
    /// The dialects named, in that order; the others are recognised but not paid.
    pub fn from_names(schemes: &[crate::config::PayScheme]) -> Dialects {
        let ordered = schemes.iter().map(|s| dialect(*s)).collect();
        let known_unpaid = crate::config::PayScheme::ALL
            .iter()
            .filter(|s| !schemes.contains(s))
            .map(|s| dialect(*s))
            .collect();
        Dialects {
            ordered,
            known_unpaid,
        }
    }

    /// Every offer in the response, in preference order (the first payable one is paid).
    pub fn offers(&self, response: &ResponseHead<'_>) -> Offers {
        let mut out = Offers::default();
        if response.status != StatusCode::PAYMENT_REQUIRED
            && response.status != StatusCode::UNAUTHORIZED
        {
            return out;
        }
        if let Some(reason) = oversized(response) {
            if response.status == StatusCode::PAYMENT_REQUIRED || names_a_paying_scheme(response) {
                out.too_large(reason);
            }
            return out;
        }
        for dialect in &self.ordered {
            dialect.offers(response, &mut out);
        }
        if out.payable.is_empty() && response.status == StatusCode::PAYMENT_REQUIRED {
            for dialect in &self.known_unpaid {
                let mut seen = Offers::default();
                dialect.offers(response, &mut seen);
                if !seen.payable.is_empty() {
                    out.unsupported.push((
                        dialect.name(),
                        format!("{} is not in pay.schemes", dialect.name()),
                    ));
                }
                out.unsupported.extend(seen.unsupported);
            }
            if is_fewsats_offer(response) {
                out.unsupported.push((
                    "fewsats",
                    "a JSON 402 offer with no challenge header (a Fewsats L402 v0.2 offer, or an x402 v1 body offer) is not paid"
                        .to_string(),
                ));
            }
        }
        out
    }

    /// Whether the dialect `name` is in `pay.schemes`.
    pub fn pays(&self, name: &str) -> bool {
        self.ordered.iter().any(|d| d.name() == name)
    }

    /// The credential of a stored token, from whichever dialect stored it.
    pub fn restore(&self, stored: &StoredCredential, proof: &Preimage) -> Option<Credential> {
        self.ordered.iter().find_map(|d| d.restore(stored, proof))
    }
}

/// A 402 with a JSON body and no challenge header: the shape of Fewsats' "L402 offers".
fn is_fewsats_offer(response: &ResponseHead<'_>) -> bool {
    response
        .headers
        .get(http::header::WWW_AUTHENTICATE)
        .is_none()
        && response.headers.get(&x402::PAYMENT_REQUIRED).is_none()
        && response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"))
}

/// Decodes base64 in either alphabet, padding optional (tokens arrive in every spelling).
///
/// Trailing `=` are ignored whatever their number (the spec's own example token is
/// over-padded), and non-zero trailing bits are tolerated like Go's default decoder does.
/// A string that mixes both alphabets is rejected: no encoder produces that.
pub fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let has_url = body.contains(['-', '_']);
    let has_std = body.contains(['+', '/']);
    let engine = match (has_url, has_std) {
        (true, true) => return None,
        (true, false) => &URL_SAFE_LENIENT,
        (false, _) => &STANDARD_LENIENT,
    };
    engine.decode(body).ok()
}

/// Decoder settings shared by both alphabets: no padding expected (it was stripped),
/// trailing bits allowed.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::RequireNone)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
