//! The `l402-proxy run` process killed mid-payment and reloaded with SIGHUP: the ledger and the
//! (journaled) dev wallet on disk, a real seller and curl on 127.0.0.1.

mod common;

use l402_proxy::agents::hash_key;
use l402_proxy::demo::mint::DevInvoiceMinter;
use l402_proxy::demo::seller::{self, RunningSeller, Seller, SellerConfig};
use l402_proxy::invoice::Network;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "restart-admin-token";

use common::process::Proxy;

fn write_config(dir: &Path, seller: &RunningSeller, alice_limits: &str, carol: bool) -> PathBuf {
    let carol = if carol {
        format!(
            "  - {{ name: carol, key_sha256: \"{}\" }}\n",
            hash_key("carol-key")
        )
    } else {
        String::new()
    };
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
guard: {{ allow: ["127.0.0.1:{http}"] }}
wallet:
  backend: dev
  network: regtest
  dev: {{ secret: {secret}, pay_delay_ms: 2500, state_file: wallet.jsonl }}
store: {{ path: ledger.db }}
agents:
  - {{ name: alice, key_sha256: "{alice}", limits: {alice_limits} }}
{carol}"#,
        http = seller.http.port(),
        secret = common::SECRET,
        alice = hash_key("alice-key"),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start_seller() -> RunningSeller {
    let config = SellerConfig::new(DevInvoiceMinter::new(common::SECRET, Network::Regtest));
    seller::start(Seller::new(config), IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap()
}

/// (payment_hash, status) rows of the ledger, read as an operator would with sqlite.
fn ledger(dir: &Path) -> Vec<(String, String)> {
    let Ok(db) = rusqlite::Connection::open(dir.join("ledger.db")) else {
        return Vec::new();
    };
    let Ok(mut st) = db.prepare("SELECT payment_hash, status FROM payments ORDER BY created_at")
    else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn journal_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("wallet.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn curl_via(proxy: &Proxy, creds: (&str, &str), url: &str) -> common::Reply {
    common::curl(&["--proxy".to_string(), proxy.url(creds), url.to_string()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_pending_and_settled_is_reconciled_without_paying_twice() {
    let dir = common::temp_dir("kill9");
    let seller = start_seller().await;
    let config = write_config(&dir, &seller, "{}", false);
    let log = dir.join("proxy.log");
    let url = format!("http://127.0.0.1:{}/weather/today", seller.http.port());

    let mut proxy = Proxy::start(&config, &log, TOKEN);
    let agent = tokio::spawn({
        let args = vec![
            "--proxy".to_string(),
            proxy.url(("alice", "alice-key")),
            url.clone(),
        ];
        async move { common::curl(&args).await }
    });
    // The wallet has the payment (it left) while the proxy still waits for it to settle.
    wait_for("the payment to leave", || journal_lines(&dir) == 1).await;
    let rows = ledger(&dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1, "pending",
        "the pending record was durable before the wallet was called"
    );
    proxy.child.kill().unwrap(); // SIGKILL
    proxy.child.wait().unwrap();
    let cut = agent.await.unwrap();
    assert_ne!(
        cut.status, 200,
        "the agent's connection died with the proxy"
    );

    let proxy = Proxy::start(&config, &log, TOKEN);
    wait_for("the payment to be reconciled as settled", || {
        ledger(&dir).first().map(|r| r.1.as_str()) == Some("settled")
    })
    .await;
    let again = curl_via(&proxy, ("alice", "alice-key"), &url).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert!(
        !again.paid(),
        "the token rebuilt from the ledger is used; nothing is paid again"
    );
    assert_eq!(
        journal_lines(&dir),
        1,
        "exactly one payment left the wallet"
    );
    assert_eq!(ledger(&dir).len(), 1);
    assert_eq!(seller.seller.paid_count(), 1);
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_agents_and_limits_keeping_spend_and_tokens() {
    let dir = common::temp_dir("hup");
    let seller = start_seller().await;
    let config = write_config(&dir, &seller, "{ per_request_sats: 1000 }", false);
    let proxy = Proxy::start(&config, &dir.join("proxy.log"), TOKEN);
    let weather = format!("http://127.0.0.1:{}/weather/a", seller.http.port());
    let stocks = format!("http://127.0.0.1:{}/stocks/a", seller.http.port());
    assert!(curl_via(&proxy, ("alice", "alice-key"), &weather)
        .await
        .paid());
    assert_eq!(
        curl_via(&proxy, ("carol", "carol-key"), &weather)
            .await
            .status,
        407
    );

    write_config(&dir, &seller, "{ daily_sats: 5 }", true);
    proxy.signal("HUP");
    let agents_url = format!("http://127.0.0.1:{}/v1/agents", proxy.admin);
    let admin_get = || {
        let args = vec![
            "-H".to_string(),
            format!("Authorization: Bearer {TOKEN}"),
            agents_url.clone(),
        ];
        async move { common::curl(&args).await }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = admin_get().await.body;
        if body.contains("\"daily_sats\": 5") && body.contains("carol") {
            assert!(
                body.contains("\"total\": 10000"),
                "spend kept across the reload: {body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "reload not applied: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let over = curl_via(&proxy, ("alice", "alice-key"), &stocks).await;
    assert_eq!(over.decline(), Some("over-daily-limit"));
    let cached = curl_via(&proxy, ("alice", "alice-key"), &weather).await;
    assert_eq!(cached.status, 200);
    assert!(!cached.paid(), "tokens kept across the reload");
    let carol = curl_via(
        &proxy,
        ("carol", "carol-key"),
        &format!("http://127.0.0.1:{}/free/x", seller.http.port()),
    )
    .await;
    assert_eq!(
        carol.status, 200,
        "a new agent is admitted without a restart"
    );

    // A broken config is refused and the running one kept.
    std::fs::write(dir.join("config.yaml"), "listen: [not, an, address]\n").unwrap();
    proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(admin_get().await.body.contains("carol"));
    assert_eq!(
        curl_via(&proxy, ("alice", "alice-key"), &weather)
            .await
            .status,
        200
    );
    drop(proxy);
    let log = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(!log.contains("alice-key"), "secrets never logged");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_payment_finish_then_exits_cleanly() {
    let dir = common::temp_dir("term");
    let seller = start_seller().await;
    let config = write_config(&dir, &seller, "{}", false);
    let log = dir.join("proxy.log");
    let mut proxy = Proxy::start_with(&config, &log, TOKEN, &["--log-format", "json"], &[]);
    let url = format!("http://127.0.0.1:{}/weather/today", seller.http.port());
    let agent = tokio::spawn({
        let args = vec![
            "--proxy".to_string(),
            proxy.url(("alice", "alice-key")),
            url,
        ];
        async move { common::curl(&args).await }
    });
    wait_for("the payment to leave", || journal_lines(&dir) == 1).await;
    proxy.signal("TERM");
    let reply = agent.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "the request in flight completes: {reply:?}"
    );
    assert!(reply.paid());
    let status = tokio::task::spawn_blocking(move || proxy.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit 0 after draining");
    assert_eq!(
        ledger(&dir)[0].1,
        "settled",
        "the ledger was flushed before exit"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(text.contains("shutting down") && text.contains("stopped"));
    let _ = std::fs::remove_dir_all(dir);
}
