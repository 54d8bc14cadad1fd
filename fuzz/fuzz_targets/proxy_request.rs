//! The proxy's handling of what an agent sends, as raw bytes on a TCP connection: request line
//! and headers (hyper's parser), proxy authentication, absolute-form and CONNECT targets, the
//! destination guard, the proxy's own `l402-proxy.local` view, CONNECT tunnels and TLS
//! interception (a ClientHello, or plain HTTP inside the tunnel), upgrades, bodies.
//!
//! A real proxy is built once through the library (`App::build` + `Proxy::bind` + `run`, as
//! `tests/common/mod.rs` does) with a dev wallet and one agent (`fuzz`, key `fuzz-key`),
//! listening on 127.0.0.1:0. Each input is written to a new connection, answers are read
//! while they come, then the write side is closed, whatever follows is read for a short while
//! (1.5 s at most per input), and the connection is reset.
//!
//! The server runs in other threads: a panic there would be caught by tokio and never seen by
//! libFuzzer, so a panic hook aborts the process on any panic, in any thread.
//!
//! Network: the guard refuses loopback and private destinations (`allow_private: false`, no
//! `allow` entry, checked below), but it lets agents reach public addresses, and inputs name
//! hosts and IP literals at will. So before anything else the process moves into a network
//! namespace of its own (`unshare(CLONE_NEWNET)`, as root) where the only interface is
//! loopback: every upstream connection and DNS query of the proxy fails at once (network
//! unreachable) and nothing leaves the machine. Without that namespace the target refuses
//! to run.
#![no_main]

use l402_proxy::agents::hash_key;
use l402_proxy::app::App;
use l402_proxy::config::Config;
use l402_proxy::core::money::Msat;
use l402_proxy::core::time::SystemClock;
use l402_proxy::proxy::Proxy;
use l402_proxy::wallet::dev::DevWallet;
use libfuzzer_sys::fuzz_target;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long one input may keep its connection before it is reset.
const READ_FOR: Duration = Duration::from_millis(1500);
/// How long the first bytes of an answer are waited for before the write side is closed.
const ANSWER_WAIT: Duration = Duration::from_millis(40);
/// How long a silence after some answer ends the wait (more answers: CONNECT, pipelining).
const ANSWER_IDLE: Duration = Duration::from_millis(10);

struct Running {
    addr: SocketAddr,
    // Kept alive (and reachable, so LeakSanitizer does not report them) for the process.
    _app: App,
    _runtime: tokio::runtime::Runtime,
}

static RUNNING: OnceLock<Running> = OnceLock::new();
static DIR: OnceLock<PathBuf> = OnceLock::new();

fn die(what: &str) -> ! {
    eprintln!("proxy_request fuzz target: {what}");
    std::process::abort()
}

/// Aborts on a panic in any thread (libfuzzer-sys installs the same for the fuzzing thread's
/// sake; this one is chained before the proxy starts, so it holds whatever ran first).
fn abort_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!(
            "proxy_request fuzz target: panic in thread {:?}: aborting",
            std::thread::current().name()
        );
        std::process::abort();
    }));
}

/// Interfaces of the calling thread's network namespace.
fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap_or_else(|e| die(&format!("cannot read /proc/thread-self/net/dev: {e}")));
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

fn only_loopback() {
    let found = interfaces();
    if found != ["lo"] {
        die(&format!(
            "not in a loopback-only network namespace (interfaces {found:?}): refusing to run"
        ));
    }
}

/// Moves this thread (and every thread it starts from now on) into a new network namespace,
/// brings its loopback up and checks that loopback is all there is.
fn isolate_network() {
    // SAFETY: plain syscalls on zeroed C structs and a socket this function owns.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            die(&format!(
                "unshare(CLONE_NEWNET) failed ({}); it needs root (CAP_SYS_ADMIN). \
                 Refusing to run outside a private network namespace.",
                std::io::Error::last_os_error()
            ));
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            die("socket() for SIOCSIFFLAGS failed");
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            die("SIOCGIFFLAGS on lo failed");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) != 0 {
            die("SIOCSIFFLAGS on lo failed");
        }
        libc::close(fd);
    }
    only_loopback();
}

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn config_text() -> String {
    format!(
        r#"listen: 127.0.0.1:0
tls: {{ ca_cert: ca.pem, ca_key: ca-key.pem, intercept: ["*.example", "*.test", "198.51.100.*", "localhost"], upstream_roots: [] }}
guard: {{ allow_private: false, allow: [] }}
wallet: {{ backend: dev, network: regtest, max_fee_sats: 10, dev: {{ secret: fuzz-dev-secret }} }}
http: {{ max_replay_body_bytes: 65536, connect_timeout_secs: 1 }}
pay: {{ schemes: [l402, payment, x402] }}
store: {{ path: ledger.db }}
agents:
  - name: fuzz
    key_sha256: "{key}"
    limits: {{ per_request_sats: 1000, total_sats: 100000 }}
"#,
        key = hash_key("fuzz-key"),
    )
}

fn start() -> Running {
    abort_on_panic();
    // SAFETY: setting a signal disposition. libFuzzer's C main runs instead of Rust's, which
    // would have ignored SIGPIPE: a write to a reset socket must not kill the fuzzer.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    isolate_network();

    let dir = std::env::temp_dir().join(format!("l402-fuzz-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    let _ = DIR.set(dir.clone());
    // SAFETY: registers a plain extern "C" function.
    unsafe {
        libc::atexit(remove_dir);
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, config_text()).unwrap_or_else(|e| die(&format!("config: {e}")));
    let config = Config::load(&path).unwrap_or_else(|e| die(&format!("config: {e}")));
    if config.guard.allow_private || !config.guard.allow.is_empty() {
        die("the fuzz config must not allow any private destination");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let (addr, app) = runtime.block_on(async {
        // The workers were started from this thread: check they share its namespace.
        tokio::spawn(async { only_loopback() })
            .await
            .unwrap_or_else(|e| die(&format!("{e}")));
        let wallet = Arc::new(DevWallet::new(
            "fuzz-dev-secret",
            Msat::from_sats(1_000_000),
            Msat::ZERO,
            Duration::ZERO,
        ));
        let app = App::build(&config, wallet, Arc::new(SystemClock))
            .await
            .unwrap_or_else(|e| die(&format!("App::build: {e:#}")));
        app.prepare()
            .await
            .unwrap_or_else(|e| die(&format!("App::prepare: {e:#}")));
        let proxy = Proxy::bind(config.listen, app.shared.clone())
            .await
            .unwrap_or_else(|e| die(&format!("Proxy::bind: {e}")));
        let addr = proxy.local_addr().unwrap_or_else(|e| die(&format!("{e}")));
        if !addr.ip().is_loopback() {
            die(&format!("the proxy listens on {addr}, not loopback"));
        }
        tokio::spawn(proxy.run());
        (addr, app)
    });
    Running {
        addr,
        _app: app,
        _runtime: runtime,
    }
}

/// Closes with a reset (SO_LINGER 0): no TIME_WAIT left per input, so long runs cannot run
/// out of ephemeral ports.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Reads into `answer` until the peer closes, a read fails, or nothing came for `idle`
/// (or `deadline` passed). True when the peer closed (or reset) the connection.
fn read_until_quiet(
    stream: &mut TcpStream,
    answer: &mut Vec<u8>,
    idle: Duration,
    deadline: Instant,
) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).min(idle);
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if verbose() && answer.len() < 4096 {
                    answer.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn exchange(addr: SocketAddr, data: &[u8]) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        die("cannot connect to the in-process proxy");
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(READ_FOR));
    // The proxy may answer (and close) before reading everything: a failed write is fine.
    let _ = stream.write_all(data);
    let deadline = Instant::now() + READ_FOR;
    let mut answer = Vec::new();
    // Half-closing at once would race the proxy: hyper drops a request still in progress when
    // it reads EOF (HTTP/1 `half_close` is off), so whether an answer that needs any await
    // (the guard, DNS, the ledger, TLS) got out would depend on scheduling. So the write side
    // stays open while answers keep coming: up to ANSWER_WAIT for the first bytes, then until
    // ANSWER_IDLE passes without any; then the half-close, and whatever follows until EOF.
    let mut closed = read_until_quiet(&mut stream, &mut answer, ANSWER_WAIT, deadline);
    if !closed && !answer.is_empty() {
        closed = read_until_quiet(&mut stream, &mut answer, ANSWER_IDLE, deadline);
    }
    if !closed {
        let _ = stream.shutdown(Shutdown::Write);
        read_until_quiet(&mut stream, &mut answer, READ_FOR, deadline);
    }
    if verbose() {
        // The status lines of what came back (several after a CONNECT or pipelining).
        let text = String::from_utf8_lossy(&answer);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/")).collect();
        eprintln!("proxy_request: {} bytes back: {lines:?}", answer.len());
    }
    reset(stream);
}

/// `L402_FUZZ_VERBOSE=1`: print what the proxy answered to each input (for replaying a
/// corpus by hand; far too noisy while fuzzing).
fn verbose() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| std::env::var_os("L402_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}

fuzz_target!(|data: &[u8]| {
    let running = RUNNING.get_or_init(start);
    exchange(running.addr, data);
});
