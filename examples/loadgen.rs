//! A small closed-loop HTTP/1.1 load generator for the benchmark (bench/run.sh).
//!
//! It opens `-c` keep-alive connections and sends GETs back to back on each for `-d` seconds,
//! then prints one line of `key=value` figures. Four ways to reach the origin:
//!
//! - direct HTTP:  `--url http://127.0.0.1:8080/1k`
//! - direct HTTPS: `--url https://localhost:8443/1k --cacert origin-ca.pem`
//! - proxied HTTP: `--proxy 127.0.0.1:18402 --proxy-auth name:key --url http://…` (absolute-form
//!   request lines, as an agent's HTTP_PROXY client sends them)
//! - proxied HTTPS: `--proxy … --proxy-auth … --url https://localhost:PORT/1k --cacert proxy-ca.pem`
//!   (`CONNECT` once per connection, then TLS to whatever answers inside the tunnel)
//!
//! `--idle N` instead opens N connections one after the other, sends one request on each, keeps
//! them all open and idle, prints `ready N`, and holds them for `--hold` seconds.
//!
//! Only loopback addresses are accepted, for the origin and the proxy alike.
//!
//! Output: `requests` (measured, after the warm-up), `total` (every completed request, warm-up
//! included: divide a process's CPU delta over the whole run by this), `secs`, `rps`,
//! `p50_us`, `p99_us`, `errors` (failed requests or connections), `bad_status` (answers other
//! than `--expect-status`), `flagged` (answers carrying `--flag-header`).

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "closed-loop HTTP/1.1 load generator for bench/run.sh")]
struct Args {
    /// What to request, e.g. http://127.0.0.1:8080/1k or https://localhost:8443/1k.
    #[arg(long)]
    url: String,
    /// Send through this forward proxy (host:port on loopback).
    #[arg(long)]
    proxy: Option<String>,
    /// `name:key` for `Proxy-Authorization: Basic …`.
    #[arg(long)]
    proxy_auth: Option<String>,
    /// PEM file of the CA to trust for https URLs (the origin's CA direct, the proxy's CA via
    /// the proxy).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts (its requests count only in `total`).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Count answers that carry this header (e.g. x-l402-proxy-token: a payment happened).
    #[arg(long)]
    flag_header: Option<String>,
    /// Send exactly this many requests per connection, whatever the clock says (no warm-up).
    #[arg(long)]
    count: Option<u64>,
    /// Make every request's first path segment unique (`/weather/today` → `/weather-7/today`):
    /// on the L402 seller each request is then a new service, which the proxy must pay for.
    #[arg(long)]
    vary_service: bool,
    /// Idle mode: open this many connections, one request each, then hold them.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: seconds to hold the connections open before exiting.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
}

struct Target {
    uri: Uri,
    https: bool,
    host: String,
    port: u16,
    /// Where TCP goes: the proxy, or the origin.
    connect_to: SocketAddr,
    /// Absolute-form request target (plain HTTP through the proxy).
    absolute: bool,
    proxy_auth: Option<HeaderValue>,
    tls: Option<tokio_rustls::TlsConnector>,
    host_header: HeaderValue,
    vary_service: bool,
    sequence: std::sync::atomic::AtomicU64,
}

fn loopback(addr: &str) -> anyhow::Result<SocketAddr> {
    let a = addr
        .to_socket_addrs()?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| anyhow::anyhow!("{addr} is not a loopback address; refusing"))?;
    Ok(a)
}

impl Target {
    fn new(args: &Args) -> anyhow::Result<Target> {
        let uri: Uri = args.url.parse()?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("--url must be http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("--url has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let origin = loopback(&format!("{host}:{port}"))?;
        let connect_to = match &args.proxy {
            Some(p) => loopback(p)?,
            None => origin,
        };
        let proxy_auth = args.proxy_auth.as_ref().map(|a| {
            use base64::Engine;
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            );
            HeaderValue::from_str(&v).expect("header value")
        });
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            let path = args
                .cacert
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("https needs --cacert"))?;
            for cert in l402_proxy::tls::read_certificates(path)? {
                roots.add(cert)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        let host_header = HeaderValue::from_str(&format!("{host}:{port}"))?;
        Ok(Target {
            absolute: args.proxy.is_some() && !https,
            uri,
            https,
            host,
            port,
            connect_to,
            proxy_auth,
            tls,
            host_header,
            vary_service: args.vary_service,
            sequence: Default::default(),
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let uri = if self.vary_service {
            let n = self
                .sequence
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.uri.path().trim_start_matches('/');
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            let varied = format!("/{first}-{n}/{rest}");
            if self.absolute {
                let base = format!(
                    "{}://{}",
                    self.uri.scheme_str().unwrap_or("http"),
                    self.host_header.to_str().unwrap_or("")
                );
                Uri::try_from(format!("{base}{varied}")).expect("valid uri")
            } else {
                Uri::try_from(varied).expect("valid uri")
            }
        } else if self.absolute {
            self.uri.clone()
        } else {
            self.uri
                .path_and_query()
                .map(|p| Uri::from(p.clone()))
                .unwrap_or_else(|| Uri::from_static("/"))
        };
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(header::HOST, self.host_header.clone());
        if self.absolute {
            if let Some(auth) = &self.proxy_auth {
                req.headers_mut()
                    .insert(header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        req
    }

    /// A ready-to-use HTTP/1.1 connection: TCP, then CONNECT and/or TLS as needed.
    async fn connect(&self, proxied: bool) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let mut tcp = TcpStream::connect(self.connect_to).await?;
        tcp.set_nodelay(true)?;
        if !self.https {
            return handshake(tcp).await;
        }
        if proxied {
            let mut connect = format!(
                "CONNECT {h}:{p} HTTP/1.1\r\nHost: {h}:{p}\r\n",
                h = self.host,
                p = self.port
            );
            if let Some(auth) = &self.proxy_auth {
                connect.push_str(&format!("Proxy-Authorization: {}\r\n", auth.to_str()?));
            }
            connect.push_str("\r\n");
            tcp.write_all(connect.as_bytes()).await?;
            // Read the proxy's answer byte by byte up to the blank line, so no TLS byte is eaten.
            let mut head = Vec::with_capacity(128);
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tcp.read(&mut byte).await? == 0 {
                    anyhow::bail!("proxy closed the connection during CONNECT");
                }
                head.push(byte[0]);
                anyhow::ensure!(head.len() < 16384, "CONNECT answer too long");
            }
            let line = String::from_utf8_lossy(&head);
            anyhow::ensure!(
                line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"),
                "CONNECT refused: {}",
                line.lines().next().unwrap_or("")
            );
        }
        let name = ServerName::try_from(self.host.clone())?;
        let tls = self
            .tls
            .as_ref()
            .expect("tls config")
            .connect(name, tcp)
            .await?;
        handshake(tls).await
    }
}

async fn handshake<S>(io: S) -> anyhow::Result<SendRequest<Empty<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u32>,
    total: u64,
    errors: u64,
    bad_status: u64,
    flagged: u64,
}

/// Sends one request and reads the whole answer.
async fn one(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    expect: StatusCode,
    flag: Option<&header::HeaderName>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let res = sender.send_request(target.request()).await?;
    if res.status() != expect {
        tally.bad_status += 1;
    }
    if flag.is_some_and(|f| res.headers().contains_key(f)) {
        tally.flagged += 1;
    }
    res.into_body().collect().await?;
    Ok(())
}

async fn worker(
    target: Arc<Target>,
    proxied: bool,
    expect: StatusCode,
    flag: Option<header::HeaderName>,
    measure_from: Instant,
    end: Instant,
    count: Option<u64>,
) -> Tally {
    let mut tally = Tally::default();
    let done = |t: &Tally, now: Instant| match count {
        Some(n) => t.total >= n,
        None => now >= end,
    };
    'connections: while !done(&tally, Instant::now()) {
        let mut sender = match target.connect(proxied).await {
            Ok(s) => s,
            Err(e) => {
                if tally.errors == 0 {
                    eprintln!("loadgen: connect failed: {e:#}");
                }
                tally.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        loop {
            let t0 = Instant::now();
            if done(&tally, t0) {
                break 'connections;
            }
            if let Err(e) = one(&mut sender, &target, expect, flag.as_ref(), &mut tally).await {
                if tally.errors == 0 {
                    eprintln!("loadgen: request failed: {e:#}");
                }
                tally.errors += 1;
                continue 'connections;
            }
            tally.total += 1;
            if t0 >= measure_from {
                let ns = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                tally.latencies_ns.push(ns);
            }
        }
    }
    tally
}

fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

async fn load(args: Args, target: Arc<Target>) -> anyhow::Result<()> {
    let proxied = args.proxy.is_some();
    let expect = StatusCode::from_u16(args.expect_status)?;
    let flag = match &args.flag_header {
        Some(h) => Some(header::HeaderName::from_bytes(h.as_bytes())?),
        None => None,
    };
    let start = Instant::now();
    let warmup = if args.count.is_some() {
        0.0
    } else {
        args.warmup
    };
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            tokio::spawn(worker(
                target.clone(),
                proxied,
                expect,
                flag.clone(),
                measure_from,
                end,
                args.count,
            ))
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_ns.extend_from_slice(&t.latencies_ns);
        all.total += t.total;
        all.errors += t.errors;
        all.bad_status += t.bad_status;
        all.flagged += t.flagged;
    }
    let secs = if args.count.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        args.duration
    };
    let mut lat = all.latencies_ns;
    lat.sort_unstable();
    println!(
        "requests={} total={} secs={:.2} rps={:.0} p50_us={:.1} p99_us={:.1} errors={} bad_status={} flagged={}",
        lat.len(),
        all.total,
        secs,
        lat.len() as f64 / secs,
        percentile_us(&lat, 0.50),
        percentile_us(&lat, 0.99),
        all.errors,
        all.bad_status,
        all.flagged
    );
    Ok(())
}

async fn idle(args: Args, target: Arc<Target>, n: usize) -> anyhow::Result<()> {
    let proxied = args.proxy.is_some();
    let expect = StatusCode::from_u16(args.expect_status)?;
    let mut held = Vec::with_capacity(n);
    let mut tally = Tally::default();
    for _ in 0..n {
        let mut sender = target.connect(proxied).await?;
        one(&mut sender, &target, expect, None, &mut tally).await?;
        held.push(sender);
    }
    println!("ready {} bad_status={}", held.len(), tally.bad_status);
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let alive = held.iter().filter(|s| !s.is_closed()).count();
    println!("done alive={alive}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = Arc::new(Target::new(&args)?);
    // One thread: the generator shares its core with the origin (taskset -c 1).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.idle {
            Some(n) => idle(args, target, n).await,
            None => load(args, target).await,
        }
    })
}
