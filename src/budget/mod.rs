//! In-process budget accounting: what each agent (and all agents together) has spent or holds
//! reserved, per calendar window and in total. The embedded (SQLite) ledger keeps its money
//! authority here, in one critical section; the shared (PostgreSQL) ledger keeps the same
//! numbers in the database. Both obey one rule: a payment reserves amount + fee reserve against
//! every limit atomically before it leaves, and is then committed at the real fee or released.
//! Pending reservations count, so no interleaving of concurrent payments can pass a limit.
//!
//! Every window's spend is kept exactly, limited or not, so a limit added later (by a reload)
//! sees the spend earlier in its window, and views show true figures.

pub mod rules;
pub mod view;

use crate::config::limits::MAX_SPIKE_WINDOW_SECS;
use crate::config::Limits;
use crate::core::decline::Whose;
use crate::core::window::Window;
use crate::core::{Clock, Decline, Msat, Sats};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
pub use view::{BudgetView, LimitSource, WindowAmounts};

/// Spend recorded against one agent (or the operator), per window and in total.
#[derive(Debug, Default, Clone)]
struct Usage {
    /// (window start, msat used in it) for hour, day, week, month.
    windows: [(i64, u64); 4],
    total: u64,
    /// (minute start, msat used in it), oldest first, for the spend-spike breaker: the last
    /// [`MAX_SPIKE_WINDOW_SECS`] only.
    minutes: VecDeque<(i64, u64)>,
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

    /// Adds to the minute starting at `minute` (kept only while a breaker window can see it).
    fn add_minute(&mut self, minute: i64, msat: u64, now: i64) {
        let oldest = now - i64::from(MAX_SPIKE_WINDOW_SECS);
        while self.minutes.front().is_some_and(|(m, _)| *m < oldest) {
            self.minutes.pop_front();
        }
        if minute < oldest {
            return;
        }
        match self.minutes.iter_mut().rev().find(|(m, _)| *m == minute) {
            Some(slot) => slot.1 = slot.1.saturating_add(msat),
            None => {
                let at = self.minutes.partition_point(|(m, _)| *m < minute);
                self.minutes.insert(at, (minute, msat));
            }
        }
    }

    /// Takes from the minute starting at `minute`, if it is still kept.
    fn sub_minute(&mut self, minute: i64, msat: u64) {
        if let Some(slot) = self.minutes.iter_mut().rev().find(|(m, _)| *m == minute) {
            slot.1 = slot.1.saturating_sub(msat);
        }
    }

    /// Used in the minutes from `since` on.
    fn recent(&self, since: i64) -> Msat {
        Msat::new(
            self.minutes
                .iter()
                .rev()
                .take_while(|(m, _)| *m >= since)
                .fold(0u64, |sum, (_, msat)| sum.saturating_add(*msat)),
        )
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
    /// The minute it was reserved in (the breaker's count).
    minute: i64,
}

impl Reservation {
    /// What is held: amount + fee reserve.
    pub fn amount(&self) -> Msat {
        self.amount
    }
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<Arc<str>, Usage>,
    operator: Usage,
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
        // The breakers, once the limits allowed it.
        if let Some((_, window)) = limits.spike() {
            let recent = usage.recent(rules::spike_since(now, window));
            rules::spike(Whose::Agent, limits, recent, amount)?;
        }
        if let Some((_, window)) = operator.spike() {
            let recent = state.operator.recent(rules::spike_since(now, window));
            rules::spike(Whose::Operator, operator, recent, amount)?;
        }
        let starts = Window::ALL.map(|w| w.start(now));
        let minute = now - now.rem_euclid(60);
        usage.add(&starts, amount.get());
        usage.add_minute(minute, amount.get(), now);
        state.operator.add(&starts, amount.get());
        state.operator.add_minute(minute, amount.get(), now);
        Ok(Reservation {
            agent: agent.clone(),
            amount,
            starts,
            minute,
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
        usage.sub_minute(reservation.minute, reservation.amount.get());
        usage.add_minute(reservation.minute, spent.get(), now);
        state.operator.refresh(now);
        state
            .operator
            .sub(&reservation.starts, reservation.amount.get());
        state.operator.add(&reservation.starts, spent.get());
        state
            .operator
            .sub_minute(reservation.minute, reservation.amount.get());
        state
            .operator
            .add_minute(reservation.minute, spent.get(), now);
    }

    /// Gives a reservation back: the payment did not happen.
    pub fn release(&self, reservation: Reservation) {
        self.commit(reservation, Msat::ZERO);
    }

    /// Re-applies spend found in the ledger at start: `msat` spent (or reserved, when pending)
    /// at `created_at`, counted in the windows still current.
    pub fn restore(&self, agent: &str, created_at: i64, msat: Msat) -> Reservation {
        let now = self.clock.now();
        let mut state = self.state();
        let state = &mut *state;
        let agent: Arc<str> = Arc::from(agent);
        let usage = state.agents.entry(agent.clone()).or_default();
        usage.refresh(now);
        state.operator.refresh(now);
        let starts = Window::ALL.map(|w| w.start(created_at));
        let minute = created_at - created_at.rem_euclid(60);
        usage.add(&starts, msat.get());
        usage.add_minute(minute, msat.get(), now);
        state.operator.add(&starts, msat.get());
        state.operator.add_minute(minute, msat.get(), now);
        Reservation {
            agent,
            amount: msat,
            starts,
            minute,
        }
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
        let mut state = self.state();
        let over = state.totals.get(agent).copied();
        let usage = state.agents.entry(Arc::from(agent)).or_default();
        usage.refresh(now);
        BudgetView::new(agent, limits, over, usage.windows(), Msat::new(usage.total))
    }

    /// The operator's spend over all agents under the operator's `limits` (named `""`).
    pub fn operator_view(&self, limits: &Limits) -> BudgetView {
        let now = self.clock.now();
        let mut state = self.state();
        let usage = &mut state.operator;
        usage.refresh(now);
        BudgetView::new("", limits, None, usage.windows(), Msat::new(usage.total))
    }
}

#[cfg(test)]
mod tests;
