//! The seller's macaroons: minted for a service and an invoice, and checked when they come
//! back with their preimage.

use super::Seller;
use crate::core::{PaymentHash, Preimage};
use crate::demo::macaroon::{self as mint_macaroon, identifier_v0};
use crate::pay::dialect::l402::macaroon;
use http::{header, Request};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;

impl Seller {
    pub(super) fn authorized(&self, req: &Request<Incoming>, service: &str) -> bool {
        let ok = self.l402_hash(req, service).is_some();
        if !ok && req.headers().contains_key(header::AUTHORIZATION) {
            self.stats.rejected_tokens.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The payment hash a valid L402/LSAT credential for `service` proves paid.
    pub(super) fn l402_hash(&self, req: &Request<Incoming>, service: &str) -> Option<PaymentHash> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?;
        self.verify(value, service)
    }

    pub(super) fn verify(&self, value: &str, service: &str) -> Option<PaymentHash> {
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
    pub(super) fn caveat_name<'a>(&'a self, service: &'a str) -> &'a str {
        self.config
            .caveat_names
            .get(service)
            .map_or(service, String::as_str)
    }

    pub(super) fn mint_token(&self, service: &str, hash: &PaymentHash) -> Vec<u8> {
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
}
