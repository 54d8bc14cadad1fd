//! Core Lightning (clnrest) backend against an in-process HTTPS fixture (no lightningd can be
//! installed where these tests run). Every reply comes from `crate::wallet::fixture::cln`,
//! built from CLN's own sources (each annotated there with its upstream file); the TLS is
//! clnrest's: a private CA signing the certificate served, the client pinning the CA.

use super::*;
use crate::wallet::fixture::cln as node;
use crate::wallet::fixture::{payment, Canned, Fixture, Identity, Seen};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const RUNE: &str = "tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0wMjRiOWExZmE4ZTAwNmYxZTM5MzdmNjVmNjZjNDA4ZTZkYThlMWNhNzI4ZWE0MzIyMmE3MzgxZGYxY2M0NDk2MDUmbWV0aG9kPXBheQ==";
/// A named reply (built for the payment's hash) and, for final ones, the code expected.
type Case = (&'static str, fn(&PaymentHash) -> Canned);

const NODE_ID: &str = "024b9a1fa8e006f1e3937f65f66c408e6da8e1ca728ea43222a7381df1cc449605";

fn wallet_with(fixture: &Fixture, nodeid: Option<&str>) -> ClnWallet {
    let d = crate::scratch::Scratch::new("cln");
    let pin = fixture.write_pin(&d);
    let trust = Trust::pinned_file(&pin, "wallet.cln.tls_cert_file").unwrap();
    ClnWallet::new(&fixture.url(), RUNE, nodeid, trust).unwrap()
}

fn wallet_for(fixture: &Fixture) -> ClnWallet {
    wallet_with(fixture, None)
}

fn request(hash: PaymentHash, timeout: Duration) -> PayRequest {
    PayRequest {
        bolt11: "lnbcrt10u1fixture".into(),
        payment_hash: hash,
        amount: Msat::new(10_000),
        max_fee: Msat::new(2_000),
        timeout,
    }
}

/// A node answering `pay` with `pay`, and `listpays` with `listpays(n)` for its n-th call.
async fn node_with(
    pay: impl Fn() -> Canned + Send + Sync + 'static,
    listpays: impl Fn(u32) -> Canned + Send + Sync + 'static,
) -> (Fixture, Arc<AtomicU32>) {
    let polls = Arc::new(AtomicU32::new(0));
    let p = polls.clone();
    let fixture = Fixture::start(Identity::private_ca(), move |seen: &Seen| {
        match seen.path.as_str() {
            "/v1/pay" => pay(),
            "/v1/listpays" => listpays(p.fetch_add(1, Ordering::SeqCst)),
            _ => Canned::Json(404, json!({"code": -32601, "message": "Unknown command"})),
        }
    })
    .await;
    (fixture, polls)
}

#[tokio::test]
async fn pays_with_the_rune_and_reports_the_fee() {
    let (preimage, hash) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| {
        node::pay_complete(&hash, &preimage, 10_150)
    })
    .await;
    let wallet = wallet_for(&fixture);
    let paid = wallet
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat::new(150));
    let seen = fixture.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/pay");
    assert_eq!(
        seen[0].headers.get("rune").and_then(|v| v.to_str().ok()),
        Some(RUNE)
    );
    assert!(
        seen[0].headers.get("nodeid").is_none(),
        "only when configured"
    );
    assert_eq!(seen[0].body["bolt11"], "lnbcrt10u1fixture");
    assert_eq!(seen[0].body["maxfee"], 2000);
    let retry_for = seen[0].body["retry_for"].as_u64().unwrap();
    assert!((1..=10).contains(&retry_for), "retry_for {retry_for}");
    assert!(!format!("{wallet:?}").contains(RUNE));
}

#[tokio::test]
async fn clnrest_v23_08_gets_the_nodeid_header_and_its_wrapped_errors_are_read() {
    let (_, hash) = payment();
    // Without the header, v23.08 refuses every call: the error names the config key.
    let fixture = Fixture::start(Identity::python_clnrest(), |_| {
        node::missing_nodeid_v23_08()
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    match &err {
        PayError::Rejected(why) => assert!(why.contains("wallet.cln.nodeid"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.may_be_in_flight());
    // With it, the header goes on every call, and v23.08's `{"error": …}` is read as the RPC
    // error it wraps.
    let fixture = Fixture::start(Identity::python_clnrest(), |seen| {
        if seen.headers.get("nodeid").and_then(|v| v.to_str().ok()) != Some(NODE_ID) {
            return node::missing_nodeid_v23_08();
        }
        node::rpc_error_v23_08(207, "Invoice expired")
    })
    .await;
    let err = wallet_with(&fixture, Some(NODE_ID))
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::InvoiceExpired);
}

#[tokio::test]
async fn python_clnrest_serving_client_pem_is_trusted_through_ca_pem() {
    let (preimage, hash) = payment();
    let fixture = Fixture::start(Identity::python_clnrest(), move |_| {
        node::pay_complete(&hash, &preimage, 10_000)
    })
    .await;
    // `pin_pem` is the CA: the served leaf is "cln rest client", for "cln" and "localhost".
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
}

#[tokio::test]
async fn replies_that_prove_nothing_is_in_flight_are_final_with_the_right_code() {
    let (_, hash) = payment();
    let cases: Vec<(Case, &str)> = vec![
        (
            ("xpay 215 source capacity", |_| node::xpay_source_capacity()),
            "insufficient-balance",
        ),
        (
            ("xpay 220 destination capacity", |_| {
                node::xpay_destination_capacity()
            }),
            "no-route",
        ),
        (("xpay 205 no route", |_| node::xpay_no_route()), "no-route"),
        (
            ("xpay 206 too expensive", |_| node::xpay_too_expensive()),
            "fee-too-high",
        ),
        (
            ("xpay 207 expired", |_| node::xpay_invoice_expired()),
            "invoice-expired",
        ),
        (
            ("xpay 219 already paid", |_| node::xpay_already_paid()),
            "already-paid",
        ),
        (
            ("pay 210 ran out of routes", |_| {
                node::legacy_ran_out_of_routes()
            }),
            "no-route",
        ),
        (
            ("pay 215 pre-flight", |_| node::legacy_insufficient_funds()),
            "insufficient-balance",
        ),
        (
            ("pay status failed", |h| {
                node::legacy_pay_failure(h, "failed")
            }),
            "no-route",
        ),
        (
            ("-32602 bad bolt11", |_| node::invalid_bolt11()),
            "payment-rejected",
        ),
        (
            ("401 rune refused", |_| node::rune_not_permitted()),
            "payment-rejected",
        ),
        (
            ("403 no rune", |_| node::rune_missing()),
            "payment-rejected",
        ),
    ];
    for ((name, reply), expected) in cases {
        let (fixture, polls) = node_with(move || reply(&hash), |_| node::listpays(json!([]))).await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), expected, "{name}: {err}");
        assert!(!err.may_be_in_flight(), "{name}: {err}");
        assert_eq!(polls.load(Ordering::SeqCst), 0, "{name}: nothing to follow");
    }
    // A refused rune says what to fix.
    let (fixture, _) = node_with(node::rune_not_permitted, |_| node::listpays(json!([]))).await;
    match wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
    {
        Err(PayError::Rejected(why)) => {
            assert!(why.contains("rune") && why.contains("HTTP 401"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn replies_that_may_leave_parts_in_flight_stay_unresolved_while_listpays_is_empty() {
    // listpays is empty right after the call (no record before the first HTLC): that proves
    // nothing, so each stays unresolved, its budget reserved, and `pay` is never sent again.
    let (_, hash) = payment();
    let cases: Vec<Case> = vec![
        ("-1 lightningd", |_| node::lightningd_error()),
        ("-3 xpay plugin error", |_| {
            node::xpay_unexpected_inject_error()
        }),
        ("-4 plugin terminated", |_| node::plugin_terminated()),
        ("xpay 209 after attempts", |_| {
            node::xpay_failed_after_attempts()
        }),
        ("xpay 203 destination", |_| {
            node::xpay_destination_unknown_invoice()
        }),
        ("a code this code does not know", |_| {
            node::rpc_error(299, "something new")
        }),
        ("pay status pending", |h| {
            node::legacy_pay_failure(h, "pending")
        }),
        ("pay status complete", |h| {
            node::legacy_pay_failure(h, "complete")
        }),
    ];
    let runs = cases.into_iter().map(|(name, reply)| async move {
        let (fixture, polls) = node_with(move || reply(&hash), |_| node::listpays(json!([]))).await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(2)))
            .await
            .unwrap_err();
        (
            name,
            err,
            polls.load(Ordering::SeqCst),
            fixture.count("/v1/pay"),
        )
    });
    for (name, err, polls, pays) in futures_util::future::join_all(runs).await {
        assert!(matches!(err, PayError::Unresolved(_)), "{name}: {err:?}");
        assert_eq!(err.code(), "payment-unresolved", "{name}");
        assert!(err.may_be_in_flight(), "{name}");
        assert!(polls >= 1, "{name}: followed with listpays");
        assert_eq!(pays, 1, "{name}: never paid twice");
    }
}

#[tokio::test]
async fn xpay_209_with_parts_in_flight_is_followed_until_they_settle() {
    let (preimage, hash) = payment();
    let (fixture, polls) = node_with(node::xpay_failed_after_attempts, move |n| match n {
        0 => node::listpays(json!([])),
        1 => node::listpays(json!([node::listpays_entry(&hash, "pending", None)])),
        _ => node::listpays(json!([
            node::listpays_entry(&hash, "failed", None),
            node::listpays_entry(&hash, "complete", Some(&preimage)),
        ])),
    })
    .await;
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat::new(20));
    assert!(polls.load(Ordering::SeqCst) >= 3);
    assert_eq!(fixture.count("/v1/pay"), 1, "never paid twice");
}

#[tokio::test]
async fn a_followed_payment_that_fails_for_good_keeps_the_cause() {
    let (_, hash) = payment();
    // xpay 203 while a part was out: once listpays says failed, the payee's refusal it is.
    let (fixture, _) = node_with(node::xpay_destination_unknown_invoice, move |n| {
        if n == 0 {
            node::listpays(json!([node::listpays_entry(&hash, "pending", None)]))
        } else {
            node::listpays(json!([node::listpays_entry(&hash, "failed", None)]))
        }
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "payment-rejected", "{err}");
    assert!(!err.may_be_in_flight());
    // The plugin died (-4): failed for good after that is no route, with what pay said.
    let (fixture, _) = node_with(node::plugin_terminated, move |_| {
        node::listpays(json!([node::listpays_entry(&hash, "failed", None)]))
    })
    .await;
    match wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
    {
        Err(PayError::NoRoute(why)) => assert!(why.contains("Plugin terminated"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_pay_that_never_answers_times_out_as_maybe_in_flight() {
    let (_, hash) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| Canned::Stream {
        status: 201,
        lines: vec![],
        hang: true,
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::Timeout(Duration::from_secs(1)));
    assert!(err.may_be_in_flight());
}

#[tokio::test]
async fn a_wrong_preimage_is_refused() {
    let (_, hash) = payment();
    let (other, _) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| {
        node::pay_complete(&hash, &other, 10_000)
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::BadPreimage);
}

#[tokio::test]
async fn another_nodes_certificate_is_refused_before_any_request() {
    let (preimage, hash) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| {
        node::pay_complete(&hash, &preimage, 10_000)
    })
    .await;
    let d = crate::scratch::Scratch::new("cln");
    let pin = d.join("other-ca.pem");
    std::fs::write(&pin, Identity::private_ca().pin_pem).unwrap();
    let trust = Trust::pinned_file(&pin, "wallet.cln.tls_cert_file").unwrap();
    let wallet = ClnWallet::new(&fixture.url(), RUNE, None, trust).unwrap();
    match wallet.pay(&request(hash, Duration::from_secs(10))).await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(fixture.seen().is_empty());
}

#[tokio::test]
async fn lookup_reads_listpays() {
    let (preimage, hash) = payment();
    let (_, pending) = payment();
    let (_, failed) = payment();
    let (_, unknown) = payment();
    let (_, refused) = payment();
    let (_, malformed) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |seen| {
        let asked = seen.body["payment_hash"].as_str().unwrap_or("").to_string();
        if asked == hash.to_hex() {
            // A failed attempt before the one that completed: the completed one wins.
            node::listpays(json!([
                node::listpays_entry(&hash, "failed", None),
                node::listpays_entry(&hash, "complete", Some(&preimage)),
            ]))
        } else if asked == pending.to_hex() {
            node::listpays(json!([node::listpays_entry(&pending, "pending", None)]))
        } else if asked == failed.to_hex() {
            node::listpays(json!([node::listpays_entry(&failed, "failed", None)]))
        } else if asked == refused.to_hex() {
            node::rune_not_permitted()
        } else if asked == malformed.to_hex() {
            Canned::Json(201, json!({"payments": []}))
        } else {
            node::listpays(json!([]))
        }
    })
    .await;
    let wallet = wallet_for(&fixture);
    match wallet.lookup(&hash).await.unwrap() {
        PaymentStatus::Succeeded(paid) => {
            assert_eq!(paid.preimage.as_bytes(), &preimage);
            assert_eq!(paid.fee, Msat::new(20));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        wallet.lookup(&pending).await.unwrap(),
        PaymentStatus::InFlight
    );
    assert!(matches!(
        wallet.lookup(&failed).await.unwrap(),
        PaymentStatus::Failed(_)
    ));
    assert_eq!(
        wallet.lookup(&unknown).await.unwrap(),
        PaymentStatus::Unknown
    );
    // A rune without listpays is an error (asked again later), never "no record".
    match wallet.lookup(&refused).await {
        Err(e) => assert!(e.to_string().contains("listpays"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Nor is a reply of another shape.
    match wallet.lookup(&malformed).await {
        Err(e) => assert!(e.to_string().contains("`pays`"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn amounts_in_old_and_new_formats() {
    assert_eq!(msat_field(Some(&json!(1000))), Some(1000));
    assert_eq!(msat_field(Some(&json!("1000msat"))), Some(1000));
    assert_eq!(msat_field(Some(&json!("x"))), None);
}

/// A fake clnrest answering `POST /v1/listfunds` with `reply`.
async fn listfunds_node(status: u16, reply: Value) -> Fixture {
    Fixture::start(Identity::private_ca(), move |seen| {
        if seen.method == "POST" && seen.path == "/v1/listfunds" {
            Canned::Json(status, reply.clone())
        } else {
            Canned::Json(404, json!({"code": -32601, "message": "Unknown command"}))
        }
    })
    .await
}

fn channel(state: &str, connected: bool, ours: Value) -> Value {
    json!({
        "peer_id": "02".to_string() + &"cd".repeat(32),
        "connected": connected,
        "state": state,
        "channel_id": "ab".repeat(32),
        "short_channel_id": "103x1x0",
        "our_amount_msat": ours,
        "amount_msat": 1_000_000_000u64,
        "funding_txid": "ef".repeat(32),
        "funding_output": 0,
    })
}

#[tokio::test]
async fn balance_sums_our_amount_of_normal_connected_channels() {
    let fixture = listfunds_node(
        201,
        json!({
            "outputs": [{"txid": "aa".repeat(32), "output": 0, "amount_msat": 5_000_000_000u64,
                         "status": "confirmed", "reserved": false}],
            "channels": [
                channel("CHANNELD_NORMAL", true, json!(250_000_123u64)),
                channel("CHANNELD_NORMAL", true, json!(1_000)),
                channel("CHANNELD_NORMAL", false, json!(7_000_000)),
                channel("CHANNELD_AWAITING_LOCKIN", true, json!(9_000_000)),
                channel("ONCHAIN", false, json!(3_000_000)),
            ],
        }),
    )
    .await;
    let wallet = wallet_for(&fixture);
    assert_eq!(wallet.balance().await.unwrap(), Msat::new(250_001_123));
    let seen = fixture.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/listfunds");
    assert_eq!(
        seen[0].headers.get("rune").and_then(|v| v.to_str().ok()),
        Some(RUNE)
    );
}

#[tokio::test]
async fn balance_reads_old_msat_strings_and_no_channels() {
    // CLN before v23 wrote amounts as "NNNmsat" strings.
    let fixture = listfunds_node(
        201,
        json!({"outputs": [], "channels": [
            channel("CHANNELD_NORMAL", true, json!("123456msat")),
            channel("CHANNELD_NORMAL", true, json!("44msat")),
            channel("CLOSINGD_COMPLETE", false, json!("999msat")),
        ]}),
    )
    .await;
    assert_eq!(
        wallet_for(&fixture).balance().await.unwrap(),
        Msat::new(123_500)
    );
    let fixture = listfunds_node(201, json!({"outputs": [], "channels": []})).await;
    assert_eq!(wallet_for(&fixture).balance().await.unwrap(), Msat::ZERO);
}

#[tokio::test]
async fn balance_of_an_unreachable_node_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let wallet = ClnWallet::new(
        &format!("https://127.0.0.1:{port}"),
        RUNE,
        None,
        Trust::PublicRoots,
    )
    .unwrap();
    match wallet.balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("connect"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn balance_refused_by_a_pay_only_rune_names_listfunds() {
    // A rune allowing only pay and listpays: checkrune refuses it, clnrest answers 401
    // (`crate::wallet::fixture::cln::rune_not_permitted`).
    let fixture = listfunds_node(
        401,
        json!({"code": 1502, "message": "Not permitted: method is not equal to pay"}),
    )
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => {
            assert!(why.contains("listfunds"), "{why}");
            assert!(why.contains("rune"), "{why}");
            assert!(why.contains("Not permitted"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Any other failure of clnrest is Unavailable too, with what it said.
    let fixture = listfunds_node(500, json!({"code": -1, "message": "lightningd died"})).await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("lightningd died"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_listfunds_reply_is_unavailable_naming_the_field() {
    let cases: [(Value, &str); 4] = [
        (json!({"outputs": []}), "`channels`"),
        (json!({"channels": {"not": "an array"}}), "`channels`"),
        (
            json!({"channels": [channel("CHANNELD_NORMAL", true, json!("many"))]}),
            "`channels[0].our_amount_msat`",
        ),
        (
            json!({"channels": [channel("ONCHAIN", false, json!(1)),
                                {"state": "CHANNELD_NORMAL", "connected": true}]}),
            "`channels[1].our_amount_msat`",
        ),
    ];
    for (reply, field) in cases {
        let fixture = listfunds_node(201, reply.clone()).await;
        match wallet_for(&fixture).balance().await {
            Err(PayError::Unavailable(why)) => assert!(why.contains(field), "{reply}: {why}"),
            other => panic!("{reply}: {other:?}"),
        }
    }
    let fixture = Fixture::start(Identity::private_ca(), |_| Canned::Stream {
        status: 201,
        lines: vec![(Duration::ZERO, "{\"channels\": [".into())],
        hang: false,
    })
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("listfunds"), "{why}"),
        other => panic!("{other:?}"),
    }
}
