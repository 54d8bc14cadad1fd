//! A policy service (`policy_hook`) on 127.0.0.1 for the tests: records every request,
//! checks its `X-L402-Signature` with the alert webhooks' own verifier, and answers as told
//! (a decision, garbage, a status, too slowly) — or is down.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signing secret the tests configure.
pub const SECRET: &str = "whsec-policy-hook-test";

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with this JSON body.
    Json(Value),
    /// 200 with this raw body.
    Raw(&'static str),
    /// This status, empty body.
    Status(u16),
    /// Waits this long, then allows.
    Sleep(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub body: Value,
    pub signed: bool,
    pub event: String,
}

/// A running policy service.
pub struct PolicyService {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
    /// Every connection's task: stopping closes them too (a pooled keep-alive connection
    /// would otherwise still be served).
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl PolicyService {
    pub async fn start() -> PolicyService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Json(json!({"decision": "allow"}))));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), calls.clone());
        let connections = Arc::new(Mutex::new(Vec::new()));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, c) = (m.clone(), c.clone());
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (m, c) = (m.clone(), c.clone());
                        async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let (signature, event) =
                                (header("x-l402-signature"), header("x-l402-event"));
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            c.lock().unwrap().push(Call {
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                signed: l402_proxy::alerts::verify(
                                    SECRET.as_bytes(),
                                    &body,
                                    &signature,
                                ),
                                event,
                            });
                            let mode = m.lock().unwrap().clone();
                            let (status, out) = match mode {
                                Mode::Json(v) => (200, v.to_string()),
                                Mode::Raw(s) => (200, s.to_string()),
                                Mode::Status(code) => (code, String::new()),
                                Mode::Sleep(d) => {
                                    tokio::time::sleep(d).await;
                                    (200, json!({"decision": "allow"}).to_string())
                                }
                            };
                            let mut r = http::Response::new(Full::new(Bytes::from(out)));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                conns.lock().unwrap().push(connection.abort_handle());
            }
        });
        PolicyService {
            addr,
            mode,
            calls,
            task,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/decide?k=1", self.addr)
    }

    pub fn answer(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Stops listening and closes every open connection: the service is down.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// The `policy_hook:` section for `url`, the secret in a fresh environment variable.
pub fn hook_yaml(url: &str, extra: &str) -> String {
    let var = format!("L402_TEST_POLICY_SECRET_{}", rand::random::<u32>());
    // SAFETY (edition 2021: a safe fn): a unique variable, set before the proxy reads it.
    std::env::set_var(&var, SECRET);
    format!("policy_hook: {{ url: \"{url}\", secret_env: {var}{extra} }}\n")
}
