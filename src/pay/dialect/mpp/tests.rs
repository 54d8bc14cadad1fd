use super::*;
use crate::core::PaymentHash;
use http::{HeaderMap, HeaderValue, StatusCode};

const MPPX: &str = include_str!("../../../../tests/fixtures/third-party-402s/mppx.headers");

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

fn offers(h: &HeaderMap) -> Offers {
    let mut out = Offers::default();
    Mpp.offers(
        &ResponseHead {
            status: StatusCode::PAYMENT_REQUIRED,
            headers: h,
            request: None,
        },
        &mut out,
    );
    out
}

fn challenge(params: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&format!("Payment {params}")).unwrap(),
    );
    h
}

fn request(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn the_mppx_challenge_is_read_and_its_credential_echoes_it() {
    let h = headers_of(MPPX);
    let out = offers(&h);
    assert_eq!(out.payable.len(), 1, "{out:?}");
    let offer = &out.payable[0];
    assert_eq!(offer.dialect, "payment");
    assert!(offer.invoice.starts_with("lnbc410n1"));
    assert!(
        !offer.terms.reusable(),
        "a charge credential serves one request"
    );
    assert!(offer.terms.stored().is_none(), "its proof is never stored");
    // The fixture's invoice and request agree; checked before the challenge expired.
    let invoice = crate::invoice::decode(&offer.invoice).unwrap();
    let before_expiry = 1_796_114_000; // 2026-12-01T08:33:20Z
    offer.terms.check(&invoice, b"", before_expiry).unwrap();
    assert_eq!(
        offer
            .terms
            .check(&invoice, b"", 1_796_200_000)
            .unwrap_err()
            .code(),
        "challenge-expired"
    );
    let raw = [9u8; 32];
    let proof = Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap();
    let credential = offer.terms.credential(&proof).unwrap();
    let value = credential.value.to_str().unwrap();
    let b64 = value.strip_prefix("Payment ").expect("Payment scheme");
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap();
    let echo = json["challenge"].as_object().unwrap();
    let sent = h[header::WWW_AUTHENTICATE].to_str().unwrap();
    for key in ["id", "realm", "method", "intent", "request", "expires"] {
        let v = echo[key].as_str().unwrap();
        assert!(
            sent.contains(&format!("{key}=\"{v}\"")),
            "{key} echoed as received"
        );
    }
    assert_eq!(json["payload"]["preimage"], hex::encode(raw));
}

#[test]
fn aperture_vectors_parse() {
    let v = crate::test_vectors::l402();
    for m in v["mpp"].as_array().unwrap() {
        let h = {
            let mut h = HeaderMap::new();
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(m["header_value"].as_str().unwrap()).unwrap(),
            );
            h
        };
        let out = offers(&h);
        assert_eq!(out.payable.len(), 1, "{}", m["name"]);
        assert_eq!(
            out.payable[0].invoice,
            m["request_decoded"]["methodDetails"]["invoice"]
                .as_str()
                .unwrap()
        );
    }
}

#[test]
fn what_cannot_be_paid_says_why() {
    let r = request(r#"{"amount":"10","currency":"sat","methodDetails":{"invoice":"lnbc1"}}"#);
    for (params, why) in [
        (
            format!(r#"id="a", realm="r", method="lightning", intent="session", request="{r}""#),
            "intent",
        ),
        (
            format!(r#"id="a", realm="r", method="stripe", intent="charge", request="{r}""#),
            "method",
        ),
        (
            format!(r#"id="a", method="lightning", intent="charge", request="{r}""#),
            "realm",
        ),
        (
            r#"id="a", realm="r", method="lightning", intent="charge", request="!!!""#.into(),
            "base64url",
        ),
        (
            format!(
                r#"id="a", realm="r", method="lightning", intent="charge", request="{}""#,
                request(r#"{"amount":"10","currency":"usd","methodDetails":{"invoice":"lnbc1"}}"#)
            ),
            "currency",
        ),
    ] {
        let out = offers(&challenge(&params));
        assert!(out.payable.is_empty(), "{params}");
        assert!(
            out.unsupported[0].1.contains(why),
            "{why}: {:?}",
            out.unsupported
        );
    }
    // Unknown parameters are ignored; 4 KB+ values are read.
    let big = "x".repeat(5000);
    let out = offers(&challenge(&format!(
        r#"id="a", realm="r", method="lightning", intent="charge", request="{r}", opaque="{big}", future="1""#
    )));
    assert_eq!(out.payable.len(), 1);
    let huge = "x".repeat(MAX_CHALLENGE);
    let out = offers(&challenge(&format!(
        r#"id="a", realm="r", method="lightning", intent="charge", request="{r}", opaque="{huge}""#
    )));
    assert!(out.payable.is_empty());
}

#[test]
fn amount_hash_network_and_digest_must_agree_with_the_invoice() {
    let key = bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap();
    let hash = [5u8; 32];
    let bolt11 = crate::demo::mint::mint_invoice(
        &key,
        Network::Bitcoin,
        10_000,
        hash,
        [6; 32],
        "x",
        1_796_000_000,
        600,
    )
    .unwrap();
    let invoice = crate::invoice::decode(&bolt11).unwrap();
    let body = b"{\"q\":1}";
    let digest = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    );
    let terms = |amount: &str, extra: &str, params: &str| {
        let r = request(&format!(
            r#"{{"amount":"{amount}","currency":"sat","methodDetails":{{"invoice":"{bolt11}"{extra}}}}}"#
        ));
        let h = challenge(&format!(
            r#"id="a", realm="r", method="lightning", intent="charge", request="{r}"{params}"#
        ));
        offers(&h).payable.into_iter().next().unwrap()
    };
    let now = 1_796_000_100;
    assert!(terms("10", "", "").terms.check(&invoice, b"", now).is_ok());
    let wrong_amount = terms("11", "", "")
        .terms
        .check(&invoice, b"", now)
        .unwrap_err();
    assert_eq!(wrong_amount.code(), "offer-invoice-mismatch");
    let wrong_hash = terms("10", r#","paymentHash":"00""#, "")
        .terms
        .check(&invoice, b"", now)
        .unwrap_err();
    assert!(
        wrong_hash.to_string().contains("paymentHash"),
        "{wrong_hash}"
    );
    let right_hash = format!(r#","paymentHash":"{}""#, hex::encode(hash));
    assert!(terms("10", &right_hash, "")
        .terms
        .check(&invoice, b"", now)
        .is_ok());
    let wrong_net = terms("10", r#","network":"regtest""#, "")
        .terms
        .check(&invoice, b"", now)
        .unwrap_err();
    assert!(wrong_net.to_string().contains("network"), "{wrong_net}");
    let with_digest = terms("10", "", &format!(r#", digest="{digest}""#));
    assert!(with_digest.terms.check(&invoice, body, now).is_ok());
    let other_body = with_digest.terms.check(&invoice, b"{}", now).unwrap_err();
    assert!(other_body.to_string().contains("digest"), "{other_body}");
}
