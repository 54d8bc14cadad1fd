//! The demo seller's invoices through a real LNbits wallet (its invoice key can create invoices,
//! not pay), so tests can have a real LNbits pay them.

use super::mint::MintedInvoice;
use crate::core::{Msat, PaymentHash};
use crate::wallet::http::{secret_header, str_field, NodeClient, Trust};
use crate::wallet::lnbits::{http_error, LOOKUP_TIMEOUT};
use crate::wallet::PayError;
use http::Method;
use serde_json::{json, Value};

/// The receiving side: creates invoices on an LNbits wallet with its invoice key. Used by the
/// demo seller when it sells through LNbits (tests with a real LNbits instance).
#[derive(Debug, Clone)]
pub struct LnbitsInvoices {
    node: NodeClient,
}

impl LnbitsInvoices {
    /// `invoice_key` is the wallet's invoice ("inkey") key: it can create invoices, not pay.
    pub fn new(url: &str, invoice_key: &str) -> anyhow::Result<LnbitsInvoices> {
        let auth = secret_header("x-api-key", invoice_key, "invoice key")?;
        Ok(LnbitsInvoices {
            node: NodeClient::new(url, Trust::PublicRoots, vec![auth])?,
        })
    }

    /// `POST /api/v1/payments {"out": false, "amount": sats, "memo", "expiry"}` → the bolt11 and
    /// its payment hash. LNbits invoices are in whole sats, so the amount is rounded up.
    pub async fn create(
        &self,
        amount: Msat,
        memo: &str,
        expiry_secs: u64,
    ) -> Result<MintedInvoice, PayError> {
        self.post(json!({
            "out": false,
            "amount": amount.sats_ceil(),
            "memo": memo,
            "expiry": expiry_secs,
        }))
        .await
    }

    /// Like [`LnbitsInvoices::create`], for an invoice committing to the SHA-256 of
    /// `description` (`unhashed_description`, hex: LNbits hashes it and writes the `h` field),
    /// as an x402 `lnbtc` seller issues for a request binding.
    pub async fn create_hashed(
        &self,
        amount: Msat,
        description: &[u8],
        expiry_secs: u64,
    ) -> Result<MintedInvoice, PayError> {
        self.post(json!({
            "out": false,
            "amount": amount.sats_ceil(),
            "memo": "x402",
            "unhashed_description": hex::encode(description),
            "expiry": expiry_secs,
        }))
        .await
    }

    async fn post(&self, body: Value) -> Result<MintedInvoice, PayError> {
        let reply = self
            .node
            .call(
                Method::POST,
                "/api/v1/payments",
                Some(&body),
                LOOKUP_TIMEOUT,
            )
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?;
        if !reply.status.is_success() {
            let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            return Err(http_error(&reply, &json));
        }
        let json: Value = reply.json("LNbits create invoice")?;
        let bolt11 = str_field(&json, "bolt11").unwrap_or("").to_string();
        let payment_hash = str_field(&json, "payment_hash")
            .and_then(PaymentHash::from_hex)
            .filter(|_| !bolt11.is_empty())
            .ok_or_else(|| {
                PayError::Unavailable(
                    "LNbits created an invoice without bolt11 or payment_hash".into(),
                )
            })?;
        Ok(MintedInvoice {
            bolt11,
            payment_hash,
        })
    }
}
