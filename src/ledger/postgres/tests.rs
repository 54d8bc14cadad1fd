//! The shared ledger against a real PostgreSQL server; two `PostgresLedger`s on one database
//! stand for two replicas.

#[path = "../../../tests/common/pg_server.rs"]
mod pg_server;

use super::*;
use crate::config::PostgresTls;
use crate::core::time::ManualClock;
use crate::pay::dialect::StoredCredential;
use pg_server::PgServer;
use sha2::{Digest, Sha256};

fn config() -> PostgresConfig {
    PostgresConfig {
        url_env: None,
        url_file: None,
        tls: Some(PostgresTls::Disable),
        ca_file: None,
        pool_size: 8,
    }
}

async fn replica(server: &PgServer, clock: &Arc<ManualClock>) -> PostgresLedger {
    PostgresLedger::open(server.url(), &config(), clock.clone())
        .await
        .expect("the ledger opens")
}

fn now() -> i64 {
    crate::core::time::SystemClock.now()
}

fn proof(seed: u32) -> Preimage {
    let mut raw = [0u8; 32];
    raw[..4].copy_from_slice(&seed.to_be_bytes());
    raw[4..12].copy_from_slice(&rand::random::<u64>().to_be_bytes());
    Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap()
}

fn payment(p: &Preimage, agent: &str, service: &str, at: i64) -> NewPayment {
    NewPayment {
        hash: p.hash(),
        agent: Arc::from(agent),
        host: "h:443".into(),
        origin: "https://h:443".into(),
        dialect: "l402",
        amount: Msat::new(10_000),
        fee_reserve: Msat::new(1000),
        bolt11: "lnbcrt…".into(),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "tok".into(),
        }),
        service: Some(service.into()),
        scope: "/s/".into(),
        purchase: format!("={}", p.hash().to_hex()),
        token_expires_at: None,
        created_at: at,
    }
}

static NONE: Limits = Limits::NONE;

fn no_limits() -> LimitSet<'static> {
    LimitSet {
        agent: &NONE,
        operator: &NONE,
        api_agent: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget_exactly_and_never_begin_a_hash_twice() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let (a, b) = (
        Arc::new(replica(&server, &clock).await),
        Arc::new(replica(&server, &clock).await),
    );
    let tight = Limits {
        total_sats: Some(100.into()),
        daily_sats: Some(1000.into()),
        ..Limits::default()
    };
    let operator = Limits {
        daily_sats: Some(1_000.into()),
        ..Limits::default()
    };
    let tasks: Vec<_> = (0..40u32)
        .map(|n| {
            let ledger = if n % 2 == 0 { a.clone() } else { b.clone() };
            let (tight, operator) = (tight.clone(), operator.clone());
            tokio::spawn(async move {
                let p = proof(n);
                let r = ledger
                    .begin(
                        payment(&p, "racer", &format!("s{n}"), now()),
                        LimitSet {
                            agent: &tight,
                            operator: &operator,
                            api_agent: false,
                        },
                    )
                    .await;
                (r, p)
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(Begun::Fresh), p) => fresh.push(p),
            (Err(d), _) => assert_eq!(d.code(), "over-total-limit"),
            (other, _) => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh.len(), 9, "11 sat each (amount + reserve) against 100");
    let view = a.budget("racer", &tight).await.unwrap();
    assert_eq!(view.spent_msat.total, Some(99_000));
    // The same hash, through the other replica: never begun twice.
    assert_eq!(
        b.begin(payment(&fresh[0], "racer", "s0", now()), no_limits())
            .await,
        Ok(Begun::InFlight)
    );
    // Settling gives the unused reserve back, on every replica's view.
    for p in &fresh {
        a.settle(p.hash(), Msat::new(0), p, now()).await.unwrap();
    }
    assert_eq!(
        b.budget("racer", &tight).await.unwrap().spent_msat.total,
        Some(90_000)
    );
    assert!(matches!(
        b.begin(payment(&fresh[1], "racer", "s1", now()), no_limits())
            .await,
        Ok(Begun::Settled { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_releases_and_may_be_retried_and_overrides_are_shared() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let (a, b) = (
        replica(&server, &clock).await,
        replica(&server, &clock).await,
    );
    let limits = Limits {
        total_sats: Some(20.into()),
        ..Limits::default()
    };
    let l = LimitSet {
        agent: &limits,
        operator: &NONE,
        api_agent: false,
    };
    let p = proof(1);
    assert_eq!(
        a.begin(payment(&p, "x", "s", now()), l).await,
        Ok(Begun::Fresh)
    );
    a.fail(p.hash(), "no route", now()).await.unwrap();
    assert_eq!(
        b.budget("x", &limits).await.unwrap().spent_msat.total,
        Some(0)
    );
    assert_eq!(
        b.begin(payment(&p, "x", "s", now()), l).await,
        Ok(Begun::Fresh)
    );
    // A top-up on one replica is in force on the other at once.
    let q = proof(2);
    assert_eq!(
        a.begin(payment(&q, "x", "t", now()), l)
            .await
            .unwrap_err()
            .code(),
        "over-total-limit"
    );
    b.set_total("x", Some(Msat::from_sats(30)), now())
        .await
        .unwrap();
    assert_eq!(
        a.begin(payment(&q, "x", "t", now()), l).await,
        Ok(Begun::Fresh)
    );
    assert_eq!(
        a.budget("x", &limits)
            .await
            .unwrap()
            .limit_sources
            .total_sats,
        Some(crate::budget::LimitSource::Admin)
    );
    b.set_total("x", None, now()).await.unwrap();
    assert_eq!(
        a.budget("x", &limits).await.unwrap().limits.total_sats,
        Some(20.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_holder_at_a_time_and_a_dead_holders_payments_are_taken_over() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let a = replica(&server, &clock).await;
    let b = replica(&server, &clock).await;
    let flight = Flight {
        agent: "x",
        origin: "https://h:443",
        service: "s",
    };
    let ttl = Duration::from_secs(60);
    assert!(a.lease(&flight, ttl).await.unwrap());
    assert!(
        a.lease(&flight, ttl).await.unwrap(),
        "renewable by its holder"
    );
    assert!(
        !b.lease(&flight, ttl).await.unwrap(),
        "one holder at a time"
    );
    a.release_lease(&flight).await.unwrap();
    assert!(b.lease(&flight, ttl).await.unwrap());
    b.release_lease(&flight).await.unwrap();
    // A pending payment for the flight keeps the lease from anyone until it is resolved.
    let p = proof(3);
    assert!(a.lease(&flight, ttl).await.unwrap());
    a.begin(payment(&p, "x", "s", now()), no_limits())
        .await
        .unwrap();
    assert!(
        b.unresolved().await.unwrap().is_empty(),
        "a live replica's payment is its own"
    );
    // Replica a dies mid-payment (its heartbeat stops).
    drop(a);
    assert!(
        !b.lease(&flight, ttl).await.unwrap(),
        "its payment may still settle"
    );
    tokio::time::sleep(Duration::from_secs(STALE_AFTER_SECS as u64 + 2)).await;
    let taken = b.unresolved().await.unwrap();
    assert_eq!(
        taken.len(),
        1,
        "the survivor takes the orphaned payment over"
    );
    assert_eq!(taken[0].hash, p.hash());
    b.settle(p.hash(), Msat::new(0), &p, now()).await.unwrap();
    let found = b
        .find_token("x", "https://h:443", Some("s"), "/s/", now() as u64)
        .await
        .unwrap()
        .expect("its token is there for the survivor");
    assert_eq!(found.proof, p);
    assert!(b.lease(&flight, ttl).await.unwrap(), "free once resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_gives_the_holders_lease_back_in_the_same_commit() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let a = replica(&server, &clock).await;
    let b = replica(&server, &clock).await;
    let flight = Flight {
        agent: "x",
        origin: "https://h:443",
        service: "s",
    };
    let other = Flight {
        service: "t",
        ..flight
    };
    let ttl = Duration::from_secs(60);
    assert!(a.lease(&flight, ttl).await.unwrap());
    assert!(a.lease(&other, ttl).await.unwrap());
    let p = proof(21);
    a.begin(payment(&p, "x", "s", now()), no_limits())
        .await
        .unwrap();
    assert!(!b.lease(&flight, ttl).await.unwrap(), "held and pending");
    a.settle(p.hash(), Msat::new(0), &p, now()).await.unwrap();
    assert!(
        b.find_token("x", "https://h:443", Some("s"), "/s/", now() as u64)
            .await
            .unwrap()
            .is_some(),
        "the token is there"
    );
    assert!(
        b.lease(&flight, ttl).await.unwrap(),
        "the settle let the flight's lease go"
    );
    assert!(
        !b.lease(&other, ttl).await.unwrap(),
        "a lease on another flight is untouched"
    );
    // Settling again (reconciliation after a lost answer) takes nothing from the new holder.
    a.settle(p.hash(), Msat::new(0), &p, now()).await.unwrap();
    assert!(!a.lease(&flight, ttl).await.unwrap(), "b still holds it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stored_by_one_replica_reach_the_others() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let a = replica(&server, &clock).await;
    let b = replica(&server, &clock).await;
    let mut feed = b.token_feed().expect("a shared ledger has a token feed");
    let mut own_feed = a.token_feed().expect("a shared ledger has a token feed");
    tokio::time::sleep(Duration::from_millis(300)).await; // LISTEN is in place
    let p = proof(4);
    a.begin(payment(&p, "x", "s", now()), no_limits())
        .await
        .unwrap();
    a.settle(p.hash(), Msat::new(2), &p, now()).await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("announced within seconds")
        .expect("feed open");
    assert_eq!(token.proof, p);
    assert_eq!(token.agent, "x");
    assert_eq!(token.service.as_deref(), Some("s"));
    // The settling replica has its token already: its own notification is not read back.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), own_feed.recv())
            .await
            .is_err(),
        "no echo of a replica's own token"
    );
    assert!(a.own_settles.lock().is_empty(), "the mark is gone with it");
    assert_eq!(b.live_tokens(now() as u64).await.unwrap().len(), 1);
    b.retire_token(p.hash()).await.unwrap();
    assert!(a.live_tokens(now() as u64).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_closed_and_payments_resume_when_it_is_back() {
    let mut server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let a = replica(&server, &clock).await;
    assert!(a.available());
    server.stop();
    let started = std::time::Instant::now();
    let refused = a
        .begin(payment(&proof(5), "x", "s", now()), no_limits())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "store-unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refused within seconds, not hung: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a.available(), "the health check noticed");
    server.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match a
            .begin(payment(&proof(6), "x", "s", now()), no_limits())
            .await
        {
            Ok(Begun::Fresh) => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "payments did not resume: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once_and_declines_fold() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url().to_string();
            let clock = clock.clone();
            tokio::spawn(async move { PostgresLedger::open(&url, &config(), clock).await })
        })
        .collect();
    let mut ledgers = Vec::new();
    for o in opens {
        ledgers.push(o.await.unwrap().expect("every replica opens"));
    }
    let d = |at| DeclineRecord {
        agent: "x".into(),
        host: "h:443".into(),
        path: "/p".into(),
        code: "over-daily-limit".into(),
        detail: "why".into(),
        amount: Some(Msat::new(1000)),
        created_at: at,
        count: 1,
    };
    let t = now();
    for n in 0..50 {
        ledgers[n % 4].record_decline(d(t)).await.unwrap();
    }
    let rows = ledgers[0]
        .declines(DeclineFilter {
            agent: Some("x".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 50);
    assert!(rows.len() <= 2, "folded: {rows:?}");
}

/// Begins and settles racing on two replicas lock the usage rows in one order: none waits on
/// another in a cycle (a deadlock would surface as a lock or pool timeout here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_begins_and_settles_never_deadlock() {
    let server = PgServer::start();
    let clock = Arc::new(ManualClock::new(now()));
    let a = Arc::new(replica(&server, &clock).await);
    let b = Arc::new(replica(&server, &clock).await);
    let operator = Limits {
        daily_sats: Some(1_000_000.into()),
        ..Limits::NONE
    };
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let operator = operator.clone();
            tokio::spawn(async move {
                let agent = ["x", "y", "z"][i as usize % 3];
                for round in 0..5u32 {
                    let p = proof(i * 100 + round);
                    let begun = ledger
                        .begin(
                            payment(&p, agent, &format!("s{i}-{round}"), now()),
                            LimitSet {
                                agent: &Limits::NONE,
                                operator: &operator,
                                api_agent: false,
                            },
                        )
                        .await;
                    assert!(matches!(begun, Ok(Begun::Fresh)), "{begun:?}");
                    ledger
                        .settle(p.hash(), Msat::new(1), &p, now())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let spent = a.operator_budget(&operator).await.unwrap().spent_msat.daily;
    assert_eq!(
        spent,
        Some(320 * 10_001),
        "every payment counted once, at its fee"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_ledger_contract() {
    let server = PgServer::start();
    let at = now();
    let clock = Arc::new(ManualClock::new(at));
    let ledger = replica(&server, &clock).await;
    crate::ledger::contract::run_all(&ledger, at).await;
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_reported_with_the_drivers_error_as_source() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let clock = Arc::new(ManualClock::new(now()));
    let url = format!("postgres://l402@127.0.0.1:{port}/l402");
    let Err(e) = PostgresLedger::open(&url, &config(), clock).await else {
        panic!("nothing listens there");
    };
    match &e {
        LedgerError::Postgres { text, source } => {
            assert!(text.contains("onnect"), "{text}");
            assert!(
                source.downcast_ref::<tokio_postgres::Error>().is_some()
                    || source
                        .downcast_ref::<deadpool_postgres::PoolError>()
                        .is_some(),
                "the driver's (or its pool's) own error is kept: {source:?}"
            );
        }
        other => panic!("not a PostgreSQL error: {other:?}"),
    }
    assert!(std::error::Error::source(&e).is_some());
    assert!(matches!(Decline::from(e), Decline::StoreUnavailable { .. }));
}
