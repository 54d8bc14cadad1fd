//! The `l402-proxy` binary as users run it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_l402-proxy"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

#[test]
fn demo_runs_a_paid_request_end_to_end() {
    let dir = common::temp_dir("demo");
    let out = bin()
        .args(["demo", "--once", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("upstream said 402 → proxy paid 10 sat → 200"),
        "{stdout}"
    );
    assert!(
        stdout.contains("again: 200 with the cached token (paid nothing)"),
        "{stdout}"
    );
    // The admin API is served, its token kept in the data dir; `--once` prints no "try it"
    // lines for a proxy that has already stopped.
    assert!(stdout.contains("admin API  http://127.0.0.1:"), "{stdout}");
    assert_eq!(common::file_mode(&dir.join("admin-token")), 0o600);
    assert!(!stdout.contains("export "), "{stdout}");
    let config = std::fs::read_to_string(dir.join("demo-config.yaml")).unwrap();
    assert!(config.contains("token_file: admin-token"), "{config}");
    assert_eq!(common::file_mode(&dir.join("ca-key.pem")), 0o600);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hash_key_prints_the_config_value() {
    let mut child = bin()
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn config_check_names_the_bad_field() {
    let dir = common::temp_dir("cfg");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "wallet: {{ backend: dev }}\nagents:\n  - name: a\n    key_sha256: \"{}\"\n",
            l402_proxy::agents::hash_key("k")
        ),
    )
    .unwrap();
    let ok = bin()
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "wallet: { backend: dev }\nagents:\n  - name: a\n    key_sha256: short\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agents[0].key_sha256"), "{stderr}");
    let typo = dir.join("typo.yaml");
    std::fs::write(&typo, "wallet: { backend: dev, max_fee_sat: 3 }\n").unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("max_fee_sat"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_check_lists_everything_run_would_refuse_and_run_creates_nothing() {
    let dir = common::temp_dir("cfg-all");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0
admin: { listen: '127.0.0.1:0', token_env: L402_CLI_UNSET_ADMIN }
tls: { ca_cert: ca.pem, ca_key: ca-key.pem, upstream_roots: [missing-root.pem] }
wallet: { backend: lnbits, lnbits: { url: 'http://127.0.0.1:5000', admin_key_env: L402_CLI_UNSET_KEY } }
store: { path: ledger.db }
",
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .env_remove("L402_CLI_UNSET_ADMIN")
        .env_remove("L402_CLI_UNSET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "admin.token_env",
        "wallet.lnbits.admin_key_env",
        "tls.upstream_roots[0]",
    ] {
        assert!(stderr.contains(field), "{field} in:\n{stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");
    let out = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("L402_CLI_UNSET_ADMIN")
        .env_remove("L402_CLI_UNSET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.upstream_roots[0]"), "{stderr}");
    for never in ["ca.pem", "ca-key.pem", "ledger.db"] {
        assert!(
            !dir.join(never).exists(),
            "run created {never} for a config it refused"
        );
    }
    // A CA with its key missing is named, with the way out.
    std::fs::write(dir.join("ca.pem"), "not a certificate").unwrap();
    let lone = dir.join("lone.yaml");
    std::fs::write(
        &lone,
        "wallet: { backend: dev }\ntls: { ca_cert: ca.pem, ca_key: ca-key.pem }\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&lone)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("tls.ca_key"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_busy_listen_address_names_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = common::temp_dir("busy");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nwallet: {{ backend: dev }}\nstore: {{ path: ledger.db }}\n"
        ),
    )
    .unwrap();
    let out = bin().args(["run", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(listen)"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ca_export_creates_a_private_key_and_prints_the_certificate() {
    let dir = common::temp_dir("ca");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "wallet: { backend: dev }\ntls: { ca_cert: x/ca.pem, ca_key: x/ca-key.pem }\n",
    )
    .unwrap();
    let out = bin()
        .args(["ca", "export", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8_lossy(&out.stdout);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(common::file_mode(&dir.join("x/ca-key.pem")), 0o600);
    let again = bin()
        .args(["ca", "export", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        again.stdout, out.stdout,
        "the CA is created once, then reused"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_serves_until_sigterm() {
    let dir = common::temp_dir("run");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!("listen: 127.0.0.1:{port}\nwallet: {{ backend: dev }}\n"),
    )
    .unwrap();
    let mut child = bin().args(["run", "--config"]).arg(&cfg).spawn().unwrap();
    let mut answered = None;
    for _ in 0..100 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--proxy"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("http://127.0.0.1:9/")
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        if code != "000" {
            answered = Some(code);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answered.as_deref(), Some("407"));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_refuses_to_start_without_the_wallet_secret() {
    let dir = common::temp_dir("run-secret");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nwallet: { backend: lnbits, lnbits: { url: 'http://127.0.0.1:5000', admin_key_env: L402_CLI_TEST_UNSET_KEY } }\n",
    )
    .unwrap();
    let out = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("L402_CLI_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wallet.lnbits.admin_key_env"), "{stderr}");
    assert!(stderr.contains("L402_CLI_TEST_UNSET_KEY"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_and_healthcheck_commands() {
    let dir = common::temp_dir("seller");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, https) = (free(), free());
    let ca = dir.join("seller-ca.pem");
    let mut child = bin()
        .args([
            "seller",
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--tls-listen",
            &format!("127.0.0.1:{https}"),
            "--ca-out",
        ])
        .arg(&ca)
        .spawn()
        .unwrap();
    let health = |url: String| bin().args(["healthcheck", "--url", &url]).output().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if health(format!("http://127.0.0.1:{http}/free/x"))
            .status
            .success()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "the seller answers 200 on /free/x, so healthcheck passes"
    );
    assert!(
        !health(format!("http://127.0.0.1:{http}/weather/today"))
            .status
            .success(),
        "402 is not healthy"
    );
    assert!(
        !health(format!("http://127.0.0.1:{}/", free()))
            .status
            .success(),
        "nothing listening"
    );
    let paid = common::curl(&[
        "--cacert".to_string(),
        ca.display().to_string(),
        format!("https://localhost:{https}/weather/today"),
    ])
    .await;
    assert_eq!(paid.status, 402);
    assert!(paid
        .header("www-authenticate")
        .is_some_and(|c| c.contains("invoice=\"lnbcrt")));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(dir).unwrap();
}
