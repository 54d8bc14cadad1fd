//! The money rule, written once: may a reservation of `amount` (invoice amount plus the fee
//! reserve) be taken, given the limits in force and what is already used? Both ledgers ask this
//! one pure function — the embedded one from its critical section, the shared one from the
//! usage rows its transaction holds locked — so the same sequence of payments gets the same
//! answers, in the same order, on SQLite and on PostgreSQL.
//!
//! The order is fixed: the agent's limits first (hour, day, week, month, then total), then the
//! operator's in the same order; the first limit the reservation would pass is the decline.
//! A limit is passed when `used + amount > limit` (reaching it exactly is allowed).

use super::limit_for;
use crate::config::Limits;
use crate::core::decline::{Period, Whose};
use crate::core::window::Window;
use crate::core::{Decline, Msat, Sats};

/// What one owner (an agent, or the operator over all agents) has used, before this
/// reservation: per window in [`Window::ALL`] order, and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// Used in the current hour, day, week and month.
    pub windows: [Msat; 4],
    /// Used in total.
    pub total: Msat,
}

/// One owner's side of a decision: whose, its limits, the total in force (an operator's
/// override of an agent's total replaces the configured one), and what it has used.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The agent's or the operator's.
    pub whose: Whose,
    /// Its window limits.
    pub limits: &'a Limits,
    /// Its total limit in force.
    pub total: Option<Msat>,
    /// What it has used.
    pub used: Used,
}

impl<'a> Owner<'a> {
    /// The agent's side: its limits, with `total_override` (an operator's top-up or recall)
    /// in force over the configured total.
    pub fn agent(limits: &'a Limits, total_override: Option<Msat>, used: Used) -> Owner<'a> {
        Owner {
            whose: Whose::Agent,
            limits,
            total: total_override.or(limits.total_sats.map(Sats::msat)),
            used,
        }
    }

    /// The operator's side.
    pub fn operator(limits: &'a Limits, used: Used) -> Owner<'a> {
        Owner {
            whose: Whose::Operator,
            limits,
            total: limits.total_sats.map(Sats::msat),
            used,
        }
    }

    /// The first of this owner's limits that `amount` would pass.
    fn passed(&self, amount: Msat) -> Option<Decline> {
        let periods = Window::ALL
            .into_iter()
            .map(|w| {
                (
                    Period::Window(w),
                    limit_for(self.limits, w),
                    self.used.windows[w as usize],
                )
            })
            .chain(std::iter::once((
                Period::Total,
                self.total,
                self.used.total,
            )));
        for (period, limit, used) in periods {
            let Some(limit) = limit else { continue };
            if used.saturating_add(amount) > limit {
                return Some(Decline::OverLimit {
                    whose: self.whose,
                    period,
                    used,
                    amount,
                    limit,
                });
            }
        }
        None
    }
}

/// Decides a reservation of `amount`: `Ok` when it passes none of the agent's and the
/// operator's limits, else the first limit it would pass (see the module docs for the order).
pub fn decide(agent: &Owner<'_>, operator: &Owner<'_>, amount: Msat) -> Result<(), Decline> {
    match agent.passed(amount).or_else(|| operator.passed(amount)) {
        Some(decline) => Err(decline),
        None => Ok(()),
    }
}

/// One owner's cap per seller that a payment counts against: the rule, and what was used
/// under it before this reservation.
#[derive(Debug, Clone, Copy)]
pub struct SellerSide<'a> {
    /// The agent's rule or the operator's.
    pub whose: Whose,
    /// The rule.
    pub cap: &'a crate::config::SellerCap,
    /// Used under it, per window and in total.
    pub used: Used,
}

/// Decides the caps per seller, after [`decide`] allowed the reservation: the agent's cap
/// first, then the operator's, windows before the total, as for every limit.
pub fn decide_sellers(sides: &[SellerSide<'_>], amount: Msat) -> Result<(), Decline> {
    for side in sides {
        let limits = side.cap.limits();
        let owner = Owner {
            whose: side.whose,
            limits: &limits,
            total: limits.total_sats.map(Sats::msat),
            used: side.used,
        };
        if let Some(Decline::OverLimit {
            whose,
            period,
            used,
            amount,
            limit,
        }) = owner.passed(amount)
        {
            return Err(Decline::OverSellerLimit {
                whose,
                period,
                hosts: side.cap.key(),
                used,
                amount,
                limit,
            });
        }
    }
    Ok(())
}

/// The spend-spike breaker of one owner: `Err` when `amount` on top of `recent` (what it
/// spent in the breaker's window, pending payments included) would pass its threshold — the
/// lower of `spike_max_sats` and `spike_multiple` times the usual spend over as long, from
/// `usual`, the spend over the last 24 whole hours. Reaching it exactly is allowed, as with
/// every limit. Asked only after [`decide`] allowed the payment: a payment a limit refuses
/// never trips a breaker.
pub fn spike(
    whose: Whose,
    limits: &Limits,
    recent: Msat,
    usual: Msat,
    amount: Msat,
) -> Result<(), Decline> {
    let Some(spike) = limits.spike() else {
        return Ok(());
    };
    let Some(max) = spike.threshold(usual) else {
        return Ok(());
    };
    if recent.saturating_add(amount) > max {
        return Err(Decline::SpendSpike {
            whose,
            window_secs: u64::from(spike.window_secs),
            spent: recent,
            amount,
            max,
        });
    }
    Ok(())
}

/// The first hour the usual rate counts at `now`, and the hour it stops before (the current
/// one): the last [`crate::config::limits::SPIKE_BASELINE_HOURS`] whole hours.
pub fn usual_hours(now: i64) -> (i64, i64) {
    let hour = now - now.rem_euclid(3600);
    (
        hour - crate::config::limits::SPIKE_BASELINE_HOURS * 3600,
        hour,
    )
}

/// The first minute (a multiple of 60 s) a breaker window of `window_secs` counts at `now`:
/// the current minute and the whole minutes before it that fit.
pub fn spike_since(now: i64, window_secs: u32) -> i64 {
    let minute = now - now.rem_euclid(60);
    minute - (i64::from(window_secs) / 60 - 1) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(hour: u64, total: u64) -> Used {
        Used {
            windows: [
                Msat::new(hour),
                Msat::new(hour),
                Msat::new(hour),
                Msat::new(hour),
            ],
            total: Msat::new(total),
        }
    }

    fn code(r: Result<(), Decline>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(d) => d.code(),
        }
    }

    #[test]
    fn the_breaker_trips_above_its_maximum_and_not_at_it() {
        let limits = Limits {
            spike_max_sats: Some(10.into()),
            spike_window_secs: Some(120),
            ..Limits::NONE
        };
        let none = Msat::ZERO;
        let check = |l: &Limits, whose, recent, usual, amount| {
            code(spike(whose, l, Msat::new(recent), usual, Msat::new(amount)))
        };
        assert_eq!(check(&limits, Whose::Agent, 4_000, none, 6_000), "ok");
        assert_eq!(
            check(&limits, Whose::Operator, 4_000, none, 6_001),
            "fleet-spend-spike"
        );
        assert_eq!(check(&Limits::NONE, Whose::Agent, u64::MAX, none, 1), "ok");
        // 24 000 sats over 24 h is 100 sats per 6 min; ten times that is 1000 sats.
        let rate = Limits {
            spike_multiple: Some(10),
            spike_window_secs: Some(360),
            ..Limits::NONE
        };
        let usual = Msat::from_sats(24_000);
        assert_eq!(check(&rate, Whose::Agent, 900_000, usual, 100_000), "ok");
        assert_eq!(
            check(&rate, Whose::Agent, 900_000, usual, 100_001),
            "spend-spike"
        );
        // No usual rate yet: only an absolute maximum could trip it.
        assert_eq!(check(&rate, Whose::Agent, 900_000, none, 5_000_000), "ok");
        // Two minutes: the current one and the one before.
        assert_eq!(spike_since(10 * 60 + 5, 120), 9 * 60);
        assert_eq!(spike_since(10 * 60, 60), 10 * 60);
    }

    #[test]
    fn reaching_a_limit_exactly_is_allowed_passing_it_is_not() {
        let limits = Limits {
            daily_sats: Some(10.into()),
            ..Limits::NONE
        };
        let none = Limits::NONE;
        let agent = Owner::agent(&limits, None, used(4_000, 4_000));
        let operator = Owner::operator(&none, Used::default());
        assert_eq!(code(decide(&agent, &operator, Msat::new(6_000))), "ok");
        assert_eq!(
            code(decide(&agent, &operator, Msat::new(6_001))),
            "over-daily-limit"
        );
    }

    #[test]
    fn the_agent_is_checked_before_the_operator_and_windows_before_the_total() {
        let agent_limits = Limits {
            weekly_sats: Some(5.into()),
            total_sats: Some(1.into()),
            ..Limits::NONE
        };
        let operator_limits = Limits {
            hourly_sats: Some(1.into()),
            ..Limits::NONE
        };
        let agent = Owner::agent(&agent_limits, None, Used::default());
        let operator = Owner::operator(&operator_limits, Used::default());
        assert_eq!(
            code(decide(&agent, &operator, Msat::new(10_000))),
            "over-weekly-limit"
        );
        let loose = Limits::NONE;
        let agent = Owner::agent(&loose, None, Used::default());
        assert_eq!(
            code(decide(&agent, &operator, Msat::new(10_000))),
            "operator-over-hourly-limit"
        );
    }

    #[test]
    fn an_operators_override_replaces_the_configured_total() {
        let limits = Limits {
            total_sats: Some(1.into()),
            ..Limits::NONE
        };
        let none = Limits::NONE;
        let operator = Owner::operator(&none, Used::default());
        let topped_up = Owner::agent(&limits, Some(Msat::new(50_000)), used(0, 30_000));
        assert_eq!(code(decide(&topped_up, &operator, Msat::new(20_000))), "ok");
        assert_eq!(
            code(decide(&topped_up, &operator, Msat::new(20_001))),
            "over-total-limit"
        );
    }

    #[test]
    fn the_decline_reports_what_was_used_before() {
        let limits = Limits {
            hourly_sats: Some(10.into()),
            ..Limits::NONE
        };
        let none = Limits::NONE;
        let agent = Owner::agent(&limits, None, used(9_500, 9_500));
        let operator = Owner::operator(&none, Used::default());
        match decide(&agent, &operator, Msat::new(1_000)) {
            Err(Decline::OverLimit {
                used,
                amount,
                limit,
                ..
            }) => {
                assert_eq!(
                    (used, amount, limit),
                    (Msat::new(9_500), Msat::new(1_000), Msat::new(10_000))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
