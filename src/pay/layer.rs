//! What happens on a 402, in one place. The proxy hands every upstream request of an agent to
//! [`PaymentLayer::exchange`], which attaches a cached token if there is one, sends the request,
//! and when the answer carries a payable offer, obtains a credential (pays, or rides on a
//! concurrent purchase) and replays the request exactly once. A request never causes two
//! payments; a refusal returns the upstream's own 402 with the reason.

mod decline;
mod learn;
mod replay;
mod tool_call;

use super::dialect::{Dialects, ResponseHead};
use super::headers;
use super::kept::RequestKey;
use super::mcp::{Framing, ToolCall};
use super::purchase::{Destination, Purchases};
use super::tokens::{Attached, TokenCache, Verdict};
use crate::agents::Agent;
use crate::body::{self, Body, RequestBody};
use crate::core::{Clock, Decline};
use crate::ledger::Ledger;
use crate::metrics::{Metrics, Outcome};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use replay::Replay;
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
}

fn answer(response: Result<Response<Incoming>, Response<Body>>) -> Answer {
    Answer {
        response,
        headers: HeaderMap::new(),
    }
}
