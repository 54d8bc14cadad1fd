//! Test harness: a real L402 seller (HTTP and HTTPS) and the proxy, both listening on
//! 127.0.0.1, and real clients (curl, Python requests, a hyper client) talking through it.
#![allow(dead_code)]

pub mod fleet;
pub mod lnbits;
pub mod pg_server;
pub mod policy;
pub mod process;
pub mod store;
pub mod webhooks;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use l402_proxy::admin::Admin;
use l402_proxy::agents::{basic_credentials, hash_key};
use l402_proxy::app::App;
use l402_proxy::config::Config;
use l402_proxy::core::money::Msat;
use l402_proxy::core::time::{Clock, ManualClock, SystemClock};
use l402_proxy::demo::mint::DevInvoiceMinter;
use l402_proxy::demo::seller::{self, RunningSeller, Seller, SellerConfig};
use l402_proxy::invoice::Network;
use l402_proxy::proxy::{Proxy, Shared};
use l402_proxy::wallet::dev::DevWallet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &str = "test-dev-secret";

/// What a test wants different from the defaults.
pub struct Options {
    /// When false, the guard has no allowance for the seller on loopback.
    pub allow_seller: bool,
    pub intercept: Vec<String>,
    /// Put the seller's CA in `tls.upstream_roots`.
    pub trust_seller: bool,
    pub max_body: usize,
    pub pay_delay: Duration,
    pub seller: SellerConfig,
    /// YAML flow maps for the agents' limits.
    pub alice_limits: String,
    pub bob_limits: String,
    /// YAML flow map for alice's `hosts` rules.
    pub alice_hosts: String,
    /// More agents: (name, limits); each one's key is `<name>-key`.
    pub extra_agents: Vec<(String, String)>,
    pub operator_limits: String,
    pub max_fee_sats: u64,
    /// Reuse a directory (CA, ledger) — for restarts.
    pub dir: Option<PathBuf>,
    pub reuse_seller: Option<Arc<RunningSeller>>,
    pub wallet: Option<Arc<DevWallet>>,
    pub clock: Option<Arc<ManualClock>>,
    /// Start the admin API with this bearer token.
    pub admin_token: Option<String>,
    /// The config's `wallet:` value (YAML flow mapping); when set, the proxy pays with the
    /// backend it names (built by `wallet::from_config`) instead of the dev wallet.
    pub wallet_yaml: Option<String>,
    /// `pay.schemes` (YAML flow list).
    pub pay_schemes: String,
    /// More `guard.allow` entries (`host:port`).
    pub extra_allow: Vec<String>,
    /// Top-level config sections added to the file (`alerts:`, `approval:` …).
    pub extra_yaml: String,
    /// More `http:` keys (`header_read_timeout_secs: 2, …`).
    pub http_yaml: String,
    /// How often the background watch looks (balance, store, stuck payments).
    pub watch_every: Option<l402_proxy::guardrails::watch::Intervals>,
    /// The config's `store:` value (YAML flow mapping); default: SQLite `ledger.db` in `dir`.
    pub store_yaml: Option<String>,
    /// `wallet.payment_timeout_secs` for the default dev wallet.
    pub payment_timeout_secs: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        let mut seller = SellerConfig::new(DevInvoiceMinter::new(SECRET, Network::Regtest));
        seller.prices.insert("pricey".into(), Msat::from_sats(5000));
        Options {
            allow_seller: true,
            intercept: vec!["*".into()],
            trust_seller: true,
            max_body: 1 << 20,
            pay_delay: Duration::ZERO,
            seller,
            alice_limits: "{ per_request_sats: 1000 }".into(),
            bob_limits: "{}".into(),
            alice_hosts: "{}".into(),
            extra_agents: Vec::new(),
            operator_limits: "{}".into(),
            max_fee_sats: 10,
            dir: None,
            reuse_seller: None,
            wallet: None,
            clock: None,
            admin_token: None,
            wallet_yaml: None,
            pay_schemes: "[l402, payment]".into(),
            extra_allow: Vec::new(),
            extra_yaml: String::new(),
            http_yaml: String::new(),
            watch_every: None,
            store_yaml: None,
            payment_timeout_secs: None,
        }
    }
}

pub struct Harness {
    pub dir: PathBuf,
    own_dir: bool,
    pub proxy: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub seller: Arc<RunningSeller>,
    /// The dev wallet (idle when `Options::wallet_yaml` chose another backend).
    pub wallet: Arc<DevWallet>,
    pub shared: Arc<Shared>,
    pub app: App,
    task: tokio::task::JoinHandle<()>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// The PostgreSQL store the harness started for itself (`L402_TEST_STORE=postgres`).
    _store: Option<store::Backing>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = &self.admin_task {
            t.abort();
        }
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory under the temp dir for one test, removed (with everything in it) when the
/// guard drops; `keep` hands the path over to a caller that outlives the test.
pub fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("l402-test-{tag}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(Some(dir))
}

/// See [`temp_dir`].
pub struct TempDir(Option<PathBuf>);

impl TempDir {
    /// The path, no longer removed on drop.
    pub fn keep(mut self) -> PathBuf {
        self.0.take().expect("a live temp dir")
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.as_deref().expect("a live temp dir")
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Harness {
        let own_dir = opts.dir.is_none();
        // Under `L402_TEST_STORE=postgres`, a harness that names no store gets its own
        // PostgreSQL cluster; one that reuses a directory (a restart) keeps its SQLite file.
        let own_store = (opts.store_yaml.is_none()
            && own_dir
            && store::Store::from_env() == store::Store::Postgres)
            .then(|| store::backing(store::Store::Postgres));
        let dir = opts.dir.clone().unwrap_or_else(|| temp_dir("h").keep());
        let running = match opts.reuse_seller.clone() {
            Some(s) => s,
            None => Arc::new(
                seller::start(
                    Seller::new({
                        let mut config = opts.seller.clone();
                        if let Some(clock) = &opts.clock {
                            // One clock for seller and proxy: invoice dates follow the test's.
                            config.clock = clock.clone();
                        }
                        config
                    }),
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                )
                .await
                .unwrap(),
            ),
        };
        let seller_ca = dir.join("seller-ca.pem");
        std::fs::write(&seller_ca, &running.ca_pem).unwrap();
        let roots = if opts.trust_seller {
            format!("[\"{}\"]", seller_ca.display())
        } else {
            "[]".to_string()
        };
        let mut allowed: Vec<String> = opts.extra_allow.clone();
        if opts.allow_seller {
            let (h, s) = (running.http.port(), running.https.port());
            for host in ["127.0.0.1", "localhost"] {
                allowed.push(format!("{host}:{h}"));
                allowed.push(format!("{host}:{s}"));
            }
        }
        let allow = format!(
            "[{}]",
            allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let intercept = opts
            .intercept
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            r#"listen: 127.0.0.1:0
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem, intercept: [{intercept}], upstream_roots: {roots} }}
guard: {{ allow_private: false, allow: {allow} }}
wallet: {wallet_yaml}
http: {{ max_replay_body_bytes: {max_body}{http_yaml} }}
pay: {{ schemes: {schemes} }}
store: {store}
operator_limits: {operator}
{extra_yaml}
agents:
  - name: alice
    key_sha256: "{alice}"
    limits: {alice_limits}
    hosts: {alice_hosts}
  - name: bob
    key_sha256: "{bob}"
    limits: {bob_limits}
{extra}"#,
            max_body = opts.max_body,
            store = opts
                .store_yaml
                .clone()
                .or_else(|| own_store.as_ref().and_then(|b| b.yaml.clone()))
                .unwrap_or_else(|| "{ path: ledger.db }".into()),
            schemes = opts.pay_schemes,
            operator = opts.operator_limits,
            extra_yaml = opts.extra_yaml,
            http_yaml = if opts.http_yaml.is_empty() {
                String::new()
            } else {
                format!(", {}", opts.http_yaml)
            },
            wallet_yaml = opts.wallet_yaml.clone().unwrap_or_else(|| format!(
                "{{ backend: dev, network: regtest, max_fee_sats: {}, payment_timeout_secs: {}, dev: {{ secret: {SECRET} }} }}",
                opts.max_fee_sats,
                opts.payment_timeout_secs.unwrap_or(60)
            )),
            alice = hash_key("alice-key"),
            bob = hash_key("bob-key"),
            alice_limits = opts.alice_limits,
            alice_hosts = opts.alice_hosts,
            bob_limits = opts.bob_limits,
            extra = opts
                .extra_agents
                .iter()
                .map(|(name, limits)| format!(
                    "  - name: {name}\n    key_sha256: \"{}\"\n    limits: {limits}\n",
                    hash_key(&format!("{name}-key"))
                ))
                .collect::<String>(),
        );
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let config = Config::load(&path).unwrap();
        let wallet = opts.wallet.clone().unwrap_or_else(|| {
            let wallet = DevWallet::new(
                SECRET,
                Msat::from_sats(1_000_000),
                Msat::new(0),
                opts.pay_delay,
            );
            Arc::new(match &opts.clock {
                Some(clock) => wallet.with_clock(clock.clone()),
                None => wallet,
            })
        });
        let clock: Arc<dyn Clock> = match &opts.clock {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let paying: Arc<dyn l402_proxy::wallet::Wallet> = match opts.wallet_yaml {
            Some(_) => l402_proxy::wallet::from_config(&config).unwrap(),
            None => wallet.clone(),
        };
        let mut app = App::build(&config, paying, clock).await.unwrap();
        if let Some(every) = opts.watch_every {
            app.watch_every = every;
        }
        app.prepare().await.unwrap();
        let shared = app.shared.clone();
        let (admin, admin_task) = match &opts.admin_token {
            Some(token) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let admin = Admin::new(shared.clone(), token);
                admin.configure(&config.admin);
                admin
                    .ready
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                (
                    Some((addr, admin.clone())),
                    Some(tokio::spawn(admin.serve(listener))),
                )
            }
            None => (None, None),
        };
        let proxy = Proxy::bind(config.listen, shared.clone()).await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let admin = admin.map(|(admin_addr, admin)| {
            admin.proxy_bound(addr);
            admin_addr
        });
        let task = tokio::spawn(proxy.run());
        Harness {
            dir,
            own_dir,
            proxy: addr,
            admin,
            seller: running,
            wallet,
            shared,
            app,
            task,
            admin_task,
            _store: own_store,
        }
    }

    /// Stops the proxy and waits until its ledger is closed (its file lock released), as a
    /// process exit would: for in-process restarts on the same directory.
    pub async fn stop(self) {
        let ledger = Arc::downgrade(&self.shared.ledger);
        drop(self);
        for _ in 0..500 {
            if ledger.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the ledger of a stopped harness is still open after 5 s");
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn seller_ca(&self) -> PathBuf {
        self.dir.join("seller-ca.pem")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.seller.http.port())
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.seller.https.port())
    }

    pub fn proxy_url(&self, creds: Option<(&str, &str)>) -> String {
        match creds {
            Some((n, k)) => format!("http://{n}:{k}@{}", self.proxy),
            None => format!("http://{}", self.proxy),
        }
    }

    /// curl to the admin API, with the bearer token when given.
    pub async fn admin(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        extra: &[&str],
    ) -> Reply {
        let addr = self.admin.expect("harness started without admin");
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        if let Some(t) = token {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {t}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("http://{addr}{path}"));
        curl(&args).await
    }

    pub fn payments(&self) -> usize {
        self.wallet.settled_count()
    }

    /// curl through the proxy, trusting our CA.
    pub async fn curl(&self, creds: Option<(&str, &str)>, url: &str, extra: &[&str]) -> Reply {
        let mut args: Vec<String> = vec![
            "--proxy".into(),
            self.proxy_url(creds),
            "--cacert".into(),
            self.ca().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url.to_string());
        curl(&args).await
    }

    /// A hyper client sending one absolute-form request through the proxy on a new connection.
    pub async fn get(&self, creds: (&str, &str), url: &str) -> Reply {
        proxied(self.proxy, creds, http::Method::GET, url, Bytes::new()).await
    }
}

/// A response as a client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// For curl through CONNECT: the proxy's answer to CONNECT (0 when none).
    pub connect_status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn paid(&self) -> bool {
        self.header("x-l402-proxy-token") == Some("paid")
    }

    pub fn decline(&self) -> Option<&str> {
        self.header("x-l402-proxy-decline")
    }
}

/// Runs curl with the given arguments; returns the final response (after any CONNECT).
pub async fn curl(args: &[String]) -> Reply {
    let dir = temp_dir("curl");
    let (headers_file, body_file) = (dir.join("h"), dir.join("b"));
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-D"])
        .arg(&headers_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code} %{http_connect}"])
        .args(args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .await
        .expect("curl must be installed");
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let mut codes = written
        .split_whitespace()
        .map(|c| c.parse::<u16>().unwrap_or(0));
    let status = codes.next().unwrap_or(0);
    let connect_status = codes.next().unwrap_or(0);
    let raw_headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
    let body = std::fs::read_to_string(&body_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Reply {
        status,
        connect_status,
        headers: last_header_block(&raw_headers),
        body,
    }
}

fn last_header_block(raw: &str) -> HashMap<String, String> {
    let normalized = raw.replace("\r\n", "\n");
    let block = normalized
        .split("\n\n")
        .filter(|b| b.trim_start().starts_with("HTTP/"))
        .last()
        .unwrap_or("");
    block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// One absolute-form request through the proxy on a fresh connection.
pub async fn proxied(
    proxy: SocketAddr,
    creds: (&str, &str),
    method: http::Method,
    url: &str,
    body: Bytes,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri: http::Uri = url.parse().unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri(uri.clone())
        .header(http::header::HOST, uri.authority().unwrap().as_str())
        .header(
            http::header::PROXY_AUTHORIZATION,
            basic_credentials(creds.0, creds.1),
        )
        .body(Full::new(body))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        connect_status: 0,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Runs a Python snippet with the given environment; returns its stdout parsed as JSON.
pub async fn python(script: &str, env: &[(&str, String)]) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(script);
    for var in [
        "NO_PROXY",
        "no_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from python ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
