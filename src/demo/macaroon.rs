//! The seller's side of macaroons: go-macaroon compatible minting, V2 encoding and signature
//! verification, for the demo seller and the tests. The proxy never needs these: it only reads
//! the caveats of tokens servers send (`pay::dialect::l402::macaroon`).

use crate::pay::dialect::l402::macaroon::{
    Format, Macaroon, FIELD_EOS, FIELD_IDENTIFIER, FIELD_LOCATION, FIELD_SIGNATURE, FIELD_VID,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Serializes to V2 binary (go-macaroon layout, see L402-PROTOCOL.md §3, NOT the errata'd spec text).
///
/// Like go-macaroon, empty locations and empty vids are omitted.
pub fn encode_v2(m: &Macaroon) -> Vec<u8> {
    let mut out = vec![2];
    if let Some(location) = m.location.as_deref().filter(|l| !l.is_empty()) {
        put_field(&mut out, FIELD_LOCATION, location.as_bytes());
    }
    put_field(&mut out, FIELD_IDENTIFIER, &m.identifier);
    out.push(FIELD_EOS);
    for (index, cid) in m.caveats.iter().enumerate() {
        let third = m.third_party.iter().find(|t| t.index == index);
        if let Some(location) = third.and_then(|t| t.location.as_deref()) {
            if !location.is_empty() {
                put_field(&mut out, FIELD_LOCATION, location.as_bytes());
            }
        }
        put_field(&mut out, FIELD_IDENTIFIER, cid.as_bytes());
        if let Some(vid) = third.map(|t| &t.verification_id) {
            if !vid.is_empty() {
                put_field(&mut out, FIELD_VID, vid);
            }
        }
        out.push(FIELD_EOS);
    }
    out.push(FIELD_EOS);
    put_field(&mut out, FIELD_SIGNATURE, &m.signature);
    out
}

/// Appends `type varint(len) data`.
pub(crate) fn put_field(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    out.push(field);
    let mut len = data.len() as u64;
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(data);
}

/// Builds an L402 v0 identifier.
pub fn identifier_v0(payment_hash: &[u8; 32], token_id: &[u8; 32]) -> [u8; 66] {
    let mut id = [0u8; 66];
    id[2..34].copy_from_slice(payment_hash);
    id[34..].copy_from_slice(token_id);
    id
}

/// Mints a V2 macaroon the way go-macaroon does: derived key = HMAC-SHA256(key = b"macaroons-key-generator", msg = root_key);
/// sig = HMAC-SHA256(key = derived, msg = identifier); for each first-party caveat: sig = HMAC-SHA256(key = sig, msg = caveat).
pub fn mint(root_key: &[u8], location: &str, identifier: &[u8], caveats: &[String]) -> Macaroon {
    Macaroon {
        format: Format::V2,
        location: (!location.is_empty()).then(|| location.to_owned()),
        identifier: identifier.to_vec(),
        caveats: caveats.to_vec(),
        third_party: Vec::new(),
        signature: signature_chain(root_key, identifier, caveats),
    }
}

/// Recomputes the HMAC chain with root_key and compares in constant time.
/// Third-party caveats (with a vid) make it return false (unsupported).
///
/// Caveats are compared as stored, so a caveat that was not valid UTF-8 (and was
/// stored lossily) also fails.
pub fn verify_signature(root_key: &[u8], m: &Macaroon) -> bool {
    if !m.third_party.is_empty() {
        return false;
    }
    let expected = signature_chain(root_key, &m.identifier, &m.caveats);
    constant_time_eq(&expected, &m.signature)
}

/// go-macaroon's key derivation constant (`keyGen`).
const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";

/// The signature of a macaroon with only first-party caveats.
fn signature_chain(root_key: &[u8], identifier: &[u8], caveats: &[String]) -> [u8; 32] {
    let derived = hmac_sha256(KEY_GENERATOR, root_key);
    let first = hmac_sha256(&derived, identifier);
    caveats
        .iter()
        .fold(first, |sig, c| hmac_sha256(&sig, c.as_bytes()))
}

pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so the error arm is dead; it yields a value that
    // can never verify rather than a panic.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Compares without an early exit so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
