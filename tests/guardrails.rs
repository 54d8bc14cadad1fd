//! Guardrails end to end: approvals (approved, denied, timed out) paying from a REAL LNbits,
//! budget threshold alerts once per window, a webhook that is down, 429s with Retry-After and
//! recovery, the price-jump refusal, and the wallet's balance gauge — with a real webhook
//! receiver on 127.0.0.1 checking every signature.

mod common;

use common::lnbits::{lnbits, TestWallet};
use common::webhooks::{alerts_yaml, secret_var, Receiver};
use common::{Harness, Options, Reply};
use l402_proxy::core::money::Msat;
use l402_proxy::core::time::ManualClock;
use l402_proxy::demo::mint::DevInvoiceMinter;
use l402_proxy::demo::seller::{InvoiceSource, SellerConfig};
use l402_proxy::guardrails::watch::Intervals;
use l402_proxy::invoice::Network;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const TOKEN: &str = "guardrails-admin-token";

fn quick_watch() -> Intervals {
    Intervals {
        balance: Duration::from_millis(200),
        store: Duration::from_millis(200),
        stuck: Duration::from_secs(60),
        stuck_after: Duration::from_secs(300),
    }
}

async fn admin_json(h: &Harness, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let data = body.map(|b| b.to_string());
    let mut extra: Vec<&str> = vec!["-H", "Content-Type: application/json"];
    if let Some(d) = &data {
        extra.extend(["--data-binary", d.as_str()]);
    }
    let r = h.admin(Some(TOKEN), method, path, &extra).await;
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// Waits until `n` approvals are pending; returns them.
async fn pending(h: &Harness, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let (status, v) = admin_json(h, "GET", "/v1/approvals", None).await;
        assert_eq!(status, 200, "{v}");
        let rows = v["approvals"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} approvals never became pending");
}

/// A proxy paying through the lnbits backend from `payer`, the seller's invoices on LNbits.
async fn lnbits_harness(payer: &TestWallet, alice_limits: &str, extra_yaml: String) -> Harness {
    let l = lnbits(false).expect("checked by the caller");
    let var = format!("L402_TEST_LNBITS_KEY_{}", rand::random::<u32>());
    // SAFETY (edition 2021: a safe fn): a unique variable, set before the proxy reads it.
    std::env::set_var(&var, &payer.admin);
    let mut seller = SellerConfig::new(DevInvoiceMinter::new(common::SECRET, Network::Bitcoin));
    seller.invoices = InvoiceSource::Lnbits(Box::new(l.first.seller_invoices()));
    seller.price = Msat::from_sats(21);
    seller.prices.insert("cheap".into(), Msat::from_sats(5));
    Harness::with(Options {
        seller,
        wallet_yaml: Some(format!(
            "{{ backend: lnbits, network: bitcoin, max_fee_sats: 2, lnbits: {{ url: '{}', admin_key_env: {var} }}, payment_timeout_secs: 30 }}",
            payer.url
        )),
        alice_limits: alice_limits.into(),
        admin_token: Some(TOKEN.into()),
        extra_yaml,
        watch_every: Some(quick_watch()),
        ..Options::default()
    })
    .await
}

fn spawn_get(
    h: &Harness,
    creds: (&'static str, &'static str),
    path: &str,
) -> tokio::task::JoinHandle<Reply> {
    let (proxy, url) = (h.proxy, h.http_url(path));
    tokio::spawn(async move {
        common::proxied(proxy, creds, http::Method::GET, &url, bytes::Bytes::new()).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_above_the_threshold_wait_for_the_operator() {
    let Some(_) = lnbits(false) else { return };
    let l = lnbits(false).unwrap();
    let payer = TestWallet::new(&l.first, 1_000).await;
    let hook = Receiver::start().await;
    let var = secret_var();
    let h = lnbits_harness(
        &payer,
        "{ approve_above_sats: 10 }",
        format!(
            "approval: {{ timeout_secs: 3 }}\n{}",
            alerts_yaml(&hook.url(), &var, "[\"approval.*\", \"payment.*\"]", "")
        ),
    )
    .await;
    let start = payer.balance_msat().await;

    // Under the threshold: paid at once, nothing held.
    let cheap = h.curl(Some(ALICE), &h.http_url("/cheap/x"), &[]).await;
    assert!(cheap.paid(), "{cheap:?}");
    let after_cheap = payer.balance_msat().await;
    assert!(after_cheap <= start - 5_000, "{start} → {after_cheap}");

    // Approved: the agent's request waits, then completes paid.
    let waiting = spawn_get(&h, ALICE, "/a/x");
    let held = pending(&h, 1).await;
    let held = &held[0];
    assert_eq!(held["agent"], "alice");
    assert_eq!(held["amount_msat"], 21_000);
    assert_eq!(held["state"], "pending");
    assert!(
        held["host"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{held}"
    );
    let id = held["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"), "{id}");
    assert!(
        !waiting.is_finished(),
        "the agent's request waits for the decision"
    );
    let requested = hook
        .wait_for("approval.requested", 1, Duration::from_secs(5))
        .await;
    assert_eq!(requested.len(), 1, "{:?}", hook.deliveries());
    assert_eq!(requested[0]["approval_id"], id.as_str());
    assert_eq!(requested[0]["amount_msat"], 21_000);
    assert!(
        hook.deliveries().iter().all(|d| d.signed),
        "every delivery is signed"
    );
    let (status, decided) = admin_json(
        &h,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({"approve": true})),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["state"], "approved");
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.paid());
    let after_approved = payer.balance_msat().await;
    assert!(after_approved <= after_cheap - 21_000);
    // Decided once: a second, different decision is refused.
    let (status, v) = admin_json(
        &h,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({"approve": false})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already approved"),
        "{v}"
    );

    // Denied: the 402 with approval-denied, nothing paid.
    let waiting = spawn_get(&h, ALICE, "/b/x");
    let id = pending(&h, 1).await[0]["id"].as_str().unwrap().to_string();
    let (status, _) = admin_json(
        &h,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({"approve": false})),
    )
    .await;
    assert_eq!(status, 200);
    let reply = waiting.await.unwrap();
    assert_eq!(reply.status, 402, "{reply:?}");
    assert_eq!(reply.decline(), Some("approval-denied"));
    assert_eq!(payer.balance_msat().await, after_approved, "nothing paid");

    // Nobody answers: approval-timeout after approval.timeout_secs, nothing paid.
    let started = std::time::Instant::now();
    let reply = h.get(ALICE, &h.http_url("/c/x")).await;
    assert_eq!(reply.decline(), Some("approval-timeout"), "{reply:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    assert_eq!(payer.balance_msat().await, after_approved, "nothing paid");
    assert!(pending(&h, 0).await.is_empty(), "nothing left waiting");
    let (status, _) = admin_json(
        &h,
        "POST",
        "/v1/approvals/apr_nope",
        Some(json!({"approve": true})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, v) = admin_json(&h, "POST", "/v1/approvals/x", Some(json!({"yes": 1}))).await;
    assert_eq!(status, 400, "{v}");

    let decided = hook
        .wait_for("approval.decided", 3, Duration::from_secs(5))
        .await;
    assert_eq!(decided.len(), 3, "{decided:?}");
    assert_eq!(decided[0]["approved"], true);
    assert_eq!(decided[1]["approved"], false);
    assert_eq!(decided[1]["by"], "admin");
    assert_eq!(decided[2]["approved"], false);
    assert_eq!(decided[2]["by"], "timeout");
    let (_, audit) = admin_json(&h, "GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["approval", "approval"], "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balance_gauge_follows_the_wallet_and_a_low_wallet_alerts() {
    let Some(l) = lnbits(false) else { return };
    let payer = TestWallet::new(&l.first, 100).await;
    let hook = Receiver::start().await;
    let var = secret_var();
    let h = lnbits_harness(
        &payer,
        "{}",
        alerts_yaml(
            &hook.url(),
            &var,
            "[\"wallet.*\"]",
            "  wallet_low_sats: 90\n",
        ),
    )
    .await;
    let gauge = |h: &Harness| {
        let h_admin = h.admin;
        async move {
            let r = common::curl(&[format!("http://{}/metrics", h_admin.unwrap())]).await;
            r.body
                .lines()
                .find_map(|l| l.strip_prefix("l402_proxy_wallet_balance_msat "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        }
    };
    let mut seen = None;
    for _ in 0..100 {
        seen = gauge(&h).await;
        if seen == Some(100_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(100_000), "the gauge shows the funded float");
    let (_, status) = admin_json(&h, "GET", "/v1/status", None).await;
    assert_eq!(status["wallet"]["balance_msat"], 100_000, "{status}");
    assert!(hook.of("wallet.low").is_empty());

    // Two payments: 100 → 79 → 58 sat (+ fees): the gauge follows and, below 90, one alert.
    assert!(h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await.paid());
    assert!(h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await.paid());
    let expected = payer.balance_msat().await;
    let mut seen = None;
    for _ in 0..100 {
        seen = gauge(&h).await;
        if seen == Some(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(expected), "the gauge moved with the payments");
    let low = hook.wait_for("wallet.low", 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let low_now = hook.of("wallet.low");
    assert_eq!(low_now.len(), 1, "once per crossing: {low:?}");
    assert_eq!(low_now[0]["threshold_msat"], 90_000);
    assert!(low_now[0]["balance_msat"].as_u64().unwrap() < 90_000);
    assert_eq!(low_now[0]["backend"], "lnbits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_thresholds_alert_once_per_window() {
    let clock = Arc::new(ManualClock::new(1_796_083_200 + 3_600)); // a Tuesday, 01:00 UTC
    let hook = Receiver::start().await;
    let var = secret_var();
    let h = Harness::with(Options {
        clock: Some(clock.clone()),
        max_fee_sats: 0,
        alice_limits: "{ daily_sats: 100 }".into(),
        operator_limits: "{ total_sats: 1000 }".into(),
        extra_yaml: alerts_yaml(
            &hook.url(),
            &var,
            "[\"budget.*\"]",
            "  budget_thresholds: [50, 80, 100]\n",
        ),
        ..Options::default()
    })
    .await;
    let pay = |i: usize| {
        let h = &h;
        async move {
            let r = h.get(ALICE, &h.http_url(&format!("/s{i}/x"))).await;
            assert!(r.paid(), "{r:?}");
        }
    };
    for i in 0..4 {
        pay(i).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hook.of("budget.threshold").is_empty(),
        "40 % of the day: nothing yet"
    );
    pay(4).await; // 50 %
    let got = hook
        .wait_for("budget.threshold", 1, Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["scope"], "agent");
    assert_eq!(got[0]["agent"], "alice");
    assert_eq!(got[0]["limit"], "daily");
    assert_eq!(got[0]["percent"], 50);
    assert_eq!(got[0]["spent_msat"], 50_000);
    assert_eq!(got[0]["limit_msat"], 100_000);
    pay(5).await;
    pay(6).await; // 70 %: nothing new
    pay(7).await; // 80 %
    for i in 8..10 {
        pay(i).await; // 100 %
    }
    let over = h.get(ALICE, &h.http_url("/s10/x")).await;
    assert_eq!(over.decline(), Some("over-daily-limit"));
    let got = hook
        .wait_for("budget.threshold", 3, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice: Vec<Value> = hook
        .of("budget.threshold")
        .into_iter()
        .filter(|e| e["scope"] == "agent")
        .collect();
    let percents: Vec<u64> = alice
        .iter()
        .map(|e| e["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(percents, [50, 80, 100], "each once: {got:?}");

    // The next day is a new window: 50 % again, once.
    clock.advance(86_400);
    for i in 20..25 {
        pay(i).await;
    }
    let alice_again = hook
        .wait_for("budget.threshold", 4, Duration::from_secs(5))
        .await;
    let last = alice_again.last().unwrap();
    assert_eq!(last["percent"], 50, "{alice_again:?}");
    assert_ne!(last["window_start"], alice[0]["window_start"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The operator's total (1000 sat): 150 sat spent, 15 % — no operator event.
    assert!(hook
        .of("budget.threshold")
        .iter()
        .all(|e| e["scope"] == "agent"));
    assert_eq!(hook.of("budget.threshold").len(), 4);
    assert!(hook
        .deliveries()
        .iter()
        .all(|d| d.signed && d.event_header == "budget.threshold"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_is_retried_and_never_holds_up_requests() {
    // A port nobody listens on (yet).
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let var = secret_var();
    let h = Harness::with(Options {
        max_fee_sats: 0,
        alice_limits: "{ total_sats: 20 }".into(),
        extra_yaml: alerts_yaml(
            &format!("http://{addr}/hook"),
            &var,
            "[\"*\"]",
            "  budget_thresholds: [50]\n",
        ),
        ..Options::default()
    })
    .await;
    // Requests go on while the webhook is down.
    let started = std::time::Instant::now();
    assert!(h.get(ALICE, &h.http_url("/a/x")).await.paid());
    assert!(h.get(ALICE, &h.http_url("/b/x")).await.paid());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // It comes back: the retried delivery arrives.
    let hook = Receiver::start_at(addr).await;
    let got = hook
        .wait_for("budget.threshold", 1, Duration::from_secs(15))
        .await;
    assert_eq!(got.len(), 1, "{:?}", hook.deliveries());
    assert_eq!(
        got[0]["percent"], 50,
        "reached by the first payment, announced once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.of("budget.threshold").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_and_recover() {
    let clock = Arc::new(ManualClock::new(1_796_083_200));
    let h = Harness::with(Options {
        clock: Some(clock.clone()),
        alice_limits: "{ requests_per_minute: 3 }".into(),
        bob_limits: "{ payments_per_minute: 2, max_connections: 1 }".into(),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get(ALICE, &h.http_url("/free/x")).await.status, 200);
    }
    let limited = h.get(ALICE, &h.http_url("/free/x")).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.header("retry-after"), Some("20"));
    assert_eq!(limited.decline(), Some("rate-limited"));
    assert!(limited
        .header("x-l402-proxy-reason")
        .unwrap()
        .contains("requests_per_minute"));
    // Bob is not alice: his bucket is his own.
    assert_eq!(h.get(BOB, &h.http_url("/free/x")).await.status, 200);
    clock.advance(20);
    assert_eq!(h.get(ALICE, &h.http_url("/free/x")).await.status, 200);
    assert_eq!(h.get(ALICE, &h.http_url("/free/x")).await.status, 429);

    // Payments: two a minute, then 429 (the seller's 402 is not shown), nothing paid.
    assert!(h.get(BOB, &h.http_url("/p1/x")).await.paid());
    assert!(h.get(BOB, &h.http_url("/p2/x")).await.paid());
    let limited = h.get(BOB, &h.http_url("/p3/x")).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.header("retry-after"), Some("30"));
    assert!(limited
        .header("x-l402-proxy-reason")
        .unwrap()
        .contains("payments_per_minute"));
    assert_eq!(h.payments(), 2);
    // Free traffic is not a payment.
    assert_eq!(h.get(BOB, &h.http_url("/free/x")).await.status, 200);
    clock.advance(30);
    assert!(h.get(BOB, &h.http_url("/p3/x")).await.paid());

    // One connection at a time for bob: a second while a tunnel is open is refused.
    let mut tunnel = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = base64_basic("bob", "bob-key");
    tunnel
        .write_all(
            format!(
                "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: {auth}\r\n\r\n",
                port = h.seller.https.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tunnel.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let second = h.get(BOB, &h.http_url("/free/y")).await;
    assert_eq!(second.status, 429, "{second:?}");
    assert!(second
        .header("x-l402-proxy-reason")
        .unwrap()
        .contains("max_connections"));
    drop(tunnel);
    let mut ok = false;
    for _ in 0..50 {
        if h.get(BOB, &h.http_url("/free/y")).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the slot is freed when the tunnel closes");
}

fn base64_basic(user: &str, key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_jump_is_refused_and_alerted() {
    let hook = Receiver::start().await;
    let var = secret_var();
    let h = Harness::with(Options {
        alice_limits: "{ max_price_increase_pct: 200 }".into(),
        extra_yaml: alerts_yaml(&hook.url(), &var, "[\"price.jump\"]", ""),
        ..Options::default()
    })
    .await;
    assert!(h.get(ALICE, &h.http_url("/weather/x")).await.paid());
    // The seller forgets its tokens and raises the price a hundredfold.
    h.seller.seller.rotate_root_key();
    h.seller.seller.set_price("weather", Msat::from_sats(1_000));
    let jumped = h.get(ALICE, &h.http_url("/weather/x")).await;
    assert_eq!(jumped.status, 402, "{jumped:?}");
    assert_eq!(jumped.decline(), Some("price-jump"));
    let reason = jumped.header("x-l402-proxy-reason").unwrap();
    assert!(
        reason.contains("10 sat") && reason.contains("1000 sat"),
        "{reason}"
    );
    assert_eq!(h.payments(), 1);
    let alert = hook.wait_for("price.jump", 1, Duration::from_secs(5)).await;
    assert_eq!(alert.len(), 1);
    assert_eq!(alert[0]["agent"], "alice");
    assert_eq!(
        alert[0]["service"], "weather:0",
        "the service the macaroon names"
    );
    assert_eq!(alert[0]["last_msat"], 10_000);
    assert_eq!(alert[0]["new_msat"], 1_000_000);
    assert_eq!(alert[0]["increase_pct"], 9_900);
    // Bob has no such limit; a rise within 200 % is paid.
    assert!(h.get(BOB, &h.http_url("/weather/x")).await.paid());
    h.seller.seller.set_price("weather", Msat::from_sats(25));
    let within = h.get(ALICE, &h.http_url("/weather/x")).await;
    assert!(within.paid(), "{within:?}");
    // The last price is kept in the ledger: a restart remembers it.
    assert_eq!(h.payments(), 3);
}

/// Approving twice (a double click, a retried request, two operators) is one decision: both
/// answers are 200 with the same record, and `approval.decided` is announced once — receivers
/// that deduplicate by delivery id would otherwise count two. The audit log has one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_identical_decision_is_a_no_op() {
    let hook = Receiver::start().await;
    let var = secret_var();
    let h = Harness::with(Options {
        alice_limits: "{ approve_above_sats: 1 }".into(),
        admin_token: Some(TOKEN.into()),
        extra_yaml: format!(
            "approval: {{ timeout_secs: 20 }}\n{}",
            alerts_yaml(&hook.url(), &var, "[\"approval.*\"]", "")
        ),
        ..Options::default()
    })
    .await;
    let waiting = spawn_get(&h, ALICE, "/a/x");
    let id = pending(&h, 1).await[0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/approvals/{id}");
    let (first, second) = tokio::join!(
        admin_json(&h, "POST", &path, Some(json!({"approve": true}))),
        admin_json(&h, "POST", &path, Some(json!({"approve": true}))),
    );
    let (third, _) = admin_json(&h, "POST", &path, Some(json!({"approve": true}))).await;
    assert_eq!(
        (first.0, second.0, third),
        (200, 200, 200),
        "{first:?} {second:?}"
    );
    assert_eq!(first.1["state"], "approved");
    assert_eq!(second.1["state"], "approved");
    let reply = waiting.await.unwrap();
    assert!(reply.paid(), "{reply:?}");
    assert_eq!(h.payments(), 1, "paid once");
    hook.wait_for("approval.decided", 1, Duration::from_secs(5))
        .await;
    // Time for a second (wrong) event to arrive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let decided = hook.of("approval.decided");
    assert_eq!(decided.len(), 1, "announced once: {decided:?}");
    assert_eq!(decided[0]["approved"], true);
    let (_, audit) = admin_json(&h, "GET", "/v1/audit", None).await;
    let approvals = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "approval")
        .count();
    assert_eq!(approvals, 1, "{audit}");
}
