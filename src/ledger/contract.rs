//! The `Ledger` contract, as one suite every store must pass: the same calls, the same answers,
//! on SQLite and on PostgreSQL (run from each store's tests). It covers what money depends on:
//! claiming a hash, an open purchase, the limit rule and its order, the agent as it is when
//! money leaves, and release on failure.

mod retention;

use super::{Begun, Ledger, LimitSet, NewPayment, PaymentState};
use crate::agents::StoredAgent;
use crate::config::{HostRules, Limits};
use crate::core::{Decline, Msat, PaymentHash, Preimage};
use crate::pay::dialect::StoredCredential;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A fresh proof (a random preimage and its hash).
fn proof() -> Preimage {
    let raw: [u8; 32] = rand::random();
    Preimage::verify(raw, &PaymentHash(Sha256::digest(raw).into())).expect("its own hash")
}

/// A payment of 10 sats (+ 1 sat fee reserve) by `agent` for `purchase`.
fn payment(p: &Preimage, agent: &str, purchase: &str, now: i64) -> NewPayment {
    NewPayment {
        hash: p.hash(),
        agent: Arc::from(agent),
        host: "seller:443".into(),
        origin: "https://seller:443".into(),
        dialect: "l402",
        amount: Msat::new(10_000),
        fee_reserve: Msat::new(1_000),
        bolt11: "lnbcrt…".into(),
        credential: Some(StoredCredential {
            scheme: "L402".into(),
            token: "tok".into(),
        }),
        service: Some(purchase.into()),
        scope: "/".into(),
        purchase: purchase.into(),
        token_expires_at: None,
        created_at: now,
    }
}

fn limits<'a>(agent: &'a Limits, operator: &'a Limits) -> LimitSet<'a> {
    LimitSet {
        agent,
        operator,
        api_agent: false,
    }
}

fn code(r: Result<Begun, Decline>) -> String {
    match r {
        Ok(b) => format!("{b:?}"),
        Err(d) => d.code().to_string(),
    }
}

/// Runs every case against `ledger`, whose clock reads `now`.
pub async fn run_all(ledger: &dyn Ledger, now: i64) {
    a_hash_is_claimed_once(ledger, now).await;
    a_purchase_is_open_while_a_payment_of_it_is_pending(ledger, now).await;
    limits_decide_in_one_order(ledger, now).await;
    an_api_agent_is_read_as_it_is_when_money_leaves(ledger, now).await;
    failure_releases_and_settling_counts_the_real_fee(ledger, now).await;
    retention::compaction_keeps_budgets_prices_and_pending(ledger, now).await;
    retention::the_outbox_leases_retries_and_caps(ledger, now).await;
    retention::compaction_runs_while_payments_are_made(ledger, now).await;
}

async fn a_hash_is_claimed_once(ledger: &dyn Ledger, now: i64) {
    let none = Limits::NONE;
    let p = proof();
    assert_eq!(ledger.payment_state(p.hash()).await.unwrap(), None);
    let first = ledger
        .begin(payment(&p, "c1", "s", now), limits(&none, &none))
        .await;
    assert_eq!(first, Ok(Begun::Fresh));
    assert_eq!(
        ledger.payment_state(p.hash()).await.unwrap(),
        Some(PaymentState::Pending)
    );
    let again = ledger
        .begin(payment(&p, "c1", "s", now), limits(&none, &none))
        .await;
    assert_eq!(
        again,
        Ok(Begun::InFlight),
        "a pending hash is never begun twice"
    );
    ledger
        .settle(p.hash(), Msat::new(0), &p, now)
        .await
        .unwrap();
    assert_eq!(
        ledger.payment_state(p.hash()).await.unwrap(),
        Some(PaymentState::Settled)
    );
    match ledger
        .begin(payment(&p, "c1", "s", now), limits(&none, &none))
        .await
    {
        Ok(Begun::Settled { agent, proof, .. }) => {
            assert_eq!(agent, "c1");
            assert_eq!(proof, Some(p), "the kept proof of a reusable credential");
        }
        other => panic!("a settled hash: {other:?}"),
    }
}

async fn a_purchase_is_open_while_a_payment_of_it_is_pending(ledger: &dyn Ledger, now: i64) {
    let none = Limits::NONE;
    let (a, b, c) = (proof(), proof(), proof());
    assert_eq!(
        ledger
            .begin(payment(&a, "c2", "svc", now), limits(&none, &none))
            .await,
        Ok(Begun::Fresh)
    );
    assert_eq!(
        ledger
            .begin(payment(&b, "c2", "svc", now), limits(&none, &none))
            .await,
        Ok(Begun::PurchaseOpen { hash: a.hash() }),
        "another invoice for the same purchase waits for the first"
    );
    assert_eq!(
        ledger.payment_state(b.hash()).await.unwrap(),
        None,
        "nothing claimed for the refused one"
    );
    // Another purchase, and the same purchase of another agent, are not held up.
    assert_eq!(
        ledger
            .begin(payment(&c, "c2", "other", now), limits(&none, &none))
            .await,
        Ok(Begun::Fresh)
    );
    let d = proof();
    assert_eq!(
        ledger
            .begin(payment(&d, "c2b", "svc", now), limits(&none, &none))
            .await,
        Ok(Begun::Fresh)
    );
    // Resolved (failed here), the purchase is open to a new payment.
    ledger.fail(a.hash(), "no route", now).await.unwrap();
    assert_eq!(
        ledger
            .begin(payment(&b, "c2", "svc", now), limits(&none, &none))
            .await,
        Ok(Begun::Fresh)
    );
    // Settled, too.
    ledger
        .settle(b.hash(), Msat::new(0), &b, now)
        .await
        .unwrap();
    let e = proof();
    assert_eq!(
        ledger
            .begin(payment(&e, "c2", "svc", now), limits(&none, &none))
            .await,
        Ok(Begun::Fresh)
    );
}

async fn limits_decide_in_one_order(ledger: &dyn Ledger, now: i64) {
    let none = Limits::NONE;
    // 11 sats held per payment: the second passes the hour, the day and the total at once.
    let agent = Limits {
        hourly_sats: Some(15.into()),
        daily_sats: Some(15.into()),
        total_sats: Some(15.into()),
        ..Limits::NONE
    };
    let p = proof();
    assert_eq!(
        ledger
            .begin(payment(&p, "c3", "x1", now), limits(&agent, &none))
            .await,
        Ok(Begun::Fresh)
    );
    let q = proof();
    assert_eq!(
        code(
            ledger
                .begin(payment(&q, "c3", "x2", now), limits(&agent, &none))
                .await
        ),
        "over-hourly-limit",
        "the agent's windows first, the shortest first"
    );
    let operator = Limits {
        daily_sats: Some(5.into()),
        ..Limits::NONE
    };
    let loose = Limits::NONE;
    assert_eq!(
        code(
            ledger
                .begin(payment(&q, "c3b", "x3", now), limits(&loose, &operator))
                .await
        ),
        "operator-over-daily-limit"
    );
    assert_eq!(
        ledger.payment_state(q.hash()).await.unwrap(),
        None,
        "a refused reservation leaves no record and no claim"
    );
    // Exactly at a limit is allowed.
    let exact = Limits {
        daily_sats: Some(11.into()),
        ..Limits::NONE
    };
    let r = proof();
    assert_eq!(
        ledger
            .begin(payment(&r, "c3c", "x4", now), limits(&exact, &none))
            .await,
        Ok(Begun::Fresh)
    );
}

async fn an_api_agent_is_read_as_it_is_when_money_leaves(ledger: &dyn Ledger, now: i64) {
    let none = Limits::NONE;
    let stale = Limits::NONE;
    let api = |paused: bool, daily: Option<u64>| StoredAgent {
        name: "c4".into(),
        key_sha256: "00".repeat(32),
        limits: Limits {
            daily_sats: daily.map(crate::core::Sats::new),
            ..Limits::NONE
        },
        hosts: HostRules::default(),
        paused,
        created_at: now,
        updated_at: now,
    };
    let set = LimitSet {
        // What the request saw when it arrived: no limits, not paused.
        agent: &stale,
        operator: &none,
        api_agent: true,
    };
    assert!(ledger.create_agent(&api(true, None)).await.unwrap());
    let p = proof();
    assert_eq!(
        code(ledger.begin(payment(&p, "c4", "y", now), set).await),
        "agent-paused"
    );
    assert!(ledger.update_agent(&api(false, Some(5))).await.unwrap());
    assert_eq!(
        code(ledger.begin(payment(&p, "c4", "y", now), set).await),
        "over-daily-limit",
        "the stored limits, not the request's"
    );
    assert!(ledger.update_agent(&api(false, Some(100))).await.unwrap());
    assert_eq!(
        ledger.begin(payment(&p, "c4", "y", now), set).await,
        Ok(Begun::Fresh)
    );
    ledger.fail(p.hash(), "test", now).await.unwrap();
    assert!(ledger.delete_agent("c4").await.unwrap());
    let q = proof();
    assert_eq!(
        code(ledger.begin(payment(&q, "c4", "y", now), set).await),
        "agent-deleted"
    );
    assert_eq!(ledger.payment_state(q.hash()).await.unwrap(), None);
}

async fn failure_releases_and_settling_counts_the_real_fee(ledger: &dyn Ledger, now: i64) {
    let none = Limits::NONE;
    let spent = |view: crate::budget::BudgetView| view.spent_msat.total.unwrap_or(0);
    let p = proof();
    ledger
        .begin(payment(&p, "c5", "z", now), limits(&none, &none))
        .await
        .unwrap();
    assert_eq!(spent(ledger.budget("c5", &none).await.unwrap()), 11_000);
    ledger.fail(p.hash(), "no route", now).await.unwrap();
    assert_eq!(spent(ledger.budget("c5", &none).await.unwrap()), 0);
    let q = proof();
    ledger
        .begin(payment(&q, "c5", "z", now), limits(&none, &none))
        .await
        .unwrap();
    ledger
        .settle(q.hash(), Msat::new(250), &q, now)
        .await
        .unwrap();
    assert_eq!(
        spent(ledger.budget("c5", &none).await.unwrap()),
        10_250,
        "amount + the real fee; the unused reserve given back"
    );
}
