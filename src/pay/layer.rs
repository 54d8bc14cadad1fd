//! What happens on a 402, in one place. The proxy hands every upstream request of an agent to
//! [`PaymentLayer::exchange`], which attaches a cached token if there is one, sends the request,
//! and when the answer carries a payable offer, obtains a credential (pays, or rides on a
//! concurrent purchase) and replays the request exactly once. A request never causes two
//! payments; a refusal returns the upstream's own 402 with the reason.

use super::dialect::{Dialects, ResponseHead};
use super::headers;
use super::purchase::{Destination, Obtained, Purchases, Refused};
use super::tokens::{Attached, TokenCache};
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
}

/// What is needed to send the request again after paying.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    upgrade: bool,
}

impl Replay {
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
        });
        if offers.is_empty() {
            let refused_token = matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
            if let (true, Some(a), true) = (refused_token, &attached, replay.body.is_some()) {
                // A cached token refused without a challenge (a single-use token spent):
                // the slow path drops it and asks once more without it.
                let token = a.token.clone();
                drop(response);
                return Box::pin(self.without_spent_token(upstream, agent, to, replay, token))
                    .await;
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

    /// A cached token answered with 401/403 and no challenge: the server treats its tokens as
    /// single-use. The token is dropped, the origin remembered as single-use, and the request
    /// sent once more without it; a 402 that comes back is paid under the normal rules.
    async fn without_spent_token<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        mut replay: Replay,
        token: Arc<super::tokens::Token>,
    ) -> Answer {
        tracing::info!(agent = %agent.name, origin = to.origin, "a cached token was refused without a challenge: the origin's tokens are single-use");
        if self
            .tokens
            .evict(&agent.name, to.origin, &token.payment_hash)
        {
            self.retire(token.payment_hash);
        }
        self.purchases.mark_single_use(to.origin);
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
            let other_service = match (a.token.services.as_deref(), offered) {
                (Some(ours), Some(theirs)) => ours != theirs,
                _ => false,
            };
            if other_service {
                // Not stale: this path belongs to another service. The token stays for its
                // own paths and is never sent here again.
                if let Some(entry) = a.token.refuse(&path) {
                    self.persist_scope(a.token.payment_hash, entry);
                }
            } else if a.known
                && self
                    .tokens
                    .evict(&agent.name, to.origin, &a.token.payment_hash)
            {
                // The server refused a token known to work here: stale (expired, revoked). A
                // token only tried speculatively stays for the paths where it works.
                self.retire(a.token.payment_hash);
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
        match self
            .purchases
            .obtain(agent, to, &path, sent.as_ref(), &body, offer)
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
                self.replay_once(upstream, agent, to, &replay, obtained)
                    .await
            }
        }
    }

    /// Sends the request again with the credential. A second challenge goes back to the agent:
    /// one request never causes two payments.
    async fn replay_once<U: Upstream>(
        &self,
        upstream: &U,
        agent: &Arc<Agent>,
        to: Destination<'_>,
        replay: &Replay,
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
        let response = match upstream.send(request, replay.upgrade).await {
            Ok(r) => r,
            Err(local) => {
                return Answer {
                    response: Err(local),
                    headers: extra,
                }
            }
        };
        let rejected = !self
            .dialects
            .offers(&ResponseHead {
                status: response.status(),
                headers: response.headers(),
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
            // What the agent has left under its tightest limit, when it has one.
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
            response: Ok(response),
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
            response: Ok(response),
            headers: extra,
        }
    }
}

fn answer(response: Result<Response<Incoming>, Response<Body>>) -> Answer {
    Answer {
        response,
        headers: HeaderMap::new(),
    }
}
