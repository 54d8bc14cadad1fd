//! Ledger throughput with durability on (WAL, synchronous=FULL): each payment is one durable
//! `begin` (pending) and one `settle`, as on the paid path. Prints payments/s and the latency of
//! the durable pending write at several concurrency levels, group commit doing its work.
//!
//!     cargo run --release --example ledger_bench [payments]

use l402_proxy::money::{Msat, PaymentHash};
use l402_proxy::store::{NewPayment, Store};
use std::time::{Duration, Instant};

fn payment(n: u64) -> NewPayment {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    hash[8..16].copy_from_slice(&rand_u64().to_be_bytes());
    NewPayment {
        hash: PaymentHash(hash),
        agent: format!("agent{}", n % 8),
        host: "api.example.com".into(),
        origin: "https://api.example.com:443".into(),
        amount: Msat(10_000),
        fee_reserve: Msat(10_000),
        bolt11: "lnbcrt100n1…".repeat(8),
        token: "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0".repeat(3),
        services: Some("svc:0".into()),
        scope: "/svc/".into(),
        token_expires_at: None,
        created_at: 1_795_269_910,
    }
}

fn rand_u64() -> u64 {
    rand::random()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    // Beside the working directory, not /tmp: tmpfs would make fsync free and the figures lie.
    let dir = std::env::current_dir()?.join(format!(".ledger-bench-{}", rand_u64()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("ledger.db"))?;
    println!(
        "ledger: {} (WAL, synchronous=FULL), {total} payments per run",
        store.path().display()
    );
    println!(
        "{:>11} {:>14} {:>16} {:>16}",
        "concurrency", "payments/s", "pending p50 ms", "pending p99 ms"
    );
    for concurrency in [1u64, 8, 64] {
        let started = Instant::now();
        let per_task = total / concurrency;
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut waits = Vec::with_capacity(per_task as usize);
                    for i in 0..per_task {
                        let p = payment(t * 1_000_000 + i);
                        let hash = p.hash;
                        let begun = Instant::now();
                        store.begin(p).await?;
                        waits.push(begun.elapsed());
                        store
                            .settle(hash, Msat(0), "00".repeat(32), 1_795_269_911)
                            .await?;
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
            "{:>11} {:>14.0} {:>16.2} {:>16.2}",
            concurrency,
            waits.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99)
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
