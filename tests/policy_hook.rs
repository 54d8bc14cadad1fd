//! The operator's policy service (`policy_hook`) end to end: a real HTTP receiver on 127.0.0.1
//! checks every request's signature and answers allow, deny (with a reason the agent gets),
//! hold (an approval the test grants through the admin API), sleeps past the timeout, fails, or
//! is down — fail-closed by default, fail-open when configured. A cached token never calls it.
//! Every case checks the wallet's payments and the ledger's rows. Runs on SQLite, and on
//! PostgreSQL under `L402_TEST_STORE=postgres` (`.ci/run`).

mod common;

use bytes::Bytes;
use common::policy::{hook_yaml, Mode, PolicyService, SECRET};
use common::{Harness, Options, Reply};
use l402_proxy::ledger::{DeclineFilter, PaymentFilter, PaymentState};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const TOKEN: &str = "policy-hook-admin-token";

async fn harness(hook: &PolicyService, extra: &str) -> Harness {
    Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ daily_sats: 1000 }".into(),
        extra_yaml: format!(
            "approval: {{ timeout_secs: 20 }}\n{}",
            hook_yaml(&hook.url(), extra)
        ),
        ..Options::default()
    })
    .await
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

/// Alice's payments in the ledger: (path-free service, state).
async fn ledger_rows(h: &Harness) -> Vec<(String, PaymentState)> {
    let mut rows: Vec<_> = h
        .shared
        .ledger
        .payments(PaymentFilter {
            agent: Some("alice".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.service.unwrap_or(r.scope), r.state))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The decline codes recorded for alice (a folded repeat once per refusal it stands for),
/// waiting briefly for the background writes.
async fn declines(h: &Harness, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let rows = h
            .shared
            .ledger
            .declines(DeclineFilter {
                agent: Some("alice".into()),
                limit: 100,
            })
            .await
            .unwrap();
        let codes: Vec<String> = rows
            .into_iter()
            .flat_map(|r| std::iter::repeat_n(r.code, r.count as usize))
            .collect();
        if codes.len() >= n {
            return codes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} declines never recorded");
}

fn reason(r: &Reply) -> &str {
    r.header("x-l402-proxy-reason").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_service_allows_denies_and_holds() {
    let hook = PolicyService::start().await;
    let h = harness(&hook, "").await;

    // allow: paid, after one signed request carrying what the operator decides on.
    let r = h.get(ALICE, &h.http_url("/a/x?q=1")).await;
    assert!(r.paid(), "{r:?}");
    assert_eq!(h.payments(), 1);
    let calls = hook.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert!(c.signed, "signed like a webhook: {c:?}");
    assert_eq!(c.event, "policy.check");
    let b = &c.body;
    assert_eq!(b["event"], "policy.check");
    assert!(b["id"].as_str().unwrap().starts_with("pol_"), "{b}");
    let at = b["at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - at).abs() < 60, "{b}");
    assert_eq!(b["agent"], "alice");
    assert_eq!(b["host"], format!("127.0.0.1:{}", h.seller.http.port()));
    assert_eq!(
        b["origin"],
        format!("http://127.0.0.1:{}", h.seller.http.port())
    );
    assert_eq!(b["path"], "/a/x", "the path, never the query");
    assert_eq!(b["service"], "a:0", "{b}");
    assert_eq!(b["dialect"], "l402");
    assert_eq!(b["amount_msat"], 10_000);
    assert_eq!(b["description"], "L402 a");
    assert_eq!(b["payment_hash"].as_str().unwrap().len(), 64);
    assert_eq!(b["budget"]["spent_msat"]["daily"], 0, "{b}");
    assert_eq!(b["budget"]["remaining_msat"]["daily"], 1_000_000, "{b}");
    assert_eq!(
        ledger_rows(&h).await,
        [("a:0".into(), PaymentState::Settled)]
    );

    // A cached token: served without asking the service again.
    let r = h.get(ALICE, &h.http_url("/a/y")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.paid(), "{r:?}");
    assert_eq!(h.payments(), 1);
    assert_eq!(
        hook.calls().len(),
        1,
        "a cached token never calls the service"
    );

    // deny: the seller's 402, code policy-denied, the service's reason (cleaned) passed on.
    hook.answer(Mode::Json(
        json!({"decision": "deny", "reason": "seller not on the list\u{202e}\u{7}"}),
    ));
    let r = h.get(ALICE, &h.http_url("/b/x")).await;
    assert_eq!(r.status, 402, "{r:?}");
    assert_eq!(r.decline(), Some("policy-denied"));
    assert!(
        reason(&r).contains("denied the payment: seller not on the list"),
        "{r:?}"
    );
    assert!(
        !reason(&r).contains('\u{202e}') && !reason(&r).contains('\u{7}'),
        "{r:?}"
    );
    assert_eq!(h.payments(), 1, "nothing paid");
    assert_eq!(hook.calls().len(), 2);
    assert_eq!(ledger_rows(&h).await.len(), 1, "no ledger row for a denial");
    assert_eq!(declines(&h, 1).await, ["policy-denied"]);

    // hold: an approval, even without approve_above_sats; approved, then paid.
    hook.answer(Mode::Json(
        json!({"decision": "hold", "reason": "first time at this seller"}),
    ));
    let (proxy, url) = (h.proxy, h.http_url("/c/x"));
    let waiting = tokio::spawn(async move {
        common::proxied(proxy, ALICE, http::Method::GET, &url, Bytes::new()).await
    });
    let mut held = Vec::new();
    for _ in 0..400 {
        let (status, v) = admin_json(&h, "GET", "/v1/approvals", None).await;
        assert_eq!(status, 200, "{v}");
        held = v["approvals"].as_array().cloned().unwrap_or_default();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(held.len(), 1, "held for approval");
    assert_eq!(held[0]["agent"], "alice");
    assert_eq!(held[0]["amount_msat"], 10_000);
    assert_eq!(h.payments(), 1, "nothing paid while held");
    let id = held[0]["id"].as_str().unwrap().to_string();
    let (status, v) = admin_json(
        &h,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({"approve": true})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = waiting.await.unwrap();
    assert!(r.paid(), "{r:?}");
    assert_eq!(h.payments(), 2);
    assert_eq!(
        ledger_rows(&h).await,
        [
            ("a:0".into(), PaymentState::Settled),
            ("c:0".into(), PaymentState::Settled)
        ]
    );
    assert_eq!(hook.calls().len(), 3);
    assert!(hook.calls().iter().all(|c| c.signed));

    // Bob too is asked (policy_hook.agents defaults to every agent), and denied.
    hook.answer(Mode::Json(json!({"decision": "deny"})));
    let r = h.get(BOB, &h.http_url("/d/x")).await;
    assert_eq!(r.decline(), Some("policy-denied"), "{r:?}");
    assert_eq!(h.payments(), 2);

    // What the operator sees: the status (API) and the metrics.
    let (status, st) = admin_json(&h, "GET", "/v1/status", None).await;
    assert_eq!(status, 200, "{st}");
    let p = &st["policy_hook"];
    assert_eq!(p["host"], "127.0.0.1", "{st}");
    assert_eq!(p["on_failure"], "deny");
    assert_eq!(p["timeout_ms"], 2000);
    assert_eq!(
        p["decisions"],
        json!({"allow": 1, "deny": 2, "hold": 1, "error": 0})
    );
    assert!(!st.to_string().contains(SECRET) && !st.to_string().contains("decide?k"));
    let metrics = h.shared.metrics_text();
    assert!(
        metrics.contains("l402_proxy_policy_hook_duration_seconds_count 4"),
        "{metrics}"
    );
    assert!(metrics.contains("l402_proxy_policy_hook_decisions_total{decision=\"deny\"} 2"));
    // The CLI (the real binary against the admin API) says the same.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_l402-proxy"))
        .arg("status")
        .env(
            "L402_PROXY_ADMIN_URL",
            format!("http://{}", h.admin.unwrap()),
        )
        .env("L402_PROXY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "policy hook       127.0.0.1 — fail-closed, 2000 ms; 1 allowed, 2 denied, 1 held, 0 failed"
        ),
        "{text}"
    );
    hook.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_service_failing_declines_by_default() {
    let hook = PolicyService::start().await;
    let h = harness(&hook, ", timeout_ms: 300").await;
    let unavailable = |r: &Reply| {
        assert_eq!(r.status, 402, "{r:?}");
        assert_eq!(r.decline(), Some("policy-unavailable"), "{r:?}");
    };

    // Too slow: declined at the timeout, not when the service would have answered.
    hook.answer(Mode::Sleep(Duration::from_secs(3)));
    let started = Instant::now();
    let r = h.get(ALICE, &h.http_url("/a/x")).await;
    unavailable(&r);
    assert!(reason(&r).contains("no answer within 300 ms"), "{r:?}");
    assert!(
        !reason(&r).contains("127.0.0.1"),
        "the service's address is not told: {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A server error, and answers that are not a decision.
    hook.answer(Mode::Status(500));
    let r = h.get(ALICE, &h.http_url("/b/x")).await;
    unavailable(&r);
    assert!(reason(&r).contains("it answered HTTP 500"), "{r:?}");
    hook.answer(Mode::Raw("allow"));
    let r = h.get(ALICE, &h.http_url("/c/x")).await;
    unavailable(&r);
    assert!(
        reason(&r).contains("its answer was not a decision"),
        "{r:?}"
    );
    hook.answer(Mode::Json(json!({"decision": "sure"})));
    unavailable(&h.get(ALICE, &h.http_url("/d/x")).await);
    assert_eq!(hook.calls().len(), 4);

    // Down.
    hook.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = h.get(ALICE, &h.http_url("/e/x")).await;
    unavailable(&r);
    assert!(reason(&r).contains("it could not be reached"), "{r:?}");

    assert_eq!(h.payments(), 0, "nothing paid");
    assert!(ledger_rows(&h).await.is_empty(), "no ledger rows");
    let codes = declines(&h, 5).await;
    assert!(codes.iter().all(|c| c == "policy-unavailable"), "{codes:?}");
    let (_, st) = admin_json(&h, "GET", "/v1/status", None).await;
    assert_eq!(st["policy_hook"]["decisions"]["error"], 5, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_service_failing_pays_when_configured_to_and_filters_apply() {
    let hook = PolicyService::start().await;
    let h = harness(&hook, ", on_failure: allow, agents: [\"ali*\"]").await;
    hook.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Down, but fail-open: paid, and recorded once.
    let r = h.get(ALICE, &h.http_url("/a/x")).await;
    assert!(r.paid(), "{r:?}");
    assert_eq!(h.payments(), 1);
    assert_eq!(
        ledger_rows(&h).await,
        [("a:0".into(), PaymentState::Settled)]
    );

    // Bob is outside policy_hook.agents: never asked, paid.
    let r = h.get(BOB, &h.http_url("/b/x")).await;
    assert!(r.paid(), "{r:?}");
    assert_eq!(h.payments(), 2);
    assert!(hook.calls().is_empty(), "{:?}", hook.calls());
    let (_, st) = admin_json(&h, "GET", "/v1/status", None).await;
    assert_eq!(st["policy_hook"]["on_failure"], "allow");
    assert_eq!(
        st["policy_hook"]["decisions"],
        json!({"allow": 0, "deny": 0, "hold": 0, "error": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_the_policy_service() {
    let hook = PolicyService::start().await;
    hook.answer(Mode::Json(
        json!({"decision": "deny", "reason": "closed today"}),
    ));
    let h = harness(&hook, "").await;
    let path = h.dir.join("config.yaml");
    let with_hook = std::fs::read_to_string(&path).unwrap();
    let config = |text: &str| {
        std::fs::write(&path, text).unwrap();
        l402_proxy::config::Config::load(&path).unwrap()
    };
    let first = config(&with_hook);
    let r = h.get(ALICE, &h.http_url("/a/x")).await;
    assert_eq!(r.decline(), Some("policy-denied"), "{r:?}");

    // Removed: paid without asking.
    let without: String = with_hook
        .lines()
        .filter(|l| !l.starts_with("policy_hook:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let second = config(&without);
    assert!(second.policy_hook.is_none());
    h.app.reload(&first, &second).await;
    let r = h.get(ALICE, &h.http_url("/b/x")).await;
    assert!(r.paid(), "{r:?}");
    assert_eq!(hook.calls().len(), 1);
    let (_, st) = admin_json(&h, "GET", "/v1/status", None).await;
    assert!(st["policy_hook"].is_null(), "{st}");

    // Back, fail-open this time, and the service down: asked (and failed), then paid.
    hook.stop();
    let third = config(&format!(
        "{without}{}",
        hook_yaml(&hook.url(), ", on_failure: allow, timeout_ms: 500")
    ));
    h.app.reload(&second, &third).await;
    let r = h.get(ALICE, &h.http_url("/c/x")).await;
    assert!(r.paid(), "{r:?}");
    let (_, st) = admin_json(&h, "GET", "/v1/status", None).await;
    assert_eq!(st["policy_hook"]["on_failure"], "allow", "{st}");
    assert_eq!(st["policy_hook"]["timeout_ms"], 500, "{st}");
    assert_eq!(st["policy_hook"]["decisions"]["error"], 1, "{st}");
    assert_eq!(h.payments(), 2);
    assert_eq!(
        ledger_rows(&h).await,
        [
            ("b:0".into(), PaymentState::Settled),
            ("c:0".into(), PaymentState::Settled)
        ]
    );
}
