//! The control plane: agents created, changed, paused, re-keyed and deleted through the admin
//! API, in force at once (open tunnels too), recorded in the audit log and kept across a
//! restart. Real proxy, real seller, curl and Python as the clients, all on 127.0.0.1.

mod common;

use common::{python, Harness, Options, Reply};
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice", "alice-key");
const TOKEN: &str = "admin-secret-token";

fn body(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

async fn call(h: &Harness, method: &str, path: &str, data: Option<Value>) -> Reply {
    let data = data.map(|d| d.to_string());
    let mut extra: Vec<&str> = vec!["-H", "Content-Type: application/json"];
    if let Some(d) = &data {
        extra.push("--data-binary");
        extra.push(d);
    }
    h.admin(Some(TOKEN), method, path, &extra).await
}

/// The agent `name` as `GET /v1/agents` lists it.
async fn listed(h: &Harness, name: &str) -> Option<Value> {
    let r = call(h, "GET", "/v1/agents", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    body(&r)["agents"]
        .as_array()
        .expect("agents array")
        .iter()
        .find(|a| a["agent"] == name)
        .cloned()
}

async fn create(h: &Harness, agent: Value) -> String {
    let r = call(h, "POST", "/v1/agents", Some(agent)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = body(&r)["key"]
        .as_str()
        .expect("key shown once")
        .to_string();
    assert!(key.starts_with("lpk_") && key.len() > 30, "{key}");
    key
}

fn options() -> Options {
    Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_agent_lives_its_whole_life_through_the_api() {
    let h = Harness::with(options()).await;
    let key = create(
        &h,
        json!({"name": "carol", "limits": {"per_request_sats": 50, "total_sats": 25}}),
    )
    .await;
    let carol = ("carol", key.as_str());

    // In force at once: carol pays within her limits, and no further.
    assert!(h.curl(Some(carol), &h.http_url("/a/x"), &[]).await.paid());
    let over = h.curl(Some(carol), &h.http_url("/b/x"), &[]).await;
    assert_eq!(over.decline(), Some("over-total-limit"), "{over:?}");
    let view = listed(&h, "carol").await.expect("carol listed");
    assert_eq!(view["managed_by"], "api");
    assert_eq!(view["paused"], false);
    assert_eq!(view["spent_msat"]["total"], 10_000);
    assert!(view["last_payment_at"].as_i64().is_some(), "{view}");
    assert_eq!(listed(&h, "alice").await.unwrap()["managed_by"], "config");

    // Paused: no spending, cached tokens not attached; resumed: spends again.
    let r = call(
        &h,
        "PATCH",
        "/v1/agents/carol",
        Some(json!({"paused": true, "limits": {"total_sats": 100}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body(&r)["paused"], true);
    assert_eq!(body(&r)["limits"]["total_sats"], 100);
    assert_eq!(
        body(&r)["limits"]["per_request_sats"],
        50,
        "a merge patch: limits not named stay"
    );
    let paused = h.curl(Some(carol), &h.http_url("/b/x"), &[]).await;
    assert_eq!(paused.decline(), Some("agent-paused"), "{paused:?}");
    let cached = h.curl(Some(carol), &h.http_url("/a/y"), &[]).await;
    assert_eq!(cached.status, 402, "a paused agent rides no cached token");
    let free = h.curl(Some(carol), &h.http_url("/free/x"), &[]).await;
    assert_eq!(free.status, 200, "a paused agent's free traffic passes");
    assert_eq!(h.payments(), 1);
    let r = call(
        &h,
        "PATCH",
        "/v1/agents/carol",
        Some(json!({"paused": false, "limits": {"per_request_sats": null}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        body(&r)["limits"].get("per_request_sats").is_none(),
        "null removes a limit: {}",
        r.body
    );
    assert!(h.curl(Some(carol), &h.http_url("/b/x"), &[]).await.paid());

    // A new key: the old one is refused at once, the new one works.
    let r = call(&h, "POST", "/v1/agents/carol/key", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_key = body(&r)["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(
        h.curl(Some(carol), &h.http_url("/free/x"), &[])
            .await
            .status,
        407
    );
    let carol = ("carol", new_key.as_str());
    assert_eq!(
        h.curl(Some(carol), &h.http_url("/a/x"), &[])
            .await
            .header("x-l402-proxy-token"),
        Some("cached"),
        "the token belongs to the agent, not to its key"
    );

    // Budget changes are audited too.
    let r = call(
        &h,
        "POST",
        "/v1/agents/carol/budget",
        Some(json!({"add_sats": 5})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Deleted: refused at once; its payments stay in the ledger.
    let r = call(&h, "DELETE", "/v1/agents/carol", None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        h.curl(Some(carol), &h.http_url("/free/x"), &[])
            .await
            .status,
        407
    );
    assert!(listed(&h, "carol").await.is_none());
    let r = call(&h, "GET", "/v1/payments?agent=carol", None).await;
    assert_eq!(body(&r)["payments"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(&h, "DELETE", "/v1/agents/carol", None).await.status,
        404
    );

    // Every change, newest first, with who and what — and never a key.
    let r = call(&h, "GET", "/v1/audit", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let audit = body(&r)["audit"].as_array().unwrap().clone();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "agent.delete",
            "budget",
            "agent.key",
            "agent.update",
            "agent.update",
            "agent.create"
        ]
    );
    assert!(audit
        .iter()
        .all(|e| e["agent"] == "carol" && e["who"] == "admin"));
    assert!(
        audit[1]["detail"].as_str().unwrap().contains("100"),
        "{audit:?}"
    );
    assert!(audit[3]["detail"].as_str().unwrap().contains("resumed"));
    assert!(!r.body.contains(&key) && !r.body.contains(&new_key));
    assert!(audit[0]["at_rfc3339"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_cannot_do_and_says_why() {
    let h = Harness::with(options()).await;
    let key = create(&h, json!({"name": "dave"})).await;
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "alice"})),
            409,
            "config file",
        ),
        // Names are unique without regard to case: beside the config's alice and the API's dave.
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "ALICE"})),
            409,
            "without regard to case",
        ),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "Dave"})),
            409,
            "without regard to case",
        ),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "Bad Name"})),
            400,
            "name",
        ),
        ("POST", "/v1/agents", Some(json!({"name": ""})), 400, "name"),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "dan", "limit": {}})),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "dan", "limits": {"per_request_sats": 0}})),
            400,
            "per_request_sats",
        ),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "dan", "limits": {"total_sats": "ten"}})),
            400,
            "total_sats",
        ),
        (
            "PATCH",
            "/v1/agents/alice",
            Some(json!({"paused": true})),
            409,
            "config file",
        ),
        ("DELETE", "/v1/agents/alice", None, 409, "config file"),
        ("POST", "/v1/agents/alice/key", None, 409, "config file"),
        (
            "PATCH",
            "/v1/agents/nobody",
            Some(json!({"paused": true})),
            404,
            "no such agent",
        ),
        (
            "PATCH",
            "/v1/agents/dave",
            Some(json!({"limits": {"daily_sats": -1}})),
            400,
            "limits.daily_sats",
        ),
        (
            "PATCH",
            "/v1/agents/dave",
            Some(json!({"limits": {"dayly_sats": 1}})),
            400,
            "dayly_sats",
        ),
        (
            "PATCH",
            "/v1/agents/dave",
            Some(json!({"hosts": {"allow": "*"}})),
            400,
            "hosts.allow",
        ),
        (
            "PATCH",
            "/v1/agents/dave",
            Some(json!({"hosts": {"deny": ["10.0.0.1/8"]}})),
            400,
            "hosts.deny[0]",
        ),
        (
            "POST",
            "/v1/agents",
            Some(json!({"name": "dan", "hosts": {"allow": ["300.1.1.1"]}})),
            400,
            "hosts.allow[0]",
        ),
        ("PUT", "/v1/agents", Some(json!({})), 405, "method"),
        ("GET", "/v1/audit?limt=3", None, 400, "limt"),
        ("GET", "/v1/nothing", None, 404, "no such endpoint"),
    ];
    for (method, path, data, status, says) in cases {
        let r = call(&h, method, path, data.clone()).await;
        assert_eq!(r.status, status, "{method} {path} {data:?}: {}", r.body);
        let message = body(&r)["error"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains(says),
            "{method} {path}: {message:?} should mention {says:?}"
        );
    }
    // A duplicate API agent is a conflict; the first keeps its key.
    let r = call(&h, "POST", "/v1/agents", Some(json!({"name": "dave"}))).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        h.curl(Some(("dave", &key)), &h.http_url("/free/x"), &[])
            .await
            .status,
        200
    );
    // An over-large body is refused before it is parsed.
    let big = json!({"name": "x".repeat(20_000)});
    assert_eq!(call(&h, "POST", "/v1/agents", Some(big)).await.status, 413);
    // No token, no agents.
    let r = h
        .admin(None, "POST", "/v1/agents", &["-d", r#"{"name":"eve"}"#])
        .await;
    assert_eq!(r.status, 401);
    assert!(listed(&h, "eve").await.is_none());
    // Nothing refused was audited.
    let audit = body(&call(&h, "GET", "/v1/audit", None).await)["audit"].clone();
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_agents_and_the_audit_log_survive_a_restart() {
    let dir = common::temp_dir("agents-restart");
    let h = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        ..options()
    })
    .await;
    let key = create(
        &h,
        json!({"name": "erin", "limits": {"total_sats": 25}, "hosts": {"allow": ["127.0.0.1"]}}),
    )
    .await;
    let first = h.curl(Some(("erin", &key)), &h.http_url("/a/x"), &[]).await;
    assert!(first.paid(), "{first:?}");
    let seller = h.seller.clone();
    h.stop().await;

    let h = Harness::with(Options {
        dir: Some(dir.to_path_buf()),
        reuse_seller: Some(seller),
        ..options()
    })
    .await;
    let erin = ("erin", key.as_str());
    let r = h.curl(Some(erin), &h.http_url("/a/x"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-l402-proxy-token"), Some("cached"));
    let view = listed(&h, "erin").await.unwrap();
    assert_eq!(view["managed_by"], "api");
    assert_eq!(view["spent_msat"]["total"], 10_000);
    assert_eq!(view["hosts"]["allow"], json!(["127.0.0.1"]));
    let over = h.curl(Some(erin), &h.http_url("/b/x"), &[]).await;
    assert_eq!(over.decline(), Some("over-total-limit"));
    let audit = body(&call(&h, "GET", "/v1/audit", None).await)["audit"].clone();
    assert_eq!(audit[0]["action"], "agent.create", "{audit}");
}

/// A pause and a deletion reach a tunnel that is already open: the next request inside it is
/// refused, and deleting the agent closes the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_tunnels_that_are_already_open() {
    let h = Harness::with(options()).await;
    let key = create(&h, json!({"name": "fran"})).await;
    let script = r#"
import base64, http.client, json, os, urllib.request
auth = "Basic " + base64.b64encode(("fran:" + os.environ["KEY"]).encode()).decode()
host, port = os.environ["PROXY"].split(":")
def admin(method, path, data):
    req = urllib.request.Request("http://" + os.environ["ADMIN"] + path, method=method,
        data=json.dumps(data).encode() if data is not None else None,
        headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
    with urllib.request.urlopen(req) as r:
        return r.status
out = {}
c = http.client.HTTPConnection(host, int(port), timeout=20)
c.set_tunnel("127.0.0.1", int(os.environ["HTTP_PORT"]), headers={"Proxy-Authorization": auth})
def get(path):
    c.request("GET", path)
    r = c.getresponse()
    return [r.status, r.getheader("x-l402-proxy-token"), r.getheader("x-l402-proxy-decline"), r.read().decode()]
out["paid"] = get("/weather/one")
out["pause"] = admin("PATCH", "/v1/agents/fran", {"paused": True})
out["paused"] = get("/weather/two")
out["cached_while_paused"] = get("/weather/one")
out["resume"] = admin("PATCH", "/v1/agents/fran", {"paused": False})
out["resumed"] = get("/weather/one")
out["delete"] = admin("DELETE", "/v1/agents/fran", None)
try:
    out["after_delete"] = get("/weather/one")
except Exception as e:
    out["after_delete"] = "closed: " + type(e).__name__
c.close()
print(json.dumps(out))
"#;
    let out = python(
        script,
        &[
            ("PROXY", h.proxy.to_string()),
            ("ADMIN", h.admin.unwrap().to_string()),
            ("TOKEN", TOKEN.to_string()),
            ("KEY", key.clone()),
            ("HTTP_PORT", h.seller.http.port().to_string()),
        ],
    )
    .await;
    assert_eq!(out["paid"][0], 200, "{out}");
    assert_eq!(out["paid"][1], "paid");
    assert_eq!(out["pause"], 200);
    assert_eq!(out["paused"][0], 402, "{out}");
    assert_eq!(out["paused"][2], "agent-paused", "{out}");
    assert_eq!(out["cached_while_paused"][0], 402, "{out}");
    assert_eq!(out["resumed"][0], 200, "{out}");
    assert_eq!(out["resumed"][1], "cached");
    assert_eq!(out["delete"], 204);
    let after = &out["after_delete"];
    assert!(
        after.as_str().is_some_and(|s| s.starts_with("closed")) || after[0] == 407,
        "a deleted agent's tunnel serves nothing more: {out}"
    );
    assert_eq!(h.payments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_proxy_at_a_glance() {
    let h = Harness::with(options()).await;
    assert!(h.curl(Some(ALICE), &h.http_url("/a/x"), &[]).await.paid());
    let r = call(&h, "GET", "/v1/status", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = body(&r);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["proxy_listen"], h.proxy.to_string());
    assert_eq!(s["wallet"]["backend"], "dev");
    assert_eq!(
        s["wallet"]["balance_msat"].as_u64(),
        Some(h.wallet.balance().get()),
        "{s}"
    );
    assert_eq!(s["store"], json!({"backend": "sqlite", "up": true}));
    assert_eq!(s["agents"]["total"], 2);
    assert_eq!(s["pending_payments"], 0);
    assert!(s["uptime_seconds"].as_u64().is_some());
    assert_eq!(h.admin(None, "GET", "/v1/status", &[]).await.status, 401);
}
