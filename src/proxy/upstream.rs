//! Sending requests upstream: pooled hyper clients (h1/h2 by ALPN, and an HTTP/1.1-only one
//! for protocol switches) over the guarded connector, with upstream TLS always verified. A
//! failure becomes the proxy's own answer to the agent, naming what to fix.

use super::responses;
use crate::body::Body;
use crate::guard::{Guard, GuardError, GuardedConnector};
use crate::metrics::{Metrics, Outcome};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

type Pooled = Client<HttpsConnector<GuardedConnector>, Body>;

/// The upstream clients.
pub struct Upstreams {
    client: Pooled,
    /// HTTP/1.1 only: protocol switches (WebSocket and kin) do not exist in h2.
    client_h1: Pooled,
    /// How long an upstream may take to send its response head.
    response_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Upstreams {
    /// Clients connecting through `guard`, trusting `tls` for upstream certificates.
    pub fn new(
        guard: Arc<Guard>,
        tls: rustls::ClientConfig,
        pool_idle: Duration,
        response_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Upstreams {
        let pooled = |connector| {
            Client::builder(TokioExecutor::new())
                // Room to read a 402 with too many challenge lines, so it can be passed back
                // declined `challenge-too-large` rather than failing as unreadable.
                .http1_max_headers(MAX_RESPONSE_HEADERS)
                .pool_idle_timeout(pool_idle)
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
                .wrap_connector(GuardedConnector::new(guard)),
        );
        Upstreams {
            client,
            client_h1,
            response_timeout,
            metrics,
        }
    }
}

/// The most header lines an upstream response may have (hyper's default is 100).
pub const MAX_RESPONSE_HEADERS: usize = 512;

impl crate::pay::Upstream for Upstreams {
    async fn send(
        &self,
        mut request: Request<Body>,
        h1_only: bool,
    ) -> Result<Response<Incoming>, Response<Body>> {
        // The pooled client picks h1 or h2 per upstream; the agent's version is not the upstream's.
        *request.version_mut() = Version::HTTP_11;
        let started = std::time::Instant::now();
        // For messages only; cloning an authority shares its bytes.
        let authority = request.uri().authority().cloned();
        let host = authority.as_ref().map_or("", |a| a.as_str());
        let client = if h1_only {
            &self.client_h1
        } else {
            &self.client
        };
        let result = match tokio::time::timeout(self.response_timeout, client.request(request))
            .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(%host, secs = self.response_timeout.as_secs(), "upstream sent no response head in time");
                self.metrics.request(Outcome::UpstreamError);
                return Err(responses::text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    &format!(
                        "{host} sent no response within {} s (http.upstream_response_timeout_secs)",
                        self.response_timeout.as_secs()
                    ),
                ));
            }
        };
        self.metrics
            .upstream_seconds
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| {
            let response = upstream_error(&e, host);
            self.metrics
                .request(if response.status() == StatusCode::FORBIDDEN {
                    Outcome::Refused
                } else {
                    Outcome::UpstreamError
                });
            response
        })
    }
}

fn upstream_error(error: &hyper_util::client::legacy::Error, host: &str) -> Response<Body> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(g) = e.downcast_ref::<GuardError>() {
            return guard_response(g);
        }
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error(e) {
            tracing::warn!(%host, problem = ?cert, "upstream certificate not trusted");
            return responses::text(
                StatusCode::BAD_GATEWAY,
                "upstream-certificate-untrusted",
                &format!(
                    "the certificate of {host} is not trusted ({cert:?}): if it comes from a private CA, add that CA's PEM file to tls.upstream_roots"
                ),
            );
        }
        source = e.source();
    }
    let detail = error_chain(error);
    tracing::warn!(%host, error = %detail, "upstream request failed");
    responses::text(
        StatusCode::BAD_GATEWAY,
        "upstream-failed",
        &format!("upstream request failed: {detail}"),
    )
}

/// The rustls error inside `e`: rustls errors arrive wrapped in io::Errors (sometimes twice),
/// whose `source` skips the wrapped error, so each wrapper is opened by hand.
fn rustls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    for _ in 0..4 {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
    None
}

/// The answer to a destination the guard refused (403) or could not reach (502).
/// Logged for the operator with the resolved address; the agent is told only that it is refused.
pub fn guard_response(error: &GuardError) -> Response<Body> {
    if error.is_refusal() {
        tracing::info!(error = %error, "destination refused by the guard");
        responses::text(
            StatusCode::FORBIDDEN,
            "destination-refused",
            &error.agent_message(),
        )
    } else {
        tracing::warn!(error = %error, "upstream unreachable");
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
