//! The durable journal: payments (pending → settled | failed, with the token they bought),
//! declines, and operator budget changes, in an embedded SQLite file (WAL, fsync on commit).
//!
//! One thread owns the connection and commits in groups: every job queued while a commit is
//! in progress rides in the next transaction, so many concurrent payments share one fsync, and
//! each caller is answered only once its write is durable.

use crate::money::{Msat, PaymentHash};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ledger database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger write failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("ledger commit failed: {0}")]
    Commit(String),
    #[error("the ledger is closed")]
    Closed,
    #[error("ledger file {0}: {1}")]
    Io(String, std::io::Error),
}

/// A payment about to leave, recorded before the wallet is called.
#[derive(Clone)]
pub struct NewPayment {
    pub hash: PaymentHash,
    pub agent: String,
    pub host: String,
    pub origin: String,
    pub amount: Msat,
    pub fee_reserve: Msat,
    pub bolt11: String,
    /// The token exactly as the server sent it, so a payment settled after a crash still yields
    /// a usable credential.
    pub token: String,
    pub services: Option<String>,
    pub scope: String,
    pub token_expires_at: Option<u64>,
    pub created_at: i64,
}

/// What the journal already knew about a payment hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Recorded as pending now: the payment may be sent.
    Fresh,
    /// Paid before: reuse the preimage, pay nothing.
    Settled { preimage: String, fee: Msat },
    /// Sent before and not resolved: never send again; it is being reconciled.
    Pending,
}

#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct PaymentRow {
    pub payment_hash: String,
    pub agent: String,
    pub host: String,
    #[serde(skip)]
    pub origin: String,
    pub amount_msat: u64,
    pub fee_msat: Option<u64>,
    #[serde(skip)]
    pub fee_reserve_msat: u64,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip)]
    pub token: String,
    #[serde(skip)]
    pub preimage: Option<String>,
    #[serde(skip)]
    pub services: Option<String>,
    #[serde(skip)]
    pub scope: String,
    #[serde(skip)]
    pub token_expires_at: Option<u64>,
}

impl std::fmt::Debug for NewPayment {
    /// No token: with its preimage it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPayment")
            .field("hash", &self.hash)
            .field("agent", &self.agent)
            .field("host", &self.host)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PaymentRow {
    /// No token and no preimage: together they are a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRow")
            .field("payment_hash", &self.payment_hash)
            .field("agent", &self.agent)
            .field("host", &self.host)
            .field("amount_msat", &self.amount_msat)
            .field("fee_msat", &self.fee_msat)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl PaymentRow {
    pub fn hash(&self) -> Option<PaymentHash> {
        PaymentHash::from_hex(&self.payment_hash)
    }

    /// What the payment counts against budgets: the real fee once known, else the reserve.
    pub fn charged(&self) -> Msat {
        Msat(
            self.amount_msat
                .saturating_add(self.fee_msat.unwrap_or(self.fee_reserve_msat)),
        )
    }
}

/// Filters for listing payments.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub agent: Option<String>,
    pub status: Option<String>,
    pub limit: usize,
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Work = Box<dyn FnOnce(&mut Transaction<'_>) -> Completion + Send>;

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Work>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    payment_hash TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    origin TEXT NOT NULL,
    amount_msat INTEGER NOT NULL,
    fee_reserve_msat INTEGER NOT NULL,
    fee_msat INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'failed')),
    bolt11 TEXT NOT NULL,
    token TEXT NOT NULL,
    services TEXT,
    scope TEXT NOT NULL,
    token_expires_at INTEGER,
    preimage TEXT,
    failure TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_created ON payments (created_at);
CREATE INDEX IF NOT EXISTS payments_status ON payments (status);
CREATE TABLE IF NOT EXISTS declines (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_totals (
    agent TEXT PRIMARY KEY,
    total_msat INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
";

const PAYMENT_COLUMNS: &str =
    "payment_hash, agent, host, origin, amount_msat, fee_msat, fee_reserve_msat, status, \
     created_at, updated_at, failure, token, preimage, services, scope, token_expires_at";

fn payment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        payment_hash: r.get(0)?,
        agent: r.get(1)?,
        host: r.get(2)?,
        origin: r.get(3)?,
        amount_msat: r.get::<_, i64>(4)? as u64,
        fee_msat: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        fee_reserve_msat: r.get::<_, i64>(6)? as u64,
        status: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        failure: r.get(10)?,
        token: r.get(11)?,
        preimage: r.get(12)?,
        services: r.get(13)?,
        scope: r.get(14)?,
        token_expires_at: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
    })
}

impl Store {
    /// Opens (creating, mode 0600: it holds paid tokens) the journal at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(display.clone(), e))?;
        }
        if !path.exists() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options
                .open(path)
                .map_err(|e| StoreError::Io(display.clone(), e))?;
        }
        let open_err = |source| StoreError::Open {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let (jobs, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("l402-ledger".into())
            .spawn(move || writer(conn, queue))
            .map_err(|e| StoreError::Io(display, e))?;
        Ok(Store {
            jobs,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the next group transaction; resolves once that transaction is durable.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
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
                    (Err(e), _) => Err(StoreError::Sql(e)),
                    (Ok(_), Err(c)) => Err(StoreError::Commit(c)),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = reply.send(out);
            })
        });
        self.jobs.send(work).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a payment as pending unless the hash is known: the durable step that must
    /// precede every call to the wallet.
    pub async fn begin(&self, p: NewPayment) -> Result<Begin, StoreError> {
        self.run(move |t| {
            let known: Option<(String, Option<String>, Option<i64>)> = t
                .prepare_cached("SELECT status, preimage, fee_msat FROM payments WHERE payment_hash = ?1")?
                .query_row(
                    [p.hash.to_hex()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match known {
                Some((status, Some(preimage), fee)) if status == "settled" => {
                    return Ok(Begin::Settled {
                        preimage,
                        fee: Msat(fee.unwrap_or(0) as u64),
                    })
                }
                Some((status, _, _)) if status == "pending" => return Ok(Begin::Pending),
                _ => {}
            }
            t.prepare_cached(
                "INSERT INTO payments (payment_hash, agent, host, origin, amount_msat, fee_reserve_msat, status, bolt11, \
                 token, services, scope, token_expires_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11, ?12, ?12)
                 ON CONFLICT (payment_hash) DO UPDATE SET agent = ?2, host = ?3, origin = ?4, amount_msat = ?5,
                 fee_reserve_msat = ?6, status = 'pending', bolt11 = ?7, token = ?8, services = ?9, scope = ?10,
                 token_expires_at = ?11, fee_msat = NULL, failure = NULL, created_at = ?12, updated_at = ?12",
            )?
            .execute(params![
                    p.hash.to_hex(),
                    p.agent,
                    p.host,
                    p.origin,
                    p.amount.0 as i64,
                    p.fee_reserve.0 as i64,
                    p.bolt11,
                    p.token,
                    p.services,
                    p.scope,
                    p.token_expires_at.map(|v| v as i64),
                    p.created_at
                ])?;
            Ok(Begin::Fresh)
        })
        .await
    }

    pub async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        preimage_hex: String,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'settled', fee_msat = ?2, preimage = ?3, failure = NULL, updated_at = ?4
                 WHERE payment_hash = ?1",
            )?
            .execute(
                params![hash.to_hex(), fee.0 as i64, preimage_hex, now],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn fail(
        &self,
        hash: PaymentHash,
        reason: String,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'failed', failure = ?2, updated_at = ?3 WHERE payment_hash = ?1 AND status = 'pending'",
            )?
            .execute(
                params![hash.to_hex(), reason, now],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn record_decline(
        &self,
        agent: String,
        host: String,
        code: String,
        detail: String,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(move |t| {
            t.prepare_cached(
                "INSERT INTO declines (agent, host, code, detail, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(
                params![agent, host, code, detail, now],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn declines(
        &self,
        agent: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        self.run(move |t| {
            let mut st = t.prepare_cached(
                "SELECT agent, host, code, created_at FROM declines WHERE (?1 IS NULL OR agent = ?1)
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![agent, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRow>, StoreError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY created_at DESC, rowid DESC LIMIT ?3"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![filter.agent, filter.status, filter.limit.max(1) as i64],
                payment_row,
            )?;
            rows.collect()
        })
        .await
    }

    pub async fn pending(&self) -> Result<Vec<PaymentRow>, StoreError> {
        self.payments(PaymentFilter {
            agent: None,
            status: Some("pending".into()),
            limit: usize::MAX >> 1,
        })
        .await
    }

    /// Settled payments whose tokens may still be good, newest last (for the token cache).
    pub async fn live_tokens(&self, now: u64, since: i64) -> Result<Vec<PaymentRow>, StoreError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'settled' AND preimage IS NOT NULL
                 AND created_at >= ?2 AND (token_expires_at IS NULL OR token_expires_at > ?1) ORDER BY created_at ASC"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(params![now as i64, since], payment_row)?;
            rows.collect()
        })
        .await
    }

    /// Spend to re-apply to budgets at start: settled and pending payments since `since`
    /// one by one, and per agent the settled sum before it.
    pub async fn spend(
        &self,
        since: i64,
    ) -> Result<(Vec<PaymentRow>, Vec<(String, u64)>), StoreError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'settled' AND created_at >= ?1 ORDER BY created_at"
            );
            let mut st = t.prepare_cached(&sql)?;
            let recent = st.query_map([since], payment_row)?.collect::<Result<Vec<_>, _>>()?;
            let mut st = t.prepare_cached(
                "SELECT agent, SUM(amount_msat + COALESCE(fee_msat, 0)) FROM payments
                 WHERE status = 'settled' AND created_at < ?1 GROUP BY agent",
            )?;
            let older = st
                .query_map([since], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((recent, older))
        })
        .await
    }

    pub async fn set_total(&self, agent: String, total: Msat, now: i64) -> Result<(), StoreError> {
        self.run(move |t| {
            t.prepare_cached(
                "INSERT INTO budget_totals (agent, total_msat, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (agent) DO UPDATE SET total_msat = ?2, updated_at = ?3",
            )?
            .execute(params![agent, total.0 as i64, now])
            .map(|_| ())
        })
        .await
    }

    pub async fn totals(&self) -> Result<Vec<(String, Msat)>, StoreError> {
        self.run(|t| {
            let mut st = t.prepare_cached("SELECT agent, total_msat FROM budget_totals")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, Msat(r.get::<_, i64>(1)? as u64)))
            })?;
            rows.collect()
        })
        .await
    }

    /// Resolves once every write queued before it is durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(hash: u8, agent: &str, created_at: i64) -> NewPayment {
        NewPayment {
            hash: PaymentHash([hash; 32]),
            agent: agent.into(),
            host: "h".into(),
            origin: "https://h:443".into(),
            amount: Msat(10_000),
            fee_reserve: Msat(1000),
            bolt11: "lnbcrt…".into(),
            token: "tok".into(),
            services: Some("s:0".into()),
            scope: "/s/".into(),
            token_expires_at: None,
            created_at,
        }
    }

    fn temp_db() -> PathBuf {
        std::env::temp_dir().join(format!("l402-store-{}.db", rand::random::<u64>()))
    }

    #[tokio::test]
    async fn a_hash_is_never_begun_twice_and_state_survives_reopening() {
        let path = temp_db();
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.begin(payment(1, "a", 100)).await.unwrap(),
            Begin::Fresh
        );
        assert_eq!(
            store.begin(payment(1, "a", 101)).await.unwrap(),
            Begin::Pending
        );
        store
            .settle(PaymentHash([1; 32]), Msat(7), "ab".into(), 102)
            .await
            .unwrap();
        assert_eq!(
            store.begin(payment(1, "a", 103)).await.unwrap(),
            Begin::Settled {
                preimage: "ab".into(),
                fee: Msat(7)
            }
        );
        assert_eq!(
            store.begin(payment(2, "b", 104)).await.unwrap(),
            Begin::Fresh
        );
        store
            .fail(PaymentHash([2; 32]), "no route".into(), 105)
            .await
            .unwrap();
        // A failed hash may be tried again.
        assert_eq!(
            store.begin(payment(2, "b", 106)).await.unwrap(),
            Begin::Fresh
        );
        drop(store);
        let store = Store::open(&path).unwrap();
        let pending = store.pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].agent, "b");
        assert_eq!(pending[0].charged(), Msat(11_000));
        let settled = store.live_tokens(0, 0).await.unwrap();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].preimage.as_deref(), Some("ab"));
        let (recent, older) = store.spend(103).await.unwrap();
        assert!(recent.is_empty());
        assert_eq!(older, vec![("a".to_string(), 10_007)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_filters_work() {
        let store = Store::open(&temp_db()).unwrap();
        let tasks: Vec<_> = (0..50u8)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.begin(payment(i, if i % 2 == 0 { "a" } else { "b" }, i as i64))
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Begin::Fresh);
        }
        let a = store
            .payments(PaymentFilter {
                agent: Some("a".into()),
                status: Some("pending".into()),
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(a.len(), 25);
        assert!(a.windows(2).all(|w| w[0].created_at >= w[1].created_at));
        store.set_total("a".into(), Msat(5), 1).await.unwrap();
        store.set_total("a".into(), Msat(6), 2).await.unwrap();
        assert_eq!(
            store.totals().await.unwrap(),
            vec![("a".to_string(), Msat(6))]
        );
        store
            .record_decline(
                "a".into(),
                "h".into(),
                "over-daily-limit".into(),
                "x".into(),
                3,
            )
            .await
            .unwrap();
        assert_eq!(store.declines(Some("a".into()), 10).await.unwrap().len(), 1);
        store.flush().await.unwrap();
    }
}
