//! `l402-proxy demo`: a seller, the dev wallet, the proxy and its admin API in one process, on
//! embedded defaults, with one paid request sent through to show the whole flow. Everything it
//! needs lives in its data directory (`.l402-demo/` by default): the CA agents trust (kept from
//! run to run), the seller's ports (recorded and reused), the admin token, and a config that can
//! be run on its own. Each run starts with an empty ledger, so no token of an earlier run's
//! seller is restored.

pub mod lnbits;
pub mod macaroon;
pub mod mint;
pub mod seller;

use crate::admin::Admin;
use crate::agents::{basic_credentials, hash_key};
use crate::config::Config;
use crate::invoice::Network;
use crate::pay::headers::{PAID_MSAT_HEADER, TOKEN_HEADER};
use crate::proxy::Proxy;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mint::DevInvoiceMinter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The demo's agent name.
pub const DEMO_AGENT: &str = "demo";
/// The demo agent's key (public: a demo).
pub const DEMO_KEY: &str = "demo-key";
/// The seller's ports on a first run (later runs reuse whatever was recorded).
const SELLER_PORTS: (u16, u16) = (8480, 8443);

/// What `l402-proxy demo` was asked for.
pub struct DemoOptions {
    /// The proxy's listener.
    pub listen: SocketAddr,
    /// The admin API's listener; default: the proxy's port + 1000 (port 0 stays 0).
    pub admin_listen: Option<SocketAddr>,
    /// Where the CA, the config, the ports and the admin token are kept.
    pub data_dir: PathBuf,
    /// Exit after the scripted request instead of serving until Ctrl-C.
    pub once: bool,
}

/// The config the demo runs on, written out so a user can read and reuse it.
fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    seller: &seller::RunningSeller,
    seller_ca: &Path,
) -> String {
    format!(
        r#"# Written by `l402-proxy demo`: the proxy's config for this demo (reusable with
# `l402-proxy run --config` while `l402-proxy seller` serves on the same ports).
listen: {listen}
admin:
  listen: {admin}
  token_file: admin-token
tls:
  ca_cert: ca.pem
  ca_key: ca-key.pem
  intercept: ["*"]
  upstream_roots: ["{seller_ca}"]
guard:
  allow_private: false
  allow: ["127.0.0.1:{http}", "127.0.0.1:{https}", "localhost:{http}", "localhost:{https}"]
wallet:
  backend: dev
  network: regtest
  max_fee_sats: 10
store:
  path: l402-proxy.db
agents:
  - name: {agent}
    key_sha256: "{key}"
    limits: {{ per_request_sats: 1000, daily_sats: 5000 }}
"#,
        seller_ca = seller_ca.display(),
        http = seller.http.port(),
        https = seller.https.port(),
        agent = DEMO_AGENT,
        key = hash_key(DEMO_KEY),
    )
}

/// The seller's recorded ports, if any.
fn recorded_ports(dir: &Path) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(dir.join("seller-ports")).ok()?;
    let (a, b) = text.trim().split_once(' ')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Starts the seller on its recorded ports (first run: the defaults), falling back to free
/// ports when those are taken; records what it got. A proxy on port 0 (tests) gets a seller on
/// free ports, never recorded.
async fn start_seller(dir: &Path, ephemeral: bool) -> anyhow::Result<seller::RunningSeller> {
    let minter = DevInvoiceMinter::new(&crate::config::default_dev_secret(), Network::Regtest);
    let make = || seller::Seller::new(seller::SellerConfig::new(minter.clone()));
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if ephemeral {
        return seller::start(make(), lo).await;
    }
    let (http, https) = recorded_ports(dir).unwrap_or(SELLER_PORTS);
    let running = match seller::start_on(
        make(),
        SocketAddr::new(lo, http),
        SocketAddr::new(lo, https),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => seller::start(make(), lo).await?,
    };
    std::fs::write(
        dir.join("seller-ports"),
        format!("{} {}\n", running.http.port(), running.https.port()),
    )?;
    Ok(running)
}

/// The admin token: read from the data dir, or made and kept there (mode 0600).
fn admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let token = hex::encode(rand::random::<[u8; 16]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// Removes the previous run's ledger: a demo starts with no tokens of an earlier seller.
fn fresh_ledger(dir: &Path) {
    for name in [
        "l402-proxy.db",
        "l402-proxy.db-wal",
        "l402-proxy.db-shm",
        "l402-proxy.db.lock",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Runs the demo; returns whether the scripted paid request went 402 → paid → 200.
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;
    let ephemeral = opts.listen.port() == 0;
    let running = start_seller(&data_dir, ephemeral).await?;
    let seller_ca = data_dir.join("seller-ca.pem");
    std::fs::write(&seller_ca, &running.ca_pem)?;
    let admin_addr = opts.admin_listen.unwrap_or_else(|| {
        let port = match opts.listen.port() {
            0 => 0,
            p => p.saturating_add(1000),
        };
        SocketAddr::new(opts.listen.ip(), port)
    });
    let token = admin_token(&data_dir)?;
    let config_path = data_dir.join("demo-config.yaml");
    std::fs::write(
        &config_path,
        demo_config(opts.listen, admin_addr, &running, &seller_ca),
    )?;
    fresh_ledger(&data_dir);
    let config = Config::load(&config_path)?;
    let wallet = crate::wallet::from_config(&config)?;
    let app =
        crate::app::App::build(&config, wallet, Arc::new(crate::core::time::SystemClock)).await?;
    app.prepare().await?;
    let admin = Admin::new(app.shared.clone(), &token);
    admin.configure(&config.admin);
    admin
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {admin_addr} (admin API; try --admin-listen)")
        })?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_task = tokio::spawn(admin.clone().serve(admin_listener));
    let proxy = Proxy::bind(config.listen, app.shared.clone())
        .await
        .with_context(|| format!("cannot listen on {} (try --listen)", config.listen))?;
    let proxy_addr = proxy.local_addr()?;
    admin.proxy_bound(proxy_addr);
    let proxy_task = tokio::spawn(proxy.run());

    let url = format!("http://127.0.0.1:{}/weather/today", running.http.port());
    println!("l402-proxy demo");
    println!("  proxy      http://{proxy_addr}  (agent {DEMO_AGENT}, key {DEMO_KEY})");
    println!(
        "  seller     http://{}  https://localhost:{}  (10 sat per service)",
        running.http,
        running.https.port()
    );
    println!("  wallet     dev (simulated, regtest; no real money moves)");
    println!("  admin API  http://{admin_addr}  (token {token})");
    println!();
    println!("GET {url} through the proxy:");
    let first = get_through(proxy_addr, &url).await?;
    let paid = first.paid_msat.is_some();
    println!(
        "  upstream said 402 → proxy paid {} → {}",
        first
            .paid_msat
            .map_or("nothing".to_string(), |m| format!("{} sat", m / 1000)),
        first.status
    );
    println!("  body: {}", first.body.trim());
    let second = get_through(proxy_addr, &url).await?;
    println!(
        "  again: {} with the cached token (paid {})",
        second.status,
        second
            .paid_msat
            .map_or("nothing".to_string(), |m| format!("{} sat", m / 1000))
    );
    let ok = first.status == 200 && paid && second.status == 200 && second.paid_msat.is_none();
    println!("Config used: {}", config_path.display());
    if opts.once {
        proxy_task.abort();
        admin_task.abort();
        return Ok(ok);
    }
    let proxy_url = format!("http://{DEMO_AGENT}:{DEMO_KEY}@{proxy_addr}");
    println!();
    println!("Point an agent or curl at it (lower case: curl and wget read only http_proxy in lower case):");
    println!("  export https_proxy={proxy_url} http_proxy={proxy_url}");
    println!(
        "  curl -i --cacert {} https://localhost:{}/stocks/quote",
        data_dir.join("ca.pem").display(),
        running.https.port()
    );
    println!(
        "  curl -i http://127.0.0.1:{}/news/latest",
        running.http.port()
    );
    println!("The operator's view:");
    println!("  curl -H 'Authorization: Bearer {token}' http://{admin_addr}/v1/payments");
    println!("Serving until Ctrl-C.");
    tokio::signal::ctrl_c().await?;
    proxy_task.abort();
    admin_task.abort();
    Ok(ok)
}

struct DemoResponse {
    status: u16,
    paid_msat: Option<u64>,
    body: String,
}

/// A plain-HTTP GET sent through the proxy, absolute-form, as an agent's client would.
async fn get_through(proxy: SocketAddr, url: &str) -> anyhow::Result<DemoResponse> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri: http::Uri = url.parse()?;
    let req = http::Request::get(uri.clone())
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
        .header(
            http::header::PROXY_AUTHORIZATION,
            basic_credentials(DEMO_AGENT, DEMO_KEY),
        )
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let paid_msat = res
        .headers()
        .get(PAID_MSAT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|_| res.headers().get(TOKEN_HEADER).is_some_and(|t| t == "paid"));
    let body = res.into_body().collect().await?.to_bytes();
    Ok(DemoResponse {
        status,
        paid_msat,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
