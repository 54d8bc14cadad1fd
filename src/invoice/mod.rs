//! BOLT 11 invoices: decoding and validating the ones servers hand us. Hostile input: nothing
//! here panics or trusts a field it has not checked. (Minting, for the demo seller and the dev
//! network, lives in `demo::mint`.)
//!
//! Parsing is delegated to `lightning-invoice`, but the acceptance decision is ours, because its
//! strict `Bolt11Invoice::from_str` refuses real-world invoices we must pay: LNbits (FakeWallet)
//! invoices carry no feature-bits (`9`) field at all. Every other BOLT 11 reader rule that
//! `lightning-invoice` enforces is enforced here too (see [`decode`]).

use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1};
use lightning_invoice::{Bolt11ParseError, Currency, SignedRawBolt11Invoice, TaggedField};
use sha2::{Digest, Sha256};

use crate::core::{Msat, PaymentHash};

/// BOLT 11: "default is 3600 (1 hour) if not specified" for the `x` field.
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;

/// Longest string we even try to parse. Same cap as `lightning-invoice` (and LND), checked up
/// front so hostile megabyte "invoices" are refused before any work is done on them.
const MAX_INVOICE_LEN: usize = lightning_invoice::MAX_LENGTH;

/// 21 million BTC in millisatoshis; anything above cannot be a real amount.
pub(crate) const MAX_AMOUNT_MSAT: u64 = 21_000_000 * 100_000_000 * 1_000;

/// A signature is 65 bytes = 104 five-bit groups; the bech32 checksum is 6 groups.
const SIGNATURE_LEN_5: usize = 104;
const CHECKSUM_LEN_5: usize = 6;

/// The Bitcoin network an invoice is for (from its human-readable prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// `lnbc`
    Bitcoin,
    /// `lntb`
    Testnet,
    /// `lntbs`
    Signet,
    /// `lnbcrt`
    Regtest,
}

impl Network {
    fn as_str(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned by `Network::from_str` for names it does not know.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown network {0:?}: expected one of bitcoin (or mainnet), testnet, signet, regtest")]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;

    /// Case-insensitive and whitespace-tolerant, because the value usually comes from a config
    /// file or a command line typed by a person.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
            "testnet" => Ok(Network::Testnet),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            _ => Err(UnknownNetwork(s.to_owned())),
        }
    }
}

impl From<Network> for Currency {
    fn from(n: Network) -> Self {
        match n {
            Network::Bitcoin => Currency::Bitcoin,
            Network::Testnet => Currency::BitcoinTestnet,
            Network::Signet => Currency::Signet,
            Network::Regtest => Currency::Regtest,
        }
    }
}

/// The fields of a validated BOLT 11 invoice that the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The network its prefix names (`lnbc` bitcoin, `lntb` testnet, `lntbs` signet, `lnbcrt`
    /// regtest); one for another network than the wallet's is never paid.
    pub network: Network,
    /// None for amountless invoices.
    pub amount: Option<Msat>,
    /// The `p` field: what the preimage must hash to.
    pub payment_hash: PaymentHash,
    /// None only for legacy invoices that have neither a payment secret nor a features field
    /// (pre-2020 writers, e.g. the L402 specification's own example); see [`decode`].
    pub payment_secret: Option<[u8; 32]>,
    /// Unix seconds.
    pub timestamp: u64,
    /// Seconds; BOLT 11 default 3600 when the `x` field is absent.
    pub expiry_secs: u64,
    /// Compressed payee public key (from `n` or recovered from the signature).
    pub payee: [u8; 33],
    /// The `d` field with control/format characters replaced by U+FFFD, because it is chosen by
    /// a possibly hostile server and typically ends up in logs. None when the invoice commits to
    /// a description hash (`h`) instead.
    pub description: Option<String>,
    /// The `h` field: SHA-256 of a description kept elsewhere. x402 `lnbtc` puts the digest of
    /// the request the invoice pays for here. None when the invoice carries `d` instead.
    pub description_hash: Option<[u8; 32]>,
}

impl Invoice {
    /// Unix second at which the invoice expires (`timestamp + expiry_secs`, saturating so a
    /// hostile huge `x` cannot wrap around into the past).
    pub fn expires_at(&self) -> u64 {
        self.timestamp.saturating_add(self.expiry_secs)
    }

    /// True from the expiry second on. Backends such as LNbits happily "pay" expired internal
    /// invoices, so the proxy has to check this itself.
    pub fn is_expired_at(&self, now_unix: u64) -> bool {
        now_unix >= self.expires_at()
    }

    /// Amount rounded UP to whole sats (for comparing with sat limits); None if amountless.
    /// Rounding up means a 1001 msat invoice can never sneak under a 1 sat limit.
    pub fn amount_sats_ceil(&self) -> Option<u64> {
        self.amount.map(Msat::sats_ceil)
    }
}

/// Why an invoice was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvoiceError {
    /// Not decodable as BOLT 11 at all: bad bech32/checksum, mixed case, unknown prefix or
    /// multiplier, truncated fields, ...
    #[error("not a valid BOLT 11 invoice: {0}")]
    Malformed(String),
    /// The signature does not verify against the invoice (or cannot recover a key): it was
    /// tampered with or not signed by its payee.
    #[error("invoice signature is invalid: the invoice was altered or not signed by its payee")]
    BadSignature,
    /// The features field sets an even (required) bit we do not know; BOLT 11 says the payer
    /// MUST NOT pay such an invoice.
    #[error("invoice requires a Lightning feature this client does not understand (unknown even feature bit); refusing to pay it")]
    UnknownRequiredFeature,
    /// A field BOLT 11 makes mandatory is absent (or present only with an invalid length, in
    /// which case readers must skip it).
    #[error("invoice is missing its {0}")]
    MissingField(&'static str),
    /// Decodes and is signed, but breaks a BOLT 11 rule (duplicate fields, sub-millisatoshi
    /// amount, features inconsistent with the payment secret, unsupported network, ...).
    #[error("invoice violates BOLT 11: {0}")]
    Semantic(String),
}

/// Decodes and fully validates a BOLT11 string: bech32/checksum, signature (must verify; high-S
/// with `n` must fail), all of lightning-invoice's semantic checks — EXCEPT that an invoice with
/// no features field at all is accepted (LNbits), provided everything else holds (signature
/// verified, exactly one payment hash, exactly one description, whole-msat amount, ...).
/// Unknown *required* feature bits are refused. Never panics on any input string (hostile
/// servers send these); trims surrounding whitespace; accepts all-uppercase; rejects mixed case.
///
/// Payment secret: mandatory (`MissingField`) whenever a features field is present. An invoice
/// with neither features nor payment secret is a legacy (pre-2020) invoice; it is accepted with
/// `payment_secret: None`, because the L402 specification's own example challenge is one and
/// the secret only protects the payee (the payer's backend decides whether it can still pay).
///
/// The signature is checked against the SHA-256 of the invoice exactly as received (lowercased
/// HRP + data part), not against a re-serialisation of the parsed fields as `lightning-invoice`
/// does, so a writer's non-minimal encodings (leading zeros) cannot yield a bogus payee key.
pub fn decode(s: &str) -> Result<Invoice, InvoiceError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(InvoiceError::Malformed("empty string".into()));
    }
    if s.len() > MAX_INVOICE_LEN {
        return Err(InvoiceError::Malformed(format!(
            "{} characters, more than the {MAX_INVOICE_LEN} allowed",
            s.len()
        )));
    }

    // Checks bech32 charset, single case, checksum, HRP and every field's syntax.
    let signed = SignedRawBolt11Invoice::from_str(s).map_err(parse_error)?;

    // From here on `s` is known to be valid single-case ASCII bech32.
    let digest = signable_digest(&s.to_ascii_lowercase())
        .ok_or_else(|| InvoiceError::Malformed("data part too short to hold a signature".into()))?;
    let payee = verify_signature(&signed, digest)?;
    let fields = check_fields(&signed)?;

    let raw = signed.raw_invoice();
    let network = match raw.currency() {
        Currency::Bitcoin => Network::Bitcoin,
        Currency::BitcoinTestnet => Network::Testnet,
        Currency::Signet => Network::Signet,
        Currency::Regtest => Network::Regtest,
        Currency::Simnet => {
            return Err(InvoiceError::Semantic(
                "simnet (lnsb) invoices are not supported".into(),
            ))
        }
    };

    Ok(Invoice {
        network,
        amount: amount_msat(
            raw.hrp.raw_amount,
            raw.hrp.si_prefix.map(|p| p.multiplier()),
        )?
        .map(Msat::new),
        payment_hash: PaymentHash(fields.payment_hash),
        payment_secret: fields.payment_secret,
        timestamp: raw.data.timestamp.as_unix_timestamp(),
        expiry_secs: raw
            .expiry_time()
            .map_or(DEFAULT_EXPIRY_SECS, |x| x.as_seconds()),
        payee: payee.serialize(),
        description: raw.description().map(|d| d.to_string()),
        description_hash: raw.description_hash().map(|h| h.0.to_byte_array()),
    })
}

/// Maps the parser's errors onto ours; everything is "malformed" except a signature that
/// cannot even be parsed (e.g. recovery id > 3), which is a signature problem.
fn parse_error(e: Bolt11ParseError) -> InvoiceError {
    match e {
        Bolt11ParseError::MalformedSignature(_) => InvoiceError::BadSignature,
        // bech32's top-level message is just "parse failed"; the cause (mixed case, missing
        // separator, bad character, ...) is in its source chain.
        Bolt11ParseError::Bech32Error(ref inner) => {
            let mut msg = format!("invalid bech32: {inner}");
            let mut source = std::error::Error::source(inner);
            while let Some(cause) = source {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
                source = cause.source();
            }
            InvoiceError::Malformed(msg)
        }
        other => InvoiceError::Malformed(other.to_string()),
    }
}

/// The message BOLT 11 signs: SHA-256 of the HRP's UTF-8 bytes followed by the data part
/// (without signature and checksum) packed into bytes and zero-padded to a byte boundary.
/// `lower` must be a lowercase string that already passed bech32 validation; returns None only
/// if it is not (so callers never index out of bounds).
fn signable_digest(lower: &str) -> Option<[u8; 32]> {
    let sep = lower.rfind('1')?;
    let hrp = lower.get(..sep)?;
    let data = lower.get(sep + 1..)?;
    let unsigned_len = data.len().checked_sub(SIGNATURE_LEN_5 + CHECKSUM_LEN_5)?;

    let mut packed = Vec::with_capacity(unsigned_len * 5 / 8 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.bytes().take(unsigned_len) {
        acc = (acc << 5) | u32::from(bech32_value(c)?);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            packed.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits > 0 {
        packed.push((acc << (8 - bits)) as u8);
    }

    let mut h = Sha256::new();
    h.update(hrp.as_bytes());
    h.update(&packed);
    Some(h.finalize().into())
}

/// Value of a lowercase bech32 character.
fn bech32_value(c: u8) -> Option<u8> {
    const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    CHARSET.iter().position(|&x| x == c).map(|i| i as u8)
}

/// BOLT 11: with `n`, the signature must verify against it (libsecp256k1 rejects high-S, as
/// BOLT 11 requires here); without `n`, the payee is whatever key the signature recovers to.
fn verify_signature(
    signed: &SignedRawBolt11Invoice,
    digest: [u8; 32],
) -> Result<PublicKey, InvoiceError> {
    // One context for the process: building one per decode costs more than the check itself.
    static SECP: std::sync::LazyLock<Secp256k1<bitcoin::secp256k1::VerifyOnly>> =
        std::sync::LazyLock::new(Secp256k1::verification_only);
    let secp = &*SECP;
    let msg = Message::from_digest(digest);
    let sig = &signed.signature().0;
    match signed.raw_invoice().payee_pub_key() {
        Some(n) => secp
            .verify_ecdsa(&msg, &sig.to_standard(), &n.0)
            .map(|()| n.0)
            .map_err(|_| InvoiceError::BadSignature),
        None => secp
            .recover_ecdsa(&msg, sig)
            .map_err(|_| InvoiceError::BadSignature),
    }
}

struct CheckedFields {
    payment_hash: [u8; 32],
    payment_secret: Option<[u8; 32]>,
}

/// The field rules of `Bolt11Invoice::from_signed` (field counts, payment secret, features),
/// minus its insistence on a features field being present.
fn check_fields(signed: &SignedRawBolt11Invoice) -> Result<CheckedFields, InvoiceError> {
    let mut hashes = Vec::new();
    let mut secrets = Vec::new();
    let mut descriptions = 0usize;
    let mut features = Vec::new();
    for field in signed.raw_invoice().known_tagged_fields() {
        match field {
            TaggedField::PaymentHash(h) => hashes.push(h.0.to_byte_array()),
            TaggedField::PaymentSecret(s) => secrets.push(s.0),
            TaggedField::Description(_) | TaggedField::DescriptionHash(_) => descriptions += 1,
            TaggedField::Features(f) => features.push(f),
            _ => {}
        }
    }

    let payment_hash = match hashes.as_slice() {
        [] => return Err(InvoiceError::MissingField("payment hash (p field)")),
        [h] => *h,
        _ => return Err(InvoiceError::Semantic("more than one payment hash".into())),
    };
    match descriptions {
        0 => return Err(InvoiceError::MissingField("description (d or h field)")),
        1 => {}
        _ => {
            return Err(InvoiceError::Semantic(
                "more than one description / description hash".into(),
            ))
        }
    }
    let payment_secret = match secrets.as_slice() {
        [] => None,
        [s] => Some(*s),
        _ => {
            return Err(InvoiceError::Semantic(
                "more than one payment secret".into(),
            ))
        }
    };
    // Every features field is checked, not just the first, so a required bit cannot hide in
    // a second one.
    if features.iter().any(|f| f.requires_unknown_bits()) {
        return Err(InvoiceError::UnknownRequiredFeature);
    }
    if let Some(first) = features.first() {
        if payment_secret.is_none() {
            return Err(InvoiceError::MissingField("payment secret (s field)"));
        }
        if !first.supports_payment_secret() {
            return Err(InvoiceError::Semantic(
                "features field does not signal payment_secret although the invoice has one".into(),
            ));
        }
    }
    Ok(CheckedFields {
        payment_hash,
        payment_secret,
    })
}

/// Amount in msat from the HRP's number and its multiplier in pico-BTC (None = whole BTC).
/// Computed in u128 because e.g. `lnbc20000000` (20M BTC) is 2e19 pico-BTC, past u64, which
/// `lightning-invoice` silently reports as "no amount". Refuses sub-msat precision and anything
/// above the 21M BTC supply.
fn amount_msat(
    raw_amount: Option<u64>,
    multiplier: Option<u64>,
) -> Result<Option<u64>, InvoiceError> {
    let Some(raw) = raw_amount else {
        return Ok(None);
    };
    let pico = u128::from(raw) * u128::from(multiplier.unwrap_or(1_000_000_000_000));
    if pico % 10 != 0 {
        return Err(InvoiceError::Semantic(
            "amount has sub-millisatoshi precision".into(),
        ));
    }
    u64::try_from(pico / 10)
        .ok()
        .filter(|&msat| msat <= MAX_AMOUNT_MSAT)
        .map(Some)
        .ok_or_else(|| InvoiceError::Semantic("amount exceeds the 21 million BTC supply".into()))
}

#[cfg(test)]
mod tests;
