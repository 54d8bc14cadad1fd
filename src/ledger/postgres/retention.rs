//! Retention in the shared database: each batch is one short transaction that locks only old,
//! finished rows (`FOR UPDATE SKIP LOCKED`: replicas compacting at once take different rows,
//! and payments never wait on it), archives them, adds them to the rollups and deletes them.

use super::rows::{get, payment_row, PAYMENT_COLUMNS};
use super::{unavailable, PostgresLedger};
use crate::core::Msat;
use crate::ledger::retention::{archive_declines, archive_payments};
use crate::ledger::{Compacted, Compaction, DeclineRecord, LedgerError, PaymentState};
use std::collections::HashMap;

pub(super) async fn compact(
    ledger: &PostgresLedger,
    round: &Compaction,
) -> Result<Compacted, LedgerError> {
    let mut done = Compacted::default();
    let batch = i64::try_from(round.batch.max(1)).unwrap_or(i64::MAX);
    if let Some(before) = round.payments_before {
        done.payments = payments(ledger, round, before, batch).await?;
        // Usage rows of windows that ended before the cutoff are never read again.
        let client = ledger.client().await?;
        client
            .execute(
                "DELETE FROM l402_usage WHERE ctid IN (SELECT ctid FROM l402_usage
                 WHERE period <> 'total' AND start < $1 LIMIT $2)",
                &[&before, &batch],
            )
            .await
            .map_err(unavailable)?;
    }
    if let Some(before) = round.declines_before {
        done.declines = declines(ledger, round, before, batch).await?;
    }
    Ok(done)
}

async fn payments(
    ledger: &PostgresLedger,
    round: &Compaction,
    before: i64,
    batch: i64,
) -> Result<u64, LedgerError> {
    let mut client = ledger.client().await?;
    let txn = client.transaction().await.map_err(unavailable)?;
    let rows = txn
        .query(
            &format!(
                "SELECT {PAYMENT_COLUMNS}, flight FROM l402_payments
                 WHERE created_at < $1 AND status <> 'pending'
                   AND NOT (status = 'settled' AND token <> '' AND NOT token_retired
                            AND (token_expires_at IS NULL OR token_expires_at > $2))
                 ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED"
            ),
            &[&before, &round.now, &batch],
        )
        .await
        .map_err(unavailable)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut records = Vec::with_capacity(rows.len());
    let mut rollups: HashMap<(String, String, i64), (i64, i64, i64)> = HashMap::new();
    let mut prices: HashMap<(String, String, String), (i64, i64, i64)> = HashMap::new();
    for r in &rows {
        let p = payment_row(r)?;
        let flight: String = get(r, 21)?;
        let settled = p.state == PaymentState::Settled;
        let day = p.created_at - p.created_at.rem_euclid(86_400);
        let spent = if settled {
            p.amount.saturating_add(p.fee.unwrap_or(Msat::new(0))).get()
        } else {
            0
        };
        let e = rollups
            .entry((p.agent.clone(), p.origin.clone(), day))
            .or_default();
        e.0 += i64::from(settled);
        e.1 = e.1.saturating_add(i64::try_from(spent).unwrap_or(i64::MAX));
        e.2 += i64::from(p.state == PaymentState::Failed);
        if settled {
            let amount = i64::try_from(p.amount.get()).unwrap_or(i64::MAX);
            let e = prices
                .entry((p.agent.clone(), p.origin.clone(), flight))
                .or_insert((amount, p.created_at, amount));
            if p.created_at >= e.1 {
                e.0 = amount;
                e.1 = p.created_at;
            }
            e.2 = e.2.max(amount);
        }
        records.push(p);
    }
    let hashes: Vec<String> = records.iter().map(|p| p.hash.to_hex()).collect();
    if let Some(archive) = &round.archive {
        archive_payments(archive, records).await?;
    }
    for ((agent, origin, day), (count, msat, failed)) in &rollups {
        txn.execute(
            "INSERT INTO l402_spend_rollups (agent, origin, day, settled_count, settled_msat, failed_count)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (agent, origin, day) DO UPDATE SET
                 settled_count = l402_spend_rollups.settled_count + EXCLUDED.settled_count,
                 settled_msat = l402_spend_rollups.settled_msat + EXCLUDED.settled_msat,
                 failed_count = l402_spend_rollups.failed_count + EXCLUDED.failed_count",
            &[agent, origin, day, count, msat, failed],
        )
        .await
        .map_err(unavailable)?;
    }
    for ((agent, origin, flight), (last, at, highest)) in &prices {
        txn.execute(
            "INSERT INTO l402_price_memory (agent, origin, flight, last_msat, last_at, highest_msat)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (agent, origin, flight) DO UPDATE SET
                 last_msat = CASE WHEN EXCLUDED.last_at >= l402_price_memory.last_at
                                  THEN EXCLUDED.last_msat ELSE l402_price_memory.last_msat END,
                 last_at = GREATEST(l402_price_memory.last_at, EXCLUDED.last_at),
                 highest_msat = GREATEST(l402_price_memory.highest_msat, EXCLUDED.highest_msat)",
            &[agent, origin, flight, last, at, highest],
        )
        .await
        .map_err(unavailable)?;
    }
    let removed = txn
        .execute(
            "DELETE FROM l402_payments WHERE payment_hash = ANY($1) AND status <> 'pending'",
            &[&hashes],
        )
        .await
        .map_err(unavailable)?;
    txn.commit().await.map_err(unavailable)?;
    Ok(removed)
}

async fn declines(
    ledger: &PostgresLedger,
    round: &Compaction,
    before: i64,
    batch: i64,
) -> Result<u64, LedgerError> {
    let mut client = ledger.client().await?;
    let txn = client.transaction().await.map_err(unavailable)?;
    let rows = txn
        .query(
            "SELECT id, agent, host, path, code, detail, amount_msat, created_at, count
             FROM l402_declines WHERE created_at < $1
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&before, &batch],
        )
        .await
        .map_err(unavailable)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut records = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(get::<i64>(r, 0)?);
        records.push(DeclineRecord {
            agent: get(r, 1)?,
            host: get(r, 2)?,
            path: get(r, 3)?,
            code: get(r, 4)?,
            detail: get(r, 5)?,
            amount: get::<Option<i64>>(r, 6)?.map(|v| Msat::new(u64::try_from(v).unwrap_or(0))),
            created_at: get(r, 7)?,
            count: u64::try_from(get::<i64>(r, 8)?).unwrap_or(1).max(1),
        });
    }
    if let Some(archive) = &round.archive {
        archive_declines(archive, records).await?;
    }
    let removed = txn
        .execute("DELETE FROM l402_declines WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(unavailable)?;
    txn.commit().await.map_err(unavailable)?;
    Ok(removed)
}
