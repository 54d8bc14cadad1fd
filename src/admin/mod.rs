//! The operator's API on `admin.listen`: agents and their budgets, the payment ledger and the
//! declines (JSON or CSV), budget top-up and recall, and the health probes. `/v1/*` needs the
//! bearer token.

pub mod agents;
pub mod approvals;
pub mod dashboard;
pub mod fleet;
pub mod gate;
pub mod query;
pub mod render;
pub mod status;

use crate::body::{full, Body};
use crate::core::{Msat, Sats};
use crate::ledger::{DeclineFilter, PaymentFilter};
use crate::proxy::Shared;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use query::Query;
use render::{error, json};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// The admin API server.
pub struct Admin {
    shared: Arc<Shared>,
    token_sha256: [u8; 32],
    /// `admin.metrics_token`: when set, `/metrics` needs it (or the admin token).
    metrics_token_sha256: std::sync::OnceLock<[u8; 32]>,
    /// False until the ledger is restored; `/readyz` says so.
    pub ready: AtomicBool,
    process: status::Process,
    /// `admin.hosts`, `admin.metrics_public`, `admin.max_connections` (defaults when unset).
    policy: std::sync::OnceLock<gate::Policy>,
}

/// What one `serve` fixed at its start: the listener's rules, where it is bound.
struct Listening {
    policy: gate::Policy,
    metrics: gate::MetricsGate,
}

impl Admin {
    /// The API over `shared`, answering `/v1/*` only to `Authorization: Bearer <token>`.
    pub fn new(shared: Arc<Shared>, token: &str) -> Arc<Admin> {
        Arc::new(Admin {
            shared,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            metrics_token_sha256: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            process: status::Process {
                started: std::time::Instant::now(),
                proxy_listen: std::sync::OnceLock::new(),
            },
            policy: std::sync::OnceLock::new(),
        })
    }

    /// Applies `admin:`'s listener rules (accepted `Host` names, `/metrics` off loopback, the
    /// connection cap). Call before [`Admin::serve`]; the first call wins.
    pub fn configure(&self, config: &crate::config::AdminConfig) {
        let _ = self.policy.set(gate::Policy::from_config(config));
    }

    /// Requires `token` (or the admin token) for `/metrics` from now on.
    pub fn protect_metrics(&self, token: &str) {
        let _ = self
            .metrics_token_sha256
            .set(Sha256::digest(token.trim().as_bytes()).into());
    }

    /// Tells the status where the proxy listener is bound (once it is).
    pub fn proxy_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.process.proxy_listen.set(addr);
    }

    /// Serves until the task is dropped. Only requests naming this listener are answered, and
    /// at most `admin.max_connections` connections are open at once (see [`gate`]).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let policy = self.policy.get().cloned().unwrap_or_default();
        // Unknown: treated as exposed (a token needed for /metrics).
        let listen_ip = listener
            .local_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let listening = Arc::new(Listening {
            metrics: gate::MetricsGate {
                metrics_token: self.metrics_token_sha256.get().copied(),
                admin_token: self.token_sha256,
                open: policy.metrics_open_without_token(listen_ip),
            },
            policy,
        });
        let places = Arc::new(tokio::sync::Semaphore::new(
            listening.policy.max_connections,
        ));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::debug!(
                    max = listening.policy.max_connections,
                    "admin connection refused: admin.max_connections are open"
                );
                drop(stream);
                continue;
            };
            // The address this connection reached: its own name is what Host may say.
            let Ok(local) = stream.local_addr().map(|a| a.ip()) else {
                continue;
            };
            let admin = self.clone();
            let listening = listening.clone();
            tokio::spawn(async move {
                let _place = place;
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    let listening = listening.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, local, &listening).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
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
        self.presented(req)
            .is_some_and(|p| bool::from(p.ct_eq(&self.token_sha256)))
    }

    /// The sha256 of the bearer token presented, if any.
    fn presented(&self, req: &Request<Incoming>) -> Option<[u8; 32]> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        Some(Sha256::digest(token.trim().as_bytes()).into())
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        local: std::net::IpAddr,
        listening: &Listening,
    ) -> Response<Body> {
        let authority = req.uri().authority().map(|a| a.as_str());
        if !listening
            .policy
            .host_allowed(req.headers(), authority, local)
        {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "this admin listener answers only requests naming it (its address, localhost on loopback, or a name in admin.hosts): add the name you use to admin.hosts",
            );
        }
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/metrics") => {
                if !listening.metrics.allows(self.presented(&req)) {
                    let mut r = error(
                        StatusCode::UNAUTHORIZED,
                        "/metrics needs a bearer token here: the admin token, or the one of admin.metrics_token_env / metrics_token_file (or set admin.metrics_public: true to open it off loopback)",
                    );
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"l402-proxy metrics\""),
                    );
                    return r;
                }
                let mut r = Response::new(full(self.shared.metrics_text()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return r;
            }
            (&Method::GET, "/readyz") => return self.readyz(req.uri().query()),
            (&Method::GET, p) if dashboard::asset(p).is_some() => return dashboard::respond(p),
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
        let segments: Vec<String> = path
            .trim_start_matches("/v1/")
            .split('/')
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let shared = &*self.shared;
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["status"]) => status::status(shared, &self.process).await,
            (Method::GET, ["agents"]) => self.agents().await,
            (Method::POST, ["agents"]) => match read_body(req).await {
                Ok(body) => agents::create(shared, &body).await,
                Err(r) => r,
            },
            (Method::PATCH, ["agents", name]) => {
                let name = name.to_string();
                match read_body(req).await {
                    Ok(body) => agents::update(shared, &name, &body).await,
                    Err(r) => r,
                }
            }
            (Method::DELETE, ["agents", name]) => agents::delete(shared, name).await,
            (Method::POST, ["agents", name, "key"]) => agents::rotate(shared, name).await,
            (Method::POST, ["agents", name, "budget"]) => {
                let name = name.to_string();
                self.budget(&name, req).await
            }
            (Method::POST, ["agents", name, "resume"]) => fleet::resume_agent(shared, name).await,
            (Method::POST, ["pause-all"]) => match read_body(req).await {
                Ok(body) => fleet::pause_all(shared, &body).await,
                Err(r) => r,
            },
            (Method::POST, ["resume-all"]) => fleet::resume_all(shared).await,
            (Method::GET, ["payments"]) => self.payments(&req).await,
            (Method::GET, ["declines"]) => self.declines(&req).await,
            (Method::GET, ["audit"]) => self.audit(&req).await,
            (Method::GET, ["approvals"]) => approvals::list(shared).await,
            (Method::POST, ["approvals", id]) => {
                let id = id.to_string();
                match read_body(req).await {
                    Ok(body) => approvals::decide(shared, &id, &body).await,
                    Err(r) => r,
                }
            }
            (
                _,
                ["status" | "agents" | "payments" | "declines" | "audit" | "approvals" | "pause-all"
                | "resume-all", ..],
            ) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here; see docs/admin-api.md",
            ),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    async fn agents(&self) -> Response<Body> {
        let directory = self.shared.agents.load_full();
        let mut views = Vec::with_capacity(directory.len());
        for agent in directory.iter() {
            match agents::view(&self.shared, agent).await {
                Ok(view) => views.push((agent.name.to_string(), view)),
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e),
            }
        }
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let views: Vec<_> = views.into_iter().map(|(_, v)| v).collect();
        json(StatusCode::OK, &serde_json::json!({ "agents": views }))
    }

    async fn audit(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = match Query::parse(req.uri().query(), &["limit"]) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        match self.shared.ledger.audit_log(query.limit()).await {
            Ok(rows) => {
                let rows: Vec<_> = rows.iter().map(render::audit).collect();
                json(StatusCode::OK, &serde_json::json!({ "audit": rows }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    async fn payments(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = match Query::parse(
            req.uri().query(),
            &[
                "agent", "status", "host", "since", "until", "limit", "format",
            ],
        ) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let filter = PaymentFilter {
            agent: query.agent.clone(),
            state: query.status,
            host: query.host.clone(),
            since: query.since,
            until: query.until,
            limit: query.limit(),
        };
        let rows = match self.shared.ledger.payments(filter).await {
            Ok(rows) => rows,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        if query.csv || wants_csv(req) {
            return render::csv(render::payments_csv(&rows));
        }
        let rows: Vec<_> = rows.iter().map(render::payment).collect();
        json(StatusCode::OK, &serde_json::json!({ "payments": rows }))
    }

    async fn declines(&self, req: &Request<Incoming>) -> Response<Body> {
        let query = match Query::parse(req.uri().query(), &["agent", "limit", "format"]) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let filter = DeclineFilter {
            agent: query.agent.clone(),
            limit: query.limit(),
        };
        match self.shared.ledger.declines(filter).await {
            Ok(rows) if query.csv || wants_csv(req) => render::csv(render::declines_csv(&rows)),
            Ok(rows) => {
                let rows: Vec<_> = rows.iter().map(render::decline).collect();
                json(StatusCode::OK, &serde_json::json!({ "declines": rows }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }

    /// Top-up or recall: `{"total_sats": N}` sets the agent's total limit, `{"add_sats": ±N}`
    /// moves it, `{"total_sats": null}` clears the override (back to the config's value).
    /// Written to the ledger before it takes effect.
    async fn budget(&self, name: &str, req: Request<Incoming>) -> Response<Body> {
        let agents = self.shared.agents.load();
        let Some(agent) = agents.get(name).cloned() else {
            return error(StatusCode::NOT_FOUND, "no such agent");
        };
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let change = match BudgetChange::parse(&body) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let ledger = &self.shared.ledger;
        let current = match ledger.budget(&agent.name, &agent.limits).await {
            Ok(view) => view.limits.total_sats.map(Sats::get),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        let new_total =
            match change {
                BudgetChange::Set(total) => total,
                BudgetChange::Clear => None,
                BudgetChange::Add(add) => match current {
                    Some(total) => Some(total.saturating_add_signed(add)),
                    None => return error(
                        StatusCode::CONFLICT,
                        "the agent has no total limit to move; set one with {\"total_sats\": N}",
                    ),
                },
            };
        if let Err(e) = ledger
            .set_total(
                &agent.name,
                new_total.map(Msat::from_sats),
                self.shared.clock.now(),
            )
            .await
        {
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        let detail = match new_total {
            Some(total) => {
                tracing::info!(agent = %agent.name, total_sats = total, "budget changed by the operator");
                format!("total {} → {total} sats", sats_or_none(current))
            }
            None => {
                tracing::info!(agent = %agent.name, config_total_sats = ?agent.limits.total_sats, "operator override cleared; the config's total applies");
                format!(
                    "override cleared; the config's total ({}) applies",
                    sats_or_none(agent.limits.total_sats.map(Sats::get))
                )
            }
        };
        agents::record(&self.shared, "budget", &agent.name, detail).await;
        match ledger.budget(&agent.name, &agent.limits).await {
            Ok(view) => json(
                StatusCode::OK,
                &view.with_fee_reserve(self.shared.fee_reserve()),
            ),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    }
}

/// The largest admin request body (agent definitions and budget changes are small).
const MAX_BODY: usize = 16 * 1024;

/// The request's body, or the 400/413 to answer.
async fn read_body(req: Request<Incoming>) -> Result<bytes::Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body over 16 KiB",
            ))
        }
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "request body unreadable")),
    }
}

/// A path segment with `%XX` escapes decoded (agent names are plain, but clients escape).
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn sats_or_none(sats: Option<u64>) -> String {
    sats.map_or_else(|| "none".to_string(), |s| format!("{s} sats"))
}

fn wants_csv(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

/// A change to an agent's total limit.
#[derive(Debug, PartialEq, Eq)]
enum BudgetChange {
    /// `{"total_sats": N}`
    Set(Option<u64>),
    /// `{"total_sats": null}`
    Clear,
    /// `{"add_sats": ±N}`
    Add(i64),
}

impl BudgetChange {
    fn parse(body: &[u8]) -> Result<BudgetChange, String> {
        const USAGE: &str =
            "expected {\"total_sats\": N}, {\"total_sats\": null} or {\"add_sats\": N}";
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("{USAGE}: {e}"))?;
        let Some(map) = value.as_object() else {
            return Err(USAGE.into());
        };
        if map.len() != 1 {
            return Err(format!("{USAGE} (exactly one key)"));
        }
        match (map.get("total_sats"), map.get("add_sats")) {
            (Some(serde_json::Value::Null), None) => Ok(BudgetChange::Clear),
            (Some(v), None) => v
                .as_u64()
                .map(|n| BudgetChange::Set(Some(n)))
                .ok_or_else(|| {
                    format!("total_sats must be a whole number of sats or null; {USAGE}")
                }),
            (None, Some(v)) => v
                .as_i64()
                .map(BudgetChange::Add)
                .ok_or_else(|| format!("add_sats must be a whole number of sats; {USAGE}")),
            _ => Err(USAGE.into()),
        }
    }
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
    fn budget_changes_parse() {
        assert_eq!(
            BudgetChange::parse(br#"{"total_sats": 5}"#),
            Ok(BudgetChange::Set(Some(5)))
        );
        assert_eq!(
            BudgetChange::parse(br#"{"total_sats": null}"#),
            Ok(BudgetChange::Clear)
        );
        assert_eq!(
            BudgetChange::parse(br#"{"add_sats": -3}"#),
            Ok(BudgetChange::Add(-3))
        );
        assert!(BudgetChange::parse(br#"{"total_sats": 1, "add_sats": 1}"#).is_err());
        assert!(BudgetChange::parse(br#"{"total_sats": -1}"#).is_err());
        assert!(BudgetChange::parse(b"[]").is_err());
    }
}
