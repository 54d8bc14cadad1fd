//! The headers the payment layer adds to what the agent gets back: what was paid, what is left,
//! and why a 402 was not paid. An upstream cannot set any of them: every `x-l402-proxy-*` header
//! it sends is removed before ours are added.

use super::purchase::Obtained;
use crate::core::Decline;
use http::{HeaderMap, HeaderValue};

/// The code of the refusal, when the upstream 402 is returned unpaid.
pub const DECLINE_HEADER: &str = "x-l402-proxy-decline";
/// The refusal's sentence.
pub const REASON_HEADER: &str = "x-l402-proxy-reason";
/// The dialect of the refused or paid offer.
pub const SCHEME_HEADER: &str = "x-l402-proxy-scheme";
/// The invoice amount paid by this request.
pub const PAID_MSAT_HEADER: &str = "x-l402-proxy-paid-msat";
/// The routing fee paid by this request.
pub const FEE_MSAT_HEADER: &str = "x-l402-proxy-fee-msat";
/// The payment hash paid by this request.
pub const PAYMENT_HASH_HEADER: &str = "x-l402-proxy-payment-hash";
/// `paid` (this request paid), `shared` (rode on a concurrent purchase) or `cached` (sent with
/// a token bought earlier).
pub const TOKEN_HEADER: &str = "x-l402-proxy-token";
/// What the agent has left under its tightest limit.
pub const REMAINING_HEADER: &str = "x-l402-proxy-remaining-msat";
/// The largest invoice the agent can still pay: remaining less the fee reserve, capped by
/// `per_request_sats`.
pub const SPENDABLE_HEADER: &str = "x-l402-proxy-spendable-msat";
/// `retry`: the paid replay of a single-use credential got no response; the credential is kept
/// for the agent's retry of the same request (same method, URL and body), which is then not
/// paid again.
pub const KEPT_HEADER: &str = "x-l402-proxy-credential-kept";
/// The prefix every header of ours carries.
pub const PREFIX: &str = "x-l402-proxy-";

/// Turns free text into a header value: printable ASCII only, bounded length.
pub fn header_text(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("unprintable"))
}

/// The decline's code and sentence.
pub fn declined(headers: &mut HeaderMap, decline: &Decline) {
    headers.insert(DECLINE_HEADER, HeaderValue::from_static(decline.code()));
    headers.insert(REASON_HEADER, header_text(&decline.to_string()));
}

/// What this request paid, or that it rode on another request's purchase, and in which
/// dialect.
pub fn obtained(headers: &mut HeaderMap, obtained: &Obtained) {
    headers.insert(SCHEME_HEADER, HeaderValue::from_static(obtained.dialect));
    match &obtained.paid {
        Some(paid) => {
            headers.insert(PAID_MSAT_HEADER, HeaderValue::from(paid.amount.get()));
            headers.insert(FEE_MSAT_HEADER, HeaderValue::from(paid.fee.get()));
            if let Ok(v) = HeaderValue::from_str(&paid.payment_hash.to_hex()) {
                headers.insert(PAYMENT_HASH_HEADER, v);
            }
            headers.insert(TOKEN_HEADER, HeaderValue::from_static("paid"));
        }
        None => {
            headers.insert(TOKEN_HEADER, HeaderValue::from_static("shared"));
        }
    }
}

/// Removes every `x-l402-proxy-*` header an upstream sent: only the proxy speaks for itself.
pub fn strip_forged(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with(PREFIX)) {
        return;
    }
    let forged: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_headers_are_removed_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("x-l402-proxy-token", HeaderValue::from_static("paid"));
        h.insert("x-l402-proxy-paid-msat", HeaderValue::from_static("1"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_forged(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn header_text_is_printable_and_bounded() {
        let v = header_text(&format!("a\nb{}", "x".repeat(400)));
        assert_eq!(v.len(), 300);
        assert!(v.to_str().unwrap().starts_with("a?b"));
    }
}
