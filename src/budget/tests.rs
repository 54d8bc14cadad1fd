use super::*;
use crate::core::time::ManualClock;

const T: i64 = 1_795_269_910; // Saturday 2026-11-21 14:05:10 UTC

/// An agent's name and limits.
struct A {
    name: Arc<str>,
    limits: Limits,
}

fn agent(limits: Limits) -> A {
    A {
        name: Arc::from("a"),
        limits,
    }
}

/// A budget with fixed operator limits.
struct B {
    budget: Budget,
    operator: Limits,
}

impl B {
    fn new(clock: Arc<dyn Clock>, operator: Limits) -> B {
        B {
            budget: Budget::new(clock),
            operator,
        }
    }

    fn reserve(&self, a: &A, amount: Msat) -> Result<Reservation, Decline> {
        self.budget
            .reserve(&a.name, &a.limits, &self.operator, amount)
    }

    fn view(&self, a: &A) -> BudgetView {
        self.budget.view(&a.name, &a.limits)
    }
}

impl std::ops::Deref for B {
    type Target = Budget;
    fn deref(&self) -> &Budget {
        &self.budget
    }
}

#[test]
fn hourly_window_rolls_over() {
    let clock = Arc::new(ManualClock::new(T));
    let budget = B::new(clock.clone(), Limits::default());
    let a = agent(Limits {
        hourly_sats: Some(10.into()),
        ..Limits::default()
    });
    let r = budget.reserve(&a, Msat::from_sats(6)).unwrap();
    budget.commit(r, Msat::from_sats(6));
    let e = budget.reserve(&a, Msat::from_sats(5)).unwrap_err();
    assert_eq!(e.code(), "over-hourly-limit");
    clock.set(Window::Hour.end(T)); // 15:00 exactly
    let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
    budget.commit(r, Msat::from_sats(10));
    assert_eq!(budget.view(&a).spent_msat.total, Some(16_000));
    assert_eq!(budget.view(&a).remaining_msat.hourly, Some(0));
}

#[test]
fn daily_weekly_monthly_roll_over_at_utc_boundaries() {
    let clock = Arc::new(ManualClock::new(T));
    let budget = B::new(clock.clone(), Limits::default());
    let a = agent(Limits {
        daily_sats: Some(10.into()),
        weekly_sats: Some(25.into()),
        monthly_sats: Some(40.into()),
        ..Limits::default()
    });
    let spend = |n: u64| {
        let r = budget.reserve(&a, Msat::from_sats(n))?;
        budget.commit(r, Msat::from_sats(n));
        Ok::<_, Decline>(())
    };
    spend(10).unwrap(); // Saturday
    assert_eq!(spend(1).unwrap_err().code(), "over-daily-limit");
    clock.set(Window::Day.end(T)); // Sunday 00:00
    spend(10).unwrap();
    clock.set(Window::Day.end(T) + 86_400); // Monday: a new week
    spend(10).unwrap();
    clock.advance(86_400);
    spend(5).unwrap(); // week: 15
    clock.advance(86_400);
    spend(5).unwrap(); // month: 40
    clock.advance(86_400);
    assert_eq!(spend(1).unwrap_err().code(), "over-monthly-limit");
    clock.set(Window::Month.end(T)); // December
    spend(10).unwrap();
    assert_eq!(budget.view(&a).spent_msat.monthly, Some(10_000));
}

#[test]
fn released_reservations_give_budget_back_and_pending_counts() {
    let budget = B::new(Arc::new(ManualClock::new(T)), Limits::default());
    let a = agent(Limits {
        total_sats: Some(10.into()),
        ..Limits::default()
    });
    let pending = budget.reserve(&a, Msat::from_sats(8)).unwrap();
    assert_eq!(
        budget.reserve(&a, Msat::from_sats(3)).unwrap_err().code(),
        "over-total-limit"
    );
    budget.release(pending);
    let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
    budget.commit(r, Msat::from_sats(9)); // real fee lower than the reserve
    assert_eq!(budget.view(&a).remaining_msat.total, Some(1000));
}

#[test]
fn operator_cap_spans_agents_and_totals_can_be_changed() {
    let budget = B::new(
        Arc::new(ManualClock::new(T)),
        Limits {
            daily_sats: Some(15.into()),
            ..Limits::default()
        },
    );
    let a = agent(Limits {
        total_sats: Some(100.into()),
        ..Limits::default()
    });
    let r = budget.reserve(&a, Msat::from_sats(10)).unwrap();
    budget.commit(r, Msat::from_sats(10));
    let e = budget.reserve(&a, Msat::from_sats(6)).unwrap_err();
    assert_eq!(e.code(), "operator-over-daily-limit");
    budget.set_total(&a.name, Some(Msat::from_sats(5)));
    assert_eq!(budget.view(&a).limits.total_sats, Some(5.into()));
    assert_eq!(budget.view(&a).remaining_msat.total, Some(0));
}

#[test]
fn restored_spend_counts_in_current_windows_only() {
    let budget = B::new(Arc::new(ManualClock::new(T)), Limits::default());
    let a = agent(Limits {
        daily_sats: Some(10.into()),
        ..Limits::default()
    });
    let _ = budget.restore("a", T - 2 * 86_400, Msat::from_sats(7)); // two days ago
    let _ = budget.restore("a", T - 60, Msat::from_sats(4)); // today
    let v = budget.view(&a);
    assert_eq!(v.spent_msat.daily, Some(4000));
    assert_eq!(v.spent_msat.total, Some(11_000));
    assert_eq!(v.remaining_msat.daily, Some(6000));
}

#[test]
fn every_window_counts_spend_whether_or_not_it_has_a_limit() {
    let b = B::new(Arc::new(ManualClock::new(T)), Limits::default());
    let a = agent(Limits::default());
    for _ in 0..3 {
        let r = b.reserve(&a, Msat::from_sats(10)).unwrap();
        b.commit(r, Msat::from_sats(10));
    }
    let v = b.view(&a);
    for spent in [
        v.spent_msat.hourly,
        v.spent_msat.daily,
        v.spent_msat.weekly,
        v.spent_msat.monthly,
        v.spent_msat.total,
    ] {
        assert_eq!(spent, Some(30_000));
    }
    // A limit added later (a reload) sees the spend earlier in its window.
    let limited = agent(Limits {
        daily_sats: Some(35.into()),
        ..Limits::default()
    });
    assert_eq!(
        b.reserve(&limited, Msat::from_sats(10)).unwrap_err().code(),
        "over-daily-limit"
    );
}

#[test]
fn clearing_an_override_goes_back_to_the_configured_total() {
    let b = B::new(Arc::new(ManualClock::new(T)), Limits::default());
    let a = agent(Limits {
        total_sats: Some(50.into()),
        ..Limits::default()
    });
    b.set_total(&a.name, Some(Msat::from_sats(80)));
    assert_eq!(b.view(&a).limits.total_sats, Some(80.into()));
    assert_eq!(
        b.view(&a).limit_sources.total_sats,
        Some(LimitSource::Admin)
    );
    b.set_total(&a.name, None);
    assert_eq!(b.view(&a).limits.total_sats, Some(50.into()));
    assert_eq!(
        b.view(&a).limit_sources.total_sats,
        Some(LimitSource::Config)
    );
}
