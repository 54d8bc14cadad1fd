//! The embedded ledger: one proxy process owns one SQLite file. The money authority is the
//! process's own memory (the budget's critical section, the set of claimed hashes, the held
//! reservations), journalled durably before any money moves; an exclusive lock on the file
//! refuses a second process, since two processes could not share that memory.

pub mod journal;

use super::{
    ApprovalRecord, ApprovalState, AuditEntry, Begun, Compacted, Compaction, DeclineFilter,
    DeclineRecord, DeliveryOutcome, Flight, Ledger, LedgerError, LimitSet, NewPayment,
    OutboxDelivery, PaymentFilter, PaymentRecord, PaymentState, Stop, StoredToken, FLEET,
};
use crate::agents::StoredAgent;
use crate::budget::{Budget, BudgetView, Reservation};
use crate::config::Limits;
use crate::core::window::Window;
use crate::core::{Clock, Decline, Msat, PaymentHash, Preimage};
use dashmap::DashMap;
use journal::{Journal, JournalBegin};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tokens are restored from payments this recent.
const TOKEN_RESTORE_WINDOW_SECS: i64 = 30 * 86_400;
/// Repeats of one refusal within this many seconds are folded into one record.
const DECLINE_FOLD_SECS: i64 = 60;

/// The embedded ledger.
pub struct SqliteLedger {
    journal: Journal,
    budget: Budget,
    clock: Arc<dyn Clock>,
    /// Hashes with a pending payment of this process: claimed, never begun again.
    claimed: DashMap<PaymentHash, ()>,
    /// What each pending payment holds: its reservation, its amount, and whether its proof is
    /// to be kept (it buys a reusable credential).
    reservations: Mutex<HashMap<PaymentHash, Held>>,
    /// Open purchases: `agent \n origin \n purchase` → the pending payment of it. One entry
    /// per purchase: a second payment of an open purchase is never begun.
    open: DashMap<String, PaymentHash>,
    /// The API agents' stored state (paused, limits), read inside the reservation's critical
    /// section; replaced whenever the agents table is written.
    api: Mutex<HashMap<String, ApiAgent>>,
    /// The stops in force by scope ([`FLEET`] or an agent), read inside the reservation's
    /// critical section; written through to the journal.
    stops: Mutex<HashMap<String, Stop>>,
    /// Held open for the process's lifetime: the exclusive lock on `<db>.lock`.
    _lock: std::fs::File,
}

/// A pending payment's reservation and what settling it needs.
struct Held {
    reservation: Reservation,
    amount: Msat,
    keep_proof: bool,
    /// Its key in `open`, when it recorded its purchase.
    purchase: Option<String>,
}

/// What a reservation needs of an API agent.
struct ApiAgent {
    paused: bool,
    limits: Limits,
}

/// The key of a purchase in [`SqliteLedger::open`].
fn purchase_key(agent: &str, origin: &str, purchase: &str) -> String {
    format!("{agent}\n{origin}\n{purchase}")
}

/// What opening the ledger found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Settled payments counted into the current windows.
    pub settled_in_windows: usize,
    /// Pending payments left by an earlier run, their budget held until reconciled.
    pub pending: usize,
}

impl SqliteLedger {
    /// Opens (creating) the ledger at `path`, takes the file's exclusive lock, and reads spend,
    /// operator overrides and pending payments back into memory.
    pub async fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(SqliteLedger, Restored), LedgerError> {
        let lock = lock_file(path)?;
        let journal = Journal::open(path)?;
        let ledger = SqliteLedger {
            journal,
            budget: Budget::new(clock.clone()),
            clock,
            claimed: DashMap::new(),
            reservations: Mutex::new(HashMap::new()),
            open: DashMap::new(),
            api: Mutex::new(HashMap::new()),
            stops: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        let restored = ledger.restore().await?;
        Ok((ledger, restored))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.journal.path()
    }

    async fn restore(&self) -> Result<Restored, LedgerError> {
        let now = self.clock.now();
        let mut report = Restored::default();
        for (agent, total) in self.journal.totals().await? {
            self.budget.set_total(&agent, Some(total));
        }
        let since = Window::Week.start(now).min(Window::Month.start(now));
        let (recent, older) = self.journal.spend(since).await?;
        for row in &recent {
            let _settled =
                self.budget
                    .restore_with(&row.agent, &row.sellers, row.created_at, row.charged());
        }
        report.settled_in_windows = recent.len();
        for (agent, msat) in older {
            let _settled = self.budget.restore(&agent, since - 1, msat);
        }
        for (sellers, msat) in self.journal.seller_spend(since).await? {
            self.budget.restore_sellers(&sellers, msat);
        }
        for row in self.journal.pending().await? {
            let reservation =
                self.budget
                    .restore_with(&row.agent, &row.sellers, row.created_at, row.charged());
            self.claimed.insert(row.hash, ());
            let purchase = row
                .purchase
                .as_deref()
                .map(|p| purchase_key(&row.agent, &row.origin, p));
            if let Some(key) = &purchase {
                self.open.insert(key.clone(), row.hash);
            }
            self.hold(
                row.hash,
                Held {
                    reservation,
                    amount: row.amount,
                    keep_proof: row.credential.is_some(),
                    purchase,
                },
            );
            report.pending += 1;
        }
        self.reload_api_agents().await?;
        {
            let stops = self.journal.stops().await?;
            let mut held = self.stops.lock().unwrap_or_else(|p| p.into_inner());
            for stop in stops {
                held.insert(stop.scope.clone(), stop);
            }
        }
        Ok(report)
    }

    /// Re-reads the API agents' stored state after the agents table changed.
    async fn reload_api_agents(&self) -> Result<(), LedgerError> {
        let agents = self.journal.api_agents().await?;
        let fresh = agents
            .into_iter()
            .map(|a| {
                (
                    a.name,
                    ApiAgent {
                        paused: a.paused,
                        limits: a.limits,
                    },
                )
            })
            .collect();
        *self.api.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Records an API agent's new state for the reservations that follow.
    fn remember_api_agent(&self, agent: &StoredAgent) {
        self.api.lock().unwrap_or_else(|p| p.into_inner()).insert(
            agent.name.clone(),
            ApiAgent {
                paused: agent.paused,
                limits: agent.limits.clone(),
            },
        );
    }

    /// Closes the purchase a resolved payment held open.
    fn close_purchase(&self, held: &Held) {
        if let Some(key) = &held.purchase {
            self.open.remove(key);
        }
    }

    /// Reserves amount + fee reserve against the limits in force now: for an API agent, its
    /// stored state, read under the same lock its changes are written under, so a pause, a
    /// deletion or lower limits recorded before this point are what the reservation sees.
    fn reserve(&self, payment: &NewPayment, limits: LimitSet<'_>) -> Result<Reservation, Decline> {
        let amount = payment.amount.saturating_add(payment.fee_reserve);
        {
            let stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(stop) = stops.get(FLEET).or_else(|| stops.get(&*payment.agent)) {
                return Err(stop.decline(&payment.agent));
            }
        }
        if !limits.api_agent {
            return self.budget.reserve_at(
                &payment.agent,
                &payment.host,
                limits.agent,
                limits.operator,
                amount,
            );
        }
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        match api.get(&*payment.agent) {
            None => Err(Decline::AgentDeleted {
                agent: payment.agent.to_string(),
            }),
            Some(a) if a.paused => Err(Decline::AgentPaused {
                agent: payment.agent.to_string(),
            }),
            Some(a) => self.budget.reserve_at(
                &payment.agent,
                &payment.host,
                &a.limits,
                limits.operator,
                amount,
            ),
        }
    }

    fn hold(&self, hash: PaymentHash, held: Held) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, held);
    }

    fn take(&self, hash: &PaymentHash) -> Option<Held> {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash)
    }

    fn token_of(
        &self,
        (row, scopes, preimage): (PaymentRecord, Vec<String>, Option<String>),
    ) -> Option<StoredToken> {
        let credential = row.credential?;
        let proof = match Preimage::verify_hex(preimage.as_deref()?, &row.hash) {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(hash = %row.hash.short(), "ledger preimage does not match its hash; token skipped");
                return None;
            }
        };
        let mut all = vec![row.scope];
        all.extend(scopes);
        Some(StoredToken {
            agent: row.agent,
            origin: row.origin,
            credential,
            proof,
            service: row.service,
            scopes: all,
            expires_at: row.token_expires_at,
        })
    }
}

/// Takes the exclusive lock that keeps a second process away from this ledger.
fn lock_file(path: &Path) -> Result<std::fs::File, LedgerError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| LedgerError::Unavailable(format!("store.path {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&lock_path).map_err(|e| {
        LedgerError::Unavailable(format!(
            "store.path: cannot open {}: {e}",
            lock_path.display()
        ))
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::Unavailable(format!(
            "store.path {} is in use by another l402-proxy process: an SQLite ledger belongs to one process \
             (stop the other one, give this one its own store.path, or share one budget across replicas with store.backend: postgres)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(LedgerError::Unavailable(format!(
            "store.path: cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

#[async_trait::async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&self, payment: NewPayment, limits: LimitSet<'_>) -> Result<Begun, Decline> {
        let hash = payment.hash;
        // Claim first: a second begin of a pending hash never reserves anything.
        if self.claimed.insert(hash, ()).is_some() {
            return Ok(Begun::InFlight);
        }
        let key = purchase_key(&payment.agent, &payment.origin, &payment.purchase);
        // Then the purchase: while one of its payments is pending, no other is begun.
        match self.open.entry(key.clone()) {
            dashmap::Entry::Occupied(open) => {
                let open = *open.get();
                self.claimed.remove(&hash);
                return Ok(Begun::PurchaseOpen { hash: open });
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(hash);
            }
        }
        let unclaim = || {
            self.open.remove(&key);
            self.claimed.remove(&hash);
        };
        let reservation = match self.reserve(&payment, limits) {
            Ok(r) => r,
            Err(decline) => {
                unclaim();
                return Err(super::trip(self, decline, &payment.agent, self.clock.now()).await);
            }
        };
        let (amount, keep_proof) = (payment.amount, payment.credential.is_some());
        match self.journal.begin(payment, reservation.sellers()).await {
            Ok(JournalBegin::Fresh) => {
                self.hold(
                    hash,
                    Held {
                        reservation,
                        amount,
                        keep_proof,
                        purchase: Some(key),
                    },
                );
                Ok(Begun::Fresh)
            }
            Ok(JournalBegin::Settled {
                agent,
                origin,
                preimage,
                fee,
            }) => {
                self.budget.release(reservation);
                unclaim();
                let proof = match preimage {
                    Some(hex) => Some(
                        Preimage::verify_hex(&hex, &hash)
                            .map_err(|_| Decline::LedgerInconsistent)?,
                    ),
                    None => None,
                };
                Ok(Begun::Settled {
                    agent,
                    origin,
                    proof,
                    fee,
                })
            }
            Ok(JournalBegin::Pending) => {
                // Pending in the file but not claimed here: left by an earlier run and being
                // reconciled, or mid-resolution. Never sent again.
                self.budget.release(reservation);
                unclaim();
                Ok(Begun::InFlight)
            }
            Err(e) => {
                self.budget.release(reservation);
                unclaim();
                tracing::error!(error = %e, "cannot record a pending payment; not paying");
                Err(e.into())
            }
        }
    }

    async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        proof: &Preimage,
        now: i64,
    ) -> Result<(), LedgerError> {
        // The money moved: count it whatever the journal says.
        let keep = match self.take(&hash) {
            Some(held) => {
                self.close_purchase(&held);
                self.budget
                    .commit(held.reservation, held.amount.saturating_add(fee));
                held.keep_proof
            }
            None => self.journal.has_credential(hash).await.unwrap_or(true),
        };
        let result = self
            .journal
            .settle(hash, fee, keep.then(|| proof.to_hex()), now)
            .await;
        self.claimed.remove(&hash);
        result
    }

    async fn fail(&self, hash: PaymentHash, reason: &str, now: i64) -> Result<(), LedgerError> {
        let result = self.journal.fail(hash, reason.to_string(), now).await;
        if let Some(held) = self.take(&hash) {
            self.close_purchase(&held);
            self.budget.release(held.reservation);
        }
        self.claimed.remove(&hash);
        result
    }

    async fn payment_state(&self, hash: PaymentHash) -> Result<Option<PaymentState>, LedgerError> {
        if self
            .reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&hash)
        {
            return Ok(Some(PaymentState::Pending));
        }
        self.journal.payment_state(hash).await
    }

    async fn unresolved(&self) -> Result<Vec<PaymentRecord>, LedgerError> {
        // Every pending row of this file holds a reservation here: none held, none pending.
        if self
            .reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Ok(Vec::new());
        }
        self.journal.pending().await
    }

    async fn lease(&self, _flight: &Flight<'_>, _ttl: Duration) -> Result<bool, LedgerError> {
        // One process owns this ledger, and the payment layer's in-process single flight
        // already admits one purchase per key at a time.
        Ok(true)
    }

    async fn release_lease(&self, _flight: &Flight<'_>) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn find_token(
        &self,
        agent: &str,
        origin: &str,
        service: Option<&str>,
        scope: &str,
        now: u64,
    ) -> Result<Option<StoredToken>, LedgerError> {
        let found = self
            .journal
            .find_token(
                agent.to_string(),
                origin.to_string(),
                service.map(str::to_string),
                scope.to_string(),
                now,
            )
            .await?;
        Ok(found.and_then(|row| self.token_of(row)))
    }

    async fn live_tokens(&self, now: u64) -> Result<Vec<StoredToken>, LedgerError> {
        let since = now as i64 - TOKEN_RESTORE_WINDOW_SECS;
        let rows = self.journal.live_tokens(now, since).await?;
        Ok(rows.into_iter().filter_map(|r| self.token_of(r)).collect())
    }

    async fn retire_token(&self, hash: PaymentHash) -> Result<(), LedgerError> {
        self.journal.retire_token(hash).await
    }

    async fn learn_scope(&self, hash: PaymentHash, scope: &str) -> Result<(), LedgerError> {
        self.journal.learn_scope(hash, scope.to_string()).await
    }

    async fn record_decline(&self, decline: DeclineRecord) -> Result<(), LedgerError> {
        self.journal
            .record_decline(decline, DECLINE_FOLD_SECS)
            .await
    }

    async fn declines(&self, filter: DeclineFilter) -> Result<Vec<DeclineRecord>, LedgerError> {
        self.journal.declines(filter).await
    }

    async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError> {
        self.journal.payments(filter).await
    }

    async fn set_total(
        &self,
        agent: &str,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError> {
        // Durable first, then in force.
        self.journal
            .set_total(agent.to_string(), total, now)
            .await?;
        self.budget.set_total(agent, total);
        Ok(())
    }

    async fn total_override(&self, agent: &str) -> Result<Option<Msat>, LedgerError> {
        Ok(self.budget.total_override(agent))
    }

    async fn budget(&self, agent: &str, limits: &Limits) -> Result<BudgetView, LedgerError> {
        Ok(self.budget.view(agent, limits))
    }

    async fn operator_budget(&self, limits: &Limits) -> Result<BudgetView, LedgerError> {
        Ok(self.budget.operator_view(limits))
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        self.journal.flush().await
    }

    async fn api_agents(&self) -> Result<Vec<StoredAgent>, LedgerError> {
        self.journal.api_agents().await
    }

    async fn create_agent(&self, agent: &StoredAgent) -> Result<bool, LedgerError> {
        let created = self.journal.put_agent(agent.clone(), true).await?;
        if created {
            self.remember_api_agent(agent);
        }
        Ok(created)
    }

    async fn update_agent(&self, agent: &StoredAgent) -> Result<bool, LedgerError> {
        let updated = self.journal.put_agent(agent.clone(), false).await?;
        if updated {
            self.remember_api_agent(agent);
        }
        Ok(updated)
    }

    async fn delete_agent(&self, name: &str) -> Result<bool, LedgerError> {
        let deleted = self.journal.delete_agent(name.to_string()).await?;
        self.api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(deleted)
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), LedgerError> {
        self.journal.audit(entry).await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError> {
        self.journal.audit_log(limit).await
    }

    async fn stops(&self) -> Result<Vec<Stop>, LedgerError> {
        let stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Stop> = stops.values().cloned().collect();
        all.sort_by(|a, b| (a.at, &a.scope).cmp(&(b.at, &b.scope)));
        Ok(all)
    }

    async fn stop(&self, stop: &Stop) -> Result<bool, LedgerError> {
        {
            let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
            if stops.contains_key(&stop.scope) {
                return Ok(false);
            }
            stops.insert(stop.scope.clone(), stop.clone());
        }
        self.journal.stop(stop.clone()).await?;
        Ok(true)
    }

    async fn resume(&self, scope: &str) -> Result<Option<Stop>, LedgerError> {
        let lifted = self
            .stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(scope);
        if lifted.is_some() {
            self.journal.resume(scope.to_string()).await?;
            self.budget
                .restart_breaker((scope != FLEET).then_some(scope));
        }
        Ok(lifted)
    }

    async fn create_approval(&self, approval: &ApprovalRecord) -> Result<(), LedgerError> {
        self.journal.create_approval(approval.clone()).await
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, LedgerError> {
        self.journal.approval(id.to_string()).await
    }

    async fn pending_approvals(&self, now: i64) -> Result<Vec<ApprovalRecord>, LedgerError> {
        self.journal.pending_approvals(now).await
    }

    async fn agent_approvals(
        &self,
        agent: &str,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, LedgerError> {
        self.journal.agent_approvals(agent.to_string(), limit).await
    }

    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<Option<ApprovalRecord>, LedgerError> {
        self.journal
            .decide_approval(id.to_string(), state, by.to_string(), at)
            .await
    }

    async fn claim_alert(&self, key: &str, at: i64) -> Result<bool, LedgerError> {
        self.journal.claim_alert(key.to_string(), at).await
    }

    async fn last_price(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
    ) -> Result<Option<Msat>, LedgerError> {
        self.journal
            .last_price(agent.to_string(), origin.to_string(), flight.to_string())
            .await
    }

    async fn highest_price(&self, agent: &str, origin: &str) -> Result<Option<Msat>, LedgerError> {
        self.journal
            .highest_price(agent.to_string(), origin.to_string())
            .await
    }

    async fn queue_deliveries(
        &self,
        deliveries: Vec<OutboxDelivery>,
        cap: usize,
        now_ms: i64,
    ) -> Result<u64, LedgerError> {
        self.journal.queue_deliveries(deliveries, cap, now_ms).await
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxDelivery>, LedgerError> {
        self.journal
            .claim_deliveries(
                endpoints.to_vec(),
                holder.to_string(),
                now_ms,
                lease_ms,
                limit,
            )
            .await
    }

    async fn finish_delivery(
        &self,
        id: &str,
        endpoint: &str,
        outcome: DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.journal
            .finish_delivery(id.to_string(), endpoint.to_string(), outcome, now_ms)
            .await
    }

    async fn compact(&self, round: &Compaction) -> Result<Compacted, LedgerError> {
        self.journal.compact(round).await
    }
}

#[cfg(test)]
mod tests;
