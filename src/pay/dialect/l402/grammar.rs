//! Tolerant parsing of L402/LSAT `WWW-Authenticate` challenges and building of the
//! matching `Authorization` value.
//!
//! Servers in the wild disagree on almost every detail of the header (see
//! L402-PROTOCOL.md §1): scheme case, `token=` vs `macaroon=`, quoting, separators,
//! base64 alphabet, one line per challenge or several challenges folded into one value.
//! The grammar here accepts all of them and never panics, because the input comes from
//! servers we do not trust.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::core::Preimage;
use crate::pay::dialect::auth_params::{Cursor, Item, Value};
use crate::pay::dialect::decode_base64_any;

/// Which scheme name the server used; the values carried are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `L402`, the current name.
    L402,
    /// `LSAT`, the old name some servers (lsat-js, boltwall) still require.
    Lsat,
}

impl Scheme {
    /// The scheme name as sent in `Authorization`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::L402 => "L402",
            Scheme::Lsat => "LSAT",
        }
    }

    /// Parses a stored scheme name (any case); unknown names are L402.
    pub fn from_name(name: &str) -> Scheme {
        if name.eq_ignore_ascii_case("LSAT") {
            Scheme::Lsat
        } else {
            Scheme::L402
        }
    }
}

/// One payable challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme the challenge was sent under; the credential answers in the same one.
    pub scheme: Scheme,
    /// The token exactly as the server sent it (from `token=` if present, else `macaroon=`).
    pub token: String,
    /// The BOLT11 invoice.
    pub invoice: String,
    /// The `version` parameter, when present (only "0" is accepted).
    pub version: Option<String>,
}

/// Parses every L402/LSAT challenge found across all WWW-Authenticate header values (raw bytes;
/// non-UTF-8 values are skipped). Splits folded lists ("LSAT macaroon=..., invoice=..., L402 macaroon=..., invoice=..."),
/// accepts quoted or bare values, ',' or ' ' or ', ' separators with optional whitespace around '=',
/// case-insensitive scheme and param names, `token` winning over `macaroon`, unknown params ignored
/// (e.g. address=), and drops challenges whose version is present and not "0", or that lack a token or invoice.
/// A value that starts directly with params (no scheme, e.g. `macaroon="..." invoice="..."`) counts as L402.
/// Other schemes (Basic, Bearer, Payment, ...) are skipped without breaking the parse of later challenges in the same folded value.
///
/// Challenges whose token or invoice contains anything but visible ASCII are dropped too:
/// such a token could not be sent back in an `Authorization` header, so paying for it
/// would waste the payment.
pub fn parse_challenges<'a, I: IntoIterator<Item = &'a [u8]>>(values: I) -> Vec<Challenge> {
    let mut out = Vec::new();
    for raw in values {
        if let Ok(value) = std::str::from_utf8(raw) {
            parse_header_value(value, &mut out);
        }
    }
    out
}

/// Picks the challenge to pay: the first L402 one, else the first LSAT one.
///
/// Aperture sends identical LSAT and L402 lines; preferring L402 keeps us on the
/// current scheme name whatever the order.
pub fn select(challenges: &[Challenge]) -> Option<&Challenge> {
    let first = |scheme| challenges.iter().find(|c| c.scheme == scheme);
    first(Scheme::L402).or_else(|| first(Scheme::Lsat))
}

/// The Authorization header value to send after paying: `<scheme> <token>:<preimage hex
/// lowercase>`, in the scheme of the challenge that was paid (LSAT-only servers refuse an
/// `L402` answer). Only a verified preimage can be passed. The token is sent as received,
/// except that URL-safe or unpadded base64 is re-encoded to padded standard base64.
///
/// Re-encoding exists because Aperture decodes with strict `StdEncoding`; anything it
/// would already accept is left byte-for-byte alone so token-agnostic servers see
/// exactly what they issued.
pub fn authorization_value(scheme: Scheme, token: &str, preimage: &Preimage) -> String {
    format!(
        "{} {}:{}",
        scheme.as_str(),
        canonical_token(token),
        preimage.to_hex()
    )
}

/// The token in the form to put in `Authorization`: unchanged unless it is URL-safe or
/// lacks padding and actually decodes as base64.
fn canonical_token(token: &str) -> Cow<'_, str> {
    let url_safe = token.contains(['-', '_']);
    let unpadded = !token.ends_with('=') && !token.len().is_multiple_of(4);
    if url_safe || unpadded {
        if let Some(bytes) = decode_base64_any(token) {
            return Cow::Owned(STANDARD.encode(bytes));
        }
    }
    Cow::Borrowed(token)
}

/// Parses one header value (possibly a folded list of challenges) into `out`.
fn parse_header_value(value: &str, out: &mut Vec<Challenge>) {
    let mut cursor = Cursor::new(value);
    let mut current: Option<Pending> = None;
    while let Some(item) = cursor.next_item() {
        match item {
            Item::Scheme(name) => {
                out.extend(current.take().and_then(Pending::finish));
                current = Some(Pending::new(scheme_from_name(name)));
            }
            // Params before any scheme: the lsat-js "params only" form, read as L402.
            Item::Param(key, value) => current
                .get_or_insert_with(|| Pending::new(Some(Scheme::L402)))
                .set(key, value),
        }
    }
    out.extend(current.and_then(Pending::finish));
}

/// Maps a scheme name to ours; `None` means a scheme we skip (Basic, Payment, ...).
fn scheme_from_name(name: &str) -> Option<Scheme> {
    if name.eq_ignore_ascii_case("L402") {
        Some(Scheme::L402)
    } else if name.eq_ignore_ascii_case("LSAT") {
        Some(Scheme::Lsat)
    } else {
        None
    }
}

/// A challenge whose params are still being collected.
struct Pending {
    /// `None` for a foreign scheme: its params are consumed but ignored.
    scheme: Option<Scheme>,
    token: Option<String>,
    macaroon: Option<String>,
    invoice: Option<String>,
    version: Option<String>,
}

impl Pending {
    fn new(scheme: Option<Scheme>) -> Self {
        Pending {
            scheme,
            token: None,
            macaroon: None,
            invoice: None,
            version: None,
        }
    }

    /// Records a param. The first non-empty occurrence of a name wins, like the
    /// regex-based reference clients.
    fn set(&mut self, key: &str, value: Value<'_>) {
        if self.scheme.is_none() {
            return;
        }
        let slot = if key.eq_ignore_ascii_case("token") {
            &mut self.token
        } else if key.eq_ignore_ascii_case("macaroon") {
            &mut self.macaroon
        } else if key.eq_ignore_ascii_case("invoice") {
            &mut self.invoice
        } else if key.eq_ignore_ascii_case("version") {
            &mut self.version
        } else {
            return;
        };
        if slot.is_none() {
            *slot = value.into_string().filter(|s| !s.is_empty());
        }
    }

    /// Turns the collected params into a payable challenge, or `None` if it is not one.
    fn finish(self) -> Option<Challenge> {
        let scheme = self.scheme?;
        let token = self.token.or(self.macaroon)?;
        let invoice = self.invoice?;
        if self.version.as_deref().is_some_and(|v| v != "0") {
            return None;
        }
        if !is_visible_ascii(&token) || !is_visible_ascii(&invoice) {
            return None;
        }
        Some(Challenge {
            scheme,
            token,
            invoice,
            version: self.version,
        })
    }
}

/// True if every byte is a visible ASCII character (no space, no control, no UTF-8).
fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PaymentHash;
    use sha2::{Digest, Sha256};

    /// A verified preimage for these raw bytes.
    fn proof(raw: [u8; 32]) -> Preimage {
        Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap()
    }

    fn l402(token: &str, raw: [u8; 32]) -> String {
        authorization_value(Scheme::L402, token, &proof(raw))
    }

    fn vectors() -> serde_json::Value {
        crate::test_vectors::l402()
    }

    fn parse_one(value: &str) -> Vec<Challenge> {
        parse_challenges([value.as_bytes()])
    }

    /// Naive `name="..."` extraction, independent of the parser under test.
    fn quoted_param<'a>(header: &'a str, name: &str) -> &'a str {
        let open = format!("{name}=\"");
        let start = header.find(&open).expect("param present") + open.len();
        let len = header[start..].find('"').expect("closing quote");
        &header[start..start + len]
    }

    const MAC: &str = "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0+tVY+tKPYAJ/zSfmEGlIpNm3VzxuzCqLhEp5KGiyPLUM9L+kcB7uzS+AAIPc2VydmljZXM9bWVtZTowAAISbWVtZV9jYXBhYmlsaXRpZXM9AAAGILA1VCEIExukt4nG+XR9tX8WJ2BVMiHG3UNt1uYJ+NRD";
    const INV: &str = "lnbcrt100n1p3qqkygpp5xzj85m5mpvatnapgpuyfxtxhypa5gr6sskqd8664v04550vqp8ls";
    const PADDED: &str = "AgEEbHNhdAJCAAAwpHpu==";

    fn challenge(scheme: Scheme, token: &str, invoice: &str) -> Challenge {
        Challenge {
            scheme,
            token: token.to_owned(),
            invoice: invoice.to_owned(),
            version: None,
        }
    }

    #[test]
    fn vector_challenges() {
        let v = vectors();
        let list = v["challenges"].as_array().expect("challenges array");
        assert!(!list.is_empty());
        for entry in list {
            let name = entry["name"].as_str().unwrap_or("?");
            let header = entry["header_value"].as_str().expect("header_value");
            let got = parse_one(header);
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            let c = &got[0];
            let expect = &entry["expect"];
            let scheme = match expect["scheme"].as_str() {
                Some("LSAT") => Scheme::Lsat,
                Some("L402") | None => Scheme::L402, // params-only counts as L402
                Some(other) => panic!("{name}: unknown scheme {other}"),
            };
            assert_eq!(c.scheme, scheme, "{name}");
            let token = match expect["token"].as_str() {
                Some(t) => t,
                None => quoted_param(header, "macaroon"),
            };
            assert_eq!(c.token, token, "{name}");
            assert_eq!(c.invoice, quoted_param(header, "invoice"), "{name}");
            assert_eq!(c.version.as_deref(), expect["version"].as_str(), "{name}");
        }
    }

    #[test]
    fn spec_token_is_over_padded_but_kept_as_received() {
        let v = vectors();
        let token = v["challenges"][0]["expect"]["token"]
            .as_str()
            .expect("token");
        assert_eq!(token.len() % 4, 2, "30 chars ending in '=='");
        assert_eq!(decode_base64_any(token).map(|b| b.len()), Some(21));
        let auth = l402(token, [0; 32]);
        assert!(auth.starts_with(&format!("L402 {token}:")), "{auth}");
    }

    #[test]
    fn aperture_two_lines_select_l402() {
        let lsat = format!("LSAT macaroon=\"{MAC}\", invoice=\"{INV}\"");
        let l402 = format!("L402 macaroon=\"{MAC}\", invoice=\"{INV}\"");
        let got = parse_challenges([lsat.as_bytes(), l402.as_bytes()]);
        assert_eq!(
            got,
            vec![
                challenge(Scheme::Lsat, MAC, INV),
                challenge(Scheme::L402, MAC, INV)
            ]
        );
        assert_eq!(select(&got).map(|c| c.scheme), Some(Scheme::L402));
    }

    #[test]
    fn folded_two_challenges() {
        let folded =
            format!("LSAT macaroon=\"{MAC}\", invoice=\"{INV}\", L402 macaroon=\"{MAC}\", invoice=\"{INV}\"");
        let got = parse_one(&folded);
        assert_eq!(
            got,
            vec![
                challenge(Scheme::Lsat, MAC, INV),
                challenge(Scheme::L402, MAC, INV)
            ]
        );
        assert_eq!(select(&got), Some(&got[1]));
    }

    #[test]
    fn select_falls_back_to_lsat_and_none() {
        let got = parse_one(&format!("LSAT macaroon={MAC}, invoice={INV}"));
        assert_eq!(select(&got).map(|c| c.scheme), Some(Scheme::Lsat));
        assert_eq!(select(&[]), None);
    }

    #[test]
    fn unquoted_values_with_padding() {
        let got = parse_one(&format!("L402 macaroon={PADDED}, invoice={INV}"));
        assert_eq!(got, vec![challenge(Scheme::L402, PADDED, INV)]);
        let folded =
            format!("L402 macaroon={PADDED}, invoice={INV}, LSAT macaroon={PADDED}, invoice={INV}");
        let got = parse_one(&folded);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|c| c.token == PADDED && c.invoice == INV));
    }

    #[test]
    fn token_wins_over_macaroon_in_any_order() {
        let a = parse_one(&format!(
            "L402 macaroon=\"old\", token=\"{MAC}\", invoice=\"{INV}\""
        ));
        let b = parse_one(&format!(
            "L402 token=\"{MAC}\", macaroon=\"old\", invoice=\"{INV}\""
        ));
        assert_eq!(a, vec![challenge(Scheme::L402, MAC, INV)]);
        assert_eq!(a, b);
    }

    #[test]
    fn version_other_than_zero_dropped() {
        assert!(parse_one(&format!(
            "L402 version=\"1\", token=\"{MAC}\", invoice=\"{INV}\""
        ))
        .is_empty());
        let ok = parse_one(&format!("L402 version=0, token={MAC}, invoice={INV}"));
        assert_eq!(ok[0].version.as_deref(), Some("0"));
    }

    #[test]
    fn missing_token_or_invoice_dropped() {
        assert!(parse_one(&format!("L402 macaroon=\"{MAC}\"")).is_empty());
        assert!(parse_one(&format!("L402 invoice=\"{INV}\"")).is_empty());
        assert!(parse_one(&format!("L402 token=\"\", invoice=\"{INV}\"")).is_empty());
        assert!(parse_one("L402").is_empty());
    }

    #[test]
    fn mpp_payment_skipped_then_l402_found() {
        let v = vectors();
        let mpp = v["mpp"][0]["header_value"].as_str().expect("mpp header");
        assert!(parse_one(mpp).is_empty());
        let folded = format!("{mpp}, L402 version=\"0\", token=\"{MAC}\", invoice=\"{INV}\"");
        let got = parse_one(&folded);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].token.as_str(), got[0].invoice.as_str()), (MAC, INV));
    }

    #[test]
    fn lowercase_schemes_and_param_names() {
        let got = parse_one(&format!(
            "l402 TOKEN=\"{MAC}\", Invoice=\"{INV}\", lsat MACAROON={MAC}, INVOICE={INV}"
        ));
        assert_eq!(
            got,
            vec![
                challenge(Scheme::L402, MAC, INV),
                challenge(Scheme::Lsat, MAC, INV)
            ]
        );
    }

    #[test]
    fn whitespace_around_equals_and_separators() {
        let want = vec![challenge(Scheme::L402, PADDED, INV)];
        assert_eq!(
            parse_one(&format!("L402 macaroon = \"{PADDED}\" , invoice =\t{INV}")),
            want
        );
        assert_eq!(
            parse_one(&format!("L402 macaroon={PADDED},invoice={INV}")),
            want
        );
        assert_eq!(
            parse_one(&format!("L402 macaroon=\"{PADDED}\",invoice=\"{INV}\"")),
            want
        );
        assert_eq!(
            parse_one(&format!("L402 macaroon={PADDED} invoice={INV}")),
            want
        );
        assert_eq!(
            parse_one(&format!("  L402   macaroon={PADDED}  ,  invoice={INV}  ")),
            want
        );
    }

    #[test]
    fn url_safe_unpadded_token_kept_as_received() {
        let token = "AgEIbG9jYXRpb24ChAEw_1CMq8TuMXv-ERHDWQ";
        let got = parse_one(&format!("L402 macaroon={token} invoice={INV}"));
        assert_eq!(got, vec![challenge(Scheme::L402, token, INV)]);
    }

    #[test]
    fn basic_line_alongside_and_address_ignored() {
        let lines = [
            "Basic realm=\"x\"".to_owned(),
            format!("L402 macaroon=\"{MAC}\", address=\"bc1qxyz\", invoice=\"{INV}\""),
        ];
        let got = parse_challenges(lines.iter().map(|s| s.as_bytes()));
        assert_eq!(got, vec![challenge(Scheme::L402, MAC, INV)]);
        let folded = format!("Basic realm=\"a, b\", Bearer, L402 macaroon={MAC}, invoice={INV}");
        assert_eq!(parse_one(&folded), vec![challenge(Scheme::L402, MAC, INV)]);
    }

    #[test]
    fn quoted_string_with_commas_spaces_and_escapes() {
        let header = format!(
            r#"Basic realm="a, L402 token=\"x\", b", L402 token="t\"k\\n", invoice="{INV}""#
        );
        let got = parse_one(&header);
        assert_eq!(got, vec![challenge(Scheme::L402, "t\"k\\n", INV)]);
    }

    #[test]
    fn unterminated_or_non_ascii_values_dropped() {
        assert!(parse_one(&format!("L402 token=\"{MAC}\", invoice=\"{INV}")).is_empty());
        assert!(parse_one(&format!("L402 token=\"a b\", invoice=\"{INV}\"")).is_empty());
        assert!(parse_one(&format!("L402 token=\"é\", invoice=\"{INV}\"")).is_empty());
    }

    #[test]
    fn non_utf8_value_skipped_others_kept() {
        let good = format!("L402 token={MAC}, invoice={INV}");
        let bad: &[u8] = b"L402 token=\xff\xfe, invoice=lnbc";
        let got = parse_challenges([bad, good.as_bytes()]);
        assert_eq!(got, vec![challenge(Scheme::L402, MAC, INV)]);
    }

    #[test]
    fn authorization_std_padded_unchanged() {
        let preimage = [0xABu8; 32];
        let auth = l402(MAC, preimage);
        let (head, hex_part) = auth.rsplit_once(':').expect("colon");
        assert_eq!(head, format!("L402 {MAC}"));
        assert_eq!(hex_part.len(), 64);
        assert_eq!(hex_part, "ab".repeat(32));
        let padded = l402(PADDED, preimage);
        assert!(padded.starts_with(&format!("L402 {PADDED}:")));
    }

    #[test]
    fn authorization_url_safe_unpadded_reencoded() {
        let v = vectors();
        let url = v["macaroons"][2]["base64"]
            .as_str()
            .expect("lsat-js macaroon");
        assert!(url.contains(['-', '_']) && !url.ends_with('='));
        let bytes = decode_base64_any(url).expect("decodes");
        let auth = l402(url, [0; 32]);
        let expected = format!("L402 {}:{}", STANDARD.encode(&bytes), "0".repeat(64));
        assert_eq!(auth, expected);
        // Unpadded but standard alphabet: padding added.
        let auth = l402("AgEE+/8", [1; 32]);
        assert_eq!(auth, format!("L402 AgEE+/8=:{}", "01".repeat(32)));
        // URL-safe but padded: alphabet converted, padding kept.
        assert!(l402("AgEE-_8=", [1; 32]).starts_with("L402 AgEE+/8=:"));
        // Not base64 at all: sent as received.
        assert!(l402("not*b64", [0; 32]).starts_with("L402 not*b64:"));
    }

    #[test]
    fn decode_base64_any_alphabets_and_padding() {
        let bytes = [0xfbu8, 0xff, 0xbf, 0x01];
        let std = STANDARD.encode(bytes);
        assert_eq!(std, "+/+/AQ==");
        for s in ["+/+/AQ==", "+/+/AQ", "-_-_AQ==", "-_-_AQ", "+/+/AQ==="] {
            assert_eq!(decode_base64_any(s).as_deref(), Some(&bytes[..]), "{s}");
        }
        assert_eq!(decode_base64_any("+_AQ"), None);
        assert_eq!(decode_base64_any("A"), None);
        assert_eq!(decode_base64_any("a b"), None);
        assert_eq!(decode_base64_any(""), Some(vec![]));
    }

    /// Deterministic xorshift64 so the fuzz loop needs no extra crate.
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

    /// Pieces that steer random inputs toward the grammar's corners.
    const PIECES: &[&[u8]] = &[
        b"L402",
        b"lsat",
        b"LSAT ",
        b"Payment ",
        b"token",
        b"macaroon",
        b"invoice",
        b"version",
        b"=",
        b"==",
        b"\"",
        b"\\",
        b",",
        b" ",
        b"\t",
        b", ",
        b"0",
        b"1",
        b"AgEE",
        b"lnbc1",
        b"-_",
        b"+/",
        b"\xff",
        b"\xc3\xa9",
        b"\xe2\x82",
        b"\x00",
    ];

    fn random_value(rng: &mut XorShift) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.below(24) {
            if rng.below(4) == 0 {
                out.push(rng.next() as u8);
            } else {
                out.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        out
    }

    fn check_invariants(values: &[&[u8]]) {
        for c in parse_challenges(values.iter().copied()) {
            assert!(!c.token.is_empty() && !c.invoice.is_empty());
            assert!(c.version.as_deref().is_none_or(|v| v == "0"));
            let auth = l402(&c.token, [7; 32]);
            assert!(auth.starts_with("L402 ") && auth.len() > 70);
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let a = random_value(&mut rng);
            let b = random_value(&mut rng);
            check_invariants(&[&a, &b]);
            if let Ok(s) = std::str::from_utf8(&a) {
                let _ = decode_base64_any(s);
            }
        }
        let v = vectors();
        let headers = v["challenges"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(v["mpp"].as_array().into_iter().flatten())
            .filter_map(|e| e["header_value"].as_str());
        for header in headers {
            let bytes = header.as_bytes();
            for end in 0..=bytes.len() {
                check_invariants(&[&bytes[..end]]);
                check_invariants(&[&bytes[end..]]);
            }
        }
    }
}
