//! The 402s the seller answers: its L402 challenge in every form servers are seen to use, and
//! the hostile ones whose invoice must never be paid.

use super::{text, Seller};
use crate::body::Body;
use crate::core::{Msat, PaymentHash};
use base64::Engine as _;
use http::{header, HeaderValue, Response, StatusCode};
use std::sync::atomic::Ordering;

/// BOLT 11's own amountless example: valid signature, no amount.
const AMOUNTLESS_INVOICE: &str = "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql";
/// BOLT 11's example with an unknown required feature bit: readers must refuse it.
const UNKNOWN_FEATURE_INVOICE: &str = "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q4psqqqqqqqqqqqqqqqqsgqtqyx5vggfcsll4wu246hz02kp85x4katwsk9639we5n5yngc3yhqkm35jnjw4len8vrnqnf5ejh0mzj9n3vz2px97evektfm2l6wqccp3y7372";

impl Seller {
    pub(super) async fn challenge(&self, service: &str, dialect: &str) -> Response<Body> {
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

    pub(super) fn hostile(&self, path: &str) -> Response<Body> {
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
                    Msat::new(10_000),
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
                        Msat::new(10_000),
                        "elsewhere",
                        self.config.clock.now_unix(),
                        600,
                        other,
                    )
                    .map(|i| (i.bolt11, i.payment_hash))
            }
            "garbage" => Ok(("lnbcrt10u1notaninvoice".to_string(), PaymentHash([0; 32]))),
            "bad-checksum" => fresh(Msat::new(10_000)).map(|(b, h)| (corrupt_last_char(&b), h)),
            "huge" => fresh(Msat::from_sats(10_000_000)),
            "mismatch" => fresh(Msat::new(10_000)).map(|(b, _)| (b, PaymentHash([7; 32]))),
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

/// A 402 (or 401) with the challenge written in one of the dialects seen in the wild.
pub(super) fn challenge_response(dialect: &str, token: &[u8], invoice: &str) -> Response<Body> {
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

pub(super) fn corrupt_last_char(s: &str) -> String {
    let mut out: String = s.chars().take(s.len().saturating_sub(1)).collect();
    out.push(if s.ends_with('q') { 'p' } else { 'q' });
    out
}
