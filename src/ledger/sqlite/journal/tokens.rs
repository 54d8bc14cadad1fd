//! The credentials settled payments bought: the live ones, a lookup by hash, retiring one,
//! and the scopes learned for it.

use super::rows::{payment_row, token_extras, PAYMENT_COLUMNS};
use super::Journal;
use crate::core::PaymentHash;
use crate::ledger::{LedgerError, PaymentRecord};
use rusqlite::{params, OptionalExtension};

impl Journal {
    /// Settled payments with a stored credential that may still be good, oldest first, with
    /// their learned scopes and stored proof.
    pub async fn live_tokens(
        &self,
        now: u64,
        since: i64,
    ) -> Result<Vec<(PaymentRecord, Vec<String>, Option<String>)>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS}, preimage FROM payments WHERE status = 'settled' AND preimage IS NOT NULL
                 AND token_retired = 0 AND scheme IS NOT NULL AND created_at >= ?2
                 AND (token_expires_at IS NULL OR token_expires_at > ?1) ORDER BY created_at ASC"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(params![now as i64, since], |r| {
                let (scopes, preimage) = token_extras(r)?;
                Ok((payment_row(r)?, scopes, preimage))
            })?;
            rows.collect()
        })
        .await
    }

    /// The newest live stored token of an agent at an origin for a service (or scope).
    pub async fn find_token(
        &self,
        agent: String,
        origin: String,
        service: Option<String>,
        scope: String,
        now: u64,
    ) -> Result<Option<(PaymentRecord, Vec<String>, Option<String>)>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS}, preimage FROM payments WHERE status = 'settled' AND preimage IS NOT NULL
                 AND token_retired = 0 AND scheme IS NOT NULL AND agent = ?1 AND origin = ?2
                 AND ((?3 IS NOT NULL AND services = ?3) OR (?3 IS NULL AND scope = ?4))
                 AND (token_expires_at IS NULL OR token_expires_at > ?5) ORDER BY created_at DESC LIMIT 1"
            );
            let mut st = t.prepare_cached(&sql)?;
            st.query_row(params![agent, origin, service, scope, now as i64], |r| {
                let (scopes, preimage) = token_extras(r)?;
                Ok((payment_row(r)?, scopes, preimage))
            })
            .optional()
        })
        .await
    }

    /// Marks a token as refused by its server.
    pub async fn retire_token(&self, hash: PaymentHash) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached("UPDATE payments SET token_retired = 1 WHERE payment_hash = ?1")?
                .execute([hash.to_hex()])
                .map(|_| ())
        })
        .await
    }

    /// Adds a learned scope to a token (at most 64 are kept).
    pub async fn learn_scope(&self, hash: PaymentHash, scope: String) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET scopes = CASE WHEN scopes = '' THEN ?2 ELSE scopes || char(10) || ?2 END
                 WHERE payment_hash = ?1 AND instr(char(10) || scopes || char(10), char(10) || ?2 || char(10)) = 0
                 AND length(scopes) - length(replace(scopes, char(10), '')) < 63",
            )?
            .execute(params![hash.to_hex(), scope])
            .map(|_| ())
        })
        .await
    }
}
