//! In-process budget accounting: what each agent (and all agents together) has spent or holds
//! reserved, per calendar window and in total. The embedded (SQLite) ledger keeps its money
//! authority here, in one critical section; the shared (PostgreSQL) ledger keeps the same
//! numbers in the database. Both obey one rule: a payment reserves amount + fee reserve against
//! every limit atomically before it leaves, and is then committed at the real fee or released.
//! Pending reservations count, so no interleaving of concurrent payments can pass a limit.
//!
//! Every window's spend is kept exactly, limited or not, so a limit added later (by a reload)
//! sees the spend earlier in its window, and views show true figures.

mod buckets;
pub mod rules;
pub mod view;

use crate::config::limits::{MAX_SPIKE_WINDOW_SECS, SPIKE_BASELINE_HOURS};
use crate::config::Limits;
use crate::core::decline::Whose;
use crate::core::window::Window;
use crate::core::{Clock, Decline, Msat, Sats};
use buckets::Buckets;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
pub use view::{BudgetView, LimitSource, SellerView, WindowAmounts};

/// Spend recorded against one agent (or the operator), per window and in total.
#[derive(Debug, Default, Clone)]
struct Usage {
    /// (window start, msat used in it) for hour, day, week, month.
    windows: [(i64, u64); 4],
    total: u64,
    /// Per minute, for the spend-spike breaker's window: the last [`MAX_SPIKE_WINDOW_SECS`].
    minutes: Buckets,
    /// Per hour, for the breaker's usual rate: the last [`SPIKE_BASELINE_HOURS`] and this one.
    hours: Buckets,
}

impl Usage {
    /// Rolls every window over to the one current at `now` (a window that rolled over starts
    /// from zero).
    fn refresh(&mut self, now: i64) {
        for w in Window::ALL {
            let slot = &mut self.windows[w as usize];
            let start = w.start(now);
            if slot.0 != start {
                *slot = (start, 0);
            }
        }
    }

    /// Used msat in window `w`; call [`Usage::refresh`] first.
    fn used(&self, w: Window) -> u64 {
        self.windows[w as usize].1
    }

    /// Used in the hour, day, week and month (in [`Window::ALL`] order); refresh first.
    fn windows(&self) -> [Msat; 4] {
        Window::ALL.map(|w| Msat::new(self.used(w)))
    }

    /// What the money rule reads: used per window and in total; refresh first.
    fn used_now(&self) -> rules::Used {
        rules::Used {
            windows: self.windows(),
            total: Msat::new(self.total),
        }
    }

    /// Adds to each window whose start is `starts` (the windows current when the spend was
    /// reserved; a window that has since rolled over is left alone) and to the total.
    fn add(&mut self, starts: &[i64; 4], msat: u64) {
        for (slot, start) in self.windows.iter_mut().zip(starts) {
            if slot.0 == *start {
                slot.1 = slot.1.saturating_add(msat);
            }
        }
        self.total = self.total.saturating_add(msat);
    }

    /// Adds `msat` spent at `at` to the breaker's minute and hour (kept only while a breaker
    /// can read them).
    fn add_recent(&mut self, at: i64, msat: u64, now: i64) {
        self.minutes.add(
            Buckets::start(at, 60),
            msat,
            now,
            i64::from(MAX_SPIKE_WINDOW_SECS),
        );
        self.hours.add(
            Buckets::start(at, 3600),
            msat,
            now,
            (SPIKE_BASELINE_HOURS + 1) * 3600,
        );
    }

    /// Takes `msat` spent at `at` back from the breaker's minute and hour.
    fn sub_recent(&mut self, at: i64, msat: u64) {
        self.minutes.sub(Buckets::start(at, 60), msat);
        self.hours.sub(Buckets::start(at, 3600), msat);
    }

    /// Used in the minutes from `since` on.
    fn recent(&self, since: i64) -> Msat {
        self.minutes.sum(since, i64::MAX)
    }

    /// Used in the last [`SPIKE_BASELINE_HOURS`] whole hours before `now`'s.
    fn usual(&self, now: i64) -> Msat {
        let (from, until) = rules::usual_hours(now);
        self.hours.sum(from, until)
    }

    fn sub(&mut self, starts: &[i64; 4], msat: u64) {
        for (slot, start) in self.windows.iter_mut().zip(starts) {
            if slot.0 == *start {
                slot.1 = slot.1.saturating_sub(msat);
            }
        }
        self.total = self.total.saturating_sub(msat);
    }
}

/// The window limit of `limits` for `w`, in msat.
pub fn limit_for(limits: &Limits, w: Window) -> Option<Msat> {
    match w {
        Window::Hour => limits.hourly_sats,
        Window::Day => limits.daily_sats,
        Window::Week => limits.weekly_sats,
        Window::Month => limits.monthly_sats,
    }
    .map(Sats::msat)
}

/// Budget held for one payment until it settles or fails.
#[derive(Debug)]
#[must_use = "a reservation must be committed or released"]
pub struct Reservation {
    agent: Arc<str>,
    amount: Msat,
    starts: [i64; 4],
    /// When it was reserved (the breakers count it in that minute and hour).
    at: i64,
    /// The caps per seller it counts under, by owner key.
    sellers: Vec<Arc<str>>,
}

impl Reservation {
    /// What is held: amount + fee reserve.
    pub fn amount(&self) -> Msat {
        self.amount
    }

    /// The owner keys of the caps per seller it counts under (stored with the payment, so a
    /// restart counts it under the same caps).
    pub fn sellers(&self) -> Vec<String> {
        self.sellers.iter().map(|s| s.to_string()).collect()
    }
}

/// The key a cap per seller's spend is kept under: the agent's (`<agent> US <hosts>`), or,
/// without an agent, the operator's over all agents (`US <hosts>`). Agent names cannot hold
/// the unit separator, so the keys of different owners never meet.
pub fn seller_owner(agent: Option<&str>, cap: &crate::config::SellerCap) -> String {
    format!("{}\u{1f}{}", agent.unwrap_or(""), cap.key())
}

/// The caps per seller a payment of `agent` to `host` counts against: the first of the agent's
/// rules matching the host, then the first of the operator's, each with its owner key.
pub fn seller_caps<'a>(
    agent: &str,
    host: &str,
    limits: &'a Limits,
    operator: &'a Limits,
) -> Vec<(Whose, String, &'a crate::config::SellerCap)> {
    let mut out = Vec::new();
    if let Some(cap) = limits.seller_cap(host) {
        out.push((Whose::Agent, seller_owner(Some(agent), cap), cap));
    }
    if let Some(cap) = operator.seller_cap(host) {
        out.push((Whose::Operator, seller_owner(None, cap), cap));
    }
    out
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<Arc<str>, Usage>,
    operator: Usage,
    /// Spend under each cap per seller, by its owner key ([`seller_owner`]).
    sellers: HashMap<Arc<str>, Usage>,
    /// Operator-set totals (admin top-up / recall), overriding the config's `total_sats`.
    totals: HashMap<Arc<str>, Msat>,
}

/// The in-process money authority of one proxy process.
pub struct Budget {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Budget {
    /// Empty accounts, on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Budget {
        Budget {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// The clock windows are computed on.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `amount` (invoice amount plus the fee reserve) against every limit of the agent
    /// and of the operator, atomically; refuses with the first limit it would pass.
    pub fn reserve(
        &self,
        agent: &Arc<str>,
        limits: &Limits,
        operator: &Limits,
        amount: Msat,
    ) -> Result<Reservation, Decline> {
        self.reserve_at(agent, "", limits, operator, amount)
    }

    /// [`Budget::reserve`] for a payment to `host`, which also counts against the caps per
    /// seller matching it (checked after every other limit, before the breakers).
    pub fn reserve_at(
        &self,
        agent: &Arc<str>,
        host: &str,
        limits: &Limits,
        operator: &Limits,
        amount: Msat,
    ) -> Result<Reservation, Decline> {
        let now = self.clock.now();
        let mut guard = self.state();
        let total_override = guard.totals.get(&**agent).copied();
        let state = &mut *guard;
        let usage = state.agents.entry(agent.clone()).or_default();
        usage.refresh(now);
        state.operator.refresh(now);
        rules::decide(
            &rules::Owner::agent(limits, total_override, usage.used_now()),
            &rules::Owner::operator(operator, state.operator.used_now()),
            amount,
        )?;
        let caps = if host.is_empty() {
            Vec::new()
        } else {
            seller_caps(agent, host, limits, operator)
        };
        let mut sides = Vec::with_capacity(caps.len());
        for (whose, owner, cap) in &caps {
            let used = state.sellers.entry(Arc::from(owner.as_str())).or_default();
            used.refresh(now);
            sides.push(rules::SellerSide {
                whose: *whose,
                cap,
                used: used.used_now(),
            });
        }
        rules::decide_sellers(&sides, amount)?;
        let usage = state.agents.entry(agent.clone()).or_default();
        // The breakers, once the limits allowed it.
        if let Some(spike) = limits.spike() {
            let recent = usage.recent(rules::spike_since(now, spike.window_secs));
            rules::spike(Whose::Agent, limits, recent, usage.usual(now), amount)?;
        }
        if let Some(spike) = operator.spike() {
            let recent = state
                .operator
                .recent(rules::spike_since(now, spike.window_secs));
            let usual = state.operator.usual(now);
            rules::spike(Whose::Operator, operator, recent, usual, amount)?;
        }
        let starts = Window::ALL.map(|w| w.start(now));
        usage.add(&starts, amount.get());
        usage.add_recent(now, amount.get(), now);
        state.operator.add(&starts, amount.get());
        state.operator.add_recent(now, amount.get(), now);
        let mut sellers = Vec::with_capacity(caps.len());
        for (_, owner, _) in caps {
            let owner: Arc<str> = Arc::from(owner);
            if let Some(u) = state.sellers.get_mut(&owner) {
                u.add(&starts, amount.get());
            }
            sellers.push(owner);
        }
        Ok(Reservation {
            agent: agent.clone(),
            amount,
            starts,
            at: now,
            sellers,
        })
    }

    /// Settles a reservation at what was really spent (amount + actual fee). Money that moved is
    /// counted even if it exceeds the reservation.
    pub fn commit(&self, reservation: Reservation, spent: Msat) {
        let now = self.clock.now();
        let mut state = self.state();
        let state = &mut *state;
        let usage = state.agents.entry(reservation.agent.clone()).or_default();
        usage.refresh(now);
        usage.sub(&reservation.starts, reservation.amount.get());
        usage.add(&reservation.starts, spent.get());
        usage.sub_recent(reservation.at, reservation.amount.get());
        usage.add_recent(reservation.at, spent.get(), now);
        state.operator.refresh(now);
        state
            .operator
            .sub(&reservation.starts, reservation.amount.get());
        state.operator.add(&reservation.starts, spent.get());
        state
            .operator
            .sub_recent(reservation.at, reservation.amount.get());
        state.operator.add_recent(reservation.at, spent.get(), now);
        for owner in &reservation.sellers {
            let u = state.sellers.entry(owner.clone()).or_default();
            u.refresh(now);
            u.sub(&reservation.starts, reservation.amount.get());
            u.add(&reservation.starts, spent.get());
        }
    }

    /// Gives a reservation back: the payment did not happen.
    pub fn release(&self, reservation: Reservation) {
        self.commit(reservation, Msat::ZERO);
    }

    /// Re-applies spend found in the ledger at start: `msat` spent (or reserved, when pending)
    /// at `created_at`, counted in the windows still current.
    pub fn restore(&self, agent: &str, created_at: i64, msat: Msat) -> Reservation {
        self.restore_with(agent, &[], created_at, msat)
    }

    /// [`Budget::restore`] for a payment that also counts under the caps per seller `sellers`
    /// (the owner keys it was reserved under).
    pub fn restore_with(
        &self,
        agent: &str,
        sellers: &[String],
        created_at: i64,
        msat: Msat,
    ) -> Reservation {
        let now = self.clock.now();
        let mut state = self.state();
        let state = &mut *state;
        let agent: Arc<str> = Arc::from(agent);
        let usage = state.agents.entry(agent.clone()).or_default();
        usage.refresh(now);
        state.operator.refresh(now);
        let starts = Window::ALL.map(|w| w.start(created_at));
        usage.add(&starts, msat.get());
        usage.add_recent(created_at, msat.get(), now);
        state.operator.add(&starts, msat.get());
        state.operator.add_recent(created_at, msat.get(), now);
        let sellers: Vec<Arc<str>> = sellers.iter().map(|s| Arc::from(s.as_str())).collect();
        for owner in &sellers {
            let u = state.sellers.entry(owner.clone()).or_default();
            u.refresh(now);
            u.add(&starts, msat.get());
        }
        Reservation {
            agent,
            amount: msat,
            starts,
            at: created_at,
            sellers,
        }
    }

    /// Re-applies, at start, spend settled long ago (before every window) under the caps per
    /// seller `sellers`: their totals only (the agent's own total is restored apart).
    pub fn restore_sellers(&self, sellers: &[String], msat: Msat) {
        let now = self.clock.now();
        let mut state = self.state();
        for owner in sellers {
            let u = state.sellers.entry(Arc::from(owner.as_str())).or_default();
            u.refresh(now);
            u.total = u.total.saturating_add(msat.get());
        }
    }

    /// What has been spent under one cap per seller (its owner key), per window and in total.
    pub fn seller_used(&self, owner: &str) -> rules::Used {
        let now = self.clock.now();
        let mut state = self.state();
        let u = state.sellers.entry(Arc::from(owner)).or_default();
        u.refresh(now);
        u.used_now()
    }

    /// Starts the spend-spike breaker's count afresh for `agent` (or, with `None`, for the
    /// operator over all agents): the operator resumed after a trip, so the spend that tripped
    /// it no longer counts. The window totals are untouched.
    pub fn restart_breaker(&self, agent: Option<&str>) {
        let mut state = self.state();
        let usage = match agent {
            Some(a) => state.agents.get_mut(a),
            None => Some(&mut state.operator),
        };
        if let Some(usage) = usage {
            usage.minutes.clear();
        }
    }

    /// Sets (or, with `None`, clears) the operator's override of an agent's total limit.
    pub fn set_total(&self, agent: &str, total: Option<Msat>) {
        let mut state = self.state();
        match total {
            Some(t) => {
                state.totals.insert(Arc::from(agent), t);
            }
            None => {
                state.totals.remove(agent);
            }
        }
    }

    /// The operator's override of an agent's total, if any.
    pub fn total_override(&self, agent: &str) -> Option<Msat> {
        self.state().totals.get(agent).copied()
    }

    /// Spent and remaining for one agent under `limits`.
    pub fn view(&self, agent: &str, limits: &Limits) -> BudgetView {
        let now = self.clock.now();
        let view = {
            let mut state = self.state();
            let over = state.totals.get(agent).copied();
            let usage = state.agents.entry(Arc::from(agent)).or_default();
            usage.refresh(now);
            BudgetView::new(agent, limits, over, usage.windows(), Msat::new(usage.total))
        };
        view.with_sellers(self.seller_views(Some(agent), limits))
    }

    /// The operator's spend over all agents under the operator's `limits` (named `""`).
    pub fn operator_view(&self, limits: &Limits) -> BudgetView {
        let now = self.clock.now();
        let view = {
            let mut state = self.state();
            let usage = &mut state.operator;
            usage.refresh(now);
            BudgetView::new("", limits, None, usage.windows(), Msat::new(usage.total))
        };
        view.with_sellers(self.seller_views(None, limits))
    }

    fn seller_views(&self, agent: Option<&str>, limits: &Limits) -> Vec<SellerView> {
        limits
            .sellers
            .iter()
            .map(|cap| {
                let used = self.seller_used(&seller_owner(agent, cap));
                SellerView::new(cap, used.windows, used.total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
