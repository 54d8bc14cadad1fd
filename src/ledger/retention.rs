//! Retention: old payments and declines leave the ledger in small batches, online, after being
//! appended to an archive (when one is configured), without changing any budget.
//!
//! Invariants every store keeps when compacting:
//! - a pending payment is never touched, nor a settled one whose credential may still be used
//!   (not retired, not expired): compaction removes only what nothing will read again;
//! - no payment inside any budget window is removed: the cutoff is never later than the start
//!   of the current week and of the current month ([`payments_cutoff`]);
//! - every settled amount removed is first added to its (agent, origin, day) rollup, which the
//!   `total` limit (and the embedded store's restart) reads, and its price to the price memory
//!   (last price per flight, highest per origin) that the price-jump guard reads;
//! - archived rows are appended (and synced) before they are deleted: a crash in between may
//!   archive a row twice (its hash identifies it), never lose one.

use super::{DeclineRecord, Ledger, LedgerError, PaymentRecord};
use crate::core::window::Window;
use crate::core::Clock;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows removed per batch: small, so no batch holds the store for long.
pub const DEFAULT_BATCH: usize = 500;

/// The latest `created_at` (exclusive) a payment may have to be removed, keeping `days` days:
/// never later than the start of the current week and month, so every window total is kept.
pub fn payments_cutoff(now: i64, days: u32) -> i64 {
    let kept = now.saturating_sub(i64::from(days).saturating_mul(86_400));
    kept.min(Window::Week.start(now))
        .min(Window::Month.start(now))
}

/// The latest `created_at` (exclusive) a decline may have to be removed, keeping `days` days.
pub fn declines_cutoff(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days).saturating_mul(86_400))
}

/// One round of compaction, as asked of a store.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// Remove payments created before this (unix seconds); `None` keeps them all.
    pub payments_before: Option<i64>,
    /// Remove declines created before this (unix seconds); `None` keeps them all.
    pub declines_before: Option<i64>,
    /// Unix seconds now (which credentials are still live).
    pub now: i64,
    /// At most this many rows of each kind.
    pub batch: usize,
    /// Where removed rows are appended first, when set.
    pub archive: Option<Archive>,
}

/// What one round removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Payments removed (rolled up, and archived when an archive is set).
    pub payments: u64,
    /// Declines removed.
    pub declines: u64,
}

impl Compacted {
    /// True when the round removed nothing (the backlog is done).
    pub fn is_empty(&self) -> bool {
        self.payments == 0 && self.declines == 0
    }
}

/// A payment as archived: the audit trail, never a token or a proof.
#[derive(Debug, Serialize)]
struct ArchivedPayment<'a> {
    payment_hash: String,
    agent: &'a str,
    host: &'a str,
    origin: &'a str,
    dialect: &'a str,
    amount_msat: u64,
    fee_msat: Option<u64>,
    state: &'static str,
    created_at: i64,
    updated_at: i64,
    failure: Option<&'a str>,
    service: Option<&'a str>,
    scope: &'a str,
    purchase: Option<&'a str>,
}

/// A decline as archived.
#[derive(Debug, Serialize)]
struct ArchivedDecline<'a> {
    agent: &'a str,
    host: &'a str,
    path: &'a str,
    code: &'a str,
    detail: &'a str,
    amount_msat: Option<u64>,
    created_at: i64,
    count: u64,
}

/// A directory of JSON Lines files (`payments.jsonl`, `declines.jsonl`, mode 0600) that removed
/// rows are appended to, one JSON object a line, synced before the rows are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    /// An archive in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Archive {
        Archive { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file payments are appended to.
    pub fn payments_file(&self) -> PathBuf {
        self.dir.join("payments.jsonl")
    }

    /// The file declines are appended to.
    pub fn declines_file(&self) -> PathBuf {
        self.dir.join("declines.jsonl")
    }

    /// Appends `rows` to `payments.jsonl` and syncs it.
    pub fn append_payments(&self, rows: &[PaymentRecord]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for p in rows {
            let line = ArchivedPayment {
                payment_hash: p.hash.to_hex(),
                agent: &p.agent,
                host: &p.host,
                origin: &p.origin,
                dialect: &p.dialect,
                amount_msat: p.amount.get(),
                fee_msat: p.fee.map(|f| f.get()),
                state: p.state.as_str(),
                created_at: p.created_at,
                updated_at: p.updated_at,
                failure: p.failure.as_deref(),
                service: p.service.as_deref(),
                scope: &p.scope,
                purchase: p.purchase.as_deref(),
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        self.append(&self.payments_file(), &text)
    }

    /// Appends `rows` to `declines.jsonl` and syncs it.
    pub fn append_declines(&self, rows: &[DeclineRecord]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for d in rows {
            let line = ArchivedDecline {
                agent: &d.agent,
                host: &d.host,
                path: &d.path,
                code: &d.code,
                detail: &d.detail,
                amount_msat: d.amount.map(|a| a.get()),
                created_at: d.created_at,
                count: d.count,
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        self.append(&self.declines_file(), &text)
    }

    fn append(&self, file: &Path, text: &[u8]) -> std::io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(file)?;
        f.write_all(text)?;
        f.sync_data()
    }
}

/// Appends on a blocking thread (the archive is a file): the error names the file.
pub(crate) async fn archive_payments(
    archive: &Archive,
    rows: Vec<PaymentRecord>,
) -> Result<(), LedgerError> {
    let a = archive.clone();
    let file = a.payments_file();
    let done = tokio::task::spawn_blocking(move || a.append_payments(&rows)).await;
    archive_result(done, &file)
}

/// As [`archive_payments`], for declines.
pub(crate) async fn archive_declines(
    archive: &Archive,
    rows: Vec<DeclineRecord>,
) -> Result<(), LedgerError> {
    let a = archive.clone();
    let file = a.declines_file();
    let done = tokio::task::spawn_blocking(move || a.append_declines(&rows)).await;
    archive_result(done, &file)
}

fn archive_result(
    done: Result<std::io::Result<()>, tokio::task::JoinError>,
    file: &Path,
) -> Result<(), LedgerError> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(LedgerError::Unavailable(format!(
            "store.retention.archive_dir: cannot append to {}: {e}; nothing was removed",
            file.display()
        ))),
        Err(e) => Err(LedgerError::Unavailable(format!(
            "store.retention.archive_dir: archiving stopped: {e}; nothing was removed"
        ))),
    }
}

/// What to keep, as configured (`store.retention`), for [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Days payments are kept (at least the longest window; the cutoff is clamped regardless).
    pub payments_days: Option<u32>,
    /// Days declines are kept.
    pub declines_days: Option<u32>,
    /// Where removed rows are appended first.
    pub archive: Option<Archive>,
    /// Rows per batch.
    pub batch: usize,
}

impl Policy {
    /// The round to ask of the store at `now`.
    pub fn round(&self, now: i64) -> Compaction {
        Compaction {
            payments_before: self.payments_days.map(|d| payments_cutoff(now, d)),
            declines_before: self.declines_days.map(|d| declines_cutoff(now, d)),
            now,
            batch: self.batch.max(1),
            archive: self.archive.clone(),
        }
    }
}

/// The pause between two batches, so payments queued meanwhile go first.
const BETWEEN_BATCHES: std::time::Duration = std::time::Duration::from_millis(20);

/// Compacts batch after batch until nothing is left to remove at `now`; returns the sum.
pub async fn compact_all(
    ledger: &dyn Ledger,
    policy: &Policy,
    now: i64,
) -> Result<Compacted, LedgerError> {
    let round = policy.round(now);
    let mut all = Compacted::default();
    loop {
        let done = ledger.compact(&round).await?;
        if done.is_empty() {
            return Ok(all);
        }
        all.payments += done.payments;
        all.declines += done.declines;
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
}

/// Runs [`compact_all`] now and every `every` while the ledger is alive (it holds only a weak
/// reference, so closing the ledger ends it). Each run is logged; a failed run is logged and
/// tried again at the next.
pub fn spawn(
    ledger: std::sync::Weak<dyn Ledger>,
    policy: Policy,
    clock: std::sync::Arc<dyn Clock>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(l) = ledger.upgrade() else {
                return;
            };
            match compact_all(l.as_ref(), &policy, clock.now()).await {
                Ok(done) if done.is_empty() => {}
                Ok(done) => tracing::info!(
                    payments = done.payments,
                    declines = done.declines,
                    archived = policy.archive.is_some(),
                    "ledger retention: old rows compacted"
                ),
                Err(e) => tracing::warn!(error = %e, "ledger retention run failed; will try again"),
            }
            drop(l);
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_never_reaches_into_a_budget_window() {
        // Wednesday 2026-12-16 12:00 UTC: the week began Monday the 14th, the month the 1st.
        let now = 1_797_422_400;
        let month = Window::Month.start(now);
        assert_eq!(
            payments_cutoff(now, 1),
            month,
            "one day kept: still the month"
        );
        assert_eq!(payments_cutoff(now, 400), now - 400 * 86_400);
        assert!(payments_cutoff(now, 31) <= month);
        assert_eq!(declines_cutoff(now, 2), now - 2 * 86_400);
    }
}
