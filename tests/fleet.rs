//! The operator's fleet controls, on both stores with real proxies: the kill switch
//! (`POST /v1/pause-all` / `resume-all`) stops every new payment on every replica sharing the
//! ledger while payments in flight finish and are recorded once, pass-through and cached
//! tokens keep working and held approvals are denied; the spend-spike breaker
//! (`spike_max_sats` over `spike_window_secs`) trips above its maximum and not at it, stops the
//! agent (or, in `operator_limits`, the fleet) until the operator resumes, and counts exactly
//! across replicas.

mod common;

use common::fleet::{declined, fleet, replicas_for, TOKEN};
use common::store::Store;
use common::Options;
use l402_proxy::ledger::PaymentState;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");

// ---------------------------------------------------------------------------------------------
// The kill switch.

async fn kill_switch(store: Store) {
    let replicas = replicas_for(store);
    let f = fleet(store, replicas, || Options {
        pay_delay: Duration::from_millis(1500),
        extra_agents: vec![("carol".into(), "{ approve_above_sats: 5 }".into())],
        extra_yaml: "approval: { timeout_secs: 30 }".into(),
        ..Default::default()
    })
    .await;
    // A token bought before the pause keeps serving.
    let bought = f.get(BOB, &f.http_url("/stocks/today")).await;
    assert_eq!(bought.status, 200, "{bought:?}");
    // A payment held for approval, and one in flight, when the operator pulls the switch.
    let (proxy, url) = (f.proxy, f.http_url("/news/today"));
    let held = tokio::spawn(async move {
        common::proxied(
            proxy,
            ("carol", "carol-key"),
            http::Method::GET,
            &url,
            bytes::Bytes::new(),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = f.api("GET", "/v1/approvals", None).await;
        let n = v["approvals"].as_array().map_or(0, Vec::len);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "carol's payment was never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (proxy, url) = (f.proxy, f.http_url("/weather/today"));
    let in_flight = tokio::spawn(async move {
        common::proxied(proxy, ALICE, http::Method::GET, &url, bytes::Bytes::new()).await
    });
    // Its payment has begun (the wallet takes 1.5 s).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, paused) = f
        .api(
            "POST",
            "/v1/pause-all",
            Some(json!({"reason": "incident 42"})),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["changed"], true);
    assert_eq!(paused["stop"]["reason"], "incident 42");
    assert_eq!(paused["approvals_denied"], 1);
    let paused_at = Instant::now();
    // Nothing new is paid, on any replica, at once.
    for replica in &f.replicas {
        let refused = replica.get(ALICE, &replica.http_url("/translate/x")).await;
        declined(&refused, "fleet-paused");
    }
    assert!(paused_at.elapsed() < Duration::from_secs(5));
    // The held approval was denied; the payment in flight finished and is recorded once.
    declined(&held.await.unwrap(), "approval-denied");
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, 200, "{finished:?}");
    // Pass-through and the tokens bought before keep working.
    assert_eq!(f.get(ALICE, &f.http_url("/free/x")).await.status, 200);
    let cached = f.get(BOB, &f.http_url("/stocks/today")).await;
    assert_eq!(cached.status, 200, "{cached:?}");
    assert_eq!(cached.header("x-l402-proxy-token"), Some("cached"));
    assert_eq!(f.payments(), 2, "bob's token and alice's payment in flight");
    assert_eq!(f.rows("alice", PaymentState::Settled).await, 1);
    assert_eq!(f.rows("carol", PaymentState::Settled).await, 0);
    // Pausing again changes nothing; the status says so on every replica.
    let (_, again) = f.api("POST", "/v1/pause-all", None).await;
    assert_eq!(again["changed"], false);
    for replica in &f.replicas {
        let r = replica.admin(Some(TOKEN), "GET", "/v1/status", &[]).await;
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["fleet"]["paused"], true, "{v}");
        assert_eq!(v["fleet"]["reason"], "incident 42", "{v}");
    }
    // Resumed: the fleet pays again, on every replica.
    let (_, resumed) = f.api("POST", "/v1/resume-all", None).await;
    assert_eq!(resumed["changed"], true, "{resumed}");
    let (_, twice) = f.api("POST", "/v1/resume-all", None).await;
    assert_eq!(twice["changed"], false);
    let last = f.replicas.last().unwrap();
    let paid = last.get(ALICE, &last.http_url("/translate/x")).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(f.payments(), 3);
    // Audited once each.
    let (_, audit) = f.api("GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "fleet.pause").count(),
        1,
        "{audit}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "fleet.resume").count(),
        1,
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_new_payments_and_lets_those_in_flight_finish_sqlite() {
    kill_switch(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_new_payments_on_every_replica_postgres() {
    kill_switch(Store::Postgres).await
}

// ---------------------------------------------------------------------------------------------
// The spend-spike breaker.

/// Alice's breaker trips above 30 sats in 5 minutes (each service costs 10, no fee): three
/// payments reach it exactly, the fourth would pass it.
async fn agent_breaker(store: Store) {
    let replicas = replicas_for(store);
    let f = fleet(store, replicas, || Options {
        alice_limits: "{ spike_max_sats: 30, spike_window_secs: 300 }".into(),
        max_fee_sats: 0,
        ..Default::default()
    })
    .await;
    // Three services, alternately through each replica: exactly at the maximum.
    for (i, path) in ["/a/1", "/b/1", "/c/1"].iter().enumerate() {
        let r = &f.replicas[i % f.replicas.len()];
        let paid = r.get(ALICE, &r.http_url(path)).await;
        assert_eq!(paid.status, 200, "{path}: {paid:?}");
    }
    let last = f.replicas.last().unwrap();
    let tripped = last.get(ALICE, &last.http_url("/d/1")).await;
    declined(&tripped, "spend-spike");
    // Stopped until resumed, on every replica; other agents are not.
    for replica in &f.replicas {
        let refused = replica.get(ALICE, &replica.http_url("/e/1")).await;
        declined(&refused, "agent-stopped");
    }
    assert_eq!(f.get(BOB, &f.http_url("/e/1")).await.status, 200);
    assert_eq!(f.payments(), 4, "three of alice's, one of bob's");
    assert_eq!(f.rows("alice", PaymentState::Settled).await, 3);
    let (_, agents) = f.api("GET", "/v1/agents", None).await;
    let alice = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice["stopped"]["by"], "breaker", "{alice}");
    assert_eq!(alice["stopped"]["reason"], "spend-spike", "{alice}");
    // The operator resumes: the breaker counts afresh.
    let (status, resumed) = f.api("POST", "/v1/agents/alice/resume", None).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["changed"], true, "{resumed}");
    let paid = last.get(ALICE, &last.http_url("/d/1")).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(f.rows("alice", PaymentState::Settled).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_breaker_trips_above_its_maximum_and_not_at_it_sqlite() {
    agent_breaker(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_breaker_counts_across_replicas_postgres() {
    agent_breaker(Store::Postgres).await
}

/// The operator's breaker over all agents: concurrent payments of two agents never take the
/// fleet's spend in the window above the maximum, and the trip pauses the whole fleet.
async fn fleet_breaker(store: Store) {
    let replicas = replicas_for(store);
    let f = fleet(store, replicas, || Options {
        operator_limits: "{ spike_max_sats: 50 }".into(),
        max_fee_sats: 0,
        ..Default::default()
    })
    .await;
    // Twelve payments of 10 sats at once, from two agents through every replica: five fit.
    let codes = f
        .at_once(
            12,
            |i| if i % 2 == 0 { ALICE } else { BOB },
            |r, i| r.http_url(&format!("/svc{i}/x")),
        )
        .await;
    let paid = codes.iter().filter(|c| *c == "paid").count();
    assert_eq!(paid, 5, "{codes:?}");
    assert_eq!(f.payments(), 5, "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| ["paid", "fleet-spend-spike", "fleet-paused"].contains(&c.as_str())),
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "fleet-spend-spike").count(),
        1,
        "one trip: {codes:?}"
    );
    // The fleet is paused by the breaker until the operator resumes it.
    let (_, status) = f.api("GET", "/v1/status", None).await;
    assert_eq!(status["fleet"]["paused"], true, "{status}");
    assert_eq!(status["fleet"]["by"], "breaker", "{status}");
    let (_, resumed) = f.api("POST", "/v1/resume-all", None).await;
    assert_eq!(resumed["changed"], true, "{resumed}");
    let again = f.get(ALICE, &f.http_url("/after/x")).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(f.payments(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_breaker_is_exact_under_concurrency_sqlite() {
    fleet_breaker(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_breaker_is_exact_across_replicas_postgres() {
    fleet_breaker(Store::Postgres).await
}

/// `spike_multiple`: alice spent 80 sats two hours ago (the breaker had no usual rate then, so
/// it let them pass); over the last 24 hours that is her usual rate, and six times it over a
/// one-hour window is 20 sats: two payments of 10 reach it, a third would pass it.
async fn rate_breaker(store: Store) {
    let clock = std::sync::Arc::new(l402_proxy::core::time::ManualClock::new(1_795_269_910));
    let f = fleet(store, replicas_for(store), || Options {
        alice_limits: "{ spike_multiple: 6, spike_window_secs: 3600 }".into(),
        max_fee_sats: 0,
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    for i in 0..8 {
        let r = &f.replicas[i % f.replicas.len()];
        let paid = r.get(ALICE, &r.http_url(&format!("/early{i}/x"))).await;
        assert_eq!(paid.status, 200, "{paid:?}");
    }
    clock.advance(2 * 3600);
    for path in ["/late1/x", "/late2/x"] {
        let r = f.replicas.last().unwrap();
        let paid = r.get(ALICE, &r.http_url(path)).await;
        assert_eq!(paid.status, 200, "{path}: {paid:?}");
    }
    let tripped = f.get(ALICE, &f.http_url("/late3/x")).await;
    declined(&tripped, "spend-spike");
    assert!(
        tripped
            .header("x-l402-proxy-reason")
            .is_some_and(|r| r.contains("20 sat")),
        "{tripped:?}"
    );
    assert_eq!(f.payments(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_trips_at_a_multiple_of_the_usual_rate_sqlite() {
    rate_breaker(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_trips_at_a_multiple_of_the_usual_rate_postgres() {
    rate_breaker(Store::Postgres).await
}
