//! `l402-proxy run` as a child process, its real ports learned from its log.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `l402-proxy run` child process, killed and reaped on drop.
pub struct Proxy {
    /// The process.
    pub child: Child,
    pub port: u16,
    pub admin: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port a "ready" log line announces (text or JSON logs alike).
fn announced_port(text: &str, marker: &str) -> Option<u16> {
    let line = text.lines().rev().find(|l| l.contains(marker))?;
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Proxy {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `run --config config`, logging to `log`, the admin token in `L402_PROXY_ADMIN_TOKEN`.
    pub fn start(config: &Path, log: &Path, token: &str) -> Proxy {
        Proxy::start_with(config, log, token, &[], &[])
    }

    /// Starts `run` on ports 0 and learns the real ones from its log: no port is ever guessed,
    /// so tests running side by side cannot reach each other's proxies.
    pub fn start_with(
        config: &Path,
        log_path: &Path,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let before = std::fs::read_to_string(log_path)
            .map(|s| s.len())
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_l402-proxy"))
            .args(extra)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("L402_PROXY_ADMIN_TOKEN", token)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Owned at once, so the child is killed and reaped however this function ends.
        let mut proxy = Proxy {
            child,
            port: 0,
            admin: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            let fresh = text.get(before..).unwrap_or("");
            if let (Some(port), Some(admin)) = (
                announced_port(fresh, "l402-proxy ready"),
                announced_port(fresh, "admin API ready"),
            ) {
                (proxy.port, proxy.admin) = (port, admin);
                return proxy;
            }
            assert!(Instant::now() < deadline, "proxy did not start:\n{fresh}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn url(&self, creds: (&str, &str)) -> String {
        format!("http://{}:{}@127.0.0.1:{}", creds.0, creds.1, self.port)
    }
}
