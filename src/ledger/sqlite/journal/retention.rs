//! Retention in the embedded file: one batch is read, archived, then rolled up and deleted in
//! its own small transaction (payments keep flowing between batches), and the pages freed go
//! back to the file system a few at a time (`auto_vacuum=INCREMENTAL`).

use super::rows::{non_negative, payment_row, PAYMENT_COLUMNS};
use super::Journal;
use crate::core::Msat;
use crate::ledger::retention::{archive_declines, archive_payments};
use crate::ledger::{
    Compacted, Compaction, DeclineRecord, LedgerError, PaymentRecord, PaymentState,
};
use rusqlite::params;

/// Pages given back per batch (4 KiB each: up to 8 MiB).
const VACUUM_PAGES: i64 = 2048;

/// A settled row whose credential may still be used: kept, whatever its age.
const LIVE_TOKEN: &str = "(status = 'settled' AND token <> '' AND token_retired = 0
     AND (token_expires_at IS NULL OR token_expires_at > ?2))";

impl Journal {
    /// One round of [`Compaction`].
    pub async fn compact(&self, round: &Compaction) -> Result<Compacted, LedgerError> {
        let mut done = Compacted::default();
        let batch = round.batch.max(1) as i64;
        if let Some(before) = round.payments_before {
            let now = round.now;
            let rows = self
                .run(move |t| {
                    let sql = format!(
                        "SELECT {PAYMENT_COLUMNS} FROM payments
                         WHERE created_at < ?1 AND status <> 'pending' AND NOT {LIVE_TOKEN}
                         ORDER BY created_at LIMIT ?3"
                    );
                    let mut st = t.prepare_cached(&sql)?;
                    let rows = st.query_map(params![before, now, batch], payment_row)?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?;
            if !rows.is_empty() {
                if let Some(archive) = &round.archive {
                    archive_payments(archive, rows.clone()).await?;
                }
                done.payments = self.remove_payments(rows).await?;
            }
        }
        if let Some(before) = round.declines_before {
            let rows = self
                .run(move |t| {
                    let mut st = t.prepare_cached(
                        "SELECT id, agent, host, path, code, detail, amount_msat, created_at, count
                         FROM declines WHERE created_at < ?1 ORDER BY created_at LIMIT ?2",
                    )?;
                    let rows = st.query_map(params![before, batch], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            DeclineRecord {
                                agent: r.get(1)?,
                                host: r.get(2)?,
                                path: r.get(3)?,
                                code: r.get(4)?,
                                detail: r.get(5)?,
                                amount: r
                                    .get::<_, Option<i64>>(6)?
                                    .map(|v| non_negative(6, v).map(Msat::new))
                                    .transpose()?,
                                created_at: r.get(7)?,
                                count: r.get::<_, i64>(8)?.max(1) as u64,
                            },
                        ))
                    })?;
                    rows.collect::<Result<Vec<_>, _>>()
                })
                .await?;
            if !rows.is_empty() {
                let (ids, records): (Vec<i64>, Vec<DeclineRecord>) = rows.into_iter().unzip();
                if let Some(archive) = &round.archive {
                    archive_declines(archive, records).await?;
                }
                done.declines = self
                    .run(move |t| {
                        let mut st = t.prepare_cached("DELETE FROM declines WHERE id = ?1")?;
                        let mut n = 0;
                        for id in ids {
                            n += st.execute([id])? as u64;
                        }
                        Ok(n)
                    })
                    .await?;
            }
        }
        if !done.is_empty() {
            // One page per step: stepped until done.
            self.run(|t| {
                let mut st = t.prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
                let mut rows = st.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .await?;
        }
        Ok(done)
    }

    /// Adds each settled row to its rollup and price memory, then deletes the rows (never a
    /// pending one), in one transaction.
    async fn remove_payments(&self, rows: Vec<PaymentRecord>) -> Result<u64, LedgerError> {
        self.run(move |t| {
            let mut rollup = t.prepare_cached(
                "INSERT INTO spend_rollups (agent, origin, day, settled_count, settled_msat, failed_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (agent, origin, day) DO UPDATE SET
                     settled_count = settled_count + excluded.settled_count,
                     settled_msat = settled_msat + excluded.settled_msat,
                     failed_count = failed_count + excluded.failed_count",
            )?;
            let mut price = t.prepare_cached(
                "INSERT INTO price_memory (agent, origin, flight, last_msat, last_at, highest_msat)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4)
                 ON CONFLICT (agent, origin, flight) DO UPDATE SET
                     last_msat = CASE WHEN excluded.last_at >= last_at THEN excluded.last_msat ELSE last_msat END,
                     last_at = MAX(last_at, excluded.last_at),
                     highest_msat = MAX(highest_msat, excluded.highest_msat)",
            )?;
            let mut seller_rollup = t.prepare_cached(
                "INSERT INTO seller_rollups (sellers, settled_msat) VALUES (?1, ?2)
                 ON CONFLICT (sellers) DO UPDATE SET settled_msat = settled_msat + excluded.settled_msat",
            )?;
            let mut delete = t.prepare_cached(
                "DELETE FROM payments WHERE payment_hash = ?1 AND status <> 'pending'",
            )?;
            let mut removed = 0;
            for p in &rows {
                if delete.execute([p.hash.to_hex()])? == 0 {
                    continue;
                }
                removed += 1;
                let day = p.created_at - p.created_at.rem_euclid(86_400);
                let settled = p.state == PaymentState::Settled;
                let spent = if settled {
                    p.amount.saturating_add(p.fee.unwrap_or(Msat::new(0))).get()
                } else {
                    0
                };
                rollup.execute(params![
                    p.agent,
                    p.origin,
                    day,
                    i64::from(settled),
                    i64::try_from(spent).unwrap_or(i64::MAX),
                    i64::from(p.state == PaymentState::Failed)
                ])?;
                // The caps per seller it counted under keep counting it in their totals.
                if let (true, Some(sellers)) = (settled, crate::ledger::sellers_text(&p.sellers)) {
                    seller_rollup
                        .execute(params![sellers, i64::try_from(spent).unwrap_or(i64::MAX)])?;
                }
                if settled {
                    let flight = p.service.as_deref().unwrap_or(&p.scope);
                    price.execute(params![
                        p.agent,
                        p.origin,
                        flight,
                        i64::try_from(p.amount.get()).unwrap_or(i64::MAX),
                        p.created_at
                    ])?;
                }
            }
            Ok(removed)
        })
        .await
    }
}
