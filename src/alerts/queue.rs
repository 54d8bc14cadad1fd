//! Delivery: one task per (event, webhook), retried with exponential backoff, bounded per
//! webhook so a webhook that is down or slow holds at most `max_pending` deliveries and at most
//! `max_in_flight` connections, and never delays any other webhook.

use super::webhook::{Attempt, Poster, Webhook};
use crate::metrics::Metrics;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The `result` label values of `l402_proxy_webhook_deliveries_total`: `delivered` (a 2xx),
/// `retried` (one failed attempt that will be tried again), `failed` (gave up after the last
/// attempt), `dropped` (not queued because the webhook's queue was full, or abandoned because a
/// reload removed the webhook).
pub const DELIVERY_RESULTS: [&str; 4] = ["delivered", "retried", "failed", "dropped"];

/// How deliveries are paced and bounded. The default is the production schedule; tests shorten
/// the delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Wait before the first retry; doubles after each failed attempt (1 s).
    pub base_delay: Duration,
    /// Cap on the wait between attempts (5 min).
    pub max_delay: Duration,
    /// Attempts per delivery, the first included (14: with the defaults, waits of 1 s, 2 s, …,
    /// 256 s, then 300 s four times — about 30 minutes in all).
    pub max_attempts: u32,
    /// Deadline of one attempt: connect, send, and read the answer (10 s).
    pub timeout: Duration,
    /// Deliveries one webhook may hold at once, queued, in flight or waiting to retry (10 000);
    /// beyond it new deliveries to that webhook are dropped and counted.
    pub max_pending: usize,
    /// Concurrent requests to one webhook (4).
    pub max_in_flight: usize,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 14,
            timeout: Duration::from_secs(10),
            max_pending: 10_000,
            max_in_flight: 4,
        }
    }
}

impl DeliveryOptions {
    /// The wait after failed attempt number `attempt` (1-based): `base_delay · 2^(attempt-1)`,
    /// at most `max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// A webhook as the deliverer holds it: its client and its bounds. Shared by every delivery to
/// it; replaced (and retired) when a reload changes or removes the webhook.
pub(super) struct Target {
    pub(super) poster: Poster,
    /// `max_pending` permits: one held by each delivery from queueing to its end.
    pending: Arc<Semaphore>,
    /// `max_in_flight` permits: one held during each attempt (not while waiting to retry).
    pub(super) in_flight: Semaphore,
    /// The webhook's key in the ledger's outbox ([`Webhook::key`]).
    pub(super) key: String,
    /// Set when a reload removed this webhook: its deliveries stop retrying.
    retired: AtomicBool,
}

impl Target {
    pub fn new(webhook: Webhook, options: &DeliveryOptions) -> Result<Target, String> {
        Ok(Target {
            key: webhook.key(),
            poster: Poster::new(webhook)?,
            pending: Arc::new(Semaphore::new(options.max_pending.max(1))),
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            retired: AtomicBool::new(false),
        })
    }

    pub fn webhook(&self) -> &Webhook {
        &self.poster.webhook
    }

    /// A pending slot, or None when this webhook already holds `max_pending` deliveries.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.pending.clone().try_acquire_owned().ok()
    }

    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }
}

/// One event's body, shared (not copied) by its deliveries to every webhook.
#[derive(Clone)]
pub(super) struct Delivery {
    pub event: &'static str,
    pub id: Arc<str>,
    pub body: Bytes,
}

/// Counts deliveries not yet finished, for `flush`. Each delivery holds one [`Outstanding`].
#[derive(Default)]
pub(super) struct Tracker(AtomicUsize);

// (`Outstanding` is also held by a durable delivery from `emit` until its row is written, and
// during each of its attempts.)

impl Tracker {
    pub fn enter(self: &Arc<Self>) -> Outstanding {
        self.0.fetch_add(1, Ordering::SeqCst);
        Outstanding(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Decrements the [`Tracker`] when the delivery ends, however it ends (even if its task is
/// cancelled).
pub(super) struct Outstanding(Arc<Tracker>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Delivers `d` to `target`: attempts until a 2xx, `max_attempts`, or the webhook's removal,
/// waiting [`DeliveryOptions::backoff`] between attempts. Every attempt is logged (event, id,
/// webhook host, attempt, status or error) and counted.
pub(super) async fn deliver(
    target: Arc<Target>,
    d: Delivery,
    options: DeliveryOptions,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
    _outstanding: Outstanding,
) {
    let host = target.webhook().host().to_string();
    let attempts = options.max_attempts.max(1);
    for attempt in 1..=attempts {
        if target.is_retired() {
            metrics.webhook_delivery("dropped");
            tracing::info!(event = d.event, id = %d.id, webhook = %host, attempt,
                "webhook removed by a config reload; delivery abandoned");
            return;
        }
        let outcome = match target.in_flight.acquire().await {
            Ok(_permit) => target.poster.post(d.event, &d.body, options.timeout).await,
            Err(_) => return,
        };
        let problem = match outcome {
            Attempt::Delivered(status) => {
                metrics.webhook_delivery("delivered");
                tracing::info!(event = d.event, id = %d.id, webhook = %host, attempt, status,
                    "alert delivered");
                return;
            }
            Attempt::Refused(status) => format!("HTTP {status}"),
            Attempt::Unreachable(why) => why,
        };
        if attempt == attempts {
            metrics.webhook_delivery("failed");
            tracing::error!(event = d.event, id = %d.id, webhook = %host, attempt,
                error = %problem, "alert delivery failed; giving up");
            return;
        }
        let wait = options.backoff(attempt);
        metrics.webhook_delivery("retried");
        tracing::warn!(event = d.event, id = %d.id, webhook = %host, attempt,
            error = %problem, retry_in_ms = wait.as_millis() as u64, "alert delivery failed; will retry");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let o = DeliveryOptions::default();
        let secs: Vec<u64> = (1..=14).map(|n| o.backoff(n).as_secs()).collect();
        assert_eq!(
            secs,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300, 300]
        );
        // Waits follow attempts 1..13: about half an hour before the 14th (last) attempt.
        let total: u64 = secs[..13].iter().sum();
        assert!((1700..=1900).contains(&total), "{total}");
        assert_eq!(o.backoff(200), o.max_delay, "no overflow");
        let fast = DeliveryOptions {
            base_delay: Duration::from_millis(50),
            ..o
        };
        assert_eq!(fast.backoff(3), Duration::from_millis(200));
    }
}
