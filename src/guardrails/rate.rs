//! Rate limits: `requests_per_minute` and `payments_per_minute` per agent,
//! `operator_limits.payments_per_minute` over all agents, and `max_connections` per agent.
//!
//! Each per-minute limit is a token bucket holding at most a minute's worth (so a burst up to
//! the limit is allowed, then one per `60 / limit` seconds). Buckets live in this process: with
//! several replicas each enforces its own (the money limits are the cluster-wide ones). An
//! agent with no such limit costs nothing here: no map entry, no lock.

use crate::config::Limits;
use crate::core::{Clock, Decline};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One token bucket: `capacity` tokens, refilled at `capacity` per minute.
#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    tokens: f64,
    /// Unix milliseconds of the last refill.
    at_ms: i64,
}

impl Bucket {
    /// A full bucket for `per_minute`.
    fn new(per_minute: u32, now_ms: i64) -> Bucket {
        Bucket {
            capacity: f64::from(per_minute),
            tokens: f64::from(per_minute),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, per_minute: u32, now_ms: i64) {
        // A changed limit (reload, API) takes effect at once, keeping what was used.
        let capacity = f64::from(per_minute);
        if capacity != self.capacity {
            self.tokens = (self.tokens + capacity - self.capacity).clamp(0.0, capacity);
            self.capacity = capacity;
        }
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * capacity / 60_000.0).min(capacity);
        self.at_ms = now_ms.max(self.at_ms);
    }

    /// Whole seconds until one token is there (at least 1).
    fn wait_secs(&self) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        let ms = missing * 60_000.0 / self.capacity;
        ((ms / 1000.0).ceil() as u64).max(1)
    }
}

/// Token buckets by key.
#[derive(Debug, Default)]
struct Buckets(DashMap<String, Arc<Mutex<Bucket>>>);

impl Buckets {
    fn bucket(&self, key: &str, per_minute: u32, now_ms: i64) -> Arc<Mutex<Bucket>> {
        if let Some(b) = self.0.get(key) {
            return b.clone();
        }
        self.0
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(per_minute, now_ms))))
            .clone()
    }
}

/// Locks a bucket; a poisoned lock still holds consistent numbers (plain floats).
fn lock(b: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every rate limit of this process.
pub struct RateLimits {
    clock: Arc<dyn Clock>,
    requests: Buckets,
    payments: Buckets,
    operator_payments: Mutex<Option<Bucket>>,
    connections: DashMap<String, Arc<AtomicU32>>,
}

impl RateLimits {
    /// No bucket yet; they are made on first use.
    pub fn new(clock: Arc<dyn Clock>) -> RateLimits {
        RateLimits {
            clock,
            requests: Buckets::default(),
            payments: Buckets::default(),
            operator_payments: Mutex::new(None),
            connections: DashMap::new(),
        }
    }

    /// Counts one request of `agent` against its `requests_per_minute`.
    pub fn request(&self, agent: &str, limits: &Limits) -> Result<(), Decline> {
        let Some(per_minute) = limits.requests_per_minute else {
            return Ok(());
        };
        let now = self.clock.now_millis();
        let bucket = self.requests.bucket(agent, per_minute, now);
        let mut b = lock(&bucket);
        b.refill(per_minute, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Decline::RateLimited {
                limit: "requests_per_minute",
                retry_after_secs: b.wait_secs(),
            })
        }
    }

    /// Counts one payment of `agent` against its and the operator's `payments_per_minute`:
    /// both are taken or neither.
    pub fn payment(&self, agent: &str, limits: &Limits, operator: &Limits) -> Result<(), Decline> {
        let now = self.clock.now_millis();
        let agent_bucket = limits
            .payments_per_minute
            .map(|n| (n, self.payments.bucket(agent, n, now)));
        let mut agent_guard = agent_bucket.as_ref().map(|(n, b)| {
            let mut g = lock(b);
            g.refill(*n, now);
            g
        });
        if let Some(g) = &agent_guard {
            if g.tokens < 1.0 {
                return Err(Decline::RateLimited {
                    limit: "payments_per_minute",
                    retry_after_secs: g.wait_secs(),
                });
            }
        }
        if let Some(n) = operator.payments_per_minute {
            let mut slot = self
                .operator_payments
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let b = slot.get_or_insert_with(|| Bucket::new(n, now));
            b.refill(n, now);
            if b.tokens < 1.0 {
                return Err(Decline::RateLimited {
                    limit: "operator payments_per_minute",
                    retry_after_secs: b.wait_secs(),
                });
            }
            b.tokens -= 1.0;
        }
        if let Some(g) = agent_guard.as_mut() {
            g.tokens -= 1.0;
        }
        Ok(())
    }

    /// Opens a connection slot of `agent` under its `max_connections`; the slot is freed when
    /// the returned guard drops. `None` (no limit) costs nothing.
    pub fn connection(
        &self,
        agent: &str,
        limits: &Limits,
    ) -> Result<Option<ConnectionSlot>, Decline> {
        let Some(max) = limits.max_connections else {
            return Ok(None);
        };
        let count = self
            .connections
            .entry(agent.to_string())
            .or_insert_with(|| Arc::new(AtomicU32::new(0)))
            .clone();
        let taken = count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            Ok(Some(ConnectionSlot(count)))
        } else {
            Err(Decline::RateLimited {
                limit: "max_connections",
                retry_after_secs: 1,
            })
        }
    }

    /// Forgets the buckets of agents no longer known.
    pub fn retain_agents(&self, known: impl Fn(&str) -> bool) {
        self.requests.0.retain(|k, _| known(k));
        self.payments.0.retain(|k, _| known(k));
        self.connections
            .retain(|k, v| known(k) || v.load(Ordering::Acquire) > 0);
    }
}

/// One open connection counted against `max_connections`; freed on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicU32>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::time::ManualClock;

    fn limits(rpm: Option<u32>, ppm: Option<u32>, conns: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            payments_per_minute: ppm,
            max_connections: conns,
            ..Limits::NONE
        }
    }

    #[test]
    fn a_bucket_allows_a_burst_then_refills_at_its_rate() {
        let clock = Arc::new(ManualClock::new(1_000));
        let rl = RateLimits::new(clock.clone());
        let l = limits(Some(3), None, None);
        for _ in 0..3 {
            rl.request("a", &l).unwrap();
        }
        let Err(Decline::RateLimited {
            retry_after_secs, ..
        }) = rl.request("a", &l)
        else {
            panic!("the fourth request is over the limit");
        };
        assert_eq!(retry_after_secs, 20, "one token every 20 s");
        // Another agent has its own bucket.
        rl.request("b", &l).unwrap();
        clock.advance(19);
        assert!(rl.request("a", &l).is_err());
        clock.advance(1);
        rl.request("a", &l).unwrap();
        assert!(rl.request("a", &l).is_err());
        clock.advance(600);
        for _ in 0..3 {
            rl.request("a", &l).unwrap();
        }
        assert!(
            rl.request("a", &l).is_err(),
            "never more than a minute's worth"
        );
    }

    #[test]
    fn payments_take_the_agent_and_the_operator_bucket_together() {
        let clock = Arc::new(ManualClock::new(1_000));
        let rl = RateLimits::new(clock.clone());
        let agent = limits(None, Some(2), None);
        let operator = limits(None, Some(3), None);
        rl.payment("a", &agent, &operator).unwrap();
        rl.payment("a", &agent, &operator).unwrap();
        let e = rl.payment("a", &agent, &operator).unwrap_err();
        assert_eq!(e.code(), "rate-limited");
        assert!(e.to_string().contains("payments_per_minute"), "{e}");
        // The agent's refusal took nothing from the operator's bucket.
        rl.payment("b", &agent, &operator).unwrap();
        let e = rl.payment("c", &agent, &operator).unwrap_err();
        assert!(
            e.to_string().contains("operator payments_per_minute"),
            "{e}"
        );
        assert_eq!(e.retry_after(), Some(20));
        clock.advance(30);
        rl.payment("c", &agent, &operator).unwrap();
    }

    #[test]
    fn a_lowered_limit_applies_at_once() {
        let clock = Arc::new(ManualClock::new(0));
        let rl = RateLimits::new(clock);
        rl.request("a", &limits(Some(10), None, None)).unwrap();
        let lower = limits(Some(2), None, None);
        rl.request("a", &lower).unwrap();
        assert!(rl.request("a", &lower).is_err());
    }

    #[test]
    fn connection_slots_are_counted_and_freed() {
        let rl = RateLimits::new(Arc::new(ManualClock::new(0)));
        let l = limits(None, None, Some(2));
        let one = rl.connection("a", &l).unwrap();
        let two = rl.connection("a", &l).unwrap();
        assert!(rl.connection("a", &l).is_err());
        drop(one);
        let three = rl.connection("a", &l).unwrap();
        assert!(three.is_some());
        drop((two, three));
        assert!(rl.connection("a", &Limits::NONE).unwrap().is_none());
    }
}
