//! One purchase, run in its own task: guarded, leased, begun in the ledger for the agent as it
//! is when money leaves, waited on while an earlier payment of it is unresolved, paid, and —
//! settled late or not — delivered to whoever asks for it next.

use super::{FlightResult, Obtained, PaidInfo, Purchases, RETRY_UNRESOLVED_SECS};
use crate::agents::{Agent, ManagedBy};
use crate::alerts::Event;
use crate::config::Limits;
use crate::core::{Decline, Msat, PaymentHash};
use crate::guardrails::{self, thresholds};
use crate::ledger::{Flight, LimitSet, NewPayment, PaymentState};
use crate::pay::book::{Bought, LateSettle, Unbought};
use crate::pay::dialect::{Credential, Offer};
use crate::pay::kept::RequestKey;
use crate::pay::tokens::Token;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs a purchase in its own task: the agent hanging up must not cancel a payment in progress.
pub(super) async fn detached(job: Job) -> FlightResult {
    tokio::spawn(job.run())
        .await
        .unwrap_or(Err(Decline::PaymentAborted))
}

/// One purchase, run detached from the request that asked for it.
pub(super) struct Job {
    pub(super) purchases: Arc<Purchases>,
    pub(super) agent: Arc<Agent>,
    pub(super) origin: String,
    pub(super) host: String,
    pub(super) path: String,
    /// Whether the credential is cached (false for single-use dialects and origins).
    pub(super) reusable: bool,
    pub(super) scope: String,
    pub(super) service: Option<String>,
    pub(super) amount: Msat,
    pub(super) hash: PaymentHash,
    /// When the invoice expires (bounds an approval's wait).
    pub(super) invoice_expires_at: Option<i64>,
    /// The invoice's description as the seller wrote it (shown to the policy service, cleaned).
    pub(super) description: Option<String>,
    pub(super) offer: Offer,
    pub(super) key: String,
    /// The purchase within (agent, origin): service or scope, `=path` for single-use.
    pub(super) purchase: String,
    /// The request it pays for (a single-use credential is kept for it if undelivered).
    pub(super) request: RequestKey,
    /// Set once the request that asked for this purchase is gone.
    pub(super) gone: Arc<AtomicBool>,
    /// The token the request carried, which the server answered with this challenge.
    pub(super) sent: Option<PaymentHash>,
}

impl Job {
    /// The flight this purchase is: (agent, origin, service or scope).
    pub(super) fn flight(&self) -> Flight<'_> {
        Flight {
            agent: &self.agent.name,
            origin: &self.origin,
            service: self.service.as_deref().unwrap_or(&self.scope),
        }
    }

    /// After a payment settled: the price remembered, the balance re-read, thresholds checked
    /// (in the background: the agent's answer does not wait for it).
    pub(super) fn settled(&self, operator: Arc<Limits>) {
        let p = &self.purchases;
        let g = p.guardrails.clone();
        // Only where a price-jump limit applies: nothing else reads the last price.
        if guardrails::max_price_increase(&self.agent.limits, &operator).is_some() {
            g.prices.paid(
                &self.agent.name,
                &self.origin,
                self.flight().service,
                self.amount,
            );
        }
        g.balance_moved();
        let thresholds = g.settings().budget_thresholds.clone();
        if thresholds.is_empty() {
            return;
        }
        let ledger = p.ledger.clone();
        let agent = self.agent.clone();
        let now = p.clock.now();
        tokio::spawn(async move {
            if let Ok(view) = ledger.budget(&agent.name, &agent.limits).await {
                thresholds::check(
                    &*ledger,
                    &g.alerts,
                    &thresholds,
                    Some(&agent.name),
                    &view,
                    now,
                )
                .await;
            }
            if let Ok(view) = ledger.operator_budget(&operator).await {
                thresholds::check(&*ledger, &g.alerts, &thresholds, None, &view, now).await;
            }
        });
    }

    /// A payment the wallet refused or failed, announced.
    pub(super) fn failed(&self, decline: &Decline) {
        if let Decline::Wallet { code, detail } = decline {
            self.purchases.guardrails.alerts.emit(Event::PaymentFailed {
                agent: self.agent.name.to_string(),
                host: self.host.clone(),
                amount_msat: self.amount.get(),
                payment_hash: self.hash.to_hex(),
                code: code.to_string(),
                reason: detail.clone(),
            });
        }
    }

    pub(super) async fn run(self) -> FlightResult {
        let p = &self.purchases;
        let reusable = self.reusable;
        let flight = self.flight().service.to_string();
        // A token another process bought needs neither approval nor payment.
        if reusable && p.shared_ledger {
            if let Some(token) = p.stored_token(&self).await? {
                return Ok(Obtained {
                    credential: token.credential.clone(),
                    dialect: self.offer.dialect,
                    flight,
                    token: Some(token),
                    paid: None,
                });
            }
        }
        let operator = p.operator_limits();
        self.guard(&operator).await?;
        if reusable {
            if let Some(token) = p.lease_or_token(&self).await? {
                return Ok(Obtained {
                    credential: token.credential.clone(),
                    dialect: self.offer.dialect,
                    flight,
                    token: Some(token),
                    paid: None,
                });
            }
        }
        let mut waited = false;
        let bought = loop {
            match self.buy_now().await {
                Err(Unbought::PurchaseOpen(open)) if !waited => {
                    // An earlier payment of this purchase is unresolved (a timeout, a slow
                    // node): wait for it, and be served by it if it settles.
                    waited = true;
                    if p.await_resolution(open).await? == PaymentState::Settled {
                        if let Some(served) = self.served_by_earlier().await? {
                            self.release_lease().await;
                            return Ok(served);
                        }
                    }
                }
                Err(Unbought::PurchaseOpen(_)) => {
                    break Err(Unbought::Declined(Decline::PurchaseUnresolved {
                        retry_after_secs: RETRY_UNRESOLVED_SECS,
                    }))
                }
                other => break other,
            }
        };
        // A payment that settled gave the lease back in its settle commit; otherwise the
        // lease goes now (if even that fails, it expires after the payment timeout).
        if !matches!(bought, Ok(Bought::Paid(_))) {
            self.release_lease().await;
        }
        let bought = match bought {
            Ok(bought) => bought,
            Err(Unbought::Unresolved {
                decline,
                late: Some(late),
            }) => {
                self.failed(&decline);
                tokio::spawn(self.deliver_late(late));
                return Err(decline);
            }
            Err(unbought) => {
                let decline = unbought.decline();
                self.failed(&decline);
                return Err(decline);
            }
        };
        let (proof, paid) = match bought {
            Bought::Paid(paid) => {
                self.settled(operator.clone());
                (
                    paid.preimage,
                    Some(PaidInfo {
                        amount: self.amount,
                        fee: paid.fee,
                        payment_hash: self.hash,
                    }),
                )
            }
            Bought::Earlier(proof) => (proof, None),
        };
        let credential = self.offer.terms.credential(&proof)?;
        let token = reusable.then(|| self.cache_token(credential.clone()));
        Ok(Obtained {
            credential,
            dialect: self.offer.dialect,
            flight,
            token,
            paid,
        })
    }

    /// Begins and pays now, for the agent and the limits as they are at this moment (an
    /// approval or another purchase may have kept this one waiting).
    pub(super) async fn buy_now(&self) -> Result<Bought, Unbought> {
        let p = &self.purchases;
        if !self.reusable && self.gone.load(Ordering::Relaxed) {
            return Err(Decline::RequesterGone.into());
        }
        let agent = p.current_agent(&self.agent.name)?;
        let operator = p.operator_limits();
        let payment = NewPayment {
            hash: self.hash,
            agent: self.agent.name.clone(),
            host: self.host.clone(),
            origin: self.origin.clone(),
            dialect: self.offer.dialect,
            amount: self.amount,
            fee_reserve: Msat::ZERO,
            bolt11: self.offer.invoice.clone(),
            credential: if self.reusable {
                self.offer.terms.stored()
            } else {
                None
            },
            service: self.service.clone(),
            scope: self.scope.clone(),
            purchase: self.purchase.clone(),
            token_expires_at: self.offer.terms.expires_at(),
            created_at: 0,
        };
        let bought = p
            .book
            .buy(
                payment,
                LimitSet {
                    agent: &agent.limits,
                    operator: &operator,
                    api_agent: agent.managed_by == ManagedBy::Api,
                },
            )
            .await;
        if let Err(Unbought::Declined(d @ Decline::SpendSpike { .. })) = &bought {
            p.guardrails.breaker_tripped(d, &agent.name).await;
        }
        bought
    }

    /// Gives the purchase lease back (shared ledgers, reusable credentials).
    pub(super) async fn release_lease(&self) {
        let p = &self.purchases;
        if self.reusable && p.shared_ledger {
            if let Err(e) = p.ledger.release_lease(&self.flight()).await {
                tracing::debug!(error = %e, "could not release a purchase lease; it expires");
            }
        }
    }

    /// What an earlier payment of this purchase, now settled, bought for this request: its
    /// token (reusable credentials), or the single-use credential kept for this very request.
    pub(super) async fn served_by_earlier(&self) -> Result<Option<Obtained>, Decline> {
        let p = &self.purchases;
        let flight = self.flight().service.to_string();
        if self.reusable {
            let token = match p.tokens.find_fresh(
                &self.agent.name,
                &self.origin,
                self.service.as_deref(),
                &self.path,
                p.clock.now_unix(),
                self.sent.as_ref(),
            ) {
                Some(token) => Some(token),
                None if p.shared_ledger => p.stored_token(self).await?,
                None => None,
            };
            return Ok(token.map(|token| Obtained {
                credential: token.credential.clone(),
                dialect: self.offer.dialect,
                flight,
                token: Some(token),
                paid: None,
            }));
        }
        // A late-settled payment's credential is kept before the payment is recorded settled.
        Ok(p.kept
            .take(&self.agent.name, self.request, p.clock.now_unix())
            .map(|kept| Obtained {
                credential: kept.credential,
                dialect: kept.dialect,
                flight: kept.flight,
                token: None,
                paid: None,
            }))
    }

    /// The wallet settled this payment after the agent was told it timed out: what it bought is
    /// kept for the agent's retry (the token cached, a single-use credential kept for its
    /// request), and the price and thresholds are recorded as for any payment.
    pub(super) async fn deliver_late(self, late: tokio::sync::oneshot::Receiver<LateSettle>) {
        // Held until delivered: the payment is recorded settled once this is dropped.
        let Ok(settle) = late.await else {
            return;
        };
        let paid = settle.paid;
        let p = &self.purchases;
        self.settled(p.operator_limits());
        let credential = match self.offer.terms.credential(&paid.preimage) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(hash = %self.hash.short(), error = %e, "a late-settled payment's credential cannot be built");
                return;
            }
        };
        if self.reusable {
            self.cache_token(credential);
        } else {
            p.kept.keep(
                &self.agent.name,
                self.request,
                credential,
                self.offer.dialect,
                self.flight().service.to_string(),
                p.clock.now_unix(),
            );
        }
    }

    /// Caches the reusable credential this purchase bought.
    pub(super) fn cache_token(&self, credential: Credential) -> Arc<Token> {
        let p = &self.purchases;
        let token = Arc::new(Token::new(
            credential,
            self.hash,
            self.service.clone(),
            self.offer.terms.expires_at(),
            vec![self.scope.clone(), format!("={}", self.path)],
        ));
        p.tokens.insert(
            &self.agent.name,
            &self.origin,
            token.clone(),
            p.clock.now_unix(),
        );
        token
    }
}
