//! L402 (and its old name LSAT): a macaroon plus a BOLT11 invoice in `WWW-Authenticate`,
//! answered with `Authorization: <scheme> <token>:<preimage>`. The token is reusable until the
//! server answers it with a new challenge; its plaintext caveats name the service and expiry.

pub mod grammar;
pub mod macaroon;

use super::{Credential, Dialect, Offer, Offers, ResponseHead, StoredCredential, Terms};
use crate::core::{Decline, Preimage};
use crate::invoice::Invoice;
use grammar::{authorization_value, Challenge, Scheme};
use http::header;

/// The largest token paid for: a credential must fit the request headers servers accept
/// (8 KiB is common), and real macaroons are a few hundred bytes.
pub const MAX_TOKEN: usize = 4096;

/// The L402/LSAT dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct L402;

impl Dialect for L402 {
    fn name(&self) -> &'static str {
        "l402"
    }

    fn offers(&self, response: &ResponseHead<'_>, out: &mut Offers) {
        let challenges = grammar::parse_challenges(
            response
                .headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.as_bytes()),
        );
        if let Some(chosen) = grammar::select(&challenges) {
            if chosen.token.len() > MAX_TOKEN {
                out.too_large(format!(
                    "the L402 token is {} bytes, over the {MAX_TOKEN} the proxy pays for (it could not be sent back in a header)",
                    chosen.token.len()
                ));
                return;
            }
            out.payable.push(Offer {
                dialect: self.name(),
                invoice: chosen.invoice.clone(),
                terms: Box::new(L402Terms::new(chosen)),
            });
        }
    }

    fn restore(&self, stored: &StoredCredential, proof: &Preimage) -> Option<Credential> {
        let scheme = Scheme::from_name(&stored.scheme);
        Credential::new(
            header::AUTHORIZATION,
            &authorization_value(scheme, &stored.token, proof),
        )
        .ok()
    }
}

/// What an L402 challenge offers: a token for a service, bound to the invoice's hash.
#[derive(Debug)]
struct L402Terms {
    scheme: Scheme,
    token: String,
    services: Option<String>,
    expires_at: Option<u64>,
    /// The payment hash the token's v0 identifier commits to, when it has one.
    committed: Option<[u8; 32]>,
}

impl L402Terms {
    fn new(challenge: &Challenge) -> L402Terms {
        let mac = macaroon::decode_token(&challenge.token).ok();
        L402Terms {
            scheme: challenge.scheme,
            token: challenge.token.clone(),
            // Seller-chosen: cleaned once here, so keys, the ledger, events and logs see one form.
            services: mac
                .as_ref()
                .and_then(|m| m.services())
                .map(|s| crate::core::text::shown(s, crate::core::text::NAME_MAX).into_owned()),
            expires_at: mac.as_ref().and_then(|m| m.expires_at_unix()),
            committed: mac.as_ref().and_then(|m| m.payment_hash_v0()),
        }
    }
}

impl Terms for L402Terms {
    fn check(&self, invoice: &Invoice, _body: &[u8], _now: u64) -> Result<(), Decline> {
        match self.committed {
            Some(hash) if hash != invoice.payment_hash.0 => Err(Decline::TokenInvoiceMismatch),
            _ => Ok(()),
        }
    }

    fn service(&self) -> Option<&str> {
        self.services.as_deref()
    }

    fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    fn reusable(&self) -> bool {
        true
    }

    fn credential(&self, proof: &Preimage) -> Result<Credential, Decline> {
        Credential::new(
            header::AUTHORIZATION,
            &authorization_value(self.scheme, &self.token, proof),
        )
    }

    fn stored(&self) -> Option<StoredCredential> {
        Some(StoredCredential {
            scheme: self.scheme.as_str().to_string(),
            token: self.token.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn headers_of(fixture: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in fixture.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.trim().as_bytes()),
                    HeaderValue::from_str(v.trim()),
                ) {
                    h.append(k, v);
                }
            }
        }
        h
    }

    fn offer_of(fixture: &str) -> Offer {
        let h = headers_of(fixture);
        let mut out = Offers::default();
        L402.offers(
            &ResponseHead {
                status: StatusCode::PAYMENT_REQUIRED,
                headers: &h,
                request: None,
            },
            &mut out,
        );
        out.payable.into_iter().next().expect("a payable offer")
    }

    #[test]
    fn lsat_js_is_answered_in_lsat_and_its_millisecond_expiry_is_read() {
        let offer = offer_of(include_str!(
            "../../../../tests/fixtures/third-party-402s/lsatjs.headers"
        ));
        let stored = offer.terms.stored().unwrap();
        assert_eq!(
            stored.scheme, "LSAT",
            "an LSAT-only server is answered in LSAT"
        );
        // `expiration=1796118103197` (ms) caveat.
        assert_eq!(offer.terms.expires_at(), Some(1_796_118_103));
        let invoice = crate::invoice::decode(&offer.invoice).unwrap();
        offer.terms.check(&invoice, b"", 0).unwrap();
    }

    #[test]
    fn l402kit_json_tokens_are_payable_as_opaque_tokens() {
        let offer = offer_of(include_str!(
            "../../../../tests/fixtures/third-party-402s/l402kit.headers"
        ));
        assert_eq!(offer.terms.stored().unwrap().scheme, "L402");
        assert!(
            offer.terms.service().is_none(),
            "not a macaroon: no caveats to read"
        );
        let invoice = crate::invoice::decode(&offer.invoice).unwrap();
        offer.terms.check(&invoice, b"", 0).unwrap();
    }

    #[test]
    fn oversized_tokens_are_not_paid_for() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "L402 token=\"{}\", invoice=\"lnbc1\"",
                "A".repeat(MAX_TOKEN + 4)
            ))
            .unwrap(),
        );
        let mut out = Offers::default();
        L402.offers(
            &ResponseHead {
                status: StatusCode::PAYMENT_REQUIRED,
                headers: &h,
                request: None,
            },
            &mut out,
        );
        assert!(out.payable.is_empty());
        assert!(
            out.too_large
                .as_deref()
                .is_some_and(|r| r.contains("bytes")),
            "{out:?}"
        );
    }
}
