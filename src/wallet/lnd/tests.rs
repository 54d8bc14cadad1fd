//! LND REST backend against an in-process HTTPS fixture (no LND binary can be installed where
//! these tests run). Every reply comes from `crate::wallet::fixture::lnd`, built from LND's
//! own sources (each annotated there with its upstream file): SendPaymentV2 and
//! TrackPaymentV2 stream newline-delimited `{"result": Payment}` updates, errors are gRPC
//! statuses through grpc-gateway (bare before a stream, `{"error": …}` inside one), and the
//! server presents a self-signed CA:TRUE certificate like LND's `tls.cert`.

use super::*;
use crate::wallet::fixture::lnd as node;
use crate::wallet::fixture::{payment, Canned, Fixture, Identity, Seen};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

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
        amount: Msat::new(10_000),
        max_fee: Msat::new(3_000),
        timeout,
    }
}

/// A named canned reply.
type Case = (&'static str, fn() -> Canned);

fn update(status: &str, hash: &PaymentHash, extra: Value) -> Value {
    node::update(status, hash, extra)
}

/// A node answering SendPaymentV2 with `send`, and TrackPaymentV2 with `track(n)` for its
/// n-th call.
async fn node_with(
    send: impl Fn() -> Canned + Send + Sync + 'static,
    track: impl Fn(u32) -> Canned + Send + Sync + 'static,
) -> (Fixture, Arc<AtomicU32>) {
    let tracks = Arc::new(AtomicU32::new(0));
    let t = tracks.clone();
    let fixture = Fixture::start(Identity::self_signed_ca(), move |seen: &Seen| {
        if seen.path == "/v2/router/send" {
            send()
        } else if seen.path.starts_with("/v2/router/track/") {
            track(t.fetch_add(1, Ordering::SeqCst))
        } else {
            node::no_such_path()
        }
    })
    .await;
    (fixture, tracks)
}

/// TrackPaymentV2 of an in-flight payment: the current state, then the stream stays open.
fn tracking(update: Value) -> Canned {
    Canned::Stream {
        status: 200,
        lines: vec![(Duration::from_millis(5), update.to_string())],
        hang: true,
    }
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
    assert_eq!(paid.fee, Msat::new(1250));
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
async fn errors_from_before_the_payment_is_registered_are_final() {
    let cases: Vec<(Case, &str, &str)> = vec![
        (
            ("already paid (409)", node::already_paid),
            "already-paid",
            "",
        ),
        (
            ("invoice expired", node::invoice_expired),
            "invoice-expired",
            "",
        ),
        (
            ("self-payment", node::self_payment),
            "payment-rejected",
            "self-payments",
        ),
        (
            ("macaroon mismatch", node::macaroon_mismatch),
            "payment-rejected",
            "macaroon",
        ),
        // "expired" in a macaroon error is the macaroon's, not the invoice's.
        (
            ("macaroon expired", node::macaroon_expired),
            "payment-rejected",
            "macaroon",
        ),
        (
            ("permission denied (403)", node::permission_denied),
            "payment-rejected",
            "macaroon",
        ),
    ];
    for ((name, reply), expected, says) in cases {
        let (_, hash) = payment();
        let (fixture, tracks) = node_with(reply, |_| node::not_initiated()).await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), expected, "{name}: {err}");
        assert!(err.to_string().contains(says), "{name}: {err}");
        assert!(!err.may_be_in_flight(), "{name}: {err}");
        assert_eq!(tracks.load(Ordering::SeqCst), 0, "{name}: nothing to track");
    }
}

#[tokio::test]
async fn lnd_not_ready_is_wallet_unavailable() {
    let cases: [Case; 4] = [
        ("waiting to start", node::waiting_to_start),
        ("wallet not created", node::wallet_not_created),
        ("wallet locked", node::wallet_locked),
        ("RPC server starting", node::rpc_starting),
    ];
    for (name, reply) in cases {
        let (_, hash) = payment();
        let (fixture, _) = node_with(reply, |_| node::not_initiated()).await;
        let err = wallet_for(&fixture)
            .pay(&request(hash, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "wallet-unavailable", "{name}: {err}");
        assert!(err.to_string().contains("not ready"), "{name}: {err}");
    }
}

#[tokio::test]
async fn in_transition_and_already_exists_are_tracked_not_failed() {
    // 409 "payment is in transition": LND still holds HTLCs of an earlier attempt, which then
    // settles — the payment is paid, once.
    let (preimage, hash) = payment();
    let pre_hex = hex::encode(preimage);
    let (fixture, tracks) = node_with(node::in_transition, move |n| {
        if n == 0 {
            tracking(update("IN_FLIGHT", &hash, json!({})))
        } else {
            Canned::lines(
                200,
                &[update(
                    "SUCCEEDED",
                    &hash,
                    json!({"payment_preimage": pre_hex, "fee_msat": "3"}),
                )],
            )
        }
    })
    .await;
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert!(tracks.load(Ordering::SeqCst) >= 2);
    assert_eq!(fixture.count("/v2/router/send"), 1, "never sent twice");
    // 409 "payment already exists" (INITIATED, no HTLC yet) that does not resolve in time:
    // unresolved, never a failure.
    let (_, hash) = payment();
    let (fixture, _) = node_with(node::already_exists, move |_| {
        tracking(update("INITIATED", &hash, json!({})))
    })
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, PayError::Unresolved(_)), "{err:?}");
    assert_eq!(err.code(), "payment-unresolved");
    assert!(err.may_be_in_flight());
    assert!(err.to_string().contains("payment already exists"), "{err}");
}

#[tokio::test]
async fn a_stream_error_before_the_first_update_is_unresolved() {
    // LND registered the payment before the stream failed: "not initiated" right after proves
    // nothing, and a later FAILED is the real outcome.
    let (_, hash) = payment();
    let (fixture, tracks) = node_with(
        || node::error_before_first_update(2, "unable to subscribe to payment"),
        |_| node::not_initiated(),
    )
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, PayError::Unresolved(_)), "{err:?}");
    assert!(tracks.load(Ordering::SeqCst) >= 1);
    let (_, hash) = payment();
    let (fixture, _) = node_with(
        || node::error(2, "unable to subscribe to payment"),
        move |n| {
            if n == 0 {
                node::not_initiated()
            } else {
                Canned::lines(
                    200,
                    &[update(
                        "FAILED",
                        &hash,
                        json!({"failure_reason": "FAILURE_REASON_INSUFFICIENT_BALANCE"}),
                    )],
                )
            }
        },
    )
    .await;
    let err = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err, PayError::InsufficientBalance);
}

#[tokio::test]
async fn a_stream_error_after_the_payment_left_is_tracked() {
    let (preimage, hash) = payment();
    let pre_hex = hex::encode(preimage);
    let (fixture, _) = node_with(
        move || {
            Canned::lines(
                200,
                &[
                    update("IN_FLIGHT", &hash, json!({})),
                    node::stream_error(2, "payment lifecycle exited"),
                ],
            )
        },
        move |_| {
            Canned::lines(
                200,
                &[update(
                    "SUCCEEDED",
                    &hash,
                    json!({"payment_preimage": pre_hex}),
                )],
            )
        },
    )
    .await;
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    // The stream simply ends after IN_FLIGHT (the gateway or a proxy in between closed it):
    // tracked the same way.
    let (preimage, hash) = payment();
    let pre_hex = hex::encode(preimage);
    let (fixture, _) = node_with(
        move || Canned::lines(200, &[update("IN_FLIGHT", &hash, json!({}))]),
        move |_| {
            Canned::lines(
                200,
                &[update(
                    "SUCCEEDED",
                    &hash,
                    json!({"payment_preimage": pre_hex}),
                )],
            )
        },
    )
    .await;
    let paid = wallet_for(&fixture)
        .pay(&request(hash, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(fixture.count("/v2/router/send"), 1, "never sent twice");
}

#[tokio::test]
async fn updates_longer_than_the_line_limit_are_read() {
    // 800 failed attempts (about 2.2 KiB each, as LND writes them; 1.8 MB): every update is over the
    // 1 MiB per-line limit, and grows with each attempt.
    let (preimage, hash) = payment();
    let htlcs: Vec<Value> = (0..800).map(node::failed_attempt).collect();
    let in_flight = update("IN_FLIGHT", &hash, json!({ "htlcs": htlcs }));
    let settled = update(
        "SUCCEEDED",
        &hash,
        json!({"payment_preimage": hex::encode(preimage), "fee_msat": "9", "htlcs": htlcs}),
    );
    let len = settled.to_string().len();
    assert!(len > crate::wallet::http::MAX_BODY, "{len}");
    let (fixture, _) = node_with(
        {
            let (in_flight, settled) = (in_flight.clone(), settled.clone());
            move || Canned::lines(200, &[in_flight.clone(), settled.clone()])
        },
        move |_| Canned::lines(200, std::slice::from_ref(&settled)),
    )
    .await;
    let wallet = wallet_for(&fixture);
    let paid = wallet
        .pay(&request(hash, Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(paid.preimage.as_bytes(), &preimage);
    assert_eq!(paid.fee, Msat::new(9));
    match wallet.lookup(&hash).await.unwrap() {
        PaymentStatus::Succeeded(paid) => assert_eq!(paid.preimage.as_bytes(), &preimage),
        other => panic!("{other:?}"),
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
            node::not_initiated()
        } else {
            node::no_such_path()
        }
    })
    .await;
    let wallet = wallet_for(&fixture);
    match wallet.lookup(&hash).await.unwrap() {
        PaymentStatus::Succeeded(paid) => {
            assert_eq!(paid.preimage.as_bytes(), &preimage);
            assert_eq!(paid.fee, Msat::new(7));
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
    // The gateway's own 404 for a path is not LND saying "never sent".
    let (_, elsewhere) = payment();
    assert!(wallet.lookup(&elsewhere).await.is_err());
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
    assert_eq!(wallet.balance().await.unwrap(), Msat::new(1_234_567));
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
        Msat::new(4_321_000)
    );
    // Older still: only the deprecated top-level `balance` (sat).
    let fixture = balance_node(200, json!({"balance": "77", "pending_open_balance": "0"})).await;
    assert_eq!(
        wallet_for(&fixture).balance().await.unwrap(),
        Msat::new(77_000)
    );
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
    // A locked wallet is not a permission problem (`rpcperms/interceptor.go`: a plain error,
    // gRPC Unknown, HTTP 500).
    let fixture = balance_node(
        500,
        json!({"code": 2, "message": "wallet locked, unlock it to enable full RPC access", "details": []}),
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
