//! Durable webhook deliveries: an alert waiting for a webhook that is down survives a crash of
//! the proxy (a real process, killed) and is delivered once, with its id, by the next run; two
//! replicas sharing one PostgreSQL ledger deliver each event once.

mod common;

use common::pg_server::PgServer;
use common::process::Proxy;
use common::webhooks::{alerts_yaml, secret_var, Receiver, SECRET};
use l402_proxy::agents::hash_key;
use l402_proxy::alerts::{Alerts, DeliveryOptions, Event, EventFilter, Webhook};
use l402_proxy::config::{PostgresConfig, PostgresTls};
use l402_proxy::core::time::SystemClock;
use l402_proxy::ledger::postgres::PostgresLedger;
use l402_proxy::ledger::Ledger;
use l402_proxy::metrics::Metrics;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The deliveries waiting in the SQLite ledger's outbox: (id, event, attempts).
fn outbox_rows(db: &Path) -> Vec<(String, String, i64, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = conn
        .prepare("SELECT id, event, attempts, state FROM outbox ORDER BY created_at_ms")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn wait_for_log(log: &Path, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The issue's case on a real process: `wallet.low` is emitted at start while the webhook is
/// down; the first attempt fails; the proxy is killed (SIGKILL); the webhook comes up; the next
/// run delivers the waiting event exactly once, with the id it was queued with, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_for_a_down_webhook_survives_a_crash_and_arrives_once() {
    let dir = common::temp_dir("outbox-restart");
    let hook = closed_port();
    let var = secret_var();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store: {{ path: ledger.db }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}" }}
{alerts}"#,
        secret = common::SECRET,
        alice = hash_key("alice-key"),
        alerts = alerts_yaml(
            &format!("http://{hook}/hook"),
            &var,
            "[\"wallet.low\"]",
            "  wallet_low_sats: 1000000000000\n",
        ),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.join("proxy.log");

    let mut first = Proxy::start(&config, &log, "t");
    wait_for_log(
        &log,
        "alert delivery failed; will retry",
        Duration::from_secs(20),
    );
    first.kill_9();
    let waiting = outbox_rows(&dir.join("ledger.db"));
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let (id, event, attempts, state) = waiting[0].clone();
    assert_eq!((event.as_str(), state.as_str()), ("wallet.low", "queued"));
    assert!(attempts >= 1, "the first run tried: {attempts}");

    let receiver = Receiver::start_at(hook).await;
    let _second = Proxy::start(&config, &log, "t");
    // The second run announces its own low balance too (a new event, a new id).
    let got = receiver
        .wait_for("wallet.low", 2, Duration::from_secs(20))
        .await;
    // Give a duplicate every chance to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = receiver.deliveries();
    assert!(got.len() >= 2, "{all:?}");
    assert!(
        all.iter().all(|d| d.signed),
        "every delivery signed with {SECRET:?}"
    );
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for d in &all {
        *per_id
            .entry(d.body["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_id.get(&id),
        Some(&1),
        "the waiting delivery arrives once, with its id: {per_id:?}"
    );
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    assert_eq!(per_id.len(), 2);
}

/// Two replicas sharing one PostgreSQL ledger, the webhook down while 40 events are emitted
/// (half by each): when it comes up, every event arrives exactly once, whichever replica
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_deliver_each_event_once() {
    let db = PgServer::start();
    let pg = PostgresConfig {
        url_env: None,
        url_file: None,
        tls: Some(PostgresTls::Disable),
        ca_file: None,
        pool_size: 4,
    };
    let hook = closed_port();
    let webhook =
        || Webhook::new(&format!("http://{hook}/hook"), SECRET, EventFilter::all()).unwrap();
    let options = DeliveryOptions {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(200),
        max_attempts: 1000,
        timeout: Duration::from_secs(2),
        ..DeliveryOptions::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let ledger: Arc<dyn Ledger> = Arc::new(
            PostgresLedger::open(db.url(), &pg, Arc::new(SystemClock))
                .await
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let alerts = Alerts::start_with(
            vec![webhook()],
            metrics.clone(),
            Arc::new(SystemClock),
            options,
        );
        alerts.use_ledger(ledger.clone());
        replicas.push((ledger, alerts, metrics));
    }
    for i in 0..40u64 {
        replicas[(i % 2) as usize].1.emit(Event::WalletLow {
            backend: "dev".into(),
            balance_msat: i,
            threshold_msat: 1_000,
        });
    }
    // Both replicas try (and fail) while the webhook is down.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let receiver = Receiver::start_at(hook).await;
    let got = receiver
        .wait_for("wallet.low", 40, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.of("wallet.low");
    assert!(got.len() >= 40, "{}", got.len());
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut balances = Vec::new();
    for body in &all {
        *per_id
            .entry(body["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        balances.push(body["balance_msat"].as_u64().unwrap());
    }
    assert_eq!(per_id.len(), 40, "{per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "each event once: {per_id:?}"
    );
    balances.sort_unstable();
    assert_eq!(balances, (0..40).collect::<Vec<_>>());
    let delivered: u64 = replicas
        .iter()
        .map(|(_, _, m)| {
            let text = m.render();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("l402_proxy_webhook_deliveries_total{result=\"delivered\"} ")
                })
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(delivered, 40, "counted once across the replicas");
}

/// The same on real processes: two `l402-proxy run` replicas sharing one PostgreSQL ledger, each
/// announcing its low balance while the webhook is down; a third event waits from a replica
/// that was killed. When the webhook comes up, every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_processes_on_one_postgres_deliver_each_waiting_event_once() {
    let dir = common::temp_dir("outbox-replicas");
    let db = PgServer::start();
    let hook = closed_port();
    let var = secret_var();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store:
  backend: postgres
  postgres: {{ url_env: L402_STORE_URL, tls: disable }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}" }}
{alerts}"#,
        secret = common::SECRET,
        alice = hash_key("alice-key"),
        alerts = alerts_yaml(
            &format!("http://{hook}/hook"),
            &var,
            "[\"wallet.low\"]",
            "  wallet_low_sats: 1000000000000\n",
        ),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let env = [("L402_STORE_URL", db.url())];
    let log = |n: usize| dir.join(format!("replica{n}.log"));
    // The first replica creates the CA; the others reuse it.
    let mut gone = Proxy::start_with(&config, &log(0), "t", &[], &env);
    wait_for_log(
        &log(0),
        "alert delivery failed; will retry",
        Duration::from_secs(20),
    );
    gone.kill_9();
    let a = Proxy::start_with(&config, &log(1), "t", &[], &env);
    let b = Proxy::start_with(&config, &log(2), "t", &[], &env);
    for n in [1, 2] {
        wait_for_log(
            &log(n),
            "alert delivery failed; will retry",
            Duration::from_secs(20),
        );
    }
    let receiver = Receiver::start_at(hook).await;
    let got = receiver
        .wait_for("wallet.low", 3, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = receiver.of("wallet.low");
    assert!(got.len() >= 3, "{all:?}");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for body in &all {
        *per_id
            .entry(body["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 3, "{per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "each event once: {per_id:?}"
    );
    drop((a, b));
}

fn dropped(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("l402_proxy_webhook_deliveries_total{result=\"dropped\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The outbox is bounded: with `max_pending` 3 and the webhook down, ten events leave three
/// deliveries waiting (the newest) and seven counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_at_most_max_pending_and_counts_the_rest_dropped() {
    let dir = common::temp_dir("outbox-cap");
    let db = dir.join("ledger.db");
    let (ledger, _) = l402_proxy::ledger::sqlite::SqliteLedger::open(&db, Arc::new(SystemClock))
        .await
        .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    let hook = closed_port();
    let metrics = Arc::new(Metrics::new());
    let alerts = Alerts::start_with(
        vec![Webhook::new(&format!("http://{hook}/hook"), SECRET, EventFilter::all()).unwrap()],
        metrics.clone(),
        Arc::new(SystemClock),
        DeliveryOptions {
            max_pending: 3,
            base_delay: Duration::from_secs(60),
            ..DeliveryOptions::default()
        },
    );
    alerts.use_ledger(ledger.clone());
    for i in 0..10u64 {
        alerts.emit(Event::WalletLow {
            backend: "dev".into(),
            balance_msat: i,
            threshold_msat: 1_000,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped(&metrics) < 7 {
        assert!(Instant::now() < deadline, "{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alerts.flush(Duration::from_secs(5)).await);
    let waiting = ledger
        .claim_deliveries(
            &[
                Webhook::new(&format!("http://{hook}/hook"), SECRET, EventFilter::all())
                    .unwrap()
                    .key(),
            ],
            "test",
            i64::MAX / 2,
            1,
            100,
        )
        .await
        .unwrap();
    let mut balances: Vec<u64> = waiting
        .iter()
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["balance_msat"]
                .as_u64()
                .unwrap()
        })
        .collect();
    balances.sort_unstable();
    assert_eq!(balances, [7, 8, 9], "the newest wait");
    assert_eq!(dropped(&metrics), 7);
}
