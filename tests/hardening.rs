//! What a hostile peer cannot do to a running proxy: hold connections with dribbled headers,
//! idle keep-alives, silent tunnels or a silent upstream; exhaust it with connections; keep
//! spending in a tunnel after its agent was removed or its limit lowered. Raw sockets, Python,
//! a real proxy process; all on 127.0.0.1.

mod common;

use common::process::Proxy;
use common::{python, Harness, Options};
use l402_proxy::agents::hash_key;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: (&str, &str) = ("alice", "alice-key");

/// Reads until the peer closes; how long that took (`None`: still open after `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn auth(creds: (&str, &str)) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1))
    )
}

/// Sends one authenticated free request on `stream` and reads the head of its answer.
async fn free_request(stream: &mut TcpStream, h: &Harness) -> String {
    stream
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: {}\r\n\r\n",
                h.http_url("/free/x"),
                auth(ALICE)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn quick(http: &str) -> Options {
    Options {
        http_yaml: http.to_string(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_headers_and_idle_keep_alives_are_closed() {
    let h = Harness::with(quick("header_read_timeout_secs: 2")).await;
    // Slowloris: one byte every 400 ms never completes a head in time.
    let mut slow = TcpStream::connect(h.proxy).await.unwrap();
    let head = format!("GET {} HTTP/1.1\r\nHost: x\r\n", h.http_url("/free/x"));
    let started = Instant::now();
    let mut closed = false;
    for b in head.bytes().chain(std::iter::repeat(b'a')) {
        if slow.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(400), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed,
        "a dribbling client is still connected after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // A keep-alive connection that goes quiet after one answered request is closed too.
    let mut idle = TcpStream::connect(h.proxy).await.unwrap();
    assert!(free_request(&mut idle, &h)
        .await
        .starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut idle, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500)),
        "{took:?}"
    );

    // A client that only connects and sends nothing is closed as well.
    let mut silent = TcpStream::connect(h.proxy).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(6)).await;
    assert!(took.is_some(), "a silent connection is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tunnels_and_a_silent_upstream_time_out() {
    // A server that accepts and never answers.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let h = Harness::with(Options {
        http_yaml: "tls_handshake_timeout_secs: 2, tunnel_idle_timeout_secs: 2, upstream_response_timeout_secs: 2".into(),
        intercept: vec!["localhost".into()],
        extra_allow: vec![format!("127.0.0.1:{mute_port}")],
        ..Options::default()
    })
    .await;
    let connect = |host: String| {
        let proxy = h.proxy;
        async move {
            let mut s = TcpStream::connect(proxy).await.unwrap();
            s.write_all(
                format!(
                    "CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: {}\r\n\r\n",
                    auth(ALICE)
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            s
        }
    };
    // Intercepted: no TLS hello within tls_handshake_timeout_secs.
    let mut t = connect(format!("localhost:{}", h.seller.https.port())).await;
    let took = closed_within(&mut t, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500)),
        "{took:?}"
    );
    // Blind: nothing moves for tunnel_idle_timeout_secs.
    let mut t = connect(format!("127.0.0.1:{}", h.seller.https.port())).await;
    let took = closed_within(&mut t, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500)),
        "{took:?}"
    );
    // An upstream that never answers: 504 after upstream_response_timeout_secs.
    let started = Instant::now();
    let r = h
        .get(ALICE, &format!("http://127.0.0.1:{mute_port}/x"))
        .await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.body.contains("upstream_response_timeout_secs"),
        "{}",
        r.body
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_the_excess_at_accept() {
    let h = Harness::with(quick(
        "max_connections: 8, max_unauthenticated_per_source: 3",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(h.proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fourth unauthenticated connection from this source is admitted; the oldest of the
    // three is closed to make room (a newcomer may be the agent itself).
    let mut fourth = TcpStream::connect(h.proxy).await.unwrap();
    let took = closed_within(&mut held[0], Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
    assert!(free_request(&mut fourth, &h)
        .await
        .starts_with("HTTP/1.1 200"));
    held[0] = fourth;
    // Authenticated connections up to 8 in all (two of them still silent).
    for _ in 0..5 {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        assert!(free_request(&mut s, &h).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    assert_eq!(h.shared.admission.open(), 8);
    // Full: each newcomer closes the oldest connection that has not authenticated.
    for silent in [1, 2] {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        let took = closed_within(&mut held[silent], Duration::from_secs(2)).await;
        assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
        assert!(free_request(&mut s, &h).await.starts_with("HTTP/1.1 200"));
        held[silent] = s;
    }
    // Full of authenticated connections: a newcomer is refused at accept.
    let mut refused = TcpStream::connect(h.proxy).await.unwrap();
    let took = closed_within(&mut refused, Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
    drop(held);
    let metrics = h.shared.metrics_text();
    assert!(
        metrics.contains("l402_proxy_refused_connections_total{cap=\"max_connections\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "l402_proxy_unauthenticated_closed_total{why=\"max_unauthenticated_per_source\"} 1"
    ));
    assert!(metrics.contains("l402_proxy_unauthenticated_closed_total{why=\"max_connections\"} 2"));
}

/// Keeps `n` attacker connections of one kind open to `proxy` (reconnecting whenever the proxy
/// closes one) until `stop`: `idle` (connect, send nothing), `slowloris` (one byte of a head
/// every 200 ms) or `connect` (credential-less CONNECTs, again and again).
fn flood(
    proxy: std::net::SocketAddr,
    kind: &'static str,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    (0..n)
        .map(|_| {
            let (stop, opened) = (stop.clone(), opened.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(proxy).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 1024];
                    let head = b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                    let mut i = 0;
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let wrote = match kind {
                            "slowloris" => {
                                let b = head.get(i).copied().unwrap_or(b'a');
                                i += 1;
                                s.write_all(&[b]).await.is_ok()
                            }
                            "connect" => s
                                .write_all(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
                                .await
                                .is_ok(),
                            _ => true,
                        };
                        if !wrote {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                    }
                }
            })
        })
        .collect()
}

/// The issue's attack, on a real proxy process with its default caps: from the agent's own
/// address (127.0.0.1, as every sidecar and every agent behind a NAT shares one), floods of
/// idle, slowloris and credential-less CONNECT connections, more than
/// `max_unauthenticated_per_source` (256) of them, each reopened as soon as the proxy closes
/// it. The agent keeps being served on new connections, each request within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_from_the_agents_address_never_lock_it_out() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = common::temp_dir("flood");
    let config = process_config(&dir, "");
    let proxy = Proxy::start(&config, &dir.join("proxy.log"), "t");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.port));
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for kind in ["idle", "slowloris", "connect"] {
        tasks.extend(flood(addr, kind, 100, stop.clone(), opened.clone()));
    }
    // Let the flood fill the source's unauthenticated places.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let request = format!(
        "GET http://l402-proxy.local/balance HTTP/1.1\r\nHost: l402-proxy.local\r\nProxy-Authorization: {}\r\n\r\n",
        auth(ALICE)
    );
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            let mut agent = TcpStream::connect(addr).await?;
            agent.write_all(request.as_bytes()).await?;
            let mut buf = [0u8; 2048];
            let n = agent.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .await;
        let answer = match answer {
            Ok(Ok(a)) => a,
            other => panic!(
                "after {served} served, {} attacker connections: {other:?} after {:?}",
                opened.load(Ordering::Relaxed),
                t.elapsed()
            ),
        };
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "after {served} served, {} attacker connections: {answer:?}",
            opened.load(Ordering::Relaxed)
        );
        slowest = slowest.max(t.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let flood_connections = opened.load(Ordering::Relaxed);
    eprintln!(
        "flood of 300 (100 idle, 100 slowloris, 100 credential-less CONNECT) from the agent's address: {flood_connections} attacker connections in 6 s; the agent was served {served} times, the slowest in {slowest:?}"
    );
    assert!(served >= 40, "{served}");
    assert!(
        flood_connections > 300,
        "the flood ran: {flood_connections}"
    );
}

/// The proxy process's resident memory and open descriptors.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (kib, fds)
}

fn process_config(dir: &Path, http: &str) -> std::path::PathBuf {
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store: {{ path: ledger.db }}
http: {{ {http} }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}" }}
"#,
        secret = common::SECRET,
        alice = hash_key("alice-key"),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Opens `n` connections to `port`, each with half a request line sent.
async fn half_sent(port: u16, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        let _ = s
            .write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: ")
            .await;
        out.push(s);
    }
    out
}

/// How many of `streams` the proxy has closed (read returns EOF or an error at once).
async fn count_closed(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    let mut buf = [0u8; 64];
    for s in streams.iter_mut() {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(2), s.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_half_sent_requests_are_bounded_and_released() {
    let dir = common::temp_dir("conn-load");
    let config = process_config(
        &dir,
        "header_read_timeout_secs: 15, auth_timeout_secs: 30, max_connections: 20000, max_unauthenticated_per_source: 20000",
    );
    let proxy = Proxy::start(&config, &dir.join("proxy.log"), "t");
    let pid = proxy.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_and_fds(pid);
    let started = Instant::now();
    let mut conns = half_sent(proxy.port, 5000).await;
    let opened = conns.len();
    // Wait for the proxy to take them all off its accept queue.
    let mut during = rss_and_fds(pid);
    while during.1 < before.1 + opened && started.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        during = rss_and_fds(pid);
    }
    let open_during = during.1.saturating_sub(before.1);
    // The header timeout lets every one of them go.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut closed = 0;
    while Instant::now() < deadline {
        closed = count_closed(&mut conns).await.max(closed);
        if closed == opened {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released_after = started.elapsed();
    drop(conns);
    // The proxy gives the memory back within a few seconds of the crowd leaving.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_and_fds(pid);
    eprintln!(
        "5000 half-sent requests: RSS before {} KiB, during {} KiB ({} connections held), after {} KiB; fds {} → {} → {}; all released after {:?}",
        before.0, during.0, open_during, after.0, before.1, during.1, after.1, released_after
    );
    assert_eq!(opened, 5000);
    assert!(open_during >= 4900, "the proxy held {open_during} of them");
    assert_eq!(
        closed, opened,
        "every half-sent request is closed by the header timeout"
    );
    assert!(
        after.1 <= before.1 + 5,
        "descriptors back: {} → {}",
        before.1,
        after.1
    );
    assert!(during.0 < 256 * 1024, "RSS under load {} KiB", during.0);
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(
            after.0 < before.0 + 16 * 1024,
            "memory given back: {} → {} KiB",
            before.0,
            after.0
        );
    }

    // With the default per-source cap a single source holds at most 256 of them.
    drop(proxy);
    let dir = common::temp_dir("conn-cap");
    let config = process_config(&dir, "header_read_timeout_secs: 30, auth_timeout_secs: 30");
    let proxy = Proxy::start(&config, &dir.join("proxy.log"), "t");
    let pid = proxy.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_and_fds(pid);
    let mut conns = half_sent(proxy.port, 2000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_and_fds(pid);
    let refused = count_closed(&mut conns).await;
    eprintln!(
        "2000 from one source under the default cap: {} closed (the oldest, evicted); RSS {} → {} KiB; fds {} → {}",
        refused, before.0, during.0, before.1, during.1
    );
    assert_eq!(
        refused,
        2000 - 256,
        "all beyond max_unauthenticated_per_source (the oldest are closed)"
    );
    assert!(during.1 <= before.1 + 256 + 5);
}

/// A config reload that removes an agent, or lowers its limit, reaches the tunnel it already
/// has open: the next request in it is refused (and the removed agent's tunnel closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_tunnels_that_are_already_open() {
    let h = Harness::with(Options {
        extra_agents: vec![("dave".into(), "{}".into())],
        ..Options::default()
    })
    .await;
    let old = l402_proxy::config::Config::load(&h.dir.join("config.yaml")).unwrap();
    let mark = h.dir.join("reloaded");
    let script = r#"
import base64, http.client, json, os, time
def tunnel(user):
    auth = "Basic " + base64.b64encode((user + ":" + user + "-key").encode()).decode()
    host, port = os.environ["PROXY"].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=20)
    c.set_tunnel("127.0.0.1", int(os.environ["HTTP_PORT"]), headers={"Proxy-Authorization": auth})
    return c
def get(c, path):
    try:
        c.request("GET", path)
        r = c.getresponse()
        return [r.status, r.getheader("x-l402-proxy-decline"), r.read().decode()[:60]]
    except Exception as e:
        return "closed: " + type(e).__name__
dave, alice = tunnel("dave"), tunnel("alice")
out = {"dave_before": get(dave, "/d1/x"), "alice_before": get(alice, "/a1/x")}
open(os.environ["READY"], "w").close()
while not os.path.exists(os.environ["MARK"]):
    time.sleep(0.02)
out["dave_after"] = get(dave, "/d2/x")
out["alice_after"] = get(alice, "/a2/x")
print(json.dumps(out))
"#;
    let ready = h.dir.join("ready");
    let env = vec![
        ("PROXY", h.proxy.to_string()),
        ("HTTP_PORT", h.seller.http.port().to_string()),
        ("MARK", mark.display().to_string()),
        ("READY", ready.display().to_string()),
    ];
    let run = tokio::spawn(async move { python(script, &env).await });
    while !ready.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // dave removed; alice's per_request_sats lowered below the 10-sat price.
    let text = std::fs::read_to_string(h.dir.join("config.yaml")).unwrap();
    let lowered = text
        .replace(
            "limits: { per_request_sats: 1000 }",
            "limits: { per_request_sats: 5 }",
        )
        .lines()
        .take_while(|l| !l.contains("name: dave"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(h.dir.join("config.yaml"), lowered + "\n").unwrap();
    let new = l402_proxy::config::Config::load(&h.dir.join("config.yaml")).unwrap();
    assert!(new.agents.iter().all(|a| a.name != "dave"));
    h.app.reload(&old, &new).await;
    std::fs::write(&mark, "").unwrap();
    let out = run.await.unwrap();
    assert_eq!(out["dave_before"][0], 200, "{out}");
    assert_eq!(out["alice_before"][0], 200, "{out}");
    let dave = &out["dave_after"];
    assert!(
        dave[0] == 407 || dave.as_str().is_some_and(|s| s.starts_with("closed")),
        "a removed agent's tunnel serves nothing more: {out}"
    );
    assert_eq!(out["alice_after"][0], 402, "{out}");
    assert_eq!(out["alice_after"][1], "over-per-request-limit", "{out}");
    assert_eq!(h.payments(), 2, "nothing paid after the reload");
}

/// The upstream sees the request target's authority as `Host`, whatever the agent wrote; a port
/// that is not one is a 400, never the scheme's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_port_are_the_request_targets() {
    let h = Harness::start().await;
    let r = h
        .curl(
            Some(ALICE),
            &h.http_url("/inspect/x"),
            &["-H", "Host: internal.example"],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let expected = format!("host: 127.0.0.1:{}", h.seller.http.port());
    assert!(
        r.body.to_ascii_lowercase().contains(&expected),
        "{expected} in {}",
        r.body
    );
    assert!(!r.body.contains("internal.example"), "{}", r.body);
    for (line, what) in [
        ("GET http://127.0.0.1:99999/ HTTP/1.1", "absolute-form"),
        ("GET http://127.0.0.1:0/ HTTP/1.1", "port 0"),
        ("CONNECT 127.0.0.1:99999 HTTP/1.1", "CONNECT"),
    ] {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        s.write_all(
            format!(
                "{line}\r\nHost: 127.0.0.1\r\nProxy-Authorization: {}\r\n\r\n",
                auth(ALICE)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head}");
        assert!(head.contains("invalid port"), "{what}: {head}");
    }
}

/// A token the server cannot take (431) is dropped, so it cannot break every later request
/// to that origin; the next request buys a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_answered_431_is_dropped() {
    let h = Harness::start().await;
    let first = h.get(ALICE, &h.http_url("/fragile/x")).await;
    assert!(first.paid(), "{first:?}");
    let refused = h.get(ALICE, &h.http_url("/fragile/x")).await;
    assert_eq!(refused.status, 431, "{refused:?}");
    assert_eq!(h.shared.layer.tokens().len(), 0, "dropped");
    let again = h.get(ALICE, &h.http_url("/fragile/x")).await;
    assert!(
        again.paid(),
        "the dropped token is not sent again: {again:?}"
    );
    assert_eq!(h.payments(), 2);
}

/// With `admin.metrics_token_env`, `/metrics` (it names agents and their spend) needs that
/// token or the admin token; without it, it stays open for scrapers.
#[test]
fn metrics_can_require_a_token() {
    let dir = common::temp_dir("metrics-token");
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: "127.0.0.1:0", token_env: L402_PROXY_ADMIN_TOKEN, metrics_token_env: L402_TEST_METRICS_TOKEN }}
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem }}
wallet: {{ backend: dev, dev: {{ secret: {secret} }} }}
store: {{ path: ledger.db }}
shutdown_grace_secs: 1
agents:
  - {{ name: alice, key_sha256: "{alice}" }}
"#,
        secret = common::SECRET,
        alice = hash_key("alice-key"),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let proxy = Proxy::start_with(
        &config,
        &dir.join("proxy.log"),
        "admin-t",
        &[],
        &[("L402_TEST_METRICS_TOKEN", "scrape-t")],
    );
    let get = |token: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.arg(format!("http://127.0.0.1:{}/metrics", proxy.admin));
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    assert_eq!(get(None), "401");
    assert_eq!(get(Some("wrong")), "401");
    assert_eq!(get(Some("scrape-t")), "200");
    assert_eq!(get(Some("admin-t")), "200");
}

/// DNS rebinding: a page whose name resolves to the admin address sends its own name as
/// `Host`. Only the listener's own names are answered (421 otherwise), on every path; and the
/// admin listener holds at most `admin.max_connections` connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_only_its_names_and_caps_connections() {
    let h = Harness::with(Options {
        admin_token: Some("admin-token".into()),
        extra_yaml: "admin: { hosts: [\"l402-admin.example.internal\"], max_connections: 4 }\n"
            .into(),
        ..Options::default()
    })
    .await;
    let port = h.admin.unwrap().port();
    for path in ["/metrics", "/", "/healthz", "/readyz", "/v1/status"] {
        let evil = format!("Host: rebound.attacker.example:{port}");
        let r = h
            .admin(Some("admin-token"), "GET", path, &["-H", &evil])
            .await;
        assert_eq!(r.status, 421, "{path}: {r:?}");
        assert!(r.body.contains("admin.hosts"), "{}", r.body);
        assert!(
            !r.body.contains("l402_proxy_"),
            "metrics leaked: {}",
            r.body
        );
    }
    for good in [
        format!("Host: 127.0.0.1:{port}"),
        format!("Host: localhost:{port}"),
        "Host: L402-admin.example.internal".to_string(),
    ] {
        let r = h.admin(None, "GET", "/metrics", &["-H", &good]).await;
        assert_eq!(r.status, 200, "{good}: {r:?}");
        // On loopback /metrics stays open without a token, as scrapers expect.
        assert!(r.body.contains("l402_proxy_"), "{good}");
    }

    // The cap: four idle connections are held; the fifth is closed at accept.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let took = closed_within(&mut fifth, Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "{took:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = h.admin(Some("admin-token"), "GET", "/v1/status", &[]).await;
    assert_eq!(r.status, 200, "a place comes back when a connection closes");
}

/// A seller names its service with HTML, terminal escapes and a right-to-left override, and
/// makes it long: the approval card (`/v1/approvals`, which the dashboard shows) gets it
/// cleaned (U+FFFD for each control or bidi character) and capped, the host beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_chosen_names_reach_the_operator_cleaned_and_capped() {
    let hostile = format!(
        "<img src=x onerror=alert(1)>\u{202E}gnp.evil\u{1b}[2J\u{7}\u{2066}{}",
        "x".repeat(400)
    );
    let mut opts = Options {
        admin_token: Some("admin-token".into()),
        alice_limits: "{ approve_above_sats: 1 }".into(),
        extra_yaml: "approval: { timeout_secs: 20 }\n".into(),
        ..Options::default()
    };
    opts.seller
        .caveat_names
        .insert("svc-mark".into(), hostile.clone());
    let h = Harness::with(opts).await;
    let (proxy, url) = (h.proxy, h.http_url("/svc/mark/x"));
    let waiting = tokio::spawn(async move {
        common::proxied(proxy, ALICE, http::Method::GET, &url, bytes::Bytes::new()).await
    });
    let mut card = serde_json::Value::Null;
    for _ in 0..400 {
        let r = h
            .admin(Some("admin-token"), "GET", "/v1/approvals", &[])
            .await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if let Some(first) = v["approvals"].get(0) {
            card = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let service = card["service"]
        .as_str()
        .expect("a held payment with a service");
    assert!(
        service.starts_with(
            "<img src=x onerror=alert(1)>\u{FFFD}gnp.evil\u{FFFD}[2J\u{FFFD}\u{FFFD}xx"
        ),
        "{service:?}"
    );
    assert!(!service.chars().any(|c| c.is_control() || c == '\u{202E}'));
    assert_eq!(service.chars().count(), 128, "capped at 128 characters");
    assert_eq!(
        card["host"],
        format!("127.0.0.1:{}", h.seller.http.port()),
        "the host beside it"
    );
    let id = card["id"].as_str().unwrap().to_string();
    let r = h
        .admin(
            Some("admin-token"),
            "POST",
            &format!("/v1/approvals/{id}"),
            &["--data-binary", r#"{"approve": false}"#],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let answer = waiting.await.unwrap();
    assert!(answer.decline().is_some(), "{answer:?}");
    // The declines, as CSV: nothing a terminal or a spreadsheet would act on.
    let r = h
        .admin(Some("admin-token"), "GET", "/v1/declines?format=csv", &[])
        .await;
    assert!(
        !r.body
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202E}'),
        "{:?}",
        r.body
    );
}

/// A seller that answers every request with the same raw 402 head, on 127.0.0.1.
async fn raw_402_seller(head: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let head = head.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// One answer for a 402 too large or too odd to pay: the seller's own 402 (status and body),
/// `x-l402-proxy-decline: challenge-too-large`, nothing paid — whether the size is in the
/// number of challenge lines, one huge macaroon, or a token too long to send back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_402s_get_one_answer_and_are_not_paid() {
    let invoice = l402_proxy::demo::mint::DevInvoiceMinter::new(
        common::SECRET,
        l402_proxy::invoice::Network::Regtest,
    )
    .mint(l402_proxy::core::money::Msat::from_sats(10), "x", 600)
    .unwrap()
    .bolt11;
    let line = |token: &str| {
        format!("WWW-Authenticate: L402 macaroon=\"{token}\", invoice=\"{invoice}\"\r\n")
    };
    let small = "AgEEbHNhdAJCAAD".to_string() + &"A".repeat(40);
    let cases = [
        ("100 challenge lines", line(&small).repeat(100)),
        ("a 100 KB macaroon", line(&"A".repeat(100 * 1024))),
        ("a 5 KB token", line(&"A".repeat(5 * 1024))),
    ];
    let mut allow = Vec::new();
    let mut ports = Vec::new();
    for (_, lines) in &cases {
        let head = format!(
            "HTTP/1.1 402 Payment Required\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n{lines}\r\nseller's 402"
        );
        let port = raw_402_seller(head).await;
        allow.push(format!("127.0.0.1:{port}"));
        ports.push(port);
    }
    let h = Harness::with(Options {
        extra_allow: allow,
        ..Options::default()
    })
    .await;
    for ((what, _), port) in cases.iter().zip(ports) {
        let r = h.get(ALICE, &format!("http://127.0.0.1:{port}/x")).await;
        assert_eq!(r.status, 402, "{what}: {r:?}");
        assert_eq!(r.decline(), Some("challenge-too-large"), "{what}: {r:?}");
        assert_eq!(r.body, "seller's 402", "{what}: the seller's own 402");
    }
    assert_eq!(h.payments(), 0, "nothing paid");
}

/// A `407` closes its connection (a credential-less peer cannot hold it by asking again and
/// again), and a connection that never authenticates is closed after `http.auth_timeout_secs`
/// even while it keeps sending bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_closes_the_connection_and_authentication_has_a_deadline() {
    let h = Harness::with(quick("auth_timeout_secs: 1, header_read_timeout_secs: 30")).await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 407"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let took = closed_within(&mut s, Duration::from_secs(2)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(500)),
        "{took:?}"
    );

    // Slowloris within the header timeout, but never authenticated: closed at about 1 s.
    let mut slow = TcpStream::connect(h.proxy).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\nX-A: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await
        {
            closed = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(h
        .shared
        .metrics_text()
        .contains("l402_proxy_unauthenticated_closed_total{why=\"auth_timeout\"} 1"));
}
