//! Money types: amounts in millisatoshis, payment hashes, and preimages that can only exist once
//! checked against their hash — so no code path can store or send an unverified preimage.

use sha2::{Digest, Sha256};
use std::fmt;

/// An amount in millisatoshis, the unit every limit and ledger entry is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Msat(pub u64);

impl Msat {
    pub const ZERO: Msat = Msat(0);

    pub fn from_sats(sats: u64) -> Msat {
        Msat(sats.saturating_mul(1000))
    }

    /// Whole sats, rounded up: an invoice for 1001 msat costs 2 sats against a sat limit.
    pub fn sats_ceil(self) -> u64 {
        self.0.div_ceil(1000)
    }

    pub fn saturating_add(self, other: Msat) -> Msat {
        Msat(self.0.saturating_add(other.0))
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

/// The sha256 that identifies a Lightning payment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentHash(pub [u8; 32]);

impl PaymentHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

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

/// A preimage proven to hash to a payment hash. The only constructor checks
/// `sha256(preimage) == payment_hash`, so holding one is proof of payment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Preimage([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("preimage does not hash to the payment hash {expected}")]
pub struct PreimageMismatch {
    pub expected: PaymentHash,
}

impl Preimage {
    pub fn verify(raw: [u8; 32], hash: &PaymentHash) -> Result<Preimage, PreimageMismatch> {
        let digest: [u8; 32] = Sha256::digest(raw).into();
        if digest == hash.0 {
            Ok(Preimage(raw))
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

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Preimage {
    /// Never print a preimage in full: it is a bearer credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Preimage({}…)", hex::encode(&self.0[..3]))
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
    }

    #[test]
    fn preimage_must_match_hash() {
        let raw = [7u8; 32];
        let hash = PaymentHash(Sha256::digest(raw).into());
        assert!(Preimage::verify(raw, &hash).is_ok());
        assert!(Preimage::verify([8u8; 32], &hash).is_err());
        assert!(Preimage::verify_hex(&hex::encode(raw).to_uppercase(), &hash).is_ok());
        assert!(Preimage::verify_hex("zz", &hash).is_err());
        let p = Preimage::verify(raw, &hash).unwrap();
        assert!(!format!("{p:?}").contains(&hex::encode(raw)));
    }
}
