//! The prices paid before, the price-jump guard's reference: the payments kept, and the price
//! memory retention left of those it removed.

use super::rows::msat_at;
use super::Journal;
use crate::core::Msat;
use crate::ledger::LedgerError;
use rusqlite::{params, OptionalExtension};

impl Journal {
    /// The last settled price of a flight.
    pub async fn last_price(
        &self,
        agent: String,
        origin: String,
        flight: String,
    ) -> Result<Option<Msat>, LedgerError> {
        self.run(move |t| {
            let paid = t
                .prepare_cached(
                    "SELECT amount_msat FROM payments
                     WHERE agent = ?1 AND origin = ?2 AND status = 'settled' AND COALESCE(services, scope) = ?3
                     ORDER BY created_at DESC, rowid DESC LIMIT 1",
                )?
                .query_row(params![agent, origin, flight], |r| msat_at(r, 0))
                .optional()?;
            if paid.is_some() {
                return Ok(paid);
            }
            // Older payments removed by retention left their last price here.
            t.prepare_cached(
                "SELECT last_msat FROM price_memory WHERE agent = ?1 AND origin = ?2 AND flight = ?3",
            )?
            .query_row(params![agent, origin, flight], |r| msat_at(r, 0))
            .optional()
        })
        .await
    }

    /// The highest settled price of any service of `agent` at `origin` (the price-jump guard's
    /// reference for a service new there). A negative stored amount cannot be right.
    pub async fn highest_price(
        &self,
        agent: String,
        origin: String,
    ) -> Result<Option<Msat>, LedgerError> {
        let highest = self
            .run(move |t| {
                t.prepare_cached(
                    "SELECT MAX(m) FROM (
                         SELECT MAX(amount_msat) AS m FROM payments
                         WHERE agent = ?1 AND origin = ?2 AND status = 'settled'
                         UNION ALL
                         SELECT MAX(highest_msat) FROM price_memory WHERE agent = ?1 AND origin = ?2)",
                )?
                .query_row(params![agent, origin], |r| r.get::<_, Option<i64>>(0))
            })
            .await?;
        highest
            .map(|v| {
                u64::try_from(v).map(Msat::new).map_err(|_| {
                    LedgerError::Inconsistent(format!("a settled payment of {v} msat"))
                })
            })
            .transpose()
    }
}
