//! Budgets: what each agent (and all agents together) may still spend, per calendar window and
//! in total. A payment reserves amount + fee reserve against every limit in one critical section
//! before it leaves; it is then committed with the real fee or released. Pending reservations
//! count, so no interleaving of concurrent payments can pass a limit.

pub mod windows;

use crate::agents::Agent;
use crate::clock::Clock;
use crate::config::Limits;
use crate::l402::policy::Decline;
use crate::money::Msat;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
pub use windows::Window;

/// Spend recorded against one agent (or the operator), per window and in total.
#[derive(Debug, Default, Clone)]
struct Usage {
    /// (window start, msat used in it) for hour, day, week, month.
    windows: [(i64, u64); 4],
    total: u64,
}

impl Usage {
    /// Used msat in the window current at `now`; a window that rolled over starts from zero.
    fn used(&mut self, w: Window, now: i64) -> u64 {
        let slot = &mut self.windows[w as usize];
        let start = w.start(now);
        if slot.0 != start {
            *slot = (start, 0);
        }
        slot.1
    }

    fn add(&mut self, starts: &[i64; 4], msat: u64) {
        for (slot, start) in self.windows.iter_mut().zip(starts) {
            if slot.0 == *start {
                slot.1 = slot.1.saturating_add(msat);
            }
        }
        self.total = self.total.saturating_add(msat);
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

fn limit_for(limits: &Limits, w: Window) -> Option<u64> {
    match w {
        Window::Hour => limits.hourly_sats,
        Window::Day => limits.daily_sats,
        Window::Week => limits.weekly_sats,
        Window::Month => limits.monthly_sats,
    }
    .map(|s| Msat::from_sats(s).0)
}

/// Budget held for one payment until it settles or fails.
#[derive(Debug)]
#[must_use = "a reservation must be committed or released"]
pub struct Reservation {
    agent: Arc<str>,
    amount: Msat,
    starts: [i64; 4],
}

impl Reservation {
    pub fn amount(&self) -> Msat {
        self.amount
    }
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<Arc<str>, Usage>,
    operator: Usage,
    /// Operator-set totals (admin top-up / recall), overriding the config's `total_sats`.
    totals: HashMap<Arc<str>, u64>,
}

/// One agent's budget as the admin API and the agent's own view show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BudgetView {
    pub agent: String,
    pub limits: LimitsView,
    pub spent_msat: WindowAmounts,
    /// What remains under each configured limit; absent where there is no limit.
    pub remaining_msat: WindowAmounts,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request_sats: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_sats: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_sats: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly_sats: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_sats: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sats: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WindowAmounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl WindowAmounts {
    fn set(&mut self, w: Option<Window>, v: Option<u64>) {
        match w {
            Some(Window::Hour) => self.hourly = v,
            Some(Window::Day) => self.daily = v,
            Some(Window::Week) => self.weekly = v,
            Some(Window::Month) => self.monthly = v,
            None => self.total = v,
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

pub struct Budget {
    clock: Arc<dyn Clock>,
    operator_limits: Mutex<Limits>,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(clock: Arc<dyn Clock>, operator_limits: Limits) -> Budget {
        Budget {
            clock,
            operator_limits: Mutex::new(operator_limits),
            state: Mutex::new(State::default()),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn operator_limits(&self) -> Limits {
        self.operator_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the operator-wide limits (config reload); spend is kept.
    pub fn set_operator_limits(&self, limits: Limits) {
        *self
            .operator_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn total_limit(state: &State, agent: &Agent) -> Option<u64> {
        state
            .totals
            .get(&agent.name)
            .copied()
            .or(agent.limits.total_sats.map(|s| Msat::from_sats(s).0))
    }

    /// Reserves `amount` (invoice amount plus the fee reserve) against every limit of the agent
    /// and of the operator, atomically; refuses with the first limit it would pass.
    pub fn reserve(&self, agent: &Agent, amount: Msat) -> Result<Reservation, Decline> {
        let now = self.clock.now();
        let operator = self.operator_limits();
        let mut state = self.state();
        let total_limit = Self::total_limit(&state, agent);
        let state = &mut *state;
        let usage = state.agents.entry(agent.name.clone()).or_default();
        for (who, usage, limits, total) in [
            ("", &mut *usage, &agent.limits, total_limit),
            (
                "operator-",
                &mut state.operator,
                &operator,
                operator.total_sats.map(|s| Msat::from_sats(s).0),
            ),
        ] {
            for w in Window::ALL {
                if let Some(limit) = limit_for(limits, w) {
                    let used = usage.used(w, now);
                    if used.saturating_add(amount.0) > limit {
                        return Err(over_limit(who, w.name(), used, amount, limit));
                    }
                }
            }
            if let Some(limit) = total {
                if usage.total.saturating_add(amount.0) > limit {
                    return Err(over_limit(who, "total", usage.total, amount, limit));
                }
            }
        }
        let starts = Window::ALL.map(|w| w.start(now));
        usage.add(&starts, amount.0);
        for w in Window::ALL {
            state.operator.used(w, now);
        }
        state.operator.add(&starts, amount.0);
        Ok(Reservation {
            agent: agent.name.clone(),
            amount,
            starts,
        })
    }

    /// Settles a reservation at what was really spent (amount + actual fee). Money that moved is
    /// counted even if it exceeds the reservation.
    pub fn commit(&self, reservation: Reservation, spent: Msat) {
        let mut state = self.state();
        let state = &mut *state;
        let usage = state.agents.entry(reservation.agent.clone()).or_default();
        usage.sub(&reservation.starts, reservation.amount.0);
        usage.add(&reservation.starts, spent.0);
        state
            .operator
            .sub(&reservation.starts, reservation.amount.0);
        state.operator.add(&reservation.starts, spent.0);
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
        let starts = Window::ALL.map(|w| {
            usage.used(w, now);
            state.operator.used(w, now);
            w.start(created_at)
        });
        usage.add(&starts, msat.0);
        state.operator.add(&starts, msat.0);
        Reservation {
            agent,
            amount: msat,
            starts,
        }
    }

    /// Sets an agent's total limit (admin top-up or recall), replacing the config's.
    pub fn set_total(&self, agent: &Arc<str>, total: Msat) {
        self.state().totals.insert(agent.clone(), total.0);
    }

    pub fn total_override(&self, agent: &str) -> Option<Msat> {
        self.state().totals.get(agent).copied().map(Msat)
    }

    /// Spent and remaining for one agent.
    pub fn view(&self, agent: &Agent) -> BudgetView {
        let now = self.clock.now();
        let mut state = self.state();
        let total_limit = Self::total_limit(&state, agent);
        let usage = state.agents.entry(agent.name.clone()).or_default();
        let l = &agent.limits;
        let mut spent = WindowAmounts::default();
        let mut remaining = WindowAmounts::default();
        for w in Window::ALL {
            let used = usage.used(w, now);
            spent.set(Some(w), Some(used));
            remaining.set(
                Some(w),
                limit_for(l, w).map(|limit| limit.saturating_sub(used)),
            );
        }
        spent.total = Some(usage.total);
        remaining.total = total_limit.map(|limit| limit.saturating_sub(usage.total));
        BudgetView {
            agent: agent.name.to_string(),
            limits: LimitsView {
                per_request_sats: l.per_request_sats,
                hourly_sats: l.hourly_sats,
                daily_sats: l.daily_sats,
                weekly_sats: l.weekly_sats,
                monthly_sats: l.monthly_sats,
                total_sats: total_limit.map(|m| m / 1000).or(l.total_sats),
            },
            spent_msat: spent,
            remaining_msat: remaining,
        }
    }
}

fn over_limit(who: &str, window: &str, used: u64, amount: Msat, limit: u64) -> Decline {
    let code = match (who, window) {
        ("", "hourly") => "over-hourly-limit",
        ("", "daily") => "over-daily-limit",
        ("", "weekly") => "over-weekly-limit",
        ("", "monthly") => "over-monthly-limit",
        ("", _) => "over-total-limit",
        (_, "hourly") => "operator-over-hourly-limit",
        (_, "daily") => "operator-over-daily-limit",
        (_, "weekly") => "operator-over-weekly-limit",
        (_, "monthly") => "operator-over-monthly-limit",
        _ => "operator-over-total-limit",
    };
    let whose = if who.is_empty() {
        "the agent's"
    } else {
        "the operator's"
    };
    Decline::new(
        code,
        format!(
            "{amount} (with fee reserve) would pass {whose} {window} limit: {} of {} spent",
            Msat(used),
            Msat(limit)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{hash_key, Agents};
    use crate::clock::ManualClock;
    use crate::config::{AgentConfig, HostRules};

    const T: i64 = 1_795_269_910; // Saturday 2026-11-21 14:05:10 UTC

    fn agent(limits: Limits) -> Arc<Agent> {
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            key_sha256: hash_key("k"),
            limits,
            hosts: HostRules::default(),
        }]);
        agents.get("a").unwrap().clone()
    }

    #[test]
    fn hourly_window_rolls_over() {
        let clock = Arc::new(ManualClock::new(T));
        let budget = Budget::new(clock.clone(), Limits::default());
        let a = agent(Limits {
            hourly_sats: Some(10),
            ..Limits::default()
        });
        let r = budget.reserve(&a, Msat::from_sats(6)).unwrap();
        budget.commit(r, Msat::from_sats(6));
        let e = budget.reserve(&a, Msat::from_sats(5)).unwrap_err();
        assert_eq!(e.code, "over-hourly-limit");
        clock.set(Window::Hour.end(T)); // 15:00 exactly
        let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
        budget.commit(r, Msat::from_sats(10));
        assert_eq!(budget.view(&a).spent_msat.total, Some(16_000));
        assert_eq!(budget.view(&a).remaining_msat.hourly, Some(0));
    }

    #[test]
    fn daily_weekly_monthly_roll_over_at_utc_boundaries() {
        let clock = Arc::new(ManualClock::new(T));
        let budget = Budget::new(clock.clone(), Limits::default());
        let a = agent(Limits {
            daily_sats: Some(10),
            weekly_sats: Some(25),
            monthly_sats: Some(40),
            ..Limits::default()
        });
        let spend = |n: u64| {
            let r = budget.reserve(&a, Msat::from_sats(n))?;
            budget.commit(r, Msat::from_sats(n));
            Ok::<_, Decline>(())
        };
        spend(10).unwrap(); // Saturday
        assert_eq!(spend(1).unwrap_err().code, "over-daily-limit");
        clock.set(Window::Day.end(T)); // Sunday 00:00
        spend(10).unwrap();
        clock.set(Window::Day.end(T) + 86_400); // Monday: a new week
        spend(10).unwrap();
        clock.advance(86_400);
        spend(5).unwrap(); // week: 15
        clock.advance(86_400);
        spend(5).unwrap(); // month: 40
        clock.advance(86_400);
        assert_eq!(spend(1).unwrap_err().code, "over-monthly-limit");
        clock.set(Window::Month.end(T)); // December
        spend(10).unwrap();
        assert_eq!(budget.view(&a).spent_msat.monthly, Some(10_000));
    }

    #[test]
    fn released_reservations_give_budget_back_and_pending_counts() {
        let budget = Budget::new(Arc::new(ManualClock::new(T)), Limits::default());
        let a = agent(Limits {
            total_sats: Some(10),
            ..Limits::default()
        });
        let pending = budget.reserve(&a, Msat::from_sats(8)).unwrap();
        assert_eq!(
            budget.reserve(&a, Msat::from_sats(3)).unwrap_err().code,
            "over-total-limit"
        );
        budget.release(pending);
        let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
        budget.commit(r, Msat::from_sats(9)); // real fee lower than the reserve
        assert_eq!(budget.view(&a).remaining_msat.total, Some(1000));
    }

    #[test]
    fn operator_cap_spans_agents_and_totals_can_be_changed() {
        let budget = Budget::new(
            Arc::new(ManualClock::new(T)),
            Limits {
                daily_sats: Some(15),
                ..Limits::default()
            },
        );
        let a = agent(Limits {
            total_sats: Some(100),
            ..Limits::default()
        });
        let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
        budget.commit(r, Msat::from_sats(10));
        let e = budget.reserve(&a, Msat::from_sats(6)).unwrap_err();
        assert_eq!(e.code, "operator-over-daily-limit");
        budget.set_total(&a.name, Msat::from_sats(5));
        assert_eq!(budget.view(&a).limits.total_sats, Some(5));
        assert_eq!(budget.view(&a).remaining_msat.total, Some(0));
    }

    #[test]
    fn restored_spend_counts_in_current_windows_only() {
        let budget = Budget::new(Arc::new(ManualClock::new(T)), Limits::default());
        let a = agent(Limits {
            daily_sats: Some(10),
            ..Limits::default()
        });
        let _ = budget.restore("a", T - 2 * 86_400, Msat::from_sats(7)); // two days ago
        let _ = budget.restore("a", T - 60, Msat::from_sats(4)); // today
        let v = budget.view(&a);
        assert_eq!(v.spent_msat.daily, Some(4000));
        assert_eq!(v.spent_msat.total, Some(11_000));
        assert_eq!(v.remaining_msat.daily, Some(6000));
    }
}
