use super::*;
use crate::core::time::ManualClock;
use crate::pay::dialect::StoredCredential;
use sha2::{Digest, Sha256};

const T: i64 = 1_795_269_910;

/// A payment hash with its verified proof.
fn proof(seed: u8) -> Preimage {
    let raw = [seed; 32];
    Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap()
}

fn payment(p: &Preimage, agent: &str, created_at: i64) -> NewPayment {
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
        service: Some("s:0".into()),
        scope: "/s/".into(),
        purchase: format!("={}", p.hash().to_hex()),
        token_expires_at: None,
        created_at,
    }
}

/// A directory for one test's database, removed when the test ends.
fn temp_db() -> TempDb {
    let dir = crate::scratch::Scratch::new("ledger");
    let path = dir.file("ledger.db");
    TempDb { path, _dir: dir }
}

struct TempDb {
    path: PathBuf,
    _dir: crate::scratch::Scratch,
}

impl AsRef<std::path::Path> for TempDb {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl std::ops::Deref for TempDb {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

fn no_limits() -> Limits {
    Limits::default()
}

fn limits<'a>(agent: &'a Limits, operator: &'a Limits) -> LimitSet<'a> {
    LimitSet {
        agent,
        operator,
        api_agent: false,
    }
}

async fn open(path: &Path, clock: &Arc<ManualClock>) -> SqliteLedger {
    SqliteLedger::open(path, clock.clone()).await.unwrap().0
}

#[tokio::test]
async fn a_hash_is_never_begun_twice_and_state_survives_reopening() {
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let (a, b) = (proof(1), proof(2));
    let none = no_limits();
    {
        let ledger = open(&path, &clock).await;
        let l = limits(&none, &none);
        assert_eq!(ledger.begin(payment(&a, "a", T), l).await, Ok(Begun::Fresh));
        assert_eq!(
            ledger.begin(payment(&a, "a", T), l).await,
            Ok(Begun::InFlight)
        );
        ledger
            .settle(a.hash(), Msat::new(7), &a, T + 1)
            .await
            .unwrap();
        assert_eq!(
            ledger.begin(payment(&a, "b", T), l).await,
            Ok(Begun::Settled {
                agent: "a".into(),
                origin: "https://h:443".into(),
                proof: Some(a),
                fee: Msat::new(7),
            })
        );
        assert_eq!(ledger.begin(payment(&b, "b", T), l).await, Ok(Begun::Fresh));
        ledger.fail(b.hash(), "no route", T + 2).await.unwrap();
        // A failed hash may be tried again.
        assert_eq!(ledger.begin(payment(&b, "b", T), l).await, Ok(Begun::Fresh));
        let view = ledger.budget("a", &none).await.unwrap();
        assert_eq!(
            view.spent_msat.total,
            Some(10_007),
            "settled at the real fee"
        );
        let view = ledger.budget("b", &none).await.unwrap();
        assert_eq!(
            view.spent_msat.total,
            Some(11_000),
            "pending holds the reserve"
        );
    }
    let ledger = open(&path, &clock).await;
    let pending = ledger.unresolved().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].agent, "b");
    assert_eq!(pending[0].charged(), Msat::new(11_000));
    assert_eq!(
        ledger.budget("b", &none).await.unwrap().spent_msat.total,
        Some(11_000),
        "a pending payment's reservation is restored"
    );
    assert_eq!(
        ledger.budget("a", &none).await.unwrap().spent_msat.daily,
        Some(10_007)
    );
    let tokens = ledger.live_tokens(T as u64).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].proof, a);
    assert_eq!(tokens[0].credential.token, "tok");
    // The restored pending payment settles against its restored reservation.
    ledger
        .settle(b.hash(), Msat::new(0), &b, T + 3)
        .await
        .unwrap();
    assert_eq!(
        ledger.budget("b", &none).await.unwrap().spent_msat.total,
        Some(10_000)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    drop(ledger);
}

#[tokio::test]
async fn a_second_process_is_refused_with_a_clear_message() {
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let first = open(&path, &clock).await;
    let Err(e) = SqliteLedger::open(&path, clock.clone()).await else {
        panic!("two owners of one SQLite ledger");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("in use by another l402-proxy process"),
        "{msg}"
    );
    assert!(msg.contains("store.path"), "{msg}");
    drop(first);
    assert!(SqliteLedger::open(&path, clock).await.is_ok(), "free again");
}

#[tokio::test]
async fn reservations_are_atomic_against_every_limit() {
    let db = temp_db();
    let ledger = open(&db, &Arc::new(ManualClock::new(T))).await;
    let agent = Limits {
        total_sats: Some(25.into()),
        ..Limits::default()
    };
    let none = no_limits();
    let l = limits(&agent, &none);
    let ledger = Arc::new(ledger);
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let ledger = ledger.clone();
            let agent = agent.clone();
            tokio::spawn(async move {
                let none = Limits::default();
                ledger
                    .begin(payment(&proof(i), "a", T), limits(&agent, &none))
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Begun::Fresh) => fresh += 1,
            Err(d) => assert_eq!(d.code(), "over-total-limit"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh, 2, "11 sat each (with reserve) against 25");
    assert_eq!(
        ledger.begin(payment(&proof(99), "a", T), l).await,
        Err(Decline::OverLimit {
            whose: crate::core::decline::Whose::Agent,
            period: crate::core::decline::Period::Total,
            used: Msat::new(22_000),
            amount: Msat::new(11_000),
            limit: Msat::new(25_000),
        })
    );
}

#[tokio::test]
async fn operator_overrides_are_durable_and_can_be_cleared() {
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let config = Limits {
        total_sats: Some(50.into()),
        ..Limits::default()
    };
    {
        let ledger = open(&path, &clock).await;
        ledger
            .set_total("a", Some(Msat::from_sats(80)), T)
            .await
            .unwrap();
        assert_eq!(
            ledger.budget("a", &config).await.unwrap().limits.total_sats,
            Some(80.into())
        );
    }
    let ledger = open(&path, &clock).await;
    assert_eq!(
        ledger.total_override("a").await.unwrap(),
        Some(Msat::from_sats(80))
    );
    ledger.set_total("a", None, T).await.unwrap();
    drop(ledger);
    let ledger = open(&path, &clock).await;
    assert_eq!(
        ledger.budget("a", &config).await.unwrap().limits.total_sats,
        Some(50.into()),
        "back to the file's value"
    );
}

#[tokio::test]
async fn repeated_declines_fold_into_one_record() {
    let db = temp_db();
    let ledger = open(&db, &Arc::new(ManualClock::new(T))).await;
    let decline = |at: i64, code: &str| DeclineRecord {
        agent: "a".into(),
        host: "h:443".into(),
        path: "/x".into(),
        code: code.into(),
        detail: "why".into(),
        amount: Some(Msat::new(5000)),
        created_at: at,
        count: 1,
    };
    for i in 0..500 {
        ledger
            .record_decline(decline(T + i % 10, "over-daily-limit"))
            .await
            .unwrap();
    }
    ledger
        .record_decline(decline(T + 5, "host-not-allowed"))
        .await
        .unwrap();
    ledger
        .record_decline(decline(T + 1000, "over-daily-limit"))
        .await
        .unwrap();
    let rows = ledger
        .declines(DeclineFilter {
            agent: Some("a".into()),
            limit: 100,
        })
        .await
        .unwrap();
    let counts: Vec<_> = rows.iter().map(|r| (r.code.as_str(), r.count)).collect();
    assert_eq!(
        counts,
        vec![
            ("over-daily-limit", 1),
            ("over-daily-limit", 500),
            ("host-not-allowed", 1)
        ]
    );
    assert_eq!(rows[0].amount, Some(Msat::new(5000)));
    assert_eq!(rows[0].path, "/x");
}

#[tokio::test]
async fn tokens_are_found_retired_and_keep_learned_scopes() {
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let none = no_limits();
    let a = proof(1);
    {
        let ledger = open(&path, &clock).await;
        ledger
            .begin(payment(&a, "a", T), limits(&none, &none))
            .await
            .unwrap();
        ledger.settle(a.hash(), Msat::new(0), &a, T).await.unwrap();
        ledger.learn_scope(a.hash(), "/t/").await.unwrap();
        ledger.learn_scope(a.hash(), "/t/").await.unwrap();
        let found = ledger
            .find_token("a", "https://h:443", Some("s:0"), "/zzz/", T as u64)
            .await
            .unwrap()
            .expect("found by service");
        assert_eq!(found.scopes, vec!["/s/".to_string(), "/t/".to_string()]);
        assert!(ledger
            .find_token("b", "https://h:443", Some("s:0"), "/s/", T as u64)
            .await
            .unwrap()
            .is_none());
    }
    let ledger = open(&path, &clock).await;
    assert_eq!(
        ledger.live_tokens(T as u64).await.unwrap()[0].scopes,
        vec!["/s/".to_string(), "/t/".to_string()],
        "learned scopes survive a restart"
    );
    ledger.retire_token(a.hash()).await.unwrap();
    assert!(ledger.live_tokens(T as u64).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_single_use_payment_keeps_no_proof() {
    let db = temp_db();
    let ledger = open(&db, &Arc::new(ManualClock::new(T))).await;
    let none = no_limits();
    let a = proof(3);
    let mut p = payment(&a, "a", T);
    p.credential = None;
    ledger.begin(p.clone(), limits(&none, &none)).await.unwrap();
    ledger.settle(a.hash(), Msat::new(0), &a, T).await.unwrap();
    assert!(ledger.live_tokens(T as u64).await.unwrap().is_empty());
    assert_eq!(
        ledger.begin(p, limits(&none, &none)).await,
        Ok(Begun::Settled {
            agent: "a".into(),
            origin: "https://h:443".into(),
            proof: None,
            fee: Msat::new(0),
        }),
        "its hash is still never paid twice"
    );
}

#[tokio::test]
async fn a_first_release_ledger_is_migrated_in_place() {
    let path = temp_db();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(journal::SCHEMA_V1).unwrap();
        conn.execute(
            "INSERT INTO payments (payment_hash, agent, host, origin, amount_msat, fee_reserve_msat, fee_msat, status, bolt11, token, services, scope, preimage, created_at, updated_at)
             VALUES (?1, 'a', 'h', 'https://h:443', 10000, 1000, 0, 'settled', 'lnbc', 'tok', NULL, '/', ?2, ?3, ?3)",
            rusqlite::params![proof(9).hash().to_hex(), proof(9).to_hex(), T],
        )
        .unwrap();
    }
    let ledger = open(&path, &Arc::new(ManualClock::new(T))).await;
    let tokens = ledger.live_tokens(T as u64).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].credential.scheme, "L402");
    assert_eq!(
        ledger
            .budget("a", &no_limits())
            .await
            .unwrap()
            .spent_msat
            .total,
        Some(10_000)
    );
}

#[tokio::test]
async fn keeps_the_ledger_contract() {
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let ledger = open(&path, &clock).await;
    crate::ledger::contract::run_all(&ledger, T).await;
}

/// After compaction, a restart reads the `total` back from the rollups (the embedded ledger
/// keeps budgets in memory and rebuilds them from the file), the price memory answers for the
/// removed payments, and the file gives its freed pages back.
#[tokio::test]
async fn compaction_keeps_the_total_across_a_restart_and_gives_space_back() {
    use crate::ledger::retention::{compact_all, Policy};
    let path = temp_db();
    let clock = Arc::new(ManualClock::new(T));
    let ledger = open(&path, &clock).await;
    let auto_vacuum: i64 = rusqlite::Connection::open(&*path)
        .unwrap()
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "a new file is INCREMENTAL");
    let old = T - 90 * 86_400;
    for seed in 0..200u8 {
        let p = proof(seed);
        let mut new = payment(&p, if seed % 2 == 0 { "a" } else { "b" }, old);
        new.credential = None;
        new.bolt11 = "lnbcrt1…".repeat(100);
        new.amount = Msat::new(1_000 + u64::from(seed));
        ledger
            .begin(new, limits(&no_limits(), &no_limits()))
            .await
            .unwrap();
        ledger
            .settle(p.hash(), Msat::new(5), &p, old)
            .await
            .unwrap();
    }
    drop(ledger);
    let full = closed_size(&path).await;
    // As restored from the file (the payments are old: in no window, only in the total).
    let ledger = open(&path, &clock).await;
    let before = snapshot(&ledger).await;
    assert!(before.2.spent_msat.total.unwrap() > 200_000);
    assert_eq!(before.2.spent_msat.monthly, Some(0));
    let policy = Policy {
        payments_days: Some(31),
        declines_days: None,
        archive: None,
        batch: 50,
    };
    let done = compact_all(&ledger, &policy, T).await.unwrap();
    assert_eq!(done.payments, 200);
    assert_eq!(snapshot(&ledger).await, before, "unchanged in memory");
    drop(ledger);
    let compacted = closed_size(&path).await;
    assert!(compacted < full / 2, "{full} → {compacted} bytes");
    let ledger = open(&path, &clock).await;
    assert_eq!(snapshot(&ledger).await, before, "unchanged after a restart");
    assert_eq!(
        ledger
            .payments(PaymentFilter {
                limit: 1000,
                ..PaymentFilter::default()
            })
            .await
            .unwrap()
            .len(),
        0
    );
}

type Snapshot = (
    BudgetView,
    BudgetView,
    BudgetView,
    Option<Msat>,
    Option<Msat>,
);

/// What compaction must not change: two agents' budgets, the operator's, and price memory.
async fn snapshot(l: &SqliteLedger) -> Snapshot {
    let limits = Limits {
        monthly_sats: Some(1_000.into()),
        total_sats: Some(10_000.into()),
        ..Limits::default()
    };
    (
        l.budget("a", &limits).await.unwrap(),
        l.budget("b", &limits).await.unwrap(),
        l.operator_budget(&limits).await.unwrap(),
        l.highest_price("b", "https://h:443").await.unwrap(),
        l.last_price("a", "https://h:443", "s:0").await.unwrap(),
    )
}

/// The file's size once its connection closed (the write-ahead log checkpointed and removed).
async fn closed_size(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for _ in 0..200 {
        if !Path::new(&wal).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    std::fs::metadata(path).unwrap().len()
}
