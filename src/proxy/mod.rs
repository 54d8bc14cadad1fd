//! The listener agents point HTTP_PROXY / HTTPS_PROXY at: accept, authenticate, and dispatch to
//! plain forwarding or CONNECT handling. Mechanics only: what happens to a request's money is
//! the payment layer's business (`pay`).

pub mod admission;
pub mod connect;
pub mod forward;
pub mod headers;
pub mod memory;
pub mod peer;
pub mod responses;
pub mod rewind;
pub mod self_view;
pub mod target;
pub mod timeouts;
pub mod upstream;

use crate::agents::directory::Directory;
use crate::body::Body;
use crate::core::Clock;
use crate::guard::Guard;
use crate::ledger::Ledger;
use crate::metrics::{GaugeGuard, Metrics, Outcome};
use crate::pay::PaymentLayer;
use crate::tls::CertificateAuthority;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use target::Target;
use tokio::net::TcpListener;
use upstream::Upstreams;

/// State shared by every connection.
pub struct Shared {
    /// The agent directory: replaced whole on every change; tunnels look their agent up in it
    /// on every request.
    pub agents: Arc<Directory>,
    /// The payment layer every upstream request goes through.
    pub layer: PaymentLayer,
    /// The money authority (the agent's own budget view reads it).
    pub ledger: Arc<dyn Ledger>,
    /// Mints the leaves intercepted connections are served with.
    pub ca: Arc<CertificateAuthority>,
    /// Vets destinations.
    pub guard: Arc<Guard>,
    /// Sends requests upstream.
    pub upstream: Upstreams,
    /// Host globs whose TLS is terminated.
    pub intercept: Vec<String>,
    /// `http.max_replay_body_bytes`.
    pub max_body: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// Rate limits, approvals, price jumps, alerts.
    pub guardrails: Arc<crate::guardrails::Guardrails>,
    /// Time limits on agent connections and upstream answers.
    pub timeouts: timeouts::Timeouts,
    /// The connection caps.
    pub admission: Arc<admission::Admission>,
}

impl Shared {
    /// Drops the cached tokens of agents no longer in the directory.
    pub fn forget_removed_agents(&self) {
        let agents = self.agents.load();
        self.layer
            .tokens()
            .retain_agents(|name| agents.get(name).is_some());
        self.guardrails
            .rates
            .retain_agents(|name| agents.get(name).is_some());
    }

    /// The fee reserve every payment holds (`wallet.max_fee_sats`).
    pub fn fee_reserve(&self) -> crate::core::Msat {
        self.layer.purchases().book().max_fee()
    }

    /// The Prometheus exposition, with the CA's mint count brought up to date.
    pub fn metrics_text(&self) -> String {
        let minted = self.ca.minted();
        let counted = self.metrics.certificates_minted.get();
        if minted > counted {
            self.metrics.certificates_minted.inc_by(minted - counted);
        }
        self.metrics
            .store_up
            .set(i64::from(self.ledger.available()));
        self.metrics.render()
    }
}

/// A bound proxy listener.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Proxy {
    /// Binds the agents' listener at `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Proxy { shared, listener })
    }

    /// Where the listener is bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What every connection of this listener shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) {
        self.run_until(std::future::pending(), Duration::ZERO).await
    }

    /// Accepts connections until `shutdown` resolves, then stops accepting, asks every open
    /// connection to finish its current request and close, and waits up to `grace` for them.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        // Every connection task holds a sender; the receiver sees `None` once all are gone.
        let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let ticket = match self.shared.admission.admit(peer.ip()) {
                Ok(admitted) => {
                    if let Some(cap) = admitted.evicted {
                        self.shared.metrics.closed_unauthenticated(cap.into());
                    }
                    admitted.ticket
                }
                Err(refusal) => {
                    // Closed before anything is read or allocated for it.
                    self.shared.metrics.refused_connection(refusal);
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let requester: Arc<dyn crate::pay::Requester> = Arc::new(peer::PeerSocket::of(&stream));
            let shared = self.shared.clone();
            let mut stopping = stopping.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let _open = GaugeGuard::new(&shared.metrics.open_connections);
                let header_read = shared.timeouts.header_read;
                let auth_timeout = shared.timeouts.auth;
                let watched = ticket.clone();
                let stream = admission::Watched::new(stream, &ticket);
                let metrics = shared.metrics.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    let ticket = ticket.clone();
                    let requester = requester.clone();
                    // Boxed: hyper keeps room for one service future per connection for the
                    // connection's whole life; boxed, an idle keep-alive connection holds a
                    // pointer instead (about 3.5 KiB less each).
                    Box::pin(async move {
                        Ok::<_, Infallible>(dispatch(shared, req, ticket, requester).await)
                    })
                });
                // An agent that shuts its sending side after the request still gets the answer.
                let conn = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    // Evicted for a newer connection, or never authenticated in time: closed
                    // at once (dropping the connection drops the socket).
                    closing = watched.closing(auth_timeout) => {
                        if closing == admission::Closing::AuthTimeout {
                            metrics.closed_unauthenticated(crate::metrics::Unauthenticated::AuthTimeout);
                        }
                        Ok(())
                    }
                    // The watch guard is dropped at once; only the wake-up matters.
                    _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "agent connection ended with an error");
                }
                drop(alive);
            });
        }
        drop(self.listener);
        let _ = stop.send(true);
        drop(alive);
        if tokio::time::timeout(grace, drained.recv()).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "connections still open after the grace period"
            );
        }
    }
}

/// Authenticates, then sends the request where it belongs.
async fn dispatch(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    ticket: Arc<admission::Ticket>,
    requester: Arc<dyn crate::pay::Requester>,
) -> Response<Body> {
    let agent = match shared
        .agents
        .load()
        .authenticate(req.headers().get(http::header::PROXY_AUTHORIZATION))
    {
        Ok(agent) => {
            ticket.authenticated();
            agent
        }
        Err(e) => {
            shared.metrics.request(Outcome::AuthFailed);
            return responses::proxy_auth_required(e.reason());
        }
    };
    let slot = match shared
        .guardrails
        .rates
        .connection(&agent.name, &agent.limits)
    {
        Ok(slot) => slot,
        Err(d) => return responses::rate_limited(&shared, &agent.name, &d),
    };
    if req.method() == Method::CONNECT {
        // A tunnel made of this connection keeps its place under http.max_connections.
        req.extensions_mut().insert(ticket);
        return connect::handle(shared, agent, req, slot).await;
    }
    if req.uri().authority().is_some_and(target::has_invalid_port) {
        shared.metrics.request(Outcome::BadRequest);
        return responses::text(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "the request names an invalid port (1 to 65535)",
        );
    }
    match Target::from_absolute(req.uri()) {
        Some(target) => {
            let answer = forward::forward(&shared, &agent, req, &target, Some(requester)).await;
            drop(slot);
            answer
        }
        None => {
            shared.metrics.request(Outcome::BadRequest);
            responses::text(
                StatusCode::BAD_REQUEST,
                "not-a-proxy-request",
                "this is a forward proxy: send absolute-form requests (set HTTP_PROXY/HTTPS_PROXY)",
            )
        }
    }
}
