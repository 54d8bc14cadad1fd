//! The money promise in field conditions, on both stores: a wallet slower than the payment
//! timeout while the agent retries, operators changing an agent while its payment waits for
//! approval, a paid single-use credential whose replay is reset, an agent that hangs up during
//! an approval. Every test runs once on SQLite and once on PostgreSQL (a throw-away cluster),
//! and asserts the wallet's payments, the ledger's rows and the spend exactly.

mod common;

use common::store::{backing, Backing, Store};
use common::{Harness, Options, Reply};
use l402_proxy::config::Limits;
use l402_proxy::ledger::{PaymentFilter, PaymentState};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ALICE: (&str, &str) = ("alice", "alice-key");
const TOKEN: &str = "field-admin-token";

/// A harness on one store, which lives as long as it.
struct Rig {
    h: Harness,
    _store: Backing,
}

impl std::ops::Deref for Rig {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

async fn rig(store: Store, mut opts: Options) -> Rig {
    let backing = backing(store);
    opts.store_yaml = backing.yaml.clone();
    Rig {
        h: Harness::with(opts).await,
        _store: backing,
    }
}

impl Rig {
    /// The ledger's payments of `agent` in `state`.
    async fn rows(&self, agent: &str, state: PaymentState) -> usize {
        self.shared
            .ledger
            .payments(PaymentFilter {
                agent: Some(agent.into()),
                state: Some(state),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    /// What `agent` has spent (settled amounts and fees, plus what pending ones hold).
    async fn spent(&self, agent: &str) -> u64 {
        let view = self
            .shared
            .ledger
            .budget(agent, &Limits::default())
            .await
            .unwrap();
        view.spent_msat.total.unwrap_or(0)
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut extra = vec!["-H", "content-type: application/json"];
        let body = body.map(|b| b.to_string());
        if let Some(b) = &body {
            extra.push("-d");
            extra.push(b);
        }
        self.admin(Some(TOKEN), method, path, &extra).await
    }

    /// Makes an API agent; returns its key.
    async fn api_agent(&self, name: &str, limits: Value) -> String {
        let r = self
            .api(
                "POST",
                "/v1/agents",
                Some(json!({"name": name, "limits": limits})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        v["key"].as_str().unwrap().to_string()
    }

    /// The pending approvals, once `n` are listed (within 10 s).
    async fn pending_approvals(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.api("GET", "/v1/approvals", None).await;
            let v: Value = serde_json::from_str(&r.body).unwrap();
            let list = v["approvals"].as_array().cloned().unwrap_or_default();
            if list.len() == n || Instant::now() > deadline {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn with_admin(o: Options) -> Options {
    Options {
        admin_token: Some(TOKEN.into()),
        extra_yaml: "approval: { timeout_secs: 30 }".into(),
        ..o
    }
}

// ---------------------------------------------------------------------------------------------
// A wallet slower than the payment timeout while the agent retries.

async fn slow_wallet_and_retries_pay_once(store: Store) {
    let o = Options {
        pay_delay: Duration::from_millis(3000),
        payment_timeout_secs: Some(1),
        ..Default::default()
    };
    let r = rig(store, o).await;
    let url = r.http_url("/weather/today");
    let started = Instant::now();
    let first = r.get(ALICE, &url).await;
    assert_eq!(first.status, 402, "{first:?}");
    assert_eq!(first.decline(), Some("payment-timeout"));
    // The seller answers the retry with a fresh invoice: not paid while the first is open.
    let second = r.get(ALICE, &url).await;
    assert_eq!(second.status, 402, "{second:?}");
    assert_eq!(second.decline(), Some("payment-in-flight"));
    assert!(second.header("retry-after").is_some(), "{second:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the retry waited past the settlement: {:?}",
        started.elapsed()
    );
    // Once the first settles, the retry is served with what it bought.
    tokio::time::sleep_until((started + Duration::from_millis(3600)).into()).await;
    let third = r.get(ALICE, &url).await;
    assert_eq!(third.status, 200, "{third:?}");
    assert_eq!(third.header("x-l402-proxy-token"), Some("cached"));
    assert_eq!(
        r.payments(),
        1,
        "one payment however often the agent retried"
    );
    assert_eq!(
        r.seller
            .seller
            .stats
            .challenges
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(r.rows("alice", PaymentState::Settled).await, 1);
    assert_eq!(r.rows("alice", PaymentState::Pending).await, 0);
    assert_eq!(r.rows("alice", PaymentState::Failed).await, 0);
    assert_eq!(r.spent("alice").await, 10_000, "10 sats, no fee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_wallet_and_retries_pay_once_sqlite() {
    slow_wallet_and_retries_pay_once(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_wallet_and_retries_pay_once_postgres() {
    slow_wallet_and_retries_pay_once(Store::Postgres).await
}

/// Concurrent retries while a payment is unresolved: still one payment.
async fn concurrent_retries_during_an_unresolved_payment(store: Store) {
    let o = Options {
        pay_delay: Duration::from_millis(2500),
        payment_timeout_secs: Some(1),
        ..Default::default()
    };
    let r = rig(store, o).await;
    let url = r.http_url("/stocks/today");
    let first = r.get(ALICE, &url).await;
    assert_eq!(first.decline(), Some("payment-timeout"));
    let retries: Vec<_> = (0..4)
        .map(|_| {
            let (proxy, url) = (r.proxy, url.clone());
            tokio::spawn(async move {
                common::proxied(proxy, ALICE, http::Method::GET, &url, bytes::Bytes::new()).await
            })
        })
        .collect();
    for t in retries {
        let reply = t.await.unwrap();
        assert_eq!(reply.status, 402);
        assert_eq!(reply.decline(), Some("payment-in-flight"), "{reply:?}");
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let served = r.get(ALICE, &url).await;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(r.payments(), 1);
    assert_eq!(r.rows("alice", PaymentState::Settled).await, 1);
    assert_eq!(r.spent("alice").await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_during_an_unresolved_payment_sqlite() {
    concurrent_retries_during_an_unresolved_payment(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_during_an_unresolved_payment_postgres() {
    concurrent_retries_during_an_unresolved_payment(Store::Postgres).await
}

// ---------------------------------------------------------------------------------------------
// The operator changes an agent while its payment waits for approval.

#[derive(Clone, Copy, Debug)]
enum Change {
    Pause,
    Delete,
    LowerLimits,
}

async fn changed_during_approval(store: Store, change: Change) {
    let r = rig(store, with_admin(Options::default())).await;
    let key = r
        .api_agent("carol", json!({"approve_above_sats": 5, "daily_sats": 100}))
        .await;
    let (proxy, url) = (r.proxy, r.http_url("/weather/today"));
    let held = tokio::spawn(async move {
        common::proxied(
            proxy,
            ("carol", &key),
            http::Method::GET,
            &url,
            bytes::Bytes::new(),
        )
        .await
    });
    let pending = r.pending_approvals(1).await;
    assert_eq!(pending.len(), 1, "the payment is held");
    let id = pending[0]["id"].as_str().unwrap().to_string();
    let expected = match change {
        Change::Pause => {
            let p = r
                .api("PATCH", "/v1/agents/carol", Some(json!({"paused": true})))
                .await;
            assert_eq!(p.status, 200, "{}", p.body);
            "approval-denied"
        }
        Change::Delete => {
            let d = r.api("DELETE", "/v1/agents/carol", None).await;
            assert_eq!(d.status, 204, "{}", d.body);
            "approval-denied"
        }
        Change::LowerLimits => {
            let p = r
                .api(
                    "PATCH",
                    "/v1/agents/carol",
                    Some(json!({"limits": {"daily_sats": 5}})),
                )
                .await;
            assert_eq!(p.status, 200, "{}", p.body);
            let a = r
                .api(
                    "POST",
                    &format!("/v1/approvals/{id}"),
                    Some(json!({"approve": true})),
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            "over-daily-limit"
        }
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held request is answered")
        .unwrap();
    assert_eq!(reply.status, 402, "{reply:?}");
    assert_eq!(reply.decline(), Some(expected), "{change:?}: {reply:?}");
    assert_eq!(r.payments(), 0, "nothing paid for a {change:?}");
    assert_eq!(r.rows("carol", PaymentState::Settled).await, 0);
    assert_eq!(r.rows("carol", PaymentState::Pending).await, 0);
    assert_eq!(r.spent("carol").await, 0);
    assert!(
        r.pending_approvals(0).await.is_empty(),
        "no approval stays listed"
    );
    if !matches!(change, Change::LowerLimits) {
        let decided = r.api("GET", &format!("/v1/approvals/{id}"), None).await;
        if decided.status == 200 {
            let v: Value = serde_json::from_str(&decided.body).unwrap();
            let by = match change {
                Change::Pause => "agent-paused",
                _ => "agent-deleted",
            };
            assert_eq!(v["decided_by"], by, "{}", decided.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_during_approval_pays_nothing_sqlite() {
    changed_during_approval(Store::Sqlite, Change::Pause).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_during_approval_pays_nothing_postgres() {
    changed_during_approval(Store::Postgres, Change::Pause).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_during_approval_pays_nothing_sqlite() {
    changed_during_approval(Store::Sqlite, Change::Delete).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_during_approval_pays_nothing_postgres() {
    changed_during_approval(Store::Postgres, Change::Delete).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_limits_during_approval_decide_the_payment_sqlite() {
    changed_during_approval(Store::Sqlite, Change::LowerLimits).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_limits_during_approval_decide_the_payment_postgres() {
    changed_during_approval(Store::Postgres, Change::LowerLimits).await
}

// ---------------------------------------------------------------------------------------------
// A paid single-use credential whose replay is reset.

/// `kept_header`: the credential is single-use as the proxy sees it (MPP, x402), so it is kept
/// for the retry; an L402 token is cached and serves the retry anyway.
async fn reset_paid_replay(
    store: Store,
    path: &str,
    schemes: &str,
    resets: u64,
    kept_header: bool,
) {
    let o = Options {
        pay_schemes: schemes.into(),
        ..Default::default()
    };
    let r = rig(store, o).await;
    let url = r.http_url(path);
    r.seller.seller.reset_next_paid(resets);
    let body = bytes::Bytes::from_static(b"{\"prompt\":\"one\"}");
    let first = common::proxied(r.proxy, ALICE, http::Method::POST, &url, body.clone()).await;
    let expected_payments = 1;
    if resets >= 2 {
        // Both sends of the paid replay were reset: the agent hears so, and the credential is
        // kept for its retry of the same request.
        assert_eq!(first.status, 502, "{first:?}");
        if kept_header {
            assert_eq!(
                first.header("x-l402-proxy-credential-kept"),
                Some("retry"),
                "{first:?}"
            );
        }
        let retry = common::proxied(r.proxy, ALICE, http::Method::POST, &url, body.clone()).await;
        assert_eq!(retry.status, 200, "{retry:?}");
        assert!(!retry.paid(), "served by the kept credential: {retry:?}");
    } else {
        // One reset: the replay is sent once more and served.
        assert_eq!(first.status, 200, "{first:?}");
        assert!(first.paid());
    }
    assert_eq!(r.payments(), expected_payments);
    assert_eq!(r.rows("alice", PaymentState::Settled).await, 1);
    assert_eq!(r.spent("alice").await, 10_000);
    // Another request (another body) is another purchase: paid on its own.
    let other = common::proxied(
        r.proxy,
        ALICE,
        http::Method::POST,
        &url,
        bytes::Bytes::from_static(b"{\"prompt\":\"two\"}"),
    )
    .await;
    assert_eq!(other.status, 200, "{other:?}");
    assert!(other.paid());
    assert_eq!(r.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_replay_reset_twice_costs_one_payment_sqlite() {
    reset_paid_replay(Store::Sqlite, "/mpp/gen", "[l402, payment]", 2, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_replay_reset_twice_costs_one_payment_postgres() {
    reset_paid_replay(Store::Postgres, "/mpp/gen", "[l402, payment]", 2, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_replay_reset_once_is_sent_again_sqlite() {
    reset_paid_replay(Store::Sqlite, "/x402/gen", "[x402]", 1, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_replay_reset_twice_costs_one_payment_postgres() {
    reset_paid_replay(Store::Postgres, "/x402/gen", "[x402]", 2, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_l402_replay_reset_twice_costs_one_payment_sqlite() {
    reset_paid_replay(Store::Sqlite, "/single/tool", "[l402]", 2, false).await
}

// ---------------------------------------------------------------------------------------------
// An agent that hangs up while its single-use payment waits for approval.

async fn hang_up_during_approval(store: Store) {
    let o = with_admin(Options {
        alice_limits: "{ approve_above_sats: 5 }".into(),
        ..Default::default()
    });
    let r = rig(store, o).await;
    let url = r.http_url("/mpp/gen");
    let args = vec![
        "--proxy".to_string(),
        r.proxy_url(Some(ALICE)),
        "--max-time".into(),
        "1".into(),
        url,
    ];
    let hung_up = common::curl(&args).await;
    assert_eq!(hung_up.status, 0, "curl gave up: {hung_up:?}");
    // The hold is cancelled once the proxy notices (within its poll), and nothing is paid.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r.pending_approvals(0).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        r.pending_approvals(0).await.is_empty(),
        "the hold was cancelled"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.payments(), 0);
    assert_eq!(r.rows("alice", PaymentState::Settled).await, 0);
    assert_eq!(r.spent("alice").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_approval_of_a_single_use_credential_sqlite() {
    hang_up_during_approval(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_approval_of_a_single_use_credential_postgres() {
    hang_up_during_approval(Store::Postgres).await
}
