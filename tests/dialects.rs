//! Every 402 an agent meets, through the proxy to the test seller (real HTTP on 127.0.0.1, the
//! dev wallet): L402 servers that insist on `LSAT`, that spend tokens once, that refuse paid
//! credentials; MPP `Payment` charges; x402 on Lightning and on EVM; one 402 offering several
//! dialects; several services on one origin; and WebSocket URIs in absolute form.

mod common;

use common::{Harness, Options};

const ALICE: (&str, &str) = ("alice", "alice-key");
const TOKEN: &str = "dialects-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lsat_only_server_is_answered_in_lsat_paid_once_and_served_on_reuse() {
    let h = Harness::start().await;
    let first = h.curl(Some(ALICE), &h.http_url("/strict/a/x"), &[]).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.paid());
    assert_eq!(first.header("x-l402-proxy-scheme"), Some("l402"));
    for _ in 0..3 {
        let again = h.curl(Some(ALICE), &h.http_url("/strict/a/y"), &[]).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.header("x-l402-proxy-token"), Some("cached"));
    }
    assert_eq!(h.payments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_server_is_served_on_every_request() {
    let h = Harness::start().await;
    for n in 0..4 {
        let r = h.curl(Some(ALICE), &h.http_url("/single/a/x"), &[]).await;
        assert_eq!(r.status, 200, "request {n}: {r:?}");
        assert!(r.paid(), "each request pays its own token: {r:?}");
    }
    assert_eq!(h.payments(), 4);
    // No token is kept for an origin whose tokens serve once.
    assert_eq!(h.shared.layer.tokens().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_the_paid_credential_is_paid_once_then_cooled_off() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await;
    let first = h.curl(Some(ALICE), &h.http_url("/never/x"), &[]).await;
    assert_eq!(first.status, 402);
    assert_eq!(first.decline(), Some("replay-rejected"));
    assert!(first.paid(), "it did pay, once: {first:?}");
    for _ in 0..3 {
        let again = h.curl(Some(ALICE), &h.http_url("/never/y"), &[]).await;
        assert_eq!(again.status, 402);
        assert_eq!(again.decline(), Some("service-cooling-off"), "{again:?}");
    }
    assert_eq!(h.payments(), 1, "the refusing server drains nothing more");
    assert_eq!(
        h.shared.layer.tokens().len(),
        0,
        "the refused token is not kept"
    );
    // The money that bought nothing is on the operator's record.
    let mut codes = Vec::new();
    for _ in 0..50 {
        let d = h
            .admin(Some(TOKEN), "GET", "/v1/declines?agent=alice", &[])
            .await;
        let v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        codes = v["declines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["code"].as_str().unwrap().to_string())
            .collect();
        if codes.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(codes.contains(&"replay-rejected".to_string()), "{codes:?}");
    assert!(
        codes.contains(&"service-cooling-off".to_string()),
        "{codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mpp_charge_is_paid_served_and_paid_again_next_time() {
    let h = Harness::start().await;
    let first = h.curl(Some(ALICE), &h.http_url("/mpp/x"), &[]).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.paid());
    assert_eq!(first.header("x-l402-proxy-scheme"), Some("payment"));
    assert!(
        first.header("payment-receipt").is_some(),
        "the receipt reaches the agent"
    );
    assert_eq!(first.body, "paid content for mpp: /mpp/x\n");
    let second = h.curl(Some(ALICE), &h.http_url("/mpp/x"), &[]).await;
    assert_eq!(second.status, 200);
    assert!(second.paid(), "a charge credential serves one request");
    assert_eq!(h.payments(), 2);
    assert_eq!(h.shared.layer.tokens().len(), 0, "charges are never cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mpp_request_disagreeing_with_its_invoice_is_refused_unpaid() {
    let h = Harness::start().await;
    let r = h.curl(Some(ALICE), &h.http_url("/mpplie/x"), &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.decline(), Some("offer-invoice-mismatch"), "{r:?}");
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("payment"));
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_offering_lsat_l402_and_payment_is_paid_once() {
    let h = Harness::start().await;
    let r = h.curl(Some(ALICE), &h.http_url("/mixed/a/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(
        r.header("x-l402-proxy-scheme"),
        Some("l402"),
        "l402 first by default"
    );
    assert_eq!(h.payments(), 1, "one offer paid, never two");
    // With `payment` preferred, the MPP offer of the same 402 is the one paid.
    let h = Harness::with(Options {
        pay_schemes: "[payment, l402]".into(),
        ..Options::default()
    })
    .await;
    let r = h.curl(Some(ALICE), &h.http_url("/mixed/a/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("payment"));
    assert_eq!(h.payments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_on_lightning_is_paid_once_per_request_and_evm_passes_through() {
    let h = Harness::with(Options {
        pay_schemes: "[l402, payment, x402]".into(),
        ..Options::default()
    })
    .await;
    let r = h.curl(Some(ALICE), &h.http_url("/x402/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("x402"));
    assert!(r.header("payment-response").is_some());
    assert_eq!(h.payments(), 1, "the Lightning offer of the two, once");
    let evm = h.curl(Some(ALICE), &h.http_url("/evm/x"), &[]).await;
    assert_eq!(evm.status, 402);
    assert_eq!(evm.decline(), Some("scheme-unsupported"));
    assert!(
        evm.header("x-l402-proxy-reason")
            .unwrap()
            .contains("eip155:84532"),
        "{evm:?}"
    );
    assert_eq!(h.payments(), 1);
    // Left out of pay.schemes, x402 is not paid, and the agent is told why.
    let h = Harness::start().await;
    let r = h.curl(Some(ALICE), &h.http_url("/x402/x"), &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.decline(), Some("scheme-unsupported"));
    assert!(r
        .header("x-l402-proxy-reason")
        .unwrap()
        .contains("pay.schemes"));
    assert_eq!(h.payments(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_lnbtc_is_paid_only_when_its_invoice_is_bound_to_the_request() {
    let h = Harness::with(Options {
        pay_schemes: "[x402]".into(),
        ..Options::default()
    })
    .await;
    // A POST with a body over intercepted HTTPS: the seller binds method, URL, body digest and
    // `accept`; the proxy recomputes the same binding from the agent's request and pays once.
    let r = h
        .curl(
            Some(ALICE),
            &h.https_url("/x402/report?q=1"),
            &[
                "-X",
                "POST",
                "-H",
                "accept: text/plain",
                "--data-binary",
                "{\"a\": 1}",
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("x402"));
    assert!(r.header("payment-response").is_some(), "{r:?}");
    assert_eq!(h.payments(), 1);
    // A server whose invoice commits to another request than the one its offer states: refused
    // before any payment, the agent told why.
    let lie = h.curl(Some(ALICE), &h.http_url("/x402lie/x"), &[]).await;
    assert_eq!(lie.status, 402, "{lie:?}");
    assert_eq!(lie.decline(), Some("offer-binding-mismatch"), "{lie:?}");
    assert_eq!(lie.header("x-l402-proxy-scheme"), Some("x402"));
    assert!(
        lie.header("x-l402-proxy-reason")
            .unwrap()
            .contains("description hash"),
        "{lie:?}"
    );
    assert_eq!(
        h.wallet.attempts(),
        1,
        "nothing paid for the hostile binding"
    );
    assert_eq!(h.payments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_to_every_dialect() {
    let h = Harness::with(Options {
        alice_limits: "{ per_request_sats: 5 }".into(),
        pay_schemes: "[l402, payment, x402]".into(),
        ..Options::default()
    })
    .await;
    for path in [
        "/weather/x",
        "/mpp/x",
        "/x402/x",
        "/mixed/a/x",
        "/strict/a/x",
    ] {
        let r = h.curl(Some(ALICE), &h.http_url(path), &[]).await;
        assert_eq!(r.status, 402, "{path}");
        assert_eq!(r.decline(), Some("over-per-request-limit"), "{path}: {r:?}");
    }
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_alternating_on_one_origin_pay_once_each() {
    let h = Harness::start().await;
    for n in 0..6 {
        let service = if n % 2 == 0 { "a" } else { "b" };
        let r = h
            .curl(Some(ALICE), &h.http_url(&format!("/svc/{service}")), &[])
            .await;
        assert_eq!(r.status, 200, "request {n}: {r:?}");
    }
    assert_eq!(
        h.payments(),
        2,
        "one payment per service, not one per request"
    );
    // Another service of the same origin is its own purchase, and leaves the others alone.
    assert!(h.curl(Some(ALICE), &h.http_url("/svc/c"), &[]).await.paid());
    for service in ["a", "b", "c"] {
        let r = h
            .curl(Some(ALICE), &h.http_url(&format!("/svc/{service}")), &[])
            .await;
        assert_eq!(
            r.header("x-l402-proxy-token"),
            Some("cached"),
            "{service}: {r:?}"
        );
    }
    assert_eq!(h.payments(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_scopes_survive_a_restart() {
    let dir = common::temp_dir("scopes");
    let first = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        ..Options::default()
    })
    .await;
    for service in ["a", "b", "a"] {
        let _ = first
            .curl(
                Some(ALICE),
                &first.http_url(&format!("/svc/{service}")),
                &[],
            )
            .await;
    }
    assert_eq!(first.payments(), 2);
    first.shared.ledger.flush().await.unwrap();
    let (seller, wallet) = (first.seller.clone(), first.wallet.clone());
    first.stop().await;
    let second = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        reuse_seller: Some(seller),
        wallet: Some(wallet),
        ..Options::default()
    })
    .await;
    for service in ["b", "a", "b", "a"] {
        let r = second
            .curl(
                Some(ALICE),
                &second.http_url(&format!("/svc/{service}")),
                &[],
            )
            .await;
        assert_eq!(
            r.header("x-l402-proxy-token"),
            Some("cached"),
            "{service}: {r:?}"
        );
    }
    assert_eq!(second.payments(), 2);
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

/// aiohttp sends `GET ws://host/path` in absolute form through an HTTP proxy; the proxy takes
/// it as the HTTP request it is and splices the WebSocket to a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_uris_in_absolute_form_reach_a_real_websocket_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::with(Options {
        extra_allow: vec![format!("127.0.0.1:{port}")],
        ..Options::default()
    })
    .await;
    let script = r#"
import asyncio, json, os, sys
try:
    import aiohttp
    from aiohttp import web
except ImportError:
    print(json.dumps({"error": "aiohttp is not installed: run bash tests/clients/install.sh"}))
    sys.exit(0)

async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        await ws.send_str("echo:" + msg.data)
    return ws

async def main():
    app = web.Application()
    app.router.add_get("/chat", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(os.environ["WS_PORT"]))
    await site.start()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"ws://127.0.0.1:{os.environ['WS_PORT']}/chat", proxy=os.environ["PROXY"]
        ) as ws:
            await ws.send_str("hello")
            reply = await ws.receive_str()
    await runner.cleanup()
    print(json.dumps({"reply": reply}))

asyncio.run(main())
"#;
    let out = common::python(
        script,
        &[
            ("WS_PORT", port.to_string()),
            ("PROXY", h.proxy_url(Some(ALICE))),
        ],
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["reply"], "echo:hello", "{out}");
}
