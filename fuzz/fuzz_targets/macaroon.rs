//! Macaroon decoding (V2 binary, V1 text packets, and tokens as base64 in either alphabet) on
//! hostile bytes, and the round trip through the demo seller's V2 encoder. Must never panic.
//!
//! Round trip, for a macaroon without third-party caveats (what the decoder guarantees, see
//! `v2_vectors_round_trip_byte_for_byte`, `v1_converts_to_equivalent_v2` and
//! `mint_encode_decode_verify` in `src/pay/dialect/l402/macaroon.rs`):
//! `decode(encode_v2(m)) == m`, up to the format (V1 comes back as V2) and an empty location
//! (the encoder omits it, as go-macaroon does, so `Some("")` comes back as `None`); and the
//! encoding is a fixed point: `encode_v2(decode(encode_v2(m))) == encode_v2(m)`. Not asserted:
//! that the input bytes come back (non-minimal varints and trailing bytes are accepted), and
//! anything for third-party caveats (an empty vid is omitted, which turns the caveat into a
//! first-party one that may then carry a forbidden location); those are only decoded again.
#![no_main]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use l402_proxy::demo::macaroon::encode_v2;
use l402_proxy::pay::dialect::l402::macaroon::{decode_bytes, decode_token, Format, Macaroon};
use libfuzzer_sys::fuzz_target;

fn exercise(m: &Macaroon) {
    let _ = (m.payment_hash_v0(), m.services(), m.expires_at_unix());
    let encoded = encode_v2(m);
    let again = decode_bytes(&encoded);
    if !m.third_party.is_empty() {
        return;
    }
    let again = match again {
        Ok(again) => again,
        Err(e) => panic!("encode_v2 of {m:?} does not decode: {e}"),
    };
    let expected = Macaroon {
        format: Format::V2,
        location: m.location.clone().filter(|l| !l.is_empty()),
        ..m.clone()
    };
    assert_eq!(again, expected, "round trip through encode_v2");
    assert_eq!(encode_v2(&again), encoded, "encode_v2 is not a fixed point");
    // What the L402 dialect reads from it must not change on the way.
    assert_eq!(again.payment_hash_v0(), m.payment_hash_v0());
    assert_eq!(again.services(), m.services());
    assert_eq!(again.expires_at_unix(), m.expires_at_unix());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_bytes(data) {
        exercise(&m);
    }
    // The same bytes as a challenge's token: the text itself, and the bytes base64-encoded
    // (so the binary decoders are reached through the token path too).
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = decode_token(text) {
            exercise(&m);
        }
    }
    for token in [STANDARD.encode(data), URL_SAFE_NO_PAD.encode(data)] {
        let via_token = decode_token(&token);
        assert_eq!(
            via_token,
            decode_bytes(data),
            "base64 of the bytes decodes differently"
        );
    }
});
