//! Minting, the seller's side of the money: BOLT11 invoices signed by a node key, and the dev
//! network's minter, whose invoices the built-in `dev` wallet can pay and prove (a dev invoice's
//! preimage is HMAC-SHA256(dev secret, payment secret)). Used by the demo seller and the tests;
//! the proxy itself only ever decodes invoices (`invoice`).

use crate::core::time::{Clock, SystemClock};
use crate::core::{Msat, PaymentHash};
use crate::invoice::{Network, MAX_AMOUNT_MSAT};
use crate::wallet::dev::derive_preimage;
use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{
    Bolt11InvoiceDescription, Description, InvoiceBuilder, PaymentSecret, Sha256 as Sha256Field,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// `min_final_cltv_expiry_delta` (`c` field) written by [`mint_invoice`]. 40 is what LND writes
/// (the Aperture vector carries it too); written explicitly so no reader falls back to BOLT 11's
/// implicit 18.
pub const MINT_MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 40;

/// Parameters that cannot form a valid invoice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot mint invoice: {0}")]
pub struct MintError(pub String);

/// Mints a signed BOLT11 invoice for the built-in simulated ("dev") wallet and the demo seller.
/// Must produce an invoice that `decode` accepts and that real decoders (lightning-invoice strict
/// from_str) accept too: include payment secret and the standard features (var_onion +
/// payment_secret), min_final_cltv_expiry_delta, description.
///
/// Also writes the payee key (`n`), so the signature is bound to a stated key rather than
/// recovered, and an explicit expiry (`x`) even when it equals the default. Signing is RFC 6979
/// deterministic: equal inputs give equal strings.
#[allow(clippy::too_many_arguments)] // every field of the invoice is the caller's choice
pub fn mint_invoice(
    node_key: &SecretKey,
    network: Network,
    amount_msat: u64,
    payment_hash: [u8; 32],
    payment_secret: [u8; 32],
    description: &str,
    timestamp_unix: u64,
    expiry_secs: u64,
) -> Result<String, MintError> {
    let description = Description::new(description.to_owned())
        .map_err(|e| MintError(format!("description: {e}")))?;
    sign(
        network,
        Bolt11InvoiceDescription::Direct(description),
        node_key,
        amount_msat,
        payment_hash,
        payment_secret,
        timestamp_unix,
        expiry_secs,
    )
}

/// Like [`mint_invoice`], but the invoice commits to a description hash (`h`) instead of a
/// description: what x402 `lnbtc` sellers issue (the hash is the request binding's digest).
#[allow(clippy::too_many_arguments)] // every field of the invoice is the caller's choice
pub fn mint_invoice_hashed(
    node_key: &SecretKey,
    network: Network,
    amount_msat: u64,
    payment_hash: [u8; 32],
    payment_secret: [u8; 32],
    description_hash: [u8; 32],
    timestamp_unix: u64,
    expiry_secs: u64,
) -> Result<String, MintError> {
    sign(
        network,
        Bolt11InvoiceDescription::Hash(Sha256Field(sha256::Hash::from_byte_array(
            description_hash,
        ))),
        node_key,
        amount_msat,
        payment_hash,
        payment_secret,
        timestamp_unix,
        expiry_secs,
    )
}

/// The fields every minted invoice carries, signed by `node_key`.
#[allow(clippy::too_many_arguments)] // every field of the invoice is the caller's choice
fn sign(
    network: Network,
    description: Bolt11InvoiceDescription,
    node_key: &SecretKey,
    amount_msat: u64,
    payment_hash: [u8; 32],
    payment_secret: [u8; 32],
    timestamp_unix: u64,
    expiry_secs: u64,
) -> Result<String, MintError> {
    if amount_msat == 0 {
        return Err(MintError(
            "amount must be at least 1 msat (amountless invoices are not minted)".into(),
        ));
    }
    if amount_msat > MAX_AMOUNT_MSAT {
        return Err(MintError(format!(
            "amount {amount_msat} msat exceeds the 21 million BTC supply"
        )));
    }
    let secp = Secp256k1::signing_only();
    let payee = PublicKey::from_secret_key(&secp, node_key);
    InvoiceBuilder::new(network.into())
        .invoice_description(description)
        .payment_hash(sha256::Hash::from_byte_array(payment_hash))
        .payment_secret(PaymentSecret(payment_secret))
        .duration_since_epoch(Duration::from_secs(timestamp_unix))
        .min_final_cltv_expiry_delta(MINT_MIN_FINAL_CLTV_EXPIRY_DELTA)
        .amount_milli_satoshis(amount_msat)
        .expiry_time(Duration::from_secs(expiry_secs))
        .payee_pub_key(payee)
        .build_signed(|msg| secp.sign_ecdsa_recoverable(msg, node_key))
        .map(|inv| inv.to_string())
        .map_err(|e| MintError(e.to_string()))
}

/// Mints dev invoices (the seller's side of the simulated network).
#[derive(Clone)]
pub struct DevInvoiceMinter {
    secret: Vec<u8>,
    node_key: SecretKey,
    network: Network,
}

/// A freshly minted invoice with what the seller needs to know about it.
#[derive(Debug, Clone)]
pub struct MintedInvoice {
    /// The signed BOLT 11 invoice.
    pub bolt11: String,
    /// Its payment hash: sha256 of the preimage the dev wallet derives for it.
    pub payment_hash: PaymentHash,
}

impl DevInvoiceMinter {
    /// The minter of the dev network of `secret`, for `network`. Its node key is derived from
    /// `secret`, so every minter of one dev network signs as the same payee.
    pub fn new(secret: &str, network: Network) -> DevInvoiceMinter {
        // A stable node key per secret, so invoices from one dev network share a payee.
        let seed: [u8; 32] =
            Sha256::digest([b"l402-proxy dev node:".as_slice(), secret.as_bytes()].concat()).into();
        let node_key = SecretKey::from_slice(&seed).unwrap_or_else(|_| {
            // A sha256 output is a valid key with overwhelming probability; fall back to a fresh one.
            SecretKey::new(&mut rand::thread_rng())
        });
        DevInvoiceMinter {
            secret: secret.as_bytes().to_vec(),
            node_key,
            network,
        }
    }

    /// The network [`DevInvoiceMinter::mint`] writes into its invoices.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Mints an invoice valid from `timestamp` for `expiry_secs`.
    pub fn mint_at(
        &self,
        amount: Msat,
        memo: &str,
        timestamp: u64,
        expiry_secs: u64,
        network: Network,
    ) -> Result<MintedInvoice, MintError> {
        let payment_secret: [u8; 32] = rand::random();
        let preimage = derive_preimage(&self.secret, &payment_secret);
        let hash: [u8; 32] = Sha256::digest(preimage).into();
        let bolt11 = mint_invoice(
            &self.node_key,
            network,
            amount.get(),
            hash,
            payment_secret,
            memo,
            timestamp,
            expiry_secs,
        )?;
        Ok(MintedInvoice {
            bolt11,
            payment_hash: PaymentHash(hash),
        })
    }

    /// Mints an invoice committing to `description_hash` (x402 `lnbtc`: the request binding's
    /// digest) instead of a description, valid from `timestamp` for `expiry_secs`.
    pub fn mint_hashed_at(
        &self,
        amount: Msat,
        description_hash: [u8; 32],
        timestamp: u64,
        expiry_secs: u64,
    ) -> Result<MintedInvoice, MintError> {
        let payment_secret: [u8; 32] = rand::random();
        let preimage = derive_preimage(&self.secret, &payment_secret);
        let hash: [u8; 32] = Sha256::digest(preimage).into();
        let bolt11 = mint_invoice_hashed(
            &self.node_key,
            self.network,
            amount.get(),
            hash,
            payment_secret,
            description_hash,
            timestamp,
            expiry_secs,
        )?;
        Ok(MintedInvoice {
            bolt11,
            payment_hash: PaymentHash(hash),
        })
    }

    /// Mints an invoice on its own network, dated now (system clock), payable for
    /// `expiry_secs`.
    pub fn mint(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u64,
    ) -> Result<MintedInvoice, MintError> {
        self.mint_at(
            amount,
            memo,
            SystemClock.now_unix(),
            expiry_secs,
            self.network,
        )
    }
}
