//! `l402-proxy agents|payments|declines|status|audit` against a running proxy: the operator runs
//! the fleet from a terminal, tables for people, `--json` for scripts, clear errors.

mod common;

use common::{Harness, Options};
use std::process::Output;

const TOKEN: &str = "operator-cli-token";
const ALICE: (&str, &str) = ("alice", "alice-key");

/// Runs the binary against the harness's admin API (token in the default variable).
async fn cli(h: &Harness, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_l402-proxy"));
    cmd.args(args)
        .env(
            "L402_PROXY_ADMIN_URL",
            format!("http://{}", h.admin.unwrap()),
        )
        .env("L402_PROXY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn");
    cmd.output().await.unwrap()
}

/// Its stdout, asserting it succeeded.
async fn ok(h: &Harness, args: &[&str]) -> String {
    let out = cli(h, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Its stderr, asserting it failed.
async fn fails(h: &Harness, args: &[&str]) -> String {
    let out = cli(h, args).await;
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key from `agents add`/`rotate` output (`key   lpk_…`).
fn key_in(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("key"))
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("no key in {out}"))
}

/// The table row of `agent` in `agents list`.
fn row<'a>(table: &'a str, agent: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(agent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_fleet_from_the_command_line() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await;

    let out = ok(
        &h,
        &[
            "agents",
            "add",
            "gina",
            "--total-sats",
            "100",
            "--daily-sats",
            "50",
        ],
    )
    .await;
    let key = key_in(&out);
    assert!(key.starts_with("lpk_"), "{out}");
    assert!(
        out.contains(&format!("HTTPS_PROXY=http://gina:{key}@{}", h.proxy)),
        "the line to paste names the proxy: {out}"
    );
    assert!(h
        .curl(Some(("gina", &key)), &h.http_url("/a/x"), &[])
        .await
        .paid());

    let list = ok(&h, &["agents", "list"]).await;
    assert!(list.starts_with("AGENT"), "{list}");
    let gina = row(&list, "gina").unwrap_or_else(|| panic!("{list}"));
    assert!(gina.contains("api") && gina.contains("active"), "{gina}");
    assert!(gina.contains("daily 50, total 100"), "{gina}");
    assert!(gina.contains("total 90"), "remaining after 10 sats: {gina}");
    assert!(row(&list, "alice").unwrap().contains("config"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&h, &["agents", "list", "--json"]).await).unwrap();
    assert!(json["agents"].as_array().unwrap().len() >= 3, "{json}");

    let out = ok(&h, &["agents", "pause", "gina"]).await;
    assert!(out.contains("paused"), "{out}");
    let r = h.curl(Some(("gina", &key)), &h.http_url("/b/x"), &[]).await;
    assert_eq!(r.decline(), Some("agent-paused"));
    assert!(row(&ok(&h, &["agents", "list"]).await, "gina")
        .unwrap()
        .contains("paused"));
    ok(&h, &["agents", "resume", "gina"]).await;

    let out = ok(&h, &["agents", "topup", "gina", "25"]).await;
    assert!(out.contains("total limit 125 sats"), "{out}");
    let out = ok(&h, &["agents", "topup", "gina", "-5"]).await;
    assert!(out.contains("total limit 120 sats"), "{out}");
    let out = ok(&h, &["agents", "topup", "gina", "--set", "60"]).await;
    assert!(
        out.contains("total limit 60 sats, 50 sats remaining"),
        "{out}"
    );
    let out = ok(&h, &["agents", "set", "gina", "--per-request-sats", "20"]).await;
    assert!(
        out.contains("per-request 20, daily 50"),
        "a change keeps the limits it does not name: {out}"
    );

    let out = ok(&h, &["agents", "rotate", "gina"]).await;
    let new_key = key_in(&out);
    assert_ne!(new_key, key);
    assert_eq!(
        h.curl(Some(("gina", &key)), &h.http_url("/free/x"), &[])
            .await
            .status,
        407
    );
    assert_eq!(
        h.curl(Some(("gina", &new_key)), &h.http_url("/free/x"), &[])
            .await
            .status,
        200
    );

    let payments = ok(&h, &["payments", "--agent", "gina"]).await;
    assert!(payments.starts_with("TIME"), "{payments}");
    let line = payments
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{payments}"));
    assert!(
        line.contains("gina") && line.contains("settled") && line.contains(" 10 "),
        "{line}"
    );
    let csv = ok(&h, &["payments", "--agent", "gina", "--csv"]).await;
    assert!(
        csv.starts_with("payment_hash,agent,host,amount_msat"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&h, &["payments", "--json", "--status", "settled"]).await)
            .unwrap();
    assert_eq!(json["payments"].as_array().unwrap().len(), 1);
    let declines = ok(&h, &["declines", "--agent", "gina"]).await;
    assert!(declines.contains("agent-paused"), "{declines}");

    let status = ok(&h, &["status"]).await;
    assert!(
        status.contains("wallet            dev — balance"),
        "{status}"
    );
    assert!(status.contains("store             sqlite — up"), "{status}");
    assert!(status.contains("policy hook       off"), "{status}");
    assert!(status.contains("fleet             paying"), "{status}");

    // The kill switch: nothing new is paid until resumed; free traffic passes.
    let out = ok(&h, &["pause-all", "--reason", "cli drill"]).await;
    assert!(out.contains("paused for the whole fleet"), "{out}");
    let out = ok(&h, &["pause-all"]).await;
    assert!(
        out.contains("already paused (by operator: cli drill)"),
        "{out}"
    );
    let status = ok(&h, &["status"]).await;
    assert!(
        status.contains("fleet             PAUSED by operator (cli drill)"),
        "{status}"
    );
    let refused = h.curl(Some(ALICE), &h.http_url("/pause/x"), &[]).await;
    assert_eq!(refused.decline(), Some("fleet-paused"), "{refused:?}");
    assert_eq!(
        h.curl(Some(ALICE), &h.http_url("/free/x"), &[])
            .await
            .status,
        200
    );
    let out = ok(&h, &["resume-all"]).await;
    assert!(out.contains("payments resumed"), "{out}");
    assert!(ok(&h, &["resume-all"]).await.contains("were not paused"));
    assert!(h
        .curl(Some(ALICE), &h.http_url("/pause/x"), &[])
        .await
        .paid());

    let audit = ok(&h, &["audit"]).await;
    for action in [
        "agent.create",
        "agent.update",
        "budget",
        "agent.key",
        "fleet.pause",
        "fleet.resume",
    ] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(!audit.contains(&key) && !audit.contains(&new_key));

    // Caps per seller from the command line: 30 sats a day at 127.0.0.1 (each 10-sat payment
    // reserves 20 with the fee reserve), 100 elsewhere.
    let out = ok(
        &h,
        &[
            "agents",
            "add",
            "hank",
            "--seller",
            "127.0.0.1=daily:30",
            "--seller",
            "*=daily:100,total:500",
        ],
    )
    .await;
    let hank = key_in(&out);
    for path in ["/h1/x", "/h2/x"] {
        let r = h.curl(Some(("hank", &hank)), &h.http_url(path), &[]).await;
        assert!(r.paid(), "{r:?}");
    }
    let over = h
        .curl(Some(("hank", &hank)), &h.http_url("/h3/x"), &[])
        .await;
    assert_eq!(over.decline(), Some("over-seller-daily-limit"), "{over:?}");
    let list = ok(&h, &["agents", "list"]).await;
    let row_hank = row(&list, "hank").unwrap_or_else(|| panic!("{list}"));
    assert!(
        row_hank.contains("at 127.0.0.1: daily 30")
            && row_hank.contains("at *: daily 100, total 500"),
        "{row_hank}"
    );
    assert!(row_hank.contains("at 127.0.0.1: daily 10"), "{row_hank}");
    let e = fails(
        &h,
        &["agents", "add", "ivy", "--seller", "x.example=yearly:5"],
    )
    .await;
    assert!(e.contains("not a window"), "{e}");

    let out = ok(&h, &["agents", "rm", "gina"]).await;
    assert!(out.contains("deleted"), "{out}");
    assert!(row(&ok(&h, &["agents", "list"]).await, "gina").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_errors_say_what_to_do() {
    let h = Harness::with(Options {
        admin_token: Some(TOKEN.into()),
        ..Options::default()
    })
    .await;
    let e = fails(&h, &["agents", "pause", "alice"]).await;
    assert!(
        e.contains("managed by the config file") && e.contains("409"),
        "{e}"
    );
    let e = fails(&h, &["agents", "rm", "nobody"]).await;
    assert!(e.contains("no such agent") && e.contains("404"), "{e}");
    let e = fails(&h, &["agents", "add", "Not Valid"]).await;
    assert!(e.contains("name"), "{e}");
    let e = fails(&h, &["payments", "--status", "lost"]).await;
    assert!(
        e.contains("status must be pending, settled or failed"),
        "{e}"
    );
    let e = fails(
        &h,
        &["agents", "list", "--token-env", "NO_SUCH_VARIABLE_SET"],
    )
    .await;
    assert!(e.contains("set NO_SUCH_VARIABLE_SET"), "{e}");

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_l402-proxy"));
    let out = cmd
        .args(["agents", "list"])
        .env(
            "L402_PROXY_ADMIN_URL",
            format!("http://{}", h.admin.unwrap()),
        )
        .env("L402_PROXY_ADMIN_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("refused the token (401)"),
        "{e}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_l402-proxy"))
        .args(["status", "--admin", &format!("http://127.0.0.1:{port}")])
        .env("L402_PROXY_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("cannot reach the admin API"),
        "{e}"
    );
}
