//! The durable journal behind the embedded ledger: payments (pending → settled | failed, with
//! the credential each bought), declines, and operator budget changes, in one SQLite file (WAL,
//! `synchronous=FULL`, mode 0600).
//!
//! One thread owns the connection and commits in groups: every job queued while a commit is in
//! progress rides in the next transaction, so many concurrent payments share one fsync, and each
//! caller is answered only once its write is durable.

mod approvals;
mod budget;
mod outbox;
mod payments;
mod prices;
mod records;
mod retention;
mod rows;
mod schema;
mod stops;
mod tokens;

#[cfg(test)]
pub(crate) use schema::SCHEMA_V1;

use crate::core::Msat;
use crate::ledger::LedgerError;
use rows::sql_err;
use rusqlite::{Connection, Transaction};
use schema::migrate;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// What the journal already knew about a payment hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalBegin {
    /// Recorded as pending now: the payment may be sent.
    Fresh,
    /// Paid before.
    Settled {
        /// Who paid it.
        agent: String,
        /// Where.
        origin: String,
        /// The stored proof (hex), when a reusable credential was bought.
        preimage: Option<String>,
        /// The fee paid.
        fee: Msat,
    },
    /// Sent before and not resolved.
    Pending,
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Work = Box<dyn FnOnce(&mut Transaction<'_>) -> Completion + Send>;

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    jobs: mpsc::Sender<Work>,
    path: PathBuf,
}

impl Journal {
    /// Opens (creating, mode 0600: it holds paid tokens) the journal at `path`, migrating its
    /// schema to the current version.
    pub fn open(path: &Path) -> Result<Journal, LedgerError> {
        let display = path.display().to_string();
        let io =
            |e: std::io::Error| LedgerError::Unavailable(format!("ledger file {display}: {e}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if !path.exists() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options.open(path).map_err(io)?;
        }
        let open_err = |e: rusqlite::Error| {
            LedgerError::Unavailable(format!("ledger database {display}: {e}"))
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        schema::prepare_new_file(&conn).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrate(&mut conn).map_err(open_err)?;
        let (jobs, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("l402-ledger".into())
            .spawn(move || writer(conn, queue))
            .map_err(io)?;
        Ok(Journal {
            jobs,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the next group transaction; resolves once that transaction is durable.
    async fn run<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |txn: &mut Transaction<'_>| {
            // A savepoint per job: one failing statement must not sink the others' writes.
            let result = match txn.savepoint() {
                Ok(mut sp) => {
                    let r = f(&sp);
                    if r.is_ok() {
                        let _ = sp.commit();
                    } else {
                        let _ = sp.rollback();
                    }
                    r
                }
                Err(e) => Err(e),
            };
            Box::new(move |commit: Result<(), String>| {
                let out = match (result, commit) {
                    (Err(e), _) => Err(sql_err(e)),
                    (Ok(_), Err(c)) => Err(LedgerError::Unavailable(format!(
                        "ledger commit failed: {c}"
                    ))),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = reply.send(out);
            })
        });
        let closed = || LedgerError::Unavailable("the ledger is closed".into());
        self.jobs.send(work).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Resolves once every write queued before it is durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.run(|_| Ok(())).await
    }
}

/// The writer thread: takes every queued job, runs them in one transaction, commits, answers.
fn writer(mut conn: Connection, queue: mpsc::Receiver<Work>) {
    const GROUP_MAX: usize = 256;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(group.len());
        let commit = match conn.transaction() {
            Ok(mut txn) => {
                for job in group {
                    completions.push(job(&mut txn));
                }
                txn.commit().map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, "ledger commit failed");
        }
        for done in completions {
            done(commit.clone());
        }
    }
}
