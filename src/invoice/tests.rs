use super::*;
use crate::demo::mint::{mint_invoice as mint, MintError};
use bitcoin::hashes::sha256;
use bitcoin::secp256k1::SecretKey;
use lightning_invoice::{
    Bolt11Invoice, Bolt11SemanticError, InvoiceBuilder, ParseOrSemanticError, PaymentSecret,
    RawTaggedField,
};
use serde_json::Value;
use std::time::Duration;

const VECTORS: &str = "tests/fixtures/l402-vectors.json";

fn vectors() -> Value {
    crate::test_vectors::l402()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{VECTORS}: \"{key}\" is not an array"))
}

fn hex32(s: &str) -> [u8; 32] {
    let v = hex::decode(s).unwrap();
    v.try_into().unwrap()
}

fn network_of(name: &str) -> Network {
    name.parse().unwrap()
}

/// `invoice="..."` inside a challenge header value.
fn challenge_invoice(header: &str) -> &str {
    let start = header.find("invoice=\"").expect("no invoice= in challenge") + 9;
    let len = header[start..].find('"').expect("unterminated invoice=");
    &header[start..start + len]
}

fn key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).unwrap()
}

fn pubkey(k: &SecretKey) -> [u8; 33] {
    PublicKey::from_secret_key(&Secp256k1::new(), k).serialize()
}

fn check_decoded(inv: &Invoice, d: &Value, what: &str) {
    assert_eq!(
        inv.network,
        network_of(d["network"].as_str().unwrap()),
        "{what}"
    );
    assert_eq!(
        inv.amount.map(|m| m.get()),
        d["amount_msat"].as_u64(),
        "{what}"
    );
    assert_eq!(inv.timestamp, d["timestamp"].as_u64().unwrap(), "{what}");
    assert_eq!(inv.expiry_secs, d["expiry"].as_u64().unwrap(), "{what}");
    assert_eq!(
        inv.payment_hash.0,
        hex32(d["payment_hash"].as_str().unwrap()),
        "{what}"
    );
}

#[test]
fn valid_vectors_decode_to_stated_fields() {
    let v = vectors();
    let valid = list(&v, "bolt11_valid");
    assert!(!valid.is_empty());
    for vec in valid {
        let s = vec["invoice"].as_str().unwrap();
        let title = vec["title"].as_str().unwrap_or("?");
        let inv = decode(s).unwrap_or_else(|e| panic!("{title}: {e}"));
        check_decoded(&inv, &vec["decoded"], title);
        assert!(inv.payment_secret.is_some(), "{title}");
        // `d` is returned, `h` (description hash) is not.
        let raw = SignedRawBolt11Invoice::from_str(s).unwrap();
        assert_eq!(
            inv.description.is_some(),
            raw.raw_invoice().description().is_some(),
            "{title}"
        );

        // Cross-check against lightning-invoice's strict reader (these all have features):
        // same payee, and its re-serialisation hash equals our hash of the original text.
        let strict = Bolt11Invoice::from_str(s).unwrap_or_else(|e| panic!("{title}: {e:?}"));
        assert_eq!(
            strict.recover_payee_pub_key().serialize(),
            inv.payee,
            "{title}"
        );
        assert_eq!(
            strict.amount_milli_satoshis(),
            inv.amount.map(|m| m.get()),
            "{title}"
        );
        let ours = signable_digest(&s.trim().to_ascii_lowercase()).unwrap();
        assert_eq!(strict.signable_hash(), ours, "{title}");
    }
}

#[test]
fn spec_vectors_payee_is_the_spec_node() {
    // BOLT 11 examples are all signed by 03e7156a...; lowercase and uppercase alike.
    let v = vectors();
    let spec_node =
        hex::decode("03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad").unwrap();
    for vec in list(&v, "bolt11_valid") {
        if vec["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("lightning/bolts")
        {
            let inv = decode(vec["invoice"].as_str().unwrap()).unwrap();
            assert_eq!(inv.payee.to_vec(), spec_node, "{}", vec["title"]);
        }
    }
}

#[test]
fn challenge_invoices_decode() {
    let v = vectors();
    let examples = list(&v, "bolt11_l402_examples");
    let challenges = list(&v, "challenges");
    let mut checked = 0;
    for ex in examples {
        // The example's "invoice" is a pointer like `... invoice="lnbc1500n1pw5kjhmpp5fu6x…")`.
        let pointer = ex["invoice"].as_str().unwrap();
        let prefix = challenge_invoice(pointer).trim_end_matches('…');
        let header = challenges
            .iter()
            .filter_map(|c| c["header_value"].as_str())
            .find(|h| h.contains(&format!("invoice=\"{prefix}")))
            .unwrap_or_else(|| panic!("no challenge with invoice prefix {prefix}"));
        let s = challenge_invoice(header);
        let inv = decode(s).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        check_decoded(&inv, &ex["decoded"], prefix);
        checked += 1;
    }
    assert_eq!(checked, 2);

    // Explicitly the two named in the brief.
    let spec = challenges
        .iter()
        .find_map(|c| {
            c["header_value"]
                .as_str()
                .filter(|h| h.contains("lnbc1500n1"))
        })
        .map(challenge_invoice)
        .unwrap();
    let inv = decode(spec).unwrap();
    assert_eq!(inv.amount.map(|m| m.get()), Some(150_000));
    assert_eq!(inv.network, Network::Bitcoin);
    assert_eq!(inv.expiry_secs, 10_800);
    assert_eq!(
        inv.payment_hash.to_hex(),
        "4f346baeff5a99cc6c5636b1e72ff750f4aa0e2fc1250482fc38e06a9822a7dc"
    );
    // Legacy (2019) invoice: no `s`, no `9`. Strict lightning-invoice refuses it.
    assert_eq!(inv.payment_secret, None);
    assert_eq!(
        Bolt11Invoice::from_str(spec),
        Err(ParseOrSemanticError::SemanticError(
            Bolt11SemanticError::NoPaymentSecret
        ))
    );

    let aperture = challenges
        .iter()
        .find_map(|c| {
            c["header_value"]
                .as_str()
                .filter(|h| h.contains("lnbcrt100n1"))
        })
        .map(challenge_invoice)
        .unwrap();
    let inv = decode(aperture).unwrap();
    assert_eq!(inv.network, Network::Regtest);
    assert_eq!(inv.amount.map(|m| m.get()), Some(10_000));
    assert!(inv.payment_secret.is_some());
    assert!(Bolt11Invoice::from_str(aperture).is_ok());

    // Every challenge that carries an invoice decodes (incl. the lsat-js testnet one).
    for c in challenges {
        let h = c["header_value"].as_str().unwrap();
        if h.contains("invoice=\"") {
            decode(challenge_invoice(h)).unwrap_or_else(|e| panic!("{}: {e}", c["name"]));
        }
    }
}

/// The error kind each invalid vector must produce, keyed by a word of its title.
fn expected_kind(title: &str) -> Option<fn(&InvoiceError) -> bool> {
    let t = title.to_ascii_lowercase();
    let f: fn(&InvoiceError) -> bool = if t.contains("unknown feature") {
        |e| matches!(e, InvoiceError::UnknownRequiredFeature)
    } else if t.contains("checksum")
        || t.contains("no 1")
        || t.contains("mixed case")
        || t.contains("too short")
        || t.contains("multiplier")
    {
        |e| matches!(e, InvoiceError::Malformed(_))
    } else if t.contains("missing required `s`") {
        |e| matches!(e, InvoiceError::MissingField(f) if f.contains("payment secret"))
    } else if t.contains("high-s") || t.contains("not recoverable") {
        |e| matches!(e, InvoiceError::BadSignature)
    } else if t.contains("sub-millisatoshi") {
        |e| matches!(e, InvoiceError::Semantic(_))
    } else {
        return None;
    };
    Some(f)
}

#[test]
fn invalid_vectors_are_refused_with_the_right_kind() {
    let v = vectors();
    let invalid = list(&v, "bolt11_invalid");
    assert!(!invalid.is_empty());
    let mut kinds_checked = 0;
    for vec in invalid {
        let title = vec["title"].as_str().unwrap_or("?");
        let s = vec["invoice"].as_str().unwrap();
        let err = match decode(s) {
            Ok(inv) => panic!("{title}: accepted: {inv:?}"),
            Err(e) => e,
        };
        assert!(!err.to_string().is_empty());
        if let Some(ok) = expected_kind(title) {
            assert!(ok(&err), "{title}: unexpected error kind {err:?}");
            kinds_checked += 1;
        }
    }
    assert_eq!(
        kinds_checked,
        invalid.len(),
        "every invalid vector has a known kind"
    );
}

#[test]
fn high_s_vector_fails_only_because_of_high_s() {
    // The refusal must come from the `n` verification rejecting high-S, not from a parse
    // error or a wrong key.
    let v = vectors();
    let vec = list(&v, "bolt11_invalid")
        .iter()
        .find(|x| x["title"].as_str().unwrap_or("").contains("high-S"))
        .unwrap();
    let s = vec["invoice"].as_str().unwrap();
    let signed = SignedRawBolt11Invoice::from_str(s).unwrap();
    let n = signed.raw_invoice().payee_pub_key().unwrap().0;
    let msg = Message::from_digest(signable_digest(s).unwrap());
    let secp = Secp256k1::verification_only();
    let sig = signed.signature().0.to_standard();
    let mut low_s = sig;
    low_s.normalize_s();
    assert_ne!(sig, low_s, "vector's signature is not high-S");
    // The very same signature with S negated verifies: high-S is the only flaw.
    assert!(secp.verify_ecdsa(&msg, &low_s, &n).is_ok());
    assert!(secp.verify_ecdsa(&msg, &sig, &n).is_err());
    assert_eq!(decode(s), Err(InvoiceError::BadSignature));
}

const HASH: [u8; 32] = [0x11; 32];
const SECRET: [u8; 32] = [0x22; 32];
const TS: u64 = 1_700_000_000;

#[test]
fn minted_invoice_round_trips_and_is_strictly_valid() {
    let k = key(7);
    for (network, prefix) in [
        (Network::Bitcoin, "lnbc"),
        (Network::Testnet, "lntb"),
        (Network::Signet, "lntbs"),
        (Network::Regtest, "lnbcrt"),
    ] {
        for amount in [1u64, 10, 1001, 150_000, 2_500_000_000, 10u64.pow(18)] {
            let s = mint(&k, network, amount, HASH, SECRET, "demo seller", TS, 600).unwrap();
            assert!(s.starts_with(prefix), "{s}");
            let inv = decode(&s).unwrap();
            assert_eq!(
                inv,
                Invoice {
                    network,
                    amount: Some(Msat::new(amount)),
                    payment_hash: PaymentHash(HASH),
                    payment_secret: Some(SECRET),
                    timestamp: TS,
                    expiry_secs: 600,
                    payee: pubkey(&k),
                    description: Some("demo seller".into()),
                    description_hash: None,
                }
            );

            let strict = Bolt11Invoice::from_str(&s).unwrap();
            assert_eq!(strict.amount_milli_satoshis(), Some(amount));
            assert_eq!(strict.payment_hash().to_byte_array(), HASH);
            assert_eq!(strict.payment_secret().0, SECRET);
            assert_eq!(strict.currency(), Currency::from(network));
            assert_eq!(strict.min_final_cltv_expiry_delta(), 40);
            assert_eq!(strict.expiry_time(), Duration::from_secs(600));
            assert_eq!(
                strict.payee_pub_key().map(|p| p.serialize()),
                Some(pubkey(&k))
            );
            let f = strict.features().unwrap();
            assert!(f.requires_variable_length_onion() && f.requires_payment_secret());
            assert!(strict.check_signature().is_ok());
        }
    }
    // Deterministic (RFC 6979).
    let a = mint(&k, Network::Regtest, 5, HASH, SECRET, "x", TS, 1).unwrap();
    let b = mint(&k, Network::Regtest, 5, HASH, SECRET, "x", TS, 1).unwrap();
    assert_eq!(a, b);
}

#[test]
fn mint_edge_cases() {
    let k = key(9);
    // Default expiry written explicitly still reads back as 3600; expiry 0 is allowed.
    for exp in [0, 3600, u32::MAX as u64] {
        let s = mint(&k, Network::Bitcoin, 1000, HASH, SECRET, "", TS, exp).unwrap();
        assert_eq!(decode(&s).unwrap().expiry_secs, exp);
    }
    // Longest allowed description (639 bytes) still produces a decodable invoice.
    let long = "a".repeat(639);
    let s = mint(&k, Network::Bitcoin, 1000, HASH, SECRET, &long, TS, 60).unwrap();
    assert_eq!(
        decode(&s).unwrap().description.as_deref(),
        Some(long.as_str())
    );
    assert!(Bolt11Invoice::from_str(&s).is_ok());

    let too_long = "a".repeat(640);
    assert!(matches!(
        mint(&k, Network::Bitcoin, 1000, HASH, SECRET, &too_long, TS, 60),
        Err(MintError(_))
    ));
    assert!(matches!(
        mint(&k, Network::Bitcoin, 0, HASH, SECRET, "x", TS, 60),
        Err(MintError(_))
    ));
    assert!(matches!(
        mint(&k, Network::Bitcoin, u64::MAX, HASH, SECRET, "x", TS, 60),
        Err(MintError(_))
    ));
    assert!(matches!(
        mint(&k, Network::Bitcoin, 1, HASH, SECRET, "x", 1 << 35, 60),
        Err(MintError(_))
    ));
}

#[test]
fn case_and_whitespace_handling() {
    let s = mint(&key(3), Network::Bitcoin, 1000, HASH, SECRET, "d", TS, 60).unwrap();
    let inv = decode(&s).unwrap();
    assert_eq!(decode(&format!(" \t\r\n{s}\n ")).unwrap(), inv);
    assert_eq!(decode(&s.to_ascii_uppercase()).unwrap(), inv);
    let mut mixed = s.clone();
    mixed.replace_range(0..2, "LN");
    assert!(matches!(decode(&mixed), Err(InvoiceError::Malformed(_))));
    assert!(matches!(decode(""), Err(InvoiceError::Malformed(_))));
    assert!(matches!(decode("   "), Err(InvoiceError::Malformed(_))));
    assert!(matches!(
        decode(&format!("lightning:{s}")),
        Err(InvoiceError::Malformed(_))
    ));
    let huge = "q".repeat(MAX_INVOICE_LEN + 1);
    assert!(matches!(decode(&huge), Err(InvoiceError::Malformed(_))));
}

#[test]
fn hostile_description_is_sanitised() {
    let d = "pay\u{1b}[31m me\nFAKE LOG LINE\u{202e}";
    let s = mint(&key(4), Network::Bitcoin, 1000, HASH, SECRET, d, TS, 60).unwrap();
    let got = decode(&s).unwrap().description.unwrap();
    assert!(
        !got.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{got:?}"
    );
    assert!(got.starts_with("pay"));
}

/// Encoded by PyPI `bolt11` 2.1.1 (the encoder LNbits' FakeWallet uses) with the tags
/// FakeWallet writes: `d` or `h`, optional `x`, `p`, `s`; no `n`, no `9`. Key derived as
/// FakeWallet does from "ToTheMoon1"; payee as reported by that library's own decoder.
const LNBITS_STYLE: &str = "lnbc1u1p5jqw6qdq0ds6rqv3qw3jhxaqpp5q704lapveqfhmq5yauug8sn54hj689e9fvh4uscerjn9elk7halqsp54w46h2at4w46h2at4w46h2at4w46h2at4w46h2at4w46h2at4w4s5jljm7r7r3d8jdtsdlp4257z9fn2j2vet04kmxgtncyqqc5unxuk5vznwly3qpy9k984j4e24pjl2tplgxup6xvuvmqv77vqnlmeglqpnus5jd";
const LNBITS_STYLE_DESC_HASH: &str = "lnbc50n1p5jqw6qhp594c3vs4hy6cygqtz0j5lhtpj7hy9xra3jq7vfkczykr30ys6fzqspp5ehxumnwdehxumnwdehxumnwdehxumnwdehxumnwdehxumnwdehxssp5alh7lml0alh7lml0alh7lml0alh7lml0alh7lml0alh7lml0alhs69d6fwtfadpzr3rmtjvqhcj43nphgwnudg76yrrpwu630z4qvrqx2qwwrqv2ldsjwkktdx8xq5mx64uxzhajlq37vfv7ru9qtvt0rwqq88s2d2";
const LNBITS_PAYEE: &str = "02b3cfa77350f0b6c53a207c98d229983a2d9906bf75bd3ce5ec2c52d8dbc7a991";

#[test]
fn python_bolt11_lnbits_style_invoices_decode() {
    let inv = decode(LNBITS_STYLE).unwrap();
    assert_eq!(inv.network, Network::Bitcoin);
    assert_eq!(inv.amount.map(|m| m.get()), Some(100000));
    assert_eq!(
        inv.payment_hash.to_hex(),
        "079f5ff42cc8137d8284ef3883c274ade5a397254b2f5e43191ca65cfedebf7e"
    );
    assert_eq!(inv.payment_secret, Some([0xab; 32]));
    assert_eq!(inv.timestamp, 1_763_720_000);
    assert_eq!(inv.expiry_secs, 3600);
    assert_eq!(inv.description.as_deref(), Some("l402 test"));
    assert_eq!(hex::encode(inv.payee), LNBITS_PAYEE);

    let inv = decode(LNBITS_STYLE_DESC_HASH).unwrap();
    assert_eq!(inv.amount.map(|m| m.get()), Some(5000));
    assert_eq!(inv.payment_hash.0, [0xcd; 32]);
    assert_eq!(inv.description, None);
    assert_eq!(hex::encode(inv.payee), LNBITS_PAYEE);

    for s in [LNBITS_STYLE, LNBITS_STYLE_DESC_HASH] {
        assert_eq!(
            Bolt11Invoice::from_str(s),
            Err(ParseOrSemanticError::SemanticError(
                Bolt11SemanticError::InvalidFeatures
            ))
        );
    }
}

/// A signed invoice like LNbits' FakeWallet writes: everything except the `9` field.
/// `with_n` adds the payee key; `sign` produces the signature from the message.
fn no_features_invoice(
    with_n: bool,
    with_secret: bool,
    sign: impl FnOnce(&Message) -> bitcoin::secp256k1::ecdsa::RecoverableSignature,
) -> String {
    let k = key(5);
    let builder = InvoiceBuilder::new(Currency::Bitcoin)
        .description("lnbits fakewallet".into())
        .payment_hash(sha256::Hash::from_byte_array(HASH))
        .duration_since_epoch(Duration::from_secs(TS))
        .min_final_cltv_expiry_delta(18)
        .amount_milli_satoshis(100_000)
        .expiry_time(Duration::from_secs(3600));
    let builder = if with_n {
        builder.payee_pub_key(PublicKey::from_secret_key(&Secp256k1::new(), &k))
    } else {
        builder
    };
    let mut raw = builder
        .payment_secret(PaymentSecret(SECRET))
        .build_raw()
        .unwrap();
    raw.data.tagged_fields.retain(|f| {
        !matches!(f, RawTaggedField::KnownSemantics(TaggedField::Features(_)))
            && (with_secret
                || !matches!(
                    f,
                    RawTaggedField::KnownSemantics(TaggedField::PaymentSecret(_))
                ))
    });
    assert!(raw.features().is_none());
    raw.sign::<_, ()>(|m| Ok(sign(m))).unwrap().to_string()
}

fn good_sig(m: &Message) -> bitcoin::secp256k1::ecdsa::RecoverableSignature {
    Secp256k1::new().sign_ecdsa_recoverable(m, &key(5))
}

#[test]
fn no_features_invoice_is_accepted_lnbits_path() {
    for with_n in [false, true] {
        let s = no_features_invoice(with_n, true, good_sig);
        // Strict reader refuses exactly because of the missing features field...
        assert_eq!(
            Bolt11Invoice::from_str(&s),
            Err(ParseOrSemanticError::SemanticError(
                Bolt11SemanticError::InvalidFeatures
            ))
        );
        // ...while the raw reader is happy and its signature checks out.
        assert!(SignedRawBolt11Invoice::from_str(&s)
            .unwrap()
            .check_signature());
        let inv = decode(&s).unwrap();
        assert_eq!(
            inv,
            Invoice {
                network: Network::Bitcoin,
                amount: Some(Msat::new(100_000)),
                payment_hash: PaymentHash(HASH),
                payment_secret: Some(SECRET),
                timestamp: TS,
                expiry_secs: 3600,
                payee: pubkey(&key(5)),
                description_hash: None,
                description: Some("lnbits fakewallet".into()),
            }
        );
    }
}

#[test]
fn no_features_invoice_with_bad_signature_is_refused() {
    // Signed by another key while `n` names key 5.
    let s = no_features_invoice(true, true, |m| {
        Secp256k1::new().sign_ecdsa_recoverable(m, &key(6))
    });
    assert_eq!(decode(&s), Err(InvoiceError::BadSignature));

    // Signature over a different message by the right key.
    let s = no_features_invoice(true, true, |_| good_sig(&Message::from_digest([0xab; 32])));
    assert_eq!(decode(&s), Err(InvoiceError::BadSignature));

    // Without `n`: a zeroed signature recovers no key at all.
    let s = no_features_invoice(false, true, |_| {
        let id = bitcoin::secp256k1::ecdsa::RecoveryId::from_i32(0).unwrap();
        bitcoin::secp256k1::ecdsa::RecoverableSignature::from_compact(&[0; 64], id).unwrap()
    });
    assert_eq!(decode(&s), Err(InvoiceError::BadSignature));

    // Without `n`, any other well-formed signature recovers *some* key: decode cannot tell,
    // but the reported payee is then not the real one (this is why mint writes `n`).
    let s = no_features_invoice(false, true, |m| {
        Secp256k1::new().sign_ecdsa_recoverable(m, &key(6))
    });
    assert_eq!(decode(&s).unwrap().payee, pubkey(&key(6)));
}

#[test]
fn legacy_invoice_without_features_or_secret_is_accepted() {
    let s = no_features_invoice(false, false, good_sig);
    let inv = decode(&s).unwrap();
    assert_eq!(inv.payment_secret, None);
    assert_eq!(inv.payee, pubkey(&key(5)));
}

/// Re-signs a minted invoice after `edit` changed its features field.
fn with_features_edit(edit: impl Fn(&mut TaggedField)) -> String {
    let s = mint(&key(8), Network::Bitcoin, 1000, HASH, SECRET, "f", TS, 60).unwrap();
    let (mut raw, _, _) = SignedRawBolt11Invoice::from_str(&s).unwrap().into_parts();
    for f in raw.data.tagged_fields.iter_mut() {
        if let RawTaggedField::KnownSemantics(tf @ TaggedField::Features(_)) = f {
            edit(tf);
        }
    }
    raw.sign::<_, ()>(|m| Ok(Secp256k1::new().sign_ecdsa_recoverable(m, &key(8))))
        .unwrap()
        .to_string()
}

#[test]
fn feature_bits_policy() {
    let required_100 = with_features_edit(|tf| {
        if let TaggedField::Features(f) = tf {
            f.set_required_feature_bit(100).unwrap();
        }
    });
    assert_eq!(
        decode(&required_100),
        Err(InvoiceError::UnknownRequiredFeature)
    );

    // Unknown *optional* (odd) bits are fine, as BOLT 9 says.
    let optional_101 = with_features_edit(|tf| {
        if let TaggedField::Features(f) = tf {
            f.set_optional_feature_bit(101).unwrap();
        }
    });
    assert!(decode(&optional_101).is_ok());
    assert!(Bolt11Invoice::from_str(&optional_101).is_ok());

    // A features field that does not signal payment_secret while `s` is present.
    let no_secret_bit = with_features_edit(|tf| {
        if let TaggedField::Features(f) = tf {
            f.clear_payment_secret();
        }
    });
    assert!(matches!(
        decode(&no_secret_bit),
        Err(InvoiceError::Semantic(_))
    ));
}

#[test]
fn amount_and_expiry_helpers() {
    let mut inv =
        decode(&mint(&key(2), Network::Bitcoin, 1001, HASH, SECRET, "a", TS, 100).unwrap())
            .unwrap();
    assert_eq!(inv.amount_sats_ceil(), Some(2));
    inv.amount = Some(Msat::new(1000));
    assert_eq!(inv.amount_sats_ceil(), Some(1));
    inv.amount = Some(Msat::new(1));
    assert_eq!(inv.amount_sats_ceil(), Some(1));
    inv.amount = Some(Msat::new(0));
    assert_eq!(inv.amount_sats_ceil(), Some(0));
    inv.amount = Some(Msat::new(u64::MAX));
    assert_eq!(inv.amount_sats_ceil(), Some(u64::MAX / 1000 + 1));
    inv.amount = None;
    assert_eq!(inv.amount_sats_ceil(), None);

    assert_eq!(inv.expires_at(), TS + 100);
    assert!(!inv.is_expired_at(TS));
    assert!(!inv.is_expired_at(TS + 99));
    assert!(inv.is_expired_at(TS + 100));
    assert!(inv.is_expired_at(u64::MAX));
    inv.expiry_secs = u64::MAX;
    assert_eq!(inv.expires_at(), u64::MAX);
    assert!(!inv.is_expired_at(u64::MAX - 1));
    inv.expiry_secs = 0;
    assert!(inv.is_expired_at(TS));
}

#[test]
fn amount_parsing_rules() {
    assert_eq!(amount_msat(None, None), Ok(None));
    assert_eq!(
        amount_msat(Some(2500), Some(1_000_000)),
        Ok(Some(250_000_000))
    );
    assert_eq!(amount_msat(Some(10), Some(1)), Ok(Some(1)));
    assert!(matches!(
        amount_msat(Some(11), Some(1)),
        Err(InvoiceError::Semantic(_))
    ));
    assert_eq!(
        amount_msat(Some(21_000_000), None),
        Ok(Some(MAX_AMOUNT_MSAT))
    );
    assert!(matches!(
        amount_msat(Some(21_000_001), None),
        Err(InvoiceError::Semantic(_))
    ));
    // Past u64 pico-BTC, where lightning-invoice reports "no amount".
    assert_eq!(
        amount_msat(Some(20_000_000), None),
        Ok(Some(2 * 10u64.pow(18)))
    );
    assert!(matches!(
        amount_msat(Some(u64::MAX), None),
        Err(InvoiceError::Semantic(_))
    ));
    assert!(matches!(
        amount_msat(Some(u64::MAX), Some(1_000_000_000)),
        Err(InvoiceError::Semantic(_))
    ));
}

#[test]
fn network_names() {
    for (s, n) in [
        ("bitcoin", Network::Bitcoin),
        ("mainnet", Network::Bitcoin),
        ("Testnet", Network::Testnet),
        (" signet ", Network::Signet),
        ("REGTEST", Network::Regtest),
    ] {
        assert_eq!(s.parse::<Network>(), Ok(n));
    }
    assert!("simnet".parse::<Network>().is_err());
    assert!("".parse::<Network>().is_err());
    for n in [
        Network::Bitcoin,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ] {
        assert_eq!(n.to_string().parse::<Network>(), Ok(n));
    }
    assert_eq!(Network::Bitcoin.to_string(), "bitcoin");
}

// ---- no-panic fuzzing -------------------------------------------------------------------

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP 173 checksum, so fuzz inputs get past the bech32 layer into the field parsers.
fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    fn polymod(values: &[u8]) -> u32 {
        const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
        let mut chk = 1u32;
        for &v in values {
            let b = chk >> 25;
            chk = ((chk & 0x1ffffff) << 5) ^ u32::from(v);
            for (i, g) in GEN.iter().enumerate() {
                if (b >> i) & 1 == 1 {
                    chk ^= g;
                }
            }
        }
        chk
    }
    let mut values: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|b| b & 31));
    values.extend_from_slice(data);
    values.extend_from_slice(&[0; 6]);
    let pm = polymod(&values) ^ 1;
    let mut out = format!("{hrp}1");
    out.extend(data.iter().map(|&d| CHARSET[d as usize] as char));
    out.extend((0..6).map(|i| CHARSET[((pm >> (5 * (5 - i))) & 31) as usize] as char));
    out
}

/// Random field-shaped invoices, correctly signed over their exact encoding, so the field
/// rules (not just the signature) are reached; differential against lightning-invoice's
/// strict reader: whatever it accepts we accept with the same fields, and whatever only we
/// accept is one of the documented leniencies.
#[test]
fn signed_random_invoices_agree_with_strict_reader() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let secp = Secp256k1::new();
    let signer = key(12);
    let signer_pub = pubkey(&signer);
    let groups =
        |text: &str| -> Vec<u8> { text.bytes().map(|c| bech32_value(c).unwrap()).collect() };
    let description = groups("xysxxatsyp3k7enxv4js"); // "1 cup coffee" from the BOLT 11 examples
    let feature_choices = [
        groups("sgq"),
        groups("ysgq"),
        groups("pqqqqqqqqqqqqqqqqsgq"),
        groups("gq"),
        groups("q"),
    ];
    let n_field = to_groups(&signer_pub);
    let mut ours_only = std::collections::BTreeMap::<String, usize>::new();
    let mut both = 0;
    let mut bogus_payee = 0;
    let mut stricter = 0;
    for _ in 0..3000 {
        let hrp = [
            "lnbc",
            "lntb",
            "lnbcrt",
            "lntbs",
            "lnbc2500u",
            "lnbc10p",
            "lnbc11p",
            "lnbc20000000",
        ][rng.below(8)];
        let random_groups = |n: usize, rng: &mut XorShift| -> Vec<u8> {
            let mut g: Vec<u8> = (0..n).map(|_| rng.below(32) as u8).collect();
            if n == 52 && rng.below(4) != 0 {
                g[51] &= 0b10000; // zero padding bits, as canonical writers do
            }
            g
        };
        let mut fields: Vec<(u8, Vec<u8>)> = Vec::new();
        for (tag, keep) in [
            (1u8, 8),
            (13, 8),
            (16, 6),
            (5, 6),
            (6, 2),
            (24, 2),
            (19, 3),
            (23, 1),
        ] {
            let copies = match rng.below(10) {
                0 => 2,
                r if r < keep => 1,
                _ => 0,
            };
            for _ in 0..copies {
                let v = match tag {
                    13 => description.clone(),
                    5 => feature_choices[rng.below(feature_choices.len())].clone(),
                    19 if rng.below(4) != 0 => n_field.clone(),
                    19 => random_groups(53, &mut rng),
                    6 | 24 => random_groups(1 + rng.below(5), &mut rng),
                    _ => random_groups(52, &mut rng),
                };
                fields.push((tag, v));
            }
        }
        if rng.below(4) == 0 {
            let len = rng.below(60);
            fields.push((rng.below(32) as u8, random_groups(len, &mut rng)));
        }
        // Shuffle (Fisher-Yates).
        for i in (1..fields.len()).rev() {
            fields.swap(i, rng.below(i + 1));
        }
        let mut data: Vec<u8> = (0..7).map(|_| rng.below(32) as u8).collect();
        for (tag, v) in &fields {
            data.extend_from_slice(&[*tag, (v.len() >> 5) as u8 & 31, v.len() as u8 & 31]);
            data.extend_from_slice(v);
        }
        let unsigned = bech32_encode(hrp, &data);
        let digest =
            signable_digest(&format!("{}{}", &unsigned, "q".repeat(SIGNATURE_LEN_5))).unwrap();
        let (rid, sig) = secp
            .sign_ecdsa_recoverable(&Message::from_digest(digest), &signer)
            .serialize_compact();
        let mut bytes = sig.to_vec();
        bytes.push(rid.to_i32() as u8);
        data.extend(to_groups(&bytes));
        let s = bech32_encode(hrp, &data);
        let ours = decode(&s);
        match (Bolt11Invoice::from_str(&s), &ours) {
            (Ok(strict), Ok(inv)) => {
                both += 1;
                match (strict.amount_milli_satoshis(), inv.amount.map(|m| m.get())) {
                    // Its pico-BTC u64 overflowed into "no amount"; ours is the real amount.
                    (None, Some(m)) => assert!(m.checked_mul(10).is_none(), "{s}"),
                    (a, b) => assert_eq!(a, b, "{s}"),
                }
                assert_eq!(strict.payment_hash().to_byte_array(), inv.payment_hash.0);
                assert_eq!(Some(strict.payment_secret().0), inv.payment_secret);
                assert_eq!(strict.expiry_time().as_secs(), inv.expiry_secs);
                assert_eq!(strict.duration_since_epoch().as_secs(), inv.timestamp);
                assert_eq!(Currency::from(inv.network), strict.currency());
                let strict_payee = strict.recover_payee_pub_key().serialize();
                if strict_payee != inv.payee {
                    // No `n` and a non-canonical encoding: it recovers a key from the hash of
                    // its re-serialisation, i.e. a bogus payee; ours is the real signer.
                    assert!(strict.payee_pub_key().is_none(), "{s}");
                    assert_ne!(strict.signable_hash(), signable_digest(&s).unwrap(), "{s}");
                    assert_eq!(inv.payee, signer_pub, "{s}");
                    bogus_payee += 1;
                }
            }
            // We check every features field; it only the first.
            (Ok(strict), Err(InvoiceError::UnknownRequiredFeature))
                if strict
                    .tagged_fields()
                    .filter(|f| matches!(f, TaggedField::Features(_)))
                    .count()
                    > 1 =>
            {
                stricter += 1
            }
            (Ok(_), Err(e)) => panic!("strict reader accepts what we refuse ({e}): {s}"),
            (Err(e), Ok(inv)) => {
                let raw = SignedRawBolt11Invoice::from_str(&s).unwrap();
                let no_features = raw.raw_invoice().features().is_none();
                match e {
                    ParseOrSemanticError::SemanticError(Bolt11SemanticError::InvalidFeatures) => {
                        assert!(no_features, "{s}")
                    }
                    ParseOrSemanticError::SemanticError(Bolt11SemanticError::NoPaymentSecret) => {
                        assert!(no_features && inv.payment_secret.is_none(), "{s}")
                    }
                    // Its hash is of a re-serialisation; ours of the text as signed.
                    ParseOrSemanticError::SemanticError(Bolt11SemanticError::InvalidSignature) => {
                        assert_ne!(*raw.signable_hash(), signable_digest(&s).unwrap(), "{s}");
                        assert_eq!(inv.payee, signer_pub, "{s}");
                    }
                    other => panic!("unexpected leniency vs strict reader ({other:?}): {s}"),
                }
                *ours_only.entry(format!("{e:?}")).or_insert(0) += 1;
            }
            (Err(_), Err(_)) => {}
        }
    }
    assert!(both > 50, "differential fuzz too shallow: {both}");
    eprintln!(
        "both {both} (bogus strict payee {bogus_payee}), only ours {ours_only:?}, only strict {stricter}"
    );
    // Each kind of extra leniency (see match above) is actually exercised.
    assert_eq!(ours_only.len(), 3, "{ours_only:?}");
}

/// Bytes to 5-bit groups, zero-padded at the end (BOLT 11 field encoding).
fn to_groups(bytes: &[u8]) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

#[test]
fn bech32_helper_matches_real_invoices() {
    let s = mint(&key(1), Network::Bitcoin, 1000, HASH, SECRET, "x", TS, 60).unwrap();
    let sep = s.rfind('1').unwrap();
    let data: Vec<u8> = s[sep + 1..s.len() - 6]
        .bytes()
        .map(|c| bech32_value(c).unwrap())
        .collect();
    assert_eq!(bech32_encode(&s[..sep], &data), s);
}

#[test]
fn never_panics_on_hostile_input() {
    let v = vectors();
    let mut corpus: Vec<String> = Vec::new();
    for key in ["bolt11_valid", "bolt11_invalid"] {
        for x in list(&v, key) {
            corpus.push(x["invoice"].as_str().unwrap().to_owned());
        }
    }
    for c in list(&v, "challenges") {
        let h = c["header_value"].as_str().unwrap();
        if h.contains("invoice=\"") {
            corpus.push(challenge_invoice(h).to_owned());
        }
    }
    corpus.push(mint(&key(1), Network::Regtest, 1, HASH, SECRET, "x", TS, 60).unwrap());
    corpus.push(no_features_invoice(false, true, good_sig));

    let mut calls = 0usize;
    // Every prefix and suffix (char-boundary safe: the corpus is ASCII).
    for s in &corpus {
        for i in 0..=s.len() {
            let _ = decode(&s[..i]);
            let _ = decode(&s[i..]);
            calls += 2;
        }
    }

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<char> =
        "qpzry9x8gf2tvdw0s3jn54khce6mua7lQPZRY1lnbcLNBC0 \t\n\"=,:\u{0}\u{7f}é€😀bio"
            .chars()
            .collect();
    // Random strings and mutated vectors (these mostly die at the checksum).
    for _ in 0..3000 {
        let s: String = if rng.below(2) == 0 {
            let len = rng.below(400);
            let mut s = String::from(["ln", "lnbc", "LNBC", "lntb", "lnbcrt", ""][rng.below(6)]);
            s.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
            s
        } else {
            let mut chars: Vec<char> = corpus[rng.below(corpus.len())].chars().collect();
            for _ in 0..=rng.below(4) {
                let i = rng.below(chars.len());
                match rng.below(3) {
                    0 => chars[i] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        chars.remove(i);
                    }
                    _ => chars.insert(i, alphabet[rng.below(alphabet.len())]),
                }
            }
            chars.into_iter().collect()
        };
        let _ = decode(&s);
        calls += 1;
    }

    // Checksum-valid strings with random or field-shaped data, to reach the field parsers,
    // amount rules and signature code.
    let hrps = [
        "lnbc",
        "lntb",
        "lntbs",
        "lnbcrt",
        "lnsb",
        "lnbc2500u",
        "lnbc1p",
        "lnbc10p",
        "lnbc0",
        "lnbc00m",
        "lnbc99999999999999999999m",
        "lnbc18446744073709551615",
        "lnbc21000001",
        "lnbc1x",
        "lnxx",
        "ln",
        "bc",
        "lnbc1m1",
    ];
    let tags = [1u8, 13, 19, 23, 6, 24, 9, 3, 16, 27, 5, 0, 31];
    for round in 0..4000 {
        let hrp = hrps[rng.below(hrps.len())];
        let mut data: Vec<u8> = Vec::new();
        if round % 4 == 0 {
            data.extend((0..rng.below(300)).map(|_| rng.below(32) as u8));
        } else {
            data.extend((0..7).map(|_| rng.below(32) as u8));
            for _ in 0..rng.below(8) {
                data.push(tags[rng.below(tags.len())]);
                let len = match rng.below(4) {
                    0 => 52,
                    1 => 53,
                    2 => rng.below(8),
                    _ => rng.below(120),
                };
                data.push((len >> 5) as u8 & 31);
                data.push(len as u8 & 31);
                data.extend((0..len).map(|_| rng.below(32) as u8));
            }
            // Random 104-group signature; the last byte (recovery id) is spread over the
            // last two groups, kept in 0..=3 most of the time so recovery is attempted.
            data.extend((0..102).map(|_| rng.below(32) as u8));
            let mask = if rng.below(4) == 0 { 31 } else { 0b11000 };
            data.push(rng.below(32) as u8 & mask);
            data.push(rng.below(32) as u8 & if mask == 31 { 31 } else { 3 });
        }
        let s = bech32_encode(hrp, &data);
        let s = if rng.below(5) == 0 {
            s.to_ascii_uppercase()
        } else {
            s
        };
        let _ = decode(&s);
        calls += 1;
    }

    assert!(calls > 10_000, "{calls}");
}
