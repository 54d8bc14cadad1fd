//! Budget threshold alerts: when an agent's or the operator's spend reaches a configured share
//! of any of its limits (`alerts.budget_thresholds: [50, 80, 100]`), one `budget.threshold`
//! event — once per limit, window and threshold across every process sharing the ledger (the
//! once-only key is claimed in the ledger), again in the next window or after the limit changes.

use crate::alerts::{Alerts, Event, Scope};
use crate::budget::BudgetView;
use crate::core::window::Window;
use crate::ledger::Ledger;

/// One limit's state: its name, the window start (none for the total), spent and the limit.
struct Reading {
    limit: &'static str,
    window_start: Option<i64>,
    spent: u64,
    limit_msat: u64,
}

/// The limits of a view that are set, with their spend.
fn readings(view: &BudgetView, now: i64) -> Vec<Reading> {
    let l = &view.limits;
    let s = &view.spent_msat;
    let windows = [
        (Window::Hour, l.hourly_sats, s.hourly),
        (Window::Day, l.daily_sats, s.daily),
        (Window::Week, l.weekly_sats, s.weekly),
        (Window::Month, l.monthly_sats, s.monthly),
    ];
    let mut out: Vec<Reading> = windows
        .into_iter()
        .filter_map(|(w, limit, spent)| {
            Some(Reading {
                limit: w.name(),
                window_start: Some(w.start(now)),
                spent: spent.unwrap_or(0),
                limit_msat: limit?.msat().get(),
            })
        })
        .collect();
    if let Some(total) = l.total_sats {
        out.push(Reading {
            limit: "total",
            window_start: None,
            spent: s.total.unwrap_or(0),
            limit_msat: total.msat().get(),
        });
    }
    out
}

/// Emits the threshold events `view` has newly reached. `agent` is `None` for the operator.
pub async fn check(
    ledger: &dyn Ledger,
    alerts: &Alerts,
    thresholds: &[u32],
    agent: Option<&str>,
    view: &BudgetView,
    now: i64,
) {
    if thresholds.is_empty() {
        return;
    }
    for r in readings(view, now) {
        if r.limit_msat == 0 {
            continue;
        }
        let percent = (u128::from(r.spent) * 100 / u128::from(r.limit_msat)) as u64;
        // Only the highest threshold reached is announced now; lower ones are claimed silently
        // so they do not fire later in the same window.
        let reached: Vec<u32> = thresholds
            .iter()
            .copied()
            .filter(|t| u64::from(*t) <= percent)
            .collect();
        let Some(&highest) = reached.iter().max() else {
            continue;
        };
        let scope = match agent {
            Some(name) => format!("agent:{name}"),
            None => "operator".to_string(),
        };
        let mut announce = false;
        for t in reached {
            let key = format!(
                "budget:{scope}:{}:{}:{}:{t}",
                r.limit,
                r.window_start.unwrap_or(0),
                r.limit_msat
            );
            match ledger.claim_alert(&key, now).await {
                Ok(true) if t == highest => announce = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not record a budget alert; it may repeat");
                    announce |= t == highest;
                }
            }
        }
        if announce {
            alerts.emit(Event::BudgetThreshold {
                scope: if agent.is_some() {
                    Scope::Agent
                } else {
                    Scope::Operator
                },
                agent: agent.map(str::to_string),
                limit: r.limit.to_string(),
                percent: highest,
                spent_msat: r.spent,
                limit_msat: r.limit_msat,
                window_start: r.window_start,
            });
        }
    }
}
