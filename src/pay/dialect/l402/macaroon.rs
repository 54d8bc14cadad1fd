//! Read-only macaroon decoding (V2 binary and V1 text packets). Minting, encoding and
//! verification live with the demo seller (`demo::macaroon`): the proxy only ever reads the
//! plaintext caveats of a server's token.
//!
//! A client cannot verify a server's macaroon (it lacks the root key) but can read its
//! plaintext caveats to learn the service and the expiry (L402-PROTOCOL.md §3). The
//! layout follows go-macaroon's `packet-v2.go`/`marshal-v2.go` and `marshal-v1.go`, not
//! the errata'd `macaroon-spec.md`. Input is hostile: nothing here panics or allocates
//! more than the input's own size.

use crate::pay::dialect::decode_base64_any;

/// Which serialization a macaroon was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// libmacaroons V1: text packets, each a 4-hex-digit size and a `name value` line.
    V1,
    /// The V2 binary format (first byte 0x02): varint-length fields in sections.
    V2,
}

/// A decoded macaroon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    /// The serialization it was decoded from.
    pub format: Format,
    /// The location hint, if the token carries one; the signature does not cover it.
    pub location: Option<String>,
    /// The identifier, raw; for L402 v0, version, payment hash and token id (see
    /// [`Macaroon::payment_hash_v0`]).
    pub identifier: Vec<u8>,
    /// First-party caveat ids (and third-party cids), UTF-8 lossy, in order.
    pub caveats: Vec<String>,
    /// The extra fields of third-party caveats, so that they are not silently taken
    /// for first-party ones (by the demo seller's verifier or encoder). Empty for L402.
    pub third_party: Vec<ThirdPartyCaveat>,
    /// The final signature of the HMAC chain; without the server's root key it cannot be
    /// verified, only carried.
    pub signature: [u8; 32],
}

/// What a third-party caveat carries besides its cid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartyCaveat {
    /// Position of this caveat's cid in `Macaroon::caveats`.
    pub index: usize,
    /// The discharger's location, if given.
    pub location: Option<String>,
    /// The verification id (vid).
    pub verification_id: Vec<u8>,
}

/// Why a token could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacaroonError {
    /// The token is base64 in neither alphabet, padded or not.
    #[error("macaroon token is not base64")]
    NotBase64,
    /// The bytes end (or a length points) before the structure is complete.
    #[error("macaroon data ends before the structure is complete")]
    Truncated,
    /// The first byte is neither 0x02 (V2) nor an ASCII hex digit (V1); it is carried.
    #[error("unsupported macaroon version or format (first byte 0x{0:02x})")]
    BadVersion(u8),
    /// A V2 varint (a field's type or length) does not fit in 64 bits.
    #[error("macaroon field length is not a valid varint")]
    BadVarint,
    /// A field is missing, out of order or of an unexpected kind; the text says which.
    #[error("malformed macaroon field: {0}")]
    BadField(&'static str),
    /// The signature field is not 32 bytes; its actual length is carried.
    #[error("macaroon signature is {0} bytes, expected 32")]
    BadSignatureLength(usize),
}

/// Decodes a token as sent in a challenge: base64 (either alphabet, padding optional), then
/// V2 binary (first byte 0x02) or V1 text packets (first byte an ASCII hex digit).
pub fn decode_token(token: &str) -> Result<Macaroon, MacaroonError> {
    let bytes = decode_base64_any(token).ok_or(MacaroonError::NotBase64)?;
    decode_bytes(&bytes)
}

/// Decodes raw macaroon bytes, V2 or V1 by the first byte.
///
/// Bytes after the signature are ignored, as go-macaroon's `UnmarshalBinary` does.
pub fn decode_bytes(bytes: &[u8]) -> Result<Macaroon, MacaroonError> {
    match bytes.first() {
        None => Err(MacaroonError::Truncated),
        Some(2) => decode_v2(bytes.get(1..).unwrap_or_default()),
        Some(b) if b.is_ascii_hexdigit() => decode_v1(bytes),
        Some(&b) => Err(MacaroonError::BadVersion(b)),
    }
}

impl Macaroon {
    /// The payment hash from an L402 v0 identifier (66 bytes: `u16` BE version 0 | `hash[32]` | `token_id[32]`); None otherwise.
    pub fn payment_hash_v0(&self) -> Option<[u8; 32]> {
        let rest = self.identifier.strip_prefix(&[0, 0])?;
        if rest.len() != 64 {
            return None;
        }
        rest.get(..32)?.try_into().ok()
    }

    /// Value of the LAST `services=` caveat (e.g. "meme:0"), if any.
    ///
    /// The last one, because Aperture requires repeated caveats to narrow and checks
    /// the target service against the last.
    pub fn services(&self) -> Option<&str> {
        self.caveats
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("services="))
    }

    /// Earliest expiry in unix seconds from `<anything>_valid_until=<unix s>` and `expiration=<unix ms>` caveats (ms divided by 1000, rounded down); None if none parse.
    pub fn expires_at_unix(&self) -> Option<u64> {
        self.caveats.iter().filter_map(|c| caveat_expiry(c)).min()
    }
}

/// Seconds from one expiry caveat, if it is one and its value parses.
fn caveat_expiry(caveat: &str) -> Option<u64> {
    let (condition, value) = caveat.split_once('=')?;
    if condition == "expiration" {
        value.parse::<u64>().ok().map(|ms| ms / 1000)
    } else if condition.ends_with("_valid_until") {
        value.parse().ok()
    } else {
        None
    }
}

// ---- V2 binary ----

pub(crate) const FIELD_EOS: u8 = 0;
pub(crate) const FIELD_LOCATION: u8 = 1;
pub(crate) const FIELD_IDENTIFIER: u8 = 2;
pub(crate) const FIELD_VID: u8 = 4;
pub(crate) const FIELD_SIGNATURE: u8 = 6;

/// A forward reader over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, MacaroonError> {
        let (&b, rest) = self.data.split_first().ok_or(MacaroonError::Truncated)?;
        self.data = rest;
        Ok(b)
    }

    /// Unsigned LEB128, at most 64 bits.
    fn varint(&mut self) -> Result<u64, MacaroonError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err(MacaroonError::BadVarint);
            }
            value |= low << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MacaroonError::BadVarint)
    }

    /// Borrows `len` bytes. The length is checked against what is left before
    /// anything is done with it, so a hostile varint cannot cause an allocation.
    fn take(&mut self, len: u64) -> Result<&'a [u8], MacaroonError> {
        let len = usize::try_from(len).map_err(|_| MacaroonError::Truncated)?;
        let (head, rest) = self
            .data
            .split_at_checked(len)
            .ok_or(MacaroonError::Truncated)?;
        self.data = rest;
        Ok(head)
    }

    /// One packet: `(type, data)`, or `(0, [])` for end-of-section.
    fn packet(&mut self) -> Result<(u64, &'a [u8]), MacaroonError> {
        let field = self.varint()?;
        if field == u64::from(FIELD_EOS) {
            return Ok((field, &[]));
        }
        let len = self.varint()?;
        Ok((field, self.take(len)?))
    }

    /// Packets up to an end-of-section, with types strictly increasing as go-macaroon
    /// requires. Only the field types a macaroon uses are accepted.
    fn section(&mut self) -> Result<Section<'a>, MacaroonError> {
        let mut section = Section::default();
        let mut last = 0u64;
        loop {
            let (field, data) = self.packet()?;
            if field == u64::from(FIELD_EOS) {
                return Ok(section);
            }
            if field <= last {
                return Err(MacaroonError::BadField("fields out of order"));
            }
            last = field;
            let slot = match u8::try_from(field) {
                Ok(FIELD_LOCATION) => &mut section.location,
                Ok(FIELD_IDENTIFIER) => &mut section.identifier,
                Ok(FIELD_VID) => &mut section.vid,
                _ => return Err(MacaroonError::BadField("unexpected field type in section")),
            };
            *slot = Some(data);
        }
    }
}

/// The fields of one V2 section (header or caveat).
#[derive(Default)]
struct Section<'a> {
    location: Option<&'a [u8]>,
    identifier: Option<&'a [u8]>,
    vid: Option<&'a [u8]>,
}

impl Section<'_> {
    fn is_empty(&self) -> bool {
        self.location.is_none() && self.identifier.is_none() && self.vid.is_none()
    }
}

/// Decodes V2 binary after the version byte.
fn decode_v2(data: &[u8]) -> Result<Macaroon, MacaroonError> {
    let mut reader = Reader { data };
    let header = reader.section()?;
    let identifier = header
        .identifier
        .ok_or(MacaroonError::BadField("missing identifier"))?;
    if header.vid.is_some() {
        return Err(MacaroonError::BadField(
            "verification id in macaroon header",
        ));
    }
    let mut caveats = Vec::new();
    let mut third_party = Vec::new();
    loop {
        let section = reader.section()?;
        if section.is_empty() {
            break;
        }
        let cid = section
            .identifier
            .ok_or(MacaroonError::BadField("caveat without identifier"))?;
        match section.vid {
            Some(vid) => third_party.push(ThirdPartyCaveat {
                index: caveats.len(),
                location: section.location.map(lossy),
                verification_id: vid.to_vec(),
            }),
            None if section.location.is_some() => {
                return Err(MacaroonError::BadField("location in first-party caveat"));
            }
            None => {}
        }
        caveats.push(lossy(cid));
    }
    let (field, sig) = reader.packet()?;
    if field != u64::from(FIELD_SIGNATURE) {
        return Err(MacaroonError::BadField("expected signature"));
    }
    Ok(Macaroon {
        format: Format::V2,
        location: header.location.map(lossy),
        identifier: identifier.to_vec(),
        caveats,
        third_party,
        signature: signature(sig)?,
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn signature(bytes: &[u8]) -> Result<[u8; 32], MacaroonError> {
    bytes
        .try_into()
        .map_err(|_| MacaroonError::BadSignatureLength(bytes.len()))
}

// ---- V1 text packets (libmacaroons) ----

/// One V1 packet: `HHHH<name> <value>\n`, HHHH being the total length in hex
/// (header and newline included).
struct V1Packet<'a> {
    name: &'a [u8],
    value: &'a [u8],
    /// The bytes after this packet.
    rest: &'a [u8],
}

/// Splits one V1 packet off the front of `data`.
fn v1_packet(data: &[u8]) -> Result<V1Packet<'_>, MacaroonError> {
    let (size, _) = data
        .split_first_chunk::<4>()
        .ok_or(MacaroonError::Truncated)?;
    let size = std::str::from_utf8(size)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or(MacaroonError::BadField(
            "V1 packet size is not 4 hex digits",
        ))?;
    let (packet, rest) = data
        .split_at_checked(size)
        .ok_or(MacaroonError::Truncated)?;
    let body = packet
        .get(4..)
        .and_then(|b| b.strip_suffix(b"\n"))
        .ok_or(MacaroonError::BadField("V1 packet without newline"))?;
    let space = body
        .iter()
        .position(|&b| b == b' ')
        .filter(|&i| i > 0)
        .ok_or(MacaroonError::BadField("V1 packet without field name"))?;
    let (name, value) = body.split_at(space);
    Ok(V1Packet {
        name,
        value: value.get(1..).unwrap_or_default(),
        rest,
    })
}

/// Decodes libmacaroons V1: `[location] identifier (cid [vid] [cl])* signature`.
///
/// go-macaroon requires the location packet; it is optional here since nothing
/// depends on it.
fn decode_v1(data: &[u8]) -> Result<Macaroon, MacaroonError> {
    let mut packet = v1_packet(data)?;
    let mut location = None;
    if packet.name == b"location" {
        location = Some(lossy(packet.value));
        packet = v1_packet(packet.rest)?;
    }
    if packet.name != b"identifier" {
        return Err(MacaroonError::BadField("V1 identifier missing"));
    }
    let identifier = packet.value.to_vec();
    let mut caveats = Vec::new();
    let mut third_party = Vec::new();
    loop {
        packet = v1_packet(packet.rest)?;
        match packet.name {
            b"signature" => {
                return Ok(Macaroon {
                    format: Format::V1,
                    location,
                    identifier,
                    caveats,
                    third_party,
                    signature: signature(packet.value)?,
                });
            }
            b"cid" => caveats.push(lossy(packet.value)),
            b"vid" | b"cl" => {
                v1_third_party(&mut third_party, caveats.len(), packet.name, packet.value)?
            }
            _ => return Err(MacaroonError::BadField("unexpected V1 field")),
        }
    }
}

/// Attaches a V1 `vid` or `cl` packet to the caveat just read (`cid_count` > 0).
fn v1_third_party(
    third_party: &mut Vec<ThirdPartyCaveat>,
    cid_count: usize,
    name: &[u8],
    value: &[u8],
) -> Result<(), MacaroonError> {
    let index = cid_count
        .checked_sub(1)
        .ok_or(MacaroonError::BadField("V1 vid/cl before any cid"))?;
    if third_party.last().is_none_or(|t| t.index != index) {
        third_party.push(ThirdPartyCaveat {
            index,
            location: None,
            verification_id: Vec::new(),
        });
    }
    let Some(entry) = third_party.last_mut() else {
        return Err(MacaroonError::BadField("V1 vid/cl before any cid"));
    };
    let repeated = if name == b"vid" {
        !std::mem::replace(&mut entry.verification_id, value.to_vec()).is_empty()
    } else {
        entry.location.replace(lossy(value)).is_some()
    };
    if repeated {
        return Err(MacaroonError::BadField("repeated V1 vid/cl in caveat"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::macaroon::{
        encode_v2, hmac_sha256, identifier_v0, mint, put_field, verify_signature,
    };
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    fn vectors() -> serde_json::Value {
        crate::test_vectors::l402()
    }

    fn vector_macaroons() -> Vec<serde_json::Value> {
        let v = vectors();
        let list = v["macaroons"].as_array().expect("macaroons array").clone();
        assert!(!list.is_empty());
        list
    }

    fn vector_bytes(entry: &serde_json::Value) -> Vec<u8> {
        let b64 = entry["base64"].as_str().expect("base64");
        decode_base64_any(b64).expect("vector is base64")
    }

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    #[test]
    fn vector_macaroons_decode() {
        for entry in vector_macaroons() {
            let name = entry["name"].as_str().unwrap_or("?");
            let m = decode_token(entry["base64"].as_str().expect("base64"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let d = &entry["decoded"];
            let format = match d["format"].as_str() {
                Some("V1") => Format::V1,
                Some("V2") => Format::V2,
                other => panic!("{name}: format {other:?}"),
            };
            assert_eq!(m.format, format, "{name}");
            assert_eq!(m.location.as_deref(), d["location"].as_str(), "{name}");
            if let Some(hex_id) = d["identifier_hex"].as_str() {
                assert_eq!(hex::encode(&m.identifier), hex_id, "{name}");
            }
            if let Some(ascii) = d["identifier_ascii"].as_str() {
                assert_eq!(m.identifier, ascii.as_bytes(), "{name}");
            }
            if let Some(len) = d["identifier_len"].as_u64() {
                assert_eq!(m.identifier.len() as u64, len, "{name}");
            }
            let caveats: Vec<&str> = d["caveats"]
                .as_array()
                .expect("caveats")
                .iter()
                .map(|c| c.as_str().expect("caveat string"))
                .collect();
            assert_eq!(m.caveats, caveats, "{name}");
            assert!(m.third_party.is_empty(), "{name}");
            let want_hash = d["l402_identifier_v0"]["payment_hash"].as_str().map(hex32);
            assert_eq!(m.payment_hash_v0(), want_hash, "{name}");
            if let Some(id) = d["l402_identifier_v0"].as_object() {
                let token_id = hex32(id["token_id"].as_str().expect("token_id"));
                let hash = want_hash.expect("hash");
                assert_eq!(
                    identifier_v0(&hash, &token_id)[..],
                    m.identifier[..],
                    "{name}"
                );
            }
            if let Some(invoice_hash) = entry["invoice_payment_hash"].as_str() {
                if let Some(hash) = m.payment_hash_v0() {
                    assert_eq!(hex::encode(hash), invoice_hash, "{name}");
                }
            }
        }
    }

    #[test]
    fn payment_hash_none_for_non_v0_identifiers() {
        let list = vector_macaroons();
        let none: Vec<_> = list
            .iter()
            .filter_map(|e| decode_token(e["base64"].as_str()?).ok())
            .filter(|m| m.payment_hash_v0().is_none())
            .map(|m| (m.format, m.identifier.len()))
            .collect();
        // lsat-js ASCII hex (132), V1 raw hash (32), gob (230).
        assert_eq!(
            none,
            vec![(Format::V2, 132), (Format::V1, 32), (Format::V2, 230)]
        );
    }

    #[test]
    fn aperture_services_and_lsat_js_expiry() {
        let list = vector_macaroons();
        let aperture = decode_token(list[0]["base64"].as_str().expect("b64")).expect("decodes");
        assert_eq!(aperture.services(), Some("meme:0"));
        assert_eq!(aperture.expires_at_unix(), None);
        let lsat_js = decode_token(list[2]["base64"].as_str().expect("b64")).expect("decodes");
        let ms = list[2]["expected_expiration_ms"].as_u64().expect("ms");
        assert_eq!(lsat_js.expires_at_unix(), Some(ms / 1000));
        assert_eq!(lsat_js.expires_at_unix(), Some(1_644_194_263));
        assert_eq!(lsat_js.services(), None);
    }

    #[test]
    fn challenge_token_commits_to_invoice_hash() {
        let v = vectors();
        let entry = &v["challenges"][1];
        let header = entry["header_value"].as_str().expect("header");
        let parsed = super::super::grammar::parse_challenges([header.as_bytes()]);
        let m = decode_token(&parsed[0].token).expect("decodes");
        let want = entry["expect"]["payment_hash"].as_str().expect("hash");
        assert_eq!(m.payment_hash_v0().map(hex::encode).as_deref(), Some(want));
    }

    #[test]
    fn spec_placeholder_token_is_not_a_macaroon() {
        let v = vectors();
        let token = v["challenges"][0]["expect"]["token"]
            .as_str()
            .expect("token");
        assert_eq!(decode_token(token), Err(MacaroonError::BadVersion(0)));
        assert_eq!(decode_token("not base64!"), Err(MacaroonError::NotBase64));
    }

    #[test]
    fn v2_vectors_round_trip_byte_for_byte() {
        let mut v2 = 0;
        for entry in vector_macaroons() {
            let bytes = vector_bytes(&entry);
            let m = decode_bytes(&bytes).expect("decodes");
            if m.format == Format::V2 {
                v2 += 1;
                let again = STANDARD.encode(encode_v2(&m));
                assert_eq!(again, STANDARD.encode(&bytes), "{}", entry["name"]);
            }
        }
        assert_eq!(v2, 4);
    }

    #[test]
    fn v1_converts_to_equivalent_v2() {
        let list = vector_macaroons();
        let v1 = decode_token(list[3]["base64"].as_str().expect("b64")).expect("decodes");
        assert_eq!(v1.format, Format::V1);
        let v2 = decode_bytes(&encode_v2(&v1)).expect("decodes");
        assert_eq!(
            Macaroon {
                format: Format::V1,
                ..v2
            },
            v1
        );
    }

    fn caveats(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mint_encode_decode_verify() {
        let root = [42u8; 32];
        let id = identifier_v0(&[1; 32], &[2; 32]);
        let cavs = caveats(&[
            "services=meme:0",
            "meme_capabilities=",
            "meme_valid_until=1700000000",
        ]);
        let minted = mint(&root, "lsat", &id, &cavs);
        let decoded = decode_bytes(&encode_v2(&minted)).expect("decodes");
        assert_eq!(decoded, minted);
        assert!(verify_signature(&root, &decoded));
        assert_eq!(decoded.payment_hash_v0(), Some([1; 32]));
        assert!(!verify_signature(&[43u8; 32], &decoded));

        let mut tampered = decoded.clone();
        tampered.caveats[0] = "services=meme:1".into();
        assert!(!verify_signature(&root, &tampered));
        let mut dropped = decoded.clone();
        dropped.caveats.pop();
        assert!(!verify_signature(&root, &dropped));
        let mut other_id = decoded;
        other_id.identifier[40] ^= 1;
        assert!(!verify_signature(&root, &other_id));
    }

    #[test]
    fn mint_without_location_or_caveats() {
        let m = mint(b"k", "", b"id", &[]);
        assert_eq!(m.location, None);
        let bytes = encode_v2(&m);
        assert_eq!(bytes.get(..6), Some(&[2, 2, 2, b'i', b'd', 0][..]));
        assert!(verify_signature(
            b"k",
            &decode_bytes(&bytes).expect("decodes")
        ));
    }

    /// No vector carries a root key, so the chain is pinned to an independent
    /// step-by-step computation and the primitive to RFC 4231.
    #[test]
    fn signature_chain_is_hmac_of_hmac() {
        let derived = hmac_sha256(b"macaroons-key-generator", b"root");
        let s1 = hmac_sha256(&derived, b"id");
        let s2 = hmac_sha256(&s1, b"a=b");
        assert_eq!(mint(b"root", "x", b"id", &caveats(&["a=b"])).signature, s2);
        // RFC 4231 test case 2 pins the HMAC primitive itself.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn with_caveats(list: &[&str]) -> Macaroon {
        mint(b"k", "", b"id", &caveats(list))
    }

    #[test]
    fn valid_until_expiry() {
        let m = with_caveats(&["services=a:0", "a_valid_until=1700000000"]);
        assert_eq!(m.expires_at_unix(), Some(1_700_000_000));
        let m = with_caveats(&["a_valid_until=notanumber", "valid_until=5", "x=1"]);
        assert_eq!(m.expires_at_unix(), None);
    }

    #[test]
    fn expiry_is_min_of_both_kinds() {
        let m = with_caveats(&[
            "expiration=1700000500999",
            "a_valid_until=1700000600",
            "b_valid_until=1700000900",
        ]);
        assert_eq!(m.expires_at_unix(), Some(1_700_000_500));
        let m = with_caveats(&["expiration=1700000900000", "a_valid_until=1700000600"]);
        assert_eq!(m.expires_at_unix(), Some(1_700_000_600));
    }

    #[test]
    fn services_takes_last() {
        let m = with_caveats(&["services=a:0,b:0", "x=y", "services=b:0"]);
        assert_eq!(m.services(), Some("b:0"));
    }

    /// Builds V2 bytes by hand, including a third-party caveat.
    fn third_party_v2() -> Vec<u8> {
        let mut b = vec![2];
        put_field(&mut b, FIELD_LOCATION, b"loc");
        put_field(&mut b, FIELD_IDENTIFIER, b"id");
        b.push(0);
        put_field(&mut b, FIELD_IDENTIFIER, b"a=b");
        b.push(0);
        put_field(&mut b, FIELD_LOCATION, b"https://tp");
        put_field(&mut b, FIELD_IDENTIFIER, b"tp-cid");
        put_field(&mut b, FIELD_VID, &[9; 40]);
        b.push(0);
        b.push(0);
        put_field(&mut b, FIELD_SIGNATURE, &[7; 32]);
        b
    }

    #[test]
    fn third_party_caveat_decodes_round_trips_and_fails_verify() {
        let bytes = third_party_v2();
        let m = decode_bytes(&bytes).expect("decodes");
        assert_eq!(m.caveats, caveats(&["a=b", "tp-cid"]));
        assert_eq!(
            m.third_party,
            vec![ThirdPartyCaveat {
                index: 1,
                location: Some("https://tp".into()),
                verification_id: vec![9; 40],
            }]
        );
        assert_eq!(encode_v2(&m), bytes);
        assert!(!verify_signature(b"k", &m));
    }

    #[test]
    fn v1_third_party_packets() {
        fn packet(name: &str, value: &[u8]) -> Vec<u8> {
            let len = 4 + name.len() + 1 + value.len() + 1;
            let mut p = format!("{len:04x}{name} ").into_bytes();
            p.extend_from_slice(value);
            p.push(b'\n');
            p
        }
        let mut data = packet("location", b"L");
        data.extend(packet("identifier", b"id"));
        data.extend(packet("cid", b"a=b"));
        data.extend(packet("cid", b"tp"));
        data.extend(packet("vid", b"v"));
        data.extend(packet("cl", b"https://tp"));
        data.extend(packet("signature", &[1; 32]));
        let m = decode_bytes(&data).expect("decodes");
        assert_eq!(m.caveats, caveats(&["a=b", "tp"]));
        assert_eq!(m.third_party.len(), 1);
        assert_eq!(m.third_party[0].index, 1);
        assert_eq!(m.third_party[0].location.as_deref(), Some("https://tp"));

        let mut bad = packet("identifier", b"id");
        bad.extend(packet("vid", b"v"));
        bad.extend(packet("signature", &[1; 32]));
        assert!(matches!(
            decode_bytes(&bad),
            Err(MacaroonError::BadField(_))
        ));
    }

    #[test]
    fn hostile_varints() {
        // Identifier length 2^63: must be rejected without allocating.
        let mut huge = vec![2, FIELD_IDENTIFIER];
        huge.extend([0xff; 8]);
        huge.push(0x7f);
        assert_eq!(decode_bytes(&huge), Err(MacaroonError::Truncated));
        // Eleven continuation bytes: overflows 64 bits.
        let mut long = vec![2, FIELD_IDENTIFIER];
        long.extend([0xff; 11]);
        assert_eq!(decode_bytes(&long), Err(MacaroonError::BadVarint));
        // Tenth byte with more than one bit set.
        let mut over = vec![2, FIELD_IDENTIFIER];
        over.extend([0x80; 9]);
        over.push(0x02);
        assert_eq!(decode_bytes(&over), Err(MacaroonError::BadVarint));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(decode_bytes(&[]), Err(MacaroonError::Truncated));
        assert_eq!(
            decode_bytes(b"{\"v\":2}"),
            Err(MacaroonError::BadVersion(b'{'))
        );
        // Header section without identifier.
        assert!(matches!(
            decode_bytes(&[2, 1, 1, b'x', 0]),
            Err(MacaroonError::BadField(_))
        ));
        // Fields out of order.
        assert!(matches!(
            decode_bytes(&[2, 2, 1, b'i', 1, 1, b'x', 0]),
            Err(MacaroonError::BadField(_))
        ));
        // Short signature.
        let mut short = vec![2, 2, 1, b'i', 0, 0];
        put_field(&mut short, FIELD_SIGNATURE, &[0; 31]);
        assert_eq!(
            decode_bytes(&short),
            Err(MacaroonError::BadSignatureLength(31))
        );
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn fuzz_prefixes_mutations_and_garbage_never_panic() {
        let mut samples: Vec<Vec<u8>> = vector_macaroons().iter().map(vector_bytes).collect();
        samples.push(third_party_v2());
        for bytes in &samples {
            assert!(decode_bytes(bytes).is_ok());
            for end in 0..bytes.len() {
                assert!(
                    decode_bytes(&bytes[..end]).is_err(),
                    "prefix {end} accepted"
                );
                let _ = decode_bytes(&bytes[end..]);
            }
        }
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for round in 0..20_000 {
            let mut data = samples[round % samples.len()].clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            let _ = decode_bytes(&data);
            let garbage: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = decode_bytes(&garbage);
            let mut v2 = vec![2];
            v2.extend(&garbage);
            let _ = decode_bytes(&v2);
            let text: String = garbage.iter().map(|&b| char::from(b'A' + b % 26)).collect();
            let _ = decode_token(&text);
        }
    }
}
