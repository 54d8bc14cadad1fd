//! The webhook outbox in the shared database: deliveries are leased with
//! `FOR UPDATE SKIP LOCKED`, so replicas share the work and never hold one delivery at once.

use super::rows::get;
use super::{unavailable, PostgresLedger};
use crate::ledger::outbox::{
    DeliveryOutcome, OutboxDelivery, ABANDONED_AFTER_MS, FINISHED_KEPT_MS,
};
use crate::ledger::LedgerError;

pub(super) async fn queue_deliveries(
    ledger: &PostgresLedger,
    deliveries: Vec<OutboxDelivery>,
    cap: usize,
    now_ms: i64,
) -> Result<u64, LedgerError> {
    let mut client = ledger.client().await?;
    let txn = client.transaction().await.map_err(unavailable)?;
    let insert = txn
        .prepare_cached(
            "INSERT INTO l402_outbox (id, endpoint, host, event, body, attempts, state, next_at_ms, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, 0, 'queued', $6, $7, $7)
             ON CONFLICT (id, endpoint) DO NOTHING",
        )
        .await
        .map_err(unavailable)?;
    for d in &deliveries {
        txn.execute(
            &insert,
            &[
                &d.id,
                &d.endpoint,
                &d.host,
                &d.event,
                &d.body,
                &d.next_at_ms,
                &d.created_at_ms,
            ],
        )
        .await
        .map_err(unavailable)?;
    }
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let abandoned = txn
        .execute(
            "UPDATE l402_outbox SET state = 'dropped', updated_at_ms = $2
             WHERE state = 'queued' AND created_at_ms < $1",
            &[&now_ms.saturating_sub(ABANDONED_AFTER_MS), &now_ms],
        )
        .await
        .map_err(unavailable)?;
    // Counted first: the dropping update locks every row it reads, so it runs only when needed.
    let waiting: i64 = get(
        &txn.query_one(
            "SELECT COUNT(*) FROM l402_outbox WHERE state = 'queued'",
            &[],
        )
        .await
        .map_err(unavailable)?,
        0,
    )?;
    let dropped = if waiting <= cap {
        0
    } else {
        txn.execute(
            "UPDATE l402_outbox o SET state = 'dropped', updated_at_ms = $2
             FROM (SELECT id, endpoint FROM l402_outbox WHERE state = 'queued'
                   ORDER BY created_at_ms DESC OFFSET $1 FOR UPDATE SKIP LOCKED) old
             WHERE o.id = old.id AND o.endpoint = old.endpoint",
            &[&cap, &now_ms],
        )
        .await
        .map_err(unavailable)?
    };
    txn.execute(
        "DELETE FROM l402_outbox WHERE ctid IN (SELECT ctid FROM l402_outbox
         WHERE state <> 'queued' AND updated_at_ms < $1 LIMIT 1000)",
        &[&now_ms.saturating_sub(FINISHED_KEPT_MS)],
    )
    .await
    .map_err(unavailable)?;
    txn.commit().await.map_err(unavailable)?;
    Ok(dropped + abandoned)
}

pub(super) async fn claim_deliveries(
    ledger: &PostgresLedger,
    endpoints: &[String],
    holder: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxDelivery>, LedgerError> {
    let client = ledger.client().await?;
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "UPDATE l402_outbox o SET lease_holder = $2, lease_until_ms = $3 + $4
             FROM (SELECT id, endpoint FROM l402_outbox
                   WHERE state = 'queued' AND endpoint = ANY($1) AND next_at_ms <= $3 AND lease_until_ms <= $3
                   ORDER BY next_at_ms, created_at_ms LIMIT $5 FOR UPDATE SKIP LOCKED) due
             WHERE o.id = due.id AND o.endpoint = due.endpoint
             RETURNING o.id, o.endpoint, o.host, o.event, o.body, o.attempts, o.next_at_ms, o.created_at_ms",
            &[&endpoints, &holder, &now_ms, &lease_ms, &limit],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(OutboxDelivery {
                id: get(r, 0)?,
                endpoint: get(r, 1)?,
                host: get(r, 2)?,
                event: get(r, 3)?,
                body: get(r, 4)?,
                attempts: u32::try_from(get::<i32>(r, 5)?).unwrap_or(0),
                next_at_ms: get(r, 6)?,
                created_at_ms: get(r, 7)?,
            })
        })
        .collect()
}

pub(super) async fn finish_delivery(
    ledger: &PostgresLedger,
    id: &str,
    endpoint: &str,
    outcome: DeliveryOutcome,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let next = match outcome {
        DeliveryOutcome::Retry { next_at_ms } => next_at_ms,
        _ => now_ms,
    };
    let attempted = i32::from(outcome != DeliveryOutcome::Dropped);
    let client = ledger.client().await?;
    client
        .execute(
            "UPDATE l402_outbox SET state = $3, attempts = attempts + $4, next_at_ms = $5,
                 lease_holder = NULL, lease_until_ms = 0, updated_at_ms = $6
             WHERE id = $1 AND endpoint = $2 AND state = 'queued'",
            &[&id, &endpoint, &outcome.state(), &attempted, &next, &now_ms],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}
