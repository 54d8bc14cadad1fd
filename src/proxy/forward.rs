//! One request to an upstream: attach a cached token if there is one, send, and when the answer
//! is a payable L402 challenge, obtain a token (pay or share) and replay exactly once.

use super::body::{self, Body, RequestBody};
use super::headers::strip_hop_by_hop;
use super::responses::{self, header_text};
use super::Shared;
use crate::agents::Agent;
use crate::guard::GuardError;
use crate::l402::challenge::{self, Challenge};
use crate::l402::engine::{ChallengeContext, Obtained};
use crate::l402::policy::Decline;
use crate::l402::tokens::{path_scope, Attached};
use crate::metrics::Outcome;
use crate::wallet::dev::now_unix;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

pub const DECLINE_HEADER: &str = "x-l402-proxy-decline";
pub const REASON_HEADER: &str = "x-l402-proxy-reason";
pub const PAID_MSAT_HEADER: &str = "x-l402-proxy-paid-msat";
pub const FEE_MSAT_HEADER: &str = "x-l402-proxy-fee-msat";
pub const PAYMENT_HASH_HEADER: &str = "x-l402-proxy-payment-hash";
pub const TOKEN_HEADER: &str = "x-l402-proxy-token";
pub const REMAINING_HEADER: &str = "x-l402-proxy-remaining-msat";

/// Where a request goes: the origin is the token cache key.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub port: u16,
    /// `scheme://host:port`, lower-cased host; the host is a slice of it (one allocation).
    pub origin: String,
    host: std::ops::Range<usize>,
}

impl Target {
    pub fn new(scheme: Scheme, authority: Authority) -> Target {
        use std::fmt::Write;
        let https = scheme == Scheme::HTTPS;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let ipv6 = host.contains(':');
        let mut origin = String::with_capacity(scheme.as_str().len() + host.len() + 11);
        origin.push_str(scheme.as_str());
        origin.push_str(if ipv6 { "://[" } else { "://" });
        let start = origin.len();
        origin.push_str(host);
        origin[start..].make_ascii_lowercase();
        let end = origin.len();
        let _ = write!(origin, "{}:{port}", if ipv6 { "]" } else { "" });
        Target {
            scheme,
            authority,
            port,
            origin,
            host: start..end,
        }
    }

    /// The destination host, lower-cased, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.origin[self.host.clone()]
    }

    /// The target of an absolute-form request (`GET http://host/path`).
    pub fn from_absolute(uri: &Uri) -> Option<Target> {
        let scheme = uri.scheme()?.clone();
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return None;
        }
        Some(Target::new(scheme, uri.authority()?.clone()))
    }

    fn upstream_uri(&self, path: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(
                path.cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            )
            .build()
    }
}

/// What is needed to send the request again after paying.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    /// The agent's side of a protocol switch it asked for, claimed when upstream answers 101.
    upgrade: Option<OnUpgrade>,
}

impl Replay {
    fn request(&self, authorization: &HeaderValue) -> Option<Request<Body>> {
        let body = self.body.clone()?;
        let mut req = Request::new(body::from_bytes(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req.headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
        Some(req)
    }
}

pub async fn forward(
    shared: &Shared,
    agent: &Arc<Agent>,
    req: Request<Incoming>,
    target: &Target,
) -> Response<Body> {
    if target.host() == super::self_view::SELF_HOST {
        shared.metrics.request(Outcome::SelfView);
        return super::self_view::respond(&shared.engine.budget, agent, req.uri().path());
    }
    let (mut parts, incoming) = req.into_parts();
    let protocol = upgrade_protocol(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
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
    let attached = shared
        .engine
        .tokens
        .find(&agent.name, &target.origin, uri.path(), now_unix());
    match &attached {
        Some(a) => {
            shared.metrics.token_hits.inc();
            parts
                .headers
                .insert(header::AUTHORIZATION, a.token.authorization.clone());
        }
        None => shared.metrics.token_misses.inc(),
    }
    let mut replay = Replay {
        method: parts.method.clone(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body: body.replayable().cloned(),
        upgrade: agent_upgrade,
    };
    let mut request = Request::new(match body {
        RequestBody::Buffered(bytes) => body::from_bytes(bytes),
        RequestBody::Streaming(rest) => http_body_util::BodyExt::boxed(rest),
    });
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    let response = match send(shared, request, replay.upgrade.is_some()).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let challenges = challenges_in(&response);
    let Some(chosen) = challenge::select(&challenges) else {
        learn_if_worked(&attached, &response, replay.uri.path());
        shared.metrics.request(Outcome::Passed);
        return deliver(shared, response, &mut replay);
    };
    shared.metrics.challenges.inc();
    if let Some(a) = &attached {
        // The server refused a token known to work here: stale (expired, revoked). A token that
        // was only tried speculatively on a new path stays for the paths where it works.
        if a.known {
            shared
                .engine
                .tokens
                .evict(&agent.name, &target.origin, &a.token.payment_hash);
        }
    }
    if replay.body.is_none() {
        shared.metrics.request(Outcome::Declined);
        shared.metrics.decline("body-not-replayable");
        return declined(
            response,
            &Decline::new(
                "body-not-replayable",
                format!(
                    "the request body is larger than http.max_replay_body_bytes ({}) so it cannot be replayed after paying",
                    shared.max_body
                ),
            ),
        );
    }
    let cx = ChallengeContext {
        agent,
        origin: &target.origin,
        host: target.host(),
        path: replay.uri.path(),
        sent: attached.as_ref().map(|a| &a.token.payment_hash),
    };
    match shared.engine.obtain(&cx, chosen).await {
        Err(decline) => {
            shared.metrics.request(Outcome::Declined);
            declined(response, &decline)
        }
        Ok(obtained) => {
            drop(response);
            let mut out = replay_once(shared, &mut replay, &obtained).await;
            if obtained.paid.is_some() {
                // What the agent has left under its tightest limit, when it has one.
                if let Some(left) = shared.engine.budget.view(agent).remaining_msat.tightest() {
                    out.headers_mut()
                        .insert(REMAINING_HEADER, HeaderValue::from(left));
                }
            }
            out
        }
    }
}

/// Sends the request again with the token. A second 402 goes back to the agent: one request
/// never causes two payments.
async fn replay_once(shared: &Shared, replay: &mut Replay, obtained: &Obtained) -> Response<Body> {
    let Some(request) = replay.request(&obtained.token.authorization) else {
        return responses::text(
            StatusCode::BAD_GATEWAY,
            "replay-failed",
            "request body unavailable for replay",
        );
    };
    let response = match send(shared, request, replay.upgrade.is_some()).await {
        Ok(r) => r,
        Err(mut e) => {
            annotate_paid(e.headers_mut(), obtained);
            return e;
        }
    };
    let rejected = !challenges_in(&response).is_empty();
    shared
        .metrics
        .request(match (rejected, obtained.paid.is_some()) {
            (true, _) => Outcome::Declined,
            (false, true) => Outcome::Paid,
            (false, false) => Outcome::Shared,
        });
    if rejected {
        shared.metrics.decline("replay-rejected");
    }
    if !rejected && response.status().is_success() {
        obtained.token.learn_scope(path_scope(replay.uri.path()));
    }
    let mut out = if rejected {
        declined(
            response,
            &Decline::new(
                "replay-rejected",
                "the server answered the paid token with another challenge; not paying twice for one request",
            ),
        )
    } else {
        deliver(shared, response, replay)
    };
    annotate_paid(out.headers_mut(), obtained);
    out
}

fn annotate_paid(headers: &mut HeaderMap, obtained: &Obtained) {
    match &obtained.paid {
        Some(paid) => {
            headers.insert(PAID_MSAT_HEADER, HeaderValue::from(paid.amount.0));
            headers.insert(FEE_MSAT_HEADER, HeaderValue::from(paid.fee.0));
            if let Ok(v) = HeaderValue::from_str(&paid.payment_hash.to_hex()) {
                headers.insert(PAYMENT_HASH_HEADER, v);
            }
            headers.insert(TOKEN_HEADER, HeaderValue::from_static("paid"));
        }
        None => {
            headers.insert(TOKEN_HEADER, HeaderValue::from_static("shared"));
        }
    }
}

/// A speculative token that got through has proven itself on this path's scope.
fn learn_if_worked(attached: &Option<Attached>, response: &Response<Incoming>, path: &str) {
    if let Some(a) = attached {
        if !a.known && response.status().is_success() {
            a.token.learn_scope(path_scope(path));
        }
    }
}

/// L402 challenges in a 402, or in a 401 that carries one (the spec's status for a bad token).
fn challenges_in(response: &Response<Incoming>) -> Vec<Challenge> {
    let status = response.status();
    if status != StatusCode::PAYMENT_REQUIRED && status != StatusCode::UNAUTHORIZED {
        return Vec::new();
    }
    challenge::parse_challenges(
        response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// The upstream's own 402, streamed back, with our reason for not paying.
fn declined(response: Response<Incoming>, decline: &Decline) -> Response<Body> {
    tracing::info!(code = decline.code, detail = %decline.detail, "declined to pay");
    let mut out = finish(response);
    let h = out.headers_mut();
    h.insert(DECLINE_HEADER, HeaderValue::from_static(decline.code));
    h.insert(REASON_HEADER, header_text(&decline.detail));
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
    replay: &mut Replay,
) -> Response<Body> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return finish(response);
    }
    let Some(agent_side) = replay.upgrade.take() else {
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

/// Hands an upstream response to the agent: hop-by-hop headers removed, body streamed.
fn finish(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body::stream(incoming))
}

async fn send(
    shared: &Shared,
    mut request: Request<Body>,
    h1_only: bool,
) -> Result<Response<Incoming>, Response<Body>> {
    // The pooled client picks h1 or h2 per upstream; the agent's version is not the upstream's.
    *request.version_mut() = Version::HTTP_11;
    let started = std::time::Instant::now();
    let client = if h1_only {
        &shared.client_h1
    } else {
        &shared.client
    };
    let result = client.request(request).await;
    shared
        .metrics
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    result.map_err(|e| {
        let response = upstream_error(&e);
        shared
            .metrics
            .request(if response.status() == StatusCode::FORBIDDEN {
                Outcome::Refused
            } else {
                Outcome::UpstreamError
            });
        response
    })
}

fn upstream_error(error: &hyper_util::client::legacy::Error) -> Response<Body> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(g) = e.downcast_ref::<GuardError>() {
            return guard_response(g);
        }
        source = e.source();
    }
    let detail = error_chain(error);
    tracing::debug!(error = %detail, "upstream request failed");
    responses::text(
        StatusCode::BAD_GATEWAY,
        "upstream-failed",
        &format!("upstream request failed: {detail}"),
    )
}

pub fn guard_response(error: &GuardError) -> Response<Body> {
    if error.is_refusal() {
        responses::text(
            StatusCode::FORBIDDEN,
            "destination-refused",
            &error.to_string(),
        )
    } else {
        responses::text(
            StatusCode::BAD_GATEWAY,
            "upstream-unreachable",
            &error.to_string(),
        )
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_normalise_host_and_port_into_the_origin() {
        let t = Target::new(Scheme::HTTPS, Authority::from_static("API.Example.com"));
        assert_eq!(
            (t.origin.as_str(), t.host(), t.port),
            ("https://api.example.com:443", "api.example.com", 443)
        );
        let t = Target::new(Scheme::HTTP, Authority::from_static("[::1]:8080"));
        assert_eq!(
            (t.origin.as_str(), t.host(), t.port),
            ("http://[::1]:8080", "::1", 8080)
        );
        let uri: Uri = "http://127.0.0.1/x".parse().unwrap();
        let t = Target::from_absolute(&uri).unwrap();
        assert_eq!(
            (t.origin.as_str(), t.host()),
            ("http://127.0.0.1:80", "127.0.0.1")
        );
        assert!(Target::from_absolute(&"/relative".parse().unwrap()).is_none());
    }
}
