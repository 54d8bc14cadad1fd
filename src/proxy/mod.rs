//! The listener agents point HTTP_PROXY / HTTPS_PROXY at: accept, authenticate, and dispatch to
//! plain forwarding or CONNECT handling.

pub mod body;
pub mod connect;
pub mod forward;
pub mod headers;
pub mod responses;
pub mod rewind;
pub mod self_view;

use crate::agents::Agents;
use crate::budget::Budget;
use crate::clock::Clock;
use crate::config::Config;
use crate::guard::{Guard, GuardedConnector};
use crate::l402::engine::{Engine, EngineParts};
use crate::metrics::{GaugeGuard, Metrics, Outcome};
use crate::money::Msat;
use crate::store::Store;
use crate::tls::{upstream_client_config, CertificateAuthority};
use crate::wallet::Wallet;
use arc_swap::ArcSwap;
use body::Body;
use forward::Target;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub type UpstreamClient = Client<HttpsConnector<GuardedConnector>, Body>;

/// State shared by every connection.
pub struct Shared {
    /// Swapped whole on reload; requests hold the snapshot they authenticated against.
    pub agents: ArcSwap<Agents>,
    pub engine: Arc<Engine>,
    pub ca: Arc<CertificateAuthority>,
    pub guard: Arc<Guard>,
    pub client: UpstreamClient,
    /// HTTP/1.1 only: protocol switches (WebSocket and kin) do not exist in h2.
    pub client_h1: UpstreamClient,
    pub intercept: Vec<String>,
    pub max_body: usize,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Assembles the proxy's state from a validated config and a wallet, with the system clock.
    pub fn from_config(config: &Config, wallet: Arc<dyn Wallet>) -> anyhow::Result<Shared> {
        Shared::with_clock(config, wallet, Arc::new(crate::clock::SystemClock))
    }

    /// As `from_config`, with the clock budgets use (tests inject one).
    pub fn with_clock(
        config: &Config,
        wallet: Arc<dyn Wallet>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Shared> {
        let ca = CertificateAuthority::load_or_create(&config.tls.ca_cert, &config.tls.ca_key)?;
        let guard = Arc::new(Guard::new(
            &config.guard,
            Duration::from_secs(config.http.connect_timeout_secs),
        ));
        let tls = upstream_client_config(&config.tls.upstream_roots)?;
        let pooled = |connector| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(config.http.pool_idle_secs))
                .pool_timer(TokioTimer::new())
                .build(connector)
        };
        let client = pooled(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(GuardedConnector::new(guard.clone())),
        );
        let client_h1 = pooled(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(GuardedConnector::new(guard.clone())),
        );
        let store = Store::open(&config.store.path)?;
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(EngineParts {
            wallet,
            network: config.network(),
            max_fee: Msat::from_sats(config.wallet.max_fee_sats),
            timeout: Duration::from_secs(config.wallet.payment_timeout_secs),
            budget: Arc::new(Budget::new(clock, config.operator_limits.clone())),
            store,
            metrics: metrics.clone(),
        });
        Ok(Shared {
            agents: ArcSwap::from_pointee(Agents::from_config(&config.agents)),
            engine: Arc::new(engine),
            ca: Arc::new(ca),
            guard,
            client,
            client_h1,
            intercept: config.tls.intercept.clone(),
            max_body: config.http.max_replay_body_bytes,
            metrics,
        })
    }
}

impl Shared {
    /// Reads the ledger back (spend, totals, tokens), resolves payments a previous run left
    /// pending, and keeps resolving in the background. Call before accepting agents.
    pub async fn prepare(&self) -> anyhow::Result<crate::l402::reconcile::RestoreReport> {
        let report = self.engine.restore().await?;
        self.engine.spawn_reconciler(RECONCILE_EVERY);
        if report.pending > 0 || report.tokens > 0 {
            tracing::info!(
                pending = report.pending,
                still_in_flight = report.still_in_flight,
                tokens = report.tokens,
                "ledger restored"
            );
        }
        Ok(report)
    }
}

impl Shared {
    /// Applies a reloaded config: agents, their limits and the operator's limits change; spend,
    /// tokens and open connections stay. Settings that need a restart are reported.
    pub fn reload(&self, old: &Config, new: &Config) -> Vec<&'static str> {
        self.agents
            .store(Arc::new(Agents::from_config(&new.agents)));
        self.engine
            .budget
            .set_operator_limits(new.operator_limits.clone());
        let mut needs_restart = Vec::new();
        if old.listen != new.listen {
            needs_restart.push("listen");
        }
        if old.admin.listen != new.admin.listen {
            needs_restart.push("admin.listen");
        }
        if old.tls.intercept != new.tls.intercept
            || old.tls.upstream_roots != new.tls.upstream_roots
        {
            needs_restart.push("tls");
        }
        if old.wallet.backend != new.wallet.backend
            || old.wallet.max_fee_sats != new.wallet.max_fee_sats
        {
            needs_restart.push("wallet");
        }
        if old.store.path != new.store.path {
            needs_restart.push("store.path");
        }
        needs_restart
    }
}

impl Shared {
    /// The Prometheus exposition, with the CA's mint count brought up to date.
    pub fn metrics_text(&self) -> String {
        let minted = self.ca.minted();
        let counted = self.metrics.certificates_minted.get();
        if minted > counted {
            self.metrics.certificates_minted.inc_by(minted - counted);
        }
        self.metrics.render()
    }
}

/// How often payments of unknown outcome are looked up again.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// A bound proxy listener.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Proxy {
    pub async fn bind(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Proxy { shared, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

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
            let (stream, _peer) = tokio::select! {
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
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let mut stopping = stopping.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let _open = GaugeGuard::new(&shared.metrics.open_connections);
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
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
async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let agent = match shared
        .agents
        .load()
        .authenticate(req.headers().get(http::header::PROXY_AUTHORIZATION))
    {
        Ok(agent) => agent,
        Err(e) => {
            shared.metrics.request(Outcome::AuthFailed);
            return responses::proxy_auth_required(e.reason());
        }
    };
    if req.method() == Method::CONNECT {
        return connect::handle(shared, agent, req).await;
    }
    match Target::from_absolute(req.uri()) {
        Some(target) => forward::forward(&shared, &agent, req, &target).await,
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
