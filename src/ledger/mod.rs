//! The money authority, behind one trait: every operation that decides whether money may move
//! is an atomic operation of the ledger, so an embedded SQLite file (one process) and a shared
//! PostgreSQL database (many replicas) make the same promises:
//!
//! - a payment hash is claimed, budget is reserved against every agent and operator limit, and a
//!   pending record is durable — in one atomic step ([`Ledger::begin`]) — before any money
//!   leaves; a hash is never begun twice while pending or once settled;
//! - a payment is settled at its real fee or failed (its reservation released) exactly once;
//! - one purchase per (agent, origin, service) at a time, through a lease ([`Ledger::lease`]);
//! - tokens bought are stored with their proof, per agent, and found again by any process;
//! - pending payments whose process died are found ([`Ledger::unresolved`]) and reconciled.
//!
//! The cached-token hot path never calls the ledger: tokens live in the payment layer's memory.

#[cfg(test)]
pub(crate) mod contract;
pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod sqlite;

pub use outbox::{DeliveryOutcome, OutboxDelivery};
pub use retention::{Archive, Compacted, Compaction};

use crate::agents::StoredAgent;
use crate::budget::BudgetView;
use crate::config::Limits;
use crate::core::{Decline, Msat, PaymentHash, Preimage};
use crate::pay::dialect::StoredCredential;
use std::sync::Arc;
use std::time::Duration;

/// Why the ledger could not do what was asked. Money paths fail closed on any of these.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The store cannot be reached or written (a file, a lock, a closed ledger, a setting).
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL or its connection pool failed: `text` is the error with its causes (the
    /// driver's own top line says only "db error"), `source` the driver's error itself.
    #[error("the ledger is unavailable: PostgreSQL: {text}")]
    Postgres {
        /// The error and its causes, for people.
        text: String,
        /// The driver's (or the pool's) error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// SQLite failed (the ledger file could not be written or read).
    #[error("the ledger is unavailable: ledger write failed: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The store answered with something that cannot be right.
    #[error("the ledger is inconsistent: {0}")]
    Inconsistent(String),
}

impl LedgerError {
    /// What failed, for people, without the "unavailable" prefix.
    pub fn reason(&self) -> String {
        match self {
            LedgerError::Unavailable(reason) | LedgerError::Inconsistent(reason) => reason.clone(),
            LedgerError::Postgres { text, .. } => format!("PostgreSQL: {text}"),
            LedgerError::Sqlite(e) => format!("ledger write failed: {e}"),
        }
    }
}

impl From<LedgerError> for Decline {
    fn from(e: LedgerError) -> Decline {
        match e {
            LedgerError::Inconsistent(_) => Decline::LedgerInconsistent,
            unavailable => Decline::StoreUnavailable {
                reason: unavailable.reason(),
            },
        }
    }
}

/// A payment about to leave, as recorded before the wallet is called.
#[derive(Clone)]
pub struct NewPayment {
    /// The invoice's payment hash: the claim.
    pub hash: PaymentHash,
    /// The agent paying.
    pub agent: Arc<str>,
    /// `host:port` of the seller, for people.
    pub host: String,
    /// `scheme://host:port`, the token cache key.
    pub origin: String,
    /// The dialect that made the offer (`l402`, `payment`, `x402`).
    pub dialect: &'static str,
    /// The invoice amount.
    pub amount: Msat,
    /// Reserved on top of the amount until the real fee is known.
    pub fee_reserve: Msat,
    /// The invoice.
    pub bolt11: String,
    /// The reusable credential it buys, without its proof; `None` for single-use dialects,
    /// whose proof is never stored.
    pub credential: Option<StoredCredential>,
    /// The service the credential is for, when the offer named one.
    pub service: Option<String>,
    /// The path scope the purchase was made on.
    pub scope: String,
    /// The purchase this payment belongs to, within (agent, origin): the service (else the path
    /// scope) for a reusable credential, `=<path>` for a single-use one. While one payment of a
    /// purchase is pending, no other payment of it is begun ([`Begun::PurchaseOpen`]).
    pub purchase: String,
    /// When the credential stops being good (caveats), unix seconds.
    pub token_expires_at: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for NewPayment {
    /// No token: with its preimage it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPayment")
            .field("hash", &self.hash)
            .field("agent", &self.agent)
            .field("host", &self.host)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

/// The limits a reservation is checked against.
#[derive(Debug, Clone, Copy)]
pub struct LimitSet<'a> {
    /// The agent's own limits (its total may be overridden by the operator in the ledger).
    pub agent: &'a Limits,
    /// The operator's limits over all agents.
    pub operator: &'a Limits,
    /// The agent is managed through the admin API, so its stored record is the truth: the
    /// ledger reads it inside the reservation (gone → `agent-deleted`, paused →
    /// `agent-paused`, its stored limits instead of `agent`). Config-file agents are the
    /// process's own and use `agent` as given.
    pub api_agent: bool,
}

/// What [`Ledger::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// Claimed, reserved and recorded pending: the payment may be sent now.
    Fresh,
    /// The hash was paid before. Its proof is returned only if it was stored (a reusable
    /// credential); the caller decides whether this agent and origin may use it.
    Settled {
        /// The agent that paid it.
        agent: String,
        /// Where it was paid.
        origin: String,
        /// The verified proof, when it was kept.
        proof: Option<Preimage>,
        /// The fee paid.
        fee: Msat,
    },
    /// Sent before and not resolved: never sent again; it is being reconciled.
    InFlight,
    /// Another payment of the same purchase (agent, origin, [`NewPayment::purchase`]) is pending
    /// — sent and not resolved, so it may yet settle and serve. Nothing was claimed or
    /// reserved for this one.
    PurchaseOpen {
        /// The pending payment's hash.
        hash: PaymentHash,
    },
}

/// One purchase at a time per agent, origin and service (or path scope when the offer names
/// no service): the unit of single flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight<'a> {
    /// The agent buying.
    pub agent: &'a str,
    /// Where.
    pub origin: &'a str,
    /// The service, else the path scope.
    pub service: &'a str,
}

impl Flight<'_> {
    /// The flight's key, one string.
    pub fn key(&self) -> String {
        format!("{}\n{}\n{}", self.agent, self.origin, self.service)
    }
}

/// Where a payment stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Handed (or about to be handed) to the wallet; outcome not known yet.
    Pending,
    /// Settled with a verified preimage.
    Settled,
    /// Failed; its budget was released.
    Failed,
}

impl PaymentState {
    /// `pending`, `settled` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "pending",
            PaymentState::Settled => "settled",
            PaymentState::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<PaymentState> {
        match s {
            "pending" => Some(PaymentState::Pending),
            "settled" => Some(PaymentState::Settled),
            "failed" => Some(PaymentState::Failed),
            _ => None,
        }
    }
}

/// One payment as the ledger holds it (never its preimage).
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The payment hash.
    pub hash: PaymentHash,
    /// The agent that paid.
    pub agent: String,
    /// `host:port` of the seller.
    pub host: String,
    /// `scheme://host:port`.
    pub origin: String,
    /// The dialect paid.
    pub dialect: String,
    /// The invoice amount.
    pub amount: Msat,
    /// The real fee, once settled.
    pub fee: Option<Msat>,
    /// The fee reserve held while pending.
    pub fee_reserve: Msat,
    /// Where it stands.
    pub state: PaymentState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Why it failed.
    pub failure: Option<String>,
    /// The reusable credential bought, if any.
    pub credential: Option<StoredCredential>,
    /// The service it was bought for.
    pub service: Option<String>,
    /// The path scope it was bought on.
    pub scope: String,
    /// Caveat expiry of the credential.
    pub token_expires_at: Option<u64>,
    /// The purchase it belongs to (see [`NewPayment::purchase`]); `None` for rows written
    /// before purchases were recorded.
    pub purchase: Option<String>,
    /// The caps per seller it counts under (their owner keys, see
    /// [`crate::budget::seller_owner`]), as decided when it was reserved.
    pub sellers: Vec<String>,
}

/// The caps per seller of a payment as stored: owner keys one per line (`None` for none).
pub fn sellers_text(sellers: &[String]) -> Option<String> {
    (!sellers.is_empty()).then(|| sellers.join("\n"))
}

/// [`sellers_text`] read back.
pub fn sellers_from_text(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

impl PaymentRecord {
    /// What the payment counts against budgets: the real fee once known, else the reserve.
    pub fn charged(&self) -> Msat {
        self.amount
            .saturating_add(self.fee.unwrap_or(self.fee_reserve))
    }
}

impl std::fmt::Debug for PaymentRecord {
    /// No token: it is half a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRecord")
            .field("hash", &self.hash)
            .field("agent", &self.agent)
            .field("host", &self.host)
            .field("amount", &self.amount)
            .field("fee", &self.fee)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A reusable credential with its verified proof, as stored.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The agent it belongs to.
    pub agent: String,
    /// Where it is good.
    pub origin: String,
    /// The stored credential (scheme and token).
    pub credential: StoredCredential,
    /// The proof, verified against the payment hash on the way out of the store.
    pub proof: Preimage,
    /// The service it is for.
    pub service: Option<String>,
    /// Path scopes where it worked.
    pub scopes: Vec<String>,
    /// Caveat expiry, unix seconds.
    pub expires_at: Option<u64>,
}

/// Filters for listing payments.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    /// Only this agent's.
    pub agent: Option<String>,
    /// Only in this state.
    pub state: Option<PaymentState>,
    /// Only to this host (`host:port` or bare host).
    pub host: Option<String>,
    /// Created at or after (unix seconds).
    pub since: Option<i64>,
    /// Created before (unix seconds).
    pub until: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A refusal to pay, as recorded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclineRecord {
    /// The agent refused.
    pub agent: String,
    /// `host:port`.
    pub host: String,
    /// The request path (without the query).
    pub path: String,
    /// The decline code.
    pub code: String,
    /// The sentence.
    pub detail: String,
    /// The invoice amount, when one was read.
    pub amount: Option<Msat>,
    /// Unix seconds.
    pub created_at: i64,
    /// How many identical refusals this record stands for (repeats are folded together).
    pub count: u64,
}

/// The scope of a [`Stop`] over the whole fleet (agent names can never be `*`).
pub const FLEET: &str = "*";

/// Payments stopped for the whole fleet (scope [`FLEET`]) or one agent (its name), by the
/// operator's kill switch or by a spend-spike breaker, until the operator resumes. Every
/// reservation reads the stops in force in the same atomic step that reserves, on every
/// replica sharing the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stop {
    /// [`FLEET`], or the agent's name.
    pub scope: String,
    /// Who stopped it: `operator`, or `breaker`.
    pub by: String,
    /// Why (the decline code that tripped a breaker, or the operator's words).
    pub reason: String,
    /// When (unix seconds).
    pub at: i64,
}

impl Stop {
    /// The decline a payment of `agent` gets while this stop is in force.
    pub fn decline(&self, agent: &str) -> Decline {
        if self.scope == FLEET {
            Decline::FleetPaused {
                by: self.by.clone(),
                reason: self.reason.clone(),
            }
        } else {
            Decline::AgentStopped {
                agent: agent.to_string(),
                reason: self.reason.clone(),
            }
        }
    }

    /// The stop a tripped breaker leaves: on the agent, or on the fleet for the operator's.
    pub fn tripped(decline: &Decline, agent: &str, at: i64) -> Option<Stop> {
        let Decline::SpendSpike { whose, .. } = decline else {
            return None;
        };
        Some(Stop {
            scope: match whose {
                crate::core::decline::Whose::Agent => agent.to_string(),
                crate::core::decline::Whose::Operator => FLEET.to_string(),
            },
            by: "breaker".into(),
            reason: decline.code().to_string(),
            at,
        })
    }
}

/// A breaker's decline stops its scope in `ledger` — the first trip only: a payment that finds
/// the scope stopped already (another replica's trip) is told so instead. Other declines pass
/// through unchanged.
pub(crate) async fn trip<L: Ledger + ?Sized>(
    ledger: &L,
    decline: Decline,
    agent: &str,
    now: i64,
) -> Decline {
    let Some(stop) = Stop::tripped(&decline, agent, now) else {
        return decline;
    };
    match ledger.stop(&stop).await {
        Ok(true) => decline,
        Ok(false) => stop.decline(agent),
        Err(e) => {
            tracing::error!(error = %e, scope = %stop.scope, "the breaker tripped but its stop could not be stored");
            decline
        }
    }
}

/// One change made through the admin API, as recorded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// Who made it (the admin token's label).
    pub who: String,
    /// What (`agent.create`, `agent.update`, `agent.key`, `agent.delete`, `budget`, `approval`).
    pub action: String,
    /// The agent concerned.
    pub agent: String,
    /// The change, for people.
    pub detail: String,
}

/// Where a held payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    /// Waiting for the operator.
    Pending,
    /// Approved: the payment may go ahead (once: it is for one payment hash).
    Approved,
    /// Denied by the operator.
    Denied,
    /// Nobody decided in time.
    Expired,
}

impl ApprovalState {
    /// `pending`, `approved`, `denied` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
        }
    }

    /// The inverse of [`ApprovalState::as_str`].
    pub fn parse(s: &str) -> Option<ApprovalState> {
        Some(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "expired" => ApprovalState::Expired,
            _ => return None,
        })
    }
}

/// A payment held for the operator's decision. One record is for one payment hash; it is
/// decided once (pending → approved, denied or expired) and never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr_…`, random.
    pub id: String,
    /// The agent whose payment waits.
    pub agent: String,
    /// `host:port` of the seller.
    pub host: String,
    /// The service (or path scope) bought.
    pub service: String,
    /// The invoice amount.
    pub amount: Msat,
    /// The invoice's hash.
    pub payment_hash: PaymentHash,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it can no longer be approved.
    pub expires_at: i64,
    /// Where it stands.
    pub state: ApprovalState,
    /// Who decided (`admin`, or `timeout`).
    pub decided_by: Option<String>,
    /// When, unix seconds.
    pub decided_at: Option<i64>,
}

/// Filters for listing declines.
#[derive(Debug, Clone, Default)]
pub struct DeclineFilter {
    /// Only this agent's.
    pub agent: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The shared money authority. Every method is atomic on its own; see the module docs for the
/// promises every implementation keeps.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Claims the hash, reserves amount + fee reserve against every limit of the agent and the
    /// operator, and makes the pending record durable, atomically. Over a limit is a decline;
    /// a store failure is [`Decline::StoreUnavailable`]: no payment without a durable record.
    async fn begin(&self, payment: NewPayment, limits: LimitSet<'_>) -> Result<Begun, Decline>;

    /// Records a pending payment as settled at `fee` and commits its spend (amount + fee),
    /// giving the unused fee reserve back. The proof is stored only when the payment bought a
    /// reusable credential. In the same commit, this process's purchase lease on the payment's
    /// flight (if it holds one) is given back: the token is findable before the lease is gone.
    async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        proof: &Preimage,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// Records a pending payment as failed and releases its reservation.
    async fn fail(&self, hash: PaymentHash, reason: &str, now: i64) -> Result<(), LedgerError>;

    /// Where one payment stands, `None` when the ledger has no record of the hash.
    async fn payment_state(&self, hash: PaymentHash) -> Result<Option<PaymentState>, LedgerError>;

    /// Pending payments this process should resolve: its own, and those of processes that
    /// stopped renewing their presence (taken over atomically). Oldest first.
    async fn unresolved(&self) -> Result<Vec<PaymentRecord>, LedgerError>;

    /// Takes the purchase lease of `flight` for `ttl`: true when this process may buy. Across
    /// processes, exactly one holder at a time; a lease whose holder died or expired can be
    /// taken, but not while a payment for the same flight is still pending (it may yet settle
    /// and serve).
    async fn lease(&self, flight: &Flight<'_>, ttl: Duration) -> Result<bool, LedgerError>;

    /// Gives a lease back early (a settled payment already gave its flight's lease back).
    async fn release_lease(&self, flight: &Flight<'_>) -> Result<(), LedgerError>;

    /// Whether other processes share this ledger (tokens may be bought elsewhere).
    fn shared(&self) -> bool {
        false
    }

    /// Whether the store answered its last health check (payments fail closed when not).
    fn available(&self) -> bool {
        true
    }

    /// Tokens stored by other processes, as they are stored (shared ledgers only; taken once).
    fn token_feed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StoredToken>> {
        None
    }

    /// The newest live stored token of `agent` at `origin` for `service` (or, without a
    /// service, bought on `scope`), bought by any process.
    async fn find_token(
        &self,
        agent: &str,
        origin: &str,
        service: Option<&str>,
        scope: &str,
        now: u64,
    ) -> Result<Option<StoredToken>, LedgerError>;

    /// Every live stored token, to fill the cache at start.
    async fn live_tokens(&self, now: u64) -> Result<Vec<StoredToken>, LedgerError>;

    /// Marks a token as no longer accepted by its server, so no process restores it.
    async fn retire_token(&self, hash: PaymentHash) -> Result<(), LedgerError>;

    /// Remembers that a token worked on another path scope.
    async fn learn_scope(&self, hash: PaymentHash, scope: &str) -> Result<(), LedgerError>;

    /// Records a refusal (repeats within a short time are folded into one record).
    async fn record_decline(&self, decline: DeclineRecord) -> Result<(), LedgerError>;

    /// Recorded refusals, newest first.
    async fn declines(&self, filter: DeclineFilter) -> Result<Vec<DeclineRecord>, LedgerError>;

    /// Payments, newest first.
    async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError>;

    /// Sets, or with `None` clears, the operator's override of an agent's total limit.
    async fn set_total(
        &self,
        agent: &str,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// The operator's override of an agent's total, if any.
    async fn total_override(&self, agent: &str) -> Result<Option<Msat>, LedgerError>;

    /// One agent's budget under `limits`.
    async fn budget(&self, agent: &str, limits: &Limits) -> Result<BudgetView, LedgerError>;

    /// The operator's spend over all agents, under the operator's limits (its `agent` is `""`).
    async fn operator_budget(&self, limits: &Limits) -> Result<BudgetView, LedgerError>;

    /// Resolves once everything written before it is durable.
    async fn flush(&self) -> Result<(), LedgerError>;

    /// The agents made through the admin API.
    async fn api_agents(&self) -> Result<Vec<StoredAgent>, LedgerError>;

    /// Stores a new API agent; `false` when the name is taken.
    async fn create_agent(&self, agent: &StoredAgent) -> Result<bool, LedgerError>;

    /// Replaces an API agent; `false` when there is none of that name.
    async fn update_agent(&self, agent: &StoredAgent) -> Result<bool, LedgerError>;

    /// Removes an API agent and retires its tokens (its payments stay); `false` when unknown.
    async fn delete_agent(&self, name: &str) -> Result<bool, LedgerError>;

    /// Records a change made through the admin API.
    async fn audit(&self, entry: AuditEntry) -> Result<(), LedgerError>;

    /// The audit log, newest first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError>;

    /// Stores a new held payment (state pending).
    async fn create_approval(&self, approval: &ApprovalRecord) -> Result<(), LedgerError>;

    /// One held payment, in any state.
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, LedgerError>;

    /// The held payments still waiting at `now`, oldest first.
    async fn pending_approvals(&self, now: i64) -> Result<Vec<ApprovalRecord>, LedgerError>;

    /// One agent's held payments in every state (waiting and decided), newest first, at most
    /// `limit` (its own view through MCP `approvals`).
    async fn agent_approvals(
        &self,
        agent: &str,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, LedgerError>;

    /// Decides a held payment: moves it from pending to `state` — approved or denied only
    /// before it expires, expired at any time. Returns the record as it stands afterwards
    /// (unchanged when it was already decided: the caller compares), `None` for an unknown id.
    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<Option<ApprovalRecord>, LedgerError>;

    /// Claims an alert's once-only key (`budget:agent:research:daily:1764547200:80`): `true` for
    /// the first claim across every process sharing the ledger, `false` after.
    async fn claim_alert(&self, key: &str, at: i64) -> Result<bool, LedgerError>;

    /// The amount of the last settled payment of `agent` for `flight` (the service, or the path
    /// scope) at `origin`.
    async fn last_price(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
    ) -> Result<Option<Msat>, LedgerError>;

    /// Announces that another process changed the API's agents (shared ledgers; taken once).
    fn agent_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
        None
    }

    /// The stops in force (fleet and agents), oldest first.
    async fn stops(&self) -> Result<Vec<Stop>, LedgerError>;

    /// Puts `stop` in force; `false` (and nothing changed) when its scope was stopped already.
    async fn stop(&self, stop: &Stop) -> Result<bool, LedgerError>;

    /// Lifts the stop of `scope`, returning it; `None` when there was none.
    async fn resume(&self, scope: &str) -> Result<Option<Stop>, LedgerError>;

    /// The highest amount of any settled payment of `agent` at `origin`, over all its services:
    /// what the price-jump guard compares a service new to the agent there with, so a seller
    /// cannot dodge it by renaming a service.
    async fn highest_price(&self, agent: &str, origin: &str) -> Result<Option<Msat>, LedgerError>;

    /// Queues webhook deliveries in the outbox (state `queued`, due now, no attempt made); a
    /// delivery already there (same id and endpoint) is left as it is. Then, when more than
    /// `cap` deliveries wait, the oldest waiting ones are marked `dropped`; finished ones older
    /// than [`outbox::FINISHED_KEPT_MS`] are deleted. Returns how many were dropped.
    async fn queue_deliveries(
        &self,
        deliveries: Vec<OutboxDelivery>,
        cap: usize,
        now_ms: i64,
    ) -> Result<u64, LedgerError>;

    /// Leases up to `limit` waiting deliveries to `endpoints` that are due at `now_ms` and not
    /// leased by anyone (or whose lease ran out) to `holder` until `now_ms + lease_ms`, oldest
    /// due first. Across processes, a delivery is held by one at a time.
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxDelivery>, LedgerError>;

    /// Records how an attempt at a held delivery ended (one attempt more), releasing its lease.
    async fn finish_delivery(
        &self,
        id: &str,
        endpoint: &str,
        outcome: DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Removes one batch of old payments and declines as [`Compaction`] says (see
    /// [`retention`] for what is kept): rolled up, archived first when an archive is set.
    async fn compact(&self, round: &Compaction) -> Result<Compacted, LedgerError>;
}
