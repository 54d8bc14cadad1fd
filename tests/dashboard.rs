//! The dashboard at `/` on the admin listener: served from the binary with strict headers, and
//! used in a real browser (Debian's headless Chromium, driven by tests/dashboard/drive.mjs with
//! npm playwright-core) as an operator would: sign in at the prompt and with `#token=`, watch a
//! payment made through the proxy appear, create an agent and use its key through the proxy,
//! pause it and see the proxy decline it, top it up, download the ledger as CSV, delete it, and
//! sign in again after a 401; and approve and deny payments held above `approve_above_sats`
//! while the agents' requests wait; and see the policy service (`policy_hook`) in the overview
//! and its denials among the declines. Screenshots go to a temp dir (printed); with
//! `L402_DASHBOARD_SCREENSHOT=1` also to docs/dashboard.png for the README.
//!
//! A missing Chromium or playwright-core fails the test, naming `bash tests/dashboard/install.sh`.

mod common;

use common::{Harness, Options, Reply};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "dashboard-admin-token";
const ALICE: (&str, &str) = ("alice", "alice-key");
const BOB: (&str, &str) = ("bob", "bob-key");
const INSTALL: &str = "bash tests/dashboard/install.sh";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser session, Chromium's start included.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary_with_strict_headers() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await;
    let page = h.admin(None, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.contains("\"dashboard/app.js\""));
    // The page itself holds no data: no token is needed for it, and none is in it.
    assert!(!page.body.contains(TOKEN));

    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/icon.svg", "image/svg+xml"),
    ] {
        let r = h.admin(None, "GET", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("content-security-policy").is_some());
    }
    // Everything else is as before: unknown paths 404, the API still wants its token.
    assert_eq!(
        h.admin(None, "GET", "/dashboard/nope.js", &[]).await.status,
        404
    );
    assert_eq!(h.admin(None, "POST", "/", &[]).await.status, 404);
    assert_eq!(h.admin(None, "GET", "/v1/agents", &[]).await.status, 401);
    assert_eq!(h.admin(None, "GET", "/healthz", &[]).await.status, 200);
    assert_eq!(
        h.admin(Some(TOKEN), "GET", "/v1/agents", &[]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_manages_agents_in_a_browser() {
    let started = Instant::now();
    check_browser();
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ per_request_sats: 1000, daily_sats: 500 }".into(),
        bob_limits: "{ total_sats: 2000 }".into(),
        ..Options::default()
    })
    .await;
    // Before the browser opens: a payment by alice, and a decline for bob (5000 sats > 2000).
    let paid = h.curl(Some(ALICE), &h.http_url("/weather/x"), &[]).await;
    assert!(paid.paid(), "{paid:?}");
    let declined = h.curl(Some(BOB), &h.http_url("/pricey/x"), &[]).await;
    let decline_code = declined
        .decline()
        .unwrap_or_else(|| panic!("bob's pricey request is declined: {declined:?}"))
        .to_string();

    let docs_shot = std::env::var("L402_DASHBOARD_SCREENSHOT")
        .is_ok_and(|v| v == "1")
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"));
    if let Some(p) = &docs_shot {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    let mut env = vec![("DECLINE_CODE", decline_code)];
    if let Some(p) = &docs_shot {
        env.push(("DOCS_SCREENSHOT", p.display().to_string()));
    }
    let session = browse(&h, "manage", &env).await;
    assert_eq!(session.asks, 7, "{}", session.report);
    assert!(session.out.join("dashboard.png").exists());
    eprintln!(
        "dashboard: passed in {:.1} s; screenshots in {}{}",
        started.elapsed().as_secs_f64(),
        session.out.display(),
        docs_shot
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
}

/// Payments above `approve_above_sats` wait in the dashboard: the operator approves one with
/// the keyboard (the agent's waiting request completes paid), creates an agent with guardrails
/// in the form, denies its held payment after a confirmation (the agent gets 402
/// `approval-denied`), and sees the 409 of a payment decided elsewhere meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_and_denies_held_payments_in_a_browser() {
    let started = Instant::now();
    check_browser();
    // The seller asks 10 sats a request: above alice's threshold.
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ per_request_sats: 1000, approve_above_sats: 5, requests_per_minute: 120 }"
            .into(),
        extra_yaml: "approval: { timeout_secs: 30 }\n".into(),
        ..Options::default()
    })
    .await;
    let session = browse(&h, "approvals", &[]).await;
    assert_eq!(session.asks, 10, "{}", session.report);
    // Two approved (one in the page, one behind its back), one denied: two paid.
    assert_eq!(h.payments(), 2, "{}", session.report);
    let audit = h.admin(Some(TOKEN), "GET", "/v1/audit", &[]).await;
    let audit: serde_json::Value = serde_json::from_str(&audit.body).unwrap();
    let decisions = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "approval")
        .count();
    assert_eq!(decisions, 3, "{audit}");
    eprintln!(
        "dashboard approvals: passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        session.out.display(),
    );
}

/// A policy service on 127.0.0.1 allowed one payment and denied another before the browser
/// opens: the overview shows its host, fail-closed and the counts, the declines list the
/// denial with its reason, and a payment allowed meanwhile is counted without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_policy_service_in_a_browser() {
    use common::policy::{hook_yaml, Mode, PolicyService};
    check_browser();
    let hook = PolicyService::start().await;
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        extra_yaml: hook_yaml(&hook.url(), ""),
        ..Options::default()
    })
    .await;
    let paid = h.curl(Some(ALICE), &h.http_url("/weather/x"), &[]).await;
    assert!(paid.paid(), "{paid:?}");
    hook.answer(Mode::Json(
        serde_json::json!({"decision": "deny", "reason": "not on the list"}),
    ));
    let denied = h.curl(Some(ALICE), &h.http_url("/stocks/x"), &[]).await;
    assert_eq!(denied.decline(), Some("policy-denied"), "{denied:?}");
    hook.answer(Mode::Json(serde_json::json!({"decision": "allow"})));
    let session = browse(&h, "policy", &[]).await;
    assert_eq!(session.asks, 1, "{}", session.report);
    assert_eq!(h.payments(), 2, "{}", session.report);
    assert_eq!(hook.calls().len(), 3);
    assert!(hook.calls().iter().all(|c| c.signed));
}

/// The kill switch and the spend-spike breaker in the browser: the operator pauses every
/// payment (after a confirmation; the agents' paid requests are declined `fleet-paused`, free
/// traffic passes), resumes them, then sees alice's tripped breaker on her card and lifts it,
/// and bob's cap per seller with what he spent under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_the_fleet_and_resumes_a_tripped_agent_in_a_browser() {
    check_browser();
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        alice_limits: "{ spike_max_sats: 20 }".into(),
        bob_limits: "{ sellers: [ { hosts: ['127.0.0.1'], daily_sats: 100 } ] }".into(),
        max_fee_sats: 0,
        ..Options::default()
    })
    .await;
    let session = browse(&h, "fleet", &[]).await;
    assert_eq!(session.asks, 7, "{}", session.report);
    assert_eq!(
        h.payments(),
        4,
        "bob once, alice three times: {}",
        session.report
    );
    let audit = h.admin(Some(TOKEN), "GET", "/v1/audit", &[]).await;
    for action in ["fleet.pause", "fleet.resume", "agent.resume"] {
        assert!(audit.body.contains(action), "{action}: {}", audit.body);
    }
}

fn check_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `{INSTALL}`"
    );
    assert!(
        here()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "npm playwright-core is missing in tests/dashboard/node_modules: run `{INSTALL}`"
    );
}

/// What a browser session did.
struct Session {
    /// Screenshots and logs.
    out: PathBuf,
    /// How many times the script asked us to act through the proxy.
    asks: usize,
    /// The transcript and the script's stderr, for assertion messages.
    report: String,
}

/// Runs `scenario` of tests/dashboard/drive.mjs against `h`'s admin API, answering its
/// requests; fails the test unless the script ends with DONE and exit 0.
async fn browse(h: &Harness, scenario: &str, env: &[(&str, String)]) -> Session {
    let dir = here();
    let out = common::temp_dir("dashboard").keep(); // kept: screenshots and logs for a post-mortem
    let admin = h.admin.unwrap();
    let stderr_path = out.join("drive.stderr");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join("drive.mjs"))
        .current_dir(&dir)
        .env("SCENARIO", scenario)
        .env("ADMIN_URL", format!("http://{admin}"))
        .env("ADMIN_TOKEN", TOKEN)
        .env("OUT_DIR", &out)
        .env("SELLER_HOST", format!("127.0.0.1:{}", h.seller.http.port()))
        .env("CHROMIUM", CHROMIUM)
        .env_remove("DOCS_SCREENSHOT")
        .env_remove("DECLINE_CODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true);
    // The browser talks to 127.0.0.1 only: no proxy of the environment in its way.
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("node must be installed (bash tests/dashboard/install.sh)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut transcript: Vec<String> = Vec::new();
    let mut done = false;
    let mut asks = 0;
    let mut held = HashMap::new();
    let session = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            transcript.push(line.clone());
            if line == "DONE" {
                done = true;
            } else if let Some(rest) = line.strip_prefix("ASK ") {
                let (id, request) = rest.split_once(' ').unwrap();
                let request: serde_json::Value = serde_json::from_str(request).unwrap();
                let answer = answer(h, &mut held, &request).await;
                transcript.push(format!("  -> {answer}"));
                asks += 1;
                stdin
                    .write_all(format!("{id} {answer}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
            }
        }
    };
    let timed_out = tokio::time::timeout(BROWSER_TIMEOUT, session)
        .await
        .is_err();
    let status = if timed_out {
        let _ = child.kill().await;
        None
    } else {
        child.wait().await.ok()
    };
    for (_, task) in held.drain() {
        task.abort();
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = format!(
        "browser session (screenshots and logs in {}):\n{}\nstderr:\n{stderr}",
        out.display(),
        transcript.join("\n")
    );
    assert!(!timed_out, "no end after {BROWSER_TIMEOUT:?}; {report}");
    assert!(
        done && status.is_some_and(|s| s.success()),
        "the dashboard script failed ({status:?}); {report}"
    );
    Session { out, asks, report }
}

/// Whether a reply is the outcome the script wants: `paid`, `free` (200, nothing paid),
/// `refused` (407) or a decline code.
fn outcome_is(r: &Reply, want: &str) -> bool {
    match want {
        "paid" => r.status == 200 && r.paid(),
        "free" => r.status == 200 && r.decline().is_none() && !r.paid(),
        "refused" => r.status == 407,
        code => r.status == 402 && r.decline() == Some(code),
    }
}

fn reply_json(r: &Reply, ok: bool) -> serde_json::Value {
    serde_json::json!({
        "ok": ok,
        "status": r.status,
        "paid": r.paid(),
        "decline": r.decline(),
    })
}

/// Does what the browser script asks on the proxy side and checks the outcome. Requests that
/// wait for an approval (`hold`) run in the background, by name, until `outcome` collects them.
async fn answer(
    h: &Harness,
    held: &mut HashMap<String, tokio::task::JoinHandle<Reply>>,
    request: &serde_json::Value,
) -> serde_json::Value {
    let s = |k: &str| request[k].as_str().unwrap_or_default().to_string();
    match s("do").as_str() {
        "pay" => {
            let (agent, key, path, want) = (s("agent"), s("key"), s("path"), s("expect"));
            let r = h.curl(Some((&agent, &key)), &h.http_url(&path), &[]).await;
            reply_json(&r, outcome_is(&r, &want))
        }
        // A request through the proxy that waits for the operator: it runs on its own.
        "hold" => {
            let (agent, key, url) = (s("agent"), s("key"), h.http_url(&s("path")));
            let proxy = h.proxy;
            let task = tokio::spawn(async move {
                common::proxied(
                    proxy,
                    (&agent, &key),
                    http::Method::GET,
                    &url,
                    bytes::Bytes::new(),
                )
                .await
            });
            held.insert(s("name"), task);
            serde_json::json!({ "ok": true })
        }
        // The held request is still waiting (no answer yet).
        "waiting" => {
            let ok = held.get(&s("name")).is_some_and(|t| !t.is_finished());
            serde_json::json!({ "ok": ok })
        }
        // The held request's answer, once the operator decided.
        "outcome" => {
            let Some(task) = held.remove(&s("name")) else {
                return serde_json::json!({ "ok": false, "error": "no such held request" });
            };
            match tokio::time::timeout(Duration::from_secs(20), task).await {
                Ok(Ok(r)) => reply_json(&r, outcome_is(&r, &s("expect"))),
                Ok(Err(e)) => serde_json::json!({ "ok": false, "error": e.to_string() }),
                Err(_) => serde_json::json!({ "ok": false, "error": "still waiting after 20 s" }),
            }
        }
        // A decision through the API behind the page's back (another operator, a script on the API).
        "decide" => {
            let body = serde_json::json!({ "approve": request["approve"] == true }).to_string();
            let r = h
                .admin(
                    Some(TOKEN),
                    "POST",
                    &format!("/v1/approvals/{}", s("id")),
                    &[
                        "-H",
                        "Content-Type: application/json",
                        "--data-binary",
                        &body,
                    ],
                )
                .await;
            serde_json::json!({ "ok": r.status == 200, "status": r.status, "body": r.body })
        }
        // The proxy URL the page shows for a new agent names this proxy.
        "proxy-url" => {
            let url = s("url");
            let ok = url.ends_with(&format!("@{}", h.proxy)) && url.starts_with("http://");
            serde_json::json!({ "ok": ok, "proxy": h.proxy.to_string(), "url": url })
        }
        other => serde_json::json!({ "ok": false, "error": format!("unknown request {other:?}") }),
    }
}
