//! Ledger throughput with durability on: each payment is one durable `begin` (claim + reserve +
//! pending) and one `settle`, as on the paid path. Prints payments/s and the latency of the
//! durable begin at several concurrency levels, for the SQLite ledger and the PostgreSQL one
//! measured in the same run (interleaved: at each concurrency SQLite, then PostgreSQL).
//!
//!     cargo run --release --example ledger_bench -- [payments] [--store sqlite|postgres|both]
//!         [--concurrency 1,8,64] [--pg-pool 8] [--dir DIR] [--postgres-url URL]
//!
//! SQLite: a fresh file (WAL, synchronous=FULL). PostgreSQL: a throw-away cluster of its own
//! (initdb + postgres, as user `postgres` when root, on 127.0.0.1 and a free port; fsync and
//! synchronous_commit on), reached over TCP through the ledger's own pool, as the proxy does.
//! Both live in a fresh directory under `--dir` (default: the working directory, not /tmp,
//! which may be a tmpfs where fsync is free), removed afterwards.

#[path = "support/pg_cluster.rs"]
mod pg_cluster;

use clap::{Parser, ValueEnum};
use l402_proxy::config::{Limits, PostgresConfig};
use l402_proxy::core::time::SystemClock;
use l402_proxy::core::{Msat, PaymentHash, Preimage};
use l402_proxy::ledger::postgres::PostgresLedger;
use l402_proxy::ledger::sqlite::SqliteLedger;
use l402_proxy::ledger::{Ledger, LimitSet, NewPayment};
use l402_proxy::pay::dialect::StoredCredential;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "durable ledger throughput (begin + settle per payment), SQLite and PostgreSQL")]
struct Args {
    /// Payments per run (one run per store and concurrency).
    #[arg(default_value_t = 2000)]
    payments: u64,
    /// Which ledgers. Default: both when PostgreSQL server binaries are installed (or
    /// --postgres-url is given), else sqlite.
    #[arg(long, value_enum)]
    store: Option<Store>,
    /// Concurrent payers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<u64>,
    /// A run also ends after this many seconds (payers start no new payment past it); its
    /// payments/s then counts the payments done by then.
    #[arg(long, default_value_t = 30.0)]
    max_secs: f64,
    /// PostgreSQL pool size (store.postgres.pool_size; default: the proxy's default).
    #[arg(long)]
    pg_pool: Option<usize>,
    /// Where the SQLite file and the PostgreSQL cluster go (a fresh subdirectory, removed
    /// afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Use this (throw-away!) database instead of starting a cluster: the ledger's tables are
    /// created in it and filled with benchmark payments.
    #[arg(long)]
    postgres_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Store {
    Sqlite,
    Postgres,
    Both,
}

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
        amount: Msat::new(10_000),
        fee_reserve: Msat::new(10_000),
        bolt11: "lnbcrt100n1…".repeat(8),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "AgEEbHNhdAJCAAAwpHpumws6ufQoDwiTLNcge0QPUIWA0".repeat(3),
        }),
        service: Some("svc:0".into()),
        scope: "/svc/".into(),
        // Each payment its own purchase: the bench measures begin + settle, not waiting.
        purchase: format!("svc:{n}"),
        token_expires_at: None,
        created_at: 1_795_269_910,
    };
    (p, proof)
}

/// One measured run.
struct Row {
    store: &'static str,
    concurrency: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Payments tried.
    attempted: u64,
    /// Whether the time limit ended the run before every payment was tried.
    capped: bool,
    /// Payments whose begin or settle failed (not counted in payments/s).
    errors: u64,
    first_error: Option<String>,
}

/// What one payer saw.
#[derive(Default)]
struct TaskRun {
    /// Durations of the begins that succeeded.
    waits: Vec<Duration>,
    /// Payments tried.
    attempted: u64,
    /// Payments begun and settled.
    done: u64,
    errors: u64,
    first_error: Option<String>,
}

impl TaskRun {
    fn failed(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c >= 1),
        "--concurrency: one or more whole numbers ≥ 1"
    );
    anyhow::ensure!(args.payments >= 1, "payments: at least 1");
    let bin = pg_cluster::bin_dir();
    let pg_possible = args.postgres_url.is_some() || bin.is_some();
    let store = match args.store {
        Some(s) => s,
        None if pg_possible => Store::Both,
        None => {
            println!(
                "note: PostgreSQL skipped: no server binaries (initdb, postgres) under \
                 /usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql), \
                 and no --postgres-url; measuring SQLite only"
            );
            Store::Sqlite
        }
    };
    if store != Store::Sqlite && !pg_possible {
        anyhow::bail!(
            "--store {store:?}: no PostgreSQL server binaries (initdb, postgres) under \
             /usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql); \
             install them or pass --postgres-url"
        );
    }

    // Beside the working directory, not /tmp: tmpfs would make fsync free and the figures lie.
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    let dir = base.join(format!(".ledger-bench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let outcome = tokio::select! {
        r = bench(&args, store, bin, &dir) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn bench(
    args: &Args,
    store: Store,
    bin: Option<PathBuf>,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(fs) = filesystem(dir) {
        if fs == "tmpfs" || fs == "ramfs" {
            println!(
                "warning: {} is on {fs}: fsync costs nothing there, the figures flatter both \
                 stores (pass --dir on a disk)",
                dir.display()
            );
        }
    }
    let mut ledgers: Vec<(&'static str, Arc<dyn Ledger>)> = Vec::new();
    let mut cluster = None;
    if store != Store::Postgres {
        let path = dir.join("ledger.db");
        let (ledger, _) = SqliteLedger::open(&path, Arc::new(SystemClock)).await?;
        println!("sqlite:   {} (WAL, synchronous=FULL)", path.display());
        ledgers.push(("sqlite", Arc::new(ledger)));
    }
    if store != Store::Sqlite {
        let url = match (&args.postgres_url, &bin) {
            (Some(url), _) => url.clone(),
            (None, Some(bin)) => {
                let c = pg_cluster::PgCluster::start(bin, &dir.join("pg"))?;
                let url = c.url().to_string();
                println!(
                    "postgres: throw-away cluster {} ({}; fsync, synchronous_commit on), {url}",
                    dir.join("pg").display(),
                    bin.display()
                );
                cluster = Some(c);
                url
            }
            (None, None) => unreachable!("checked in main"),
        };
        let mut yaml = "tls: disable\n".to_string();
        if let Some(n) = args.pg_pool {
            yaml.push_str(&format!("pool_size: {n}\n"));
        }
        let config: PostgresConfig = serde_yaml_ng::from_str(&yaml)?;
        let ledger = PostgresLedger::open(&url, &config, Arc::new(SystemClock))
            .await
            .map_err(|e| anyhow::anyhow!("PostgreSQL ledger at {url}: {e}"))?;
        if args.postgres_url.is_some() {
            println!("postgres: {url}");
        }
        println!(
            "postgres: pool of {} connections (store.postgres.pool_size)",
            config.pool_size
        );
        ledgers.push(("postgres", Arc::new(ledger)));
    }
    println!(
        "{} payments per run, each one durable begin + one settle; runs interleaved by concurrency",
        args.payments
    );

    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        for (name, ledger) in &ledgers {
            let limit = Duration::from_secs_f64(args.max_secs);
            let row = run(name, ledger.clone(), args.payments, concurrency, limit).await?;
            eprintln!(
                "[ledger_bench] {name} c={concurrency}: {:.0} payments/s",
                row.per_sec
            );
            rows.push(row);
        }
    }
    // Stop the ledgers' background tasks before their server goes.
    drop(ledgers);
    drop(cluster);

    println!();
    println!(
        "{:<9} {:>11} {:>11} {:>13} {:>13} {:>9} {:>7}",
        "store", "concurrency", "payments/s", "begin p50 ms", "begin p99 ms", "payments", "errors"
    );
    rows.sort_by_key(|r| r.store != "sqlite");
    for r in &rows {
        let tried = format!("{}{}", r.attempted, if r.capped { "*" } else { "" });
        println!(
            "{:<9} {:>11} {:>11.0} {:>13.2} {:>13.2} {:>9} {:>7}",
            r.store, r.concurrency, r.per_sec, r.p50_ms, r.p99_ms, tried, r.errors
        );
    }
    if rows.iter().any(|r| r.capped) {
        println!(
            "* the run reached --max-secs {} before all {} payments were tried",
            args.max_secs, args.payments
        );
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.errors > 0).collect();
    if !failed.is_empty() {
        println!();
        println!("errors (payments failed, not counted in payments/s; the first of each run):");
        for r in failed {
            let first = r.first_error.as_deref().unwrap_or("?").replace('\n', " / ");
            println!(
                "  {} c={}: {} of {}: {first}",
                r.store, r.concurrency, r.errors, r.attempted
            );
        }
    }
    Ok(())
}

/// The filesystem type of `dir` (`stat -f`), when it can be told.
fn filesystem(dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Begins and settles `total` payments (rounded down to a multiple of `concurrency`) with
/// `concurrency` payers, each paying one after the other, for at most `limit`.
async fn run(
    store: &'static str,
    ledger: Arc<dyn Ledger>,
    total: u64,
    concurrency: u64,
    limit: Duration,
) -> anyhow::Result<Row> {
    let per_task = (total / concurrency).max(1);
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let limits = Limits::default();
                let mut run = TaskRun {
                    waits: Vec::with_capacity(per_task as usize),
                    ..TaskRun::default()
                };
                for i in 0..per_task {
                    if Instant::now() >= deadline {
                        break;
                    }
                    run.attempted += 1;
                    let (p, proof) = payment(t * 1_000_000 + i);
                    let hash = p.hash;
                    let begun = Instant::now();
                    let limits = LimitSet {
                        agent: &limits,
                        operator: &limits,
                        api_agent: false,
                    };
                    if let Err(d) = ledger.begin(p, limits).await {
                        run.failed(format!("begin: {d}"));
                        continue;
                    }
                    run.waits.push(begun.elapsed());
                    match ledger
                        .settle(hash, Msat::new(0), &proof, 1_795_269_911)
                        .await
                    {
                        Ok(()) => run.done += 1,
                        Err(e) => run.failed(format!("settle: {e}")),
                    }
                }
                run
            })
        })
        .collect();
    let mut all = TaskRun::default();
    for t in tasks {
        let run = t.await?;
        all.waits.extend(run.waits);
        all.done += run.done;
        all.attempted += run.attempted;
        all.errors += run.errors;
        all.first_error = all.first_error.or(run.first_error);
    }
    let elapsed = started.elapsed();
    let mut waits = all.waits;
    waits.sort();
    let pct = |p: f64| match waits.len() {
        0 => f64::NAN,
        n => waits[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3,
    };
    Ok(Row {
        store,
        concurrency,
        per_sec: all.done as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        attempted: all.attempted,
        capped: all.attempted < per_task * concurrency,
        errors: all.errors,
        first_error: all.first_error,
    })
}
