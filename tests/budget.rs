//! Budgets, the ledger and the admin API, end to end through the proxy on 127.0.0.1.

mod common;

use bytes::Bytes;
use common::{proxied, Harness, Options};
use l402_proxy::core::time::ManualClock;
use l402_proxy::core::window::Window;
use std::sync::Arc;

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const TOKEN: &str = "admin-secret-token";

/// Fires `n` concurrent requests of one agent, each to a different service (so each needs its
/// own payment); returns how many were paid and the decline codes of the rest.
async fn storm(h: &Harness, agent: &'static str, n: usize) -> (usize, Vec<String>) {
    let key: &'static str = Box::leak(format!("{agent}-key").into_boxed_str());
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = h.http_url(&format!("/svc{i}/x"));
            let proxy = h.proxy;
            tokio::spawn(async move {
                proxied(proxy, (agent, key), http::Method::GET, &url, Bytes::new()).await
            })
        })
        .collect();
    let (mut paid, mut declined) = (0, Vec::new());
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            assert!(r.paid());
            paid += 1;
        } else {
            assert_eq!(r.status, 402, "{r:?}");
            declined.push(r.decline().unwrap_or("none").to_string());
        }
    }
    (paid, declined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_agents_spend_exactly_up_to_their_limits() {
    // 10 sat per service, no fee reserve: a 50-sat budget is exactly five payments.
    let agents: Vec<(String, String)> = (0..4)
        .map(|i| (format!("racer{i}"), "{ total_sats: 50 }".to_string()))
        .collect();
    let h = Harness::with(Options {
        max_fee_sats: 0,
        extra_agents: agents.clone(),
        ..Options::default()
    })
    .await;
    let storms: Vec<_> = ["racer0", "racer1", "racer2", "racer3"]
        .into_iter()
        .map(|name| storm(&h, name, 25))
        .collect();
    let results = futures_util::future::join_all(storms).await;
    for (paid, declined) in results {
        assert_eq!(paid, 5);
        assert_eq!(declined.len(), 20);
        assert!(
            declined.iter().all(|d| d == "over-total-limit"),
            "{declined:?}"
        );
    }
    assert_eq!(h.payments(), 20);
    let agents = h.shared.agents.load();
    for i in 0..4 {
        let a = agents.get(&format!("racer{i}")).unwrap();
        let view = h.shared.ledger.budget(&a.name, &a.limits).await.unwrap();
        assert_eq!(view.spent_msat.total, Some(50_000));
        assert_eq!(view.remaining_msat.total, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cap_binds_all_agents_together_exactly() {
    let agents: Vec<(String, String)> = (0..3)
        .map(|i| (format!("racer{i}"), "{}".to_string()))
        .collect();
    let h = Harness::with(Options {
        max_fee_sats: 0,
        extra_agents: agents,
        operator_limits: "{ daily_sats: 70 }".into(),
        ..Options::default()
    })
    .await;
    let results =
        futures_util::future::join_all(["racer0", "racer1", "racer2"].map(|n| storm(&h, n, 15)))
            .await;
    let paid: usize = results.iter().map(|r| r.0).sum();
    assert_eq!(paid, 7);
    assert!(results
        .iter()
        .flat_map(|r| &r.1)
        .all(|d| d == "operator-over-daily-limit"));
    assert_eq!(h.payments(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_reserve_is_held_while_paying_and_given_back_after() {
    // 10 sat price + 10 sat fee reserve: each payment needs 20 sats of room, and gives back
    // the unused reserve when it settles with its real (zero) fee.
    let h = Harness::with(Options {
        alice_limits: "{ total_sats: 30 }".into(),
        ..Options::default()
    })
    .await;
    assert!(h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await.paid());
    assert!(h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await.paid());
    // 20 spent; 10 + 10 reserve would pass 30.
    let r = h.curl(Some(ALICE), &h.http_url("/c/x"), &[]).await;
    assert_eq!(r.decline(), Some("over-total-limit"));
    assert_eq!(h.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_window_rolls_over_with_the_clock() {
    let clock = Arc::new(ManualClock::new(1_795_269_910));
    let h = Harness::with(Options {
        max_fee_sats: 0,
        alice_limits: "{ hourly_sats: 10, daily_sats: 25 }".into(),
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let first = h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await;
    assert!(first.paid(), "{first:?}");
    assert_eq!(
        first.header("x-l402-proxy-remaining-msat"),
        Some("0"),
        "hourly is the tightest"
    );
    let second = h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await;
    assert_eq!(second.decline(), Some("over-hourly-limit"));
    clock.set(Window::Hour.end(clock_now(&clock)));
    assert!(h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await.paid());
    clock.advance(3600);
    let third = h.curl(Some(ALICE), &h.http_url("/c/x"), &[]).await;
    assert_eq!(
        third.decline(),
        Some("over-daily-limit"),
        "20 of 25 spent today"
    );
    clock.set(Window::Day.end(clock_now(&clock)));
    assert!(h.curl(Some(ALICE), &h.http_url("/c/x"), &[]).await.paid());
}

fn clock_now(clock: &ManualClock) -> i64 {
    use l402_proxy::core::time::Clock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_spend_and_tokens() {
    let dir = common::temp_dir("restart");
    let first = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        alice_limits: "{ daily_sats: 100 }".into(),
        ..Options::default()
    })
    .await;
    assert!(first
        .curl(Some(ALICE), &first.https_url("/weather/a"), &[])
        .await
        .paid());
    assert!(first
        .curl(Some(ALICE), &first.http_url("/stocks/a"), &[])
        .await
        .paid());
    first.shared.ledger.flush().await.unwrap();
    let seller = first.seller.clone();
    let wallet = first.wallet.clone();
    first.stop().await;

    let second = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        reuse_seller: Some(seller),
        wallet: Some(wallet),
        alice_limits: "{ daily_sats: 100 }".into(),
        ..Options::default()
    })
    .await;
    let again = second
        .curl(Some(ALICE), &second.https_url("/weather/a"), &[])
        .await;
    assert_eq!(again.status, 200);
    assert!(!again.paid(), "the token survived the restart");
    assert!(!second
        .curl(Some(ALICE), &second.http_url("/stocks/b"), &[])
        .await
        .paid());
    assert_eq!(second.payments(), 2);
    let agents = second.shared.agents.load();
    let alice = agents.get("alice").unwrap();
    let view = second
        .shared
        .ledger
        .budget(&alice.name, &alice.limits)
        .await
        .unwrap();
    assert_eq!(
        view.spent_msat.daily,
        Some(20_000),
        "spend survived the restart"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_only_their_own_budget_through_the_proxy() {
    let h = Harness::with(Options {
        alice_limits: "{ daily_sats: 100 }".into(),
        bob_limits: "{ total_sats: 7 }".into(),
        ..Options::default()
    })
    .await;
    assert!(h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await.paid());
    let mine = h
        .curl(Some(ALICE), "http://l402-proxy.local/balance", &[])
        .await;
    assert_eq!(mine.status, 200);
    let v: serde_json::Value = serde_json::from_str(&mine.body).unwrap();
    assert_eq!(v["agent"], "alice");
    assert_eq!(v["limits"]["daily_sats"], 100);
    assert_eq!(v["spent_msat"]["daily"], 10_000);
    assert_eq!(v["remaining_msat"]["daily"], 90_000);
    assert!(!mine.body.contains("bob"));
    let theirs = h
        .curl(Some(BOB), "https://l402-proxy.local/balance", &[])
        .await;
    assert_eq!(theirs.status, 200, "{theirs:?}");
    let v: serde_json::Value = serde_json::from_str(&theirs.body).unwrap();
    assert_eq!(v["agent"], "bob");
    assert_eq!(v["remaining_msat"]["total"], 7_000);
    assert!(!theirs.body.contains("alice"));
    let anonymous = h.curl(None, "http://l402-proxy.local/balance", &[]).await;
    assert_eq!(anonymous.status, 407);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_and_manages_budgets() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ total_sats: 25 }".into(),
        ..Options::default()
    })
    .await;
    assert_eq!(h.admin(None, "GET", "/healthz", &[]).await.status, 200);
    assert_eq!(h.admin(None, "GET", "/readyz", &[]).await.status, 200);
    for token in [None, Some("wrong")] {
        for path in ["/v1/agents", "/v1/payments"] {
            let r = h.admin(token, "GET", path, &[]).await;
            assert_eq!(r.status, 401, "{path} {token:?}");
        }
        assert_eq!(
            h.admin(
                token,
                "POST",
                "/v1/agents/alice/budget",
                &["-d", r#"{"add_sats":1000}"#]
            )
            .await
            .status,
            401
        );
    }
    assert!(h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await.paid());
    let over = h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await;
    assert_eq!(over.decline(), Some("over-total-limit"));

    let agents = h.admin(Some(TOKEN), "GET", "/v1/agents", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&agents.body).unwrap();
    let alice = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "alice")
        .unwrap()
        .clone();
    assert_eq!(alice["spent_msat"]["total"], 10_000);
    assert_eq!(alice["remaining_msat"]["total"], 15_000);

    let payments = h
        .admin(
            Some(TOKEN),
            "GET",
            "/v1/payments?agent=alice&status=settled",
            &[],
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&payments.body).unwrap();
    let rows = v["payments"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["amount_msat"], 10_000);
    // The host keeps its port: two ports of one host are two sellers.
    assert_eq!(
        rows[0]["host"],
        format!("127.0.0.1:{}", h.seller.http.port())
    );
    assert_eq!(rows[0]["status"], "settled");
    assert_eq!(rows[0]["payment_hash"].as_str().unwrap().len(), 64);
    assert!(
        payments.body.find("preimage").is_none(),
        "secrets stay out of the API"
    );
    let csv = h
        .admin(
            Some(TOKEN),
            "GET",
            "/v1/payments",
            &["-H", "Accept: text/csv"],
        )
        .await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(
        lines[0].starts_with("payment_hash,agent,host,amount_msat,fee_msat,status,created_at,"),
        "the contract's columns first, new ones after: {}",
        lines[0]
    );
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains(&format!(
        ",alice,127.0.0.1:{},10000,0,settled,",
        h.seller.http.port()
    )));
    let bad = h
        .admin(Some(TOKEN), "GET", "/v1/payments?status=lost", &[])
        .await;
    assert_eq!(bad.status, 400);

    // Declines are recorded (written off the request path, so allow it a moment).
    let mut declines = serde_json::Value::Null;
    for _ in 0..50 {
        let d = h
            .admin(Some(TOKEN), "GET", "/v1/declines?agent=alice", &[])
            .await;
        declines = serde_json::from_str(&d.body).unwrap();
        if !declines["declines"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(declines["declines"][0]["code"], "over-total-limit");

    // Top up: the declined request now goes through.
    let up = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/alice/budget",
            &["-d", r#"{"add_sats": 20}"#],
        )
        .await;
    assert_eq!(up.status, 200, "{up:?}");
    let v: serde_json::Value = serde_json::from_str(&up.body).unwrap();
    assert_eq!(v["limits"]["total_sats"], 45);
    assert!(h.curl(Some(ALICE), &h.http_url("/b/x"), &[]).await.paid());
    // Recall below what was spent: nothing more is paid.
    let recall = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/alice/budget",
            &["-d", r#"{"total_sats": 5}"#],
        )
        .await;
    assert_eq!(recall.status, 200);
    assert_eq!(
        h.curl(Some(ALICE), &h.http_url("/c/x"), &[])
            .await
            .decline(),
        Some("over-total-limit")
    );
    // Bob has no total: moving it is a conflict; an unknown agent is 404; junk is 400.
    let conflict = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/bob/budget",
            &["-d", r#"{"add_sats": 5}"#],
        )
        .await;
    assert_eq!(conflict.status, 409);
    let missing = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/ghost/budget",
            &["-d", r#"{"add_sats": 5}"#],
        )
        .await;
    assert_eq!(missing.status, 404);
    let junk = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/alice/budget",
            &["-d", r#"{"total_sats": 1, "add_sats": 1}"#],
        )
        .await;
    assert_eq!(junk.status, 400);
    assert_eq!(h.payments(), 2);
}

/// Alice's entry in `GET /v1/agents`.
async fn agents(h: &Harness) -> serde_json::Value {
    let r = h.admin(Some(TOKEN), "GET", "/v1/agents", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "alice")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_where_limits_come_from_clear_overrides_and_read_declines() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ total_sats: 25, per_request_sats: 1000 }".into(),
        max_fee_sats: 5,
        ..Options::default()
    })
    .await;
    let a = agents(&h).await;
    assert_eq!(a["limit_sources"]["total_sats"], "config");
    assert_eq!(a["limit_sources"]["per_request_sats"], "config");
    // 25 sat left, a fee reserve of 5 on every payment: 20 sat is the most it can pay now.
    assert_eq!(a["remaining_msat"]["total"], 25_000);
    assert_eq!(a["spendable_msat"], 20_000);
    let set = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/alice/budget",
            &["-d", r#"{"total_sats": 100}"#],
        )
        .await;
    assert_eq!(set.status, 200);
    let a = agents(&h).await;
    assert_eq!(a["limits"]["total_sats"], 100);
    assert_eq!(a["limit_sources"]["total_sats"], "admin");
    let cleared = h
        .admin(
            Some(TOKEN),
            "POST",
            "/v1/agents/alice/budget",
            &["-d", r#"{"total_sats": null}"#],
        )
        .await;
    assert_eq!(cleared.status, 200, "{cleared:?}");
    let a = agents(&h).await;
    assert_eq!(a["limits"]["total_sats"], 25, "back to the file's value");
    assert_eq!(a["limit_sources"]["total_sats"], "config");

    // Three paid requests: every window's spend is exact, limited or not.
    for p in ["/w1/x", "/w2/x"] {
        assert!(h.curl(Some(ALICE), &h.http_url(p), &[]).await.paid());
    }
    let paid = h.curl(Some(ALICE), &h.http_url("/w3/x"), &[]).await;
    assert_eq!(paid.decline(), Some("over-total-limit"), "{paid:?}");
    let v: serde_json::Value = serde_json::from_str(
        &h.curl(Some(ALICE), "http://l402-proxy.local/balance", &[])
            .await
            .body,
    )
    .unwrap();
    for w in ["hourly", "daily", "weekly", "monthly", "total"] {
        assert_eq!(v["spent_msat"][w], 20_000, "{w}: {v}");
    }
    assert_eq!(v["spendable_msat"], 0);

    // Declines read as sentences, with amount and path, in JSON and CSV; times in RFC 3339.
    let mut rows = serde_json::Value::Null;
    for _ in 0..50 {
        let d = h
            .admin(Some(TOKEN), "GET", "/v1/declines?agent=alice", &[])
            .await;
        rows = serde_json::from_str(&d.body).unwrap();
        if !rows["declines"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let d = &rows["declines"][0];
    assert_eq!(d["code"], "over-total-limit");
    assert_eq!(d["path"], "/w3/x");
    assert_eq!(d["amount_msat"], 10_000);
    assert!(d["reason"].as_str().unwrap().contains("total limit"), "{d}");
    assert!(
        d["created_at_rfc3339"].as_str().unwrap().ends_with('Z'),
        "{d}"
    );
    let csv = h
        .admin(Some(TOKEN), "GET", "/v1/declines?format=csv", &[])
        .await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        csv.body
            .starts_with("agent,host,path,code,reason,amount_msat"),
        "{}",
        csv.body
    );
    assert!(csv.body.contains("/w3/x,over-total-limit"), "{}", csv.body);
    // Bad query parameters are a 400 naming the problem, never silently ignored.
    for bad in [
        "/v1/payments?limit=abc",
        "/v1/payments?colour=red",
        "/v1/declines?limit=0",
        "/v1/payments?since=yesterday",
    ] {
        let r = h.admin(Some(TOKEN), "GET", bad, &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_family_after_a_paid_request() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await;
    assert!(h
        .curl(Some(ALICE), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    assert!(!h
        .curl(Some(ALICE), &h.https_url("/weather/b"), &[])
        .await
        .paid());
    let _ = h
        .curl(Some(ALICE), &h.https_url("/hostile/expired"), &[])
        .await;
    let _ = h.curl(None, &h.http_url("/free/x"), &[]).await;
    let metrics = h.admin(None, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200, "/metrics needs no token");
    let text = metrics.body;
    for line in [
        "l402_proxy_requests_total{outcome=\"paid\"} 1",
        "l402_proxy_requests_total{outcome=\"passed\"} 1",
        "l402_proxy_requests_total{outcome=\"declined\"} 1",
        "l402_proxy_requests_total{outcome=\"auth_failed\"} 1",
        "l402_proxy_challenges_total 2",
        "l402_proxy_payments_total{backend=\"dev\",outcome=\"succeeded\"} 1",
        "l402_proxy_paid_msat_total{agent=\"alice\"} 10000",
        "l402_proxy_fees_msat_total{agent=\"alice\"} 0",
        "l402_proxy_payment_duration_seconds_count{backend=\"dev\"} 1",
        // /weather/b by its scope, and /hostile/expired speculatively (the origin's newest).
        "l402_proxy_token_cache_hits_total 2",
        "l402_proxy_token_cache_misses_total 1",
        "l402_proxy_declines_total{reason=\"invoice-expired\"} 1",
        "l402_proxy_connects_total{mode=\"intercept\"} 3",
        "l402_proxy_certificates_minted_total 1",
        "# TYPE l402_proxy_upstream_duration_seconds histogram",
        "# TYPE l402_proxy_open_connections gauge",
        "# TYPE l402_proxy_open_tunnels gauge",
        "# TYPE l402_proxy_token_cache_misses_total counter",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("alice-key"));
}
