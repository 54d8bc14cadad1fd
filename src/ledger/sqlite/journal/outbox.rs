//! The webhook outbox in the embedded file (one process: a lease is still recorded, so a
//! delivery in flight is not claimed twice by this process's own loop).

use super::Journal;
use crate::ledger::outbox::{
    DeliveryOutcome, OutboxDelivery, ABANDONED_AFTER_MS, FINISHED_KEPT_MS,
};
use crate::ledger::LedgerError;
use rusqlite::params;

impl Journal {
    /// See [`Ledger::queue_deliveries`](crate::ledger::Ledger::queue_deliveries).
    pub async fn queue_deliveries(
        &self,
        deliveries: Vec<OutboxDelivery>,
        cap: usize,
        now_ms: i64,
    ) -> Result<u64, LedgerError> {
        self.run(move |t| {
            let mut insert = t.prepare_cached(
                "INSERT INTO outbox (id, endpoint, host, event, body, attempts, state, next_at_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 'queued', ?6, ?7, ?7)
                 ON CONFLICT (id, endpoint) DO NOTHING",
            )?;
            for d in &deliveries {
                insert.execute(params![d.id, d.endpoint, d.host, d.event, d.body, d.next_at_ms, d.created_at_ms])?;
            }
            let dropped = t
                .prepare_cached(
                    "UPDATE outbox SET state = 'dropped', updated_at_ms = ?2
                     WHERE state = 'queued' AND rowid IN (
                         SELECT rowid FROM outbox WHERE state = 'queued'
                         ORDER BY created_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute(params![cap as i64, now_ms])?
                + t.prepare_cached(
                    "UPDATE outbox SET state = 'dropped', updated_at_ms = ?2
                     WHERE state = 'queued' AND created_at_ms < ?1",
                )?
                .execute(params![now_ms.saturating_sub(ABANDONED_AFTER_MS), now_ms])?;
            t.prepare_cached(
                "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox
                 WHERE state <> 'queued' AND updated_at_ms < ?1 LIMIT 1000)",
            )?
            .execute([now_ms.saturating_sub(FINISHED_KEPT_MS)])?;
            Ok(dropped as u64)
        })
        .await
    }

    /// See [`Ledger::claim_deliveries`](crate::ledger::Ledger::claim_deliveries).
    pub async fn claim_deliveries(
        &self,
        endpoints: Vec<String>,
        holder: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxDelivery>, LedgerError> {
        self.run(move |t| {
            let mut out = Vec::new();
            let mut due = t.prepare_cached(
                "SELECT id, endpoint, host, event, body, attempts, next_at_ms, created_at_ms FROM outbox
                 WHERE state = 'queued' AND endpoint = ?1 AND next_at_ms <= ?2 AND lease_until_ms <= ?2
                 ORDER BY next_at_ms, created_at_ms LIMIT ?3",
            )?;
            let mut lease = t.prepare_cached(
                "UPDATE outbox SET lease_holder = ?3, lease_until_ms = ?4 WHERE id = ?1 AND endpoint = ?2",
            )?;
            for endpoint in &endpoints {
                let rows = due
                    .query_map(params![endpoint, now_ms, limit.max(1) as i64], |r| {
                        Ok(OutboxDelivery {
                            id: r.get(0)?,
                            endpoint: r.get(1)?,
                            host: r.get(2)?,
                            event: r.get(3)?,
                            body: r.get(4)?,
                            attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
                            next_at_ms: r.get(6)?,
                            created_at_ms: r.get(7)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for d in rows {
                    lease.execute(params![d.id, d.endpoint, holder, now_ms.saturating_add(lease_ms)])?;
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    /// See [`Ledger::finish_delivery`](crate::ledger::Ledger::finish_delivery).
    pub async fn finish_delivery(
        &self,
        id: String,
        endpoint: String,
        outcome: DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let next = match outcome {
            DeliveryOutcome::Retry { next_at_ms } => next_at_ms,
            _ => now_ms,
        };
        let attempted = i64::from(outcome != DeliveryOutcome::Dropped);
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE outbox SET state = ?3, attempts = attempts + ?4, next_at_ms = ?5,
                     lease_holder = NULL, lease_until_ms = 0, updated_at_ms = ?6
                 WHERE id = ?1 AND endpoint = ?2 AND state = 'queued'",
            )?
            .execute(params![
                id,
                endpoint,
                outcome.state(),
                attempted,
                next,
                now_ms
            ])
            .map(|_| ())
        })
        .await
    }
}
