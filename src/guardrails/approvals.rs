//! Human approval: a payment above `approve_above_sats` (the agent's or the operator's) is held
//! — recorded in the ledger, announced to the webhooks, listed at `GET /v1/approvals` — while
//! the agent's request waits. `POST /v1/approvals/{id}` decides it; nobody deciding within
//! `approval.timeout_secs` (or before the invoice would expire) declines it.
//!
//! Invariants: an approval is for one payment hash and is decided once (pending → approved,
//! denied or expired, in the ledger, so every replica agrees); it is used by the one purchase
//! that asked for it and never again; nothing is reserved or paid until it is approved.

use crate::alerts::{Alerts, Event};
use crate::core::{Clock, Decline, Msat, PaymentHash};
use crate::ledger::{ApprovalRecord, ApprovalState, Ledger, LedgerError};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The time an approved payment needs before its invoice expires: an approval window ends
/// this long before the invoice does.
const PAY_MARGIN_SECS: i64 = 10;

/// How often a waiting request re-reads its approval from the ledger (a decision made through
/// another replica's API is seen this quickly; one made here wakes it at once).
const POLL: Duration = Duration::from_millis(250);

/// A payment asking to be approved.
#[derive(Debug, Clone)]
pub struct Hold<'a> {
    /// The agent paying.
    pub agent: &'a str,
    /// `host:port` of the seller.
    pub host: &'a str,
    /// The service (or path scope) bought.
    pub service: &'a str,
    /// The invoice amount.
    pub amount: Msat,
    /// The invoice's hash.
    pub payment_hash: PaymentHash,
    /// When the invoice expires, unix seconds.
    pub invoice_expires_at: Option<i64>,
    /// Set when the request that asked is gone and nobody else could use what the payment
    /// buys (a single-use credential): the hold is then cancelled, decided by
    /// `requester-gone`.
    pub requester_gone: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// A decision taken: the approval as it stands, and whether this call decided it (`false`: it
/// was already decided the same way, and nothing was announced again).
#[derive(Debug, Clone)]
pub struct Decided {
    /// The approval after the decision.
    pub record: ApprovalRecord,
    /// True for the one call (across every process sharing the ledger) that decided it.
    pub first: bool,
}

/// The once-only key under which an approval's `approval.decided` is announced.
fn decided_key(id: &str) -> String {
    format!("approval.decided:{id}")
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No approval has that id.
    #[error("no such approval")]
    NotFound,
    /// It was decided already (or expired).
    #[error("the approval is already {0}")]
    Decided(&'static str),
    /// The ledger could not record the decision.
    #[error(transparent)]
    Store(#[from] LedgerError),
}

/// The held payments of this process and the ledger's record of all of them.
pub struct Approvals {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    alerts: Arc<Alerts>,
    timeout_secs: AtomicU64,
    /// Wakes the request waiting on an approval when it is decided through this process.
    waiting: DashMap<String, Arc<Notify>>,
}

impl Approvals {
    /// Approvals recorded in `ledger`, waiting at most `timeout_secs`.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        alerts: Arc<Alerts>,
        timeout_secs: u64,
    ) -> Approvals {
        Approvals {
            ledger,
            clock,
            alerts,
            timeout_secs: AtomicU64::new(timeout_secs),
            waiting: DashMap::new(),
        }
    }

    /// Changes `approval.timeout_secs` (config reload); waits already begun keep theirs.
    pub fn set_timeout(&self, secs: u64) {
        self.timeout_secs.store(secs, Ordering::Relaxed);
    }

    /// Holds the payment until the operator decides. `Ok` means approved: go ahead and pay.
    pub async fn ask(&self, hold: Hold<'_>) -> Result<(), Decline> {
        let now = self.clock.now();
        let timeout = self.timeout_secs.load(Ordering::Relaxed) as i64;
        let mut expires_at = now.saturating_add(timeout);
        if let Some(invoice_end) = hold.invoice_expires_at {
            expires_at = expires_at.min(invoice_end - PAY_MARGIN_SECS);
        }
        let id = format!("apr_{}", hex::encode(rand::random::<[u8; 12]>()));
        if expires_at <= now {
            return Err(Decline::ApprovalTimeout { id, secs: 0 });
        }
        let record = ApprovalRecord {
            id: id.clone(),
            agent: hold.agent.to_string(),
            host: hold.host.to_string(),
            service: hold.service.to_string(),
            amount: hold.amount,
            payment_hash: hold.payment_hash,
            created_at: now,
            expires_at,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_at: None,
        };
        let notify = Arc::new(Notify::new());
        self.waiting.insert(id.clone(), notify.clone());
        let key = id.clone();
        let _forget = Forget(&self.waiting, &key);
        self.ledger.create_approval(&record).await?;
        tracing::info!(%id, agent = hold.agent, host = hold.host, amount = %hold.amount, wait_secs = expires_at - now, "payment held for the operator's approval");
        self.alerts.emit(Event::ApprovalRequested {
            id: id.clone(),
            agent: record.agent.clone(),
            host: record.host.clone(),
            amount_msat: record.amount.get(),
            created_at: now,
            expires_at,
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs((expires_at - now) as u64);
        loop {
            let woken = notify.notified();
            if hold
                .requester_gone
                .as_ref()
                .is_some_and(|g| g.load(Ordering::Relaxed))
            {
                return self.cancel(id).await;
            }
            match self.ledger.approval(&id).await {
                Ok(Some(r)) => match r.state {
                    ApprovalState::Approved => return Ok(()),
                    ApprovalState::Denied => return Err(Decline::ApprovalDenied { id }),
                    ApprovalState::Expired => {
                        return Err(Decline::ApprovalTimeout {
                            id,
                            secs: (expires_at - now) as u64,
                        })
                    }
                    ApprovalState::Pending => {}
                },
                Ok(None) => {
                    tracing::error!(%id, "a held payment vanished from the ledger");
                    return Err(Decline::LedgerInconsistent);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "cannot read a held payment; still waiting")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return self.expire(id, expires_at - now).await;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The request behind a hold for a single-use credential went away: the hold is denied by
    /// `requester-gone` (announced once), unless the operator decided it just now.
    async fn cancel(&self, id: String) -> Result<(), Decline> {
        match self
            .ledger
            .decide_approval(
                &id,
                ApprovalState::Denied,
                "requester-gone",
                self.clock.now(),
            )
            .await
        {
            Ok(Some(r)) if r.state == ApprovalState::Denied => {
                if r.decided_by.as_deref() == Some("requester-gone") {
                    tracing::info!(%id, "the request behind a held single-use payment hung up: cancelled");
                    self.announce(&r, false, "requester-gone");
                }
                Err(Decline::RequesterGone)
            }
            Ok(_) => Err(Decline::RequesterGone),
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not record a cancelled hold");
                Err(Decline::RequesterGone)
            }
        }
    }

    /// Denies every held payment of `agent` (it was paused or deleted: `by` is `agent-paused`
    /// or `agent-deleted`), announcing each decision once and waking its request. Returns how
    /// many were denied.
    pub async fn deny_agent(&self, agent: &str, by: &str) -> Result<usize, LedgerError> {
        self.deny_where(Some(agent), by).await
    }

    /// Denies every held payment of every agent (the fleet was paused: `by` is
    /// `fleet-paused`), on every replica sharing the ledger; returns how many.
    pub async fn deny_all(&self, by: &str) -> Result<usize, LedgerError> {
        self.deny_where(None, by).await
    }

    async fn deny_where(&self, agent: Option<&str>, by: &str) -> Result<usize, LedgerError> {
        let mut denied = 0;
        for held in self.pending().await? {
            if agent.is_some_and(|a| held.agent != a) {
                continue;
            }
            let agent = held.agent.clone();
            let record = self
                .ledger
                .decide_approval(&held.id, ApprovalState::Denied, by, self.clock.now())
                .await?;
            let Some(record) = record else { continue };
            if record.state != ApprovalState::Denied || record.decided_by.as_deref() != Some(by) {
                continue;
            }
            if let Some(n) = self.waiting.get(&held.id) {
                n.notify_one();
            }
            tracing::info!(id = %held.id, %agent, %by, "held payment denied");
            self.announce(&record, false, by);
            denied += 1;
        }
        Ok(denied)
    }

    /// Emits `approval.decided` for `record`.
    fn announce(&self, record: &ApprovalRecord, approved: bool, by: &str) {
        self.alerts.emit(Event::ApprovalDecided {
            id: record.id.clone(),
            agent: record.agent.clone(),
            host: record.host.clone(),
            amount_msat: record.amount.get(),
            approved,
            by: by.to_string(),
        });
    }

    /// The wait is over: records the approval as expired unless it was decided just now.
    async fn expire(&self, id: String, waited: i64) -> Result<(), Decline> {
        let timeout = Decline::ApprovalTimeout {
            id: id.clone(),
            secs: waited.max(0) as u64,
        };
        match self
            .ledger
            .decide_approval(&id, ApprovalState::Expired, "timeout", self.clock.now())
            .await
        {
            Ok(Some(r)) if r.state == ApprovalState::Approved => Ok(()),
            Ok(Some(r)) if r.state == ApprovalState::Denied => Err(Decline::ApprovalDenied { id }),
            Ok(Some(r)) => {
                tracing::info!(%id, "nobody decided on the held payment in time");
                if !self.claim_decided(&id).await {
                    return Err(timeout);
                }
                self.alerts.emit(Event::ApprovalDecided {
                    id: r.id.clone(),
                    agent: r.agent.clone(),
                    host: r.host.clone(),
                    amount_msat: r.amount.get(),
                    approved: false,
                    by: "timeout".to_string(),
                });
                Err(timeout)
            }
            Ok(None) => Err(timeout),
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not record the approval as expired");
                Err(timeout)
            }
        }
    }

    /// Whether this process is the first to announce `id`'s decision (a store that does not
    /// answer: yes — a repeated event is better than a lost one).
    async fn claim_decided(&self, id: &str) -> bool {
        match self
            .ledger
            .claim_alert(&decided_key(id), self.clock.now())
            .await
        {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot claim the approval's announcement; announcing");
                true
            }
        }
    }

    /// Approves or denies a held payment; the waiting request goes on at once. Deciding the
    /// same way again is a no-op (`first: false`): `approval.decided` is announced once.
    pub async fn decide(&self, id: &str, approve: bool, by: &str) -> Result<Decided, DecideError> {
        let wanted = if approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        let now = self.clock.now();
        let record = self
            .ledger
            .decide_approval(id, wanted, by, now)
            .await?
            .ok_or(DecideError::NotFound)?;
        match record.state {
            // Deciding the same way twice is harmless: the payment is still made once.
            state if state == wanted => {}
            // Still pending after the update: it had expired, so the update did not apply.
            ApprovalState::Pending => return Err(DecideError::Decided("expired")),
            other => return Err(DecideError::Decided(other.as_str())),
        }
        if let Some(n) = self.waiting.get(id) {
            n.notify_one();
        }
        if !self.claim_decided(id).await {
            return Ok(Decided {
                record,
                first: false,
            });
        }
        tracing::info!(%id, agent = %record.agent, approved = approve, %by, "held payment decided");
        self.alerts.emit(Event::ApprovalDecided {
            id: id.to_string(),
            agent: record.agent.clone(),
            host: record.host.clone(),
            amount_msat: record.amount.get(),
            approved: approve,
            by: by.to_string(),
        });
        Ok(Decided {
            record,
            first: true,
        })
    }

    /// The held payments still waiting, across every process sharing the ledger.
    pub async fn pending(&self) -> Result<Vec<ApprovalRecord>, LedgerError> {
        self.ledger.pending_approvals(self.clock.now()).await
    }
}

/// Drops a waiter's entry however the wait ends.
struct Forget<'a>(&'a DashMap<String, Arc<Notify>>, &'a str);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}
