//! A throw-away PostgreSQL cluster for the benchmarks (`examples/ledger_bench.rs`), started the
//! way `tests/common/pg_server.rs` starts the tests' one: Debian's server binaries, `initdb` and
//! `postgres` run as user `postgres` (through `runuser`) when we are root, listening on
//! 127.0.0.1 on a free port, stopped and removed on drop.
//!
//! Two differences, both for honest figures: durability stays on (`fsync`,
//! `synchronous_commit` and `full_page_writes` keep their defaults, where the tests turn them
//! off), and the cluster lives in a directory the caller names rather than in `/tmp`, which may
//! be a tmpfs where fsync costs nothing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster with an empty database `l402`.
pub struct PgCluster {
    dir: PathBuf,
    child: Option<Child>,
    url: String,
}

/// The directory holding the PostgreSQL server binaries: the newest
/// `/usr/lib/postgresql/N/bin` (Debian) with `initdb` and `postgres` in it, else the directory
/// of an `initdb` on `PATH` that has `postgres` beside it.
pub fn bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some(dir) = versions
        .iter()
        .rev()
        .map(|v| base.join(v.to_string()).join("bin"))
        .find(|d| has_both(d))
    {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| {
            let initdb = d.join("initdb");
            std::fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(d)
        })
        .find(|d| has_both(d))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program`, as user `postgres` when we are root (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()?;
        anyhow::ensure!(status.success(), "chown {} to postgres", path.display());
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl PgCluster {
    /// initdb in `dir` (created; it must not exist yet), then the server, then `CREATE
    /// DATABASE l402`. `dir` and its parents must be reachable by user `postgres` when root.
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<PgCluster> {
        std::fs::create_dir_all(dir)?;
        chown_to_postgres(dir)?;
        let data = dir.join("data");
        // --no-sync only skips flushing initdb's own files; the server then runs durable.
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "l402", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb in {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let port = free_port()?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        chown_to_postgres(&log_path)?;
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut cluster = PgCluster {
            dir: dir.to_path_buf(),
            child: Some(child),
            url: format!("postgres://l402@127.0.0.1:{port}/postgres"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            let exited = cluster
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            anyhow::ensure!(
                exited.is_none() && Instant::now() < deadline,
                "postgres did not come up ({}):\n{}",
                log_path.display(),
                tail(&log_path)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new(bin.join("psql"))
            .arg(&cluster.url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE DATABASE l402"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        cluster.url = format!("postgres://l402@127.0.0.1:{port}/l402");
        Ok(cluster)
    }

    /// `postgres://l402@127.0.0.1:PORT/l402`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgCluster {
    /// Fast shutdown (SIGINT to the postmaster, whose pid heads its pid file: runuser may
    /// stand between us and it), then the directory goes.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
