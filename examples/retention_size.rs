//! The SQLite ledger's size before and after retention: N payments made as on the paid path
//! (begin + settle, an L402 token that has expired since, an invoice, a service), all older
//! than the retention, then compacted in batches with an archive; prints both file sizes, the
//! archive's size, and the budget total before and after (which must be equal).
//!
//!     cargo run --release --example retention_size -- [payments] [--dir DIR]
//!
//! The file is measured closed (its write-ahead log checkpointed), in a fresh directory under
//! `--dir` (default: the working directory), removed afterwards.

use clap::Parser;
use l402_proxy::config::Limits;
use l402_proxy::core::time::ManualClock;
use l402_proxy::core::{Msat, PaymentHash, Preimage};
use l402_proxy::ledger::retention::{compact_all, Policy};
use l402_proxy::ledger::sqlite::SqliteLedger;
use l402_proxy::ledger::{Archive, Ledger, LimitSet, NewPayment};
use l402_proxy::pay::dialect::StoredCredential;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(about = "SQLite ledger size before and after retention compaction")]
struct Args {
    /// Payments to make.
    #[arg(default_value_t = 20_000)]
    payments: u64,
    /// Where the fresh directory goes.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Now, for the ledger: payments are made 60 days before it.
const NOW: i64 = 1_797_422_400;
const AGE: i64 = 60 * 86_400;

fn payment(n: u64) -> (NewPayment, Preimage) {
    let raw: [u8; 32] = rand::random();
    let hash = PaymentHash(Sha256::digest(raw).into());
    let proof = Preimage::verify(raw, &hash).expect("sha256 of itself");
    let created_at = NOW - AGE + (n as i64 % 86_400);
    let p = NewPayment {
        hash,
        agent: Arc::from(format!("agent{}", n % 8)),
        host: "api.example.com:443".into(),
        origin: "https://api.example.com:443".into(),
        dialect: "l402",
        amount: Msat::new(10_000),
        fee_reserve: Msat::new(10_000),
        bolt11: "lnbcrt100n1…".repeat(8),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0".repeat(3),
        }),
        service: Some(format!("svc:{}", n % 4)),
        scope: "/svc/".into(),
        purchase: format!("svc:{n}"),
        token_expires_at: Some((created_at + 3_600) as u64),
        created_at,
    };
    (p, proof)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn total(ledger: &SqliteLedger) -> u64 {
    ledger
        .operator_budget(&Limits::NONE)
        .await
        .expect("budget")
        .spent_msat
        .total
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let base = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let dir = base.join(format!("retention-size-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("a fresh directory");
    let db = dir.join("ledger.db");
    let clock = Arc::new(ManualClock::new(NOW));
    let (ledger, _) = SqliteLedger::open(&db, clock.clone()).await.expect("opens");
    let ledger = Arc::new(ledger);
    let workers: Vec<_> = (0..64u64)
        .map(|w| {
            let ledger = ledger.clone();
            let n = args.payments;
            tokio::spawn(async move {
                let none = Limits::NONE;
                let mut i = w;
                while i < n {
                    let (p, proof) = payment(i);
                    let limits = LimitSet {
                        agent: &none,
                        operator: &none,
                        api_agent: false,
                    };
                    ledger.begin(p, limits).await.expect("begin");
                    ledger
                        .settle(proof.hash(), Msat::new(3), &proof, NOW - AGE)
                        .await
                        .expect("settle");
                    i += 64;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    drop(ledger);
    let before = size(&db);
    let (ledger, _) = SqliteLedger::open(&db, clock.clone())
        .await
        .expect("reopens");
    let total_before = total(&ledger).await;
    let policy = Policy {
        payments_days: Some(31),
        declines_days: Some(30),
        archive: Some(Archive::new(dir.join("archive"))),
        batch: 500,
    };
    let started = std::time::Instant::now();
    let done = compact_all(&ledger, &policy, NOW).await.expect("compacts");
    let took = started.elapsed();
    drop(ledger);
    let after = size(&db);
    let (ledger, _) = SqliteLedger::open(&db, clock).await.expect("reopens");
    let total_after = total(&ledger).await;
    drop(ledger);
    let archive = size(&dir.join("archive").join("payments.jsonl"));
    println!(
        "{} payments: ledger {} ({} B/payment) before, {} after compaction of {} rows in {:.1}s; \
         archive {}; budget total {} msat before, {} after",
        args.payments,
        mib(before),
        before / args.payments.max(1),
        mib(after),
        done.payments,
        took.as_secs_f64(),
        mib(archive),
        total_before,
        total_after,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(total_before, total_after, "compaction changed the budget");
}
