//! Real LNbits 1.6.2 instances (PyPI), started by `tests/lnbits/start.sh` once per test
//! binary and killed at exit (process group; the script's watcher also ends them if the test
//! process dies). Shared by tests/lnbits.rs and tests/nwc.rs.
//! `L402_SKIP_LNBITS=1` skips the tests that need them (machines without Python); CI runs them.

use l402_proxy::demo::lnbits::LnbitsInvoices;
use l402_proxy::wallet::lnbits::LnbitsWallet;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// One running LNbits: its data dir and what start.sh wrote to `lnbits.env`.
pub struct Instance {
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

impl Instance {
    fn start(dir: &Path, funding: Option<&Instance>) -> Instance {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lnbits/start.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("start").arg(dir);
        if let Some(f) = funding {
            cmd.arg(f.dir.join("lnbits.env"));
        }
        let out = cmd
            .env("LNBITS_WATCH_PID", std::process::id().to_string())
            .output()
            .expect("bash must be installed");
        assert!(
            out.status.success(),
            "tests/lnbits/start.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("lnbits.env")).expect("lnbits.env");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Instance {
            dir: dir.to_path_buf(),
            env,
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from lnbits.env"))
    }

    pub fn url(&self) -> &str {
        self.get("LNBITS_URL")
    }

    pub fn pgid(&self) -> i32 {
        self.get("LNBITS_PGID").parse().expect("pgid")
    }

    pub fn seller_invoices(&self) -> LnbitsInvoices {
        LnbitsInvoices::new(self.url(), self.get("LNBITS_SELLER_INVOICE_KEY")).unwrap()
    }
}

pub struct Lnbits {
    pub first: Instance,
    second: Option<Instance>,
    /// The instances' data, removed at exit.
    root: PathBuf,
}

impl Lnbits {
    /// The instance funded by `first` (only when started with `with_second`).
    pub fn second(&self) -> &Instance {
        self.second
            .as_ref()
            .expect("LNbits started without a second instance")
    }
}

static LNBITS: OnceLock<Option<Lnbits>> = OnceLock::new();

/// SIGTERM to a process group a helper script started — never to our own group or a bogus id,
/// which would end the test run, cargo and CI with it.
pub fn kill_group(pgid: i32) {
    // SAFETY: getpgrp(2) and kill(2) take and return plain integers.
    unsafe {
        if pgid > 1 && pgid != libc::getpgrp() {
            libc::kill(-pgid, libc::SIGTERM);
        }
    }
}

extern "C" fn stop_lnbits() {
    if let Some(Some(l)) = LNBITS.get() {
        for i in l.second.iter().chain([&l.first]) {
            kill_group(i.pgid());
        }
        let _ = std::fs::remove_dir_all(&l.root);
    }
}

/// The instance(s), started on first use (`with_second`: also one funded by the first, for
/// LNbits' external payment path); None when the tests are to be skipped. A test binary
/// asks with the same `with_second` every time.
pub fn lnbits(with_second: bool) -> Option<&'static Lnbits> {
    LNBITS
        .get_or_init(|| {
            if std::env::var("L402_SKIP_LNBITS").as_deref() == Ok("1") {
                eprintln!("L402_SKIP_LNBITS=1: skipping the LNbits tests");
                return None;
            }
            let root = super::temp_dir("lnbits").keep();
            let started = Instant::now();
            let first = Instance::start(&root.join("one"), None);
            let second = with_second.then(|| Instance::start(&root.join("two"), Some(&first)));
            eprintln!("LNbits up in {:?}", started.elapsed());
            // SAFETY: registering a plain extern "C" fn; it only reads a OnceLock and kills.
            unsafe {
                libc::atexit(stop_lnbits);
            }
            Some(Lnbits {
                first,
                second,
                root,
            })
        })
        .as_ref()
}

/// A small JSON client for the test's own LNbits calls (balances, funding).
pub async fn lnbits_call(
    url: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut args = vec![
        "-s".to_string(),
        "-X".into(),
        method.into(),
        "-H".into(),
        format!("X-Api-Key: {key}"),
        "-H".into(),
        "Content-Type: application/json".into(),
    ];
    if let Some(b) = body {
        args.push("-d".into());
        args.push(b.to_string());
    }
    args.push(format!("{url}{path}"));
    let out = tokio::process::Command::new("curl")
        .args(&args)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .await
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "LNbits {method} {path}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A fresh wallet on `at`, funded with `sats` paid from that instance's payer wallet.
pub struct TestWallet {
    pub url: String,
    pub admin: String,
}

impl TestWallet {
    pub async fn new(at: &Instance, sats: u64) -> TestWallet {
        let w = lnbits_call(
            at.url(),
            "POST",
            "/api/v1/account",
            "",
            Some(json!({"name": "test"})),
        )
        .await;
        let admin = w["adminkey"].as_str().expect("adminkey").to_string();
        if sats > 0 {
            let inv = lnbits_call(
                at.url(),
                "POST",
                "/api/v1/payments",
                &admin,
                Some(json!({"out": false, "amount": sats, "memo": "float"})),
            )
            .await;
            let paid = lnbits_call(
                at.url(),
                "POST",
                "/api/v1/payments",
                at.get("LNBITS_PAYER_ADMIN_KEY"),
                Some(json!({"out": true, "bolt11": inv["bolt11"]})),
            )
            .await;
            assert_eq!(paid["status"], "success", "{paid}");
        }
        TestWallet {
            url: at.url().to_string(),
            admin,
        }
    }

    pub async fn balance_msat(&self) -> u64 {
        let w = lnbits_call(&self.url, "GET", "/api/v1/wallet", &self.admin, None).await;
        w["balance"].as_u64().unwrap_or_else(|| panic!("{w}"))
    }

    pub fn backend(&self) -> LnbitsWallet {
        LnbitsWallet::new(&self.url, &self.admin).unwrap()
    }
}

/// Through the proxy (alice's credentials): the first request to the 21-sat `/weather/` service
/// is paid and `payer`'s LNbits balance drops by exactly price + fee; the next request to that
/// service rides on the cached token and nothing more is paid. Returns the balance afterwards.
pub async fn assert_pays_once_then_reuses(h: &super::Harness, payer: &TestWallet) -> u64 {
    const ALICE: (&str, &str) = ("alice", "alice-key");
    let before = payer.balance_msat().await;
    assert_eq!(before, 1_000_000);
    let first = h
        .curl(Some(ALICE), &h.http_url("/weather/today"), &[])
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.paid(), "{first:?}");
    assert_eq!(first.header("x-l402-proxy-paid-msat"), Some("21000"));
    let fee: u64 = first
        .header("x-l402-proxy-fee-msat")
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert_eq!(first.body, "paid content for weather: /weather/today\n");
    let after = before - 21_000 - fee;
    assert_eq!(payer.balance_msat().await, after);
    assert_eq!(h.seller.seller.paid_count(), 1);
    // Same service again: the cached token is reused, nothing is paid.
    let again = h
        .curl(Some(ALICE), &h.http_url("/weather/tomorrow"), &[])
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert!(!again.paid(), "{again:?}");
    assert_eq!(payer.balance_msat().await, after);
    after
}
