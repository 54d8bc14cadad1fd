//! `l402-proxy demo`: a seller, the dev wallet and the proxy in one process, on embedded
//! defaults, with one paid request sent through to show the whole flow.

pub mod lnbits;
pub mod macaroon;
pub mod mint;
pub mod seller;

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

pub const DEMO_AGENT: &str = "demo";
pub const DEMO_KEY: &str = "demo-key";

pub struct DemoOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Exit after the scripted request instead of serving until Ctrl-C.
    pub once: bool,
}

/// The config the demo runs on, written out so a user can read and reuse it.
fn demo_config(opts: &DemoOptions, seller: &seller::RunningSeller, seller_ca: &Path) -> String {
    format!(
        r#"# Written by `l402-proxy demo`: the proxy's config for this demo run.
listen: {listen}
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
    limits: {{ per_request_sats: 1000 }}
"#,
        listen = opts.listen,
        seller_ca = seller_ca.display(),
        http = seller.http.port(),
        https = seller.https.port(),
        agent = DEMO_AGENT,
        key = hash_key(DEMO_KEY),
    )
}

/// Runs the demo; returns whether the scripted paid request went 402 → paid → 200.
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let secret = crate::config::default_dev_secret();
    let minter = DevInvoiceMinter::new(&secret, Network::Regtest);
    let running = seller::start(
        seller::Seller::new(seller::SellerConfig::new(minter)),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;
    let seller_ca = data_dir.join("seller-ca.pem");
    std::fs::write(&seller_ca, &running.ca_pem)?;
    let config_path = data_dir.join("demo-config.yaml");
    std::fs::write(&config_path, demo_config(&opts, &running, &seller_ca))?;
    let config = Config::load(&config_path)?;
    let wallet = crate::wallet::from_config(&config)?;
    let app =
        crate::app::App::build(&config, wallet, Arc::new(crate::core::time::SystemClock)).await?;
    app.prepare().await?;
    let proxy = Proxy::bind(config.listen, app.shared.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let proxy_addr = proxy.local_addr()?;
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
    println!();
    println!("Point an agent or curl at it:");
    println!("  export HTTPS_PROXY=http://{DEMO_AGENT}:{DEMO_KEY}@{proxy_addr} HTTP_PROXY=http://{DEMO_AGENT}:{DEMO_KEY}@{proxy_addr}");
    println!(
        "  curl -i --cacert {} https://localhost:{}/stocks/quote",
        data_dir.join("ca.pem").display(),
        running.https.port()
    );
    println!(
        "  curl -i http://127.0.0.1:{}/news/latest",
        running.http.port()
    );
    println!("Config used: {}", config_path.display());
    if opts.once {
        proxy_task.abort();
        return Ok(ok);
    }
    println!("Serving until Ctrl-C.");
    tokio::signal::ctrl_c().await?;
    proxy_task.abort();
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
