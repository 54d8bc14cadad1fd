//! The operator's API on `admin.listen`: agents and their budgets, the payment ledger (JSON or
//! CSV), budget top-up and recall, and the health probes. `/v1/*` needs the bearer token.

use crate::body::{full, Body};
use crate::core::Msat;
use crate::ledger::{DeclineFilter, PaymentFilter, PaymentState};
use crate::proxy::Shared;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub struct Admin {
    shared: Arc<Shared>,
    token_sha256: [u8; 32],
    /// False until the ledger is restored; `/readyz` says so.
    pub ready: AtomicBool,
}

impl Admin {
    pub fn new(shared: Arc<Shared>, token: &str) -> Arc<Admin> {
        Arc::new(Admin {
            shared,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            ready: AtomicBool::new(false),
        })
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Ready once the ledger is restored. The store's state is in the body; with `?strict` a
    /// store that does not answer makes it 503 (by default the proxy stays ready, since
    /// pass-through traffic and cached tokens keep working while payments fail closed).
    fn readyz(&self, query: Option<&str>) -> Response<Body> {
        if !self.ready.load(Ordering::Relaxed) {
            return text_owned(
                StatusCode::SERVICE_UNAVAILABLE,
                "restoring the ledger\n".into(),
            );
        }
        let ledger = &self.shared.ledger;
        let strict = query.is_some_and(|q| {
            q.split('&')
                .any(|p| p == "strict" || p.starts_with("strict="))
        });
        if ledger.available() {
            text_owned(
                StatusCode::OK,
                format!("ready\nstore: {} up\n", ledger.backend()),
            )
        } else {
            text_owned(
                if strict {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                },
                format!(
                    "ready\nstore: {} unavailable: new payments are refused (store-unavailable); pass-through and cached tokens keep working\n",
                    ledger.backend()
                ),
            )
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        bool::from(presented.ct_eq(&self.token_sha256))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(full(self.shared.metrics_text()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return r;
            }
            (&Method::GET, "/readyz") => return self.readyz(req.uri().query()),
            _ => {}
        }
        if !path.starts_with("/v1/") {
            return error(StatusCode::NOT_FOUND, "no such endpoint");
        }
        if !self.authorized(&req) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"l402-proxy admin\""),
            );
            return r;
        }
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["agents"]) => self.agents().await,
            (&Method::GET, ["payments"]) => self.payments(&req).await,
            (&Method::GET, ["declines"]) => self.declines(&req).await,
            (&Method::POST, ["agents", name, "budget"]) => {
                let name = name.to_string();
                self.budget(&name, req).await
            }
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    async fn agents(&self) -> Response<Body> {
        let agents = self.shared.agents.load_full();
        let mut views = Vec::with_capacity(agents.len());
        for a in agents.iter() {
            match self.shared.ledger.budget(&a.name, &a.limits).await {
                Ok(view) => views.push(view),
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        views.sort_by(|a, b| a.agent.cmp(&b.agent));
        json(StatusCode::OK, &serde_json::json!({ "agents": views }))
    }

    async fn payments(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = Query::parse(req.uri().query());
        if let Some(status) = &query.status {
            if !matches!(status.as_str(), "pending" | "settled" | "failed") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "status must be pending, settled or failed",
                );
            }
        }
        let filter = PaymentFilter {
            agent: query.agent,
            state: query.status.as_deref().and_then(PaymentState::parse),
            limit: query.limit.unwrap_or(100).min(10_000),
            ..PaymentFilter::default()
        };
        let rows = match self.shared.ledger.payments(filter).await {
            Ok(rows) => rows,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        let wants_csv = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"));
        if !wants_csv {
            let rows: Vec<_> = rows.iter().map(payment_json).collect();
            return json(StatusCode::OK, &serde_json::json!({ "payments": rows }));
        }
        let mut csv =
            String::from("payment_hash,agent,host,amount_msat,fee_msat,status,created_at\n");
        for r in rows {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                r.hash,
                csv_field(&r.agent),
                csv_field(&r.host),
                r.amount.0,
                r.fee.map(|f| f.0.to_string()).unwrap_or_default(),
                r.state.as_str(),
                r.created_at
            ));
        }
        let mut resp = Response::new(full(csv));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        resp
    }

    async fn declines(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = Query::parse(req.uri().query());
        let filter = DeclineFilter {
            agent: query.agent,
            limit: query.limit.unwrap_or(100).min(10_000),
        };
        match self.shared.ledger.declines(filter).await {
            Ok(rows) => {
                let rows: Vec<_> = rows
                    .into_iter()
                    .map(|d| serde_json::json!({"agent": d.agent, "host": d.host, "path": d.path, "code": d.code, "reason": d.detail, "amount_msat": d.amount.map(|a| a.0), "count": d.count, "created_at": d.created_at}))
                    .collect();
                json(StatusCode::OK, &serde_json::json!({ "declines": rows }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    /// Top-up or recall: `{"total_sats": N}` sets the agent's total limit, `{"add_sats": ±N}`
    /// moves it. Written to the ledger before it takes effect.
    async fn budget(&self, name: &str, req: Request<Incoming>) -> Response<Body> {
        let agents = self.shared.agents.load();
        let Some(agent) = agents.get(name).cloned() else {
            return error(StatusCode::NOT_FOUND, "no such agent");
        };
        let body = match Limited::new(req.into_body(), 4096).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::BAD_REQUEST, "body unreadable or over 4 KiB"),
        };
        let change: BudgetChange = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"total_sats\": N}} or {{\"add_sats\": N}}: {e}"),
                )
            }
        };
        let ledger = &self.shared.ledger;
        let current = match ledger.budget(&agent.name, &agent.limits).await {
            Ok(view) => view.limits.total_sats,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        let new_total =
            match (change.total_sats, change.add_sats) {
                (Some(total), None) => total,
                (None, Some(add)) => match current {
                    Some(total) => total.saturating_add_signed(add),
                    None => return error(
                        StatusCode::CONFLICT,
                        "the agent has no total limit to move; set one with {\"total_sats\": N}",
                    ),
                },
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "give exactly one of total_sats or add_sats",
                    )
                }
            };
        let total = Msat::from_sats(new_total);
        if let Err(e) = ledger
            .set_total(&agent.name, Some(total), self.shared.clock.now())
            .await
        {
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        tracing::info!(agent = %agent.name, total_sats = new_total, "budget changed by the operator");
        match ledger.budget(&agent.name, &agent.limits).await {
            Ok(view) => json(StatusCode::OK, &view),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }
}

/// One payment as the API shows it (never its token or preimage).
fn payment_json(r: &crate::ledger::PaymentRecord) -> serde_json::Value {
    serde_json::json!({
        "payment_hash": r.hash.to_hex(),
        "agent": r.agent,
        "host": r.host,
        "dialect": r.dialect,
        "amount_msat": r.amount.0,
        "fee_msat": r.fee.map(|f| f.0),
        "status": r.state.as_str(),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "failure": r.failure,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetChange {
    total_sats: Option<u64>,
    add_sats: Option<i64>,
}

#[derive(Default)]
struct Query {
    agent: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = percent_decode(v);
            match k {
                "agent" if !v.is_empty() => q.agent = Some(v),
                "status" if !v.is_empty() => q.status = Some(v),
                "limit" => q.limit = v.parse().ok(),
                _ => {}
            }
        }
        q
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Quotes a CSV field when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_csv_helpers() {
        let q = Query::parse(Some("agent=re%20search&status=settled&limit=5&x=1"));
        assert_eq!(q.agent.as_deref(), Some("re search"));
        assert_eq!(q.status.as_deref(), Some("settled"));
        assert_eq!(q.limit, Some(5));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
