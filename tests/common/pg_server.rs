//! A throw-away PostgreSQL server for tests: Debian's `postgresql` binaries, a fresh cluster in a
//! temp dir (initdb and postgres run as user `postgres` when the tests run as root), on a free
//! 127.0.0.1 port. `L402_TEST_POSTGRES_URL` names an existing server instead (each test then
//! gets its own database). Stopped and removed on drop; `stop` and `start` simulate an outage.
//!
//! Shared by the unit tests of the PostgreSQL ledger (included by path) and the integration
//! tests, so it uses the standard library only.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) test server.
pub struct PgServer {
    dir: Option<PathBuf>,
    port: u16,
    child: Option<Child>,
    url: String,
    /// More `-c key=value` settings (TLS).
    settings: Vec<String>,
}

/// The directory holding Debian's PostgreSQL server binaries (the newest installed).
fn bin_dir() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.last() {
        Some(v) => base.join(v.to_string()).join("bin"),
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian's \
             `postgresql` package (bash .ci/run does), or set L402_TEST_POSTGRES_URL"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as user `postgres` when we are root (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl PgServer {
    /// A fresh server with an empty database `l402` (or a new database on the given server).
    pub fn start() -> PgServer {
        if let Ok(base) = std::env::var("L402_TEST_POSTGRES_URL") {
            return PgServer::on_existing(&base);
        }
        PgServer::start_own(None)
    }

    /// A fresh server of our own (never `L402_TEST_POSTGRES_URL`'s) that offers TLS with this
    /// certificate chain and key (PEM), plain TCP too.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        PgServer::start_own(Some((cert_pem, key_pem)))
    }

    fn start_own(tls: Option<(&str, &str)>) -> PgServer {
        let dir = std::env::temp_dir().join(format!(
            "l402-pg-{}",
            std::process::id() as u64 * 1_000_000 + u64::from(rand_u32())
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let out = as_postgres(&bin_dir().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "l402",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut settings = Vec::new();
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert_path, cert).expect("write the server certificate");
            std::fs::write(&key_path, key).expect("write the server key");
            // The server refuses a key others can read.
            let status = Command::new("chmod").arg("600").arg(&key_path).status();
            assert!(status.is_ok_and(|s| s.success()), "chmod the server key");
            if is_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cert_path)
                    .arg(&key_path)
                    .status();
                assert!(status.is_ok_and(|s| s.success()), "chown the server key");
            }
            settings.push("ssl=on".to_string());
            settings.push(format!("ssl_cert_file={}", cert_path.display()));
            settings.push(format!("ssl_key_file={}", key_path.display()));
        }
        let port = free_port();
        let mut server = PgServer {
            dir: Some(dir.to_path_buf()),
            port,
            child: None,
            url: format!("postgres://l402@127.0.0.1:{port}/postgres"),
            settings,
        };
        server.start_again();
        server.create_database("l402");
        server.url = format!("postgres://l402@127.0.0.1:{port}/l402");
        server
    }

    fn on_existing(base: &str) -> PgServer {
        let name = format!("l402_test_{}", rand_u32());
        let out = Command::new("psql")
            .arg(base)
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "cannot create a test database on L402_TEST_POSTGRES_URL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{base}/{name}"),
        };
        PgServer {
            dir: None,
            port: 0,
            child: None,
            url,
            settings: Vec::new(),
        }
    }

    fn create_database(&self, name: &str) {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://l402@127.0.0.1:PORT/l402`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// (Re)starts the server on its data directory and port; waits until it accepts queries.
    pub fn start_again(&mut self) {
        let dir = self
            .dir
            .clone()
            .expect("only a server these tests started can be restarted");
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.join("server.log"))
                .status();
        }
        let child = as_postgres(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not come up; see {}",
                dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are cut), as an outage would.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid_file = self
            .dir
            .as_ref()
            .map(|d| d.join("data").join("postmaster.pid"));
        // The postmaster's own pid is the first line of its pid file (runuser may stand between).
        let pid = pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.lines().next().map(str::trim).map(str::to_string));
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let gone = pid_file.as_ref().is_none_or(|f| !f.exists());
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
