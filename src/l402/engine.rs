//! Turning a challenge into a paid token, safely: concurrent requests for one service share a
//! single payment (single-flight), a payment hash is never paid twice, and the payment runs in
//! its own task so an agent hanging up mid-payment cannot lose a settled preimage.

use super::challenge::Challenge;
use super::macaroon;
use super::payment::PaymentJob;
use super::policy::{self, Decline};
use super::reconcile::InFlight;
use super::tokens::{path_scope, Token, TokenCache};
use crate::agents::Agent;
use crate::budget::Budget;
use crate::invoice::{self, Network};
use crate::metrics::Metrics;
use crate::money::{Msat, PaymentHash};
use crate::store::Store;
use crate::wallet::dev::now_unix;
use crate::wallet::{Paid, PaymentStatus, Wallet};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// What a request got from the engine.
#[derive(Debug, Clone)]
pub struct Obtained {
    pub token: Arc<Token>,
    /// Set when this request's challenge was paid; None when it rides on a token another
    /// request of the same agent paid for the same service.
    pub paid: Option<PaidInfo>,
}

#[derive(Debug, Clone, Copy)]
pub struct PaidInfo {
    pub amount: Msat,
    pub fee: Msat,
    pub payment_hash: PaymentHash,
}

type FlightResult = Result<Obtained, Decline>;

/// Where a payment hash stands in this process.
#[derive(Debug, Clone, Copy)]
pub(super) enum HashState {
    /// Sent to the wallet and not known to have failed: never send it again, look it up.
    Pending,
    Paid(Paid),
}

pub struct Engine {
    pub tokens: TokenCache,
    pub budget: Arc<Budget>,
    pub(super) store: Store,
    pub(super) wallet: Arc<dyn Wallet>,
    network: Network,
    pub(super) max_fee: Msat,
    pub(super) timeout: Duration,
    flights: DashMap<String, watch::Receiver<Option<FlightResult>>>,
    pub(super) hashes: DashMap<PaymentHash, HashState>,
    /// Payments that may still settle (timeouts, crashes): budget held, resolved by lookup.
    pub(super) in_flight: Mutex<HashMap<PaymentHash, InFlight>>,
    pub metrics: Arc<Metrics>,
    /// Payment tasks running now (shutdown waits for them).
    active: AtomicUsize,
}

/// How the engine pays and where it records what it does.
pub struct EngineParts {
    pub wallet: Arc<dyn Wallet>,
    pub network: Network,
    pub max_fee: Msat,
    pub timeout: Duration,
    pub budget: Arc<Budget>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// Everything about the request that the engine needs.
pub struct ChallengeContext<'a> {
    pub agent: &'a Arc<Agent>,
    /// `scheme://authority`, the token cache key.
    pub origin: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The token the request carried upstream, if any (a 402 answered it).
    pub sent: Option<&'a PaymentHash>,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        Engine {
            tokens: TokenCache::new(),
            budget: parts.budget,
            store: parts.store,
            wallet: parts.wallet,
            network: parts.network,
            max_fee: parts.max_fee,
            timeout: parts.timeout,
            flights: DashMap::new(),
            hashes: DashMap::new(),
            in_flight: Mutex::new(HashMap::new()),
            metrics: parts.metrics,
            active: AtomicUsize::new(0),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Payments handed to the wallet and not finished yet.
    pub fn payments_in_progress(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn wallet(&self) -> &Arc<dyn Wallet> {
        &self.wallet
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// Gets a token answering `challenge`: one a concurrent request already paid for, or a new
    /// payment, subject to the agent's policy.
    pub async fn obtain(
        self: &Arc<Self>,
        cx: &ChallengeContext<'_>,
        chosen: &Challenge,
    ) -> FlightResult {
        let result = self.obtain_inner(cx, chosen).await;
        if let Err(decline) = &result {
            self.metrics.decline(decline.code);
            // Recorded for the operator, off the request path.
            let store = self.store.clone();
            let (agent, host) = (cx.agent.name.to_string(), cx.host.to_string());
            let (code, detail) = (decline.code.to_string(), decline.detail.clone());
            tokio::spawn(async move {
                if let Err(e) = store
                    .record_decline(agent, host, code, detail, now_unix() as i64)
                    .await
                {
                    tracing::warn!(error = %e, "could not record a decline");
                }
            });
        }
        result
    }

    async fn obtain_inner(
        self: &Arc<Self>,
        cx: &ChallengeContext<'_>,
        chosen: &Challenge,
    ) -> FlightResult {
        let mac = macaroon::decode_token(&chosen.token).ok();
        let services = mac.as_ref().and_then(|m| m.services()).map(str::to_string);
        if let Some(token) = self.fresh_token(cx, services.as_deref()) {
            return Ok(token);
        }
        let invoice = invoice::decode(&chosen.invoice).map_err(|e| {
            Decline::new(
                "invoice-invalid",
                format!("the challenge's invoice is not payable: {e}"),
            )
        })?;
        let amount = policy::check_invoice(&invoice, cx.agent, cx.host, self.network, now_unix())?;
        let hash = PaymentHash(invoice.payment_hash);
        if let Some(committed) = mac.as_ref().and_then(|m| m.payment_hash_v0()) {
            if committed != hash.0 {
                return Err(Decline::new(
                    "token-invoice-mismatch",
                    "the token commits to a different payment hash than the invoice",
                ));
            }
        }
        let scope = path_scope(cx.path).to_string();
        let key = format!(
            "{}\n{}\n{}",
            cx.agent.name,
            cx.origin,
            services.as_deref().unwrap_or(&scope)
        );
        let sender = loop {
            let mut waiting = match self.flights.entry(key.clone()) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(v) => {
                    let (tx, rx) = watch::channel(None);
                    v.insert(rx);
                    break tx;
                }
            };
            // Follower: another request of this agent is paying for this service.
            let outcome = waiting.wait_for(Option::is_some).await.map(|o| o.clone());
            match outcome {
                Ok(outcome) => {
                    return match outcome {
                        Some(Ok(o)) => Ok(Obtained {
                            token: o.token,
                            paid: None,
                        }),
                        Some(Err(d)) => Err(Decline::new(
                            d.code,
                            format!("a concurrent payment for this service failed: {}", d.detail),
                        )),
                        None => Err(Decline::new(
                            "payment-aborted",
                            "the concurrent payment was abandoned",
                        )),
                    };
                }
                // The leader vanished without an outcome; compete to lead again.
                Err(_) => continue,
            }
        };
        // Leader. A flight that finished just before we took the slot left its token behind.
        if let Some(token) = self.fresh_token(cx, services.as_deref()) {
            let _ = sender.send(Some(Ok(token.clone())));
            self.flights.remove(&key);
            return Ok(token);
        }
        let job = PaymentJob {
            engine: self.clone(),
            agent: cx.agent.clone(),
            origin: cx.origin.to_string(),
            host: cx.host.to_string(),
            token: chosen.token.clone(),
            bolt11: chosen.invoice.clone(),
            hash,
            amount,
            services,
            expiry: mac.as_ref().and_then(|m| m.expires_at_unix()),
            scope,
        };
        let engine = self.clone();
        self.active.fetch_add(1, Ordering::SeqCst);
        let handle = tokio::spawn(async move {
            let outcome = job.run().await;
            engine.active.fetch_sub(1, Ordering::SeqCst);
            let _ = sender.send(Some(outcome.clone()));
            engine.flights.remove(&key);
            outcome
        });
        handle
            .await
            .unwrap_or_else(|_| Err(Decline::new("payment-aborted", "the payment task failed")))
    }

    fn fresh_token(&self, cx: &ChallengeContext<'_>, services: Option<&str>) -> Option<Obtained> {
        let token = self.tokens.find_fresh(
            &cx.agent.name,
            cx.origin,
            services,
            cx.path,
            now_unix(),
            cx.sent,
        )?;
        Some(Obtained { token, paid: None })
    }

    /// Claims a hash for paying. Returns the earlier result when it was already paid here.
    pub(super) async fn claim(&self, hash: PaymentHash) -> Result<Option<Paid>, Decline> {
        let state = match self.hashes.entry(hash) {
            Entry::Vacant(v) => {
                v.insert(HashState::Pending);
                return Ok(None);
            }
            Entry::Occupied(e) => *e.get(),
        };
        match state {
            HashState::Paid(paid) => Ok(Some(paid)),
            // Sent before and not known to have failed: ask the node, never pay again.
            HashState::Pending => match self.wallet.lookup(&hash).await {
                Ok(PaymentStatus::Succeeded(paid)) => {
                    self.hashes.insert(hash, HashState::Paid(paid));
                    Ok(Some(paid))
                }
                Ok(PaymentStatus::Failed(reason)) => {
                    self.hashes.remove(&hash);
                    Err(Decline::new(
                        "payment-failed",
                        format!("an earlier attempt failed: {reason}"),
                    ))
                }
                _ => Err(Decline::new(
                    "payment-in-flight",
                    "this invoice's payment is still in flight; retry later",
                )),
            },
        }
    }
}
