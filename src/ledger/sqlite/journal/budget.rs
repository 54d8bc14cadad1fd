//! Operator budget changes: spending against a total, setting it, and the overrides.

use super::rows::{msat_at, payment_row, PAYMENT_COLUMNS};
use super::Journal;
use crate::core::Msat;
use crate::ledger::{LedgerError, PaymentRecord};
use rusqlite::params;

impl Journal {
    /// Spend to re-apply to budgets at start: settled payments since `since` one by one, and
    /// per agent the settled sum before it (an agent may appear twice: its payments kept, and
    /// the rollups of those retention removed, which are all older than any window).
    pub async fn spend(
        &self,
        since: i64,
    ) -> Result<(Vec<PaymentRecord>, Vec<(String, Msat)>), LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'settled' AND created_at >= ?1 ORDER BY created_at"
            );
            let mut st = t.prepare_cached(&sql)?;
            let recent = st.query_map([since], payment_row)?.collect::<Result<Vec<_>, _>>()?;
            let mut st = t.prepare_cached(
                "SELECT agent, SUM(amount_msat + COALESCE(fee_msat, 0)) FROM payments
                 WHERE status = 'settled' AND created_at < ?1 GROUP BY agent",
            )?;
            let mut older = st
                .query_map([since], |r| Ok((r.get::<_, String>(0)?, msat_at(r, 1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            // Payments removed by retention (all before `since`) are counted by their rollups.
            let mut st = t.prepare_cached(
                "SELECT agent, SUM(settled_msat) FROM spend_rollups GROUP BY agent",
            )?;
            let rolled = st.query_map([], |r| Ok((r.get::<_, String>(0)?, msat_at(r, 1)?)))?;
            for row in rolled {
                older.push(row?);
            }
            Ok((recent, older))
        })
        .await
    }

    /// Settled spend before `since` per set of caps per seller it counted under (their totals
    /// at start).
    pub async fn seller_spend(&self, since: i64) -> Result<Vec<(Vec<String>, Msat)>, LedgerError> {
        self.run(move |t| {
            let mut st = t.prepare_cached(
                "SELECT sellers, SUM(msat) FROM (
                     SELECT sellers, amount_msat + COALESCE(fee_msat, 0) AS msat FROM payments
                     WHERE status = 'settled' AND created_at < ?1 AND sellers IS NOT NULL
                     UNION ALL SELECT sellers, settled_msat FROM seller_rollups
                 ) GROUP BY sellers",
            )?;
            let rows = st.query_map([since], |r| {
                let text: Option<String> = r.get(0)?;
                Ok((
                    crate::ledger::sellers_from_text(text.as_deref()),
                    msat_at(r, 1)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Sets or clears an operator override of an agent's total.
    pub async fn set_total(
        &self,
        agent: String,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| match total {
            Some(total) => t
                .prepare_cached(
                    "INSERT INTO budget_totals (agent, total_msat, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent) DO UPDATE SET total_msat = ?2, updated_at = ?3",
                )?
                .execute(params![agent, total.stored(), now])
                .map(|_| ()),
            None => t
                .prepare_cached("DELETE FROM budget_totals WHERE agent = ?1")?
                .execute([agent])
                .map(|_| ()),
        })
        .await
    }

    /// Every operator override of a total.
    pub async fn totals(&self) -> Result<Vec<(String, Msat)>, LedgerError> {
        self.run(|t| {
            let mut st = t.prepare_cached("SELECT agent, total_msat FROM budget_totals")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, msat_at(r, 1)?)))?;
            rows.collect()
        })
        .await
    }
}
