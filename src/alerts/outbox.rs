//! Durable delivery: with a ledger, every delivery is a row of the ledger's outbox before any
//! attempt, so a restart — or another replica sharing a PostgreSQL ledger — delivers what this
//! process could not. Two tasks per process:
//!
//! - the writer takes deliveries from [`Alerts::emit`](super::Alerts::emit) (a bounded channel:
//!   emitting never waits) and queues them in the ledger in groups; when the ledger cannot be
//!   written it falls back to delivering from memory (as without a ledger);
//! - the dispatcher leases due deliveries of the webhooks this process has (at most as many per
//!   webhook as it may send at once), attempts each, and records the outcome: delivered, a retry
//!   at the backoff, failed after the last attempt.
//!
//! A lease lasts two attempt deadlines and five seconds more, so an attempt never outlives its
//! lease and no two processes attempt one delivery at once. A process killed mid-attempt leaves
//! the lease to run out; the delivery is then attempted again, with the same id and body.

use super::queue::{DeliveryOptions, Outstanding, Target};
use super::webhook::Attempt;
use super::Alerts;
use crate::ledger::{DeliveryOutcome, Ledger, OutboxDelivery};
use crate::metrics::Metrics;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

/// Deliveries written to the ledger in one group at most.
const WRITE_GROUP: usize = 256;

/// Unix milliseconds now (retry times are wall-clock times shared by every process).
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A delivery on its way to the ledger, counted as outstanding until written.
pub(super) type Queued = (OutboxDelivery, Outstanding);

/// The durable path of an [`Alerts`]: where `emit` hands deliveries.
pub(super) struct Outbox {
    pub tx: mpsc::Sender<Queued>,
}

/// Starts the writer and the dispatcher for `alerts` on the current runtime.
pub(super) fn start(alerts: &Arc<Alerts>, ledger: Arc<dyn Ledger>) -> Outbox {
    let options = alerts.options;
    let (tx, rx) = mpsc::channel(options.max_pending.max(1));
    let wake = Arc::new(Notify::new());
    let holder = format!("{:016x}", rand::random::<u64>());
    // Weak references only: closing the ledger (a restart in the same process) is never held
    // up by these tasks.
    let ledger = Arc::downgrade(&ledger);
    tokio::spawn(writer(
        Arc::downgrade(alerts),
        ledger.clone(),
        rx,
        wake.clone(),
    ));
    tokio::spawn(dispatcher(Arc::downgrade(alerts), ledger, wake, holder));
    Outbox { tx }
}

async fn writer(
    alerts: Weak<Alerts>,
    ledger: Weak<dyn Ledger>,
    mut rx: mpsc::Receiver<Queued>,
    wake: Arc<Notify>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < WRITE_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let Some(alerts) = alerts.upgrade() else {
            return;
        };
        let Some(ledger) = ledger.upgrade() else {
            for (d, outstanding) in group {
                alerts.deliver_in_memory(d, outstanding);
            }
            continue;
        };
        let rows: Vec<OutboxDelivery> = group.iter().map(|(d, _)| d.clone()).collect();
        let written = ledger
            .queue_deliveries(rows, alerts.options.max_pending, now_ms())
            .await;
        drop(ledger);
        match written {
            Ok(dropped) => {
                for _ in 0..dropped {
                    alerts.metrics.webhook_delivery("dropped");
                }
                if dropped > 0 {
                    tracing::warn!(dropped, max_pending = alerts.options.max_pending,
                        "alert outbox full: the oldest waiting deliveries dropped (is a webhook down?)");
                }
                drop(group);
                wake.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e,
                    "alert deliveries could not be written to the ledger; delivering from memory");
                for (d, outstanding) in group {
                    alerts.deliver_in_memory(d, outstanding);
                }
            }
        }
    }
}

async fn dispatcher(
    alerts: Weak<Alerts>,
    ledger: Weak<dyn Ledger>,
    wake: Arc<Notify>,
    holder: String,
) {
    loop {
        let (Some(a), Some(store)) = (alerts.upgrade(), ledger.upgrade()) else {
            return;
        };
        let options = a.options;
        let poll = options
            .base_delay
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let lease_ms = i64::try_from(options.timeout.saturating_mul(2).as_millis())
            .unwrap_or(i64::MAX / 2)
            .saturating_add(5_000);
        let targets = a.targets.load_full();
        for target in targets.iter() {
            let free = target.in_flight.available_permits();
            if free == 0 || target.is_retired() {
                continue;
            }
            let claimed = match store
                .claim_deliveries(
                    std::slice::from_ref(&target.key),
                    &holder,
                    now_ms(),
                    lease_ms,
                    free,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, webhook = %target.webhook().host(),
                        "alert outbox unavailable; will try again");
                    continue;
                }
            };
            for d in claimed {
                tokio::spawn(attempt(
                    target.clone(),
                    d,
                    options,
                    a.metrics.clone(),
                    ledger.clone(),
                    a.outstanding.enter(),
                ));
            }
        }
        drop(targets);
        drop((a, store));
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// One attempt at a leased delivery, its outcome recorded in the ledger.
async fn attempt(
    target: Arc<Target>,
    d: OutboxDelivery,
    options: DeliveryOptions,
    metrics: Arc<Metrics>,
    ledger: Weak<dyn Ledger>,
    _outstanding: Outstanding,
) {
    let host = target.webhook().host().to_string();
    let number = d.attempts.saturating_add(1);
    let body = bytes::Bytes::from(d.body);
    let outcome = match target.in_flight.acquire().await {
        Ok(_permit) => target.poster.post(&d.event, &body, options.timeout).await,
        Err(_) => return,
    };
    let (result, problem) = match outcome {
        Attempt::Delivered(status) => {
            metrics.webhook_delivery("delivered");
            tracing::info!(event = %d.event, id = %d.id, webhook = %host, attempt = number, status,
                "alert delivered");
            (DeliveryOutcome::Delivered, None)
        }
        Attempt::Refused(status) => (
            retry_or_fail(&options, number),
            Some(format!("HTTP {status}")),
        ),
        Attempt::Unreachable(why) => (retry_or_fail(&options, number), Some(why)),
    };
    let recorded = match ledger.upgrade() {
        Some(ledger) => {
            ledger
                .finish_delivery(&d.id, &d.endpoint, result, now_ms())
                .await
        }
        None => Err(crate::ledger::LedgerError::Unavailable(
            "the ledger is closed".into(),
        )),
    };
    if let Err(e) = recorded {
        // The lease runs out and the delivery is attempted again (same id): at least once.
        tracing::warn!(error = %e, id = %d.id, webhook = %host,
            "alert delivery outcome not recorded; it may be delivered again");
    }
    match (result, &problem) {
        (DeliveryOutcome::Failed, Some(problem)) => {
            metrics.webhook_delivery("failed");
            tracing::error!(event = %d.event, id = %d.id, webhook = %host, attempt = number,
                error = %problem, "alert delivery failed; giving up");
        }
        (DeliveryOutcome::Retry { .. }, Some(problem)) => {
            metrics.webhook_delivery("retried");
            tracing::warn!(event = %d.event, id = %d.id, webhook = %host, attempt = number,
                error = %problem, retry_in_ms = options.backoff(number).as_millis() as u64,
                "alert delivery failed; will retry");
        }
        _ => {}
    }
}

fn retry_or_fail(options: &DeliveryOptions, attempt: u32) -> DeliveryOutcome {
    if attempt >= options.max_attempts.max(1) {
        DeliveryOutcome::Failed
    } else {
        let wait = i64::try_from(options.backoff(attempt).as_millis()).unwrap_or(i64::MAX / 2);
        DeliveryOutcome::Retry {
            next_at_ms: now_ms().saturating_add(wait),
        }
    }
}
