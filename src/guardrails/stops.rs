//! The operator's kill switch and the spend-spike breakers' aftermath: stopping payments for the
//! fleet or an agent, resuming them, and telling everyone once. The stop itself lives in the
//! ledger, which every reservation reads atomically on every replica; this module adds what
//! follows a change — held approvals denied, an event, a log line.

use super::Guardrails;
use crate::alerts::{Event, Scope};
use crate::core::decline::Whose;
use crate::core::Decline;
use crate::ledger::{Ledger, LedgerError, Stop, FLEET};

/// What a pause or resume changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Whether the stop was newly put in force (pause) or lifted (resume); `false` when it was
    /// so already, and nothing was announced.
    pub changed: bool,
    /// The stop in force after a pause, or lifted by a resume.
    pub stop: Option<Stop>,
    /// Held payments denied by a pause.
    pub approvals_denied: usize,
}

impl Guardrails {
    /// Stops every new payment of the fleet, on every replica: in-flight payments finish and
    /// are recorded, held approvals are denied (`fleet-paused`), and `fleet.paused` is sent
    /// once (a second pause changes nothing).
    pub async fn pause_fleet(
        &self,
        ledger: &dyn Ledger,
        reason: &str,
        now: i64,
    ) -> Result<Change, LedgerError> {
        let stop = Stop {
            scope: FLEET.to_string(),
            by: "operator".into(),
            reason: reason.to_string(),
            at: now,
        };
        if !ledger.stop(&stop).await? {
            let current = ledger.stops().await?.into_iter().find(|s| s.scope == FLEET);
            return Ok(Change {
                changed: false,
                stop: current,
                approvals_denied: 0,
            });
        }
        let denied = self.approvals.deny_all("fleet-paused").await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not deny the held payments; their reservation refuses them");
            0
        });
        tracing::warn!(
            reason,
            approvals_denied = denied,
            "payments paused for the whole fleet"
        );
        self.alerts.emit(Event::FleetPaused {
            by: stop.by.clone(),
            reason: stop.reason.clone(),
            approvals_denied: denied as u64,
        });
        Ok(Change {
            changed: true,
            stop: Some(stop),
            approvals_denied: denied,
        })
    }

    /// Lifts the fleet's stop (the kill switch, or the fleet's breaker): `fleet.resumed` once.
    pub async fn resume_fleet(&self, ledger: &dyn Ledger) -> Result<Change, LedgerError> {
        let lifted = ledger.resume(FLEET).await?;
        if lifted.is_some() {
            tracing::info!("payments resumed for the fleet");
            self.alerts.emit(Event::FleetResumed {
                by: "operator".into(),
            });
        }
        Ok(Change {
            changed: lifted.is_some(),
            stop: lifted,
            approvals_denied: 0,
        })
    }

    /// Lifts an agent's stop (its tripped breaker): `agent.resumed` once.
    pub async fn resume_agent(
        &self,
        ledger: &dyn Ledger,
        agent: &str,
    ) -> Result<Change, LedgerError> {
        let lifted = ledger.resume(agent).await?;
        if lifted.is_some() {
            tracing::info!(%agent, "agent resumed after its breaker tripped");
            self.alerts.emit(Event::AgentResumed {
                agent: agent.to_string(),
                by: "operator".into(),
            });
        }
        Ok(Change {
            changed: lifted.is_some(),
            stop: lifted,
            approvals_denied: 0,
        })
    }

    /// A payment was refused by a breaker that tripped on it (the ledger stopped its scope):
    /// `breaker.tripped` is sent and the scope's held payments are denied.
    pub async fn breaker_tripped(&self, decline: &Decline, agent: &str) {
        let Decline::SpendSpike {
            whose,
            window_secs,
            spent,
            amount,
            max,
        } = decline
        else {
            return;
        };
        tracing::warn!(%agent, code = decline.code(), %spent, %amount, %max, "the spend-spike breaker tripped");
        self.alerts.emit(Event::BreakerTripped {
            scope: match whose {
                Whose::Agent => Scope::Agent,
                Whose::Operator => Scope::Operator,
            },
            agent: agent.to_string(),
            window_secs: *window_secs,
            spent_msat: spent.get(),
            amount_msat: amount.get(),
            max_msat: max.get(),
        });
        let denied = match whose {
            Whose::Agent => self.approvals.deny_agent(agent, decline.code()).await,
            Whose::Operator => self.approvals.deny_all(decline.code()).await,
        };
        if let Err(e) = denied {
            tracing::warn!(error = %e, "could not deny held payments after a breaker tripped; their reservation refuses them");
        }
    }
}
