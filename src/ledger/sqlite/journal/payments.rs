//! Payments: the durable pending record before the wallet is called, its settlement or
//! failure, and the queries over them.

use super::rows::{non_negative, payment_row, PAYMENT_COLUMNS};
use super::{Journal, JournalBegin};
use crate::core::{Msat, PaymentHash};
use crate::ledger::{LedgerError, NewPayment, PaymentFilter, PaymentRecord, PaymentState};
use rusqlite::{params, OptionalExtension};

/// A known payment's status, agent, origin, stored preimage and fee.
type KnownPayment = (String, String, String, Option<String>, Option<i64>);

impl Journal {
    /// Records a payment as pending unless the hash is pending or settled: the durable step
    /// that must precede every call to the wallet. A failed hash may be begun again.
    pub async fn begin(
        &self,
        p: NewPayment,
        sellers: Vec<String>,
    ) -> Result<JournalBegin, LedgerError> {
        self.run(move |t| {
            let known: Option<KnownPayment> = t
                .prepare_cached(
                    "SELECT status, agent, origin, preimage, fee_msat FROM payments WHERE payment_hash = ?1",
                )?
                .query_row([p.hash.to_hex()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            match known {
                Some((status, agent, origin, preimage, fee)) if status == "settled" => {
                    return Ok(JournalBegin::Settled {
                        agent,
                        origin,
                        preimage,
                        fee: Msat::new(non_negative(4, fee.unwrap_or(0))?),
                    })
                }
                Some((status, ..)) if status == "pending" => return Ok(JournalBegin::Pending),
                _ => {}
            }
            let (token, scheme) = match &p.credential {
                Some(c) => (c.token.clone(), Some(c.scheme.clone())),
                None => (String::new(), None),
            };
            t.prepare_cached(
                "INSERT INTO payments (payment_hash, agent, host, origin, dialect, amount_msat, fee_reserve_msat, status, bolt11, \
                 token, scheme, services, scope, token_expires_at, created_at, updated_at, purchase, sellers)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16)
                 ON CONFLICT (payment_hash) DO UPDATE SET agent = ?2, host = ?3, origin = ?4, dialect = ?5, amount_msat = ?6,
                 fee_reserve_msat = ?7, status = 'pending', bolt11 = ?8, token = ?9, scheme = ?10, services = ?11, scope = ?12,
                 token_expires_at = ?13, fee_msat = NULL, failure = NULL, preimage = NULL, scopes = '', token_retired = 0,
                 created_at = ?14, updated_at = ?14, purchase = ?15, sellers = ?16",
            )?
            .execute(params![
                p.hash.to_hex(),
                &*p.agent,
                p.host,
                p.origin,
                p.dialect,
                p.amount.stored(),
                p.fee_reserve.stored(),
                p.bolt11,
                token,
                scheme,
                p.service,
                p.scope,
                p.token_expires_at.map(|v| v as i64),
                p.created_at,
                p.purchase,
                crate::ledger::sellers_text(&sellers)
            ])?;
            Ok(JournalBegin::Fresh)
        })
        .await
    }

    /// Records a settled payment; the preimage is kept only when given (reusable credentials).
    pub async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        preimage_hex: Option<String>,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'settled', fee_msat = ?2, preimage = ?3, failure = NULL, updated_at = ?4
                 WHERE payment_hash = ?1",
            )?
            .execute(params![hash.to_hex(), fee.stored(), preimage_hex, now])
            .map(|_| ())
        })
        .await
    }

    /// Records a pending payment as failed.
    pub async fn fail(
        &self,
        hash: PaymentHash,
        reason: String,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'failed', failure = ?2, updated_at = ?3 WHERE payment_hash = ?1 AND status = 'pending'",
            )?
            .execute(params![hash.to_hex(), reason, now])
            .map(|_| ())
        })
        .await
    }

    /// Where one payment stands, `None` for a hash never begun.
    pub async fn payment_state(
        &self,
        hash: PaymentHash,
    ) -> Result<Option<PaymentState>, LedgerError> {
        let status: Option<String> = self
            .run(move |t| {
                t.prepare_cached("SELECT status FROM payments WHERE payment_hash = ?1")?
                    .query_row([hash.to_hex()], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(status.as_deref().and_then(PaymentState::parse))
    }

    /// Whether this payment bought a reusable credential (so its proof is to be kept).
    pub async fn has_credential(&self, hash: PaymentHash) -> Result<bool, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "SELECT scheme IS NOT NULL AND token <> '' FROM payments WHERE payment_hash = ?1",
            )?
            .query_row([hash.to_hex()], |r| r.get::<_, bool>(0))
            .optional()
            .map(|v| v.unwrap_or(false))
        })
        .await
    }

    /// Payments, newest first.
    pub async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR status = ?2)
                 AND (?3 IS NULL OR host = ?3 OR host LIKE ?3 || ':%') AND (?4 IS NULL OR created_at >= ?4)
                 AND (?5 IS NULL OR created_at < ?5)
                 ORDER BY created_at DESC, rowid DESC LIMIT ?6"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    filter.agent,
                    filter.state.map(PaymentState::as_str),
                    filter.host,
                    filter.since,
                    filter.until,
                    filter.limit.max(1) as i64
                ],
                payment_row,
            )?;
            rows.collect()
        })
        .await
    }

    /// Every pending payment, oldest first.
    pub async fn pending(&self) -> Result<Vec<PaymentRecord>, LedgerError> {
        self.run(|t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' ORDER BY created_at ASC"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map([], payment_row)?;
            rows.collect()
        })
        .await
    }
}
