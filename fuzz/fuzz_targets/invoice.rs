//! BOLT11 decoding (`l402_proxy::invoice::decode`) on hostile text: the input as UTF-8 when it
//! is, and always its lossy form, as an upper-cased copy (bech32 accepts one case) and with the
//! `lightning:` prefix wallets add. Must never panic. A decoded invoice's derived values are
//! computed too (expiry arithmetic on hostile timestamps and expiries, amount rounding).
#![no_main]

use l402_proxy::invoice::{decode, Invoice};
use libfuzzer_sys::fuzz_target;

fn exercise(invoice: &Invoice) {
    let _ = invoice.expires_at();
    let _ = invoice.is_expired_at(0);
    let _ = invoice.is_expired_at(invoice.timestamp);
    let _ = invoice.is_expired_at(u64::MAX);
    let _ = invoice.amount_sats_ceil();
    let _ = format!("{invoice:?}");
}

fn check(s: &str) {
    match decode(s) {
        Ok(invoice) => {
            exercise(&invoice);
            // One case or the other: the same invoice.
            if let Ok(upper) = decode(&s.to_ascii_uppercase()) {
                assert_eq!(upper.payment_hash, invoice.payment_hash);
                assert_eq!(upper.amount, invoice.amount);
                assert_eq!(upper.payee, invoice.payee);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }
    let lossy = String::from_utf8_lossy(data);
    check(&lossy);
    check(&format!("lightning:{lossy}"));
});
