//! Caps per seller (`limits.sellers` of an agent and of `operator_limits`), on both stores with
//! real proxies: "this agent may spend 30 sats a day on `localhost` and 50 on anything else"
//! reserved atomically with every other limit — exact under concurrency and across replicas
//! sharing a PostgreSQL ledger — declined with their own codes, shown in the admin API, and
//! kept across a restart.

mod common;

use common::fleet::{declined, fleet, replicas_for, Fleet};
use common::store::Store;
use common::Options;
use l402_proxy::ledger::PaymentState;
use serde_json::Value;

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");

/// Alice: 30 sats a day at `localhost` (the seller under its name), 50 at anything else (its
/// address, 127.0.0.1). Every service costs 10 sats, no fee.
const ALICE_SELLERS: &str =
    "{ sellers: [ { hosts: [localhost], daily_sats: 30 }, { hosts: ['*'], daily_sats: 50 } ] }";

/// The seller under its other name: `http://localhost:<port>` (the same server, another host
/// to the caps).
fn named_url(r: &common::Harness, path: &str) -> String {
    format!("http://localhost:{}{path}", r.seller.http.port())
}

/// Runs `n` payments of `who` at once, each to its own service at the seller's address
/// (or, `named`, its name), through every replica in turn.
async fn at_once(
    f: &Fleet,
    n: usize,
    who: (&'static str, &'static str),
    named: bool,
) -> Vec<String> {
    f.at_once(
        n,
        |_| who,
        |r, i| {
            let path = format!("/s{i}/x");
            if named {
                named_url(r, &path)
            } else {
                r.http_url(&path)
            }
        },
    )
    .await
}

fn count(outcomes: &[String], what: &str) -> usize {
    outcomes.iter().filter(|o| *o == what).count()
}

async fn agent_caps(store: Store) {
    let f = fleet(store, replicas_for(store), || Options {
        alice_limits: ALICE_SELLERS.into(),
        max_fee_sats: 0,
        ..Default::default()
    })
    .await;
    // Twelve at once at 127.0.0.1 ("anything else"): five fit under 50 sats.
    let plain = at_once(&f, 12, ALICE, false).await;
    assert_eq!(count(&plain, "paid"), 5, "{plain:?}");
    assert_eq!(count(&plain, "over-seller-daily-limit"), 7, "{plain:?}");
    // The other seller has its own cap, untouched by the first.
    let named = f.get(ALICE, &named_url(&f, "/n1/x")).await;
    assert!(named.paid(), "{named:?}");
    for path in ["/n2/x", "/n3/x"] {
        let r = f.replicas.last().unwrap();
        assert!(r.get(ALICE, &named_url(r, path)).await.paid());
    }
    let over = f.get(ALICE, &named_url(&f, "/n4/x")).await;
    declined(&over, "over-seller-daily-limit");
    assert!(
        over.header("x-l402-proxy-reason")
            .is_some_and(|r| r.contains("localhost")),
        "{over:?}"
    );
    // Bob has no caps per seller.
    assert!(f.get(BOB, &f.http_url("/b/x")).await.paid());
    assert_eq!(f.payments(), 5 + 3 + 1);
    assert_eq!(f.rows("alice", PaymentState::Settled).await, 8);
    // The admin API shows what is left under each rule.
    let (_, agents) = f.api("GET", "/v1/agents", None).await;
    let alice: Value = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "alice")
        .unwrap()
        .clone();
    let sellers = alice["sellers"]
        .as_array()
        .unwrap_or_else(|| panic!("{alice}"));
    assert_eq!(sellers.len(), 2, "{alice}");
    assert_eq!(sellers[0]["hosts"], serde_json::json!(["localhost"]));
    assert_eq!(sellers[0]["spent_msat"]["daily"], 30_000, "{alice}");
    assert_eq!(sellers[0]["remaining_msat"]["daily"], 0, "{alice}");
    assert_eq!(sellers[1]["spent_msat"]["daily"], 50_000, "{alice}");
    assert_eq!(alice["spent_msat"]["daily"], 80_000, "{alice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_per_seller_are_exact_under_concurrency_sqlite() {
    agent_caps(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_per_seller_are_exact_across_replicas_postgres() {
    agent_caps(Store::Postgres).await
}

/// The operator's cap per seller over all agents: alice and bob together at once.
async fn operator_caps(store: Store) {
    let f = fleet(store, replicas_for(store), || Options {
        operator_limits: "{ sellers: [ { hosts: ['127.0.0.1'], hourly_sats: 40 } ] }".into(),
        max_fee_sats: 0,
        ..Default::default()
    })
    .await;
    let mut outcomes = at_once(&f, 5, ALICE, false).await;
    outcomes.extend(at_once(&f, 5, BOB, false).await);
    assert_eq!(count(&outcomes, "paid"), 4, "{outcomes:?}");
    assert_eq!(
        count(&outcomes, "operator-over-seller-hourly-limit"),
        6,
        "{outcomes:?}"
    );
    // Another seller is not under it.
    assert!(f.get(ALICE, &named_url(&f, "/other/x")).await.paid());
    assert_eq!(f.payments(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_cap_per_seller_covers_every_agent_sqlite() {
    operator_caps(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_cap_per_seller_covers_every_agent_postgres() {
    operator_caps(Store::Postgres).await
}

/// A restart (same ledger) keeps what was spent under each cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_per_seller_survive_a_restart_sqlite() {
    let dir = common::temp_dir("seller-caps-restart");
    let opts = || Options {
        alice_limits: "{ sellers: [ { hosts: ['*'], daily_sats: 30, total_sats: 30 } ] }".into(),
        max_fee_sats: 0,
        dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    {
        let h = common::Harness::with(opts()).await;
        for path in ["/r1/x", "/r2/x"] {
            assert!(h.get(ALICE, &h.http_url(path)).await.paid());
        }
        h.shared.ledger.flush().await.unwrap();
        h.stop().await;
    }
    let h = common::Harness::with(opts()).await;
    assert!(h.get(ALICE, &h.http_url("/r3/x")).await.paid());
    let over = h.get(ALICE, &h.http_url("/r4/x")).await;
    declined(&over, "over-seller-daily-limit");
}
