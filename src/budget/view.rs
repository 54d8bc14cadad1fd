//! One agent's budget as the admin API, the dashboard and the agent's own `/balance` show it:
//! its limits and where each comes from, and spent and remaining per window and in total.

use crate::config::Limits;
use crate::core::decline::{Period, Whose};
use crate::core::window::Window;
use crate::core::{Decline, Msat, Sats};
use serde::Serialize;

/// Where a limit's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitSource {
    /// The config file (or the agent's stored definition).
    Config,
    /// An operator's change through the admin API (top-up, recall).
    Admin,
}

/// Spent and remaining for one agent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BudgetView {
    /// The agent's name.
    pub agent: String,
    /// The limits in force, in sats: the config's, with the total an operator's override
    /// (top-up, recall) when there is one.
    pub limits: Limits,
    /// Where each limit comes from (only limits that are set are listed).
    pub limit_sources: LimitSources,
    /// Spent (settled plus reserved by pending payments) per window and in total, exact
    /// whether or not the window has a limit.
    pub spent_msat: WindowAmounts,
    /// What remains under each configured limit; absent where there is no limit.
    pub remaining_msat: WindowAmounts,
    /// The largest invoice the agent can pay now: the tightest remaining amount less the fee
    /// reserve every payment holds, capped by `per_request_sats`; absent with no limit at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spendable_msat: Option<u64>,
    /// Each cap per seller (`limits.sellers`, in order): spent and remaining under it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sellers: Vec<SellerView>,
}

/// Spent and remaining under one cap per seller.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SellerView {
    /// The rule's host globs.
    pub hosts: Vec<String>,
    /// Its caps in sats (the window and total keys it sets).
    pub limits: Limits,
    /// Spent under it (settled plus reserved by pending payments), per window and in total.
    pub spent_msat: WindowAmounts,
    /// What remains under each cap it sets.
    pub remaining_msat: WindowAmounts,
}

impl SellerView {
    /// The view of `cap` with `used` spent under it.
    pub fn new(cap: &crate::config::SellerCap, windows: [Msat; 4], total: Msat) -> SellerView {
        let limits = cap.limits();
        let base = BudgetView::new("", &limits, None, windows, total);
        SellerView {
            hosts: cap.hosts.clone(),
            limits,
            spent_msat: base.spent_msat,
            remaining_msat: base.remaining_msat,
        }
    }
}

/// Where each set limit comes from.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LimitSources {
    /// Where `per_request_sats` comes from; absent when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request_sats: Option<LimitSource>,
    /// Where `hourly_sats` comes from; absent when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_sats: Option<LimitSource>,
    /// Where `daily_sats` comes from; absent when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_sats: Option<LimitSource>,
    /// Where `weekly_sats` comes from; absent when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly_sats: Option<LimitSource>,
    /// Where `monthly_sats` comes from; absent when it is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_sats: Option<LimitSource>,
    /// Where `total_sats` comes from: `admin` while an operator's override is in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sats: Option<LimitSource>,
}

/// An amount per window and in total, in msat.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WindowAmounts {
    /// In the current calendar hour (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u64>,
    /// In the current calendar day (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// In the current week (UTC, from Monday).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u64>,
    /// In the current calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
    /// Over the agent's whole life (the `total_sats` budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl WindowAmounts {
    fn set(&mut self, w: Window, v: Option<u64>) {
        match w {
            Window::Hour => self.hourly = v,
            Window::Day => self.daily = v,
            Window::Week => self.weekly = v,
            Window::Month => self.monthly = v,
        }
    }

    /// The tightest remaining amount, if any limit applies.
    pub fn tightest(&self) -> Option<u64> {
        [
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.total,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl BudgetView {
    /// The view of `agent` under `limits`, with the operator's total override if any, given the
    /// spend in the current hour, day, week and month and in total.
    pub fn new(
        agent: &str,
        limits: &Limits,
        total_override: Option<Msat>,
        window_spent: [Msat; 4],
        total_spent: Msat,
    ) -> BudgetView {
        let mut spent = WindowAmounts::default();
        let mut remaining = WindowAmounts::default();
        for (w, used) in Window::ALL.into_iter().zip(window_spent) {
            spent.set(w, Some(used.get()));
            remaining.set(
                w,
                super::limit_for(limits, w).map(|limit| limit.saturating_sub(used).get()),
            );
        }
        let total_limit = total_override.or(limits.total_sats.map(Sats::msat));
        spent.total = Some(total_spent.get());
        remaining.total = total_limit.map(|limit| limit.saturating_sub(total_spent).get());
        let from_config = |v: Option<Sats>| v.map(|_| LimitSource::Config);
        BudgetView {
            agent: agent.to_string(),
            limits: Limits {
                total_sats: total_override
                    .map(|m| Sats::new(m.get() / 1000))
                    .or(limits.total_sats),
                ..limits.clone()
            },
            limit_sources: LimitSources {
                per_request_sats: from_config(limits.per_request_sats),
                hourly_sats: from_config(limits.hourly_sats),
                daily_sats: from_config(limits.daily_sats),
                weekly_sats: from_config(limits.weekly_sats),
                monthly_sats: from_config(limits.monthly_sats),
                total_sats: match total_override {
                    Some(_) => Some(LimitSource::Admin),
                    None => from_config(limits.total_sats),
                },
            },
            spent_msat: spent,
            remaining_msat: remaining,
            spendable_msat: None,
            sellers: Vec::new(),
        }
    }

    /// This view with the caps per seller and what was spent under each.
    pub fn with_sellers(mut self, sellers: Vec<SellerView>) -> BudgetView {
        self.sellers = sellers;
        self
    }

    /// The decline a reservation of `needed` would meet under this view's limits — the first
    /// it would pass, in the money rule's order (hour, day, week, month, total) — for a check
    /// before anything is reserved (an approval not worth asking, a quote). The reservation
    /// itself decides atomically ([`crate::budget::rules`]).
    pub fn first_passed(&self, needed: Msat, whose: Whose) -> Option<Decline> {
        let (r, s, l) = (&self.remaining_msat, &self.spent_msat, &self.limits);
        [
            (
                r.hourly,
                s.hourly,
                l.hourly_sats,
                Period::Window(Window::Hour),
            ),
            (r.daily, s.daily, l.daily_sats, Period::Window(Window::Day)),
            (
                r.weekly,
                s.weekly,
                l.weekly_sats,
                Period::Window(Window::Week),
            ),
            (
                r.monthly,
                s.monthly,
                l.monthly_sats,
                Period::Window(Window::Month),
            ),
            (r.total, s.total, l.total_sats, Period::Total),
        ]
        .into_iter()
        .filter_map(|(left, spent, limit, period)| {
            let (left, limit) = (left?, limit?);
            (needed.get() > left).then(|| Decline::OverLimit {
                whose,
                period,
                used: Msat::new(spent.unwrap_or(0)),
                amount: needed,
                limit: limit.msat(),
            })
        })
        .next()
    }

    /// [`BudgetView::first_passed`] for the cap per seller a payment to `host` counts against
    /// (the first rule whose hosts match it): the decline its reservation would meet there.
    pub fn first_passed_at(&self, host: &str, needed: Msat, whose: Whose) -> Option<Decline> {
        let seller = self.sellers.iter().find(|s| {
            crate::config::SellerCap {
                hosts: s.hosts.clone(),
                ..Default::default()
            }
            .matches(host)
        })?;
        let as_budget = BudgetView {
            agent: self.agent.clone(),
            limits: seller.limits.clone(),
            limit_sources: LimitSources::default(),
            spent_msat: seller.spent_msat.clone(),
            remaining_msat: seller.remaining_msat.clone(),
            spendable_msat: None,
            sellers: Vec::new(),
        };
        match as_budget.first_passed(needed, whose)? {
            Decline::OverLimit {
                whose,
                period,
                used,
                amount,
                limit,
            } => Some(Decline::OverSellerLimit {
                whose,
                period,
                hosts: seller.hosts.join(","),
                used,
                amount,
                limit,
            }),
            other => Some(other),
        }
    }

    /// The view with `spendable_msat` computed for a fee reserve of `reserve` per payment.
    pub fn with_fee_reserve(mut self, reserve: Msat) -> BudgetView {
        let by_windows = self
            .remaining_msat
            .tightest()
            .map(|left| left.saturating_sub(reserve.get()));
        let per_request = self.limits.per_request_sats.map(|s| s.msat().get());
        self.spendable_msat = match (by_windows, per_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}
