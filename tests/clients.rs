//! "Every agent's HTTP client": real clients (curl, wget, Python requests, httpx and aiohttp,
//! Node 20's global fetch with npm undici, Go net/http, Java 17 HttpClient) through the proxy,
//! each configured the way tests/clients/README.md tells an agent to, against the demo seller on
//! 127.0.0.1. For each client: a paid HTTPS request, token reuse (no second payment, checked on
//! the admin API), a POST with a JSON body replayed after paying, and a 407 for a wrong key
//! (over CONNECT and over plain HTTP).
//!
//! Each client is a small program under tests/clients/ printing a fixed line format (see
//! tests/clients/client.py). Go and Java builds are cached per source under
//! ~/.cache/l402-proxy/clients/. A missing toolchain fails the test, naming
//! `bash tests/clients/install.sh`.

mod common;

use common::{Harness, Options};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "clients-matrix-admin-token";
const ALICE: (&str, &str) = ("alice", "alice-key");
const WRONG: (&str, &str) = ("alice", "not-alices-key");
const INSTALL: &str = "bash tests/clients/install.sh";
/// What one client invocation may take, JVM start-up included.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Every variable that could route a client elsewhere or change whom it trusts; each client
/// gets exactly the ones its recipe sets.
const SCRUBBED: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "L402_PROXY_CA",
    "WGETRC",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Curl,
    Wget,
    Requests,
    Httpx,
    Aiohttp,
    Node,
    Go,
    Java,
}

/// How a client reports that the proxy refused its credentials.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// A response with status 407 and `Proxy-Authenticate: Basic realm="l402-proxy"`.
    Response,
    /// An error whose message contains this text.
    Error(&'static str),
}

struct Client {
    kind: Kind,
    name: &'static str,
    /// For a 407 to CONNECT (HTTPS).
    refused_https: Refusal,
    /// For a 407 to an absolute-form request (plain HTTP).
    refused_http: Refusal,
}

const CURL: Client = Client {
    kind: Kind::Curl,
    name: "curl",
    refused_https: Refusal::Error("CONNECT tunnel failed, response 407"),
    refused_http: Refusal::Response,
};
const WGET: Client = Client {
    kind: Kind::Wget,
    name: "wget",
    refused_https: Refusal::Error("Proxy tunneling failed: Proxy Authentication Required"),
    refused_http: Refusal::Response,
};
const REQUESTS: Client = Client {
    kind: Kind::Requests,
    name: "requests",
    refused_https: Refusal::Error("Tunnel connection failed: 407 Proxy Authentication Required"),
    refused_http: Refusal::Response,
};
const HTTPX: Client = Client {
    kind: Kind::Httpx,
    name: "httpx",
    refused_https: Refusal::Error("ProxyError: 407 Proxy Authentication Required"),
    refused_http: Refusal::Response,
};
const AIOHTTP: Client = Client {
    kind: Kind::Aiohttp,
    name: "aiohttp",
    refused_https: Refusal::Error("ClientHttpProxyError: 407"),
    refused_http: Refusal::Response,
};
const NODE: Client = Client {
    kind: Kind::Node,
    name: "node",
    // undici's ProxyAgent tunnels plain HTTP through CONNECT too.
    refused_https: Refusal::Error("Proxy response (407) !== 200 when HTTP Tunneling"),
    refused_http: Refusal::Error("Proxy response (407) !== 200 when HTTP Tunneling"),
};
const GO: Client = Client {
    kind: Kind::Go,
    name: "go",
    // net/http keeps only the status text of a failed CONNECT.
    refused_https: Refusal::Error(": Proxy Authentication Required"),
    refused_http: Refusal::Response,
};
const JAVA: Client = Client {
    kind: Kind::Java,
    name: "java",
    // The Authenticator answers every 407 with the same (wrong) key; the JDK gives up after
    // jdk.httpclient.auth.retrylimit (3) tries.
    refused_https: Refusal::Error("too many authentication attempts"),
    refused_http: Refusal::Error("too many authentication attempts"),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl() {
    matrix(&CURL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget() {
    matrix(&WGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests() {
    matrix(&REQUESTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx() {
    matrix(&HTTPX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_aiohttp() {
    matrix(&AIOHTTP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_with_undici() {
    matrix(&NODE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_net_http() {
    matrix(&GO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_http_client() {
    matrix(&JAVA).await;
}

/// The trap the README warns about: curl ignores upper-case HTTP_PROXY and wget ignores
/// upper-case HTTPS_PROXY, so the request goes straight to the seller and its 402 comes back
/// unpaid, with no sign of the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_wget_ignore_upper_case_proxy_variables() {
    let curl = Runner::prepare(&CURL).await;
    let wget = Runner::prepare(&WGET).await;
    let h = Harness::start().await;
    let proxy = h.proxy_url(Some(ALICE));
    let ca = h.ca().display().to_string();
    let cases = [
        (
            &curl,
            h.http_url("/trap-curl/x"),
            vec![("HTTP_PROXY", proxy.clone())],
        ),
        (
            &wget,
            h.https_url("/trap-wget/x"),
            // The seller's own CA, so that the direct connection gets as far as the 402.
            vec![
                ("HTTPS_PROXY", proxy.clone()),
                ("L402_PROXY_CA", h.seller_ca().display().to_string()),
            ],
        ),
    ];
    for (runner, url, env) in cases {
        let r = runner.exec_with(&env, "GET", &url, None).await;
        assert_eq!(
            r.status,
            Some(402),
            "{}: {url} went direct to the seller: {r:?}",
            runner.client.name
        );
        assert!(
            r.headers.keys().all(|k| !k.starts_with("x-l402-proxy-")),
            "{}: the proxy was not on the path: {r:?}",
            runner.client.name
        );
    }
    assert_eq!(h.payments(), 0);
    // And with the lower-case names both go through the proxy and get paid.
    for (runner, url) in [
        (&curl, h.http_url("/trap-curl/y")),
        (&wget, h.https_url("/trap-wget/y")),
    ] {
        let env = [
            ("http_proxy", proxy.clone()),
            ("https_proxy", proxy.clone()),
            ("L402_PROXY_CA", ca.clone()),
        ];
        let r = runner.exec_with(&env, "GET", &url, None).await;
        assert_eq!(r.status, Some(200), "{}: {r:?}", runner.client.name);
        assert!(r.paid(), "{}: {r:?}", runner.client.name);
    }
    assert_eq!(h.payments(), 2);
}

/// The four checks for one client, on a proxy and seller of its own.
async fn matrix(client: &'static Client) {
    let runner = Runner::prepare(client).await;
    let started = Instant::now();
    let h = Harness::with(Options {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Options::default()
    })
    .await;
    let name = client.name;
    let service = format!("{name}-weather");
    let path = format!("/{service}/today");
    let url = h.https_url(&path);

    // 1. A paid HTTPS request.
    let first = runner.run(&h, ALICE, "GET", &url, None).await;
    assert_eq!(
        first.status,
        Some(200),
        "{name}: first GET {url}: {first:?}"
    );
    assert!(first.paid(), "{name}: the first request pays: {first:?}");
    assert_eq!(
        first.header("x-l402-proxy-paid-msat"),
        Some("10000"),
        "{name}: {first:?}"
    );
    assert_eq!(
        first.header("x-l402-proxy-fee-msat"),
        Some("0"),
        "{name}: the dev wallet charges no fee: {first:?}"
    );
    let first_hash = payment_hash(&first, name);
    assert_eq!(first.body, format!("paid content for {service}: {path}\n"));
    let ledger = settled_payments(&h).await;
    assert_eq!(ledger, vec![first_hash.clone()], "{name}: one payment");

    // 2. The same path again: the cached token, no new payment.
    let again = runner.run(&h, ALICE, "GET", &url, None).await;
    assert_eq!(again.status, Some(200), "{name}: second GET: {again:?}");
    assert!(!again.paid(), "{name}: the token is reused: {again:?}");
    assert_eq!(again.header("x-l402-proxy-paid-msat"), None, "{again:?}");
    assert_eq!(again.header("x-l402-proxy-payment-hash"), None, "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!(
        settled_payments(&h).await,
        vec![first_hash.clone()],
        "{name}: still one payment after the reuse"
    );
    assert_eq!(h.payments(), 1, "{name}: the wallet paid once");

    // 3. A POST with a JSON body to a paid path: 402, paid, and the body replayed. The seller's
    // /echo/ answers "<METHOD> <body>".
    let json = format!(r#"{{"client":"{name}","query":"l402 replay","n":[1,2,3]}}"#);
    let echo = h.https_url(&format!("/echo/{name}"));
    let posted = runner.run(&h, ALICE, "POST", &echo, Some(&json)).await;
    assert_eq!(posted.status, Some(200), "{name}: POST {echo}: {posted:?}");
    assert!(
        posted.paid(),
        "{name}: the POST pays for /echo/: {posted:?}"
    );
    assert_eq!(
        posted.body,
        format!("POST {json}"),
        "{name}: the seller got the JSON body on the replay"
    );
    let posted_hash = payment_hash(&posted, name);
    let mut want = vec![first_hash, posted_hash];
    want.sort();
    assert_eq!(settled_payments(&h).await, want, "{name}: two payments");

    // 4. A wrong key: 407, over CONNECT and over plain HTTP, and nothing paid.
    let refused = runner.run(&h, WRONG, "GET", &url, None).await;
    check_refusal(name, "HTTPS", client.refused_https, &refused);
    let refused = runner.run(&h, WRONG, "GET", &h.http_url(&path), None).await;
    check_refusal(name, "plain HTTP", client.refused_http, &refused);
    assert_eq!(
        settled_payments(&h).await,
        want,
        "{name}: a 407 pays nothing"
    );
    assert_eq!(h.payments(), 2);
    eprintln!(
        "{name}: the client matrix passed in {:?}",
        started.elapsed()
    );
}

fn check_refusal(name: &str, over: &str, expected: Refusal, got: &Reply) {
    match expected {
        Refusal::Response => {
            assert_eq!(got.status, Some(407), "{name} ({over}, wrong key): {got:?}");
            assert_eq!(
                got.header("proxy-authenticate"),
                Some(r#"Basic realm="l402-proxy""#),
                "{name} ({over}): {got:?}"
            );
        }
        Refusal::Error(text) => {
            let error = got.error.as_deref().unwrap_or("");
            assert!(
                error.contains(text),
                "{name} ({over}, wrong key): expected an error containing {text:?}, got {got:?}"
            );
        }
    }
}

fn payment_hash(r: &Reply, name: &str) -> String {
    let hash = r.header("x-l402-proxy-payment-hash").unwrap_or_default();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}: x-l402-proxy-payment-hash is a payment hash: {r:?}"
    );
    hash.to_string()
}

/// The payment hashes `GET /v1/payments` lists, sorted; every one settled by alice for 10 sat.
async fn settled_payments(h: &Harness) -> Vec<String> {
    let r = h.admin(Some(ADMIN_TOKEN), "GET", "/v1/payments", &[]).await;
    assert_eq!(r.status, 200, "admin GET /v1/payments: {r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("admin /v1/payments is not JSON ({e}): {}", r.body));
    let rows = v["payments"]
        .as_array()
        .unwrap_or_else(|| panic!("no payments array: {v}"));
    let mut hashes: Vec<String> = rows
        .iter()
        .map(|p| {
            assert_eq!(p["agent"], "alice", "{p}");
            assert_eq!(p["status"], "settled", "{p}");
            assert_eq!(p["amount_msat"], 10_000, "{p}");
            p["payment_hash"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    hashes.sort();
    hashes
}

/// What a client printed.
#[derive(Debug, Default)]
struct Reply {
    status: Option<u16>,
    /// x-l402-proxy-* and proxy-authenticate, names lower-case.
    headers: HashMap<String, String>,
    body: String,
    /// The client's error when it got no response.
    error: Option<String>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn paid(&self) -> bool {
        self.header("x-l402-proxy-token") == Some("paid")
    }

    /// Parses `STATUS n` / `HEADER name: value` / `ERROR …` lines, then `BODY` and the raw body.
    fn parse(out: &[u8]) -> Option<Reply> {
        let mut reply = Reply::default();
        let mut rest = out;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = rest.get(end + 1..).unwrap_or_default();
            if line == "BODY" {
                reply.body = String::from_utf8_lossy(rest).into_owned();
                break;
            } else if let Some(code) = line.strip_prefix("STATUS ") {
                reply.status = Some(code.trim().parse().ok()?);
            } else if let Some(h) = line.strip_prefix("HEADER ") {
                let (k, v) = h.split_once(':')?;
                reply
                    .headers
                    .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            } else if let Some(e) = line.strip_prefix("ERROR ") {
                reply.error = Some(e.to_string());
            }
        }
        (reply.status.is_some() || reply.error.is_some()).then_some(reply)
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Where built Go and Java clients are kept, one directory per source hash.
fn cache_root() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache/l402-proxy/clients"),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("l402-clients"),
    }
}

/// A client ready to run: the program, its fixed arguments, and how its recipe sets the
/// proxy and the CA.
struct Runner {
    client: &'static Client,
    program: PathBuf,
    args: Vec<String>,
}

impl Runner {
    /// Checks the client's toolchain (failing with the install command when it is missing)
    /// and builds the Go or Java client when its cached build is missing.
    async fn prepare(client: &'static Client) -> Runner {
        let dir = clients_dir();
        let (program, args): (PathBuf, Vec<String>) = match client.kind {
            Kind::Curl => {
                need(client, "curl", &["--version"]).await;
                ("bash".into(), vec![path_arg(&dir.join("curl.sh"))])
            }
            Kind::Wget => {
                need(client, "wget", &["--version"]).await;
                ("bash".into(), vec![path_arg(&dir.join("wget.sh"))])
            }
            Kind::Requests | Kind::Httpx | Kind::Aiohttp => {
                let module = client.name;
                need(client, "python3", &["-c", &format!("import {module}")]).await;
                (
                    "python3".into(),
                    vec![path_arg(&dir.join("client.py")), module.to_string()],
                )
            }
            Kind::Node => {
                need(client, "node", &["--version"]).await;
                assert!(
                    dir.join("node_modules/undici/package.json").is_file(),
                    "node: npm undici is not installed in tests/clients/node_modules: run `{INSTALL}`"
                );
                ("node".into(), vec![path_arg(&dir.join("client.mjs"))])
            }
            Kind::Go => {
                let version = need(client, "go", &["version"]).await;
                (build_go(&dir.join("go"), &version).await, Vec::new())
            }
            Kind::Java => {
                let version = need(client, "javac", &["-version"]).await;
                need(client, "java", &["-version"]).await;
                let classes = build_java(&dir.join("java"), &version).await;
                (
                    "java".into(),
                    vec![
                        // Without this the JDK refuses Basic credentials for CONNECT.
                        "-Djdk.http.auth.tunneling.disabledSchemes=".into(),
                        "-cp".into(),
                        path_arg(&classes),
                        "Client".into(),
                    ],
                )
            }
        };
        Runner {
            client,
            program,
            args,
        }
    }

    /// The client's recipe: which variables carry the proxy URL and the proxy's CA.
    fn recipe(&self, proxy: &str, ca: &Path) -> Vec<(&'static str, String)> {
        let ca = ca.display().to_string();
        let (lower, upper) = (
            vec![
                ("https_proxy", proxy.to_string()),
                ("http_proxy", proxy.to_string()),
            ],
            vec![
                ("HTTPS_PROXY", proxy.to_string()),
                ("HTTP_PROXY", proxy.to_string()),
            ],
        );
        let (mut env, ca_var) = match self.client.kind {
            Kind::Curl => (lower, "CURL_CA_BUNDLE"),
            Kind::Wget => (lower, "L402_PROXY_CA"),
            Kind::Requests => (upper, "REQUESTS_CA_BUNDLE"),
            Kind::Httpx | Kind::Aiohttp | Kind::Go => (upper, "SSL_CERT_FILE"),
            Kind::Node => (upper, "NODE_EXTRA_CA_CERTS"),
            Kind::Java => (upper, "L402_PROXY_CA"),
        };
        env.push((ca_var, ca));
        env
    }

    async fn run(
        &self,
        h: &Harness,
        creds: (&str, &str),
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Reply {
        let env = self.recipe(&h.proxy_url(Some(creds)), &h.ca());
        self.exec_with(&env, method, url, body).await
    }

    /// Runs the client once with exactly `env` for proxy and CA settings.
    async fn exec_with(
        &self,
        env: &[(&str, String)],
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Reply {
        let name = self.client.name;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args).arg(method).arg(url);
        if let Some(b) = body {
            cmd.arg(b);
        }
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{name}: {method} {url} took over {RUN_TIMEOUT:?}"))
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: cannot run {:?} ({e}): run `{INSTALL}`",
                    self.program
                )
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name}: {method} {url} exited with {}:\n{}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        Reply::parse(&out.stdout).unwrap_or_else(|| {
            panic!(
                "{name}: {method} {url}: no STATUS or ERROR line in its output:\n{}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `tool args…`; fails naming the install script when the tool (or module) is missing.
/// Returns what it printed (stdout and stderr), e.g. a version.
async fn need(client: &Client, tool: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(o) => panic!(
            "{}: `{tool} {}` failed ({}): {} — run `{INSTALL}`",
            client.name,
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "{}: {tool} is not installed ({e}) — run `{INSTALL}`",
            client.name
        ),
    }
}

/// Hex SHA-256 over the toolchain's version and the named source files.
fn source_hash(dir: &Path, files: &[&str], toolchain: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(toolchain.as_bytes());
    for f in files {
        let text = std::fs::read(dir.join(f))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join(f).display()));
        hasher.update(f.as_bytes());
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(&text);
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

/// Builds into a fresh directory and renames it into place, so concurrent test runs never see
/// half a build; returns the cached directory.
async fn cached_build(
    tag: &str,
    hash: &str,
    build: impl FnOnce(&Path) -> tokio::process::Command,
) -> PathBuf {
    let root = cache_root();
    let done = root.join(format!("{tag}-{hash}"));
    if done.join(".complete").is_file() {
        return done;
    }
    let tmp = root.join(format!("{tag}-{hash}.tmp-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&tmp)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
    let started = Instant::now();
    let out = build(&tmp)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tag}: cannot start the build ({e}): run `{INSTALL}`"));
    assert!(
        out.status.success(),
        "{tag}: the client does not build:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(tmp.join(".complete"), b"").expect("mark the build complete");
    if std::fs::rename(&tmp, &done).is_err() {
        // Another run finished the same build first: use that one.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(
        done.join(".complete").is_file(),
        "{tag}: no build in {}",
        done.display()
    );
    eprintln!("{tag}: built the client in {:?}", started.elapsed());
    done
}

async fn build_go(src: &Path, version: &str) -> PathBuf {
    let hash = source_hash(src, &["go.mod", "main.go"], version);
    let gocache = cache_root().join("go-build");
    let src = src.to_path_buf();
    let dir = cached_build("go", &hash, move |out| {
        let mut cmd = tokio::process::Command::new("go");
        cmd.args(["build", "-trimpath", "-o"])
            .arg(out.join("client"))
            .arg(".")
            .current_dir(&src)
            // No module downloads (the client has no dependencies) and no toolchain switching.
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", &gocache);
        cmd
    })
    .await;
    dir.join("client")
}

async fn build_java(src: &Path, version: &str) -> PathBuf {
    let hash = source_hash(src, &["Client.java"], version);
    let file = src.join("Client.java");
    cached_build("java", &hash, move |out| {
        let mut cmd = tokio::process::Command::new("javac");
        cmd.arg("-d").arg(out).arg(&file);
        cmd
    })
    .await
}
