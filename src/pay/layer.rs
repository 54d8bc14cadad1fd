//! What happens on a 402, in one place. The proxy hands every upstream request of an agent to
//! [`PaymentLayer::exchange`], which attaches a cached token if there is one, sends the request,
//! and when the answer carries a payable offer, obtains a credential (pays, or rides on a
//! concurrent purchase) and replays the request exactly once. A request never causes two
//! payments; a refusal returns the upstream's own 402 with the reason.

use super::dialect::{Dialects, RequestHead, ResponseHead};
use super::headers;
use super::kept::RequestKey;
use super::mcp::{self, Framing, ToolCall};
use super::purchase::{Destination, Obtained, Purchases, Refused};
use super::tokens::{Attached, TokenCache, Verdict};
use crate::agents::Agent;
use crate::body::{self, Body, RequestBody};
use crate::core::{Clock, Decline};
use crate::ledger::{DeclineRecord, Ledger};
use crate::metrics::{Metrics, Outcome};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;

/// Sends a request upstream. The proxy implements it with its pooled, guarded clients; an
/// error is the proxy's own answer to the agent (502, 403 from the guard, …).
pub trait Upstream: Sync {
    /// Sends `request`; `h1_only` for protocol switches, which exist only in HTTP/1.1.
    fn send(
        &self,
        request: Request<Body>,
        h1_only: bool,
    ) -> impl Future<Output = Result<Response<Incoming>, Response<Body>>> + Send;
}

/// The agent that sent a request, as far as the proxy's connection can tell.
pub trait Requester: Send + Sync {
    /// True once the agent has closed (or reset) its connection.
    fn gone(&self) -> bool;
}

/// A request's [`Requester`], carried in the request's extensions from the listener.
#[derive(Clone)]
pub struct RequesterHandle(pub Arc<dyn Requester>);

/// One request of an agent, ready to go upstream (hop-by-hop headers already removed).
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// The absolute upstream URI.
    pub uri: Uri,
    /// The headers to send.
    pub headers: HeaderMap,
    /// The body, buffered when small enough to replay.
    pub body: RequestBody,
    /// The agent asked to switch protocols: send over HTTP/1.1.
    pub upgrade: bool,
    /// Tells whether the agent is still there, where the connection cannot (half-closed
    /// plain connections); `None` where hyper drops the request when the agent leaves.
    pub requester: Option<Arc<dyn Requester>>,
}

/// What the agent gets: the upstream's response (or the proxy's own), and the headers the
/// payment layer adds to it.
pub struct Answer {
    /// The response to deliver.
    pub response: Result<Response<Incoming>, Response<Body>>,
    /// Added to the response once delivered (after the upstream's own `x-l402-proxy-*` headers
    /// are removed).
    pub headers: HeaderMap,
}

/// The payment layer: see the module docs.
pub struct PaymentLayer {
    purchases: Arc<Purchases>,
    tokens: Arc<TokenCache>,
    dialects: Arc<Dialects>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    max_body: usize,
    accept_payment: Option<HeaderValue>,
}

/// How the layer is assembled.
pub struct LayerParts {
    /// The purchasing side.
    pub purchases: Arc<Purchases>,
    /// The token cache (shared with `purchases`).
    pub tokens: Arc<TokenCache>,
    /// The dialects paid.
    pub dialects: Arc<Dialects>,
    /// The ledger (declines, budget views).
    pub ledger: Arc<dyn Ledger>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `http.max_replay_body_bytes`, for the reason given when a body cannot be replayed.
    pub max_body: usize,
    /// The `Accept-Payment` value announced on requests (`pay.accept_payment`), if any.
    pub accept_payment: Option<HeaderValue>,
}

/// The `Accept-Payment` request header (MPP, draft-httpauth-payment): the method/intent pairs
/// a client can pay.
pub const ACCEPT_PAYMENT: http::HeaderName = http::HeaderName::from_static("accept-payment");
/// What the proxy pays of MPP: Lightning charges.
pub const ACCEPT_PAYMENT_VALUE: &str = "lightning/charge";

/// What is needed to send the request again after paying.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    upgrade: bool,
    requester: Option<Arc<dyn Requester>>,
}

impl Replay {
    /// The request as dialects read it (offers bound to their request).
    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: self.body.as_deref(),
        }
    }

    /// The request again, without any credential.
    fn plain_request(&self) -> Option<Request<Body>> {
        let body = self.body.clone()?;
        let mut req = Request::new(body::from_bytes(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }

    /// The request again, carrying `credential` (replacing any the agent sent).
    fn request(&self, credential: &super::dialect::Credential) -> Option<Request<Body>> {
        let mut req = self.plain_request()?;
        req.headers_mut()
            .insert(credential.header.clone(), credential.value.clone());
        Some(req)
    }
}

impl PaymentLayer {
    /// Assembles the layer.
    pub fn new(parts: LayerParts) -> PaymentLayer {
        PaymentLayer {
            purchases: parts.purchases,
            tokens: parts.tokens,
            dialects: parts.dialects,
            ledger: parts.ledger,
            clock: parts.clock,
            metrics: parts.metrics,
            max_body: parts.max_body,
            accept_payment: parts.accept_payment,
        }
    }

    /// The purchasing side.
    pub fn purchases(&self) -> &Arc<Purchases> {
        &self.purchases
    }

    /// The token cache.
    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    /// The dialects paid (to read a server's offers without paying them: MCP `quote`).
    pub fn dialects(&self) -> &Arc<Dialects> {
        &self.dialects
    }

    /// Sends one request of `agent` to `to` through `upstream`, paying if asked to.
    pub async fn exchange<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        mut out: Outgoing,
    ) -> Answer {
        // A paused agent spends nothing: not even tokens bought before.
        let attached = if agent.paused {
            None
        } else {
            self.tokens.find(
                &agent.name,
                to.origin,
                out.uri.path(),
                self.clock.now_unix(),
            )
        };
        match &attached {
            Some(a) => {
                self.metrics.token_hits.inc();
                out.headers.insert(
                    a.token.credential.header.clone(),
                    a.token.credential.value.clone(),
                );
            }
            None => self.metrics.token_misses.inc(),
        }
        if let Some(accept) = &self.accept_payment {
            // The agent's own preference, if it states one, stands.
            if !out.headers.contains_key(ACCEPT_PAYMENT) && !agent.paused {
                out.headers.insert(ACCEPT_PAYMENT, accept.clone());
            }
        }
        let replayable = out.body.replayable().cloned();
        let replay = Replay {
            method: out.method.clone(),
            uri: out.uri.clone(),
            headers: if replayable.is_some() {
                out.headers.clone()
            } else {
                HeaderMap::new()
            },
            body: replayable,
            upgrade: out.upgrade,
            requester: out.requester.take(),
        };
        let mut request = Request::new(match out.body {
            RequestBody::Buffered(bytes) => body::from_bytes(bytes),
            RequestBody::Streaming(rest) => http_body_util::BodyExt::boxed(rest),
        });
        *request.method_mut() = out.method;
        *request.uri_mut() = out.uri;
        *request.headers_mut() = out.headers;
        let response = match upstream.send(request, out.upgrade).await {
            Ok(r) => r,
            Err(local) => return answer(Err(local)),
        };
        let offers = self.dialects.offers(&ResponseHead {
            status: response.status(),
            headers: response.headers(),
            request: Some(replay.head()),
        });
        if offers.is_empty() {
            // A tool call's answer may carry a payment requirement in its JSON-RPC message.
            let mcp = match (
                &replay.body,
                Framing::of(response.headers().get(http::header::CONTENT_TYPE)),
            ) {
                (Some(_), Some(framing)) if response.status().is_success() => {
                    ToolCall::of(&replay.head()).map(|call| (call, framing))
                }
                _ => None,
            };
            if let Some((call, framing)) = mcp {
                let ok = response.status().is_success();
                match Box::pin(
                    self.mcp_exchange(upstream, agent, to, &replay, response, call, framing),
                )
                .await
                {
                    Ok(answer) => return answer,
                    Err(unpaid) => {
                        if let Some(a) = attached.as_ref().filter(|a| !a.known && ok) {
                            self.learn(&a.token, replay.uri.path());
                        }
                        self.metrics.request(Outcome::Passed);
                        let mut extra = HeaderMap::new();
                        if attached.is_some() && ok {
                            extra.insert(headers::TOKEN_HEADER, HeaderValue::from_static("cached"));
                        }
                        return Answer {
                            response: Err(unpaid),
                            headers: extra,
                        };
                    }
                }
            }
            let refused_token = matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
            if let (true, Some(a), true) = (refused_token, &attached, replay.body.is_some()) {
                // A cached token refused without a challenge (a single-use token spent, or one
                // tried where it does not belong): the slow path asks once more without it.
                let a = a.clone();
                drop(response);
                return Box::pin(self.without_refused_token(upstream, agent, to, replay, a)).await;
            }
            if let Some(a) = &attached {
                // A server that cannot take the token (its headers too large, or a request it
                // calls malformed once a token it never confirmed is added): the token is
                // dropped, so it cannot break every later request to this origin.
                let rejects = response.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                    || (response.status() == StatusCode::BAD_REQUEST && !a.known);
                if rejects
                    && self
                        .tokens
                        .evict(&agent.name, to.origin, &a.token.payment_hash)
                {
                    tracing::info!(agent = %agent.name, origin = to.origin, status = response.status().as_u16(), "the server could not take a cached token: dropped");
                    self.retire(a.token.payment_hash);
                }
            }
            self.learn_if_worked(&attached, &response, replay.uri.path());
            self.metrics.request(Outcome::Passed);
            let mut extra = HeaderMap::new();
            if attached.is_some() && response.status().is_success() {
                extra.insert(headers::TOKEN_HEADER, HeaderValue::from_static("cached"));
            }
            return Answer {
                response: Ok(response),
                headers: extra,
            };
        }
        // The slow path (a challenge): boxed, so the future every connection holds stays small.
        Box::pin(self.on_offers(upstream, agent, to, replay, attached, response, offers)).await
    }

    /// A cached token answered with 401/403 and no challenge. Where the token is known to work,
    /// the server treats its tokens as single-use: the token is dropped and its service (the
    /// whole origin for a token that names none) remembered as single-use. A token only tried
    /// here is kept for its own paths and not sent here again. Either way the request goes
    /// once more without it; a 402 that comes back is paid under the normal rules.
    async fn without_refused_token<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        mut replay: Replay,
        attached: Attached,
    ) -> Answer {
        let token = attached.token;
        if attached.known {
            tracing::info!(agent = %agent.name, origin = to.origin, service = token.services.as_deref().unwrap_or("(any)"), "a cached token was refused without a challenge: this service's tokens are single-use");
            if self
                .tokens
                .evict(&agent.name, to.origin, &token.payment_hash)
            {
                self.retire(token.payment_hash);
            }
            self.purchases
                .mark_single_use(to.origin, token.services.as_deref());
        } else if let Some(entry) = token.refuse(replay.uri.path()) {
            self.persist_scope(token.payment_hash, entry);
        }
        replay.headers.remove(&token.credential.header);
        let Some(request) = replay.plain_request() else {
            return answer(Err(crate::proxy::responses::text(
                http::StatusCode::BAD_GATEWAY,
                "replay-failed",
                "request body unavailable for replay",
            )));
        };
        let response = match upstream.send(request, replay.upgrade).await {
            Ok(r) => r,
            Err(local) => return answer(Err(local)),
        };
        let offers = self.dialects.offers(&ResponseHead {
            status: response.status(),
            headers: response.headers(),
            request: Some(replay.head()),
        });
        if offers.is_empty() {
            self.metrics.request(Outcome::Passed);
            return answer(Ok(response));
        }
        self.on_offers(upstream, agent, to, replay, None, response, offers)
            .await
    }

    /// A response carrying offers: pay one (or say why not) and replay once.
    #[allow(clippy::too_many_arguments)]
    async fn on_offers<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        replay: Replay,
        attached: Option<Attached>,
        response: Response<Incoming>,
        offers: super::dialect::Offers,
    ) -> Answer {
        self.metrics.challenges.inc();
        let path = replay.uri.path().to_string();
        let first = offers.payable.first();
        if let Some(a) = &attached {
            let offered = first.and_then(|o| o.terms.service());
            match a.token.judge(offered, &path, a.known) {
                // Not stale: this path belongs to another service. The token stays for its own
                // paths and is never sent here again.
                Verdict::NotHere => {
                    if let Some(entry) = a.token.refuse(&path) {
                        self.persist_scope(a.token.payment_hash, entry);
                    }
                }
                // Its own service refused a token known to work here: stale (expired, revoked).
                Verdict::Stale => {
                    if self
                        .tokens
                        .evict(&agent.name, to.origin, &a.token.payment_hash)
                    {
                        self.retire(a.token.payment_hash);
                    }
                }
            }
        }
        if let Some(reason) = offers.too_large {
            // Too large to read or answer: the seller's 402 goes back (status, body, other
            // headers) unpaid, without the oversized challenge, which the agent's own client
            // might not read either and which is the proxy's to answer anyway.
            let mut response = response;
            let headers = response.headers_mut();
            headers.remove(http::header::WWW_AUTHENTICATE);
            headers.remove(&super::dialect::x402::PAYMENT_REQUIRED);
            let decline = Decline::ChallengeTooLarge { reason };
            return self.declined(response, agent, to, &path, decline.into());
        }
        if replay.body.is_none() {
            let decline = Decline::BodyNotReplayable {
                limit: self.max_body,
            };
            return self.declined(response, agent, to, &path, decline.into());
        }
        let Some(offer) = offers.payable.into_iter().next() else {
            // Offers the proxy recognises but does not pay: the 402 goes back as it came.
            let (dialect, reason) = offers
                .unsupported
                .into_iter()
                .next()
                .unwrap_or(("unknown", String::new()));
            let decline = Decline::SchemeUnsupported { dialect, reason };
            let mut answer = self.declined(response, agent, to, &path, decline.into());
            answer
                .headers
                .insert(headers::SCHEME_HEADER, HeaderValue::from_static(dialect));
            return answer;
        };
        let sent = attached.as_ref().map(|a| a.token.payment_hash);
        let body = replay.body.clone().unwrap_or_default();
        let dialect = offer.dialect;
        let request = RequestKey::of(&replay.method, &replay.uri, &body);
        match self
            .purchases
            .obtain(
                agent,
                to,
                &path,
                sent.as_ref(),
                &body,
                request,
                replay.requester.as_deref(),
                offer,
            )
            .await
        {
            Err(refused) => {
                let mut answer = self.declined(response, agent, to, &path, refused);
                answer
                    .headers
                    .insert(headers::SCHEME_HEADER, HeaderValue::from_static(dialect));
                answer
            }
            Ok(obtained) => {
                drop(response);
                self.replay_once(upstream, agent, to, &replay, request, obtained)
                    .await
            }
        }
    }

    /// Sends the request again with the credential. A second challenge goes back to the agent:
    /// one request never causes two payments. A paid replay that got no response at all
    /// (reset, refused) is sent once more; a single-use credential whose second send fails too
    /// is kept for the agent's retry of the same request ([`super::kept`]), never thrown away
    /// (a reusable one is in the token cache already).
    async fn replay_once<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        replay: &Replay,
        request_key: RequestKey,
        obtained: Obtained,
    ) -> Answer {
        let mut extra = HeaderMap::new();
        headers::obtained(&mut extra, &obtained);
        let Some(request) = replay.request(&obtained.credential) else {
            return Answer {
                response: Err(crate::proxy::responses::text(
                    http::StatusCode::BAD_GATEWAY,
                    "replay-failed",
                    "request body unavailable for replay",
                )),
                headers: extra,
            };
        };
        let single_use = obtained.token.is_none();
        let mut sent = upstream.send(request, replay.upgrade).await;
        if sent.is_err() {
            tracing::info!(agent = %agent.name, origin = to.origin, "the paid replay got no response: sending it once more");
            if let Some(again) = replay.request(&obtained.credential) {
                sent = upstream.send(again, replay.upgrade).await;
            }
        }
        let response = match sent {
            Ok(r) => r,
            Err(local) => {
                if single_use {
                    self.purchases.kept().keep(
                        &agent.name,
                        request_key,
                        obtained.credential.clone(),
                        obtained.dialect,
                        obtained.flight.clone(),
                        self.clock.now_unix(),
                    );
                    extra.insert(headers::KEPT_HEADER, HeaderValue::from_static("retry"));
                }
                return Answer {
                    response: Err(local),
                    headers: extra,
                };
            }
        };
        let rejected = !self
            .dialects
            .offers(&ResponseHead {
                status: response.status(),
                headers: response.headers(),
                request: Some(replay.head()),
            })
            .is_empty();
        if rejected {
            // Money that bought nothing: the credential is not kept, and this service is not
            // paid again for a while, so a server that refuses paid credentials cannot drain
            // the budget one request at a time.
            if let Some(token) = &obtained.token {
                if self
                    .tokens
                    .evict(&agent.name, to.origin, &token.payment_hash)
                {
                    self.retire(token.payment_hash);
                }
            }
            self.purchases
                .cool_off(&agent.name, to.origin, &obtained.flight);
            let mut answer = self.declined(
                response,
                agent,
                to,
                replay.uri.path(),
                Decline::ReplayRejected.into(),
            );
            answer.headers.extend(extra);
            return answer;
        }
        if let (Some(paid), "x402") = (&obtained.paid, obtained.dialect) {
            settled(agent, to.origin, response.headers(), &paid.payment_hash);
        }
        self.metrics.request(if obtained.paid.is_some() {
            Outcome::Paid
        } else {
            Outcome::Shared
        });
        if response.status().is_success() {
            if let Some(token) = &obtained.token {
                self.learn(token, replay.uri.path());
            }
        }
        if obtained.paid.is_some() {
            // What the agent has left under its tightest limit (as the limits are now).
            let limits = self
                .purchases
                .current_agent(&agent.name)
                .map(|a| a.limits.clone())
                .unwrap_or_else(|_| agent.limits.clone());
            if let Ok(view) = self.ledger.budget(&agent.name, &limits).await {
                let view = view.with_fee_reserve(self.purchases.book().max_fee());
                if let Some(left) = view.remaining_msat.tightest() {
                    extra.insert(headers::REMAINING_HEADER, HeaderValue::from(left));
                }
                if let Some(spendable) = view.spendable_msat {
                    extra.insert(headers::SPENDABLE_HEADER, HeaderValue::from(spendable));
                }
            }
        }
        Answer {
            response: Ok(response),
            headers: extra,
        }
    }

    /// The answer to a tool call, read as far as its JSON-RPC message: a payment requirement
    /// in it is paid like a 402's offer and the call replayed once, same `id`, the credential
    /// in `_meta`. `Err` carries the answer unread-on when it asks for no payment.
    #[allow(clippy::too_many_arguments)]
    async fn mcp_exchange<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        replay: &Replay,
        response: Response<Incoming>,
        call: ToolCall,
        framing: Framing,
    ) -> Result<Answer, Response<Body>> {
        let (parts, body) = response.into_parts();
        let read = mcp::read(body, framing, &call.id).await;
        let found = read
            .message
            .as_ref()
            .and_then(|m| mcp::requirement(m, &replay.head(), &call));
        let theirs = rebuild(parts, read);
        let Some((transport, offers)) = found else {
            return Err(theirs);
        };
        self.metrics.challenges.inc();
        let path = replay.uri.path().to_string();
        // Declines name the tool: `/mcp#weather`.
        let declined_at = format!("{path}#{}", call.tool);
        let dialect = transport.dialect();
        let scheme = |mut answer: Answer| {
            answer
                .headers
                .insert(headers::SCHEME_HEADER, HeaderValue::from_static(dialect));
            answer
        };
        let offer = match offers.payable.into_iter().next() {
            Some(offer) if self.dialects.pays(dialect) => offer,
            other => {
                let reason = if other.is_some() {
                    format!("{dialect} is not in pay.schemes")
                } else {
                    offers
                        .unsupported
                        .into_iter()
                        .next()
                        .map(|(_, r)| r)
                        .unwrap_or_default()
                };
                let decline = Decline::SchemeUnsupported { dialect, reason };
                return Ok(scheme(self.declined_answer(
                    Err(theirs),
                    agent,
                    to,
                    &declined_at,
                    decline.into(),
                )));
            }
        };
        let body = replay.body.clone().unwrap_or_default();
        let request = RequestKey::of(&replay.method, &replay.uri, &body);
        match self
            .purchases
            .obtain(
                agent,
                to,
                &path,
                None,
                &body,
                request,
                replay.requester.as_deref(),
                offer,
            )
            .await
        {
            Err(refused) => Ok(scheme(self.declined_answer(
                Err(theirs),
                agent,
                to,
                &declined_at,
                refused,
            ))),
            Ok(obtained) => {
                drop(theirs);
                Ok(scheme(
                    self.mcp_replay(upstream, agent, to, replay, &call, obtained)
                        .await,
                ))
            }
        }
    }

    /// Sends the tool call again, its `_meta` carrying the credential. A second requirement
    /// goes back to the agent: one call never causes two payments.
    async fn mcp_replay<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        replay: &Replay,
        call: &ToolCall,
        obtained: Obtained,
    ) -> Answer {
        let mut extra = HeaderMap::new();
        headers::obtained(&mut extra, &obtained);
        let rewritten = replay
            .body
            .as_deref()
            .and_then(|b| mcp::rewrite(b, &obtained.credential));
        let (Some(body), Some(mut request)) = (rewritten, replay.plain_request()) else {
            return Answer {
                response: Err(crate::proxy::responses::text(
                    http::StatusCode::BAD_GATEWAY,
                    "replay-failed",
                    "the tool call could not carry the credential",
                )),
                headers: extra,
            };
        };
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *request.body_mut() = body::from_bytes(body);
        let response = match upstream.send(request, false).await {
            Ok(r) => r,
            Err(local) => {
                return Answer {
                    response: Err(local),
                    headers: extra,
                }
            }
        };
        let framing = Framing::of(response.headers().get(http::header::CONTENT_TYPE));
        let (parts, incoming) = response.into_parts();
        let (theirs, rejected) = match framing {
            Some(framing) if parts.status.is_success() => {
                let read = mcp::read(incoming, framing, &call.id).await;
                let rejected = read.message.as_ref().is_some_and(|m| {
                    mcp::refuses_payment(m) || mcp::requirement(m, &replay.head(), call).is_some()
                });
                if let (Some(m), Some(paid), false) = (&read.message, &obtained.paid, rejected) {
                    mcp::log_receipt(&agent.name, to.origin, &call.tool, m, &paid.payment_hash);
                }
                (rebuild(parts, read), rejected)
            }
            _ => (
                rebuild(
                    parts,
                    mcp::Read {
                        prefix: Bytes::new(),
                        rest: Some(incoming),
                        message: None,
                    },
                ),
                false,
            ),
        };
        if rejected {
            self.purchases
                .cool_off(&agent.name, to.origin, &obtained.flight);
            let mut answer = self.declined_answer(
                Err(theirs),
                agent,
                to,
                &format!("{}#{}", replay.uri.path(), call.tool),
                Decline::ReplayRejected.into(),
            );
            answer.headers.extend(extra);
            return answer;
        }
        self.metrics.request(if obtained.paid.is_some() {
            Outcome::Paid
        } else {
            Outcome::Shared
        });
        if obtained.paid.is_some() {
            if let Ok(view) = self.ledger.budget(&agent.name, &agent.limits).await {
                let view = view.with_fee_reserve(self.purchases.book().max_fee());
                if let Some(left) = view.remaining_msat.tightest() {
                    extra.insert(headers::REMAINING_HEADER, HeaderValue::from(left));
                }
                if let Some(spendable) = view.spendable_msat {
                    extra.insert(headers::SPENDABLE_HEADER, HeaderValue::from(spendable));
                }
            }
        }
        Answer {
            response: Err(theirs),
            headers: extra,
        }
    }

    /// A speculative token that got through has proven itself on this path.
    fn learn_if_worked(
        &self,
        attached: &Option<Attached>,
        response: &Response<Incoming>,
        path: &str,
    ) {
        if let Some(a) = attached {
            if !a.known && response.status().is_success() {
                self.learn(&a.token, path);
            }
        }
    }

    /// Learns where a token works, and tells the ledger what is new (off the request path).
    fn learn(&self, token: &super::tokens::Token, path: &str) {
        for entry in token.learn(path) {
            self.persist_scope(token.payment_hash, entry);
        }
    }

    /// Records a learned scope entry in the ledger, off the request path.
    fn persist_scope(&self, hash: crate::core::PaymentHash, entry: String) {
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.learn_scope(hash, &entry).await {
                tracing::debug!(error = %e, "could not record a learned scope");
            }
        });
    }

    /// Tells the ledger a token is no longer accepted (off the request path).
    fn retire(&self, hash: crate::core::PaymentHash) {
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.retire_token(hash).await {
                tracing::debug!(error = %e, "could not retire a refused token");
            }
        });
    }

    /// The upstream's own 402, streamed back, with our reason for not paying; counted, logged
    /// and recorded for the operator.
    fn declined(
        &self,
        response: Response<Incoming>,
        agent: &Agent,
        to: Destination<'_>,
        path: &str,
        refused: Refused,
    ) -> Answer {
        self.declined_answer(Ok(response), agent, to, path, refused)
    }

    /// [`PaymentLayer::declined`], for an upstream answer already read (`Err`: rebuilt).
    fn declined_answer(
        &self,
        response: Result<Response<Incoming>, Response<Body>>,
        agent: &Agent,
        to: Destination<'_>,
        path: &str,
        refused: Refused,
    ) -> Answer {
        let decline = &refused.decline;
        self.metrics.request(Outcome::Declined);
        self.metrics.decline(decline.code());
        tracing::info!(agent = %agent.name, host = %to.host, path, code = decline.code(), detail = %crate::core::text::shown(&decline.to_string(), crate::core::text::TEXT_MAX), "declined to pay");
        let record = DeclineRecord {
            agent: agent.name.to_string(),
            host: to.host_port(),
            path: path.to_string(),
            code: decline.code().to_string(),
            detail: decline.to_string(),
            amount: refused.amount,
            created_at: self.clock.now(),
            count: 1,
        };
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.record_decline(record).await {
                tracing::warn!(error = %e, "could not record a decline");
            }
        });
        let mut extra = HeaderMap::new();
        headers::declined(&mut extra, decline);
        if let Decline::PurchaseUnresolved { retry_after_secs } = decline {
            // The seller's 402 as it came, with when to come back for what was bought.
            extra.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            );
        }
        if let Some(secs) = decline.retry_after() {
            // Over a rate limit: a 429 the agent's client knows to wait on, not the 402.
            drop(response);
            let mut own = crate::proxy::responses::text(
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                &decline.to_string(),
            );
            own.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
            return Answer {
                response: Err(own),
                headers: extra,
            };
        }
        Answer {
            response,
            headers: extra,
        }
    }
}

/// An upstream answer partly read by the MCP path, as the agent gets it: hop-by-hop and forged
/// `x-l402-proxy-*` headers removed, the bytes read, then the rest streamed.
fn rebuild(mut parts: http::response::Parts, read: mcp::Read) -> Response<Body> {
    crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_forged(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    let body = match read.rest {
        Some(rest) => http_body_util::BodyExt::boxed(body::Prefixed::new(read.prefix, rest)),
        None => body::from_bytes(read.prefix),
    };
    Response::from_parts(parts, body)
}

/// Records what an x402 server says of the payment it was given (`PAYMENT-RESPONSE`): the log
/// line names the agent, origin, payment hash and the server's verdict; a report that does not
/// confirm this payment is a warning (the agent still gets the server's answer).
fn settled(agent: &Agent, origin: &str, headers: &HeaderMap, hash: &crate::core::PaymentHash) {
    match super::dialect::x402::settlement(headers) {
        Some(s) if s.confirms(hash) => {
            tracing::info!(agent = %agent.name, origin, payment_hash = %hash.to_hex(), network = %s.network, "x402 settlement confirmed by the server");
        }
        Some(s) => {
            tracing::warn!(agent = %agent.name, origin, payment_hash = %hash.to_hex(), success = s.success, transaction = %s.transaction, reason = s.error_reason.as_deref().unwrap_or(""), "x402 PAYMENT-RESPONSE does not confirm this payment");
        }
        None => {
            tracing::info!(agent = %agent.name, origin, payment_hash = %hash.to_hex(), "x402 server sent no readable PAYMENT-RESPONSE");
        }
    }
}

fn answer(response: Result<Response<Incoming>, Response<Body>>) -> Answer {
    Answer {
        response,
        headers: HeaderMap::new(),
    }
}
