//! The guardrails a purchase passes before money is touched, in this order: the price-jump
//! guard, the payment rate limits, the operator's policy service (`policy_hook`, where it
//! applies), then — over `approve_above_sats`, on a price jump where approvals apply, or when
//! the policy service said `hold` — the operator's approval.

use super::job::Job;
use crate::alerts::Event;
use crate::config::split_host_port;
use crate::config::Limits;
use crate::core::decline::Whose;
use crate::core::Decline;
use crate::guardrails::hook::{Ask, Verdict};
use crate::guardrails::{self, Hold, PriceCheck};

impl Job {
    /// The guardrails before money is touched: the price-jump guard, the payment rate limits,
    /// the policy service, then — when the amount is over `approve_above_sats`, the price
    /// jumped where approvals apply, or the policy service said `hold` — the operator's
    /// approval.
    pub(super) async fn guard(&self, operator: &Limits) -> Result<(), Decline> {
        let p = &self.purchases;
        let g = &p.guardrails;
        // The agent as it is now (its limits may have changed since the request arrived).
        let agent = &p.current_agent(&self.agent.name)?;
        let flight = self.flight();
        let mut jumped = false;
        if let Some(pct) = guardrails::max_price_increase(&agent.limits, operator) {
            if let PriceCheck::Jumped { last, new_service } = g
                .prices
                .check(&agent.name, &self.origin, flight.service, self.amount, pct)
                .await?
            {
                let increase = (self.amount.get().saturating_sub(last.get())).saturating_mul(100)
                    / last.get().max(1);
                let increase = u32::try_from(increase).unwrap_or(u32::MAX);
                g.alerts.emit(Event::PriceJump {
                    agent: agent.name.to_string(),
                    host: self.host.clone(),
                    service: flight.service.to_string(),
                    last_msat: last.get(),
                    new_msat: self.amount.get(),
                    increase_pct: increase,
                    limit_pct: pct,
                });
                // Where the operator decides payments, a jump is theirs to decide too.
                if guardrails::approve_above(&agent.limits, operator).is_none() {
                    return Err(Decline::PriceJump {
                        last,
                        now: self.amount,
                        limit_pct: pct,
                        new_service,
                    });
                }
                jumped = true;
            }
        }
        g.rates.payment(&agent.name, &agent.limits, operator)?;
        // The operator's policy service, when one applies: it may deny, or hold for approval.
        let mut view = None;
        let mut held_by_policy = false;
        if let Some(hook) = g.policy_hook() {
            let bare = split_host_port(&self.host).map_or(self.host.as_str(), |(h, _)| h);
            if hook.applies(&agent.name, bare) {
                view = p.ledger.budget(&agent.name, &agent.limits).await.ok();
                let ask = Ask {
                    agent: &agent.name,
                    origin: &self.origin,
                    host: &self.host,
                    path: &self.path,
                    service: flight.service,
                    dialect: self.offer.dialect,
                    amount: self.amount,
                    payment_hash: &self.hash,
                    description: self.description.as_deref(),
                    budget: view.as_ref(),
                };
                held_by_policy =
                    matches!(hook.decide(&ask, p.clock.now()).await?, Verdict::Hold(_));
            }
        }
        let over_threshold = guardrails::approve_above(&agent.limits, operator)
            .is_some_and(|above| jumped || self.amount > above.msat());
        if held_by_policy || over_threshold {
            // Not worth a person's time when the budget cannot take it anyway (the
            // reservation after approval still decides, atomically).
            if view.is_none() {
                view = p.ledger.budget(&agent.name, &agent.limits).await.ok();
            }
            if let Some(view) = &view {
                let needed = self.amount.saturating_add(p.book.max_fee());
                if let Some(decline) = view.first_passed(needed, Whose::Agent) {
                    return Err(decline);
                }
            }
            // Nobody is asked to approve what a stop would refuse anyway.
            if let Ok(stops) = p.ledger.stops().await {
                if let Some(stop) = stops
                    .iter()
                    .find(|s| s.scope == crate::ledger::FLEET || s.scope == *agent.name)
                {
                    return Err(stop.decline(&agent.name));
                }
            }
            g.approvals
                .ask(Hold {
                    agent: &agent.name,
                    host: &self.host,
                    service: flight.service,
                    amount: self.amount,
                    payment_hash: self.hash,
                    invoice_expires_at: self.invoice_expires_at,
                    // A single-use credential is for its request alone: nobody else could
                    // use what an approval would buy once that request is gone.
                    requester_gone: (!self.reusable).then(|| self.gone.clone()),
                })
                .await?;
        }
        Ok(())
    }
}
