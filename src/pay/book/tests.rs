use super::*;
use crate::config::Limits;
use crate::core::time::ManualClock;
use crate::ledger::sqlite::SqliteLedger;
use crate::pay::dialect::StoredCredential;
use crate::wallet::scripted::{Script, ScriptedWallet};
use sha2::{Digest, Sha256};

const T: i64 = 1_795_269_910;

struct Fixture {
    book: Arc<PaymentBook>,
    ledger: Arc<SqliteLedger>,
    wallet: Arc<ScriptedWallet>,
    clock: Arc<ManualClock>,
    _scratch: crate::scratch::Scratch,
}

async fn fixture() -> Fixture {
    fixture_with(Duration::from_secs(60)).await
}

async fn fixture_with(timeout: Duration) -> Fixture {
    let clock = Arc::new(ManualClock::new(T));
    let scratch = crate::scratch::Scratch::new("book");
    let path = scratch.file("ledger.db");
    let ledger = Arc::new(SqliteLedger::open(&path, clock.clone()).await.unwrap().0);
    let wallet = Arc::new(ScriptedWallet::default());
    let book = Arc::new(PaymentBook::new(BookParts {
        ledger: ledger.clone(),
        wallet: wallet.clone(),
        clock: clock.clone(),
        metrics: Arc::new(Metrics::new()),
        max_fee: Msat::new(1000),
        timeout,
    }));
    Fixture {
        book,
        ledger,
        wallet,
        clock,
        _scratch: scratch,
    }
}

fn proof(seed: u8) -> Preimage {
    let raw = [seed; 32];
    Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).unwrap()
}

fn payment(p: &Preimage, agent: &str) -> NewPayment {
    NewPayment {
        hash: p.hash(),
        agent: Arc::from(agent),
        host: "h".into(),
        origin: "https://h:443".into(),
        dialect: "l402",
        amount: Msat::new(10_000),
        fee_reserve: Msat::ZERO,
        bolt11: "lnbcrt…".into(),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "tok".into(),
        }),
        service: None,
        scope: "/".into(),
        purchase: format!("={}", p.hash().to_hex()),
        token_expires_at: None,
        created_at: 0,
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

impl Fixture {
    async fn spent(&self, agent: &str) -> u64 {
        self.ledger
            .budget(agent, &NONE)
            .await
            .unwrap()
            .spent_msat
            .total
            .unwrap()
    }

    async fn state(&self, hash: PaymentHash) -> crate::ledger::PaymentState {
        let rows = self
            .ledger
            .payments(crate::ledger::PaymentFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        rows.into_iter().find(|r| r.hash == hash).unwrap().state
    }
}

#[tokio::test]
async fn begun_then_settled_commits_the_real_fee() {
    let f = fixture().await;
    let p = proof(1);
    f.wallet
        .script(p.hash(), Script::Pay(p, Msat::new(3), Duration::ZERO));
    let bought = f.book.buy(payment(&p, "a"), no_limits()).await.unwrap();
    assert_eq!(
        bought,
        Bought::Paid(Paid {
            preimage: p,
            fee: Msat::new(3)
        })
    );
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Settled
    );
    assert_eq!(
        f.spent("a").await,
        10_003,
        "the unused fee reserve came back"
    );
    assert_eq!(f.book.in_progress(), 0);
}

#[tokio::test]
async fn begun_then_failed_releases_and_the_hash_may_be_retried() {
    let f = fixture().await;
    let p = proof(2);
    f.wallet
        .script(p.hash(), Script::Fail(PayError::NoRoute("nowhere".into())));
    let d = f.book.buy(payment(&p, "a"), no_limits()).await.unwrap_err();
    assert_eq!(d.code(), "no-route");
    assert_eq!(f.state(p.hash()).await, crate::ledger::PaymentState::Failed);
    assert_eq!(f.spent("a").await, 0);
    f.wallet
        .script(p.hash(), Script::Pay(p, Msat::new(0), Duration::ZERO));
    assert!(f.book.buy(payment(&p, "a"), no_limits()).await.is_ok());
    assert_eq!(f.wallet.pays(), 2);
}

#[tokio::test]
async fn an_unknown_outcome_keeps_budget_and_is_never_paid_again_until_reconciled() {
    let f = fixture_with(Duration::from_millis(100)).await;
    let p = proof(3);
    f.wallet.script(p.hash(), Script::Hang);
    let d = f.book.buy(payment(&p, "a"), no_limits()).await.unwrap_err();
    assert_eq!(d.code(), "payment-timeout");
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Pending
    );
    assert_eq!(f.spent("a").await, 11_000, "amount + fee reserve held");
    let again = f.book.buy(payment(&p, "a"), no_limits()).await.unwrap_err();
    assert_eq!(again, Decline::PaymentInFlight);
    assert_eq!(f.wallet.pays(), 1, "never sent twice");
    // Still in flight at the node: nothing changes.
    f.wallet.lookup_says(p.hash(), PaymentStatus::InFlight);
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert!(resolved.is_empty());
    assert_eq!(open, 1);
    // It settled after all.
    f.wallet.lookup_says(
        p.hash(),
        PaymentStatus::Succeeded(Paid {
            preimage: p,
            fee: Msat::new(5),
        }),
    );
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert_eq!(open, 0);
    assert!(matches!(resolved.as_slice(), [Resolved::Settled(row, _)] if row.hash == p.hash()));
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Settled
    );
    assert_eq!(f.spent("a").await, 10_005);
}

#[tokio::test]
async fn reconciliation_fails_what_the_wallet_says_failed() {
    let f = fixture().await;
    let p = proof(4);
    f.wallet.script(
        p.hash(),
        Script::Fail(PayError::Unavailable("node down".into())),
    );
    let d = f.book.buy(payment(&p, "a"), no_limits()).await.unwrap_err();
    assert_eq!(d.code(), "wallet-unavailable");
    assert_eq!(f.spent("a").await, 11_000, "may be in flight: held");
    f.wallet
        .lookup_says(p.hash(), PaymentStatus::Failed("no route".into()));
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert_eq!((resolved.len(), open), (1, 0));
    assert_eq!(f.state(p.hash()).await, crate::ledger::PaymentState::Failed);
    assert_eq!(f.spent("a").await, 0);
}

#[tokio::test]
async fn a_wallet_with_no_record_frees_the_payment_only_after_twice_its_timeout() {
    let f = fixture().await;
    let p = proof(5);
    f.wallet.script(
        p.hash(),
        Script::Fail(PayError::Unavailable("node down".into())),
    );
    let _ = f.book.buy(payment(&p, "a"), no_limits()).await;
    f.clock.advance(10);
    let (_, open) = f.book.reconcile().await.unwrap();
    assert_eq!(open, 1, "unknown for 10 s of a 60 s timeout: still held");
    assert_eq!(f.spent("a").await, 11_000);
    f.clock.advance(51);
    let (_, open) = f.book.reconcile().await.unwrap();
    assert_eq!(
        open, 1,
        "no record 61 s in: still held (twice the timeout is waited)"
    );
    f.clock.advance(60);
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert_eq!((resolved.len(), open), (1, 0));
    assert_eq!(f.spent("a").await, 0, "released");
}

#[tokio::test]
async fn a_panicking_wallet_leaves_the_payment_to_reconciliation() {
    let f = fixture().await;
    let p = proof(6);
    f.wallet.script(p.hash(), Script::Panic);
    let book = f.book.clone();
    let d = book.buy(payment(&p, "a"), no_limits()).await.unwrap_err();
    assert_eq!(
        d.code(),
        "wallet-unavailable",
        "a panicking call may have acted"
    );
    assert_eq!(f.book.in_progress(), 0, "the sending guard is gone");
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Pending,
        "money may have left: held, not released"
    );
    assert_eq!(f.spent("a").await, 11_000);
    // The node never saw it: after twice the timeout, reconciliation frees it.
    f.clock.advance(121);
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert_eq!((resolved.len(), open), (1, 0));
    assert_eq!(f.spent("a").await, 0);
}

#[tokio::test]
async fn a_payment_being_paid_is_left_alone_by_reconciliation() {
    let f = fixture().await;
    let p = proof(7);
    f.wallet.script(
        p.hash(),
        Script::Pay(p, Msat::new(0), Duration::from_millis(300)),
    );
    let book = f.book.clone();
    let paying = tokio::spawn(async move { book.buy(payment(&p, "a"), no_limits()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.clock.advance(120);
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert!(resolved.is_empty(), "not concluded while its task pays it");
    assert_eq!(open, 1);
    assert!(paying.await.unwrap().is_ok());
    assert_eq!(f.spent("a").await, 10_000);
}

#[tokio::test]
async fn an_earlier_payment_serves_only_its_own_agent() {
    let f = fixture().await;
    let p = proof(8);
    f.wallet
        .script(p.hash(), Script::Pay(p, Msat::new(0), Duration::ZERO));
    f.book.buy(payment(&p, "a"), no_limits()).await.unwrap();
    assert_eq!(
        f.book
            .buy(payment(&p, "a"), no_limits())
            .await
            .map_err(|e| e.decline()),
        Ok(Bought::Earlier(p))
    );
    assert_eq!(
        f.book
            .buy(payment(&p, "b"), no_limits())
            .await
            .map_err(|e| e.decline()),
        Err(Decline::HashPaidElsewhere),
        "one agent never rides on another's payment"
    );
    let mut elsewhere = payment(&p, "a");
    elsewhere.origin = "https://other:443".into();
    assert_eq!(
        f.book
            .buy(elsewhere, no_limits())
            .await
            .map_err(|e| e.decline()),
        Err(Decline::HashPaidElsewhere)
    );
    assert_eq!(f.wallet.pays(), 1);
    assert_eq!(f.spent("b").await, 0);
}

#[tokio::test]
async fn over_a_limit_nothing_is_journalled_or_sent() {
    let f = fixture().await;
    let p = proof(9);
    let tight = Limits {
        daily_sats: Some(5.into()),
        ..Limits::default()
    };
    let d = f
        .book
        .buy(
            payment(&p, "a"),
            LimitSet {
                agent: &tight,
                operator: &NONE,
                api_agent: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(d.code(), "over-daily-limit");
    assert_eq!(f.wallet.pays(), 0);
    assert!(f
        .ledger
        .payments(crate::ledger::PaymentFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_proof_for_another_hash_is_never_accepted() {
    let f = fixture().await;
    let (p, other) = (proof(10), proof(11));
    f.wallet.script(
        p.hash(),
        Script::Fail(PayError::Unavailable("node down".into())),
    );
    let _ = f.book.buy(payment(&p, "a"), no_limits()).await;
    f.wallet.lookup_says(
        p.hash(),
        PaymentStatus::Succeeded(Paid {
            preimage: other,
            fee: Msat::new(0),
        }),
    );
    let (resolved, open) = f.book.reconcile().await.unwrap();
    assert!(resolved.is_empty());
    assert_eq!(open, 1);
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Pending
    );
}

#[tokio::test]
async fn a_late_proof_is_delivered_before_the_payment_is_recorded_settled() {
    let f = fixture_with(Duration::from_millis(100)).await;
    let p = proof(9);
    f.wallet.script(p.hash(), Script::Hang);
    let late = match f.book.buy(payment(&p, "a"), no_limits()).await {
        Err(Unbought::Unresolved {
            late: Some(late), ..
        }) => late,
        other => panic!("an unresolved payment with a late answer: {other:?}"),
    };
    // The wallet's call still hangs; a lookup says it settled.
    f.wallet.lookup_says(
        p.hash(),
        PaymentStatus::Succeeded(Paid {
            preimage: p,
            fee: Msat::new(5),
        }),
    );
    let book = f.book.clone();
    let reconciling = tokio::spawn(async move { book.reconcile().await.unwrap() });
    let settle = late.await.expect("the proof is delivered");
    assert_eq!(settle.paid.preimage, p);
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Pending,
        "not recorded settled while its proof is being delivered"
    );
    drop(settle);
    let (resolved, open) = reconciling.await.unwrap();
    assert_eq!((resolved.len(), open), (1, 0));
    assert_eq!(
        f.state(p.hash()).await,
        crate::ledger::PaymentState::Settled
    );
    assert_eq!(f.spent("a").await, 10_005, "counted once");
    assert_eq!(f.wallet.pays(), 1);
}
