//! Price memory a seller cannot rename away, and tokens kept per service, end to end on both
//! stores: the proxy (in-process, on SQLite or on a throw-away PostgreSQL cluster on 127.0.0.1),
//! the test seller over real HTTP, the dev wallet. Each test body runs once per store and asserts
//! the wallet's payments, the ledger's rows and the spend exactly.

mod common;

use common::store::{backing, Store};
use common::{Harness, Options, Reply};
use l402_proxy::config::Limits;
use l402_proxy::core::money::Msat;
use l402_proxy::ledger::{PaymentFilter, PaymentState};
use serde_json::{json, Value};
use std::time::Duration;

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const TOKEN: &str = "prices-tokens-admin-token";

/// The settled payments of `agent` in the ledger, by service: (service, amount msat).
async fn settled(h: &Harness, agent: &str) -> Vec<(String, u64)> {
    let mut rows = h
        .shared
        .ledger
        .payments(PaymentFilter {
            agent: Some(agent.to_string()),
            state: None,
            host: None,
            since: None,
            until: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert!(
        rows.iter().all(|r| r.state == PaymentState::Settled),
        "every payment settled: {rows:?}"
    );
    rows.sort_by_key(|r| (r.service.clone(), r.created_at));
    rows.iter()
        .map(|r| (r.service.clone().unwrap_or_default(), r.amount.get()))
        .collect()
}

/// What `agent` has spent in total, as the budget sees it (settled and reserved).
async fn spent(h: &Harness, agent: &str) -> u64 {
    h.shared
        .ledger
        .budget(agent, &Limits::default())
        .await
        .unwrap()
        .spent_msat
        .total
        .unwrap_or(0)
}

fn wallet_spent(h: &Harness) -> u64 {
    Msat::from_sats(1_000_000).get() - h.wallet.balance().get()
}

async fn get(h: &Harness, who: (&str, &str), path: &str) -> Reply {
    h.curl(Some(who), &h.http_url(path), &[]).await
}

fn assert_declined(r: &Reply, code: &str) {
    assert_eq!(r.status, 402, "{r:?}");
    assert_eq!(r.decline(), Some(code), "{r:?}");
    assert!(!r.paid(), "{r:?}");
}

// ---- item 4: the price-jump guard cannot be dodged by renaming the service ----

async fn renamed_service_is_still_a_price_jump(store: Store) {
    let db = backing(store);
    let dir = common::temp_dir("rename");
    let mut opts = Options {
        dir: Some(dir.to_path_buf()),
        alice_limits: "{ max_price_increase_pct: 100 }".into(),
        store_yaml: db.yaml.clone(),
        ..Options::default()
    };
    opts.seller.price = Msat::from_sats(10);
    opts.seller
        .prices
        .insert("q2".into(), Msat::from_sats(18_000));
    opts.seller.prices.insert("q3".into(), Msat::from_sats(20));
    let first = Harness::with(opts).await;
    let bought = get(&first, ALICE, "/q/x").await;
    assert_eq!(bought.status, 200, "{bought:?}");
    assert!(bought.paid());
    let (seller, wallet) = (first.seller.clone(), first.wallet.clone());
    first.stop().await;

    // A restart: what is known comes from the ledger, not from this process's memory.
    let h = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        alice_limits: "{ max_price_increase_pct: 100 }".into(),
        store_yaml: db.yaml.clone(),
        reuse_seller: Some(seller),
        wallet: Some(wallet),
        ..Options::default()
    })
    .await;
    // The same service at 3x: refused, as before.
    h.seller.seller.rotate_root_key();
    h.seller.seller.set_price("q", Msat::from_sats(30));
    assert_declined(&get(&h, ALICE, "/q/x").await, "price-jump");
    // The same origin under another name at 1800x: refused as well.
    let renamed = get(&h, ALICE, "/q2/x").await;
    assert_declined(&renamed, "price-jump");
    let reason = renamed.header("x-l402-proxy-reason").unwrap_or_default();
    assert!(reason.contains("10 sat"), "{reason}");
    // A new service within the allowed increase (2x, exactly +100 %) is paid.
    let fair = get(&h, ALICE, "/q3/x").await;
    assert_eq!(fair.status, 200, "{fair:?}");
    assert!(fair.paid());
    // Bob has no price-jump limit and no history: the dear service is his to buy.
    assert!(get(&h, BOB, "/q2/x").await.paid());

    assert_eq!(h.payments(), 3, "q, q3 for alice and q2 for bob");
    assert_eq!(
        settled(&h, "alice").await,
        vec![("q3:0".to_string(), 20_000), ("q:0".to_string(), 10_000)]
    );
    assert_eq!(
        settled(&h, "bob").await,
        vec![("q2:0".to_string(), 18_000_000)]
    );
    assert_eq!(spent(&h, "alice").await, 30_000);
    assert_eq!(spent(&h, "bob").await, 18_000_000);
    assert_eq!(wallet_spent(&h), 18_030_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_service_is_still_a_price_jump_on_sqlite() {
    renamed_service_is_still_a_price_jump(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_service_is_still_a_price_jump_on_postgres() {
    renamed_service_is_still_a_price_jump(Store::Postgres).await;
}

async fn admin_json(h: &Harness, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let data = body.map(|b| b.to_string());
    let mut extra: Vec<&str> = vec!["-H", "Content-Type: application/json"];
    if let Some(d) = &data {
        extra.extend(["--data-binary", d.as_str()]);
    }
    let r = h.admin(Some(TOKEN), method, path, &extra).await;
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// Sends a request of alice in the background, waits until its payment is held, and decides it;
/// returns the agent's answer and the approval as it was listed.
async fn held_and_decided(h: &Harness, path: &str, approve: bool) -> (Reply, Value) {
    let (proxy, url) = (h.proxy, h.http_url(path));
    let waiting = tokio::spawn(async move {
        common::proxied(proxy, ALICE, http::Method::GET, &url, bytes::Bytes::new()).await
    });
    let mut held = Value::Null;
    for _ in 0..400 {
        let (status, v) = admin_json(h, "GET", "/v1/approvals", None).await;
        assert_eq!(status, 200, "{v}");
        if let Some(first) = v["approvals"].as_array().and_then(|a| a.first()) {
            held = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = held["id"]
        .as_str()
        .expect("the payment is held")
        .to_string();
    assert!(!waiting.is_finished(), "the request waits for the decision");
    let (status, v) = admin_json(
        h,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({ "approve": approve })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    (waiting.await.unwrap(), held)
}

/// Where the operator decides payments (`approve_above_sats`), a price jump is held for them
/// instead of refused outright: denied, nothing is paid; approved, it is paid once.
async fn a_price_jump_is_held_where_approvals_apply(store: Store) {
    let db = backing(store);
    let mut opts = Options {
        alice_limits: "{ max_price_increase_pct: 100, approve_above_sats: 100000 }".into(),
        admin_token: Some(TOKEN.into()),
        extra_yaml: "approval: { timeout_secs: 20 }".into(),
        store_yaml: db.yaml.clone(),
        ..Options::default()
    };
    opts.seller.price = Msat::from_sats(10);
    opts.seller
        .prices
        .insert("q2".into(), Msat::from_sats(18_000));
    let h = Harness::with(opts).await;
    let cheap = get(&h, ALICE, "/q/x").await;
    assert!(
        cheap.paid(),
        "under the approval threshold, no jump: {cheap:?}"
    );

    let (denied, held) = held_and_decided(&h, "/q2/x", false).await;
    assert_eq!(held["amount_msat"], 18_000_000, "{held}");
    assert_eq!(held["agent"], "alice", "{held}");
    assert_declined(&denied, "approval-denied");
    assert_eq!(h.payments(), 1, "nothing paid for a denied jump");

    let (approved, _) = held_and_decided(&h, "/q2/x", true).await;
    assert_eq!(approved.status, 200, "{approved:?}");
    assert!(approved.paid(), "{approved:?}");

    assert_eq!(h.payments(), 2);
    assert_eq!(
        settled(&h, "alice").await,
        vec![
            ("q2:0".to_string(), 18_000_000),
            ("q:0".to_string(), 10_000)
        ]
    );
    assert_eq!(spent(&h, "alice").await, 18_010_000);
    assert_eq!(wallet_spent(&h), 18_010_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_jump_is_held_where_approvals_apply_on_sqlite() {
    a_price_jump_is_held_where_approvals_apply(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_jump_is_held_where_approvals_apply_on_postgres() {
    a_price_jump_is_held_where_approvals_apply(Store::Postgres).await;
}

// ---- item 5: two services on one origin used alternately pay once each ----

/// a b a b a on one origin, where the server answers a token of the other service with a fresh
/// challenge: one payment per service.
async fn alternate(h: &Harness, who: (&str, &str)) {
    for (n, service) in ["a", "b", "a", "b", "a"].into_iter().enumerate() {
        let r = get(h, who, &format!("/svc/{service}")).await;
        assert_eq!(r.status, 200, "request {n} ({service}): {r:?}");
        assert_eq!(
            r.paid(),
            n < 2,
            "request {n} ({service}) pays only the first time: {r:?}"
        );
    }
}

async fn alternating_services_pay_once_each(store: Store) {
    let db = backing(store);
    let h = Harness::with(Options {
        store_yaml: db.yaml.clone(),
        pay_schemes: "[l402, payment, x402]".into(),
        ..Options::default()
    })
    .await;

    // A fresh agent.
    alternate(&h, BOB).await;
    assert_eq!(h.payments(), 2);
    assert_eq!(
        settled(&h, "bob").await,
        vec![
            ("svc-a:0".to_string(), 10_000),
            ("svc-b:0".to_string(), 10_000)
        ]
    );
    assert_eq!(spent(&h, "bob").await, 20_000);

    // An agent that already bought other services at that origin, in every dialect: L402,
    // LSAT-only, single-use (whose server answers the LSAT token tried there with a bare 401,
    // then the used-up token too: that service's tokens serve once), MPP, x402.
    for path in [
        "/weather/x",
        "/strict/a/x",
        "/single/a/x",
        "/single/a/x",
        "/mpp/x",
        "/x402/x",
    ] {
        let r = get(&h, ALICE, path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r.paid(), "{path}: {r:?}");
    }
    assert_eq!(h.payments(), 8);
    // No token was evicted by another service's refusal: bob's a and b, alice's weather and
    // LSAT tokens (the spent single-use one is gone, the MPP and x402 charges are never kept).
    assert_eq!(h.shared.layer.tokens().len(), 4);
    alternate(&h, ALICE).await;
    assert_eq!(h.payments(), 10, "a b a b a cost 2 payments");
    let rows = settled(&h, "alice").await;
    assert_eq!(rows.len(), 8, "{rows:?}");
    let svc: Vec<_> = rows.iter().filter(|(s, _)| s.starts_with("svc-")).collect();
    assert_eq!(
        svc,
        [
            &("svc-a:0".to_string(), 10_000),
            &("svc-b:0".to_string(), 10_000)
        ]
    );
    assert_eq!(spent(&h, "alice").await, 80_000);
    assert_eq!(wallet_spent(&h), 100_000);
    // Both tokens stay cached for their own paths.
    for service in ["a", "b"] {
        let r = get(&h, ALICE, &format!("/svc/{service}")).await;
        assert_eq!(r.header("x-l402-proxy-token"), Some("cached"), "{r:?}");
    }
    assert_eq!(h.payments(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_services_pay_once_each_on_sqlite() {
    alternating_services_pay_once_each(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_services_pay_once_each_on_postgres() {
    alternating_services_pay_once_each(Store::Postgres).await;
}

/// A challenge of a dialect that names no service (an MPP charge) on a path in a token's
/// directory does not evict the token: it stays for its own service's paths.
async fn another_dialect_in_the_directory_keeps_the_token(store: Store) {
    let db = backing(store);
    let h = Harness::with(Options {
        store_yaml: db.yaml.clone(),
        ..Options::default()
    })
    .await;
    for (n, (path, paid)) in [
        ("/svc/a", true),
        ("/svc/mpp", true),
        ("/svc/a", false),
        ("/svc/mpp", true),
        ("/svc/a", false),
    ]
    .into_iter()
    .enumerate()
    {
        let r = get(&h, BOB, path).await;
        assert_eq!(r.status, 200, "request {n} ({path}): {r:?}");
        assert_eq!(r.paid(), paid, "request {n} ({path}): {r:?}");
    }
    assert_eq!(h.payments(), 3, "a once, each MPP charge once");
    assert_eq!(
        settled(&h, "bob").await,
        vec![
            (String::new(), 10_000),
            (String::new(), 10_000),
            ("svc-a:0".to_string(), 10_000)
        ]
    );
    assert_eq!(spent(&h, "bob").await, 30_000);
    assert_eq!(wallet_spent(&h), 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_dialect_in_the_directory_keeps_the_token_on_sqlite() {
    another_dialect_in_the_directory_keeps_the_token(Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_dialect_in_the_directory_keeps_the_token_on_postgres() {
    another_dialect_in_the_directory_keeps_the_token(Store::Postgres).await;
}
