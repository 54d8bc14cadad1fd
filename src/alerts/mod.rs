//! Operator alerts: events (budget thresholds, approvals, failed and stuck payments, a low
//! wallet, the store going away, price jumps) delivered to webhooks, signed, retried, never on
//! the request path.
//!
//! - [`event`]: the [`Event`]s and the JSON body a webhook receives.
//! - [`config`]: the `alerts:` section ([`AlertsConfig`]), its checks and secrets.
//! - [`filter`]: which events a webhook wants (`*`, names, `budget.*`).
//! - [`webhook`]: a [`Webhook`], [`sign`] and [`verify`], one signed POST.
//! - [`queue`]: delivery tasks, retry with backoff, per-webhook bounds.
//! - `outbox`: with a ledger ([`Alerts::use_ledger`]), deliveries are rows of the ledger's
//!   outbox first, so a restart or another replica delivers them (same id, same body).
//!
//! [`Alerts`] is the handle the rest of the proxy holds: [`Alerts::emit`] counts the event and
//! hands it to the deliverer without waiting for anything.

pub mod config;
pub mod event;
pub mod filter;
mod outbox;
pub mod queue;
pub mod webhook;

pub use config::{AlertsConfig, WebhookConfig};
pub use event::{Event, Scope, EVENT_NAMES};
pub use filter::EventFilter;
pub use queue::{DeliveryOptions, DELIVERY_RESULTS};
pub use webhook::{sign, verify, Webhook};

use crate::core::Clock;
use crate::ledger::{Ledger, OutboxDelivery};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use queue::{Delivery, Outstanding, Target, Tracker};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::runtime::Handle;

/// The alert system. Cheap to share (`Arc`). Every emitted event is counted in
/// `l402_proxy_alerts_total{event}`; with webhooks configured it is also delivered to each
/// webhook whose filter matches, in the background. Emitting never blocks and never fails.
pub struct Alerts {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    options: DeliveryOptions,
    /// The runtime deliveries are spawned on; unset while disabled outside a runtime.
    runtime: OnceLock<Handle>,
    targets: ArcSwap<Vec<Arc<Target>>>,
    outstanding: Arc<Tracker>,
    /// The durable path, once [`Alerts::use_ledger`] was called.
    outbox: OnceLock<outbox::Outbox>,
    /// Drops since the last warning, and the second of that warning (one warning a second).
    dropped_unlogged: AtomicU64,
    last_drop_warning: AtomicI64,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhooks", &self.targets.load().len())
            .field("pending", &self.pending())
            .finish()
    }
}

impl Alerts {
    /// Starts delivering to `webhooks` with the production schedule ([`DeliveryOptions`]'s
    /// default). Call inside a tokio runtime: deliveries run on it. Outside one, it logs an
    /// error and behaves as [`Alerts::disabled`] (events are still counted).
    pub fn start(
        webhooks: Vec<Webhook>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Alerts> {
        Alerts::start_with(webhooks, metrics, clock, DeliveryOptions::default())
    }

    /// As [`Alerts::start`], with another delivery schedule and bounds (tests shorten delays).
    pub fn start_with(
        webhooks: Vec<Webhook>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        options: DeliveryOptions,
    ) -> Arc<Alerts> {
        let alerts = Alerts::new(metrics, clock, options);
        match Handle::try_current() {
            Ok(handle) => {
                let _ = alerts.runtime.set(handle);
                alerts.set_webhooks(webhooks);
            }
            Err(_) if webhooks.is_empty() => {}
            Err(_) => tracing::error!(
                "alerts started outside a tokio runtime: webhooks are off, events only counted"
            ),
        }
        Arc::new(alerts)
    }

    /// No webhooks: events are only counted. Needs no runtime. A later
    /// [`set_webhooks`](Alerts::set_webhooks) from inside a runtime turns delivery on.
    pub fn disabled(metrics: Arc<Metrics>) -> Arc<Alerts> {
        Arc::new(Alerts::new(
            metrics,
            Arc::new(crate::core::time::SystemClock),
            DeliveryOptions::default(),
        ))
    }

    fn new(metrics: Arc<Metrics>, clock: Arc<dyn Clock>, options: DeliveryOptions) -> Alerts {
        Alerts {
            metrics,
            clock,
            options,
            runtime: OnceLock::new(),
            targets: ArcSwap::from_pointee(Vec::new()),
            outstanding: Arc::new(Tracker::default()),
            outbox: OnceLock::new(),
            dropped_unlogged: AtomicU64::new(0),
            last_drop_warning: AtomicI64::new(i64::MIN),
        }
    }

    /// Makes deliveries durable: from now on each is written to `ledger`'s outbox before it is
    /// attempted, and deliveries waiting there for this process's webhooks (left by an earlier
    /// run, or by another replica) are attempted too. Call once, inside a tokio runtime (a
    /// second call, or one outside a runtime, is ignored with a log line).
    pub fn use_ledger(self: &Arc<Self>, ledger: Arc<dyn Ledger>) {
        let Ok(handle) = Handle::try_current() else {
            tracing::error!(
                "alert outbox started outside a tokio runtime: deliveries stay in memory"
            );
            return;
        };
        let _ = self.runtime.set(handle);
        if self.outbox.get().is_some() {
            return;
        }
        let _ = self.outbox.set(outbox::start(self, ledger));
    }

    /// Counts `event` and queues one delivery of it to every webhook that wants it, then
    /// returns: no I/O, no lock held across anything slow, no waiting. A webhook already holding
    /// [`DeliveryOptions::max_pending`] deliveries gets none (counted as `dropped`, warned about
    /// at most once a second). All deliveries of one event share one body and one `id`. With a
    /// ledger ([`Alerts::use_ledger`]) the deliveries go to its outbox (bounded the same way).
    pub fn emit(&self, event: Event) {
        let name = event.name();
        self.metrics.alert(name);
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let targets = self.targets.load();
        if let Some(outbox) = self.outbox.get() {
            let wanted: Vec<&Arc<Target>> =
                targets.iter().filter(|t| t.webhook().wants(name)).collect();
            if wanted.is_empty() {
                return;
            }
            let at = self.clock.now();
            let id = format!("{:032x}", rand::random::<u128>());
            let body = event.body(&id, at);
            let now_ms = outbox::now_ms();
            for target in wanted {
                let row = OutboxDelivery {
                    id: id.clone(),
                    endpoint: target.key.clone(),
                    host: target.webhook().host().to_string(),
                    event: name.to_string(),
                    body: body.clone(),
                    attempts: 0,
                    next_at_ms: now_ms,
                    created_at_ms: now_ms,
                };
                if outbox.tx.try_send((row, self.outstanding.enter())).is_err() {
                    self.dropped(name, target.webhook().host());
                }
            }
            return;
        }
        // Reserve first: an event every queue refuses costs no serialisation.
        let mut reserved = Vec::new();
        for target in targets.iter().filter(|t| t.webhook().wants(name)) {
            match target.reserve() {
                Some(slot) => reserved.push((target.clone(), slot)),
                None => self.dropped(name, target.webhook().host()),
            }
        }
        if reserved.is_empty() {
            return;
        }
        let at = self.clock.now();
        let id: Arc<str> = format!("{:032x}", rand::random::<u128>()).into();
        let delivery = Delivery {
            event: name,
            body: event.body(&id, at).into(),
            id,
        };
        for (target, slot) in reserved {
            runtime.spawn(queue::deliver(
                target,
                delivery.clone(),
                self.options,
                self.metrics.clone(),
                slot,
                self.outstanding.enter(),
            ));
        }
    }

    /// Delivers a durable delivery from memory (its ledger could not be written): as without a
    /// ledger, to the webhook it was for if that is still configured.
    fn deliver_in_memory(&self, d: OutboxDelivery, outstanding: Outstanding) {
        let (Some(runtime), Some(event)) = (
            self.runtime.get(),
            EVENT_NAMES.iter().find(|n| **n == d.event),
        ) else {
            return;
        };
        let targets = self.targets.load();
        let Some(target) = targets.iter().find(|t| t.key == d.endpoint) else {
            return;
        };
        let Some(slot) = target.reserve() else {
            self.dropped(event, target.webhook().host());
            return;
        };
        runtime.spawn(queue::deliver(
            target.clone(),
            Delivery {
                event,
                id: d.id.into(),
                body: d.body.into(),
            },
            self.options,
            self.metrics.clone(),
            slot,
            outstanding,
        ));
    }

    fn dropped(&self, event: &'static str, host: &str) {
        self.metrics.webhook_delivery("dropped");
        self.dropped_unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let last = self.last_drop_warning.load(Ordering::Relaxed);
        if last != now
            && self
                .last_drop_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let count = self.dropped_unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(event, webhook = %host, dropped = count,
                max_pending = self.options.max_pending,
                "alert webhook queue full: deliveries dropped (is the webhook down?)");
        }
    }

    /// Replaces the webhooks (config reload). A webhook equal to a current one (same URL,
    /// secret and filter) keeps its queue; deliveries to a removed or changed one stop before
    /// their next attempt (counted as `dropped`). Events emitted from now on use the new list.
    pub fn set_webhooks(&self, webhooks: Vec<Webhook>) {
        if self.runtime.get().is_none() {
            match Handle::try_current() {
                Ok(handle) => {
                    let _ = self.runtime.set(handle);
                }
                Err(_) if webhooks.is_empty() => return,
                Err(_) => {
                    tracing::error!("alert webhooks set outside a tokio runtime: ignored");
                    return;
                }
            }
        }
        let old = self.targets.load_full();
        let mut new: Vec<Arc<Target>> = Vec::with_capacity(webhooks.len());
        for webhook in webhooks {
            if let Some(kept) = old.iter().find(|t| *t.webhook() == webhook) {
                if !new.iter().any(|t| Arc::ptr_eq(t, kept)) {
                    new.push(kept.clone());
                    continue;
                }
            }
            match Target::new(webhook, &self.options) {
                Ok(t) => new.push(Arc::new(t)),
                Err(e) => tracing::error!(error = %e, "alert webhook skipped"),
            }
        }
        for gone in old
            .iter()
            .filter(|t| !new.iter().any(|n| Arc::ptr_eq(n, t)))
        {
            gone.retire();
        }
        self.targets.store(Arc::new(new));
    }

    /// The webhooks events go to now.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.targets
            .load()
            .iter()
            .map(|t| t.webhook().clone())
            .collect()
    }

    /// Deliveries not finished yet (queued, in flight, or waiting to retry in memory; with a
    /// ledger: not yet written to its outbox, or being attempted — those waiting in the outbox
    /// are durable and not counted).
    pub fn pending(&self) -> usize {
        self.outstanding.count()
    }

    /// Waits until every delivery has finished (delivered, failed or dropped), but at most
    /// `within`; for graceful shutdown. True when none is left.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pending = self.pending(),
                    "alert deliveries still pending at shutdown"
                );
                return false;
            }
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(10)),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(events: &[&str]) -> Webhook {
        let filter = EventFilter::new(events.iter().map(|s| s.to_string()).collect()).unwrap();
        // Port 9 on loopback: nothing listens; no test here waits for a delivery.
        Webhook::new("http://127.0.0.1:9/hook", "s", filter).unwrap()
    }

    fn low() -> Event {
        Event::WalletLow {
            backend: "dev".into(),
            balance_msat: 1,
            threshold_msat: 2,
        }
    }

    #[test]
    fn disabled_counts_events_without_a_runtime() {
        let metrics = Arc::new(Metrics::new());
        let alerts = Alerts::disabled(metrics.clone());
        alerts.emit(low());
        alerts.emit(low());
        let text = metrics.render();
        assert!(
            text.contains("l402_proxy_alerts_total{event=\"wallet.low\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("l402_proxy_alerts_total{event=\"price.jump\"} 0"),
            "{text}"
        );
        for r in DELIVERY_RESULTS {
            assert!(
                text.contains(&format!(
                    "l402_proxy_webhook_deliveries_total{{result=\"{r}\"}} 0"
                )),
                "{text}"
            );
        }
        assert_eq!(alerts.pending(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let options = DeliveryOptions {
            max_pending: 3,
            base_delay: Duration::from_secs(60),
            ..DeliveryOptions::default()
        };
        let clock = Arc::new(crate::core::time::ManualClock::new(1_796_083_200));
        let alerts = Alerts::start_with(vec![hook(&["*"])], metrics.clone(), clock, options);
        for _ in 0..10 {
            alerts.emit(low());
        }
        assert_eq!(alerts.pending(), 3);
        assert!(metrics
            .render()
            .contains("l402_proxy_webhook_deliveries_total{result=\"dropped\"} 7"));
    }

    #[tokio::test]
    async fn unmatched_events_queue_nothing_and_reload_keeps_equal_webhooks() {
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(crate::core::time::ManualClock::new(0));
        let alerts = Alerts::start_with(
            vec![hook(&["budget.*"])],
            metrics.clone(),
            clock,
            DeliveryOptions::default(),
        );
        alerts.emit(low());
        assert_eq!(alerts.pending(), 0);
        let before = alerts.targets.load_full();
        alerts.set_webhooks(vec![hook(&["budget.*"]), hook(&["wallet.low"])]);
        let after = alerts.targets.load_full();
        assert!(Arc::ptr_eq(&before[0], &after[0]), "unchanged webhook kept");
        assert!(!after[0].is_retired());
        alerts.set_webhooks(Vec::new());
        assert!(after.iter().all(|t| t.is_retired()));
        assert!(alerts.webhooks().is_empty());
        assert!(alerts.flush(Duration::from_millis(10)).await);
    }
}
