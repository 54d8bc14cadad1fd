//! The price-jump guard: per (agent, origin, service) the price last paid is remembered (from
//! the ledger, so it survives restarts and is shared by replicas); a new invoice more than
//! `max_price_increase_pct` above it is refused before any money moves, so a seller that jumps
//! from 10 to 10,000 sats is caught even under a generous per-request limit. A service the agent
//! never paid for at an origin where it has paid is compared with the highest price paid there,
//! so renaming the service (`q` → `q2`) does not reset the memory.

use crate::core::{Decline, Msat};
use crate::ledger::Ledger;
use dashmap::DashMap;
use std::sync::Arc;

/// How many last prices are cached at most.
pub const CACHED: usize = 10_000;

/// The last prices paid per service, and the highest per origin, cached in front of the ledger.
pub struct PriceGuard {
    ledger: Arc<dyn Ledger>,
    last: DashMap<String, Msat>,
    /// Per (agent, origin): the highest price paid there, over all services.
    highest: DashMap<String, Msat>,
}

fn key(agent: &str, origin: &str, flight: &str) -> String {
    format!("{agent}\n{origin}\n{flight}")
}

fn origin_key(agent: &str, origin: &str) -> String {
    format!("{agent}\n{origin}")
}

/// Caches `price` under `key`, starting the cache again empty when it holds [`CACHED`] prices
/// (it is only in front of the ledger).
fn remember(cache: &DashMap<String, Msat>, key: String, price: Msat) {
    if cache.len() >= CACHED {
        cache.clear();
    }
    cache.insert(key, price);
}

/// What the check found: the price is fine, or jumped (the last price is given for the alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceCheck {
    /// No earlier price, or within the allowed increase.
    Fine,
    /// More than the allowed increase above `last`.
    Jumped {
        /// The last price paid for this service, or for a service new to the agent at this
        /// origin, the highest price paid there.
        last: Msat,
        /// True when `last` is the origin's highest price (the service was never paid for).
        new_service: bool,
    },
}

impl PriceGuard {
    /// An empty cache over `ledger`.
    pub fn new(ledger: Arc<dyn Ledger>) -> PriceGuard {
        PriceGuard {
            ledger,
            last: DashMap::new(),
            highest: DashMap::new(),
        }
    }

    /// Compares `amount` with the last price of this flight under `limit_pct` — or, for a flight
    /// never paid for, with the highest price the agent paid at `origin`. A ledger that cannot
    /// answer fails closed: the decline says the store is unavailable.
    pub async fn check(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
        amount: Msat,
        limit_pct: u32,
    ) -> Result<PriceCheck, Decline> {
        let (reference, new_service) = match self.last_price(agent, origin, flight).await? {
            Some(last) => (last, false),
            None => match self.highest_price(agent, origin).await? {
                Some(highest) => (highest, true),
                None => return Ok(PriceCheck::Fine),
            },
        };
        let allowed = u128::from(reference.get()) * (100 + u128::from(limit_pct)) / 100;
        Ok(if u128::from(amount.get()) > allowed {
            PriceCheck::Jumped {
                last: reference,
                new_service,
            }
        } else {
            PriceCheck::Fine
        })
    }

    async fn last_price(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
    ) -> Result<Option<Msat>, Decline> {
        let k = key(agent, origin, flight);
        if let Some(last) = self.last.get(&k).map(|v| *v) {
            return Ok(Some(last));
        }
        let found = self.ledger.last_price(agent, origin, flight).await?;
        if let Some(p) = found {
            remember(&self.last, k, p);
        }
        Ok(found)
    }

    async fn highest_price(&self, agent: &str, origin: &str) -> Result<Option<Msat>, Decline> {
        let k = origin_key(agent, origin);
        if let Some(highest) = self.highest.get(&k).map(|v| *v) {
            return Ok(Some(highest));
        }
        let found = self.ledger.highest_price(agent, origin).await?;
        if let Some(p) = found {
            remember(&self.highest, k, p);
        }
        Ok(found)
    }

    /// Remembers a price just paid: the flight's last price, and the origin's highest when it
    /// is above it (a highest not cached yet is left to the ledger, which has the payment).
    pub fn paid(&self, agent: &str, origin: &str, flight: &str, amount: Msat) {
        remember(&self.last, key(agent, origin, flight), amount);
        if let Some(mut highest) = self.highest.get_mut(&origin_key(agent, origin)) {
            if amount > *highest {
                *highest = amount;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::core::time::ManualClock;
    use crate::core::{PaymentHash, Preimage};
    use crate::ledger::sqlite::SqliteLedger;
    use crate::ledger::{LimitSet, NewPayment};
    use sha2::{Digest, Sha256};

    const T: i64 = 1_795_269_910;

    /// Records a settled payment of `agent` at `origin` for `service`.
    async fn pay(
        ledger: &SqliteLedger,
        seed: u8,
        agent: &str,
        origin: &str,
        service: &str,
        msat: u64,
    ) {
        let raw = [seed; 32];
        let proof = Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap();
        let none = Limits::default();
        ledger
            .begin(
                NewPayment {
                    hash: proof.hash(),
                    agent: Arc::from(agent),
                    host: "h:443".into(),
                    origin: origin.into(),
                    dialect: "l402",
                    amount: Msat::new(msat),
                    fee_reserve: Msat::new(0),
                    bolt11: "lnbcrt…".into(),
                    credential: None,
                    service: Some(service.into()),
                    scope: "/".into(),
                    purchase: service.into(),
                    token_expires_at: None,
                    created_at: T,
                },
                LimitSet {
                    agent: &none,
                    operator: &none,
                    api_agent: false,
                },
            )
            .await
            .unwrap();
        ledger
            .settle(proof.hash(), Msat::new(0), &proof, T)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_renamed_service_is_compared_with_the_highest_price_paid_there() {
        let dir = crate::scratch::Scratch::new("price");
        let clock = Arc::new(ManualClock::new(T));
        let ledger = Arc::new(
            SqliteLedger::open(&dir.file("ledger.db"), clock)
                .await
                .unwrap()
                .0,
        );
        let o = "https://h:443";
        pay(&ledger, 1, "a", o, "q:0", 10_000).await;
        pay(&ledger, 2, "a", o, "cheap:0", 1_000).await;
        pay(&ledger, 3, "b", o, "dear:0", 9_000_000).await;
        let guard = PriceGuard::new(ledger.clone());
        let check = |flight: &'static str, msat: u64| {
            let guard = &guard;
            async move {
                guard
                    .check("a", o, flight, Msat::new(msat), 100)
                    .await
                    .unwrap()
            }
        };
        // A known service: its own last price, even when the origin has dearer ones.
        assert_eq!(check("cheap:0", 2_000).await, PriceCheck::Fine);
        assert_eq!(
            check("cheap:0", 2_001).await,
            PriceCheck::Jumped {
                last: Msat::new(1_000),
                new_service: false
            }
        );
        // A new name at the same origin: the highest price the agent paid there.
        assert_eq!(check("q2:0", 20_000).await, PriceCheck::Fine);
        assert_eq!(
            check("q2:0", 18_000_000).await,
            PriceCheck::Jumped {
                last: Msat::new(10_000),
                new_service: true
            }
        );
        // Another agent's prices, another origin: nothing known, nothing to compare with.
        assert_eq!(
            guard
                .check("a", "https://other:443", "q2:0", Msat::new(18_000_000), 100)
                .await
                .unwrap(),
            PriceCheck::Fine
        );
        // A payment above the cached highest raises it.
        guard.paid("a", o, "q3:0", Msat::new(30_000));
        assert_eq!(check("q4:0", 60_000).await, PriceCheck::Fine);
        assert_eq!(
            check("q4:0", 60_001).await,
            PriceCheck::Jumped {
                last: Msat::new(30_000),
                new_service: true
            }
        );
        assert_eq!(
            ledger.highest_price("b", o).await.unwrap(),
            Some(Msat::new(9_000_000))
        );
        assert_eq!(ledger.highest_price("c", o).await.unwrap(), None);
    }
}
