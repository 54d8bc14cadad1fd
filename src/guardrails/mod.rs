//! Guardrails for autonomous spending, beside the budgets: human approval above a threshold,
//! rate limits, the price-jump guard, the operator's policy service (`policy_hook`), budget
//! threshold alerts, and the background watch over the wallet's balance, the store and payments
//! stuck in reconciliation.
//!
//! An agent with none of these limits set pays nothing for them on the request path (no lock,
//! no map entry, no store read); with `requests_per_minute` set, every request (cached-token
//! ones too) takes one token from an in-memory bucket, never the store.

pub mod approvals;
pub mod hook;
pub mod price;
pub mod rate;
pub mod stops;
pub mod thresholds;
pub mod watch;

use crate::alerts::Alerts;
use crate::config::Limits;
use crate::core::{Clock, Msat};
use crate::ledger::Ledger;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use approvals::{Approvals, DecideError, Hold};
pub use hook::PolicyHook;
pub use price::{PriceCheck, PriceGuard};
pub use rate::RateLimits;

/// The alerting settings that can change on reload.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    /// `alerts.budget_thresholds`, per cent, ascending.
    pub budget_thresholds: Vec<u32>,
    /// `alerts.wallet_low_sats`, in msat.
    pub wallet_low: Option<Msat>,
}

/// Every guardrail of this process.
pub struct Guardrails {
    /// Requests, payments and connections per minute / at once.
    pub rates: RateLimits,
    /// Payments held for the operator.
    pub approvals: Approvals,
    /// The last prices paid.
    pub prices: PriceGuard,
    /// Where events go.
    pub alerts: Arc<Alerts>,
    settings: ArcSwap<AlertSettings>,
    /// The operator's policy service, when `policy_hook` is configured.
    policy_hook: ArcSwapOption<PolicyHook>,
    /// The wallet's balance as last read (msat; `u64::MAX` until first read).
    balance: AtomicU64,
    /// Wakes the watcher to read the balance again (after a payment).
    balance_stale: tokio::sync::Notify,
}

impl Guardrails {
    /// Guardrails over `ledger`, alerting through `alerts`.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        alerts: Arc<Alerts>,
        approval_timeout_secs: u64,
        settings: AlertSettings,
    ) -> Guardrails {
        Guardrails {
            rates: RateLimits::new(clock.clone()),
            approvals: Approvals::new(ledger.clone(), clock, alerts.clone(), approval_timeout_secs),
            prices: PriceGuard::new(ledger),
            alerts,
            settings: ArcSwap::from_pointee(settings),
            policy_hook: ArcSwapOption::empty(),
            balance: AtomicU64::new(u64::MAX),
            balance_stale: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the alert settings (config reload).
    pub fn set_settings(&self, mut settings: AlertSettings) {
        settings.budget_thresholds.sort_unstable();
        settings.budget_thresholds.dedup();
        self.settings.store(Arc::new(settings));
    }

    /// The alert settings in force.
    pub fn settings(&self) -> Arc<AlertSettings> {
        self.settings.load_full()
    }

    /// Sets (or, with `None`, removes) the policy service payments are asked about.
    pub fn set_policy_hook(&self, hook: Option<PolicyHook>) {
        self.policy_hook.store(hook.map(Arc::new));
    }

    /// The policy service in force, if any.
    pub fn policy_hook(&self) -> Option<Arc<PolicyHook>> {
        self.policy_hook.load_full()
    }

    /// The wallet's balance as last read in the background, if it was.
    pub fn balance(&self) -> Option<Msat> {
        match self.balance.load(Ordering::Relaxed) {
            u64::MAX => None,
            b => Some(Msat::new(b)),
        }
    }

    pub(crate) fn set_balance(&self, balance: Msat) {
        self.balance
            .store(balance.get().min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// Asks the watcher to read the balance again soon (a payment moved it).
    pub fn balance_moved(&self) {
        self.balance_stale.notify_one();
    }

    pub(crate) async fn balance_stale(&self) {
        self.balance_stale.notified().await
    }
}

/// The approval threshold that applies: the lower of the agent's and the operator's.
pub fn approve_above(agent: &Limits, operator: &Limits) -> Option<crate::core::Sats> {
    match (agent.approve_above_sats, operator.approve_above_sats) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The price-jump limit that applies: the agent's own, else the operator's.
pub fn max_price_increase(agent: &Limits, operator: &Limits) -> Option<u32> {
    agent
        .max_price_increase_pct
        .or(operator.max_price_increase_pct)
}
