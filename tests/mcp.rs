//! The agents' MCP server, driven by the official MCP TypeScript SDK client, unmodified
//! (npm `@modelcontextprotocol/sdk`, pinned in tests/mcp/package-lock.json, installed by
//! `bash tests/mcp/install.sh` under ~/.cache/l402-proxy/mcp-sdk), from tests/mcp/drive.mjs:
//! through the proxy with nothing but the ordinary proxy variables (undici's
//! EnvHttpProxyAgent as the transport's fetch), and on `mcp.listen` with a bearer token.
//!
//! A missing SDK fails the test, naming the install script.

mod common;

use common::{Harness, Options};
use l402_proxy::core::money::Msat;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "mcp-admin-token";
const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const INSTALL: &str = "bash tests/mcp/install.sh";
const OVER_THE_PROXY: &str = "http://l402-proxy.local/mcp";

fn sdk_dir() -> PathBuf {
    match std::env::var_os("L402_MCP_SDK_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var("HOME").expect("HOME is set"))
            .join(".cache/l402-proxy/mcp-sdk"),
    }
}

fn check_sdk() -> PathBuf {
    let dir = sdk_dir();
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk/package.json")
            .exists(),
        "the MCP SDK is missing in {}: run `{INSTALL}`",
        dir.display()
    );
    dir
}

/// How the SDK client reaches the server.
enum Via<'a> {
    /// Through the proxy at `url`, with these proxy credentials in HTTP(S)_PROXY.
    Proxy(&'a str, (&'a str, &'a str)),
    /// Straight to an `mcp.listen` address with this bearer token.
    Bearer(std::net::SocketAddr, &'a str),
}

/// Runs one SDK client session: connect (which lists the tools), then `steps`; returns what
/// drive.mjs printed.
async fn session(h: &Harness, via: Via<'_>, steps: Value) -> Value {
    let sdk = check_sdk();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/drive.mjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .env("MCP_SDK_DIR", &sdk)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("NODE_EXTRA_CA_CERTS", h.ca())
        .kill_on_drop(true);
    let plan = match via {
        Via::Proxy(url, creds) => {
            let proxy = h.proxy_url(Some(creds));
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                cmd.env(var, &proxy);
            }
            json!({ "url": url, "mode": "proxy", "steps": steps })
        }
        Via::Bearer(addr, bearer) => json!({
            "url": format!("http://{addr}/mcp"),
            "mode": "bearer",
            "bearer": bearer,
            "steps": steps,
        }),
    };
    cmd.arg(plan.to_string());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the MCP session finished within 120 s")
        .expect("node runs (apt nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "drive.mjs printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The call results of a session that connected; panics with the transcript otherwise.
fn results(s: &Value) -> Vec<Value> {
    assert_eq!(s["connected"], true, "{s}");
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            assert!(step.get("thrown").is_none(), "a call failed: {step}");
            step["result"].clone()
        })
        .collect()
}

fn call(tool: &str, args: Value) -> Value {
    json!({ "tool": tool, "args": args })
}

fn harness_options() -> Options {
    let mut o = Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ per_request_sats: 1000, daily_sats: 200 }".into(),
        ..Options::default()
    };
    o.seller.prices.insert("dear".into(), Msat::from_sats(500));
    o
}

async fn admin_agent(h: &Harness, name: &str) -> Value {
    let r = h.admin(Some(TOKEN), "GET", "/v1/agents", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let all: Value = serde_json::from_str(&r.body).unwrap();
    all["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_lists_and_calls_every_tool_through_the_proxy() {
    let h = Harness::with(harness_options()).await;
    let weather = h.http_url("/weather/today");

    // The tools and their schemas, and balance = the admin API's view, over plain http.
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([call("balance", json!({}))]),
    )
    .await;
    assert!(
        ["2025-11-25", "2025-06-18"].contains(&s["protocolVersion"].as_str().unwrap_or("")),
        "{s}"
    );
    assert_eq!(s["server"]["name"], "l402-proxy");
    let tools = s["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "approvals",
            "balance",
            "declines",
            "fetch",
            "payments",
            "quote"
        ]
    );
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert!(t["description"].as_str().unwrap().len() > 40, "{t}");
        assert!(
            t["outputSchema"]["properties"]["error"]["required"] == json!(["code", "reason"]),
            "{t}"
        );
    }
    let tool = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap();
    for n in ["quote", "fetch"] {
        assert_eq!(tool(n)["inputSchema"]["required"], json!(["url"]));
        for arg in ["url", "method", "headers", "body"] {
            assert!(
                tool(n)["inputSchema"]["properties"][arg].is_object(),
                "{n}.{arg}"
            );
        }
    }
    assert_eq!(
        tool("fetch")["inputSchema"]["properties"]["max_sats"]["type"],
        "integer"
    );
    assert!(tool("quote")["inputSchema"]["properties"]["max_sats"].is_null());
    for n in ["payments", "declines"] {
        let p = &tool(n)["inputSchema"]["properties"];
        assert!(p["since"].is_object() && p["limit"].is_object(), "{n}");
    }
    let balance = &results(&s)[0];
    assert_eq!(balance["isError"], false);
    let mine = &balance["structuredContent"];
    let admin = admin_agent(&h, "alice").await;
    for key in [
        "agent",
        "limits",
        "limit_sources",
        "spent_msat",
        "remaining_msat",
        "spendable_msat",
        "paused",
    ] {
        assert_eq!(mine[key], admin[key], "{key}: mcp {mine} vs admin {admin}");
    }
    assert_eq!(mine["remaining_msat"]["daily"], 200_000);
    assert_eq!(mine["pending_msat"], 0);
    assert_eq!(
        mine["operator"],
        json!({ "limits": {}, "remaining_msat": {} })
    );
    assert!(
        balance["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("200 sats left"),
        "{balance}"
    );

    // quote: the seller's price, what the policy would do, nothing paid.
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([
            call("quote", json!({ "url": weather })),
            call("quote", json!({ "url": h.http_url("/dear/x") })),
            call("quote", json!({ "url": h.http_url("/free/hello") })),
        ]),
    )
    .await;
    let r = results(&s);
    let q = &r[0]["structuredContent"];
    assert_eq!(r[0]["isError"], false, "{}", r[0]);
    assert_eq!(q["status"], 402);
    assert_eq!(q["payment_required"], true);
    assert_eq!(q["offer"]["amount_msat"], 10_000);
    assert_eq!(q["offer"]["amount_sats"], 10);
    assert_eq!(q["offer"]["dialect"], "l402");
    assert!(q["offer"]["invoice_expires_in_secs"].as_u64().unwrap() > 500);
    assert_eq!(q["cached_token"], false);
    assert_eq!(q["verdict"], "pay");
    let q = &r[1]["structuredContent"];
    assert_eq!(q["verdict"], "decline", "{q}");
    assert_eq!(q["decline"]["code"], "over-daily-limit");
    assert_eq!(r[2]["structuredContent"]["verdict"], "free");
    assert_eq!(h.payments(), 0, "a quote pays nothing");
    // A quote is not a decline: nothing recorded.
    let declines = h.admin(Some(TOKEN), "GET", "/v1/declines", &[]).await;
    assert!(
        !declines.body.contains("over-daily-limit"),
        "{}",
        declines.body
    );

    // fetch pays once and returns the body; a second fetch rides the cached token; a quote
    // now says the token serves it.
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([
            call("fetch", json!({ "url": weather })),
            call("fetch", json!({ "url": weather })),
            call("quote", json!({ "url": weather })),
        ]),
    )
    .await;
    let r = results(&s);
    let first = &r[0]["structuredContent"];
    assert_eq!(r[0]["isError"], false, "{}", r[0]);
    assert_eq!(first["status"], 200);
    assert_eq!(first["paid"]["token"], "paid");
    assert_eq!(first["paid"]["amount_msat"], 10_000);
    assert_eq!(first["paid"]["dialect"], "l402");
    assert_eq!(first["body_encoding"], "text");
    assert_eq!(first["truncated"], false);
    assert!(!first["body"].as_str().unwrap().is_empty());
    assert!(first["remaining_msat"].as_u64().unwrap() < 200_000);
    let second = &r[1]["structuredContent"];
    assert_eq!(second["status"], 200);
    assert_eq!(second["paid"]["token"], "cached", "{second}");
    assert_eq!(second["body"], first["body"]);
    assert_eq!(r[2]["structuredContent"]["verdict"], "cached");
    assert_eq!(h.payments(), 1, "one payment for two fetches");
    assert_eq!(h.seller.seller.accepted(), 2);

    // Refused: above max_sats, above the budget; each isError with the decline, nothing paid.
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([
            call(
                "fetch",
                json!({ "url": h.http_url("/svc/maps/x"), "max_sats": 5 })
            ),
            call("fetch", json!({ "url": h.http_url("/dear/x") })),
            call("fetch", json!({ "url": "ftp://example.com/x" })),
            call("payments", json!({})),
            call("declines", json!({ "limit": 10 })),
            call("approvals", json!({})),
        ]),
    )
    .await;
    let r = results(&s);
    for (i, code) in [(0, "over-per-request-limit"), (1, "over-daily-limit")] {
        assert_eq!(r[i]["isError"], true, "{}", r[i]);
        let c = &r[i]["structuredContent"];
        assert_eq!(c["error"]["code"], code, "{c}");
        assert_eq!(c["status"], 402);
        assert!(c.get("paid").is_none());
        let text = r[i]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(code), "{text}");
    }
    assert!(r[0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("max_sats was 5"));
    assert_eq!(r[2]["isError"], true);
    assert_eq!(r[2]["structuredContent"]["error"]["code"], "bad-argument");
    assert_eq!(h.payments(), 1, "nothing paid for the refused fetches");
    let payments = r[3]["structuredContent"]["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "{}", r[3]);
    assert_eq!(payments[0]["agent"], "alice");
    assert_eq!(payments[0]["amount_msat"], 10_000);
    assert_eq!(payments[0]["status"], "settled");
    let codes: Vec<&str> = r[4]["structuredContent"]["declines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"over-per-request-limit"), "{codes:?}");
    assert!(codes.contains(&"over-daily-limit"), "{codes:?}");
    assert_eq!(
        r[5]["structuredContent"],
        json!({ "waiting": 0, "approvals": [] })
    );
    // And in the operator's ledger and metrics, as any proxied request.
    let ledger = h
        .admin(Some(TOKEN), "GET", "/v1/declines?agent=alice", &[])
        .await;
    assert!(
        ledger.body.contains("over-per-request-limit"),
        "{}",
        ledger.body
    );
    let metrics = h.admin(None, "GET", "/metrics", &[]).await.body;
    assert!(
        metrics.contains(r#"l402_proxy_mcp_tool_calls_total{result="ok",tool="fetch"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"l402_proxy_requests_total{outcome="paid"} 1"#));
    assert!(metrics.contains(r#"l402_proxy_declines_total{reason="over-daily-limit"} 1"#));

    // Another agent sees only itself: no payments, none of alice's declines; since filters.
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, BOB),
        json!([
            call("payments", json!({})),
            call("declines", json!({})),
            call("balance", json!({})),
            call("payments", json!({ "since": "2000-01-01T00:00:00Z" })),
        ]),
    )
    .await;
    let r = results(&s);
    assert_eq!(r[0]["structuredContent"]["payments"], json!([]));
    assert_eq!(r[1]["structuredContent"]["declines"], json!([]));
    assert_eq!(r[2]["structuredContent"]["agent"], "bob");
    assert_eq!(r[3]["structuredContent"]["payments"], json!([]));
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([
            call("payments", json!({ "since": 4_000_000_000u64 })),
            call("payments", json!({ "since": "yesterday" })),
        ]),
    )
    .await;
    let r = results(&s);
    assert_eq!(r[0]["structuredContent"]["payments"], json!([]));
    assert_eq!(r[1]["isError"], true);

    // Any client that can use a proxy reaches it (curl: an absolute-form POST).
    let initialize = common::curl(&[
        "--proxy".into(),
        h.proxy_url(Some(ALICE)),
        "-H".into(),
        "content-type: application/json".into(),
        "-H".into(),
        "accept: application/json, text/event-stream".into(),
        "--data-binary".into(),
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#.into(),
        OVER_THE_PROXY.into(),
    ])
    .await;
    assert_eq!(initialize.status, 200, "{initialize:?}");
    let v: Value = serde_json::from_str(&initialize.body).unwrap();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["capabilities"]["tools"]["listChanged"], false);

    // Over https too (the proxy's own name is always intercepted), and a wrong key cannot
    // connect at all.
    let s = session(
        &h,
        Via::Proxy("https://l402-proxy.local/mcp", ALICE),
        json!([call("balance", json!({}))]),
    )
    .await;
    assert_eq!(results(&s)[0]["structuredContent"]["agent"], "alice");
    for url in [OVER_THE_PROXY, "https://l402-proxy.local/mcp"] {
        let s = session(&h, Via::Proxy(url, ("alice", "wrong-key")), json!([])).await;
        assert_eq!(s["connected"], false, "{s}");
        assert!(s["error"].as_str().unwrap().contains("407"), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_listener_takes_the_agent_as_a_bearer_token() {
    let h = Harness::with(Options {
        http_yaml: "upstream_response_timeout_secs: 2".into(),
        ..harness_options()
    })
    .await;
    let listener = l402_proxy::mcp::listener::McpListener::bind(
        "127.0.0.1:0".parse().unwrap(),
        h.shared.clone(),
    )
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(listener.run());

    let s = session(
        &h,
        Via::Bearer(addr, "alice:alice-key"),
        json!([
            call("balance", json!({})),
            call("fetch", json!({ "url": h.http_url("/weather/today") })),
            call("payments", json!({})),
        ]),
    )
    .await;
    let r = results(&s);
    assert_eq!(r[0]["structuredContent"]["agent"], "alice");
    assert_eq!(
        r[1]["structuredContent"]["paid"]["token"], "paid",
        "{}",
        r[1]
    );
    assert_eq!(
        r[2]["structuredContent"]["payments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(h.payments(), 1);
    // The method, headers and body asked for go upstream (a stated length is the body's own;
    // proxy credentials never travel); arguments that are wrong are refused, naming them.
    let s = session(
        &h,
        Via::Bearer(addr, "alice:alice-key"),
        json!([
            call(
                "fetch",
                json!({
                    "url": h.http_url("/echo/x"),
                    "method": "post",
                    "headers": { "content-length": "999" },
                    "body": "hello",
                })
            ),
            call(
                "fetch",
                json!({
                    "url": h.http_url("/inspect/x"),
                    "headers": { "x-custom": "1", "proxy-authorization": "Basic c2VjcmV0" },
                })
            ),
            call(
                "fetch",
                json!({ "url": h.http_url("/inspect/x"), "method": "no such method" })
            ),
            call(
                "fetch",
                json!({ "url": h.http_url("/inspect/x"), "headers": { "x": 1 } })
            ),
        ]),
    )
    .await;
    let r = results(&s);
    let echo = &r[0]["structuredContent"];
    assert_eq!(echo["status"], 200, "{echo}");
    assert_eq!(echo["paid"]["token"], "paid");
    assert_eq!(echo["body"], "POST hello");
    let seen = r[1]["structuredContent"]["body"].as_str().unwrap();
    assert!(seen.contains("x-custom: 1"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("proxy-authorization"),
        "{seen}"
    );
    for bad in &r[2..] {
        assert_eq!(
            bad["structuredContent"]["error"]["code"], "bad-argument",
            "{bad}"
        );
    }
    assert_eq!(h.payments(), 2);
    // A body that does not end (an event stream) is cut after the upstream response timeout,
    // with what arrived until then.
    let started = std::time::Instant::now();
    let s = session(
        &h,
        Via::Bearer(addr, "alice:alice-key"),
        json!([call(
            "fetch",
            json!({ "url": h.http_url("/sse/x?n=1000&ms=10000") })
        )]),
    )
    .await;
    let stream = &results(&s)[0];
    assert_eq!(stream["isError"], false, "{stream}");
    let c = &stream["structuredContent"];
    assert_eq!(c["timed_out"], true, "{c}");
    assert_eq!(c["truncated"], false);
    assert!(c["body"].as_str().unwrap().contains("data: event 0"), "{c}");
    assert!(!c["body"].as_str().unwrap().contains("event 1"), "{c}");
    assert!(started.elapsed() < Duration::from_secs(9));
    assert_eq!(h.payments(), 3);
    // Bob on the same listener sees none of it.
    let s = session(
        &h,
        Via::Bearer(addr, "bob:bob-key"),
        json!([call("payments", json!({}))]),
    )
    .await;
    assert_eq!(results(&s)[0]["structuredContent"]["payments"], json!([]));
    for bad in ["alice:wrong-key", "nobody:x", "alice"] {
        let s = session(&h, Via::Bearer(addr, bad), json!([])).await;
        assert_eq!(s["connected"], false, "{bad}: {s}");
        assert!(s["error"].as_str().unwrap().contains("401"), "{s}");
    }
    // Plain HTTP: no SSE stream (405), the right path only, JSON-RPC errors for nonsense.
    let url = format!("http://{addr}/mcp");
    let auth = "Authorization: Bearer alice:alice-key";
    let get = common::curl(&["-H".into(), auth.into(), url.clone()]).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    let other = common::curl(&["-H".into(), auth.into(), format!("http://{addr}/x")]).await;
    assert_eq!(other.status, 404);
    let post = |body: &str| {
        let args: Vec<String> = vec![
            "-H".into(),
            auth.into(),
            "-H".into(),
            "content-type: application/json".into(),
            "--data-binary".into(),
            body.into(),
            url.clone(),
        ];
        async move { common::curl(&args).await }
    };
    let bad = post("{not json").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("-32700"), "{}", bad.body);
    let unknown = post(r#"{"jsonrpc":"2.0","id":7,"method":"resources/list"}"#).await;
    let v: Value = serde_json::from_str(&unknown.body).unwrap();
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32601);
    let tool =
        post(r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"nope"}}"#).await;
    let v: Value = serde_json::from_str(&tool.body).unwrap();
    assert_eq!(v["error"]["code"], -32602);
    let note = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    assert_eq!(note.status, 202);
    task.abort();
}

/// A payment above `approve_above_sats` waits: the agent sees it in `approvals` while its
/// `fetch` waits, the operator approves it, the fetch completes paid, and `approvals` then says
/// how it was decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_show_what_waits_and_how_it_was_decided() {
    let mut o = harness_options();
    o.alice_limits = "{ per_request_sats: 1000, approve_above_sats: 5 }".into();
    o.extra_yaml = "approval: { timeout_secs: 60 }\n".into();
    let h = std::sync::Arc::new(Harness::with(o).await);
    let url = h.http_url("/weather/today");
    let waiting = {
        let h = h.clone();
        tokio::spawn(async move {
            session(
                &h,
                Via::Proxy(OVER_THE_PROXY, ALICE),
                json!([call("fetch", json!({ "url": url }))]),
            )
            .await
        })
    };
    let id = {
        let mut found = None;
        for _ in 0..300 {
            let r = h.admin(Some(TOKEN), "GET", "/v1/approvals", &[]).await;
            let v: Value = serde_json::from_str(&r.body).unwrap();
            if let Some(a) = v["approvals"].as_array().and_then(|a| a.first()) {
                found = Some(a["id"].as_str().unwrap().to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("the fetch is held for approval")
    };
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([call("approvals", json!({}))]),
    )
    .await;
    let a = &results(&s)[0]["structuredContent"];
    assert_eq!(a["waiting"], 1, "{a}");
    assert_eq!(a["approvals"][0]["id"], id.as_str());
    assert_eq!(a["approvals"][0]["state"], "pending");
    assert_eq!(a["approvals"][0]["amount_msat"], 10_000);
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, BOB),
        json!([call("approvals", json!({}))]),
    )
    .await;
    assert_eq!(results(&s)[0]["structuredContent"]["approvals"], json!([]));
    let decided = h
        .admin(
            Some(TOKEN),
            "POST",
            &format!("/v1/approvals/{id}"),
            &[
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"approve": true}"#,
            ],
        )
        .await;
    assert_eq!(decided.status, 200, "{decided:?}");
    let done = waiting.await.unwrap();
    let r = results(&done);
    assert_eq!(
        r[0]["structuredContent"]["paid"]["token"], "paid",
        "{}",
        r[0]
    );
    let s = session(
        &h,
        Via::Proxy(OVER_THE_PROXY, ALICE),
        json!([call("approvals", json!({}))]),
    )
    .await;
    let a = &results(&s)[0]["structuredContent"];
    assert_eq!(a["waiting"], 0);
    assert_eq!(a["approvals"][0]["state"], "approved");
    assert_eq!(a["approvals"][0]["decided_by"], "admin");
    assert_eq!(h.payments(), 1);
}

/// `Ledger::agent_approvals`, which the `approvals` tool reads, on both backends: one agent's
/// held payments in every state, newest first, bounded by the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ledgers_list_one_agents_approvals_newest_first() {
    use l402_proxy::core::money::PaymentHash;
    use l402_proxy::core::time::{Clock, SystemClock};
    use l402_proxy::ledger::{ApprovalRecord, ApprovalState, Ledger};
    use std::sync::Arc;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dir = common::temp_dir("mcp-ledger");
    let (sqlite, _) =
        l402_proxy::ledger::sqlite::SqliteLedger::open(&dir.join("l.db"), clock.clone())
            .await
            .unwrap();
    let pg = common::pg_server::PgServer::start();
    let config = l402_proxy::config::PostgresConfig {
        url_env: None,
        url_file: None,
        tls: Some(l402_proxy::config::PostgresTls::Disable),
        ca_file: None,
        pool_size: 2,
    };
    let postgres =
        l402_proxy::ledger::postgres::PostgresLedger::open(pg.url(), &config, clock.clone())
            .await
            .unwrap();
    let ledgers: [Arc<dyn Ledger>; 2] = [Arc::new(sqlite), Arc::new(postgres)];
    let now = clock.now();
    for ledger in ledgers {
        let record = |id: &str, agent: &str, at: i64| ApprovalRecord {
            id: id.into(),
            agent: agent.into(),
            host: "seller.example:443".into(),
            service: "weather".into(),
            amount: Msat::from_sats(10),
            payment_hash: PaymentHash([at as u8; 32]),
            created_at: at,
            expires_at: now + 600,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_at: None,
        };
        for (id, agent, at) in [
            ("apr_1", "alice", now - 30),
            ("apr_2", "bob", now - 20),
            ("apr_3", "alice", now - 10),
        ] {
            ledger
                .create_approval(&record(id, agent, at))
                .await
                .unwrap();
        }
        ledger
            .decide_approval("apr_1", ApprovalState::Denied, "admin", now)
            .await
            .unwrap();
        let mine = ledger.agent_approvals("alice", 10).await.unwrap();
        let seen: Vec<(&str, ApprovalState)> =
            mine.iter().map(|a| (a.id.as_str(), a.state)).collect();
        assert_eq!(
            seen,
            [
                ("apr_3", ApprovalState::Pending),
                ("apr_1", ApprovalState::Denied)
            ],
            "{}",
            ledger.backend()
        );
        assert_eq!(mine[1].decided_by.as_deref(), Some("admin"));
        assert_eq!(ledger.agent_approvals("alice", 1).await.unwrap().len(), 1);
        assert!(ledger
            .agent_approvals("nobody", 10)
            .await
            .unwrap()
            .is_empty());
    }
}

/// `l402-proxy run` with `mcp.listen` serves the MCP server there (the address it bound is
/// logged), to the bearer of an agent's name and key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_mcp_listen() {
    let dir = common::temp_dir("mcp-run");
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
mcp: {{ listen: "127.0.0.1:0" }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store: {{ path: ledger.db }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}", limits: {{ daily_sats: 700 }} }}
"#,
        secret = common::SECRET,
        alice = l402_proxy::agents::hash_key("alice-key"),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.join("proxy.log");
    let _proxy = common::process::Proxy::start(&config, &log, TOKEN);
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("MCP listener ready"))
        .unwrap_or_else(|| panic!("no MCP listener in the log:\n{text}"));
    let at = line.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    let port: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let call = |bearer: &str| {
        let args: Vec<String> = vec![
            "-H".into(),
            format!("Authorization: Bearer {bearer}"),
            "-H".into(),
            "content-type: application/json".into(),
            "--data-binary".into(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"balance","arguments":{}}}"#.into(),
            url.clone(),
        ];
        async move { common::curl(&args).await }
    };
    let ok = call("alice:alice-key").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let v: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(v["result"]["structuredContent"]["agent"], "alice");
    assert_eq!(
        v["result"]["structuredContent"]["remaining_msat"]["daily"],
        700_000
    );
    let refused = call("alice:nope").await;
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
}
