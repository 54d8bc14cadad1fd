//! LND REST backend against an in-process HTTPS fixture (no LND binary can be installed where
//! these tests run). The fixture reproduces LND's documented REST behaviour: SendPaymentV2 and
//! TrackPaymentV2 stream newline-delimited `{"result": Payment}` updates (64-bit integers as
//! strings, preimages in hex), errors come as `{"error": {"code", "message"}}` with the gRPC
//! code mapped to an HTTP status, and the server presents a self-signed CA:TRUE certificate
//! like LND's `tls.cert`.

use super::*;
use crate::wallet::fixture::{payment, Canned, Fixture, Identity};

const MACAROON: &[u8] = &[0x02, 0x01, 0x03, 0x6c, 0x6e, 0x64, 0xff, 0x00, 0x42];

fn dir() -> crate::scratch::Scratch {
    crate::scratch::Scratch::new("lnd")
}

/// An LndWallet pinned to the fixture's certificate, with MACAROON in a file.
fn wallet_for(fixture: &Fixture) -> LndWallet {
    let d = dir();
    let mac = d.join("pay.macaroon");
    std::fs::write(&mac, MACAROON).unwrap();
    let pin = fixture.write_pin(&d);
    LndWallet::from_files(&fixture.url(), &mac, Some(&pin)).unwrap()
}

fn request(hash: PaymentHash, timeout: Duration) -> PayRequest {
    PayRequest {
        bolt11: "lnbcrt10u1fixture".into(),
        payment_hash: hash,
        amount: Msat(10_000),
        max_fee: Msat(3_000),
        timeout,
    }
}

fn update(status: &str, hash: &PaymentHash, extra: Value) -> Value {
    let mut result = json!({
        "payment_hash": hash.to_hex(),
        "value_msat": "10000",
        "status": status,
        "fee_msat": "0",
        "payment_preimage": "0000000000000000000000000000000000000000000000000000000000000000",
        "failure_reason": "FAILURE_REASON_NONE",
        "htlcs": [],
    });
    if let (Some(r), Some(e)) = (result.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    json!({ "result": result })
}

#[tokio::test]
async fn streamed_in_flight_then_succeeded_pays_with_hex_macaroon() {
    let (preimage, hash) = payment();
    let pre_hex = hex::encode(preimage);
    let fixture = Fixture::start(Identity::self_signed_ca(), move |_| {
        Canned::lines(
            200,
            &[
                update("IN_FLIGHT", &hash, json!({})),
                update(
                    "IN_FLIGHT",
                    &hash,
                    json!({"htlcs": [{"status": "IN_FLIGHT"}]}),
                ),
                update(
                    "SUCCEEDED",
                    &hash,
                    json!({"payment_preimage": pre_hex, "fee_msat": "1250"}),
                ),
            ],
        )
    })
    .await;
    let wallet = wallet_for(&fixture);
    let paid = wallet
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat(1250));
    let seen = fixture.seen();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v2/router/send");
    assert_eq!(
        sent.headers
            .get("grpc-metadata-macaroon")
            .and_then(|v| v.to_str().ok()),
        Some(hex::encode(MACAROON).as_str()),
        "the macaroon goes hex-encoded in Grpc-Metadata-macaroon"
    );
    assert_eq!(sent.body["payment_request"], "lnbcrt10u1fixture");
    assert_eq!(sent.body["fee_limit_msat"], "3000");
    assert_eq!(sent.body["no_inflight_updates"], false);
    let t = sent.body["timeout_seconds"].as_u64().unwrap();
    assert!((1..=10).contains(&t), "timeout_seconds {t}");
    assert!(!format!("{wallet:?}").contains(&hex::encode(MACAROON)));
}

#[tokio::test]
async fn every_failure_reason_maps_to_a_reason() {
    let cases: [(&str, PayError); 6] = [
        ("FAILURE_REASON_NO_ROUTE", PayError::NoRoute(String::new())),
        (
            "FAILURE_REASON_INSUFFICIENT_BALANCE",
            PayError::InsufficientBalance,
        ),
        ("FAILURE_REASON_TIMEOUT", PayError::NoRoute(String::new())),
        (
            "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS",
            PayError::Rejected(String::new()),
        ),
        ("FAILURE_REASON_ERROR", PayError::Rejected(String::new())),
        ("FAILURE_REASON_NONE", PayError::Rejected(String::new())),
    ];
    for (reason, expected) in cases {
        let (_, hash) = payment();
        let reason_owned = reason.to_string();
        let fixture = Fixture::start(Identity::self_signed_ca(), move |_| {
            Canned::lines(
                200,
                &[
                    update("IN_FLIGHT", &hash, json!({})),
                    update("FAILED", &hash, json!({"failure_reason": reason_owned})),
                ],
            )
        })
        .await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), expected.code(), "{reason}: {err}");
        assert!(
            !err.may_be_in_flight(),
            "{reason}: a FAILED payment is final"
        );
    }
}

#[tokio::test]
async fn gateway_errors_map_to_reasons() {
    let cases: [(u16, i64, &str, &str); 5] = [
        (500, 2, "invoice is already paid", "already-paid"),
        (500, 2, "payment is in transition", "already-paid"),
        (
            500,
            2,
            "invoice expired. Valid until 2024-01-01",
            "invoice-expired",
        ),
        (
            500,
            2,
            "verification failed: signature mismatch after caveat verification",
            "payment-rejected",
        ),
        (
            503,
            14,
            "waiting to start, RPC services not available",
            "wallet-unavailable",
        ),
    ];
    for (status, code, message, expected) in cases {
        let (_, hash) = payment();
        let message_owned = message.to_string();
        // Wrapped, as a stream sends it, and bare, as the gateway answers before streaming.
        let wrapped = Fixture::start(Identity::self_signed_ca(), {
            let message = message.to_string();
            move |_| {
                Canned::lines(
                    status,
                    &[json!({"error": {"code": code, "message": message, "details": []}})],
                )
            }
        })
        .await;
        let bare = Fixture::start(Identity::self_signed_ca(), move |_| {
            Canned::Json(
                status,
                json!({"code": code, "message": message_owned, "details": []}),
            )
        })
        .await;
        for fixture in [wrapped, bare] {
            let err = wallet_for(&fixture)
                .pay(&request(hash, Duration::from_secs(10)))
                .await
                .unwrap_err();
            assert_eq!(err.code(), expected, "{message}: {err}");
        }
    }
}

#[tokio::test]
async fn a_payment_that_never_finishes_times_out_as_maybe_in_flight() {
    let (_, hash) = payment();
    let fixture = Fixture::start(Identity::self_signed_ca(), move |_| Canned::Stream {
        status: 200,
        lines: vec![(
            Duration::from_millis(10),
            update("IN_FLIGHT", &hash, json!({})).to_string(),
        )],
        hang: true,
    })
    .await;
    let started = std::time::Instant::now();
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::Timeout(Duration::from_secs(1)));
    assert!(err.may_be_in_flight());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_preimage_that_does_not_hash_to_the_invoice_is_refused() {
    let (_, hash) = payment();
    let (other, _) = payment();
    let fixture = Fixture::start(Identity::self_signed_ca(), move |_| {
        Canned::lines(
            200,
            &[update(
                "SUCCEEDED",
                &hash,
                json!({"payment_preimage": hex::encode(other)}),
            )],
        )
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::BadPreimage);
}

#[tokio::test]
async fn a_server_without_the_pinned_certificate_gets_no_payment() {
    let (_, hash) = payment();
    let fixture = Fixture::start(Identity::self_signed_ca(), move |_| {
        Canned::lines(200, &[update("SUCCEEDED", &hash, json!({}))])
    })
    .await;
    // Pin another node's certificate (same names, different key).
    let d = dir();
    let mac = d.join("pay.macaroon");
    std::fs::write(&mac, MACAROON).unwrap();
    let pin = d.join("other.pem");
    std::fs::write(&pin, Identity::self_signed_ca().pin_pem).unwrap();
    let wallet = LndWallet::from_files(&fixture.url(), &mac, Some(&pin)).unwrap();
    let err = wallet
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    match &err {
        PayError::Unavailable(why) => {
            assert!(
                why.contains("certificate") && why.contains("tls_cert_file"),
                "{why}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        fixture.count("/v2/router/send"),
        0,
        "nothing reached the node"
    );
    // And without any pin, the public roots do not trust a self-signed node either.
    let public = LndWallet::new(&fixture.url(), MACAROON, Trust::PublicRoots).unwrap();
    assert!(matches!(
        public.pay(&request(hash, Duration::from_secs(10))).await,
        Err(PayError::Unavailable(_))
    ));
    assert_eq!(fixture.count("/v2/router/send"), 0);
}

#[tokio::test]
async fn lookup_tracks_by_url_safe_base64_hash() {
    let (preimage, hash) = payment();
    let (_, unknown) = payment();
    let (_, flying) = payment();
    let encoded = |h: &PaymentHash| base64::engine::general_purpose::URL_SAFE.encode(h.0);
    let (paid_path, unknown_path, flying_path) =
        (encoded(&hash), encoded(&unknown), encoded(&flying));
    let pre_hex = hex::encode(preimage);
    let fixture = Fixture::start(Identity::self_signed_ca(), move |seen| {
        let path = seen.path.split('?').next().unwrap_or("");
        let tail = path.trim_start_matches("/v2/router/track/");
        if tail == paid_path {
            Canned::lines(
                200,
                &[update(
                    "SUCCEEDED",
                    &hash,
                    json!({"payment_preimage": pre_hex, "fee_msat": "7"}),
                )],
            )
        } else if tail == flying_path {
            Canned::Stream {
                status: 200,
                lines: vec![(
                    Duration::from_millis(10),
                    update("IN_FLIGHT", &flying, json!({})).to_string(),
                )],
                hang: true,
            }
        } else if tail == unknown_path {
            Canned::lines(
                404,
                &[json!({"error": {"code": 5, "message": "payment isn't initiated", "details": []}})],
            )
        } else {
            Canned::Json(400, json!({"code": 3, "message": "bad path"}))
        }
    })
    .await;
    let wallet = wallet_for(&fixture);
    match wallet.lookup(&hash).await.unwrap() {
        PaymentStatus::Succeeded(paid) => {
            assert_eq!(paid.preimage.as_bytes(), &preimage);
            assert_eq!(paid.fee, Msat(7));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        wallet.lookup(&unknown).await.unwrap(),
        PaymentStatus::Unknown
    );
    let started = std::time::Instant::now();
    assert_eq!(
        wallet.lookup(&flying).await.unwrap(),
        PaymentStatus::InFlight
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first update answers"
    );
    assert!(fixture
        .seen()
        .iter()
        .all(|s| s.method == "GET" && s.headers.contains_key("grpc-metadata-macaroon")));
}

#[test]
fn hex_macaroon_files_are_used_as_they_are() {
    assert_eq!(macaroon_hex(b"0201AB\n"), "0201ab");
    assert_eq!(macaroon_hex(&[0x02, 0x01]), "0201");
}

/// A fake LND answering ChannelBalance (`GET /v1/balance/channels`) with `reply`.
async fn balance_node(status: u16, reply: Value) -> Fixture {
    Fixture::start(Identity::self_signed_ca(), move |seen| {
        if seen.method == "GET" && seen.path == "/v1/balance/channels" {
            Canned::Json(status, reply.clone())
        } else {
            Canned::Json(404, json!({"code": 5, "message": "Not Found"}))
        }
    })
    .await
}

#[tokio::test]
async fn balance_reads_local_balance_msat_with_the_macaroon() {
    // As LND 0.18 answers: 64-bit integers as strings, `balance` deprecated but still sent.
    let fixture = balance_node(
        200,
        json!({
            "balance": "1234",
            "pending_open_balance": "0",
            "local_balance": {"sat": "1234", "msat": "1234567"},
            "remote_balance": {"sat": "9000", "msat": "9000000"},
            "unsettled_local_balance": {"sat": "0", "msat": "0"},
            "unsettled_remote_balance": {"sat": "0", "msat": "0"},
            "pending_open_local_balance": {"sat": "0", "msat": "0"},
            "pending_open_remote_balance": {"sat": "0", "msat": "0"},
        }),
    )
    .await;
    let wallet = wallet_for(&fixture);
    assert_eq!(wallet.balance().await.unwrap(), Msat(1_234_567));
    let seen = fixture.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/balance/channels");
    assert_eq!(
        seen[0]
            .headers
            .get("grpc-metadata-macaroon")
            .and_then(|v| v.to_str().ok()),
        Some(hex::encode(MACAROON).as_str())
    );
}

#[tokio::test]
async fn balance_falls_back_to_sats_when_msat_is_absent() {
    // An older LND: `local_balance` without `msat`.
    let fixture = balance_node(
        200,
        json!({"balance": "5", "local_balance": {"sat": "4321"}}),
    )
    .await;
    assert_eq!(
        wallet_for(&fixture).balance().await.unwrap(),
        Msat(4_321_000)
    );
    // Older still: only the deprecated top-level `balance` (sat).
    let fixture = balance_node(200, json!({"balance": "77", "pending_open_balance": "0"})).await;
    assert_eq!(wallet_for(&fixture).balance().await.unwrap(), Msat(77_000));
    // No channels: LND omits zero fields (proto3 JSON); a zero msat string is zero.
    let fixture = balance_node(200, json!({"local_balance": {"msat": "0"}})).await;
    assert_eq!(wallet_for(&fixture).balance().await.unwrap(), Msat::ZERO);
}

#[tokio::test]
async fn balance_of_an_unreachable_node_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let wallet = LndWallet::new(
        &format!("https://127.0.0.1:{port}"),
        MACAROON,
        Trust::PublicRoots,
    )
    .unwrap();
    match wallet.balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("connect"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn balance_refused_by_a_pay_only_macaroon_names_offchain_read() {
    // A macaroon baked for the router RPCs only: the gateway answers 403 PermissionDenied.
    let fixture = balance_node(
        403,
        json!({"code": 7, "message": "permission denied", "details": []}),
    )
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => {
            assert!(why.contains("offchain:read"), "{why}");
            assert!(why.contains("permission denied"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // LND also reports a caveat mismatch as gRPC Unknown (HTTP 500) naming the verification.
    let fixture = balance_node(
        500,
        json!({"code": 2, "message": "verification failed: signature mismatch after caveat verification", "details": []}),
    )
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("offchain:read"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A locked wallet is not a permission problem.
    let fixture = balance_node(
        503,
        json!({"code": 14, "message": "wallet locked, unlock it to enable full RPC access"}),
    )
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => {
            assert!(why.contains("not ready"), "{why}");
            assert!(!why.contains("offchain:read"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_balance_reply_is_unavailable_naming_the_field() {
    let cases: [(Value, &str); 5] = [
        (
            json!({"local_balance": {"msat": "lots"}}),
            "local_balance.msat",
        ),
        (
            json!({"local_balance": {"msat": "-5"}}),
            "local_balance.msat",
        ),
        (json!({"local_balance": {"sat": true}}), "local_balance.sat"),
        (json!({"balance": "18446744073709551615"}), "balance"),
        (
            json!({"remote_balance": {"msat": "1"}}),
            "local_balance.msat",
        ),
    ];
    for (reply, field) in cases {
        let fixture = balance_node(200, reply.clone()).await;
        match wallet_for(&fixture).balance().await {
            Err(PayError::Unavailable(why)) => {
                assert!(why.contains(&format!("`{field}`")), "{reply}: {why}")
            }
            other => panic!("{reply}: {other:?}"),
        }
    }
    // Not JSON at all.
    let fixture = Fixture::start(Identity::self_signed_ca(), |_| Canned::Stream {
        status: 200,
        lines: vec![(Duration::ZERO, "<html>gateway</html>".into())],
        hang: false,
    })
    .await;
    match wallet_for(&fixture).balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("LND balance"), "{why}"),
        other => panic!("{other:?}"),
    }
}
