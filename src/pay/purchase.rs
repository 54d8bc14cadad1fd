//! Turning an offer into a credential, safely: a token another request of the same agent just
//! bought for the same service is used instead of paying again (single flight within the
//! process, a lease across processes), the invoice is checked before any budget is touched,
//! and the payment runs in its own task, so an agent hanging up mid-payment cannot lose a
//! settled preimage.

use super::book::PaymentBook;
use super::dialect::{Credential, Dialects, Offer};
use super::flight::{Flights, Join, Landing};
use super::kept::{Kept, RequestKey};
use super::policy;
use super::tokens::{path_scope, Token, TokenCache};
use crate::agents::directory::Directory;
use crate::agents::Agent;
use crate::config::Limits;
use crate::core::{Clock, Decline, Msat, PaymentHash};
use crate::guardrails::Guardrails;
use crate::invoice::{self, Network};
use crate::ledger::{Ledger, PaymentState};
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// What a request got: a credential to replay with.
#[derive(Debug, Clone)]
pub struct Obtained {
    /// The header to replay with.
    pub credential: Credential,
    /// The dialect it answers.
    pub dialect: &'static str,
    /// The service bought (or the path scope, when the offer named none).
    pub flight: String,
    /// The cached token, for reusable credentials (scopes are learned on it).
    pub token: Option<Arc<Token>>,
    /// Set when this request's offer was paid; `None` when it rides on a token another request
    /// of the same agent bought for the same service.
    pub paid: Option<PaidInfo>,
}

/// What this request paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidInfo {
    /// The invoice amount.
    pub amount: Msat,
    /// The routing fee.
    pub fee: Msat,
    /// The payment hash.
    pub payment_hash: PaymentHash,
}

type FlightResult = Result<Obtained, Decline>;

/// A refusal, with the invoice amount when the invoice was read that far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub decline: Decline,
    /// What the invoice asked for, if known.
    pub amount: Option<Msat>,
}

impl From<Decline> for Refused {
    fn from(decline: Decline) -> Refused {
        Refused {
            decline,
            amount: None,
        }
    }
}

/// Where the request goes and who sends it.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// `scheme://host:port`, the token cache key.
    pub origin: &'a str,
    /// The host, lower-cased, without brackets (host rules match it).
    pub host: &'a str,
    /// The port (kept with the host in the ledger).
    pub port: u16,
}

impl Destination<'_> {
    /// `host:port`, as the ledger and declines show it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The purchasing side of the payment layer.
pub struct Purchases {
    book: Arc<PaymentBook>,
    ledger: Arc<dyn Ledger>,
    tokens: Arc<TokenCache>,
    dialects: Arc<Dialects>,
    flights: Arc<Flights<FlightResult>>,
    clock: Arc<dyn Clock>,
    network: Network,
    operator_limits: ArcSwap<Limits>,
    /// Whether other processes share the ledger (so tokens may have been bought elsewhere).
    shared_ledger: bool,
    /// Origins, or services at an origin (`origin\nservice`), whose tokens serve one request
    /// only: nothing is cached or shared there.
    single_use: dashmap::DashSet<String>,
    /// (agent, origin, service) whose paid credential the server refused, until when (unix s).
    cooling: dashmap::DashMap<String, u64>,
    /// Approvals, payment rate limits, the price-jump guard, alerts.
    guardrails: Arc<Guardrails>,
    /// The agents as they are now: a purchase pays for the agent as it is when money leaves.
    agents: Arc<Directory>,
    /// Paid single-use credentials that never reached their request, kept for its retry.
    kept: Kept,
}

/// The key of [`Purchases::mark_single_use`]: the origin, with the service when there is one.
fn single_use_key(origin: &str, service: Option<&str>) -> String {
    match service {
        Some(s) => format!("{origin}\n{s}"),
        None => origin.to_string(),
    }
}

/// How long a service whose server refused a paid credential is not paid again.
pub const COOL_OFF_SECS: u64 = 300;

/// How [`Purchases`] is assembled.
pub struct PurchaseParts {
    /// The payment book.
    pub book: Arc<PaymentBook>,
    /// The money authority.
    pub ledger: Arc<dyn Ledger>,
    /// The token cache.
    pub tokens: Arc<TokenCache>,
    /// The dialects paid.
    pub dialects: Arc<Dialects>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// The network invoices must be for.
    pub network: Network,
    /// The operator's limits (replaced on reload).
    pub operator_limits: Limits,
    /// True for a ledger shared by several processes.
    pub shared_ledger: bool,
    /// The guardrails every payment passes.
    pub guardrails: Arc<Guardrails>,
    /// The live agent directory.
    pub agents: Arc<Directory>,
}

/// How often a request waiting for an unresolved payment of its purchase looks at it.
const RESOLUTION_POLL: Duration = Duration::from_millis(100);

/// The `Retry-After` given with [`Decline::PurchaseUnresolved`].
pub const RETRY_UNRESOLVED_SECS: u64 = 5;

impl Purchases {
    /// Assembles the purchasing side.
    pub fn new(parts: PurchaseParts) -> Purchases {
        Purchases {
            book: parts.book,
            ledger: parts.ledger,
            tokens: parts.tokens,
            dialects: parts.dialects,
            flights: Arc::new(Flights::default()),
            clock: parts.clock,
            network: parts.network,
            operator_limits: ArcSwap::from_pointee(parts.operator_limits),
            shared_ledger: parts.shared_ledger,
            single_use: dashmap::DashSet::new(),
            cooling: dashmap::DashMap::new(),
            guardrails: parts.guardrails,
            agents: parts.agents,
            kept: Kept::new(),
        }
    }

    /// The agent named `name` as it is now: gone → `agent-deleted`, paused → `agent-paused`.
    pub fn current_agent(&self, name: &str) -> Result<Arc<Agent>, Decline> {
        let agents = self.agents.load();
        match agents.get(name) {
            None => Err(Decline::AgentDeleted {
                agent: name.to_string(),
            }),
            Some(a) if a.paused => Err(Decline::AgentPaused {
                agent: name.to_string(),
            }),
            Some(a) => Ok(a.clone()),
        }
    }

    /// Paid single-use credentials kept for their request's retry.
    pub fn kept(&self) -> &Kept {
        &self.kept
    }

    /// Waits until the unresolved payment `hash` is resolved, at most the wallet's payment
    /// timeout: its final state, or [`Decline::PurchaseUnresolved`] when it is still open.
    async fn await_resolution(&self, hash: PaymentHash) -> Result<PaymentState, Decline> {
        let deadline = tokio::time::Instant::now() + self.book.timeout();
        loop {
            match self.ledger.payment_state(hash).await? {
                Some(PaymentState::Pending) => {}
                Some(state) => return Ok(state),
                // Gone from the ledger (retention): nothing holds the purchase open.
                None => return Ok(PaymentState::Failed),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Decline::PurchaseUnresolved {
                    retry_after_secs: RETRY_UNRESOLVED_SECS,
                });
            }
            tokio::time::sleep(RESOLUTION_POLL).await;
        }
    }

    /// Remembers that `service` at `origin` spends each token once (a used one gets 401/403
    /// with no challenge): later purchases of it are not cached or shared. A token naming no
    /// service stands for the whole origin, and so does the mark.
    pub fn mark_single_use(&self, origin: &str, service: Option<&str>) {
        self.single_use.insert(single_use_key(origin, service));
    }

    /// Whether purchases of `service` at `origin` are single-use (the service's own mark, or
    /// the whole origin's).
    fn is_single_use(&self, origin: &str, service: Option<&str>) -> bool {
        self.single_use.contains(origin)
            || (service.is_some() && self.single_use.contains(&single_use_key(origin, service)))
    }

    /// Stops paying `flight` of `agent` at `origin` for [`COOL_OFF_SECS`].
    pub fn cool_off(&self, agent: &str, origin: &str, flight: &str) {
        let until = self.clock.now_unix().saturating_add(COOL_OFF_SECS);
        tracing::warn!(%agent, %origin, service = flight, secs = COOL_OFF_SECS, "the server refused a paid credential: not paying this service again for a while");
        self.cooling
            .insert(format!("{agent}\n{origin}\n{flight}"), until);
    }

    /// The network invoices must be for (the wallet's).
    pub fn network(&self) -> Network {
        self.network
    }

    /// The payment book.
    pub fn book(&self) -> &Arc<PaymentBook> {
        &self.book
    }

    /// Replaces the operator's limits (config reload).
    pub fn set_operator_limits(&self, limits: Limits) {
        self.operator_limits.store(Arc::new(limits));
    }

    /// The operator's limits in force.
    pub fn operator_limits(&self) -> Arc<Limits> {
        self.operator_limits.load_full()
    }

    /// Gets a credential answering `offer`: one a concurrent request of the same agent just
    /// bought for the same service, or a new payment, subject to the agent's policy. `sent` is
    /// the token the request carried (a 402 answered it, so it is not the answer).
    #[allow(clippy::too_many_arguments)]
    pub async fn obtain(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        path: &str,
        sent: Option<&PaymentHash>,
        body: &[u8],
        request: RequestKey,
        requester: Option<&dyn super::layer::Requester>,
        offer: Offer,
    ) -> Result<Obtained, Refused> {
        if agent.paused {
            return Err(Decline::AgentPaused {
                agent: agent.name.to_string(),
            }
            .into());
        }
        let reusable =
            offer.terms.reusable() && !self.is_single_use(to.origin, offer.terms.service());
        let service = offer.terms.service().map(str::to_string);
        let scope = path_scope(path).to_string();
        let now = self.clock.now_unix();
        let flight = service.clone().unwrap_or_else(|| scope.clone());
        let cooling_key = format!("{}\n{}\n{flight}", agent.name, to.origin);
        if let Some(until) = self.cooling.get(&cooling_key).map(|u| *u) {
            if now < until {
                return Err(Decline::CoolingOff { secs: until - now }.into());
            }
            self.cooling.remove(&cooling_key);
        }
        if reusable {
            if let Some(token) = self.fresh_token(agent, to.origin, service.as_deref(), path, sent)
            {
                return Ok(token);
            }
        } else if let Some(kept) = self.kept.take(&agent.name, request, now) {
            // This very request was paid for before and never served: no second payment.
            return Ok(Obtained {
                credential: kept.credential,
                dialect: kept.dialect,
                flight: kept.flight,
                token: None,
                paid: None,
            });
        }
        let invoice = invoice::decode(&offer.invoice).map_err(|e| Decline::InvoiceInvalid {
            reason: e.to_string(),
        })?;
        let with_amount = |decline| Refused {
            decline,
            amount: invoice.amount,
        };
        let addrs = policy::host_addresses(agent, to.host, to.port).await;
        let amount = policy::check_invoice(&invoice, agent, to.host, &addrs, self.network, now)
            .map_err(with_amount)?;
        if let Some(limit) = self.operator_limits.load().per_request_sats {
            if amount.sats_ceil() > limit.get() {
                return Err(with_amount(Decline::OverPerRequestLimit {
                    amount,
                    limit_sats: limit.get(),
                }));
            }
        }
        offer
            .terms
            .check(&invoice, body, now)
            .map_err(with_amount)?;
        let key = format!(
            "{}\n{}\n{}",
            agent.name,
            to.origin,
            service.as_deref().unwrap_or(&scope)
        );
        // A single-use credential serves one request: its purchase is the exact path.
        let purchase = if reusable {
            service.clone().unwrap_or_else(|| scope.clone())
        } else {
            format!("={path}")
        };
        // Set when this request goes away (the agent hung up) while its purchase runs on.
        let gone = Arc::new(AtomicBool::new(false));
        let hung_up = SetOnDrop(gone.clone());
        let job = Job {
            purchases: self.clone(),
            agent: agent.clone(),
            origin: to.origin.to_string(),
            host: to.host_port(),
            path: path.to_string(),
            reusable,
            scope,
            service: service.clone(),
            amount,
            hash: invoice.payment_hash,
            invoice_expires_at: i64::try_from(invoice.expires_at()).ok(),
            description: invoice.description.clone(),
            offer,
            key,
            purchase,
            request,
            gone,
            sent: sent.copied(),
        };
        let result = if reusable {
            self.single_flight(job, agent, to, service.as_deref(), path, sent)
                .await
        } else {
            // A single-use credential serves one request: every request pays its own, and
            // nobody else could use it once that request is gone.
            let run = detached(job);
            match requester {
                Some(requester) => watch_requester(run, requester, &hung_up.0).await,
                None => run.await,
            }
        };
        result.map_err(|decline| Refused {
            decline,
            amount: Some(amount),
        })
    }

    /// One purchase per (agent, origin, service) in this process: the first request leads,
    /// concurrent ones ride on its outcome.
    async fn single_flight(
        &self,
        job: Job,
        agent: &Agent,
        to: Destination<'_>,
        service: Option<&str>,
        path: &str,
        sent: Option<&PaymentHash>,
    ) -> FlightResult {
        let lead = match self.flights.join(job.key.clone()) {
            Join::Follow(follow) => {
                // Another request of this agent is buying this service: ride on it.
                return match follow.landing().await {
                    Landing::Done(Ok(o)) => Ok(Obtained { paid: None, ..o }),
                    Landing::Done(Err(d)) => Err(Decline::ConcurrentPaymentFailed(Box::new(d))),
                    Landing::Abandoned => Err(Decline::PaymentAborted),
                };
            }
            Join::Lead(lead) => lead,
        };
        // A flight that finished just before we took the slot left its token behind.
        if let Some(token) = self.fresh_token(agent, to.origin, service, path, sent) {
            lead.land(Ok(token.clone()));
            return Ok(token);
        }
        // The flight slot is a guard inside the task, so a panic there still answers the
        // followers and frees the slot.
        let handle = tokio::spawn(async move {
            let result = job.run().await;
            lead.land(result.clone());
            result
        });
        handle.await.unwrap_or(Err(Decline::PaymentAborted))
    }

    fn fresh_token(
        &self,
        agent: &Agent,
        origin: &str,
        service: Option<&str>,
        path: &str,
        sent: Option<&PaymentHash>,
    ) -> Option<Obtained> {
        let token = self.tokens.find_fresh(
            &agent.name,
            origin,
            service,
            path,
            self.clock.now_unix(),
            sent,
        )?;
        Some(Obtained {
            credential: token.credential.clone(),
            dialect: "l402",
            flight: token
                .services
                .clone()
                .unwrap_or_else(|| path_scope(path).to_string()),
            token: Some(token),
            paid: None,
        })
    }
}

mod guard;
mod job;
mod requester;
mod stored;

use job::{detached, Job};
use requester::{watch_requester, SetOnDrop};

#[cfg(test)]
mod tests;
