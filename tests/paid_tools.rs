//! Paid MCP tool calls through the proxy: the seller's MCP server (streamable HTTP on
//! 127.0.0.1, `src/demo/seller/mcp.rs`) answers paid `tools/call`s inside the JSON-RPC answer —
//! MPP's `-32042` error and x402's `isError` tool result — as `application/json` or inside an
//! SSE stream. The proxy pays under the agent's limits and replays the same call (same `id`)
//! with the credential in `_meta`; batches and notifications pass untouched. The official MCP
//! SDK client drives the same server in `tests/paid_tools/sdk_client.mjs`.

mod common;

use common::{Harness, Options, Reply};
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice", "alice-key");

const TOKEN: &str = "paid-tools-admin";

async fn harness(alice_limits: &str) -> Harness {
    Harness::with(Options {
        pay_schemes: "[l402, payment, x402]".into(),
        alice_limits: alice_limits.into(),
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await
}

fn call(id: Value, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"city": "Oslo"}, "_meta": {"progressToken": 1}}})
    .to_string()
}

async fn post(h: &Harness, url: &str, body: &str) -> Reply {
    h.curl(
        Some(ALICE),
        url,
        &[
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "--data-binary",
            body,
        ],
    )
    .await
}

/// The JSON-RPC messages of an answer (one JSON body, or every SSE event's data).
fn messages(r: &Reply) -> Vec<Value> {
    if r.header("content-type") == Some("text/event-stream") {
        r.body
            .split("\n\n")
            .filter_map(|e| {
                let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
            })
            .collect()
    } else {
        vec![serde_json::from_str(&r.body).unwrap()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_tool_call_is_paid_once_in_either_transport_and_either_framing() {
    let h = harness("{ per_request_sats: 1000 }").await;
    let mut paid = 0;
    for (path, tool, dialect, meta) in [
        ("/mcp", "weather_mpp", "payment", "org.paymentauth/receipt"),
        (
            "/mcpsse",
            "weather_mpp",
            "payment",
            "org.paymentauth/receipt",
        ),
        ("/mcp", "weather_x402", "x402", "x402/payment-response"),
        ("/mcpsse", "weather_x402", "x402", "x402/payment-response"),
    ] {
        let r = post(&h, &h.http_url(path), &call(json!("call-7"), tool)).await;
        assert_eq!(r.status, 200, "{path} {tool}: {r:?}");
        assert!(r.paid(), "{path} {tool}: {r:?}");
        assert_eq!(r.header("x-l402-proxy-scheme"), Some(dialect));
        let answer = messages(&r).pop().unwrap();
        assert_eq!(answer["id"], "call-7", "the agent's own id: {answer}");
        assert_eq!(
            answer["result"]["content"][0]["text"], "paid: weather in Oslo: sunny",
            "{path} {tool}: {answer}"
        );
        assert!(answer["result"]["_meta"][meta].is_object(), "{answer}");
        paid += 1;
        assert_eq!(h.payments(), paid, "one payment per call");
    }
    // Each call is accounted as its tool, the service it bought.
    let listed = h
        .admin(Some(TOKEN), "GET", "/v1/payments?agent=alice", &[])
        .await;
    let v: Value = serde_json::from_str(&listed.body).unwrap();
    let mut services: Vec<&str> = v["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["service"].as_str().unwrap_or(""))
        .collect();
    services.sort();
    assert_eq!(
        services,
        ["weather_mpp", "weather_mpp", "weather_x402", "weather_x402"],
        "{v}"
    );
    // The SSE stream reaches the agent whole: the progress notification, then the answer.
    let r = post(&h, &h.http_url("/mcpsse"), &call(json!(1), "echo")).await;
    let all = messages(&r);
    assert_eq!(all.len(), 2, "{r:?}");
    assert_eq!(all[0]["method"], "notifications/message");
    assert!(!r.paid());
    assert_eq!(h.payments(), paid, "a free tool costs nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_notifications_pass_untouched_and_limits_hold_for_tool_calls() {
    let h = harness("{ per_request_sats: 5 }").await;
    // A batch holding a paid call: not a single tool call, so never paid; the server's answer
    // reaches the agent as it was sent.
    let batch = format!("[{}]", call(json!(1), "weather_mpp"));
    let r = post(&h, &h.http_url("/mcp"), &batch).await;
    assert_eq!(r.status, 200, "{r:?}");
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(answer[0]["error"]["code"], -32042);
    assert_eq!(r.decline(), None);
    // A notification: 202, untouched.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let r = post(&h, &h.http_url("/mcp"), &note).await;
    assert_eq!(r.status, 202, "{r:?}");
    // Over alice's per-request limit: the agent gets the server's own requirement, with the
    // decline beside it, in both transports.
    for (tool, dialect) in [("weather_mpp", "payment"), ("weather_x402", "x402")] {
        let r = post(&h, &h.http_url("/mcp"), &call(json!(9), tool)).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.decline(), Some("over-per-request-limit"), "{tool}: {r:?}");
        assert_eq!(r.header("x-l402-proxy-scheme"), Some(dialect));
        let answer: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(answer["id"], 9);
        assert!(
            answer["error"]["code"] == -32042 || answer["result"]["isError"] == true,
            "{answer}"
        );
    }
    assert_eq!(h.wallet.attempts(), 0, "nothing paid");
    // The operator's record names each tool.
    let mut paths = Vec::new();
    for _ in 0..100 {
        let d = h
            .admin(Some(TOKEN), "GET", "/v1/declines?agent=alice", &[])
            .await;
        let v: Value = serde_json::from_str(&d.body).unwrap();
        paths = v["declines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap().to_string())
            .collect();
        if paths.contains(&"/mcp#weather_x402".to_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // (Repeats of one refusal are folded into one row, which keeps the latest path.)
    assert!(
        paths.contains(&"/mcp#weather_x402".to_string()),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x402_tool_whose_invoice_is_bound_to_another_call_is_refused_unpaid() {
    let h = harness("{ per_request_sats: 1000 }").await;
    let r = post(&h, &h.http_url("/mcp"), &call(json!(3), "weather_x402lie")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.decline(), Some("offer-binding-mismatch"), "{r:?}");
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("x402"));
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        answer["result"]["isError"], true,
        "the server's own answer: {answer}"
    );
    assert_eq!(h.wallet.attempts(), 0, "nothing paid");
}

/// Runs `tests/paid_tools/sdk_client.mjs` (the official MCP SDK client) against `mcp_url`
/// through the proxy; its JSON output.
async fn sdk_client(h: &Harness, mcp_url: &str) -> Value {
    sdk_client_calling(h, mcp_url, "weather_mpp,weather_x402,echo").await
}

/// The SDK's modules (`node_modules` of `tests/paid_tools/install.sh`).
fn sdk_modules() -> std::path::PathBuf {
    let sdk = std::env::var("PAID_TOOLS_SDK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/l402-proxy/mcp-sdk-paid-tools")
        });
    let modules = sdk.join("node_modules");
    assert!(
        modules
            .join("@modelcontextprotocol/sdk/package.json")
            .exists()
            && modules.join("mppx/package.json").exists(),
        "the MCP SDK or mppx is not installed: run bash tests/paid_tools/install.sh"
    );
    modules
}

/// `script` (a file of `tests/paid_tools/`) in a temp dir beside a link to the SDK's modules
/// (ESM resolves packages next to the script).
fn staged(script: &str) -> (common::TempDir, std::path::PathBuf) {
    let dir = common::temp_dir("mcp-sdk");
    std::os::unix::fs::symlink(sdk_modules(), dir.join("node_modules")).unwrap();
    let path = dir.join(script);
    std::fs::copy(
        format!("{}/tests/paid_tools/{script}", env!("CARGO_MANIFEST_DIR")),
        &path,
    )
    .unwrap();
    (dir, path)
}

/// [`sdk_client`], calling `tools` (comma-separated).
async fn sdk_client_calling(h: &Harness, mcp_url: &str, tools: &str) -> Value {
    let (_dir, script) = staged("sdk_client.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("MCP_URL", mcp_url)
        .env("TOOLS", tools)
        .env("PROXY", h.proxy_url(Some(ALICE)))
        .env("PROXY_CA", h.ca())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "sdk client printed {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_sdk_client_gets_paid_tool_results_with_one_payment_each() {
    let h = harness("{ per_request_sats: 1000 }").await;
    for path in ["/mcp", "/mcpsse"] {
        let before = h.payments();
        let out = sdk_client(&h, &h.https_url(path)).await;
        assert!(out.get("error").is_none(), "{path}: {out}");
        assert_eq!(
            out["tools"],
            json!(["weather_mpp", "weather_x402", "echo"]),
            "{out}"
        );
        for tool in ["weather_mpp", "weather_x402"] {
            assert_eq!(
                out[tool]["content"][0]["text"], "paid: weather in Oslo: sunny",
                "{path} {tool}: {out}"
            );
            assert_ne!(out[tool]["isError"], true, "{out}");
        }
        assert_eq!(out["echo"]["content"][0]["text"], "weather in Oslo: sunny");
        assert_eq!(
            h.payments(),
            before + 2,
            "{path}: one payment per paid call"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_payment_is_announced_only_when_configured_and_never_over_the_agents_own() {
    let on = Harness::with(Options {
        pay_schemes: "[l402, payment], accept_payment: true".into(),
        ..Options::default()
    })
    .await;
    let seen = on.curl(Some(ALICE), &on.https_url("/inspect"), &[]).await;
    assert!(
        seen.body.contains("accept-payment: lightning/charge"),
        "{seen:?}"
    );
    let own = on
        .curl(
            Some(ALICE),
            &on.http_url("/inspect"),
            &["-H", "accept-payment: lightning/*;q=0.5"],
        )
        .await;
    assert!(
        own.body.contains("accept-payment: lightning/*;q=0.5"),
        "{own:?}"
    );
    assert!(!own.body.contains("lightning/charge"), "{own:?}");
    // Off by default, and never announced when MPP is not paid.
    for schemes in ["[l402, payment]", "[l402, x402], accept_payment: true"] {
        let h = Harness::with(Options {
            pay_schemes: schemes.into(),
            ..Options::default()
        })
        .await;
        let seen = h.curl(Some(ALICE), &h.http_url("/inspect"), &[]).await;
        assert!(!seen.body.contains("accept-payment"), "{schemes}: {seen:?}");
    }
}

/// The pending approvals, once `n` are waiting.
async fn pending(h: &Harness, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let r = h.admin(Some(TOKEN), "GET", "/v1/approvals", &[]).await;
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let rows = v["approvals"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{n} approvals never became pending");
}

async fn decide(h: &Harness, id: &str, approve: bool) {
    let body = json!({ "approve": approve }).to_string();
    let r = h
        .admin(
            Some(TOKEN),
            "POST",
            &format!("/v1/approvals/{id}"),
            &[
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_above_the_approval_threshold_waits_for_the_operator() {
    let h = Harness::with(Options {
        pay_schemes: "[l402, payment, x402]".into(),
        alice_limits: "{ per_request_sats: 1000, approve_above_sats: 5 }".into(),
        admin_token: Some(TOKEN.into()),
        extra_yaml: "approval: { timeout_secs: 20 }".into(),
        ..Options::default()
    })
    .await;
    for (tool, approve) in [("weather_mpp", true), ("weather_x402", false)] {
        let (proxy, url) = (h.proxy, h.http_url("/mcp"));
        let body = bytes::Bytes::from(call(json!(5), tool));
        let waiting = tokio::spawn(async move {
            common::proxied(proxy, ALICE, http::Method::POST, &url, body).await
        });
        let held = pending(&h, 1).await;
        assert_eq!(held[0]["service"], tool, "held as the tool: {held:?}");
        decide(&h, held[0]["id"].as_str().unwrap(), approve).await;
        let r = waiting.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let answer: Value = serde_json::from_str(&r.body).unwrap();
        if approve {
            assert!(r.paid(), "{r:?}");
            assert_eq!(
                answer["result"]["content"][0]["text"],
                "paid: weather in Oslo: sunny"
            );
        } else {
            assert_eq!(r.decline(), Some("approval-denied"), "{r:?}");
            assert_eq!(
                answer["result"]["isError"], true,
                "the server's own answer: {answer}"
            );
        }
    }
    assert_eq!(h.payments(), 1, "only the approved call was paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_refusing_its_paid_credential_is_paid_once_then_cooled_off() {
    let h = harness("{ per_request_sats: 1000 }").await;
    let r = post(&h, &h.http_url("/mcp"), &call(json!(1), "weather_mppnever")).await;
    assert_eq!(r.decline(), Some("replay-rejected"), "{r:?}");
    assert!(r.paid(), "it did pay, once: {r:?}");
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        answer["error"]["code"], -32043,
        "the server's own answer: {answer}"
    );
    let again = post(&h, &h.http_url("/mcp"), &call(json!(2), "weather_mppnever")).await;
    assert_eq!(again.decline(), Some("service-cooling-off"), "{again:?}");
    // Another tool of the same server is its own service: still paid.
    let other = post(&h, &h.http_url("/mcp"), &call(json!(3), "weather_mpp")).await;
    assert!(other.paid(), "{other:?}");
    assert_eq!(h.payments(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_served_by_mppx_is_paid_once_through_its_own_mcp_transport() {
    // mppx's MCP server (npm mppx 0.11.0, Transport.mcpSdk) on a port the proxy may reach.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::with(Options {
        pay_schemes: "[l402, payment]".into(),
        extra_allow: vec![format!("127.0.0.1:{port}")],
        ..Options::default()
    })
    .await;
    for json_response in ["0", "1"] {
        let (_dir, script) = staged("mppx_server.mjs");
        let mut server = tokio::process::Command::new("node")
            .arg(&script)
            .env("PORT", port.to_string())
            .env("INVOICE_URL", h.http_url("/invoice/21"))
            .env("JSON_RESPONSE", json_response)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            server.stdout.take().unwrap(),
        ));
        let ready = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("mppx server up")
            .unwrap()
            .unwrap_or_default();
        assert!(ready.contains("port"), "{ready}");
        let before = h.payments();
        let out = sdk_client_calling(&h, &format!("http://127.0.0.1:{port}/mcp"), "forecast").await;
        assert!(
            out.get("error").is_none(),
            "json_response={json_response}: {out}"
        );
        assert_eq!(
            out["forecast"]["content"][0]["text"], "forecast for Oslo: clear",
            "{out}"
        );
        assert!(
            out["forecast"]["_meta"]["org.paymentauth/receipt"]["status"] == "success",
            "mppx's receipt reaches the agent: {out}"
        );
        assert_eq!(h.payments(), before + 1, "one payment for the call");
        server.kill().await.ok();
    }
}
