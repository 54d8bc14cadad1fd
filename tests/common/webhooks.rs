//! A webhook receiver on 127.0.0.1 for the guardrail tests: records every delivery, checks its
//! `X-L402-Signature` against the secret, and can be told to fail or be down.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signing secret the tests configure.
pub const SECRET: &str = "whsec-guardrails-test";

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The body, parsed.
    pub body: Value,
    /// Whether `X-L402-Signature` matched the body under [`SECRET`].
    pub signed: bool,
    /// `X-L402-Event`.
    pub event_header: String,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener)
    }

    /// Listens on `addr` (a receiver coming back where it was).
    pub async fn start_at(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Receiver::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (g, st) = (got.clone(), status.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (g, st) = (g.clone(), st.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (g, st) = (g.clone(), st.clone());
                        async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let signature = header("x-l402-signature");
                            let event_header = header("x-l402-event");
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let signed =
                                l402_proxy::alerts::verify(SECRET.as_bytes(), &body, &signature);
                            let code = st.load(Ordering::SeqCst);
                            if code == 200 {
                                g.lock().unwrap().push(Delivery {
                                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                    signed,
                                    event_header,
                                });
                            }
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            got,
            status,
            task,
        }
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers `code` from now on (deliveries answered otherwise than 200 are not recorded).
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The deliveries of one event.
    pub fn of(&self, event: &str) -> Vec<Value> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.body["event"] == event)
            .map(|d| d.body)
            .collect()
    }

    /// Waits (up to `within`) until `n` deliveries of `event` arrived; returns them.
    pub async fn wait_for(&self, event: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let got = self.of(event);
            if got.len() >= n || std::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops listening (the port is closed: the webhook is down).
    pub fn stop(self) -> SocketAddr {
        self.task.abort();
        self.addr
    }
}

/// The `alerts:` config section for one webhook at `url` with the test secret in `var`.
pub fn alerts_yaml(url: &str, var: &str, events: &str, extra: &str) -> String {
    format!(
        "alerts:\n  webhooks:\n    - {{ url: \"{url}\", secret_env: {var}, events: {events} }}\n{extra}"
    )
}

/// Sets a fresh environment variable holding [`SECRET`]; returns its name.
pub fn secret_var() -> String {
    let var = format!("L402_TEST_WEBHOOK_SECRET_{}", rand::random::<u32>());
    // SAFETY (edition 2021: a safe fn): a unique variable, set before the proxy reads it.
    std::env::set_var(&var, SECRET);
    var
}
