//! The payment book: every payment walks one state machine, written once and used by the live
//! path and by reconciliation alike.
//!
//! ```text
//! begin (claim hash + reserve + durable pending, one atomic ledger step)
//!   └─ sending ──▶ settled   (preimage verified; spend committed at the real fee)
//!              ├─▶ failed    (reservation released; the hash may be tried again)
//!              └─▶ unknown   (timeout, wallet unreachable, task gone: budget stays held, the
//!                             hash is never paid again; reconciliation looks it up until the
//!                             wallet says settled or failed)
//! ```
//!
//! A payment that has been begun is owned by a `Sending` guard. However the paying task ends —
//! an outcome, a panicking wallet, a cancelled task — the guard is gone and the payment is then
//! either resolved or left to reconciliation, never lost and never paid twice.

use crate::core::{Clock, Decline, Msat, PaymentHash, Preimage};
use crate::ledger::{Begun, Ledger, LedgerError, LimitSet, NewPayment, PaymentRecord};
use crate::metrics::Metrics;
use crate::wallet::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;

/// What buying an invoice produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bought {
    /// Paid now, by this request.
    Paid(Paid),
    /// Paid before by the same agent at the same origin (its proof was kept): nothing moved.
    Earlier(Preimage),
}

/// A pending payment reconciliation resolved.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The wallet says it settled; the record says what it bought.
    Settled(PaymentRecord, Paid),
    /// The wallet says it failed, or has no record of it after its whole timeout.
    Failed(PaymentRecord, String),
}

/// The book's parts.
pub struct BookParts {
    /// The money authority.
    pub ledger: Arc<dyn Ledger>,
    /// The operator's wallet.
    pub wallet: Arc<dyn Wallet>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Fee reserve held per payment, and the most the wallet may pay in fees.
    pub max_fee: Msat,
    /// How long the wallet gets before the outcome counts as unknown.
    pub timeout: Duration,
}

/// See the module docs.
pub struct PaymentBook {
    ledger: Arc<dyn Ledger>,
    wallet: Arc<dyn Wallet>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    max_fee: Msat,
    timeout: Duration,
    /// Hashes a live task of this process is paying now: reconciliation leaves them alone.
    sending: DashMap<PaymentHash, ()>,
}

/// A begun payment being paid by a live task. While it exists, reconciliation does not touch the
/// payment; once dropped (resolved, or its task gone) the payment is either resolved or left to
/// reconciliation.
struct Sending<'a> {
    book: &'a PaymentBook,
    hash: PaymentHash,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.book.sending.remove(&self.hash);
    }
}

impl PaymentBook {
    /// A book over these parts.
    pub fn new(parts: BookParts) -> PaymentBook {
        PaymentBook {
            ledger: parts.ledger,
            wallet: parts.wallet,
            clock: parts.clock,
            metrics: parts.metrics,
            max_fee: parts.max_fee,
            timeout: parts.timeout,
            sending: DashMap::new(),
        }
    }

    /// The fee reserve held per payment.
    pub fn max_fee(&self) -> Msat {
        self.max_fee
    }

    /// The wallet's payment timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wallet.
    pub fn wallet(&self) -> &Arc<dyn Wallet> {
        &self.wallet
    }

    /// Payments a live task of this process is paying now (shutdown waits for them).
    pub fn in_progress(&self) -> usize {
        self.sending.len()
    }

    /// Buys `payment.bolt11` for its agent: begin (claim, reserve, pending) in the ledger, pay,
    /// verify, then settle or fail — or leave it unknown for reconciliation. `fee_reserve` and
    /// `created_at` are filled in here.
    pub async fn buy(
        &self,
        mut payment: NewPayment,
        limits: LimitSet<'_>,
    ) -> Result<Bought, Decline> {
        payment.fee_reserve = self.max_fee;
        payment.created_at = self.clock.now();
        let (hash, agent, origin, amount) = (
            payment.hash,
            payment.agent.clone(),
            payment.origin.clone(),
            payment.amount,
        );
        let bolt11 = payment.bolt11.clone();
        match self.ledger.begin(payment, limits).await? {
            Begun::Fresh => {}
            Begun::InFlight => return Err(Decline::PaymentInFlight),
            Begun::Settled {
                agent: paid_by,
                origin: paid_at,
                proof,
                ..
            } => {
                // Only the agent that paid, at the origin it paid, rides on the old proof.
                return match proof {
                    Some(proof) if *paid_by == *agent && paid_at == origin => {
                        Ok(Bought::Earlier(proof))
                    }
                    _ => Err(Decline::HashPaidElsewhere),
                };
            }
        }
        let sending = Sending { book: self, hash };
        self.sending.insert(hash, ());
        let request = PayRequest {
            bolt11,
            payment_hash: hash,
            amount,
            max_fee: self.max_fee,
            timeout: self.timeout,
        };
        tracing::info!(%agent, %origin, hash = %hash.short(), %amount, "paying");
        let outcome = self.pay(&request).await;
        let result = match outcome {
            Ok(paid) => {
                tracing::info!(%agent, hash = %hash.short(), fee = %paid.fee, "paid");
                self.settled(hash, &agent, amount, paid).await;
                Ok(Bought::Paid(paid))
            }
            Err(e) if e.may_be_in_flight() => {
                tracing::warn!(%agent, hash = %hash.short(), error = %e, "payment outcome unknown; reconciling");
                self.metrics.payment("in_flight", self.wallet.backend());
                Err(Decline::wallet(&e))
            }
            Err(e) => {
                tracing::warn!(%agent, hash = %hash.short(), error = %e, "payment failed");
                self.failed(hash, &e.to_string()).await;
                Err(Decline::wallet(&e))
            }
        };
        drop(sending);
        result
    }

    /// Asks the wallet to pay, within the timeout; recovers the proof of an invoice the wallet
    /// says it already paid; checks the proof against this payment's hash.
    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.wallet.pay(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PayError::Timeout(self.timeout)),
        };
        let outcome = match outcome {
            Err(PayError::AlreadyPaid) => match self.wallet.lookup(&request.payment_hash).await {
                Ok(PaymentStatus::Succeeded(paid)) => Ok(paid),
                _ => Err(PayError::AlreadyPaid),
            },
            other => other,
        };
        self.metrics
            .payment_seconds
            .with_label_values(&[self.wallet.backend()])
            .observe(started.elapsed().as_secs_f64());
        outcome.and_then(|paid| proven(paid, &request.payment_hash))
    }

    /// The transition to settled: durable record, spend committed at the real fee, counted.
    async fn settled(&self, hash: PaymentHash, agent: &str, amount: Msat, paid: Paid) {
        if let Err(e) = self
            .ledger
            .settle(hash, paid.fee, &paid.preimage, self.clock.now())
            .await
        {
            // The spend is counted; the row stays pending and reconciliation settles it again.
            tracing::error!(hash = %hash.short(), error = %e, "could not record a settled payment");
        }
        self.metrics.payment("succeeded", self.wallet.backend());
        self.metrics.paid(agent, amount.0, paid.fee.0);
    }

    /// The transition to failed: durable record, reservation released.
    async fn failed(&self, hash: PaymentHash, reason: &str) {
        if let Err(e) = self.ledger.fail(hash, reason, self.clock.now()).await {
            tracing::error!(hash = %hash.short(), error = %e, "could not record a failed payment");
        }
        self.metrics.payment("failed", self.wallet.backend());
    }

    /// One reconciliation pass: asks the wallet about every unresolved payment no live task of
    /// this process is paying, and settles or fails what it can. Returns what it resolved and
    /// how many stay unresolved.
    pub async fn reconcile(&self) -> Result<(Vec<Resolved>, usize), LedgerError> {
        let mut resolved = Vec::new();
        let mut open = 0;
        for row in self.ledger.unresolved().await? {
            if self.sending.contains_key(&row.hash) {
                open += 1;
                continue;
            }
            let status = match self.wallet.lookup(&row.hash).await {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(hash = %row.hash.short(), error = %e, "lookup failed; will retry");
                    open += 1;
                    continue;
                }
            };
            match status {
                PaymentStatus::InFlight => open += 1,
                PaymentStatus::Succeeded(paid) => match proven(paid, &row.hash) {
                    Ok(paid) => {
                        tracing::info!(hash = %row.hash.short(), "in-flight payment settled");
                        self.settled(row.hash, &row.agent, row.amount, paid).await;
                        resolved.push(Resolved::Settled(row, paid));
                    }
                    Err(_) => {
                        tracing::error!(hash = %row.hash.short(), "the wallet reports a preimage for another hash; still unresolved");
                        open += 1;
                    }
                },
                PaymentStatus::Failed(reason) => {
                    tracing::info!(hash = %row.hash.short(), %reason, "in-flight payment failed; budget released");
                    self.failed(row.hash, &reason).await;
                    resolved.push(Resolved::Failed(row, reason));
                }
                // "No record" proves the payment never left only once it has had its whole
                // timeout to show up: a backend may not list a payment it is still starting,
                // and concluding too early would free the hash to be paid a second time.
                PaymentStatus::Unknown
                    if self.clock.now() - row.created_at < self.timeout.as_secs() as i64 =>
                {
                    open += 1
                }
                PaymentStatus::Unknown => {
                    let reason = "the wallet has no record of it: it never left".to_string();
                    tracing::info!(hash = %row.hash.short(), %reason, "in-flight payment failed; budget released");
                    self.failed(row.hash, &reason).await;
                    resolved.push(Resolved::Failed(row, reason));
                }
            }
        }
        Ok((resolved, open))
    }
}

/// Defence in depth: the `Preimage` type already proves itself, but only against the hash it
/// was checked with; a backend bug could hand back another payment's proof.
fn proven(paid: Paid, hash: &PaymentHash) -> Result<Paid, PayError> {
    if paid.preimage.hash() == *hash {
        Ok(paid)
    } else {
        Err(PayError::BadPreimage)
    }
}

#[cfg(test)]
mod tests;
