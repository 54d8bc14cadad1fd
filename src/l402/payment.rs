//! One payment, in the order the money rules demand: claim the hash, reserve budget, make the
//! pending record durable, pay, verify the preimage, then commit (or release) and keep the
//! token. Runs detached from the request that asked for it.

use super::challenge;
use super::engine::{Engine, HashState, Obtained, PaidInfo};
use super::policy::Decline;
use super::reconcile::InFlight;
use super::tokens::Token;
use crate::agents::Agent;
use crate::money::{Msat, PaymentHash, Preimage};
use crate::store::{Begin, NewPayment};
use crate::wallet::{Paid, PayError, PayRequest, PaymentStatus};
use http::HeaderValue;
use std::sync::Arc;

pub(super) struct PaymentJob {
    pub engine: Arc<Engine>,
    pub agent: Arc<Agent>,
    pub origin: String,
    pub host: String,
    pub token: String,
    pub bolt11: String,
    pub hash: PaymentHash,
    pub amount: Msat,
    pub services: Option<String>,
    pub expiry: Option<u64>,
    pub scope: String,
}

/// What is needed to turn a preimage into a cached token later (also after a restart).
#[derive(Clone)]
pub(super) struct TokenSpec {
    pub agent: Arc<str>,
    pub origin: String,
    pub token: String,
    pub services: Option<String>,
    pub expiry: Option<u64>,
    pub scope: String,
    pub hash: PaymentHash,
}

impl std::fmt::Debug for TokenSpec {
    /// The token is a credential once paid: only its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec")
            .field("agent", &self.agent)
            .field("origin", &self.origin)
            .field("token", &format_args!("<{} chars>", self.token.len()))
            .field("services", &self.services)
            .field("hash", &self.hash)
            .finish()
    }
}

impl TokenSpec {
    /// Builds the credential and caches it for the agent.
    pub fn install(&self, engine: &Engine, preimage: &Preimage) -> Result<Arc<Token>, Decline> {
        let value = challenge::authorization_value(&self.token, preimage.as_bytes());
        let mut authorization = HeaderValue::from_str(&value).map_err(|_| {
            Decline::new("challenge-invalid", "the token cannot be sent in a header")
        })?;
        // A bearer credential: kept out of Debug output and out of HPACK tables.
        authorization.set_sensitive(true);
        let token = Arc::new(Token::new(
            authorization,
            self.hash,
            self.services.clone(),
            self.expiry,
            self.scope.clone(),
        ));
        engine
            .tokens
            .insert(&self.agent, &self.origin, token.clone());
        Ok(token)
    }
}

impl PaymentJob {
    fn spec(&self) -> TokenSpec {
        TokenSpec {
            agent: self.agent.name.clone(),
            origin: self.origin.clone(),
            token: self.token.clone(),
            services: self.services.clone(),
            expiry: self.expiry,
            scope: self.scope.clone(),
            hash: self.hash,
        }
    }

    fn record(&self, fee_reserve: Msat) -> NewPayment {
        NewPayment {
            hash: self.hash,
            agent: self.agent.name.to_string(),
            host: self.host.clone(),
            origin: self.origin.clone(),
            amount: self.amount,
            fee_reserve,
            bolt11: self.bolt11.clone(),
            token: self.token.clone(),
            services: self.services.clone(),
            scope: self.scope.clone(),
            token_expires_at: self.expiry,
            created_at: self.engine.budget.now(),
        }
    }

    pub async fn run(self) -> Result<Obtained, Decline> {
        let engine = &self.engine;
        let spec = self.spec();
        if let Some(paid) = engine.claim(self.hash).await? {
            return Ok(Obtained {
                token: spec.install(engine, &paid.preimage)?,
                paid: None,
            });
        }
        let fee_reserve = engine.max_fee;
        let reservation = match engine
            .budget
            .reserve(&self.agent, self.amount.saturating_add(fee_reserve))
        {
            Ok(r) => r,
            Err(decline) => {
                engine.hashes.remove(&self.hash);
                return Err(decline);
            }
        };
        // The pending record is durable before any money can leave.
        match engine.store.begin(self.record(fee_reserve)).await {
            Ok(Begin::Fresh) => {}
            Ok(Begin::Settled { preimage, fee }) => {
                engine.budget.release(reservation);
                let preimage = Preimage::verify_hex(&preimage, &self.hash).map_err(|_| {
                    engine.hashes.remove(&self.hash);
                    Decline::new(
                        "ledger-inconsistent",
                        "the ledger holds a wrong preimage for this hash",
                    )
                })?;
                engine
                    .hashes
                    .insert(self.hash, HashState::Paid(Paid { preimage, fee }));
                return Ok(Obtained {
                    token: spec.install(engine, &preimage)?,
                    paid: None,
                });
            }
            Ok(Begin::Pending) => {
                // Sent by an earlier run and not resolved: the reconciler owns it.
                engine.budget.release(reservation);
                return Err(Decline::new(
                    "payment-in-flight",
                    "this invoice's payment is still being resolved; retry later",
                ));
            }
            Err(e) => {
                engine.budget.release(reservation);
                engine.hashes.remove(&self.hash);
                tracing::error!(error = %e, "cannot record a pending payment; not paying");
                return Err(Decline::new(
                    "ledger-unavailable",
                    format!("not paying without a durable record: {e}"),
                ));
            }
        }
        match self.pay().await {
            Ok(paid) => {
                engine.hashes.insert(self.hash, HashState::Paid(paid));
                engine
                    .budget
                    .commit(reservation, self.amount.saturating_add(paid.fee));
                engine.metrics.payment("succeeded", engine.wallet.backend());
                engine
                    .metrics
                    .paid(&self.agent.name, self.amount.0, paid.fee.0);
                // Settling the record need not hold up the agent: until it lands, a crash leaves
                // the row pending and the restart reconciles it through the wallet.
                let store = engine.store.clone();
                let (hash, fee, preimage) = (self.hash, paid.fee, paid.preimage.to_hex());
                let now = engine.budget.now();
                tokio::spawn(async move {
                    if let Err(e) = store.settle(hash, fee, preimage, now).await {
                        tracing::error!(hash = %hash.short(), error = %e, "could not record a settled payment");
                    }
                });
                Ok(Obtained {
                    token: spec.install(engine, &paid.preimage)?,
                    paid: Some(PaidInfo {
                        amount: self.amount,
                        fee: paid.fee,
                        payment_hash: self.hash,
                    }),
                })
            }
            Err(e) if e.may_be_in_flight() => {
                engine.metrics.payment("in_flight", engine.wallet.backend());
                // Budget stays held and the hash stays claimed until the wallet says how it ended.
                engine.track(InFlight {
                    reservation,
                    spec,
                    amount: self.amount,
                    since: engine.budget.now(),
                });
                Err(Decline::new(e.code(), e.to_string()))
            }
            Err(e) => {
                engine.metrics.payment("failed", engine.wallet.backend());
                if let Err(se) = engine
                    .store
                    .fail(self.hash, e.to_string(), engine.budget.now())
                    .await
                {
                    tracing::error!(error = %se, "could not record a failed payment");
                }
                engine.budget.release(reservation);
                engine.hashes.remove(&self.hash);
                Err(Decline::new(e.code(), e.to_string()))
            }
        }
    }

    async fn pay(&self) -> Result<Paid, PayError> {
        let engine = &self.engine;
        let request = PayRequest {
            bolt11: self.bolt11.clone(),
            payment_hash: self.hash,
            amount: self.amount,
            max_fee: engine.max_fee,
            timeout: engine.timeout,
        };
        tracing::info!(agent = %self.agent.name, origin = %self.origin, hash = %self.hash.short(), amount = %self.amount, "paying");
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(engine.timeout, engine.wallet.pay(&request)).await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(PayError::Timeout(engine.timeout)),
        };
        let outcome = match outcome {
            // The wallet says it already paid this hash: recover the preimage instead of failing.
            Err(PayError::AlreadyPaid) => match engine.wallet.lookup(&self.hash).await {
                Ok(PaymentStatus::Succeeded(paid)) => Ok(paid),
                _ => Err(PayError::AlreadyPaid),
            },
            other => other,
        };
        // Defence in depth: the type already guarantees it; re-check before trusting a backend.
        let outcome = outcome.and_then(|paid| {
            Preimage::verify(*paid.preimage.as_bytes(), &self.hash)
                .map(|_| paid)
                .map_err(|_| PayError::BadPreimage)
        });
        engine
            .metrics
            .payment_seconds
            .with_label_values(&[engine.wallet.backend()])
            .observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(paid) => {
                tracing::info!(agent = %self.agent.name, hash = %self.hash.short(), fee = %paid.fee, ms = started.elapsed().as_millis() as u64, "paid")
            }
            Err(e) => {
                tracing::warn!(agent = %self.agent.name, hash = %self.hash.short(), error = %e, "payment failed")
            }
        }
        outcome
    }
}
