//! Retention and the outbox, as every store must keep them.

use super::{limits, payment, proof};
use crate::config::Limits;
use crate::core::{Msat, Preimage};
use crate::ledger::outbox::{DeliveryOutcome, OutboxDelivery};
use crate::ledger::retention::{payments_cutoff, Archive};
use crate::ledger::{Begun, Compaction, DeclineFilter, DeclineRecord, Ledger, PaymentState};

const DAY: i64 = 86_400;

/// An old payment of `agent` (credential kept or not), begun at `at` and left as `end` says.
async fn old_payment(
    ledger: &dyn Ledger,
    agent: &str,
    flight: &str,
    amount: u64,
    at: i64,
    keep_token: bool,
    end: Option<PaymentState>,
) -> Preimage {
    let none = Limits::NONE;
    let p = proof();
    let mut new = payment(&p, agent, flight, at);
    new.amount = Msat::new(amount);
    if !keep_token {
        new.credential = None;
    }
    let begun = ledger.begin(new, limits(&none, &none)).await;
    assert_eq!(begun, Ok(Begun::Fresh));
    match end {
        Some(PaymentState::Settled) => ledger.settle(p.hash(), Msat::new(7), &p, at).await.unwrap(),
        Some(PaymentState::Failed) => ledger.fail(p.hash(), "no route", at).await.unwrap(),
        _ => {}
    }
    p
}

/// Compaction removes old finished payments and declines (archived first), and changes no
/// budget, total, price memory or pending payment.
pub async fn compaction_keeps_budgets_prices_and_pending(ledger: &dyn Ledger, now: i64) {
    let agent = "r1";
    let origin = "https://seller:443";
    let old = now - 120 * DAY;
    let settled = [
        old_payment(
            ledger,
            agent,
            "gone",
            5_000,
            old,
            false,
            Some(PaymentState::Settled),
        )
        .await,
        old_payment(
            ledger,
            agent,
            "gone",
            9_000,
            old + 10,
            false,
            Some(PaymentState::Settled),
        )
        .await,
        old_payment(
            ledger,
            agent,
            "gone",
            6_000,
            old + 20,
            false,
            Some(PaymentState::Settled),
        )
        .await,
    ];
    let failed = old_payment(
        ledger,
        agent,
        "gone2",
        4_000,
        old,
        false,
        Some(PaymentState::Failed),
    )
    .await;
    let pending = old_payment(ledger, agent, "open", 3_000, old, false, None).await;
    let token = old_payment(
        ledger,
        agent,
        "tok",
        2_000,
        old,
        true,
        Some(PaymentState::Settled),
    )
    .await;
    let recent = old_payment(
        ledger,
        agent,
        "new",
        1_000,
        now,
        false,
        Some(PaymentState::Settled),
    )
    .await;
    ledger
        .record_decline(DeclineRecord {
            agent: agent.into(),
            host: "seller:443".into(),
            path: "/old".into(),
            code: "over-budget".into(),
            detail: "old".into(),
            amount: Some(Msat::new(1)),
            created_at: old,
            count: 1,
        })
        .await
        .unwrap();

    // With limits, so what is left (and spendable) is compared too, not only what was spent.
    let limits_of = Limits {
        daily_sats: Some(100.into()),
        weekly_sats: Some(200.into()),
        monthly_sats: Some(500.into()),
        total_sats: Some(1_000.into()),
        ..Limits::NONE
    };
    let budget = ledger.budget(agent, &limits_of).await.unwrap();
    let operator = ledger.operator_budget(&limits_of).await.unwrap();
    let highest = ledger.highest_price(agent, origin).await.unwrap();
    let last = ledger.last_price(agent, origin, "gone").await.unwrap();
    assert_eq!(highest, Some(Msat::new(9_000)));
    assert_eq!(last, Some(Msat::new(6_000)));

    let dir = std::env::temp_dir().join(format!("l402-archive-{:x}", rand::random::<u64>()));
    let round = Compaction {
        payments_before: Some(payments_cutoff(now, 31)),
        declines_before: Some(now - 30 * DAY),
        now,
        batch: 2,
        archive: Some(Archive::new(&dir)),
    };
    let (mut payments, mut declines) = (0, 0);
    for _ in 0..20 {
        let done = ledger.compact(&round).await.unwrap();
        if done.is_empty() {
            break;
        }
        payments += done.payments;
        declines += done.declines;
    }
    assert_eq!(
        payments, 4,
        "three settled and one failed old payment removed"
    );
    assert!(declines >= 1);

    for p in settled.iter().chain([&failed]) {
        assert_eq!(ledger.payment_state(p.hash()).await.unwrap(), None);
    }
    assert_eq!(
        ledger.payment_state(pending.hash()).await.unwrap(),
        Some(PaymentState::Pending),
        "a pending payment is never touched"
    );
    assert_eq!(
        ledger.payment_state(token.hash()).await.unwrap(),
        Some(PaymentState::Settled),
        "a payment whose credential is live is kept"
    );
    assert_eq!(
        ledger.payment_state(recent.hash()).await.unwrap(),
        Some(PaymentState::Settled)
    );
    assert!(budget.remaining_msat.total.is_some(), "{budget:?}");
    assert_eq!(ledger.budget(agent, &limits_of).await.unwrap(), budget);
    assert_eq!(ledger.operator_budget(&limits_of).await.unwrap(), operator);
    assert_eq!(ledger.highest_price(agent, origin).await.unwrap(), highest);
    assert_eq!(
        ledger.last_price(agent, origin, "gone").await.unwrap(),
        last
    );
    let left = ledger
        .declines(DeclineFilter {
            agent: Some(agent.into()),
            limit: 100,
        })
        .await
        .unwrap();
    assert!(left.iter().all(|d| d.path != "/old"), "{left:?}");

    let archived = std::fs::read_to_string(Archive::new(&dir).payments_file()).unwrap();
    for p in settled.iter().chain([&failed]) {
        assert!(archived.contains(&p.hash().to_hex()), "{archived}");
    }
    for kept in [&pending, &token, &recent] {
        assert!(!archived.contains(&kept.hash().to_hex()));
    }
    assert!(!archived.contains("preimage") && !archived.contains("\"tok\""));
    let lines: Vec<serde_json::Value> = archived
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let declined = std::fs::read_to_string(Archive::new(&dir).declines_file()).unwrap();
    assert!(declined.contains("\"/old\""), "{declined}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn delivery(id: &str, endpoint: &str, at_ms: i64) -> OutboxDelivery {
    OutboxDelivery {
        id: id.into(),
        endpoint: endpoint.into(),
        host: "hooks.example".into(),
        event: "wallet.low".into(),
        body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        attempts: 0,
        next_at_ms: at_ms,
        created_at_ms: at_ms,
    }
}

/// Deliveries are held by one claimer at a time, keep their id and body across retries, and the
/// outbox is capped (oldest waiting dropped first).
pub async fn the_outbox_leases_retries_and_caps(ledger: &dyn Ledger, now: i64) {
    let t = now * 1000;
    let (a, b) = ("ep-a".to_string(), "ep-b".to_string());
    let dropped = ledger
        .queue_deliveries(
            vec![
                delivery("e1", &a, t),
                delivery("e1", &b, t),
                delivery("e2", &a, t + 1),
            ],
            100,
            t,
        )
        .await
        .unwrap();
    assert_eq!(dropped, 0);
    // Queueing the same delivery again changes nothing.
    ledger
        .queue_deliveries(vec![delivery("e1", &a, t)], 100, t)
        .await
        .unwrap();
    let first = ledger
        .claim_deliveries(std::slice::from_ref(&a), "one", t + 1, 30_000, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"]);
    assert!(first.iter().all(|d| d.endpoint == a && d.attempts == 0));
    assert_eq!(first[0].body, b"{\"id\":\"e1\"}");
    let second = ledger
        .claim_deliveries(&[a.clone(), b.clone()], "two", t, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "leased deliveries are not claimed twice");
    assert_eq!(
        (second[0].id.as_str(), second[0].endpoint.as_str()),
        ("e1", "ep-b")
    );

    ledger
        .finish_delivery(
            "e1",
            &a,
            DeliveryOutcome::Retry {
                next_at_ms: t + 5_000,
            },
            t,
        )
        .await
        .unwrap();
    ledger
        .finish_delivery("e2", &a, DeliveryOutcome::Delivered, t)
        .await
        .unwrap();
    assert!(ledger
        .claim_deliveries(std::slice::from_ref(&a), "one", t + 4_999, 30_000, 10)
        .await
        .unwrap()
        .is_empty());
    let retried = ledger
        .claim_deliveries(std::slice::from_ref(&a), "two", t + 5_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1, "a delivered one is done: {retried:?}");
    assert_eq!((retried[0].id.as_str(), retried[0].attempts), ("e1", 1));
    // A lease that ran out (its holder died) can be taken over.
    let again = ledger
        .claim_deliveries(std::slice::from_ref(&a), "three", t + 40_000, 30_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    ledger
        .finish_delivery("e1", &a, DeliveryOutcome::Failed, t + 40_000)
        .await
        .unwrap();
    ledger
        .finish_delivery("e1", &b, DeliveryOutcome::Delivered, t + 40_000)
        .await
        .unwrap();
    assert!(ledger
        .claim_deliveries(&[a.clone(), b.clone()], "one", t + 999_000, 30_000, 10)
        .await
        .unwrap()
        .is_empty());

    // The cap: five waiting, three allowed: the two oldest are dropped.
    let c = "ep-c".to_string();
    let many: Vec<_> = (0..5)
        .map(|i| delivery(&format!("c{i}"), &c, t + i))
        .collect();
    let dropped = ledger.queue_deliveries(many, 3, t + 10).await.unwrap();
    assert_eq!(dropped, 2);
    let left = ledger
        .claim_deliveries(std::slice::from_ref(&c), "one", t + 10, 30_000, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = left.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["c2", "c3", "c4"]);
}

/// Compaction in small batches while payments are being made: every payment succeeds and is
/// counted, every old row is removed, nothing fails.
pub async fn compaction_runs_while_payments_are_made(ledger: &dyn Ledger, now: i64) {
    let old = now - 100 * DAY;
    for i in 0..120u64 {
        old_payment(
            ledger,
            "r3-old",
            "svc",
            1_000 + i,
            old,
            false,
            Some(PaymentState::Settled),
        )
        .await;
    }
    let none = Limits::NONE;
    let before = ledger.budget("r3", &none).await.unwrap();
    let pay = async {
        for i in 0..60u64 {
            let p = proof();
            let mut new = payment(&p, "r3", &format!("live{i}"), now);
            new.credential = None;
            assert_eq!(
                ledger.begin(new, limits(&none, &none)).await,
                Ok(Begun::Fresh)
            );
            ledger
                .settle(p.hash(), Msat::new(1), &p, now)
                .await
                .unwrap();
        }
    };
    let round = Compaction {
        payments_before: Some(payments_cutoff(now, 31)),
        declines_before: None,
        now,
        batch: 10,
        archive: None,
    };
    let compact = async {
        let mut removed = 0;
        loop {
            let done = ledger
                .compact(&round)
                .await
                .expect("compaction never fails");
            if done.is_empty() {
                return removed;
            }
            removed += done.payments;
        }
    };
    let ((), removed) = tokio::join!(pay, compact);
    assert!(removed >= 120, "{removed}");
    let after = ledger.budget("r3", &none).await.unwrap();
    let spent = |b: &crate::budget::BudgetView| b.spent_msat.total.unwrap_or(0);
    assert_eq!(spent(&after) - spent(&before), 60 * 10_001);
    assert_eq!(
        ledger
            .highest_price("r3-old", "https://seller:443")
            .await
            .unwrap(),
        Some(Msat::new(1_119))
    );
}
