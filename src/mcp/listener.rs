//! `mcp.listen`: the MCP server on an address of its own, for MCP hosts that cannot send their
//! requests through a proxy. An agent authenticates each request with
//! `Authorization: Bearer <agent name>:<agent key>` — the same name and key as its proxy
//! credentials, checked by the same directory (constant time, only the key's sha256 kept).

use super::transport::{json_response, serve};
use crate::agents::basic_credentials;
use crate::body::Body;
use crate::proxy::Shared;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound MCP listener.
pub struct McpListener {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl McpListener {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<McpListener> {
        let listener = TcpListener::bind(addr).await?;
        Ok(McpListener { shared, listener })
    }

    /// Where it is bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "MCP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            let header_read = shared.timeouts.header_read;
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "MCP connection ended with an error");
                }
            });
        }
    }
}

/// Authenticates the bearer `<name>:<key>`, then hands the request to the transport.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() != super::PATH {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("the MCP endpoint is {}", super::PATH) }),
        );
    }
    let agent = bearer(req.headers().get(header::AUTHORIZATION))
        .and_then(|basic| HeaderValue::from_str(&basic).ok())
        .ok_or(crate::agents::AuthError::Malformed)
        .and_then(|basic| shared.agents.load().authenticate(Some(&basic)));
    match agent {
        Ok(agent) => serve(shared, &agent, req).await,
        Err(e) => {
            let reason = match e {
                crate::agents::AuthError::Rejected => e.reason(),
                _ => "send Authorization: Bearer <agent name>:<agent key>",
            };
            let mut r = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": reason }));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"l402-proxy mcp\""),
            );
            r
        }
    }
}

/// `Bearer name:key` as the `Basic` credentials the agent directory checks.
fn bearer(value: Option<&HeaderValue>) -> Option<String> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (name, key) = token.trim().split_once(':')?;
    if name.is_empty() || key.is_empty() {
        return None;
    }
    Some(basic_credentials(name, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_become_basic_credentials() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            bearer(Some(&v("Bearer alice:k:with:colons"))),
            Some(basic_credentials("alice", "k:with:colons"))
        );
        assert_eq!(
            bearer(Some(&v("bearer  bob:key "))),
            Some(basic_credentials("bob", "key"))
        );
        for bad in [
            "Basic YTpi",
            "Bearer nokey",
            "Bearer :key",
            "Bearer name:",
            "Bearer",
        ] {
            assert_eq!(bearer(Some(&v(bad))), None, "{bad}");
        }
        assert_eq!(bearer(None), None);
    }
}
