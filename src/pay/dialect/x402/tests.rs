use super::*;
use crate::core::PaymentHash;
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

const EVM: &str = include_str!("../../../../tests/fixtures/third-party-402s/x402.headers");

fn offers(h: &HeaderMap) -> Offers {
    let mut out = Offers::default();
    X402.offers(
        &ResponseHead {
            status: StatusCode::PAYMENT_REQUIRED,
            headers: h,
        },
        &mut out,
    );
    out
}

fn required(json: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        PAYMENT_REQUIRED,
        HeaderValue::from_str(&STANDARD.encode(json)).unwrap(),
    );
    h
}

#[test]
fn an_evm_offer_is_not_payable_and_says_so() {
    let line = EVM
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-required:"))
        .unwrap();
    let (_, value) = line.split_once(':').unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        PAYMENT_REQUIRED,
        HeaderValue::from_str(value.trim()).unwrap(),
    );
    let out = offers(&h);
    assert!(out.payable.is_empty());
    assert!(out.unsupported[0].1.contains("eip155:84532"), "{out:?}");
}

#[test]
fn a_lightning_offer_is_checked_against_its_invoice_and_answered_byte_for_byte() {
    let key = bitcoin::secp256k1::SecretKey::from_slice(&[4; 32]).unwrap();
    let payee = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::signing_only(),
        &key,
    );
    let raw = [8u8; 32];
    let hash = PaymentHash(Sha256::digest(raw).into());
    let bolt11 = crate::demo::mint::mint_invoice(
        &key,
        Network::Bitcoin,
        21_000,
        hash.0,
        [6; 32],
        "x402",
        1_796_000_000,
        600,
    )
    .unwrap();
    let invoice = crate::invoice::decode(&bolt11).unwrap();
    let entry = |amount: &str, pay_to: &str, network: &str| {
        format!(
            r#"{{"scheme":"exact","network":"{network}","amount":"{amount}","asset":"BTC","payTo":"{pay_to}","maxTimeoutSeconds":60,"extra":{{"paymentFlow":"upfront","invoice":"{bolt11}"}}}}"#
        )
    };
    let good = entry(
        "21000",
        &payee.to_string(),
        "bip122:000000000019d6689c085ae165831e93",
    );
    let h = required(&format!(
        r#"{{"x402Version":2,"resource":{{"url":"http://x/y"}},"accepts":[{{"scheme":"exact","network":"eip155:8453","amount":"1"}},{good}]}}"#
    ));
    let out = offers(&h);
    assert_eq!(out.payable.len(), 1, "{out:?}");
    let offer = &out.payable[0];
    assert_eq!(offer.invoice, bolt11);
    offer.terms.check(&invoice, b"", 0).unwrap();
    let proof = Preimage::verify(raw, &hash).unwrap();
    let signature = offer.terms.credential(&proof).unwrap();
    assert_eq!(signature.header, PAYMENT_SIGNATURE);
    let json = String::from_utf8(STANDARD.decode(signature.value.as_bytes()).unwrap()).unwrap();
    assert!(
        json.contains(&good),
        "the accepted entry is echoed byte for byte: {json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["x402Version"], 2);
    assert_eq!(v["payload"]["preimage"], hex::encode(raw));
    assert_eq!(v["payload"]["paymentHash"], hash.to_hex());

    for (bad, why) in [
        (
            entry("20000", &payee.to_string(), "lightning:mainnet"),
            "asks",
        ),
        (
            entry("21000", &"02".repeat(33)[..66], "lightning:mainnet"),
            "payTo",
        ),
        (
            entry("21000", &payee.to_string(), "lightning:regtest"),
            "offer is for regtest",
        ),
    ] {
        let h = required(&format!(r#"{{"x402Version":2,"accepts":[{bad}]}}"#));
        let out = offers(&h);
        let e = out.payable[0].terms.check(&invoice, b"", 0).unwrap_err();
        assert_eq!(e.code(), "offer-invoice-mismatch");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
}
