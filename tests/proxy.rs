//! End to end through the proxy: real curl and Python `requests` clients, a real L402 seller over
//! HTTP and HTTPS, all on 127.0.0.1.

mod common;

use bytes::Bytes;
use common::{proxied, python, Harness, Options};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_https_pays_then_reuses_the_token() {
    let h = Harness::start().await;
    let first = h
        .curl(Some(ALICE), &h.https_url("/weather/today"), &[])
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.paid());
    assert_eq!(first.header("x-l402-proxy-paid-msat"), Some("10000"));
    assert_eq!(first.body, "paid content for weather: /weather/today\n");
    let again = h
        .curl(
            Some(ALICE),
            &h.https_url("/weather/tomorrow"),
            &["--http1.1"],
        )
        .await;
    assert_eq!(again.status, 200);
    assert!(!again.paid());
    assert_eq!(h.payments(), 1);
    assert_eq!(h.seller.seller.paid_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_plain_http_pays_and_never_forwards_proxy_credentials() {
    let h = Harness::start().await;
    let r = h.curl(Some(ALICE), &h.http_url("/news/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    for url in [h.http_url("/inspect/x"), h.https_url("/inspect/x")] {
        let seen = h
            // HTTP/1.1: h2 has no Connection header, so a named hop header only exists in h1.
            .curl(
                Some(ALICE),
                &url,
                &[
                    "--http1.1",
                    "-H",
                    "Connection: keep-alive, X-Hop",
                    "-H",
                    "X-Hop: 1",
                    "-H",
                    "X-Kept: 2",
                ],
            )
            .await;
        assert_eq!(seen.status, 200);
        let upstream_saw = seen.body.to_ascii_lowercase();
        assert!(
            !upstream_saw.contains("proxy-authorization"),
            "{upstream_saw}"
        );
        assert!(!upstream_saw.contains("proxy-connection"), "{upstream_saw}");
        assert!(
            !upstream_saw.contains("x-hop"),
            "{url}: headers named by Connection are hop-by-hop"
        );
        assert!(upstream_saw.contains("x-kept: 2"), "{upstream_saw}");
    }
    let echoed = h
        .curl(
            Some(ALICE),
            &h.http_url("/echo/x"),
            &["-X", "POST", "--data-binary", "hi"],
        )
        .await;
    assert_eq!(echoed.body, "POST hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_challenge_dialect_is_paid_over_http_and_https() {
    let h = Harness::start().await;
    let dialects = [
        "aperture",
        "spec",
        "bare",
        "lsat",
        "folded",
        "params",
        "urlsafe",
        "status401",
    ];
    for (i, d) in dialects.iter().enumerate() {
        for https in [false, true] {
            let path = format!("/svc-{d}-{https}/x?dialect={d}");
            let url = if https {
                h.https_url(&path)
            } else {
                h.http_url(&path)
            };
            let r = h.curl(Some(ALICE), &url, &[]).await;
            assert_eq!(r.status, 200, "dialect {d} https={https}: {r:?}");
            assert!(r.paid(), "dialect {d} https={https}");
            let again = h.curl(Some(ALICE), &url, &[]).await;
            assert_eq!(again.status, 200);
            assert!(!again.paid(), "dialect {d}: the token is reused");
        }
        assert_eq!(h.payments(), 2 * (i + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_keeps_a_token_per_service() {
    let h = Harness::start().await;
    for path in [
        "/weather/a",
        "/stocks/b",
        "/weather/c",
        "/stocks/d",
        "/weather/a",
    ] {
        let r = h.curl(Some(ALICE), &h.https_url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    assert_eq!(h.payments(), 2, "one payment per service, not per request");
    assert_eq!(h.shared.layer.tokens().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_never_ride_on_each_other() {
    let h = Harness::start().await;
    assert!(h
        .curl(Some(ALICE), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    assert!(h
        .curl(Some(BOB), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    assert_eq!(h.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_is_replayed_after_paying() {
    let h = Harness::start().await;
    let body = "x".repeat(50_000);
    let r = h
        .curl(
            Some(ALICE),
            &h.https_url("/echo/upload"),
            &["-X", "PUT", "--data-binary", &body],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(r.body, format!("PUT {body}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_to_replay_gets_the_402_with_a_reason() {
    let h = Harness::with(Options {
        max_body: 64,
        ..Options::default()
    })
    .await;
    let big = "y".repeat(1000);
    let r = h
        .curl(
            Some(ALICE),
            &h.http_url("/echo/big"),
            &["--data-binary", &big],
        )
        .await;
    assert_eq!(r.status, 402);
    assert_eq!(r.decline(), Some("body-not-replayable"));
    assert_eq!(h.wallet.attempts(), 0);
    // Small bodies still work.
    let small = h
        .curl(
            Some(ALICE),
            &h.http_url("/echo/small"),
            &["--data-binary", "ok"],
        )
        .await;
    assert_eq!(small.body, "POST ok");
}

/// Proves events reach the agent one by one: the seller holds event 1 back until the test has
/// read event 0 through the proxy, so no timing is involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_through_incrementally() {
    let mut opts = Options::default();
    opts.seller.gate_events = true;
    let h = Harness::with(opts).await;
    for (url, extra) in [
        (h.https_url("/sse/feed?n=3"), "--http2"),
        (h.http_url("/sse/feed?n=3"), "--http1.1"),
    ] {
        let mut child = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-N",
                extra,
                "--proxy",
                &h.proxy_url(Some(ALICE)),
                "--cacert",
            ])
            .arg(h.ca())
            .arg(&url)
            .env_remove("NO_PROXY")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("data:") {
                    return line;
                }
            }
            String::new()
        })
        .await
        .expect("the first event must arrive while the stream is still open");
        assert_eq!(first, "data: event 0");
        h.seller.seller.release_events(2);
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("data:") {
                rest.push(line);
            }
        }
        assert_eq!(rest, vec!["data: event 1", "data: event 2"]);
        assert!(child.wait().await.unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_get_407() {
    let h = Harness::start().await;
    for creds in [
        None,
        Some(("alice", "wrong")),
        Some(("mallory", "alice-key")),
    ] {
        let r = h.curl(creds, &h.http_url("/free/x"), &[]).await;
        assert_eq!(r.status, 407, "{creds:?}");
        assert_eq!(
            r.header("proxy-authenticate"),
            Some("Basic realm=\"l402-proxy\"")
        );
        let c = h.curl(creds, &h.https_url("/free/x"), &[]).await;
        assert_eq!(c.connect_status, 407, "CONNECT {creds:?}: {c:?}");
    }
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_intercept_are_tunnelled_untouched() {
    let h = Harness::with(Options {
        intercept: vec!["*.example.com".into()],
        ..Options::default()
    })
    .await;
    // Through the tunnel the agent sees the seller's own certificate and its raw 402.
    let seller_ca = h.seller_ca().display().to_string();
    let r = h
        .curl(
            Some(ALICE),
            &h.https_url("/weather/x"),
            &["--cacert", &seller_ca],
        )
        .await;
    assert_eq!(r.status, 402, "{r:?}");
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.decline(), None);
    let free = h
        .curl(
            Some(ALICE),
            &h.https_url("/free/x"),
            &["--cacert", &seller_ca],
        )
        .await;
    assert_eq!(free.status, 200);
    assert_eq!(h.wallet.attempts(), 0);
    // Our CA alone does not verify a tunnelled host: proof that nothing was intercepted.
    let mitm = h.curl(Some(ALICE), &h.https_url("/free/x"), &[]).await;
    assert_eq!(mitm.status, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refuses_private_and_metadata_destinations() {
    let h = Harness::with(Options {
        allow_seller: false,
        ..Options::default()
    })
    .await;
    let r = h.curl(Some(ALICE), &h.http_url("/free/x"), &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("x-l402-proxy-error"), Some("destination-refused"));
    let c = h.curl(Some(ALICE), &h.https_url("/free/x"), &[]).await;
    assert_eq!(c.connect_status, 403, "{c:?}");
    // The metadata address is refused before any connection is attempted.
    let m = h
        .curl(Some(ALICE), "http://169.254.169.254/latest/meta-data/", &[])
        .await;
    assert_eq!(m.status, 403);
    let l = h.curl(Some(ALICE), "http://localhost:9/", &[]).await;
    assert_eq!(l.status, 403);
    // The agent learns it was refused, not which internal address the name resolved to.
    assert!(
        !l.body.contains("127.0.0.1") && !l.body.contains("::1"),
        "{}",
        l.body
    );
    assert!(l.body.contains("refused"), "{}", l.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified() {
    let h = Harness::with(Options {
        trust_seller: false,
        ..Options::default()
    })
    .await;
    let r = h.curl(Some(ALICE), &h.https_url("/weather/x"), &[]).await;
    assert_eq!(r.status, 502, "{r:?}");
    // The agent (and the operator's log) are told what to fix, not just "UnknownIssuer".
    assert_eq!(
        r.header("x-l402-proxy-error"),
        Some("upstream-certificate-untrusted"),
        "{r:?}"
    );
    assert!(r.body.contains("tls.upstream_roots"), "{}", r.body);
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_invoices_are_refused_and_nothing_is_paid() {
    let h = Harness::start().await;
    for (kind, code) in [
        ("amountless", "invoice-amountless"),
        ("expired", "invoice-expired"),
        ("wrong-network", "invoice-wrong-network"),
        ("garbage", "invoice-invalid"),
        ("bad-checksum", "invoice-invalid"),
        ("unknown-feature", "invoice-invalid"),
        ("huge", "over-per-request-limit"),
        ("mismatch", "token-invoice-mismatch"),
    ] {
        let r = h
            .curl(Some(ALICE), &h.https_url(&format!("/hostile/{kind}")), &[])
            .await;
        assert_eq!(r.status, 402, "{kind}");
        assert_eq!(r.decline(), Some(code), "{kind}: {r:?}");
        assert!(r.header("x-l402-proxy-reason").is_some());
        assert_eq!(
            r.body, "payment required\n",
            "the upstream 402 body reaches the agent"
        );
    }
    let over = h.curl(Some(ALICE), &h.https_url("/pricey/x"), &[]).await;
    assert_eq!(over.decline(), Some("over-per-request-limit"));
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_l402_responses_pass_through_untouched() {
    let h = Harness::start().await;
    let offers = h.curl(Some(ALICE), &h.https_url("/offers/x"), &[]).await;
    assert_eq!(offers.status, 402);
    assert!(offers.body.contains("payment_context_token"));
    // Passed through untouched, but no longer silently: the agent learns why it was not paid.
    assert_eq!(offers.decline(), Some("scheme-unsupported"));
    assert!(offers
        .header("x-l402-proxy-reason")
        .unwrap()
        .contains("Fewsats"));
    let basic = h.curl(Some(ALICE), &h.http_url("/basic/x"), &[]).await;
    assert_eq!(basic.status, 401);
    assert_eq!(
        basic.header("www-authenticate"),
        Some("Basic realm=\"seller\"")
    );
    let free = h.curl(Some(ALICE), &h.http_url("/free/x"), &[]).await;
    assert_eq!(free.status, 200);
    assert_eq!(h.wallet.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_402_after_paying_goes_back_without_paying_again() {
    let h = Harness::start().await;
    let r = h.curl(Some(ALICE), &h.https_url("/never/x"), &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.decline(), Some("replay-rejected"));
    assert!(r.paid(), "the agent is told a payment was made");
    assert_eq!(h.wallet.attempts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_cached_token_is_evicted_and_the_same_402_is_paid() {
    let h = Harness::start().await;
    assert!(h
        .curl(Some(ALICE), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    h.seller.seller.rotate_root_key();
    let r = h.curl(Some(ALICE), &h.https_url("/weather/a"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(h.payments(), 2);
    let again = h.curl(Some(ALICE), &h.https_url("/weather/a"), &[]).await;
    assert!(!again.paid());
    assert_eq!(h.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caveat_expiry_pre_expires_tokens() {
    let mut opts = Options::default();
    // Valid 2 s: inside the proxy's expiry skew, so the token is never reused.
    opts.seller.token_ttl_secs = Some(2);
    let h = Harness::with(opts).await;
    assert!(h
        .curl(Some(ALICE), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    assert!(h
        .curl(Some(ALICE), &h.https_url("/weather/a"), &[])
        .await
        .paid());
    assert_eq!(h.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_make_exactly_one_payment() {
    let h = Harness::with(Options {
        pay_delay: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let url = h.http_url("/weather/today");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let url = url.clone();
            let proxy = h.proxy;
            tokio::spawn(async move {
                proxied(proxy, ALICE, http::Method::GET, &url, Bytes::new()).await
            })
        })
        .collect();
    let mut paid = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        paid += r.paid() as usize;
    }
    assert_eq!(paid, 1);
    assert_eq!(h.wallet.attempts(), 1);
    assert_eq!(h.payments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_through_the_proxy() {
    let h = Harness::start().await;
    let script = r#"
import json, os, requests
out = {}
r = requests.get(os.environ["HTTPS_URL"], timeout=30)
out["https"] = [r.status_code, r.headers.get("x-l402-proxy-token"), r.text]
r = requests.post(os.environ["ECHO_URL"], data=b"from python", timeout=30)
out["post"] = [r.status_code, r.text]
r = requests.get(os.environ["HTTP_URL"], timeout=30)
out["http"] = [r.status_code, r.headers.get("x-l402-proxy-token")]
r = requests.get(os.environ["HTTPS_URL"], timeout=30)
out["again"] = [r.status_code, r.headers.get("x-l402-proxy-token")]
print(json.dumps(out))
"#;
    let proxy = h.proxy_url(Some(ALICE));
    let out = python(
        script,
        &[
            ("HTTPS_PROXY", proxy.clone()),
            ("HTTP_PROXY", proxy),
            ("REQUESTS_CA_BUNDLE", h.ca().display().to_string()),
            ("HTTPS_URL", h.https_url("/weather/py")),
            ("ECHO_URL", h.https_url("/echo/py")),
            ("HTTP_URL", h.http_url("/stocks/py")),
        ],
    )
    .await;
    assert_eq!(
        out["https"],
        serde_json::json!([200, "paid", "paid content for weather: /weather/py\n"])
    );
    assert_eq!(out["post"], serde_json::json!([200, "POST from python"]));
    assert_eq!(out["http"], serde_json::json!([200, "paid"]));
    assert_eq!(out["again"], serde_json::json!([200, "cached"]));
    assert_eq!(h.payments(), 3);
}

/// Protocol switches (WebSocket and kin) cross interception: the seller's paid `/upgrade/` route
/// answers `101` and echoes bytes; a Python client speaks raw bytes after the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_paid_then_spliced_end_to_end() {
    let h = Harness::start().await;
    let script = r#"
import base64, http.client, json, os, ssl
auth = "Basic " + base64.b64encode(b"alice:alice-key").decode()
proxy_host, proxy_port = os.environ["PROXY"].split(":")

def switch(conn, target):
    conn.putrequest("GET", target, skip_host=False)
    conn.putheader("Connection", "Upgrade")
    conn.putheader("Upgrade", "echo")
    if isinstance(conn, http.client.HTTPSConnection) is False:
        conn.putheader("Proxy-Authorization", auth)
    conn.endheaders()
    resp = conn.getresponse()
    out = [resp.status, resp.getheader("x-l402-proxy-token"), resp.getheader("upgrade")]
    if resp.status == 101:
        conn.sock.sendall(b"ping through the proxy")
        got = b""
        while len(got) < 22:
            got += conn.sock.recv(64)
        out.append(got.decode())
    conn.close()
    return out

result = {}
ctx = ssl.create_default_context(cafile=os.environ["CA"])
for name in ["https", "https_again"]:
    c = http.client.HTTPSConnection(proxy_host, int(proxy_port), context=ctx, timeout=20)
    c.set_tunnel("localhost", int(os.environ["HTTPS_PORT"]), headers={"Proxy-Authorization": auth})
    result[name] = switch(c, "/upgrade/chat")
c = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=20)
result["http"] = switch(c, "http://127.0.0.1:%s/upgrade/chat" % os.environ["HTTP_PORT"])
print(json.dumps(result))
"#;
    let out = python(
        script,
        &[
            ("PROXY", h.proxy.to_string()),
            ("CA", h.ca().display().to_string()),
            ("HTTPS_PORT", h.seller.https.port().to_string()),
            ("HTTP_PORT", h.seller.http.port().to_string()),
        ],
    )
    .await;
    let echo = "ping through the proxy";
    assert_eq!(
        out["https"],
        serde_json::json!([101, "paid", "echo", echo]),
        "{out}"
    );
    assert_eq!(
        out["https_again"],
        serde_json::json!([101, null, "echo", echo]),
        "{out}"
    );
    assert_eq!(
        out["http"],
        serde_json::json!([101, "paid", "echo", echo]),
        "{out}"
    );
    assert_eq!(
        h.payments(),
        2,
        "one per origin; the second HTTPS switch rode the cached token"
    );
}

/// Clients that CONNECT even for plain http:// and ws:// (most WebSocket libraries behind a
/// proxy) get plain HTTP served inside the tunnel, with the L402 flow intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_inside_connect_is_served_not_dropped() {
    let h = Harness::start().await;
    let script = r#"
import base64, http.client, json, os
auth = "Basic " + base64.b64encode(b"alice:alice-key").decode()
host, port = os.environ["PROXY"].split(":")
out = {}
c = http.client.HTTPConnection(host, int(port), timeout=20)
c.set_tunnel("127.0.0.1", int(os.environ["HTTP_PORT"]), headers={"Proxy-Authorization": auth})
c.request("GET", "/weather/tunnelled")
r = c.getresponse()
out["get"] = [r.status, r.getheader("x-l402-proxy-token"), r.read().decode()]
c.request("GET", "/weather/again")
r = c.getresponse()
out["again"] = [r.status, r.getheader("x-l402-proxy-token"), r.read().decode()]
c.close()
print(json.dumps(out))
"#;
    let out = python(
        script,
        &[
            ("PROXY", h.proxy.to_string()),
            ("HTTP_PORT", h.seller.http.port().to_string()),
        ],
    )
    .await;
    assert_eq!(
        out["get"],
        serde_json::json!([
            200,
            "paid",
            "paid content for weather: /weather/tunnelled\n"
        ]),
        "{out}"
    );
    assert_eq!(out["again"][0], 200);
    assert_eq!(out["again"][1], "cached", "token reused inside the tunnel");
    assert_eq!(h.payments(), 1);
}
