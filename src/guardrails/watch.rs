//! The background watch: the wallet's balance (the `l402_proxy_wallet_balance_msat` gauge, the
//! status page, the `wallet.low` alert), the store going away and coming back, and payments
//! stuck unresolved. Never on the request path: a payment only nudges it to look again.

use super::Guardrails;
use crate::alerts::Event;
use crate::core::Clock;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::wallet::Wallet;
use std::sync::Arc;
use std::time::Duration;

/// How often each thing is looked at.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// The wallet's balance (also soon after each payment).
    pub balance: Duration,
    /// Whether the store answers.
    pub store: Duration,
    /// Pending payments older than `stuck_after`.
    pub stuck: Duration,
    /// How long a payment may stay unresolved before it is announced as stuck.
    pub stuck_after: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            balance: Duration::from_secs(30),
            store: Duration::from_secs(1),
            stuck: Duration::from_secs(30),
            stuck_after: Duration::from_secs(300),
        }
    }
}

/// What the watch looks through.
pub struct Watched {
    /// The guardrails (alerts, settings, the balance cell).
    pub guardrails: Arc<Guardrails>,
    /// The operator's wallet.
    pub wallet: Arc<dyn Wallet>,
    /// The ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The gauges.
    pub metrics: Arc<Metrics>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
}

/// The longest a balance read may take.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the watch until the task is dropped.
pub fn spawn(w: Watched, every: Intervals) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut balance_tick = tokio::time::interval(every.balance);
        let mut store_tick = tokio::time::interval(every.store);
        let mut stuck_tick = tokio::time::interval(every.stuck);
        for t in [&mut balance_tick, &mut store_tick, &mut stuck_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut low = false;
        let mut store_up = true;
        loop {
            tokio::select! {
                _ = balance_tick.tick() => read_balance(&w, &mut low).await,
                _ = w.guardrails.balance_stale() => {
                    // Let the wallet's own books catch up with the payment first.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    read_balance(&w, &mut low).await;
                    balance_tick.reset();
                }
                _ = store_tick.tick() => watch_store(&w, &mut store_up),
                _ = stuck_tick.tick() => stuck_payments(&w, every.stuck_after).await,
            }
        }
    })
}

async fn read_balance(w: &Watched, low: &mut bool) {
    let balance = match tokio::time::timeout(BALANCE_TIMEOUT, w.wallet.balance()).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "the wallet's balance is unknown");
            return;
        }
        Err(_) => {
            tracing::debug!("the wallet did not report its balance in time");
            return;
        }
    };
    w.guardrails.set_balance(balance);
    w.metrics
        .wallet_balance_msat
        .set(i64::try_from(balance.get()).unwrap_or(i64::MAX));
    let Some(threshold) = w.guardrails.settings().wallet_low else {
        return;
    };
    // Once per crossing: announced when it falls below, re-armed when it is topped up.
    if balance < threshold && !*low {
        *low = true;
        tracing::warn!(balance = %balance, threshold = %threshold, "the wallet's balance is low");
        w.guardrails.alerts.emit(Event::WalletLow {
            backend: w.wallet.backend().to_string(),
            balance_msat: balance.get(),
            threshold_msat: threshold.get(),
        });
    } else if balance >= threshold {
        *low = false;
    }
}

fn watch_store(w: &Watched, up: &mut bool) {
    let now_up = w.ledger.available();
    if now_up == *up {
        return;
    }
    *up = now_up;
    let backend = w.ledger.backend().to_string();
    w.guardrails.alerts.emit(if now_up {
        Event::StoreRecovered { backend }
    } else {
        Event::StoreUnavailable {
            backend,
            reason: "the store does not answer: new payments are refused (store-unavailable)"
                .to_string(),
        }
    });
}

async fn stuck_payments(w: &Watched, after: Duration) {
    let Ok(rows) = w.ledger.unresolved().await else {
        return;
    };
    let now = w.clock.now();
    let cutoff = now - after.as_secs() as i64;
    for row in rows.iter().filter(|r| r.created_at <= cutoff) {
        let key = format!("stuck:{}", row.hash.to_hex());
        if let Ok(true) = w.ledger.claim_alert(&key, now).await {
            tracing::warn!(hash = %row.hash.short(), agent = %row.agent, since = row.created_at, "a payment is stuck unresolved");
            w.guardrails.alerts.emit(Event::PaymentStuck {
                agent: row.agent.clone(),
                host: row.host.clone(),
                amount_msat: row.amount.get(),
                payment_hash: row.hash.to_hex(),
                pending_since: row.created_at,
            });
        }
    }
}
