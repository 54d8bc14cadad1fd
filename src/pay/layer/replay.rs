//! The replay: the request kept to send again once a credential is obtained, and the one
//! replay that carries it (with what the upstream then says of the payment).

use super::{Answer, PaymentLayer, Requester, Upstream};
use crate::agents::Agent;
use crate::body::{self, Body};
use crate::core::Decline;
use crate::metrics::Outcome;
use crate::pay::dialect::{RequestHead, ResponseHead};
use crate::pay::headers;
use crate::pay::kept::RequestKey;
use crate::pay::purchase::{Destination, Obtained};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use std::sync::Arc;

/// What is needed to send the request again after paying.
pub(super) struct Replay {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Bytes>,
    pub(super) upgrade: bool,
    pub(super) requester: Option<Arc<dyn Requester>>,
}

impl Replay {
    /// The request as dialects read it (offers bound to their request).
    pub(super) fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: self.body.as_deref(),
        }
    }

    /// The request again, without any credential.
    pub(super) fn plain_request(&self) -> Option<Request<Body>> {
        let body = self.body.clone()?;
        let mut req = Request::new(body::from_bytes(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }

    /// The request again, carrying `credential` (replacing any the agent sent).
    pub(super) fn request(
        &self,
        credential: &crate::pay::dialect::Credential,
    ) -> Option<Request<Body>> {
        let mut req = self.plain_request()?;
        req.headers_mut()
            .insert(credential.header.clone(), credential.value.clone());
        Some(req)
    }
}

impl PaymentLayer {
    /// Sends the request again with the credential. A second challenge goes back to the agent:
    /// one request never causes two payments. A paid replay that got no response at all
    /// (reset, refused) is sent once more; a single-use credential whose second send fails too
    /// is kept for the agent's retry of the same request ([`super::kept`]), never thrown away
    /// (a reusable one is in the token cache already).
    pub(super) async fn replay_once<U: Upstream>(
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
}

/// Records what an x402 server says of the payment it was given (`PAYMENT-RESPONSE`): the log
/// line names the agent, origin, payment hash and the server's verdict; a report that does not
/// confirm this payment is a warning (the agent still gets the server's answer).
fn settled(agent: &Agent, origin: &str, headers: &HeaderMap, hash: &crate::core::PaymentHash) {
    match crate::pay::dialect::x402::settlement(headers) {
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
