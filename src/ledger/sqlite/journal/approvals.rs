//! Payments held for the operator's approval: created, read and decided.

use super::rows::{approval_row, APPROVAL_COLUMNS};
use super::Journal;
use crate::ledger::{ApprovalRecord, ApprovalState, LedgerError};
use rusqlite::{params, OptionalExtension};

impl Journal {
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
                a.amount.stored(),
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
}
