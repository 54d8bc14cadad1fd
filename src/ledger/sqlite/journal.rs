//! The durable journal behind the embedded ledger: payments (pending → settled | failed, with
//! the credential each bought), declines, and operator budget changes, in one SQLite file (WAL,
//! `synchronous=FULL`, mode 0600).
//!
//! One thread owns the connection and commits in groups: every job queued while a commit is in
//! progress rides in the next transaction, so many concurrent payments share one fsync, and each
//! caller is answered only once its write is durable.

use crate::agents::StoredAgent;
use crate::core::{Msat, PaymentHash};
use crate::ledger::{
    ApprovalRecord, ApprovalState, AuditEntry, DeclineFilter, DeclineRecord, LedgerError,
    NewPayment, PaymentFilter, PaymentRecord, PaymentState,
};
use crate::pay::dialect::StoredCredential;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
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

/// A known payment's status, agent, origin, stored preimage and fee.
type KnownPayment = (String, String, String, Option<String>, Option<i64>);

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Work = Box<dyn FnOnce(&mut Transaction<'_>) -> Completion + Send>;

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    jobs: mpsc::Sender<Work>,
    path: PathBuf,
}

/// Version 1: the first release's tables.
pub(crate) const SCHEMA_V1: &str = "
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

/// Version 2: dialects, the scheme to answer in, retired tokens, learned scopes, declines with
/// their path, amount and repeat count.
const SCHEMA_V2: &str = "
ALTER TABLE payments ADD COLUMN dialect TEXT NOT NULL DEFAULT 'l402';
ALTER TABLE payments ADD COLUMN scheme TEXT;
ALTER TABLE payments ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE payments ADD COLUMN token_retired INTEGER NOT NULL DEFAULT 0;
UPDATE payments SET scheme = 'L402' WHERE token <> '';
CREATE INDEX IF NOT EXISTS payments_agent ON payments (agent, created_at);
ALTER TABLE declines ADD COLUMN path TEXT NOT NULL DEFAULT '';
ALTER TABLE declines ADD COLUMN amount_msat INTEGER;
ALTER TABLE declines ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS declines_fold ON declines (agent, host, code, created_at);
";

/// Version 3: agents made through the admin API, and the audit log of such changes.
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL,
    limits TEXT NOT NULL,
    hosts TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    agent TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Version 4: payments held for approval, and the once-only keys of alerts already sent.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    service TEXT NOT NULL,
    amount_msat INTEGER NOT NULL,
    payment_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    decided_by TEXT,
    decided_at INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (state, expires_at);
CREATE TABLE IF NOT EXISTS alerts_sent (
    key TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_price ON payments (agent, origin, status, created_at);
";

/// Version 5: the purchase each payment belongs to, so a purchase left pending by a timeout
/// or a crash stays open (nothing else is paid for it) until it is resolved.
const SCHEMA_V5: &str = "
ALTER TABLE payments ADD COLUMN purchase TEXT;
";

/// The schema versions, applied in order; `PRAGMA user_version` records the last applied.
const MIGRATIONS: [&str; 5] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5];

const APPROVAL_COLUMNS: &str = "id, agent, host, service, amount_msat, payment_hash, created_at, expires_at, state, decided_by, decided_at";

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not {what}").into(),
        )
    };
    let hash: String = r.get(5)?;
    let state: String = r.get(8)?;
    Ok(ApprovalRecord {
        id: r.get(0)?,
        agent: r.get(1)?,
        host: r.get(2)?,
        service: r.get(3)?,
        amount: msat_at(r, 4)?,
        payment_hash: PaymentHash::from_hex(&hash).ok_or_else(|| bad(5, "a payment hash"))?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        state: ApprovalState::parse(&state).ok_or_else(|| bad(8, "an approval state"))?,
        decided_by: r.get(9)?,
        decided_at: r.get(10)?,
    })
}

const PAYMENT_COLUMNS: &str =
    "payment_hash, agent, host, origin, dialect, amount_msat, fee_msat, fee_reserve_msat, status, \
     created_at, updated_at, failure, token, scheme, services, scope, token_expires_at, scopes, purchase";

/// A stored amount as msat. Amounts are never stored negative: a negative one is refused as
/// an inconsistent row rather than wrapped into a huge number.
fn msat_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Msat> {
    non_negative(i, r.get(i)?).map(Msat)
}

/// See [`msat_at`].
fn non_negative(i: usize, v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Integer,
            format!("a negative stored amount: {v}").into(),
        )
    })
}

fn sql_err(e: rusqlite::Error) -> LedgerError {
    LedgerError::Unavailable(format!("ledger write failed: {e}"))
}

fn payment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentRecord> {
    let hash: String = r.get(0)?;
    let status: String = r.get(8)?;
    let token: String = r.get(12)?;
    let scheme: Option<String> = r.get(13)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("invalid {what} in the ledger").into(),
        )
    };
    Ok(PaymentRecord {
        hash: PaymentHash::from_hex(&hash).ok_or_else(|| bad("payment hash"))?,
        agent: r.get(1)?,
        host: r.get(2)?,
        origin: r.get(3)?,
        dialect: r.get(4)?,
        amount: msat_at(r, 5)?,
        fee: r
            .get::<_, Option<i64>>(6)?
            .map(|v| non_negative(6, v).map(Msat))
            .transpose()?,
        fee_reserve: msat_at(r, 7)?,
        state: PaymentState::parse(&status).ok_or_else(|| bad("status"))?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        failure: r.get(11)?,
        credential: match scheme {
            Some(scheme) if !token.is_empty() => Some(StoredCredential { scheme, token }),
            _ => None,
        },
        service: r.get(14)?,
        scope: r.get(15)?,
        token_expires_at: r.get::<_, Option<i64>>(16)?.map(|v| v as u64),
        purchase: r.get(18)?,
    })
}

/// A settled row's learned scopes (newline-separated) and its stored preimage.
fn token_extras(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<String>, Option<String>)> {
    let scopes: String = r.get(17)?;
    let preimage: Option<String> = r.get(19)?;
    Ok((
        scopes
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        preimage,
    ))
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

    /// Records a payment as pending unless the hash is pending or settled: the durable step
    /// that must precede every call to the wallet. A failed hash may be begun again.
    pub async fn begin(&self, p: NewPayment) -> Result<JournalBegin, LedgerError> {
        self.run(move |t| {
            let known: Option<KnownPayment> = t
                .prepare_cached(
                    "SELECT status, agent, origin, preimage, fee_msat FROM payments WHERE payment_hash = ?1",
                )?
                .query_row([p.hash.to_hex()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            match known {
                Some((status, agent, origin, preimage, fee)) if status == "settled" => {
                    return Ok(JournalBegin::Settled {
                        agent,
                        origin,
                        preimage,
                        fee: Msat(non_negative(4, fee.unwrap_or(0))?),
                    })
                }
                Some((status, ..)) if status == "pending" => return Ok(JournalBegin::Pending),
                _ => {}
            }
            let (token, scheme) = match &p.credential {
                Some(c) => (c.token.clone(), Some(c.scheme.clone())),
                None => (String::new(), None),
            };
            t.prepare_cached(
                "INSERT INTO payments (payment_hash, agent, host, origin, dialect, amount_msat, fee_reserve_msat, status, bolt11, \
                 token, scheme, services, scope, token_expires_at, created_at, updated_at, purchase)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)
                 ON CONFLICT (payment_hash) DO UPDATE SET agent = ?2, host = ?3, origin = ?4, dialect = ?5, amount_msat = ?6,
                 fee_reserve_msat = ?7, status = 'pending', bolt11 = ?8, token = ?9, scheme = ?10, services = ?11, scope = ?12,
                 token_expires_at = ?13, fee_msat = NULL, failure = NULL, preimage = NULL, scopes = '', token_retired = 0,
                 created_at = ?14, updated_at = ?14, purchase = ?15",
            )?
            .execute(params![
                p.hash.to_hex(),
                &*p.agent,
                p.host,
                p.origin,
                p.dialect,
                p.amount.0 as i64,
                p.fee_reserve.0 as i64,
                p.bolt11,
                token,
                scheme,
                p.service,
                p.scope,
                p.token_expires_at.map(|v| v as i64),
                p.created_at,
                p.purchase
            ])?;
            Ok(JournalBegin::Fresh)
        })
        .await
    }

    /// Records a settled payment; the preimage is kept only when given (reusable credentials).
    pub async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        preimage_hex: Option<String>,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'settled', fee_msat = ?2, preimage = ?3, failure = NULL, updated_at = ?4
                 WHERE payment_hash = ?1",
            )?
            .execute(params![hash.to_hex(), fee.0 as i64, preimage_hex, now])
            .map(|_| ())
        })
        .await
    }

    /// Records a pending payment as failed.
    pub async fn fail(
        &self,
        hash: PaymentHash,
        reason: String,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET status = 'failed', failure = ?2, updated_at = ?3 WHERE payment_hash = ?1 AND status = 'pending'",
            )?
            .execute(params![hash.to_hex(), reason, now])
            .map(|_| ())
        })
        .await
    }

    /// Where one payment stands, `None` for a hash never begun.
    pub async fn payment_state(
        &self,
        hash: PaymentHash,
    ) -> Result<Option<PaymentState>, LedgerError> {
        let status: Option<String> = self
            .run(move |t| {
                t.prepare_cached("SELECT status FROM payments WHERE payment_hash = ?1")?
                    .query_row([hash.to_hex()], |r| r.get(0))
                    .optional()
            })
            .await?;
        Ok(status.as_deref().and_then(PaymentState::parse))
    }

    /// Whether this payment bought a reusable credential (so its proof is to be kept).
    pub async fn has_credential(&self, hash: PaymentHash) -> Result<bool, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "SELECT scheme IS NOT NULL AND token <> '' FROM payments WHERE payment_hash = ?1",
            )?
            .query_row([hash.to_hex()], |r| r.get::<_, bool>(0))
            .optional()
            .map(|v| v.unwrap_or(false))
        })
        .await
    }

    /// Records a refusal, folding a repeat of the same (agent, host, code) within `fold_secs`
    /// into the previous record's count.
    pub async fn record_decline(
        &self,
        d: DeclineRecord,
        fold_secs: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| {
            let folded = t
                .prepare_cached(
                    "UPDATE declines SET count = count + ?4, created_at = ?5, detail = ?6, path = ?7, amount_msat = ?8
                     WHERE id = (SELECT id FROM declines WHERE agent = ?1 AND host = ?2 AND code = ?3 AND created_at >= ?5 - ?9
                                 ORDER BY id DESC LIMIT 1)",
                )?
                .execute(params![
                    d.agent,
                    d.host,
                    d.code,
                    d.count as i64,
                    d.created_at,
                    d.detail,
                    d.path,
                    d.amount.map(|a| a.0 as i64),
                    fold_secs
                ])?;
            if folded == 0 {
                t.prepare_cached(
                    "INSERT INTO declines (agent, host, code, detail, path, amount_msat, count, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    d.agent,
                    d.host,
                    d.code,
                    d.detail,
                    d.path,
                    d.amount.map(|a| a.0 as i64),
                    d.count as i64,
                    d.created_at
                ])?;
            }
            Ok(())
        })
        .await
    }

    /// Recorded refusals, newest first.
    pub async fn declines(&self, filter: DeclineFilter) -> Result<Vec<DeclineRecord>, LedgerError> {
        self.run(move |t| {
            let mut st = t.prepare_cached(
                "SELECT agent, host, path, code, detail, amount_msat, created_at, count FROM declines
                 WHERE (?1 IS NULL OR agent = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![filter.agent, filter.limit.max(1) as i64], |r| {
                Ok(DeclineRecord {
                    agent: r.get(0)?,
                    host: r.get(1)?,
                    path: r.get(2)?,
                    code: r.get(3)?,
                    detail: r.get(4)?,
                    amount: r
                        .get::<_, Option<i64>>(5)?
                        .map(|v| non_negative(5, v).map(Msat))
                        .transpose()?,
                    created_at: r.get(6)?,
                    count: r.get::<_, i64>(7)?.max(1) as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Payments, newest first.
    pub async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR status = ?2)
                 AND (?3 IS NULL OR host = ?3 OR host LIKE ?3 || ':%') AND (?4 IS NULL OR created_at >= ?4)
                 AND (?5 IS NULL OR created_at < ?5)
                 ORDER BY created_at DESC, rowid DESC LIMIT ?6"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    filter.agent,
                    filter.state.map(PaymentState::as_str),
                    filter.host,
                    filter.since,
                    filter.until,
                    filter.limit.max(1) as i64
                ],
                payment_row,
            )?;
            rows.collect()
        })
        .await
    }

    /// Every pending payment, oldest first.
    pub async fn pending(&self) -> Result<Vec<PaymentRecord>, LedgerError> {
        self.run(|t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' ORDER BY created_at ASC"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map([], payment_row)?;
            rows.collect()
        })
        .await
    }

    /// Settled payments with a stored credential that may still be good, oldest first, with
    /// their learned scopes and stored proof.
    pub async fn live_tokens(
        &self,
        now: u64,
        since: i64,
    ) -> Result<Vec<(PaymentRecord, Vec<String>, Option<String>)>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS}, preimage FROM payments WHERE status = 'settled' AND preimage IS NOT NULL
                 AND token_retired = 0 AND scheme IS NOT NULL AND created_at >= ?2
                 AND (token_expires_at IS NULL OR token_expires_at > ?1) ORDER BY created_at ASC"
            );
            let mut st = t.prepare_cached(&sql)?;
            let rows = st.query_map(params![now as i64, since], |r| {
                let (scopes, preimage) = token_extras(r)?;
                Ok((payment_row(r)?, scopes, preimage))
            })?;
            rows.collect()
        })
        .await
    }

    /// The newest live stored token of an agent at an origin for a service (or scope).
    pub async fn find_token(
        &self,
        agent: String,
        origin: String,
        service: Option<String>,
        scope: String,
        now: u64,
    ) -> Result<Option<(PaymentRecord, Vec<String>, Option<String>)>, LedgerError> {
        self.run(move |t| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS}, preimage FROM payments WHERE status = 'settled' AND preimage IS NOT NULL
                 AND token_retired = 0 AND scheme IS NOT NULL AND agent = ?1 AND origin = ?2
                 AND ((?3 IS NOT NULL AND services = ?3) OR (?3 IS NULL AND scope = ?4))
                 AND (token_expires_at IS NULL OR token_expires_at > ?5) ORDER BY created_at DESC LIMIT 1"
            );
            let mut st = t.prepare_cached(&sql)?;
            st.query_row(params![agent, origin, service, scope, now as i64], |r| {
                let (scopes, preimage) = token_extras(r)?;
                Ok((payment_row(r)?, scopes, preimage))
            })
            .optional()
        })
        .await
    }

    /// Marks a token as refused by its server.
    pub async fn retire_token(&self, hash: PaymentHash) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached("UPDATE payments SET token_retired = 1 WHERE payment_hash = ?1")?
                .execute([hash.to_hex()])
                .map(|_| ())
        })
        .await
    }

    /// Adds a learned scope to a token (at most 64 are kept).
    pub async fn learn_scope(&self, hash: PaymentHash, scope: String) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE payments SET scopes = CASE WHEN scopes = '' THEN ?2 ELSE scopes || char(10) || ?2 END
                 WHERE payment_hash = ?1 AND instr(char(10) || scopes || char(10), char(10) || ?2 || char(10)) = 0
                 AND length(scopes) - length(replace(scopes, char(10), '')) < 63",
            )?
            .execute(params![hash.to_hex(), scope])
            .map(|_| ())
        })
        .await
    }

    /// Spend to re-apply to budgets at start: settled payments since `since` one by one, and
    /// per agent the settled sum before it.
    pub async fn spend(
        &self,
        since: i64,
    ) -> Result<(Vec<PaymentRecord>, Vec<(String, Msat)>), LedgerError> {
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
                .query_map([since], |r| Ok((r.get::<_, String>(0)?, msat_at(r, 1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((recent, older))
        })
        .await
    }

    /// Sets or clears an operator override of an agent's total.
    pub async fn set_total(
        &self,
        agent: String,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.run(move |t| match total {
            Some(total) => t
                .prepare_cached(
                    "INSERT INTO budget_totals (agent, total_msat, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent) DO UPDATE SET total_msat = ?2, updated_at = ?3",
                )?
                .execute(params![agent, total.0 as i64, now])
                .map(|_| ()),
            None => t
                .prepare_cached("DELETE FROM budget_totals WHERE agent = ?1")?
                .execute([agent])
                .map(|_| ()),
        })
        .await
    }

    /// Every operator override of a total.
    pub async fn totals(&self) -> Result<Vec<(String, Msat)>, LedgerError> {
        self.run(|t| {
            let mut st = t.prepare_cached("SELECT agent, total_msat FROM budget_totals")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, msat_at(r, 1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Resolves once every write queued before it is durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.run(|_| Ok(())).await
    }

    /// The API's agents.
    pub async fn api_agents(&self) -> Result<Vec<StoredAgent>, LedgerError> {
        self.run(|t| {
            let mut st = t.prepare_cached(
                "SELECT name, key_sha256, limits, hosts, paused, created_at, updated_at FROM agents ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                let limits: String = r.get(2)?;
                let hosts: String = r.get(3)?;
                let bad = |e: serde_json::Error| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
                };
                Ok(StoredAgent {
                    name: r.get(0)?,
                    key_sha256: r.get(1)?,
                    limits: serde_json::from_str(&limits).map_err(bad)?,
                    hosts: serde_json::from_str(&hosts).map_err(bad)?,
                    paused: r.get::<_, i64>(4)? != 0,
                    created_at: r.get(5)?,
                    updated_at: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Writes an API agent: a new one (`create`: false when taken) or a replacement (false
    /// when missing).
    pub async fn put_agent(&self, a: StoredAgent, create: bool) -> Result<bool, LedgerError> {
        let limits = serde_json::to_string(&a.limits).unwrap_or_else(|_| "{}".into());
        let hosts = serde_json::to_string(&a.hosts).unwrap_or_else(|_| "{}".into());
        self.run(move |t| {
            let sql = if create {
                "INSERT INTO agents (name, key_sha256, limits, hosts, paused, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING"
            } else {
                "UPDATE agents SET key_sha256 = ?2, limits = ?3, hosts = ?4, paused = ?5, updated_at = ?7
                 WHERE name = ?1 AND ?6 = ?6"
            };
            t.prepare_cached(sql)?
                .execute(params![a.name, a.key_sha256, limits, hosts, a.paused as i64, a.created_at, a.updated_at])
                .map(|n| n == 1)
        })
        .await
    }

    /// Removes an API agent and retires its tokens.
    pub async fn delete_agent(&self, name: String) -> Result<bool, LedgerError> {
        self.run(move |t| {
            let n = t
                .prepare_cached("DELETE FROM agents WHERE name = ?1")?
                .execute([&name])?;
            t.prepare_cached("UPDATE payments SET token_retired = 1 WHERE agent = ?1")?
                .execute([&name])?;
            Ok(n == 1)
        })
        .await
    }

    /// Appends to the audit log.
    pub async fn audit(&self, e: AuditEntry) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "INSERT INTO audit (at, who, action, agent, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![e.at, e.who, e.action, e.agent, e.detail])
            .map(|_| ())
        })
        .await
    }

    /// Stores a new held payment.
    pub async fn create_approval(&self, a: ApprovalRecord) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(&format!(
                "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                a.id,
                a.agent,
                a.host,
                a.service,
                a.amount.0 as i64,
                a.payment_hash.to_hex(),
                a.created_at,
                a.expires_at,
                a.state.as_str(),
                a.decided_by,
                a.decided_at
            ])
            .map(|_| ())
        })
        .await
    }

    /// One held payment.
    pub async fn approval(&self, id: String) -> Result<Option<ApprovalRecord>, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"
            ))?
            .query_row([&id], approval_row)
            .optional()
        })
        .await
    }

    /// Held payments still waiting at `now`.
    pub async fn pending_approvals(&self, now: i64) -> Result<Vec<ApprovalRecord>, LedgerError> {
        self.run(move |t| {
            let mut st = t.prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' AND expires_at > ?1 ORDER BY created_at, id"
            ))?;
            let rows = st.query_map([now], approval_row)?;
            rows.collect()
        })
        .await
    }

    /// One agent's held payments, newest first.
    pub async fn agent_approvals(
        &self,
        agent: String,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |t| {
            let mut st = t.prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE agent = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![agent, limit], approval_row)?;
            rows.collect()
        })
        .await
    }

    /// Decides a pending approval (approved/denied only while unexpired).
    pub async fn decide_approval(
        &self,
        id: String,
        state: ApprovalState,
        by: String,
        at: i64,
    ) -> Result<Option<ApprovalRecord>, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4
                 WHERE id = ?1 AND state = 'pending' AND (?2 = 'expired' OR expires_at > ?4)",
            )?
            .execute(params![id, state.as_str(), by, at])?;
            t.prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"
            ))?
            .query_row([&id], approval_row)
            .optional()
        })
        .await
    }

    /// Claims an alert key; true the first time.
    pub async fn claim_alert(&self, key: String, at: i64) -> Result<bool, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "INSERT INTO alerts_sent (key, at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![key, at])
            .map(|n| n == 1)
        })
        .await
    }

    /// The last settled price of a flight.
    pub async fn last_price(
        &self,
        agent: String,
        origin: String,
        flight: String,
    ) -> Result<Option<Msat>, LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "SELECT amount_msat FROM payments
                 WHERE agent = ?1 AND origin = ?2 AND status = 'settled' AND COALESCE(services, scope) = ?3
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            )?
            .query_row(params![agent, origin, flight], |r| msat_at(r, 0))
            .optional()
        })
        .await
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError> {
        self.run(move |t| {
            let mut st = t.prepare_cached(
                "SELECT at, who, action, agent, detail FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit.max(1) as i64], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    who: r.get(1)?,
                    action: r.get(2)?,
                    agent: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// Brings the schema to the newest version, each step in its own transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
        let txn = conn.transaction()?;
        txn.execute_batch(step)?;
        txn.pragma_update(None, "user_version", (i + 1) as i64)?;
        txn.commit()?;
    }
    Ok(())
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

impl Journal {
    /// The highest settled price of any service of `agent` at `origin` (the price-jump guard's
    /// reference for a service new there). A negative stored amount cannot be right.
    pub async fn highest_price(
        &self,
        agent: String,
        origin: String,
    ) -> Result<Option<Msat>, LedgerError> {
        let highest = self
            .run(move |t| {
                t.prepare_cached(
                    "SELECT MAX(amount_msat) FROM payments
                     WHERE agent = ?1 AND origin = ?2 AND status = 'settled'",
                )?
                .query_row(params![agent, origin], |r| r.get::<_, Option<i64>>(0))
            })
            .await?;
        highest
            .map(|v| {
                u64::try_from(v).map(Msat).map_err(|_| {
                    LedgerError::Inconsistent(format!("a settled payment of {v} msat"))
                })
            })
            .transpose()
    }
}
