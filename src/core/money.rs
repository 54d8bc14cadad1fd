//! Money types: amounts in millisatoshis, payment hashes, and preimages that can only exist once
//! checked against their hash — so no code path can store or send an unverified preimage.

use sha2::{Digest, Sha256};
use std::fmt;

/// An amount in millisatoshis, the unit every limit and ledger entry is kept in.
///
/// The raw number is private: amounts are made with [`Msat::new`] or [`Msat::from_sats`] and
/// combined only by arithmetic that cannot wrap — checked (`None` on overflow) where an overflow
/// means a refused payment, saturating where it means "no practical limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Msat(u64);

impl Msat {
    /// Nothing.
    pub const ZERO: Msat = Msat(0);

    /// `msat` millisatoshis.
    pub const fn new(msat: u64) -> Msat {
        Msat(msat)
    }

    /// The amount in millisatoshis.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The amount as a store's signed 64-bit integer, saturating at `i64::MAX` (no stored
    /// amount ever reads back negative; an invoice cannot come near that value anyway).
    pub fn stored(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Sum, or `None` if it would exceed `u64::MAX` msat.
    pub fn checked_add(self, other: Msat) -> Option<Msat> {
        self.0.checked_add(other.0).map(Msat)
    }

    /// Difference, or `None` if `other` is larger.
    pub fn checked_sub(self, other: Msat) -> Option<Msat> {
        self.0.checked_sub(other.0).map(Msat)
    }

    /// `self × factor`, or `None` on overflow.
    pub fn checked_mul(self, factor: u64) -> Option<Msat> {
        self.0.checked_mul(factor).map(Msat)
    }

    /// Whole sats in msat, saturating (a limit of `u64::MAX` sats means "no practical limit").
    pub fn from_sats(sats: u64) -> Msat {
        Msat(sats.saturating_mul(1000))
    }

    /// Whole sats, rounded up: an invoice for 1001 msat costs 2 sats against a sat limit.
    pub fn sats_ceil(self) -> u64 {
        self.0.div_ceil(1000)
    }

    /// Sum, saturating at `u64::MAX` msat (never wraps into a small amount).
    pub fn saturating_add(self, other: Msat) -> Msat {
        Msat(self.0.saturating_add(other.0))
    }

    /// Difference, saturating at zero.
    pub fn saturating_sub(self, other: Msat) -> Msat {
        Msat(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{} sat", self.0 / 1000)
        } else {
            write!(f, "{} msat", self.0)
        }
    }
}

/// A whole-sat amount as an operator configures it (limits, fee caps, the dev wallet's balance):
/// written and read as a bare number, turned into [`Msat`] only through [`Sats::msat`], which
/// saturates, so no configured amount can wrap into a small one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Sats(u64);

impl Sats {
    /// `sats` whole sats.
    pub const fn new(sats: u64) -> Sats {
        Sats(sats)
    }

    /// The number of sats.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The amount in msat, saturating at `u64::MAX` msat ("no practical limit").
    pub fn msat(self) -> Msat {
        Msat::from_sats(self.0)
    }
}

impl From<u64> for Sats {
    fn from(sats: u64) -> Sats {
        Sats(sats)
    }
}

impl fmt::Display for Sats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sat", self.0)
    }
}

/// The sha256 that identifies a Lightning payment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentHash(pub [u8; 32]);

impl PaymentHash {
    /// Lower-case hex, as ledgers and wallets spell it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (any case, surrounding whitespace allowed).
    pub fn from_hex(s: &str) -> Option<PaymentHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(PaymentHash(out))
    }

    /// A short prefix for logs and headers: enough to correlate, never a secret anyway.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentHash({})", self.to_hex())
    }
}

impl fmt::Display for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A preimage proven to hash to a payment hash, together with that hash. The only constructors
/// check `sha256(preimage) == payment_hash`, so holding one is proof of payment, and every
/// credential built from it is built from a verified pair.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Preimage {
    raw: [u8; 32],
    hash: PaymentHash,
}

/// A preimage that does not hash to the payment hash it was offered for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("preimage does not hash to the payment hash {expected}")]
pub struct PreimageMismatch {
    /// The hash the preimage was checked against.
    pub expected: PaymentHash,
}

impl Preimage {
    /// Checks `sha256(raw) == hash`.
    pub fn verify(raw: [u8; 32], hash: &PaymentHash) -> Result<Preimage, PreimageMismatch> {
        let digest: [u8; 32] = Sha256::digest(raw).into();
        if digest == hash.0 {
            Ok(Preimage { raw, hash: *hash })
        } else {
            Err(PreimageMismatch { expected: *hash })
        }
    }

    /// Parses hex (any case, surrounding whitespace allowed) and verifies it.
    pub fn verify_hex(s: &str, hash: &PaymentHash) -> Result<Preimage, PreimageMismatch> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut raw)
            .map_err(|_| PreimageMismatch { expected: *hash })?;
        Preimage::verify(raw, hash)
    }

    /// The payment hash this preimage was verified against.
    pub fn hash(&self) -> PaymentHash {
        self.hash
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Lower-case hex (what credentials carry).
    pub fn to_hex(&self) -> String {
        hex::encode(self.raw)
    }
}

impl fmt::Debug for Preimage {
    /// Never print a preimage in full: it is a bearer credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Preimage({}… for {})",
            hex::encode(&self.raw[..3]),
            self.hash.short()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sats_round_up() {
        assert_eq!(Msat(1000).sats_ceil(), 1);
        assert_eq!(Msat(1001).sats_ceil(), 2);
        assert_eq!(Msat(0).sats_ceil(), 0);
        assert_eq!(Msat::from_sats(u64::MAX), Msat(u64::MAX));
        assert_eq!(Msat(5).saturating_sub(Msat(7)), Msat::ZERO);
    }

    #[test]
    fn preimage_must_match_hash_and_remembers_it() {
        let raw = [7u8; 32];
        let hash = PaymentHash(Sha256::digest(raw).into());
        let p = Preimage::verify(raw, &hash).unwrap();
        assert_eq!(p.hash(), hash);
        assert!(Preimage::verify([8u8; 32], &hash).is_err());
        assert!(Preimage::verify_hex(&hex::encode(raw).to_uppercase(), &hash).is_ok());
        assert!(Preimage::verify_hex("zz", &hash).is_err());
        assert!(!format!("{p:?}").contains(&hex::encode(raw)));
    }
}
