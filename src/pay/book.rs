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
//!
//! The wallet call runs in its own task. When it outlasts the payment timeout, the buyer is
//! told the payment is unresolved at once, while the call goes on (up to [`LATE_WAIT`]) and
//! settles or fails the payment the moment the wallet answers; the buyer may listen for that
//! late answer. Only after that does reconciliation take over, so one resolver at a time.

use crate::core::{Clock, Decline, Msat, PaymentHash, Preimage};
use crate::ledger::{Begun, Ledger, LedgerError, LimitSet, NewPayment, PaymentRecord};
use crate::metrics::Metrics;
use crate::wallet::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a wallet call that outlasted the payment timeout is still awaited before the
/// payment is left to reconciliation (lookups by hash).
pub const LATE_WAIT: Duration = Duration::from_secs(15 * 60);

/// What buying an invoice produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bought {
    /// Paid now, by this request.
    Paid(Paid),
    /// Paid before by the same agent at the same origin (its proof was kept): nothing moved.
    Earlier(Preimage),
}

/// Why buying produced no proof now.
#[derive(Debug)]
pub enum Unbought {
    /// Refused before paying, or failed: the decline to give.
    Declined(Decline),
    /// Another payment of the same purchase is sent and unresolved; nothing was begun for this
    /// one. The hash is that payment's.
    PurchaseOpen(PaymentHash),
    /// Sent and not resolved: it may still settle, so its budget stays reserved and its
    /// purchase open. `late` answers with the proof if it settles later (the wallet's call
    /// answering, or a lookup); it closes without one when the payment failed or was left to
    /// reconciliation after [`LATE_WAIT`].
    /// closes without one when the payment failed or was left to reconciliation.
    Unresolved {
        /// What to tell the agent now (`payment-timeout`, `wallet-unavailable`).
        decline: Decline,
        /// The wallet call's late answer, when it is still running.
        late: Option<oneshot::Receiver<LateSettle>>,
    },
}

/// The proof of a payment that settled after its buyer was told it was unresolved. The payment
/// is recorded settled only once this is dropped (after [`LATE_DELIVERY`] at most), so whoever
/// waits for the purchase to resolve finds what it bought already delivered.
#[derive(Debug)]
pub struct LateSettle {
    /// The verified proof and the fee.
    pub paid: Paid,
    _delivered: oneshot::Sender<()>,
}

/// How long a late proof's delivery may hold up recording the payment settled.
const LATE_DELIVERY: Duration = Duration::from_secs(2);

impl From<Decline> for Unbought {
    fn from(decline: Decline) -> Unbought {
        Unbought::Declined(decline)
    }
}

impl PartialEq<Decline> for Unbought {
    fn eq(&self, other: &Decline) -> bool {
        self.decline() == *other
    }
}

impl Unbought {
    /// The code of what the agent is told.
    pub fn code(&self) -> &'static str {
        match self {
            Unbought::Declined(d) | Unbought::Unresolved { decline: d, .. } => d.code(),
            Unbought::PurchaseOpen(_) => Decline::PaymentInFlight.code(),
        }
    }

    /// What the agent is told.
    pub fn decline(&self) -> Decline {
        match self {
            Unbought::Declined(d) | Unbought::Unresolved { decline: d, .. } => d.clone(),
            Unbought::PurchaseOpen(_) => Decline::PaymentInFlight,
        }
    }
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
    sending: Arc<DashMap<PaymentHash, ()>>,
    /// Payments whose wallet call outlasted the timeout and is still awaited, with where their
    /// late proof goes. Reconciliation may resolve them too (on a definite answer from a lookup
    /// only); whichever of the two removes the entry first delivers the proof, then records the
    /// outcome.
    late: Arc<DashMap<PaymentHash, oneshot::Sender<LateSettle>>>,
}

/// A begun payment being paid by a live task. While it exists, reconciliation does not touch the
/// payment; once dropped (resolved, or its task gone) the payment is either resolved or left to
/// reconciliation.
struct Sending {
    map: Arc<DashMap<PaymentHash, ()>>,
    hash: PaymentHash,
}

impl Sending {
    fn new(map: &Arc<DashMap<PaymentHash, ()>>, hash: PaymentHash) -> Sending {
        map.insert(hash, ());
        Sending {
            map: map.clone(),
            hash,
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.map.remove(&self.hash);
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
            sending: Arc::new(DashMap::new()),
            late: Arc::new(DashMap::new()),
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

    /// Payments a live task of this process is paying now, or still listening to after their
    /// timeout (shutdown waits for them).
    pub fn in_progress(&self) -> usize {
        self.sending.len() + self.late.len()
    }

    /// Buys `payment.bolt11` for its agent: begin (claim, reserve, pending) in the ledger, pay,
    /// verify, then settle or fail — or leave it unresolved, still listening to the wallet (see
    /// the module docs). `fee_reserve` and `created_at` are filled in here.
    pub async fn buy(
        self: &Arc<Self>,
        mut payment: NewPayment,
        limits: LimitSet<'_>,
    ) -> Result<Bought, Unbought> {
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
            Begun::InFlight => return Err(Decline::PaymentInFlight.into()),
            Begun::PurchaseOpen { hash: open } => return Err(Unbought::PurchaseOpen(open)),
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
                    _ => Err(Decline::HashPaidElsewhere.into()),
                };
            }
        }
        let sending = Sending::new(&self.sending, hash);
        let request = PayRequest {
            bolt11,
            payment_hash: hash,
            amount,
            max_fee: self.max_fee,
            timeout: self.timeout,
        };
        tracing::info!(%agent, %origin, hash = %hash.short(), %amount, "paying");
        let started = std::time::Instant::now();
        let wallet = self.wallet.clone();
        let sent = request.clone();
        let mut call = tokio::spawn(async move { wallet.pay(&sent).await });
        let outcome = match tokio::time::timeout(self.timeout, &mut call).await {
            Ok(joined) => self.conclude(&request, joined_outcome(joined)).await,
            Err(_) => {
                let e = PayError::Timeout(self.timeout);
                tracing::warn!(%agent, hash = %hash.short(), error = %e, "payment outcome unknown; still listening to the wallet");
                self.metrics.payment("in_flight", self.wallet.backend());
                let late = self.listen_late(call, request, agent, sending);
                return Err(Unbought::Unresolved {
                    decline: Decline::wallet(&e),
                    late: Some(late),
                });
            }
        };
        self.metrics
            .payment_seconds
            .with_label_values(&[self.wallet.backend()])
            .observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(paid) => {
                tracing::info!(%agent, hash = %hash.short(), fee = %paid.fee, "paid");
                self.settled(hash, &agent, amount, paid).await;
                Ok(Bought::Paid(paid))
            }
            Err(e) if e.may_be_in_flight() => {
                tracing::warn!(%agent, hash = %hash.short(), error = %e, "payment outcome unknown; reconciling");
                self.metrics.payment("in_flight", self.wallet.backend());
                Err(Unbought::Unresolved {
                    decline: Decline::wallet(&e),
                    late: None,
                })
            }
            Err(e) => {
                tracing::warn!(%agent, hash = %hash.short(), error = %e, "payment failed");
                self.failed(hash, &e.to_string()).await;
                Err(Decline::wallet(&e).into())
            }
        };
        drop(sending);
        result
    }

    /// Keeps awaiting a wallet call that outlasted the payment timeout (up to [`LATE_WAIT`]),
    /// and resolves the payment the moment it answers: settled (its proof delivered on the
    /// returned channel first), failed, or — still unknown — left to reconciliation.
    fn listen_late(
        self: &Arc<Self>,
        mut call: tokio::task::JoinHandle<Result<Paid, PayError>>,
        request: PayRequest,
        agent: Arc<str>,
        sending: Sending,
    ) -> oneshot::Receiver<LateSettle> {
        let (tx, rx) = oneshot::channel();
        let book = self.clone();
        let hash = request.payment_hash;
        self.late.insert(hash, tx);
        drop(sending);
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(LATE_WAIT, &mut call).await {
                Ok(joined) => book.conclude(&request, joined_outcome(joined)).await,
                Err(_) => {
                    call.abort();
                    Err(PayError::Timeout(LATE_WAIT))
                }
            };
            // Reconciliation may have resolved it first: then it is not recorded again.
            let Some((_, deliver)) = book.late.remove(&hash) else {
                return;
            };
            match outcome {
                Ok(paid) => {
                    tracing::info!(%agent, hash = %hash.short(), fee = %paid.fee, "an unresolved payment settled");
                    book.deliver_then_settle(deliver, hash, &agent, request.amount, paid)
                        .await;
                }
                Err(e) if e.may_be_in_flight() => {
                    tracing::warn!(%agent, hash = %hash.short(), error = %e, "still unresolved; reconciliation takes over");
                }
                Err(e) => {
                    tracing::warn!(%agent, hash = %hash.short(), error = %e, "an unresolved payment failed; budget released");
                    book.failed(hash, &e.to_string()).await;
                }
            }
        });
        rx
    }

    /// A late payment settled: its proof goes to whoever listens (bounded by
    /// [`LATE_DELIVERY`]), then the payment is recorded settled.
    async fn deliver_then_settle(
        &self,
        deliver: oneshot::Sender<LateSettle>,
        hash: PaymentHash,
        agent: &str,
        amount: Msat,
        paid: Paid,
    ) {
        let (delivered, done) = oneshot::channel();
        let late = LateSettle {
            paid,
            _delivered: delivered,
        };
        if deliver.send(late).is_ok() {
            // Resolves when the listener drops its `LateSettle`, or at once without one.
            let _ = tokio::time::timeout(LATE_DELIVERY, done).await;
        }
        self.settled(hash, agent, amount, paid).await;
    }

    /// The wallet's answer made final: recovers the proof of an invoice the wallet says it
    /// already paid, and checks the proof against this payment's hash.
    async fn conclude(
        &self,
        request: &PayRequest,
        outcome: Result<Paid, PayError>,
    ) -> Result<Paid, PayError> {
        let outcome = match outcome {
            Err(PayError::AlreadyPaid) => match self.wallet.lookup(&request.payment_hash).await {
                Ok(PaymentStatus::Succeeded(paid)) => Ok(paid),
                _ => Err(PayError::AlreadyPaid),
            },
            other => other,
        };
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
        self.metrics.paid(agent, amount.get(), paid.fee.get());
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
            // A payment whose wallet call is still awaited is resolved here only on a definite
            // answer, and only if the call has not answered first; its proof is then delivered
            // before it is recorded, as the call would have.
            let mut deliver = None;
            if self.late.contains_key(&row.hash) {
                let definite = match &status {
                    PaymentStatus::Succeeded(paid) => proven(*paid, &row.hash).is_ok(),
                    PaymentStatus::Failed(_) => true,
                    _ => false,
                };
                if !definite {
                    open += 1;
                    continue;
                }
                match self.late.remove(&row.hash) {
                    Some((_, d)) => deliver = Some(d),
                    None => continue,
                }
            }
            match status {
                PaymentStatus::InFlight => open += 1,
                PaymentStatus::Succeeded(paid) => match proven(paid, &row.hash) {
                    Ok(paid) => {
                        tracing::info!(hash = %row.hash.short(), "in-flight payment settled");
                        match deliver {
                            Some(d) => {
                                self.deliver_then_settle(d, row.hash, &row.agent, row.amount, paid)
                                    .await
                            }
                            None => self.settled(row.hash, &row.agent, row.amount, paid).await,
                        }
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
                // timeout twice over to show up: a backend may not list a payment it is still
                // starting (CLN's `listpays` shows nothing before the first HTLC, and xpay makes
                // one more attempt even after `retry_for`), and concluding too early would free
                // the hash to be paid a second time.
                PaymentStatus::Unknown
                    if self.clock.now() - row.created_at < 2 * self.timeout.as_secs() as i64 =>
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

/// A wallet call's result; a call that panicked may have acted, so its outcome is unknown.
fn joined_outcome(
    joined: Result<Result<Paid, PayError>, tokio::task::JoinError>,
) -> Result<Paid, PayError> {
    joined.unwrap_or_else(|e| {
        Err(PayError::Unavailable(format!(
            "the wallet call ended without an answer: {e}"
        )))
    })
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
