//! Alert webhooks over real HTTP on 127.0.0.1: signed delivery, retries with the same id, a
//! webhook that is down and comes back, per-webhook event filters, and a hanging webhook that
//! must not hold up another. Receivers are tiny HTTP/1.1 servers written here.

use l402_proxy::alerts::{
    verify, Alerts, DeliveryOptions, Event, EventFilter, Scope, Webhook, DELIVERY_RESULTS,
};
use l402_proxy::core::time::ManualClock;
use l402_proxy::core::Clock;
use l402_proxy::metrics::Metrics;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NOW: i64 = 1_796_083_200;
const SECRET: &[u8] = b"whsec_integration";

/// One request a receiver saw.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

#[derive(Clone)]
enum Mode {
    /// Answer these statuses in order, then 200 for ever.
    Script(Vec<u16>),
    /// Read the request, record it, never answer.
    Hang,
}

struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::on(listener, mode)
    }

    fn on(listener: TcpListener, mode: Mode) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let record = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, answered, mode) = (record.clone(), answered.clone(), mode.clone());
                tokio::spawn(serve(stream, record, answered, mode));
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook?via=test", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

/// Reads one request (head and Content-Length body), records it, answers per `mode`, closes.
async fn serve(
    mut stream: TcpStream,
    record: Arc<Mutex<Vec<Received>>>,
    answered: Arc<AtomicUsize>,
    mode: Mode,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_string();
    let path = start.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    record.lock().expect("lock").push(Received {
        method,
        path,
        headers,
        body,
    });
    let status = match &mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Mode::Script(statuses) => {
            let n = answered.fetch_add(1, Ordering::SeqCst);
            statuses.get(n).copied().unwrap_or(200)
        }
    };
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn webhook(url: &str, events: &[&str]) -> Webhook {
    let filter = EventFilter::new(events.iter().map(|s| s.to_string()).collect()).expect("filter");
    Webhook::new(url, SECRET, filter).expect("webhook")
}

fn fast() -> DeliveryOptions {
    DeliveryOptions {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        ..DeliveryOptions::default()
    }
}

fn start(webhooks: Vec<Webhook>, options: DeliveryOptions) -> (Arc<Alerts>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
    (
        Alerts::start_with(webhooks, metrics.clone(), clock, options),
        metrics,
    )
}

fn deliveries(metrics: &Metrics, result: &str) -> u64 {
    let prefix = format!("l402_proxy_webhook_deliveries_total{{result=\"{result}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {prefix}"))
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wallet_low() -> Event {
    Event::WalletLow {
        backend: "dev".into(),
        balance_msat: 9_000_000,
        threshold_msat: 10_000_000,
    }
}

fn threshold() -> Event {
    Event::BudgetThreshold {
        scope: Scope::Agent,
        agent: Some("research".into()),
        limit: "daily".into(),
        percent: 80,
        spent_msat: 8_000,
        limit_msat: 10_000,
        window_start: Some(NOW - 3600),
    }
}

#[tokio::test]
async fn an_event_is_delivered_once_signed_with_its_headers() {
    let rx = Receiver::start(Mode::Script(vec![])).await;
    let (alerts, metrics) = start(vec![webhook(&rx.url(), &["*"])], fast());
    alerts.emit(wallet_low());
    assert!(alerts.flush(Duration::from_secs(5)).await, "delivered");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "exactly once: {got:?}");
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hook?via=test")
    );
    let signature = &r.headers["x-l402-signature"];
    assert!(signature.starts_with("sha256="), "{signature}");
    assert!(verify(SECRET, &r.body, signature), "signature checks");
    assert!(!verify(b"another secret", &r.body, signature));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.headers["user-agent"],
        format!("l402-proxy/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.headers["x-l402-event"], "wallet.low");
    let body = r.json();
    assert_eq!(body["event"], "wallet.low");
    assert_eq!(body["at"], NOW);
    assert_eq!(body["at_rfc3339"], "2026-12-01T00:00:00Z");
    assert_eq!(body["backend"], "dev");
    assert_eq!(body["balance_msat"], 9_000_000);
    assert_eq!(body["threshold_msat"], 10_000_000);
    assert!(body.get("agent").is_none(), "no agent on a wallet event");
    assert_eq!(body["id"].as_str().map(str::len), Some(32));
    assert_eq!(deliveries(&metrics, "delivered"), 1);
    for r in ["retried", "failed", "dropped"] {
        assert_eq!(deliveries(&metrics, r), 0, "{r}");
    }
    assert!(metrics
        .render()
        .contains("l402_proxy_alerts_total{event=\"wallet.low\"} 1"));
    assert_eq!(DELIVERY_RESULTS.len(), 4);
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_id() {
    let rx = Receiver::start(Mode::Script(vec![500, 500])).await;
    let (alerts, metrics) = start(vec![webhook(&rx.url(), &["*"])], fast());
    alerts.emit(threshold());
    wait_until("three attempts", Duration::from_secs(5), || {
        rx.got().len() >= 3
    })
    .await;
    wait_until("the delivered count", Duration::from_secs(5), || {
        deliveries(&metrics, "delivered") == 1
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 3);
    let ids: Vec<Value> = got.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "same bytes every time"
    );
    assert!(got
        .iter()
        .all(|r| verify(SECRET, &r.body, &r.headers["x-l402-signature"])));
    assert_eq!(got[0].json()["agent"], "research");
    assert_eq!(deliveries(&metrics, "retried"), 2);
    assert_eq!(deliveries(&metrics, "failed"), 0);
    assert!(alerts.flush(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_webhook_that_is_down_gets_the_event_when_it_comes_up() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let options = DeliveryOptions {
        max_pending: 100,
        ..fast()
    };
    let (alerts, metrics) = start(vec![webhook(&url, &["*"])], options);
    alerts.emit(wallet_low());

    let started = Instant::now();
    for _ in 0..1000 {
        alerts.emit(threshold());
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(50), "emit waited: {took:?}");
    assert_eq!(
        deliveries(&metrics, "dropped"),
        901,
        "bounded at 100 pending"
    );

    wait_until("failed attempts", Duration::from_secs(5), || {
        deliveries(&metrics, "retried") >= 100
    })
    .await;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind the port");
    let rx = Receiver::on(listener, Mode::Script(vec![]));
    wait_until("the first event", Duration::from_secs(10), || {
        rx.got()
            .iter()
            .any(|r| r.headers["x-l402-event"] == "wallet.low")
    })
    .await;
    assert!(
        alerts.flush(Duration::from_secs(10)).await,
        "all 100 delivered"
    );
    assert_eq!(rx.got().len(), 100);
    assert_eq!(deliveries(&metrics, "delivered"), 100);
    assert_eq!(deliveries(&metrics, "failed"), 0);
}

#[tokio::test]
async fn each_webhook_gets_only_the_events_it_asked_for() {
    let budget = Receiver::start(Mode::Script(vec![])).await;
    let ops = Receiver::start(Mode::Script(vec![])).await;
    let (alerts, metrics) = start(
        vec![
            webhook(&budget.url(), &["budget.*"]),
            webhook(&ops.url(), &["wallet.low", "store.*"]),
        ],
        fast(),
    );
    alerts.emit(threshold());
    alerts.emit(wallet_low());
    alerts.emit(Event::StoreRecovered {
        backend: "sqlite".into(),
    });
    alerts.emit(Event::PriceJump {
        agent: "research".into(),
        host: "api.example".into(),
        service: "api.example/v1".into(),
        last_msat: 1000,
        new_msat: 3000,
        increase_pct: 200,
        limit_pct: 50,
    });
    assert!(alerts.flush(Duration::from_secs(5)).await);
    let names = |rx: &Receiver| {
        let mut n: Vec<String> = rx
            .got()
            .iter()
            .map(|r| r.headers["x-l402-event"].clone())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&budget), ["budget.threshold"]);
    assert_eq!(names(&ops), ["store.recovered", "wallet.low"]);
    assert_eq!(deliveries(&metrics, "delivered"), 3);
    assert!(metrics
        .render()
        .contains("l402_proxy_alerts_total{event=\"price.jump\"} 1"));
}

#[tokio::test]
async fn a_hanging_webhook_does_not_delay_another() {
    let hang = Receiver::start(Mode::Hang).await;
    let good = Receiver::start(Mode::Script(vec![])).await;
    let (alerts, metrics) = start(
        vec![webhook(&hang.url(), &["*"]), webhook(&good.url(), &["*"])],
        fast(),
    );
    let started = Instant::now();
    for _ in 0..10 {
        alerts.emit(wallet_low());
    }
    wait_until("ten deliveries", Duration::from_secs(3), || {
        good.got().len() == 10
    })
    .await;
    // The hanging one holds its requests open (10 s timeout each) meanwhile.
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_until(
        "the hanging webhook to be tried",
        Duration::from_secs(3),
        || !hang.got().is_empty(),
    )
    .await;
    wait_until("the delivered count", Duration::from_secs(3), || {
        deliveries(&metrics, "delivered") == 10
    })
    .await;
    assert!(
        !alerts.flush(Duration::from_millis(50)).await,
        "hung ones pending"
    );
}
