//! One request of an agent on its way upstream, mechanics only: hop-by-hop headers removed, the
//! body read (buffered when small enough to replay), the protocol switch the agent asked for
//! restated upstream, then the payment layer does the exchange, and the answer is handed back —
//! streamed, or spliced byte for byte after a `101`.

use super::headers::strip_hop_by_hop;
use super::responses;
use super::target::Target;
use super::Shared;
use crate::agents::Agent;
use crate::body::{self, Body, RequestBody};
use crate::metrics::Outcome;
use crate::pay::headers::strip_forged;
use crate::pay::Outgoing;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Forwards one request of `agent` to `target`, through the payment layer. `requester` tells
/// whether the agent is still there where hyper cannot (the plain listener allows half-closed
/// connections); `None` where hyper drops the request when the agent leaves.
pub async fn forward(
    shared: &Shared,
    agent: &Arc<Agent>,
    req: Request<Incoming>,
    target: &Target,
    requester: Option<Arc<dyn crate::pay::Requester>>,
) -> Response<Body> {
    if let Err(d) = shared.guardrails.rates.request(&agent.name, &agent.limits) {
        return responses::rate_limited(shared, &agent.name, &d);
    }
    if target.host() == super::self_view::SELF_HOST {
        shared.metrics.request(Outcome::SelfView);
        if req.uri().path() == crate::mcp::PATH {
            return crate::mcp::transport::serve(shared, agent, req).await;
        }
        return super::self_view::respond(shared, agent, req.uri().path()).await;
    }
    let (mut parts, incoming) = req.into_parts();
    let protocol = upgrade_protocol(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    set_host(&mut parts.headers, target);
    // A protocol switch is hop-by-hop by nature, yet the agent wants it end to end: re-state it
    // upstream and keep the agent's half to splice on 101.
    let agent_upgrade = match &protocol {
        Some(p) => {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, p.clone());
            parts.extensions.remove::<OnUpgrade>()
        }
        None => None,
    };
    let uri = match target.upstream_uri(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(_) => {
            shared.metrics.request(Outcome::BadRequest);
            return responses::text(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "invalid request target",
            );
        }
    };
    let body = match RequestBody::read(incoming, shared.max_body).await {
        Ok(body) => body,
        Err(_) => {
            shared.metrics.request(Outcome::BadRequest);
            return responses::text(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "could not read the request body",
            );
        }
    };
    let outgoing = Outgoing {
        method: parts.method,
        uri,
        headers: parts.headers,
        body,
        upgrade: agent_upgrade.is_some(),
        requester,
    };
    let answer = shared
        .layer
        .exchange(&shared.upstream, agent, target.destination(), outgoing)
        .await;
    let mut out = match answer.response {
        Ok(response) => deliver(shared, response, agent_upgrade),
        Err(local) => local,
    };
    out.headers_mut().extend(answer.headers);
    out
}

/// The protocol an agent asks to switch to (`Connection: upgrade` + `Upgrade: <protocol>`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(header::UPGRADE)?;
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| protocol.clone())
}

/// Hands a final response to the agent; on 101 (a protocol switch both sides agreed to) it also
/// splices the agent's upgraded connection to the upstream's, byte for byte, until either closes.
fn deliver(
    shared: &Shared,
    mut response: Response<Incoming>,
    agent_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return finish(response);
    }
    let Some(agent_side) = agent_upgrade else {
        return finish(response);
    };
    let protocol = response.headers().get(header::UPGRADE).cloned();
    let upstream_side = hyper::upgrade::on(&mut response);
    let metrics = shared.metrics.clone();
    tokio::spawn(async move {
        let _open = crate::metrics::GaugeGuard::new(&metrics.open_tunnels);
        match tokio::try_join!(agent_side, upstream_side) {
            Ok((agent, upstream)) => {
                let (mut agent, mut upstream) = (TokioIo::new(agent), TokioIo::new(upstream));
                let _ = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "protocol switch failed"),
        }
    });
    let mut out = finish(response);
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        out.headers_mut().insert(header::UPGRADE, p);
    }
    out
}

/// `Host` is the request target's authority (RFC 9112 §3.2.2): an agent's differing `Host`
/// would otherwise reach a server other than the one dialled (and the one the token is for).
fn set_host(headers: &mut HeaderMap, target: &Target) {
    let authority = target.authority.as_str();
    let same = headers
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()));
    if same && headers.get_all(header::HOST).iter().count() == 1 {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, v);
    }
}

/// Hands an upstream response to the agent: hop-by-hop headers and any forged
/// `x-l402-proxy-*` headers removed, body streamed.
fn finish(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    strip_forged(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body::stream(incoming))
}
