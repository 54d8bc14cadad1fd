//! Payments whose outcome is not known yet — a wallet timeout, or rows left pending by a crash —
//! keep their budget reserved and their hash claimed until the wallet says how they ended. At
//! start, the ledger is read back: spend into the budget windows, operator totals, pending rows
//! into this set, and the tokens still good into the cache.

use super::engine::{Engine, HashState};
use super::payment::TokenSpec;
use crate::budget::{Reservation, Window};
use crate::money::{Msat, Preimage};
use crate::store::{PaymentRow, StoreError};
use crate::wallet::PaymentStatus;
use std::sync::Arc;
use std::time::Duration;

/// A payment that may still settle.
#[derive(Debug)]
pub(super) struct InFlight {
    pub reservation: Reservation,
    pub spec: TokenSpec,
    pub amount: Msat,
    /// When the payment was handed to the wallet (unix seconds, the budget's clock).
    pub since: i64,
}

/// Tokens are restored from payments this recent.
const TOKEN_RESTORE_WINDOW_SECS: i64 = 30 * 86_400;

/// What `restore` found in the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub settled_in_windows: usize,
    pub pending: usize,
    pub tokens: usize,
    /// Pending payments still unresolved after the first reconcile pass.
    pub still_in_flight: usize,
}

fn spec_from(row: &PaymentRow) -> Option<TokenSpec> {
    Some(TokenSpec {
        agent: Arc::from(row.agent.as_str()),
        origin: row.origin.clone(),
        token: row.token.clone(),
        services: row.services.clone(),
        expiry: row.token_expires_at,
        scope: row.scope.clone(),
        hash: row.hash()?,
    })
}

impl Engine {
    pub(super) fn track(&self, payment: InFlight) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(payment.spec.hash, payment);
    }

    fn unknown_long_enough(&self, hash: &crate::money::PaymentHash) -> bool {
        let since = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .map(|p| p.since);
        since.is_none_or(|since| self.budget.now() - since >= self.timeout.as_secs() as i64)
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Asks the wallet once about every payment in flight; settles or releases what it can.
    /// Returns how many are still unresolved.
    pub async fn reconcile(&self) -> usize {
        let hashes: Vec<_> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for hash in hashes {
            let status = match self.wallet.lookup(&hash).await {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(hash = %hash.short(), error = %e, "lookup failed; will retry");
                    continue;
                }
            };
            let settled = match &status {
                PaymentStatus::InFlight => continue,
                PaymentStatus::Succeeded(paid) => Some(*paid),
                PaymentStatus::Failed(_) => None,
                // "No record" proves the payment never left only once it has had its whole
                // timeout to show up: a backend may not list a payment it is still starting, and
                // concluding too early would free the hash to be paid a second time.
                PaymentStatus::Unknown if !self.unknown_long_enough(&hash) => continue,
                PaymentStatus::Unknown => None,
            };
            let Some(payment) = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&hash)
            else {
                continue;
            };
            let now = self.budget.now();
            match settled {
                Some(paid) => {
                    tracing::info!(hash = %hash.short(), "in-flight payment settled");
                    if let Err(e) = self
                        .store
                        .settle(hash, paid.fee, paid.preimage.to_hex(), now)
                        .await
                    {
                        tracing::error!(hash = %hash.short(), error = %e, "could not record a settled payment");
                    }
                    self.budget
                        .commit(payment.reservation, payment.amount.saturating_add(paid.fee));
                    self.hashes.insert(hash, HashState::Paid(paid));
                    self.metrics.payment("succeeded", self.wallet.backend());
                    self.metrics
                        .paid(&payment.spec.agent, payment.amount.0, paid.fee.0);
                    if let Err(d) = payment.spec.install(self, &paid.preimage) {
                        tracing::warn!(hash = %hash.short(), reason = %d, "settled, but its token is unusable");
                    }
                }
                None => {
                    let reason = match status {
                        PaymentStatus::Failed(r) => r,
                        _ => "the wallet has no record of it: it never left".to_string(),
                    };
                    tracing::info!(hash = %hash.short(), %reason, "in-flight payment failed; budget released");
                    self.metrics.payment("failed", self.wallet.backend());
                    if let Err(e) = self.store.fail(hash, reason, now).await {
                        tracing::error!(hash = %hash.short(), error = %e, "could not record a failed payment");
                    }
                    self.budget.release(payment.reservation);
                    self.hashes.remove(&hash);
                }
            }
        }
        self.in_flight_count()
    }

    /// Reads the ledger back at start, then runs one reconcile pass, before any new payment.
    pub async fn restore(&self) -> Result<RestoreReport, StoreError> {
        let now = self.budget.now();
        let mut report = RestoreReport::default();
        for (agent, total) in self.store.totals().await? {
            self.budget.set_total(&Arc::from(agent.as_str()), total);
        }
        let since = Window::Week.start(now).min(Window::Month.start(now));
        let (recent, older) = self.store.spend(since).await?;
        for row in &recent {
            let _settled = self
                .budget
                .restore(&row.agent, row.created_at, row.charged());
        }
        report.settled_in_windows = recent.len();
        for (agent, msat) in older {
            let _settled = self.budget.restore(&agent, since - 1, Msat(msat));
        }
        for row in self.store.pending().await? {
            let Some(spec) = spec_from(&row) else {
                continue;
            };
            let reservation = self
                .budget
                .restore(&row.agent, row.created_at, row.charged());
            self.hashes.insert(spec.hash, HashState::Pending);
            self.track(InFlight {
                reservation,
                spec,
                amount: Msat(row.amount_msat),
                since: row.created_at,
            });
            report.pending += 1;
        }
        let unix_now = now.max(0) as u64;
        for row in self
            .store
            .live_tokens(unix_now, now - TOKEN_RESTORE_WINDOW_SECS)
            .await?
        {
            let (Some(spec), Some(preimage)) = (spec_from(&row), row.preimage.as_deref()) else {
                continue;
            };
            let Ok(preimage) = Preimage::verify_hex(preimage, &spec.hash) else {
                tracing::warn!(hash = %spec.hash.short(), "ledger preimage does not match its hash; token skipped");
                continue;
            };
            if spec.install(self, &preimage).is_ok() {
                report.tokens += 1;
            }
        }
        report.still_in_flight = self.reconcile().await;
        Ok(report)
    }

    /// Keeps resolving in-flight payments in the background.
    pub fn spawn_reconciler(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if engine.in_flight_count() > 0 {
                    engine.reconcile().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{hash_key, Agents};
    use crate::budget::Budget;
    use crate::clock::ManualClock;
    use crate::config::{AgentConfig, HostRules, Limits};
    use crate::invoice::Network;
    use crate::l402::engine::EngineParts;
    use crate::metrics::Metrics;
    use crate::money::PaymentHash;
    use crate::store::{NewPayment, Store};
    use crate::wallet::dev::DevWallet;

    const T: i64 = 1_795_269_910;

    #[tokio::test]
    async fn a_wallet_with_no_record_frees_the_payment_only_after_its_timeout() {
        let path =
            std::env::temp_dir().join(format!("l402-reconcile-{}.db", rand::random::<u64>()));
        let store = Store::open(&path).unwrap();
        let hash = PaymentHash([5; 32]);
        // Left pending by a crash; the (in-memory) dev wallet has no record of it.
        store
            .begin(NewPayment {
                hash,
                agent: "a".into(),
                host: "h".into(),
                origin: "https://h:443".into(),
                amount: Msat(10_000),
                fee_reserve: Msat(1_000),
                bolt11: "lnbcrt…".into(),
                token: "tok".into(),
                services: None,
                scope: "/".into(),
                token_expires_at: None,
                created_at: T,
            })
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(T + 10));
        let engine = Engine::new(EngineParts {
            wallet: Arc::new(DevWallet::new("s", Msat(0), Msat(0), Duration::ZERO)),
            network: Network::Regtest,
            max_fee: Msat(1_000),
            timeout: Duration::from_secs(60),
            budget: Arc::new(Budget::new(clock.clone(), Limits::default())),
            store: store.clone(),
            metrics: Arc::new(Metrics::new()),
        });
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            key_sha256: hash_key("k"),
            limits: Limits::default(),
            hosts: HostRules::default(),
        }]);
        let agent = agents.get("a").unwrap();
        let report = engine.restore().await.unwrap();
        assert_eq!(
            report.still_in_flight, 1,
            "unknown for 10 s of a 60 s timeout: still held"
        );
        assert_eq!(engine.budget.view(agent).spent_msat.total, Some(11_000));
        clock.set(T + 61);
        assert_eq!(engine.reconcile().await, 0);
        assert_eq!(
            engine.budget.view(agent).spent_msat.total,
            Some(0),
            "released"
        );
        assert!(
            store.pending().await.unwrap().is_empty(),
            "recorded as failed"
        );
        let _ = std::fs::remove_file(path);
    }
}
