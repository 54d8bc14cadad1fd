//! Turning an offer into a credential, safely: a token another request of the same agent just
//! bought for the same service is used instead of paying again (single flight within the
//! process, a lease across processes), the invoice is checked before any budget is touched,
//! and the payment runs in its own task, so an agent hanging up mid-payment cannot lose a
//! settled preimage.

use super::book::{Bought, PaymentBook, Resolved, Unbought};
use super::dialect::{Credential, Dialects, Offer};
use super::flight::{Flights, Join, Landing};
use super::kept::{Kept, RequestKey};
use super::policy;
use super::tokens::{path_scope, Token, TokenCache};
use crate::agents::directory::Directory;
use crate::agents::{Agent, ManagedBy};
use crate::alerts::Event;
use crate::config::Limits;
use crate::core::decline::{Period, Whose};
use crate::core::{Clock, Decline, Msat, PaymentHash};
use crate::guardrails::{self, thresholds, Guardrails, Hold, PriceCheck};
use crate::invoice::{self, Network};
use crate::ledger::{Flight, Ledger, LimitSet, NewPayment, PaymentState, StoredToken};
use crate::wallet::Paid;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How often a waiting replica looks for the token another replica is buying.
const LEASE_POLL: Duration = Duration::from_millis(50);

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
            if amount.sats_ceil() > limit {
                return Err(with_amount(Decline::OverPerRequestLimit {
                    amount,
                    limit_sats: limit,
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

    /// Caches a stored token (bought by another process, or before a restart).
    pub fn install(&self, stored: &StoredToken) -> Option<Arc<Token>> {
        let credential = self.dialects.restore(&stored.credential, &stored.proof)?;
        let token = Arc::new(Token::new(
            credential,
            stored.proof.hash(),
            stored.service.clone(),
            stored.expires_at,
            stored.scopes.clone(),
        ));
        self.tokens.insert(
            &Arc::from(stored.agent.as_str()),
            &stored.origin,
            token.clone(),
            self.clock.now_unix(),
        );
        Some(token)
    }

    /// Caches a stored token unless this process has it already (its own purchases are
    /// announced back to it too).
    pub fn install_if_new(&self, stored: &StoredToken) {
        if !self
            .tokens
            .contains(&stored.agent, &stored.origin, &stored.proof.hash())
        {
            let _ = self.install(stored);
        }
    }

    /// Fills the token cache from the ledger (at start).
    pub async fn restore_tokens(&self) -> Result<usize, crate::ledger::LedgerError> {
        let mut n = 0;
        for stored in self.ledger.live_tokens(self.clock.now_unix()).await? {
            if self.install(&stored).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// One reconciliation pass; tokens of payments that turn out settled are cached. Returns how
    /// many payments stay unresolved.
    pub async fn reconcile(&self) -> Result<usize, crate::ledger::LedgerError> {
        let (resolved, open) = self.book.reconcile().await?;
        for r in resolved {
            if let Resolved::Settled(row, paid) = r {
                let Some(credential) = row.credential.clone() else {
                    continue;
                };
                let stored = StoredToken {
                    agent: row.agent.clone(),
                    origin: row.origin.clone(),
                    credential,
                    proof: paid.preimage,
                    service: row.service.clone(),
                    scopes: vec![row.scope.clone()],
                    expires_at: row.token_expires_at,
                };
                if self.install(&stored).is_none() {
                    tracing::warn!(hash = %row.hash.short(), "settled, but its token is unusable");
                }
            }
        }
        Ok(open)
    }

    /// Waits, across processes, for the purchase lease of `key`. Returns a token another process
    /// bought meanwhile, or `None` once this process holds the lease and must buy.
    async fn lease_or_token(&self, job: &Job) -> Result<Option<Arc<Token>>, Decline> {
        if !self.shared_ledger {
            return Ok(None);
        }
        let ttl = self.book.timeout() + Duration::from_secs(10);
        // A request waits for another buyer (or an unresolved payment of its purchase) as long
        // as it would wait for its own payment: the same on every store.
        let deadline = tokio::time::Instant::now() + self.book.timeout();
        loop {
            if let Some(token) = self.stored_token(job).await? {
                return Ok(Some(token));
            }
            if self.ledger.lease(&job.flight(), ttl).await? {
                // The holder before us may have stored its token just before letting go: look
                // once more now that nobody else can be buying.
                if let Some(token) = self.stored_token(job).await? {
                    let _ = self.ledger.release_lease(&job.flight()).await;
                    return Ok(Some(token));
                }
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Decline::PurchaseUnresolved {
                    retry_after_secs: RETRY_UNRESOLVED_SECS,
                });
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// A token for the job's flight that any process stored, cached here.
    async fn stored_token(&self, job: &Job) -> Result<Option<Arc<Token>>, Decline> {
        let stored = self
            .ledger
            .find_token(
                &job.agent.name,
                &job.origin,
                job.service.as_deref(),
                &job.scope,
                self.clock.now_unix(),
            )
            .await?;
        // Never the token this request carried: the server just answered it with a challenge
        // (its retirement in the ledger may not have landed yet).
        Ok(stored
            .filter(|s| Some(s.proof.hash()) != job.sent)
            .and_then(|s| self.install(&s)))
    }
}

/// The limit with the least left in `view`: which, what is left, the limit and the spend.
fn tightest_limit(view: &crate::budget::BudgetView) -> Option<(Period, u64, u64, u64)> {
    use crate::core::window::Window;
    let (r, s, l) = (&view.remaining_msat, &view.spent_msat, &view.limits);
    [
        (
            r.hourly,
            s.hourly,
            l.hourly_sats,
            Period::Window(Window::Hour),
        ),
        (r.daily, s.daily, l.daily_sats, Period::Window(Window::Day)),
        (
            r.weekly,
            s.weekly,
            l.weekly_sats,
            Period::Window(Window::Week),
        ),
        (
            r.monthly,
            s.monthly,
            l.monthly_sats,
            Period::Window(Window::Month),
        ),
        (r.total, s.total, l.total_sats, Period::Total),
    ]
    .into_iter()
    .filter_map(|(left, spent, limit, p)| {
        Some((p, left?, limit?.saturating_mul(1000), spent.unwrap_or(0)))
    })
    .min_by_key(|(_, left, _, _)| *left)
}

/// Sets its flag when dropped: the request that started a purchase is gone.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How often a single-use purchase looks whether its agent is still there.
const REQUESTER_POLL: Duration = Duration::from_millis(250);

/// Awaits `run`, marking `gone` as soon as `requester` says the agent left.
async fn watch_requester(
    run: impl std::future::Future<Output = FlightResult>,
    requester: &dyn super::layer::Requester,
    gone: &AtomicBool,
) -> FlightResult {
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tokio::time::sleep(REQUESTER_POLL) => {
                if requester.gone() {
                    gone.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Runs a purchase in its own task: the agent hanging up must not cancel a payment in progress.
async fn detached(job: Job) -> FlightResult {
    tokio::spawn(job.run())
        .await
        .unwrap_or(Err(Decline::PaymentAborted))
}

/// One purchase, run detached from the request that asked for it.
struct Job {
    purchases: Arc<Purchases>,
    agent: Arc<Agent>,
    origin: String,
    host: String,
    path: String,
    /// Whether the credential is cached (false for single-use dialects and origins).
    reusable: bool,
    scope: String,
    service: Option<String>,
    amount: Msat,
    hash: PaymentHash,
    /// When the invoice expires (bounds an approval's wait).
    invoice_expires_at: Option<i64>,
    offer: Offer,
    key: String,
    /// The purchase within (agent, origin): service or scope, `=path` for single-use.
    purchase: String,
    /// The request it pays for (a single-use credential is kept for it if undelivered).
    request: RequestKey,
    /// Set once the request that asked for this purchase is gone.
    gone: Arc<AtomicBool>,
    /// The token the request carried, which the server answered with this challenge.
    sent: Option<PaymentHash>,
}

impl Job {
    /// The flight this purchase is: (agent, origin, service or scope).
    fn flight(&self) -> Flight<'_> {
        Flight {
            agent: &self.agent.name,
            origin: &self.origin,
            service: self.service.as_deref().unwrap_or(&self.scope),
        }
    }

    /// The guardrails before money is touched: the price-jump guard, the payment rate limits,
    /// then — when the amount is over `approve_above_sats`, or the price jumped where approvals
    /// apply — the operator's approval.
    async fn guard(&self, operator: &Limits) -> Result<(), Decline> {
        let p = &self.purchases;
        let g = &p.guardrails;
        // The agent as it is now (its limits may have changed since the request arrived).
        let agent = &p.current_agent(&self.agent.name)?;
        let flight = self.flight();
        let mut jumped = false;
        if let Some(pct) = guardrails::max_price_increase(&agent.limits, operator) {
            if let PriceCheck::Jumped { last, new_service } = g
                .prices
                .check(&agent.name, &self.origin, flight.service, self.amount, pct)
                .await?
            {
                let increase =
                    (self.amount.0.saturating_sub(last.0)).saturating_mul(100) / last.0.max(1);
                let increase = u32::try_from(increase).unwrap_or(u32::MAX);
                g.alerts.emit(Event::PriceJump {
                    agent: agent.name.to_string(),
                    host: self.host.clone(),
                    service: flight.service.to_string(),
                    last_msat: last.0,
                    new_msat: self.amount.0,
                    increase_pct: increase,
                    limit_pct: pct,
                });
                // Where the operator decides payments, a jump is theirs to decide too.
                if guardrails::approve_above(&agent.limits, operator).is_none() {
                    return Err(Decline::PriceJump {
                        last,
                        now: self.amount,
                        limit_pct: pct,
                        new_service,
                    });
                }
                jumped = true;
            }
        }
        g.rates.payment(&agent.name, &agent.limits, operator)?;
        if let Some(above) = guardrails::approve_above(&agent.limits, operator) {
            if jumped || self.amount > Msat::from_sats(above) {
                // Not worth a person's time when the budget cannot take it anyway (the
                // reservation after approval still decides, atomically).
                if let Ok(view) = p.ledger.budget(&agent.name, &agent.limits).await {
                    let needed = Msat(self.amount.0 + p.book.max_fee().0);
                    if let Some((period, left, limit, spent)) = tightest_limit(&view) {
                        if needed.0 > left {
                            return Err(Decline::OverLimit {
                                whose: Whose::Agent,
                                period,
                                used: Msat(spent),
                                amount: needed,
                                limit: Msat(limit),
                            });
                        }
                    }
                }
                g.approvals
                    .ask(Hold {
                        agent: &agent.name,
                        host: &self.host,
                        service: flight.service,
                        amount: self.amount,
                        payment_hash: self.hash,
                        invoice_expires_at: self.invoice_expires_at,
                        // A single-use credential is for its request alone: nobody else could
                        // use what an approval would buy once that request is gone.
                        requester_gone: (!self.reusable).then(|| self.gone.clone()),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// After a payment settled: the price remembered, the balance re-read, thresholds checked
    /// (in the background: the agent's answer does not wait for it).
    fn settled(&self, operator: Arc<Limits>) {
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
    fn failed(&self, decline: &Decline) {
        if let Decline::Wallet { code, detail } = decline {
            self.purchases.guardrails.alerts.emit(Event::PaymentFailed {
                agent: self.agent.name.to_string(),
                host: self.host.clone(),
                amount_msat: self.amount.0,
                payment_hash: self.hash.to_hex(),
                code: code.to_string(),
                reason: detail.clone(),
            });
        }
    }

    async fn run(self) -> FlightResult {
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
    async fn buy_now(&self) -> Result<Bought, Unbought> {
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
        p.book
            .buy(
                payment,
                LimitSet {
                    agent: &agent.limits,
                    operator: &operator,
                    api_agent: agent.managed_by == ManagedBy::Api,
                },
            )
            .await
    }

    /// Gives the purchase lease back (shared ledgers, reusable credentials).
    async fn release_lease(&self) {
        let p = &self.purchases;
        if self.reusable && p.shared_ledger {
            if let Err(e) = p.ledger.release_lease(&self.flight()).await {
                tracing::debug!(error = %e, "could not release a purchase lease; it expires");
            }
        }
    }

    /// What an earlier payment of this purchase, now settled, bought for this request: its
    /// token (reusable credentials), or the single-use credential kept for this very request.
    async fn served_by_earlier(&self) -> Result<Option<Obtained>, Decline> {
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
        // The late answer is recorded settled a moment before its credential is kept.
        for _ in 0..10 {
            if let Some(kept) = p
                .kept
                .take(&self.agent.name, self.request, p.clock.now_unix())
            {
                return Ok(Some(Obtained {
                    credential: kept.credential,
                    dialect: kept.dialect,
                    flight: kept.flight,
                    token: None,
                    paid: None,
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(None)
    }

    /// The wallet settled this payment after the agent was told it timed out: what it bought is
    /// kept for the agent's retry (the token cached, a single-use credential kept for its
    /// request), and the price and thresholds are recorded as for any payment.
    async fn deliver_late(self, late: tokio::sync::oneshot::Receiver<Paid>) {
        let Ok(paid) = late.await else {
            return;
        };
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
    fn cache_token(&self, credential: Credential) -> Arc<Token> {
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

#[cfg(test)]
mod tests;
