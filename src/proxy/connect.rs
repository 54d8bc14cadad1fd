//! `CONNECT host:port`: authenticated once, then either tunnelled byte for byte, or, for hosts
//! matching `tls.intercept`, terminated with a leaf from our CA so the L402 flow can see the
//! requests inside. The agent named on CONNECT owns every request in the tunnel.

use super::admission::Ticket;
use super::forward::forward;
use super::responses;
use super::rewind::Rewind;
use super::target::Target;
use super::timeouts::{Activity, Tracked};
use super::upstream::guard_response;
use super::Shared;
use crate::agents::Agent;
use crate::body::{empty, Body};
use crate::guard::GuardError;
use crate::guardrails::rate::ConnectionSlot;
use crate::metrics::{GaugeGuard, Outcome};
use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_rustls::LazyConfigAcceptor;

/// Answers a CONNECT of `agent`: 200 and a tunnel or an interception, or the refusal.
pub async fn handle(
    shared: Arc<Shared>,
    agent: Arc<Agent>,
    req: Request<Incoming>,
    slot: Option<ConnectionSlot>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return responses::text(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "CONNECT needs host:port",
        );
    };
    if super::target::has_invalid_port(&authority) {
        shared.metrics.request(Outcome::BadRequest);
        return responses::text(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "CONNECT names an invalid port (1 to 65535)",
        );
    }
    let target = Target::new(Scheme::HTTPS, authority);
    let own = target.host() == super::self_view::SELF_HOST;
    // The tunnel keeps the connection's place under http.max_connections while it is open.
    let ticket = req.extensions().get::<Arc<Ticket>>().cloned();
    if own || crate::glob::any_matches(&shared.intercept, target.host()) {
        // Vet the destination now, so a refusal is a clear answer to CONNECT rather than a
        // broken TLS session later. The proxy's own name is answered inside, never dialled.
        let vetted = if own {
            Ok(Vec::new())
        } else {
            shared.guard.resolve(target.host(), target.port).await
        };
        if let Err(e) = vetted {
            return refused(&shared, &e);
        }
        shared.metrics.connect("intercept");
        tokio::spawn(async move {
            let _open = GaugeGuard::new(&shared.metrics.open_tunnels);
            let _slot = slot;
            let _ticket = ticket;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    intercept(shared.clone(), agent, target, TokioIo::new(upgraded)).await
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    } else {
        // Requests inside a blind tunnel are not seen: opening it counts as one.
        if let Err(d) = shared.guardrails.rates.request(&agent.name, &agent.limits) {
            return responses::rate_limited(&shared, &agent.name, &d);
        }
        let upstream = match shared.guard.connect(target.host(), target.port).await {
            Ok(stream) => stream,
            Err(e) => return refused(&shared, &e),
        };
        shared.metrics.connect("tunnel");
        tokio::spawn(async move {
            let _open = GaugeGuard::new(&shared.metrics.open_tunnels);
            let _slot = slot;
            let _ticket = ticket;
            let mut upstream = upstream;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let activity = Activity::new();
                    let mut agent_side = Tracked::new(TokioIo::new(upgraded), activity.clone());
                    // Bytes only: the tunnel lives as long as its agent does, and while bytes
                    // move.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut agent_side, &mut upstream) => {}
                        _ = revoked(&shared, &agent) => {
                            tracing::info!(agent = %agent.name, "tunnel closed: the agent was removed or its key rotated");
                        }
                        _ = activity.idle(shared.timeouts.tunnel_idle) => {
                            tracing::debug!(agent = %agent.name, "idle tunnel closed");
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    }
    let mut ok = Response::new(empty());
    *ok.status_mut() = StatusCode::OK;
    ok
}

/// The answer to a CONNECT the guard refused or could not reach, counted.
fn refused(shared: &Shared, error: &GuardError) -> Response<Body> {
    shared.metrics.request(if error.is_refusal() {
        Outcome::Refused
    } else {
        Outcome::UpstreamError
    });
    guard_response(error)
}

/// Terminates the agent's TLS with a leaf for the name it asked for (SNI, else the CONNECT
/// host: clients send no SNI for IP addresses), then serves h2 or HTTP/1.1 as negotiated.
async fn intercept(
    shared: Arc<Shared>,
    agent: Arc<Agent>,
    target: Target,
    mut io: TokioIo<hyper::upgrade::Upgraded>,
) {
    let deadline = tokio::time::Instant::now() + shared.timeouts.tls_handshake;
    // WebSocket and other clients CONNECT even for plain ws:// and http://: a TLS record starts
    // with 0x16 (handshake); anything else is served as plain HTTP inside the tunnel.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut io, &mut first))
        .await
    {
        Ok(Ok(1)) => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(host = %target.host(), "tunnel closed: nothing sent within http.tls_handshake_timeout_secs");
            return;
        }
    }
    let io = Rewind::new(first[0], io);
    if first[0] != 0x16 {
        let target = Target::new(Scheme::HTTP, target.authority.clone());
        serve(shared, agent, target, TokioIo::new(io), false).await;
        return;
    }
    let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(deadline, hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(host = %target.host(), error = %e, "agent TLS hello failed");
            return;
        }
        Err(_) => {
            tracing::debug!(host = %target.host(), "agent TLS hello not complete within http.tls_handshake_timeout_secs");
            return;
        }
    };
    let name = start
        .client_hello()
        .server_name()
        .map(str::to_owned)
        .unwrap_or_else(|| target.host().to_string());
    let config = match shared.ca.server_config_for(&name) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(host = %name, error = %e, "cannot mint a certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(host = %name, error = %e, "agent TLS handshake failed (does it trust our CA?)");
            return;
        }
        Err(_) => {
            tracing::debug!(host = %name, "agent TLS handshake not complete within http.tls_handshake_timeout_secs");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve(shared, agent, target, TokioIo::new(tls), h2).await;
}

/// Resolves once the agent that opened a tunnel is gone from the directory, or its key was
/// rotated: the tunnel must not outlive its credentials.
async fn revoked(shared: &Shared, agent: &Agent) {
    let mut changes = shared.agents.subscribe();
    while shared.agents.still_valid(agent) {
        if changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serves the agent's requests inside a tunnel on behalf of the agent named on CONNECT — as it
/// is now: each request looks the agent up again, so new limits, a pause, a removal or a key
/// rotation apply to the next request in an open tunnel. The tunnel closes once its agent is
/// gone.
async fn serve<I>(shared: Arc<Shared>, agent: Arc<Agent>, target: Target, io: TokioIo<I>, h2: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(io.into_inner(), activity.clone()));
    let target = Arc::new(target);
    let opened_by = agent.clone();
    let state = shared.clone();
    let busy = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = state.clone();
        let agent = agent.clone();
        let target = target.clone();
        let in_flight = busy.request();
        // Boxed: hyper keeps room for one service future per connection for as long as the
        // connection lives, so an idle connection costs a pointer, not the whole future.
        Box::pin(async move {
            let _in_flight = in_flight;
            let Some(now) = agent.current_in(&shared.agents.load()) else {
                shared.metrics.request(crate::metrics::Outcome::AuthFailed);
                let mut r = responses::proxy_auth_required(
                    "the agent that opened this tunnel was removed or its key rotated",
                );
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                return Ok::<_, Infallible>(r);
            };
            Ok::<_, Infallible>(forward(&shared, &now, req, &target, None).await)
        })
    });
    let idle = shared.timeouts.tunnel_idle;
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = revoked(&shared, &opened_by) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = activity.idle(idle) => {
                tracing::debug!(agent = %opened_by.name, "idle intercepted tunnel closed");
                Ok(())
            }
        }
    } else {
        // The head timeout also closes a keep-alive tunnel idle between requests.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.timeouts.header_read)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = revoked(&shared, &opened_by) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = activity.idle(idle) => {
                tracing::debug!(agent = %opened_by.name, "idle intercepted tunnel closed");
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}
