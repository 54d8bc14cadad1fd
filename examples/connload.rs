//! Connection load for bench/connections.sh: opens many connections to the proxy at once, holds
//! them, and watches until the proxy closes them (its header-read timeout) or `--wait` runs out.
//!
//! Modes:
//!
//! - `--mode idle`: each connection sends one authenticated absolute-form `GET --url`
//!   (`Proxy-Authorization: Basic …` from `--proxy-auth`), reads the whole answer (it must be
//!   200) and then sits idle, keep-alive.
//! - `--mode slowloris`: each connection sends the first bytes of a request line
//!   (`GET http://…/x HTT`) and never finishes it.
//!
//! At most `--concurrency` connections are being opened at any moment, and at most `--rate` a
//! second (so the listen backlog never overflows into SYN retransmissions). Once all N are open it prints
//! `ready opened=… failed=… open=… ramp_s=…` (flushed: the script samples /proc then), waits for
//! the proxy to close them, and prints one `done …` line:
//!
//! - `refused`: closed by the proxy within `--refused-secs` of being opened (closed at accept:
//!   a per-source or global cap);
//! - `closed`: closed by the proxy later (the header-read / keep-alive timeout);
//! - `still_open`: open when `--wait` seconds after `ready` ran out (then closed by us);
//! - `life_min_s`/`life_max_s`: for `closed`, time from the end of the connection's own last
//!   write (idle: the answer read; slowloris: the partial line sent) to the proxy's close;
//! - `all_closed_s`: seconds from `ready` until the last connection closed (empty if some stayed).
//!
//! `--probe-from IP` (with `--proxy-auth`): once all are open, one authenticated request from
//! that source address (e.g. 127.0.0.2: another source on loopback) is sent and its status
//! printed as `probe status=… ms=…` (a per-source cap must not shut other sources out).
//!
//! Only loopback addresses are accepted.

use clap::{Parser, ValueEnum};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Idle,
    Slowloris,
}

#[derive(Parser, Debug)]
#[command(about = "many concurrent idle or half-sent connections through the proxy")]
struct Args {
    /// The proxy, host:port on loopback.
    #[arg(long)]
    proxy: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Connections to open.
    #[arg(short = 'n', long)]
    connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// At most this many connections opened per second (0: as fast as `--concurrency` allows).
    /// A half-sent request completes at once on our side, whether or not the proxy has accepted
    /// the connection yet: without a rate, the listen backlog fills and the kernel drops SYNs,
    /// which come back only after a 1 s retransmission.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Absolute URL of the request (plain http, loopback), e.g. http://127.0.0.1:8080/free/x.
    #[arg(long)]
    url: String,
    /// `name:key` for `Proxy-Authorization: Basic …` (idle mode and the probe).
    #[arg(long)]
    proxy_auth: Option<String>,
    /// Bind every connection to this source address (default: the kernel's choice).
    #[arg(long)]
    source: Option<IpAddr>,
    /// After `ready`, wait at most this many seconds for the proxy to close the connections.
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
    /// A connection the proxy closes within this many seconds of its opening counts as refused.
    #[arg(long, default_value_t = 1.0)]
    refused_secs: f64,
    /// Once all are open, send one authenticated request from this source address.
    #[arg(long)]
    probe_from: Option<IpAddr>,
}

fn loopback(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| anyhow::anyhow!("{addr} is not a loopback address; refusing"))
}

async fn connect(proxy: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if proxy.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(proxy).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one HTTP/1.1 answer (Content-Length or chunked) and returns its status.
async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        anyhow::ensure!(buf.len() < 65536, "answer head too long");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut body = buf.len() - head_end;
    if let Some(len) = length {
        while body < len {
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "closed inside the body");
            body += n;
        }
    } else if chunked {
        // Enough for the small answers used here: read until the last-chunk marker.
        while !buf.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "closed inside the chunked body");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(status)
}

/// Waits until the peer closes (EOF or an error); anything it sends is discarded.
async fn until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

struct Request {
    full: Vec<u8>,
    partial: Vec<u8>,
}

impl Request {
    fn new(args: &Args) -> anyhow::Result<Request> {
        let uri: http::Uri = args.url.parse()?;
        anyhow::ensure!(uri.scheme_str() == Some("http"), "--url must be http://");
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("--url has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        loopback(&format!("{host}:{port}"))?;
        let mut full = format!("GET {} HTTP/1.1\r\nHost: {host}:{port}\r\n", args.url);
        if let Some(a) = &args.proxy_auth {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(a);
            full.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
        }
        full.push_str("\r\n");
        // A request line cut short: no HTTP version, no CRLF, never finished.
        let partial = format!("GET {} HTT", args.url);
        Ok(Request {
            full: full.into_bytes(),
            partial: partial.into_bytes(),
        })
    }
}

enum Opened {
    Ok,
    Failed(String),
}

/// Closed by the proxy: (seconds since it was opened, seconds since our last write, when).
type Closed = Option<(f64, f64, Instant)>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let proxy = loopback(&args.proxy)?;
    let request = Arc::new(Request::new(&args)?);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let open_now = Arc::new(AtomicUsize::new(0));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<Opened>();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let not_before = (args.rate > 0.0).then(|| {
            tokio::time::Instant::from_std(start) + Duration::from_secs_f64(i as f64 / args.rate)
        });
        let gate = gate.clone();
        let request = request.clone();
        let open_now = open_now.clone();
        let opened_tx = opened_tx.clone();
        let (mode, source) = (args.mode, args.source);
        tasks.push(tokio::spawn(async move {
            if let Some(t) = not_before {
                tokio::time::sleep_until(t).await;
            }
            let permit = gate.acquire_owned().await.expect("semaphore");
            let opened_at = Instant::now();
            let mut stream = match connect(proxy, source).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = opened_tx.send(Opened::Failed(format!("connect: {e}")));
                    return None;
                }
            };
            open_now.fetch_add(1, Ordering::Relaxed);
            let sent = match mode {
                Mode::Idle => match stream.write_all(&request.full).await {
                    Ok(()) => match read_answer(&mut stream).await {
                        Ok(200) => Ok(()),
                        Ok(s) => Err(format!("status {s}")),
                        Err(e) => Err(format!("{e:#}")),
                    },
                    Err(e) => Err(format!("write: {e}")),
                },
                // A refused connection may already be reset: the write failing is fine, the
                // close is what gets measured.
                Mode::Slowloris => {
                    let _ = stream.write_all(&request.partial).await;
                    Ok(())
                }
            };
            drop(permit);
            if let Err(e) = sent {
                open_now.fetch_sub(1, Ordering::Relaxed);
                let _ = opened_tx.send(Opened::Failed(e));
                return None;
            }
            let idle_from = Instant::now();
            let _ = opened_tx.send(Opened::Ok);
            until_closed(&mut stream).await;
            open_now.fetch_sub(1, Ordering::Relaxed);
            let now = Instant::now();
            Some((
                (now - opened_at).as_secs_f64(),
                (now - idle_from).as_secs_f64(),
                now,
            )) as Closed
        }));
    }
    drop(opened_tx);
    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
    // Each task reports exactly once (opened, or failed), long before it ends.
    for _ in 0..args.connections {
        let Some(o) = opened_rx.recv().await else {
            break;
        };
        match o {
            Opened::Ok => ok += 1,
            Opened::Failed(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let ready = Instant::now();
    println!(
        "ready opened={ok} failed={failed} open={} ramp_s={:.2}",
        open_now.load(Ordering::Relaxed),
        (ready - start).as_secs_f64()
    );
    if let Some(e) = &first_error {
        eprintln!("connload: first failure: {e}");
    }
    std::io::stdout().flush()?;

    if let (Some(ip), Some(_)) = (args.probe_from, &args.proxy_auth) {
        let t0 = Instant::now();
        let status = async {
            let mut s = connect(proxy, Some(ip)).await?;
            s.write_all(&request.full).await?;
            read_answer(&mut s).await
        }
        .await;
        match status {
            Ok(s) => println!(
                "probe from={ip} status={s} ms={:.1}",
                t0.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => println!("probe from={ip} status=error error={e:#}"),
        }
        std::io::stdout().flush()?;
    }

    let deadline = tokio::time::Instant::from_std(ready + Duration::from_secs_f64(args.wait));
    let (mut refused, mut closed, mut still_open) = (0usize, 0usize, 0usize);
    let (mut life_min, mut life_max) = (f64::INFINITY, 0f64);
    let mut last_close: Option<Instant> = None;
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(Ok(Some((since_open, since_write, at)))) => {
                if since_open < args.refused_secs {
                    refused += 1;
                } else {
                    closed += 1;
                    life_min = life_min.min(since_write);
                    life_max = life_max.max(since_write);
                }
                last_close = Some(last_close.map_or(at, |l: Instant| l.max(at)));
            }
            Ok(Ok(None)) => {} // failed to open: counted above
            Ok(Err(e)) => eprintln!("connload: task: {e}"),
            Err(_) => {
                still_open += 1;
                t.abort();
            }
        }
    }
    let all_closed = match (still_open, last_close) {
        (0, Some(l)) => format!("{:.2}", l.saturating_duration_since(ready).as_secs_f64()),
        (0, None) => "0.00".into(),
        _ => String::new(),
    };
    if closed == 0 {
        life_min = 0.0;
    }
    println!(
        "done refused={refused} closed={closed} still_open={still_open} life_min_s={life_min:.2} life_max_s={life_max:.2} all_closed_s={all_closed}"
    );
    Ok(())
}
