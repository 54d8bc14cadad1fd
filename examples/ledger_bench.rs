//! Ledger throughput with durability on: each payment is one durable `begin` (claim + reserve +
//! pending) and one `settle`, as on the paid path. Prints payments/s and the latency of the
//! durable begin at several concurrency levels, group commit doing its work.
//!
//!     cargo run --release --example ledger_bench [payments]

use l402_proxy::config::Limits;
use l402_proxy::core::time::SystemClock;
use l402_proxy::core::{Msat, PaymentHash, Preimage};
use l402_proxy::ledger::sqlite::SqliteLedger;
use l402_proxy::ledger::{Ledger, LimitSet, NewPayment};
use l402_proxy::pay::dialect::StoredCredential;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A payment with a fresh random preimage, and that preimage verified.
fn payment(n: u64) -> (NewPayment, Preimage) {
    let raw: [u8; 32] = rand::random();
    let hash = PaymentHash(Sha256::digest(raw).into());
    let proof = Preimage::verify(raw, &hash).expect("sha256 of itself");
    let p = NewPayment {
        hash,
        agent: Arc::from(format!("agent{}", n % 8)),
        host: "api.example.com:443".into(),
        origin: "https://api.example.com:443".into(),
        dialect: "l402",
        amount: Msat(10_000),
        fee_reserve: Msat(10_000),
        bolt11: "lnbcrt100n1…".repeat(8),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0".repeat(3),
        }),
        service: Some("svc:0".into()),
        scope: "/svc/".into(),
        token_expires_at: None,
        created_at: 1_795_269_910,
    };
    (p, proof)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    // Beside the working directory, not /tmp: tmpfs would make fsync free and the figures lie.
    let dir = std::env::current_dir()?.join(format!(".ledger-bench-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ledger.db");
    let (ledger, _) = SqliteLedger::open(&path, Arc::new(SystemClock)).await?;
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    println!(
        "ledger: sqlite {} (WAL, synchronous=FULL), {total} payments per run",
        path.display()
    );
    run(ledger, total).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Begins and settles `total` payments at concurrency 1, 8 and 64; prints one row each.
async fn run(ledger: Arc<dyn Ledger>, total: u64) -> anyhow::Result<()> {
    println!(
        "{:>11} {:>14} {:>14} {:>14}",
        "concurrency", "payments/s", "begin p50 ms", "begin p99 ms"
    );
    for concurrency in [1u64, 8, 64] {
        let started = Instant::now();
        let per_task = total / concurrency;
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let limits = Limits::default();
                    let mut waits = Vec::with_capacity(per_task as usize);
                    for i in 0..per_task {
                        let (p, proof) = payment(t * 1_000_000 + i);
                        let hash = p.hash;
                        let begun = Instant::now();
                        ledger
                            .begin(
                                p,
                                LimitSet {
                                    agent: &limits,
                                    operator: &limits,
                                },
                            )
                            .await
                            .map_err(|d| anyhow::anyhow!("{d}"))?;
                        waits.push(begun.elapsed());
                        ledger.settle(hash, Msat(0), &proof, 1_795_269_911).await?;
                    }
                    Ok::<_, anyhow::Error>(waits)
                })
            })
            .collect();
        let mut waits: Vec<Duration> = Vec::new();
        for t in tasks {
            waits.extend(t.await??);
        }
        let elapsed = started.elapsed();
        waits.sort();
        let pct = |p: f64| {
            waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)].as_secs_f64() * 1e3
        };
        println!(
            "{:>11} {:>14.0} {:>14.2} {:>14.2}",
            concurrency,
            waits.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(())
}
