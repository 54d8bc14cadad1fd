//! The price-jump guard: per (agent, origin, service) the price last paid is remembered (from
//! the ledger, so it survives restarts and is shared by replicas); a new invoice more than
//! `max_price_increase_pct` above it is refused before any money moves, so a seller that jumps
//! from 10 to 10,000 sats is caught even under a generous per-request limit.

use crate::core::{Decline, Msat};
use crate::ledger::Ledger;
use dashmap::DashMap;
use std::sync::Arc;

/// How many last prices are cached at most.
pub const CACHED: usize = 10_000;

/// The last prices paid, cached in front of the ledger.
pub struct PriceGuard {
    ledger: Arc<dyn Ledger>,
    last: DashMap<String, Msat>,
}

fn key(agent: &str, origin: &str, flight: &str) -> String {
    format!("{agent}\n{origin}\n{flight}")
}

/// What the check found: the price is fine, or jumped (the last price is given for the alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceCheck {
    /// No earlier price, or within the allowed increase.
    Fine,
    /// More than the allowed increase above `last`.
    Jumped {
        /// The last price paid.
        last: Msat,
    },
}

impl PriceGuard {
    /// An empty cache over `ledger`.
    pub fn new(ledger: Arc<dyn Ledger>) -> PriceGuard {
        PriceGuard {
            ledger,
            last: DashMap::new(),
        }
    }

    /// Compares `amount` with the last price of this flight under `limit_pct`. A ledger that
    /// cannot answer fails closed: the decline says the store is unavailable.
    pub async fn check(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
        amount: Msat,
        limit_pct: u32,
    ) -> Result<PriceCheck, Decline> {
        let k = key(agent, origin, flight);
        let last = match self.last.get(&k).map(|v| *v) {
            Some(last) => Some(last),
            None => {
                let found = self.ledger.last_price(agent, origin, flight).await?;
                if let Some(p) = found {
                    if self.last.len() >= CACHED {
                        self.last.clear();
                    }
                    self.last.insert(k, p);
                }
                found
            }
        };
        let Some(last) = last else {
            return Ok(PriceCheck::Fine);
        };
        let allowed = u128::from(last.0) * (100 + u128::from(limit_pct)) / 100;
        Ok(if u128::from(amount.0) > allowed {
            PriceCheck::Jumped { last }
        } else {
            PriceCheck::Fine
        })
    }

    /// Remembers a price just paid. The cache is only in front of the ledger, so when it
    /// holds [`CACHED`] prices it starts again empty rather than growing with every service.
    pub fn paid(&self, agent: &str, origin: &str, flight: &str, amount: Msat) {
        if self.last.len() >= CACHED {
            self.last.clear();
        }
        self.last.insert(key(agent, origin, flight), amount);
    }
}
