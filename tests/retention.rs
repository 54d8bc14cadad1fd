//! Retention on a real process: a ledger holding old payments and declines, a proxy started
//! with `store.retention`; the old rows are archived and removed in the background, and the
//! budget total read back from the file afterwards is the one before.

mod common;

use common::process::Proxy;
use l402_proxy::agents::hash_key;
use l402_proxy::config::Limits;
use l402_proxy::core::time::SystemClock;
use l402_proxy::core::{Clock, Msat, PaymentHash, Preimage};
use l402_proxy::ledger::sqlite::SqliteLedger;
use l402_proxy::ledger::{DeclineRecord, Ledger, LimitSet, NewPayment};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn total(db: &Path) -> Option<u64> {
    let (ledger, _) = SqliteLedger::open(db, Arc::new(SystemClock)).await.unwrap();
    let view = ledger.budget("alice", &Limits::NONE).await.unwrap();
    view.spent_msat.total
}

/// Waits until the SQLite file is closed (its write-ahead log removed).
async fn closed(db: &Path) {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    for _ in 0..500 {
        if !Path::new(&wal).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_retention_archives_and_removes_old_rows_and_keeps_the_total() {
    let dir = common::temp_dir("retention");
    let db = dir.join("ledger.db");
    let now = SystemClock.now();
    let old = now - 100 * 86_400;
    {
        let (ledger, _) = SqliteLedger::open(&db, Arc::new(SystemClock))
            .await
            .unwrap();
        let none = Limits::NONE;
        for i in 0..50u64 {
            let raw: [u8; 32] = rand::random();
            let hash = PaymentHash(Sha256::digest(raw).into());
            let proof = Preimage::verify(raw, &hash).unwrap();
            let p = NewPayment {
                hash,
                agent: Arc::from("alice"),
                host: "seller.example:443".into(),
                origin: "https://seller.example:443".into(),
                dialect: "l402",
                amount: Msat::new(1_000 + i),
                fee_reserve: Msat::new(100),
                bolt11: "lnbcrt…".into(),
                credential: None,
                service: Some("svc".into()),
                scope: "/".into(),
                purchase: format!("p{i}"),
                token_expires_at: None,
                created_at: old,
            };
            let limits = LimitSet {
                agent: &none,
                operator: &none,
                api_agent: false,
            };
            ledger.begin(p, limits).await.unwrap();
            ledger
                .settle(hash, Msat::new(2), &proof, old)
                .await
                .unwrap();
        }
        ledger
            .record_decline(DeclineRecord {
                agent: "alice".into(),
                host: "seller.example:443".into(),
                path: "/old".into(),
                code: "over-budget".into(),
                detail: "long ago".into(),
                amount: None,
                created_at: old,
                count: 1,
            })
            .await
            .unwrap();
    }
    closed(&db).await;
    let before = total(&db).await;
    assert_eq!(before, Some((0..50).map(|i| 1_002 + i).sum::<u64>()));
    closed(&db).await;

    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store:
  path: ledger.db
  retention: {{ payments_days: 31, declines_days: 30, archive_dir: archive, batch: 7 }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}" }}
"#,
        secret = common::SECRET,
        alice = hash_key("alice-key"),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.join("proxy.log");
    let mut proxy = Proxy::start(&config, &log, "t");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ledger retention: old rows compacted") {
            break;
        }
        assert!(Instant::now() < deadline, "no compaction logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.kill_9();

    let archived = std::fs::read_to_string(dir.join("archive").join("payments.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = archived
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 50, "{archived}");
    assert!(rows
        .iter()
        .all(|r| r["agent"] == "alice" && r["state"] == "settled"));
    let declines = std::fs::read_to_string(dir.join("archive").join("declines.jsonl")).unwrap();
    assert_eq!(declines.lines().count(), 1, "{declines}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    drop(conn);
    assert_eq!(
        total(&db).await,
        before,
        "the total limit still counts them"
    );
}
