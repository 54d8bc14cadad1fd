//! The webhook outbox: every alert delivery is a row of the ledger until it is delivered, given
//! up on, or dropped, so a restart — or another replica sharing a PostgreSQL ledger — delivers
//! what one process could not.
//!
//! Invariants every store keeps:
//! - a delivery is keyed by (event id, endpoint): the id is the one in the body and stays the
//!   same across retries and processes (receivers deduplicate by it);
//! - a delivery is attempted only by the process holding its lease ([`Ledger::claim_deliveries`]):
//!   two processes never hold one delivery at once, and a lease outlives an attempt;
//! - at most `cap` deliveries wait: queueing more marks the oldest waiting ones `dropped`, as
//!   are deliveries waiting longer than [`ABANDONED_AFTER_MS`] (their webhook is gone).
//!
//! [`Ledger::claim_deliveries`]: super::Ledger::claim_deliveries

/// One delivery as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDelivery {
    /// The event's id (the `id` in the body), the same for every endpoint of one event.
    pub id: String,
    /// The endpoint's key (a digest of its URL, secret and filter: never the URL itself).
    pub endpoint: String,
    /// The endpoint's host, for people.
    pub host: String,
    /// The event name (`budget.threshold`, …).
    pub event: String,
    /// The exact body posted (and signed) on every attempt.
    pub body: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds of the next attempt.
    pub next_at_ms: i64,
    /// Unix milliseconds it was queued.
    pub created_at_ms: i64,
}

/// How an attempt ended, as recorded by [`Ledger::finish_delivery`](super::Ledger::finish_delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered (a 2xx): done.
    Delivered,
    /// Failed; try again at this unix millisecond (the lease is released).
    Retry {
        /// Unix milliseconds of the next attempt.
        next_at_ms: i64,
    },
    /// Failed for the last time: given up.
    Failed,
    /// Abandoned (its webhook was removed by a reload while it was held).
    Dropped,
}

impl DeliveryOutcome {
    /// The state stored for it: `queued`, `delivered`, `failed` or `dropped`.
    pub fn state(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry { .. } => "queued",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Dropped => "dropped",
        }
    }
}

/// A delivery still waiting this long after it was queued is dropped: no process has its
/// webhook any more (every retry schedule ends well before).
pub const ABANDONED_AFTER_MS: i64 = 86_400_000;

/// Finished deliveries (delivered, failed, dropped) are kept this long for people, then deleted.
pub const FINISHED_KEPT_MS: i64 = 7 * 86_400_000;
