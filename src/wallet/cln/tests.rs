//! Core Lightning (clnrest) backend against an in-process HTTPS fixture (no lightningd can be
//! installed where these tests run). The fixture reproduces clnrest's documented behaviour:
//! `POST /v1/<method>` with the `Rune` header, the RPC result as JSON on success (msat amounts
//! as integers), and on failure HTTP 500 with the RPC error object `{"code", "message"}` using
//! lightningd's PAY_* codes. Its TLS is a private CA signing a server certificate for "cln" and
//! "localhost", as clnrest generates; the client pins the CA.

use super::*;
use crate::wallet::fixture::{payment, Canned, Fixture, Identity};

const RUNE: &str = "tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0wMjRiOWExZmE4ZTAwNmYxZTM5MzdmNjVmNjZjNDA4ZTZkYThlMWNhNzI4ZWE0MzIyMmE3MzgxZGYxY2M0NDk2MDUmbWV0aG9kPXBheQ==";

fn wallet_for(fixture: &Fixture) -> ClnWallet {
    let d = crate::scratch::Scratch::new("cln");
    let pin = fixture.write_pin(&d);
    let trust = Trust::pinned_file(&pin, "wallet.cln.tls_cert_file").unwrap();
    ClnWallet::new(&fixture.url(), RUNE, trust).unwrap()
}

fn request(hash: PaymentHash, timeout: Duration) -> PayRequest {
    PayRequest {
        bolt11: "lnbcrt10u1fixture".into(),
        payment_hash: hash,
        amount: Msat(10_000),
        max_fee: Msat(2_000),
        timeout,
    }
}

fn complete(hash: &PaymentHash, preimage: &[u8; 32]) -> Value {
    json!({
        "destination": "02".to_string() + &"ab".repeat(32),
        "payment_hash": hash.to_hex(),
        "created_at": 1_700_000_000.5,
        "parts": 1,
        "amount_msat": 10_000,
        "amount_sent_msat": 10_150,
        "payment_preimage": hex::encode(preimage),
        "status": "complete",
    })
}

#[tokio::test]
async fn pays_with_the_rune_and_reports_the_fee() {
    let (preimage, hash) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| {
        Canned::Json(201, complete(&hash, &preimage))
    })
    .await;
    let wallet = wallet_for(&fixture);
    let paid = wallet
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat(150));
    let seen = fixture.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/pay");
    assert_eq!(
        seen[0].headers.get("rune").and_then(|v| v.to_str().ok()),
        Some(RUNE)
    );
    assert_eq!(seen[0].body["bolt11"], "lnbcrt10u1fixture");
    assert_eq!(seen[0].body["maxfee"], 2000);
    let retry_for = seen[0].body["retry_for"].as_u64().unwrap();
    assert!((1..=10).contains(&retry_for), "retry_for {retry_for}");
    assert!(!format!("{wallet:?}").contains(RUNE));
}

#[tokio::test]
async fn pending_is_followed_with_listpays_until_complete() {
    let (preimage, hash) = payment();
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let p = polls.clone();
    let fixture = Fixture::start(Identity::private_ca(), move |seen| {
        if seen.path == "/v1/pay" {
            let mut pending = complete(&hash, &preimage);
            pending["status"] = json!("pending");
            pending.as_object_mut().map(|o| o.remove("payment_preimage"));
            return Canned::Json(201, pending);
        }
        assert_eq!(seen.path, "/v1/listpays");
        assert_eq!(seen.body["payment_hash"], hash.to_hex());
        let status = if p.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 1 {
            json!({"pays": [{"payment_hash": hash.to_hex(), "status": "pending"}]})
        } else {
            json!({"pays": [{"payment_hash": hash.to_hex(), "status": "complete",
                "preimage": hex::encode(preimage), "amount_msat": 10_000, "amount_sent_msat": 10_001}]})
        };
        Canned::Json(201, status)
    })
    .await;
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat(1));
    assert!(polls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(fixture.count("/v1/pay"), 1, "never paid twice");
}

#[tokio::test]
async fn every_pay_error_code_maps_to_a_reason() {
    let cases: [(i64, &str, &str); 8] = [
        (205, "Ran out of routes to try after 3 attempts", "no-route"),
        (
            204,
            "failure along route; retry a different route",
            "no-route",
        ),
        (
            206,
            "Fee exceeds our fee budget: 5000msat > 2000msat",
            "fee-too-high",
        ),
        (207, "Invoice expired", "invoice-expired"),
        (
            210,
            "Payment timed out without a payment in progress",
            "no-route",
        ),
        (
            201,
            "Already paid with this hash using different amount or destination",
            "already-paid",
        ),
        (
            203,
            "Destination permanently rejected the payment",
            "payment-rejected",
        ),
        (
            -32602,
            "Invalid bolt11: Bad bech32 string",
            "payment-rejected",
        ),
    ];
    for (code, message, expected) in cases {
        let (_, hash) = payment();
        let message_owned = message.to_string();
        let fixture = Fixture::start(Identity::private_ca(), move |_| {
            Canned::Json(500, json!({"code": code, "message": message_owned}))
        })
        .await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), expected, "{code} {message}: {err}");
        assert!(!err.may_be_in_flight(), "{code}: CLN's answer is final");
    }
    // The rune refused: a configuration problem the operator must fix, nothing was sent.
    let (_, hash) = payment();
    let fixture = Fixture::start(Identity::private_ca(), move |_| {
        Canned::Json(
            403,
            json!({"code": 1502, "message": "Not authorized: method is not pay"}),
        )
    })
    .await;
    match wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
    {
        Err(PayError::Rejected(why)) => assert!(why.contains("rune"), "{why}"),
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
        Canned::Json(201, complete(&hash, &other))
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
        Canned::Json(201, complete(&hash, &preimage))
    })
    .await;
    let d = crate::scratch::Scratch::new("cln");
    let pin = d.join("other-ca.pem");
    std::fs::write(&pin, Identity::private_ca().pin_pem).unwrap();
    let trust = Trust::pinned_file(&pin, "wallet.cln.tls_cert_file").unwrap();
    let wallet = ClnWallet::new(&fixture.url(), RUNE, trust).unwrap();
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
    let fixture = Fixture::start(Identity::private_ca(), move |seen| {
        let asked = seen.body["payment_hash"].as_str().unwrap_or("").to_string();
        let pays = if asked == hash.to_hex() {
            // A failed attempt before the one that completed: the completed one wins.
            json!([{"status": "failed"}, {"status": "complete", "preimage": hex::encode(preimage),
                    "amount_msat": 10_000, "amount_sent_msat": 10_020}])
        } else if asked == pending.to_hex() {
            json!([{"status": "pending"}])
        } else if asked == failed.to_hex() {
            json!([{"status": "failed"}])
        } else {
            json!([])
        };
        Canned::Json(201, json!({ "pays": pays }))
    })
    .await;
    let wallet = wallet_for(&fixture);
    match wallet.lookup(&hash).await.unwrap() {
        PaymentStatus::Succeeded(paid) => {
            assert_eq!(paid.preimage.as_bytes(), &preimage);
            assert_eq!(paid.fee, Msat(20));
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
    assert_eq!(wallet.balance().await.unwrap(), Msat(250_001_123));
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
    assert_eq!(wallet_for(&fixture).balance().await.unwrap(), Msat(123_500));
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
    // The README's rune allowed only pay and listpays: clnrest answers 403 "Not authorized".
    let fixture = listfunds_node(
        403,
        json!({"code": 1502, "message": "Not authorized: method is not pay"}),
    )
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => {
            assert!(why.contains("listfunds"), "{why}");
            assert!(why.contains("rune"), "{why}");
            assert!(why.contains("Not authorized"), "{why}");
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
