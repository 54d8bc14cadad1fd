//! Paid MCP tool calls: a `tools/call` answered with a payment demand (MPP -32042, x402
//! `isError`) is paid and replayed, and the answer rebuilt for the agent.

use super::{Answer, PaymentLayer, Replay, Upstream};
use crate::agents::Agent;
use crate::body::{self, Body};
use crate::core::Decline;
use crate::metrics::Outcome;
use crate::pay::headers;
use crate::pay::kept::RequestKey;
use crate::pay::mcp::{self, Framing, ToolCall};
use crate::pay::purchase::{Destination, Obtained};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use hyper::body::Incoming;
use std::sync::Arc;

impl PaymentLayer {
    /// The answer to a tool call, read as far as its JSON-RPC message: a payment requirement
    /// in it is paid like a 402's offer and the call replayed once, same `id`, the credential
    /// in `_meta`. `Err` carries the answer unread-on when it asks for no payment.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mcp_exchange<U: Upstream>(
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
    pub(super) async fn mcp_replay<U: Upstream>(
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
