//! Several `l402-proxy run` processes sharing one PostgreSQL ledger (a throw-away cluster started
//! by the test, 127.0.0.1 only): one budget, one purchase per agent and service, tokens shared,
//! a killed replica's payment finished by a survivor, and the database going away and coming
//! back. The budget tests pay through a real LNbits; the crash test through the dev wallet's
//! shared state file (a simulated node both replicas use), whose payments take long enough to
//! kill a replica mid-payment.

mod common;

use common::lnbits::{lnbits, TestWallet};
use common::pg_server::PgServer;
use common::process::Proxy;
use l402_proxy::agents::hash_key;
use l402_proxy::core::Msat;
use l402_proxy::demo::mint::DevInvoiceMinter;
use l402_proxy::demo::seller::{self, InvoiceSource, RunningSeller, Seller, SellerConfig};
use l402_proxy::invoice::Network;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "replicas-admin-token";

/// Everything the replicas share: the database, the seller, the CA, one config.
struct Cluster {
    dir: common::TempDir,
    config: PathBuf,
    seller: RunningSeller,
    db: PgServer,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// The seller (its invoices from `invoices`), the database, and a config written for
    /// `wallet_yaml`.
    async fn new(
        tag: &str,
        invoices: InvoiceSource,
        network: Network,
        wallet_yaml: &str,
    ) -> Cluster {
        let dir = common::temp_dir(tag);
        let db = PgServer::start();
        let mut config = SellerConfig::new(DevInvoiceMinter::new(common::SECRET, network));
        config.invoices = invoices;
        config.price = Msat::from_sats(10);
        let seller = seller::start(Seller::new(config), IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .unwrap();
        let yaml = format!(
            r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
guard: {{ allow: ["127.0.0.1:{http}"] }}
wallet: {wallet_yaml}
store:
  backend: postgres
  postgres: {{ url_env: L402_STORE_URL, tls: disable }}
shutdown_grace_secs: 1
agents:
  - {{ name: racer, key_sha256: "{racer}", limits: {{ total_sats: 100 }} }}
  - {{ name: daily, key_sha256: "{daily}", limits: {{ daily_sats: 50 }} }}
  - {{ name: solo, key_sha256: "{solo}" }}
"#,
            http = seller.http.port(),
            racer = hash_key("racer-key"),
            daily = hash_key("daily-key"),
            solo = hash_key("solo-key"),
        );
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let env = vec![("L402_STORE_URL".to_string(), db.url().to_string())];
        let cluster = Cluster {
            dir,
            config,
            seller,
            db,
            env,
        };
        // One CA for every replica, created before any starts (as the chart's Secret would be).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_l402-proxy"))
            .args(["ca", "export", "--config"])
            .arg(&cluster.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn with_env(mut self, key: &str, value: &str) -> Cluster {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn replica(&self, n: usize) -> Proxy {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Proxy::start_with(
            &self.config,
            &self.dir.join(format!("replica-{n}.log")),
            TOKEN,
            &[],
            &env,
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.seller.http.port())
    }
}

fn addr(p: &Proxy) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p.port))
}

async fn get(p: &Proxy, agent: &str, url: &str) -> common::Reply {
    let key = format!("{agent}-key");
    common::proxied(
        addr(p),
        (agent, &key),
        http::Method::GET,
        url,
        bytes::Bytes::new(),
    )
    .await
}

async fn admin(p: &Proxy, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "-X".to_string(),
        method.to_string(),
        "-H".into(),
        format!("Authorization: Bearer {TOKEN}"),
    ];
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            b.into(),
        ]);
    }
    args.push(format!("http://127.0.0.1:{}{path}", p.admin));
    let reply = common::curl(&args).await;
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", reply.body))
}

async fn spent(p: &Proxy, agent: &str) -> u64 {
    let v = admin(p, "GET", "/v1/agents", None).await;
    v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == agent)
        .unwrap_or_else(|| panic!("{agent} in {v}"))["spent_msat"]["total"]
        .as_u64()
        .unwrap()
}

/// Fires `n` requests of `agent` at once, round-robin over the replicas; returns the replies.
async fn storm(
    replicas: &[Proxy],
    agent: &'static str,
    n: usize,
    url: impl Fn(usize) -> String,
) -> Vec<common::Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let to = addr(&replicas[i % replicas.len()]);
            let url = url(i);
            tokio::spawn(async move {
                let key = format!("{agent}-key");
                common::proxied(
                    to,
                    (agent, &key),
                    http::Method::GET,
                    &url,
                    bytes::Bytes::new(),
                )
                .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget_one_purchase_and_their_tokens() {
    let Some(l) = lnbits(false) else { return };
    let payer = TestWallet::new(&l.first, 2_000).await;
    let var = format!("L402_TEST_LNBITS_KEY_{}", rand::random::<u32>());
    let cluster = Cluster::new(
        "replicas",
        InvoiceSource::Lnbits(Box::new(l.first.seller_invoices())),
        Network::Bitcoin,
        &format!(
            "{{ backend: lnbits, network: bitcoin, max_fee_sats: 0, lnbits: {{ url: '{}', admin_key_env: {var} }} }}",
            payer.url
        ),
    )
    .await
    .with_env(&var, &payer.admin);
    let replicas: Vec<Proxy> = (0..3).map(|n| cluster.replica(n)).collect();
    let before = payer.balance_msat().await;

    // One total budget, hammered through all three replicas at once: spend == limit.
    let replies = storm(&replicas, "racer", 30, |i| cluster.url(&format!("/r{i}/x"))).await;
    let paid = replies.iter().filter(|r| r.paid()).count();
    let declined: Vec<_> = replies.iter().filter_map(|r| r.decline()).collect();
    assert_eq!(paid, 10, "100 sat of 10-sat services");
    assert_eq!(declined.len(), 20);
    assert!(
        declined.iter().all(|d| *d == "over-total-limit"),
        "{declined:?}"
    );
    for r in &replicas {
        assert_eq!(
            spent(r, "racer").await,
            100_000,
            "every replica sees the one budget"
        );
    }
    // A daily window, likewise.
    let replies = storm(&replicas, "daily", 12, |i| cluster.url(&format!("/d{i}/x"))).await;
    assert_eq!(replies.iter().filter(|r| r.paid()).count(), 5);
    assert!(replies
        .iter()
        .filter_map(|r| r.decline())
        .all(|d| d == "over-daily-limit"));
    assert_eq!(
        payer.balance_msat().await,
        before - 150_000,
        "exactly what the budgets allow"
    );

    // A top-up through one replica is spendable through another at once.
    let v = admin(
        &replicas[0],
        "POST",
        "/v1/agents/racer/budget",
        Some(r#"{"add_sats": 20}"#),
    )
    .await;
    assert_eq!(v["limits"]["total_sats"], 120, "{v}");
    let after_topup = storm(&replicas[1..2], "racer", 3, |i| {
        cluster.url(&format!("/t{i}/x"))
    })
    .await;
    assert_eq!(after_topup.iter().filter(|r| r.paid()).count(), 2);

    // One agent, sixty concurrent requests for one unpaid service over three replicas: one
    // payment, the others wait for the token and use it.
    let paid_before = cluster.seller.seller.paid_count();
    let balance = payer.balance_msat().await;
    let replies = storm(&replicas, "solo", 60, |_| cluster.url("/solo/x")).await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().find(|r| r.status != 200)
    );
    assert_eq!(replies.iter().filter(|r| r.paid()).count(), 1);
    assert_eq!(cluster.seller.seller.paid_count(), paid_before + 1);
    assert_eq!(payer.balance_msat().await, balance - 10_000);
    // The token bought through one replica serves through every replica.
    for r in &replicas {
        let again = get(r, "solo", &cluster.url("/solo/y")).await;
        assert_eq!(again.status, 200);
        assert!(!again.paid(), "{again:?}");
    }
    assert_eq!(payer.balance_msat().await, balance - 10_000);
    // The ledger on every replica is the one ledger.
    let rows = admin(&replicas[2], "GET", "/v1/payments?agent=solo", None).await;
    assert_eq!(rows["payments"].as_array().unwrap().len(), 1);

    // An agent made through one replica's API works through every replica; a pause or a
    // deletion through another replica reaches them all.
    let made = admin(
        &replicas[0],
        "POST",
        "/v1/agents",
        Some(r#"{"name": "fleet", "limits": {"total_sats": 100}}"#),
    )
    .await;
    let key = made["key"].as_str().expect("key").to_string();
    let through = |p: &Proxy, path: &str| {
        let (to, url, key) = (addr(p), cluster.url(path), key.clone());
        async move {
            common::proxied(
                to,
                ("fleet", &key),
                http::Method::GET,
                &url,
                bytes::Bytes::new(),
            )
            .await
        }
    };
    let paid = eventually(|| through(&replicas[2], "/fleet/x"), |r| r.status == 200).await;
    assert!(paid.paid(), "{paid:?}");
    let cached = eventually(|| through(&replicas[1], "/fleet/y"), |r| r.status == 200).await;
    assert!(
        !cached.paid(),
        "the token serves on every replica: {cached:?}"
    );
    admin(
        &replicas[1],
        "PATCH",
        "/v1/agents/fleet",
        Some(r#"{"paused": true}"#),
    )
    .await;
    let paused = eventually(
        || through(&replicas[0], "/fleet2/x"),
        |r| r.decline() == Some("agent-paused"),
    )
    .await;
    assert_eq!(paused.status, 402);
    let r = common::curl(&[
        "-X".into(),
        "DELETE".into(),
        "-H".into(),
        format!("Authorization: Bearer {TOKEN}"),
        format!("http://127.0.0.1:{}/v1/agents/fleet", replicas[2].admin),
    ])
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    for p in &replicas {
        eventually(|| through(p, "/fleet/x"), |r| r.status == 407).await;
    }
    let audit = admin(&replicas[0], "GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["agent"] == "fleet")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["agent.delete", "agent.update", "agent.create"]);
}

/// Calls `f` until `done` holds for its answer (changes reach other replicas by NOTIFY, within
/// moments); fails after 5 s with the last answer.
async fn eventually<F, Fut>(f: F, done: impl Fn(&common::Reply) -> bool) -> common::Reply
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = common::Reply>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = f().await;
        if done(&r) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The journaled dev wallet's settled payments for a hash (the simulated node's record).
fn journal_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("wallet.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_payment_is_finished_by_a_survivor_without_paying_twice() {
    let minter = DevInvoiceMinter::new(common::SECRET, Network::Regtest);
    let cluster = Cluster::new(
        "replica-kill",
        InvoiceSource::Dev(minter),
        Network::Regtest,
        &format!(
            "{{ backend: dev, network: regtest, max_fee_sats: 0, dev: {{ secret: {}, pay_delay_ms: 3000, state_file: wallet.jsonl }} }}",
            common::SECRET
        ),
    )
    .await;
    let mut doomed = cluster.replica(0);
    let survivor = cluster.replica(1);
    let url = cluster.url("/crash/x");
    let to = addr(&doomed);
    let asking = tokio::spawn(async move {
        common::proxied(
            to,
            ("solo", "solo-key"),
            http::Method::GET,
            &url,
            bytes::Bytes::new(),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal_lines(&cluster.dir) == 0 {
        assert!(Instant::now() < deadline, "the payment never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill_9();
    let _ = asking.await;
    // The survivor sees the pending payment, waits for the dead replica's heartbeat to go stale,
    // takes it over, and the wallet says it settled: the token is the survivor's to use.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin(&survivor, "GET", "/v1/payments?agent=solo", None).await;
        let rows = rows["payments"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 1, "{rows:?}");
        if rows[0]["status"] == "settled" {
            break;
        }
        assert!(Instant::now() < deadline, "not reconciled: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = get(&survivor, "solo", &cluster.url("/crash/y")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert!(!again.paid(), "the reconciled token serves: {again:?}");
    assert_eq!(journal_lines(&cluster.dir), 1, "paid exactly once");
    assert_eq!(spent(&survivor, "solo").await, 10_000, "spend exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_closed_and_coming_back_resumes_payments() {
    let minter = DevInvoiceMinter::new(common::SECRET, Network::Regtest);
    let mut cluster = Cluster::new(
        "replica-db",
        InvoiceSource::Dev(minter),
        Network::Regtest,
        &format!(
            "{{ backend: dev, network: regtest, max_fee_sats: 0, dev: {{ secret: {} }} }}",
            common::SECRET
        ),
    )
    .await;
    let replicas: Vec<Proxy> = (0..2).map(|n| cluster.replica(n)).collect();
    let bought = get(&replicas[0], "solo", &cluster.url("/kept/x")).await;
    assert!(bought.paid(), "{bought:?}");
    let seen = get(&replicas[1], "solo", &cluster.url("/kept/x")).await;
    assert!(!seen.paid() && seen.status == 200, "{seen:?}");

    cluster.db.stop();
    let started = Instant::now();
    let refused = get(&replicas[0], "solo", &cluster.url("/new/x")).await;
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.decline(), Some("store-unavailable"), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Pass-through traffic and requests on cached tokens keep working, on both replicas.
    for r in &replicas {
        assert_eq!(get(r, "solo", &cluster.url("/free/x")).await.status, 200);
        let cached = get(r, "solo", &cluster.url("/kept/z")).await;
        assert_eq!(cached.status, 200, "{cached:?}");
        assert!(!cached.paid());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readyz = common::curl(&[format!("http://127.0.0.1:{}/readyz", replicas[1].admin)]).await;
    assert_eq!(readyz.status, 200);
    assert!(readyz.body.contains("unavailable"), "{}", readyz.body);
    let strict = common::curl(&[format!(
        "http://127.0.0.1:{}/readyz?strict",
        replicas[1].admin
    )])
    .await;
    assert_eq!(strict.status, 503);
    let metrics = common::curl(&[format!("http://127.0.0.1:{}/metrics", replicas[1].admin)]).await;
    assert!(
        metrics.body.contains("l402_proxy_store_up 0"),
        "{}",
        metrics.body
    );

    cluster.db.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&replicas[1], "solo", &cluster.url("/new/x")).await;
        if r.paid() {
            break;
        }
        assert!(Instant::now() < deadline, "payments did not resume: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
