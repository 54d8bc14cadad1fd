//! The operator's records: declines, the API's agents, the audit log and claimed alert keys.

use super::rows::non_negative;
use super::Journal;
use crate::agents::StoredAgent;
use crate::core::Msat;
use crate::ledger::{AuditEntry, DeclineFilter, DeclineRecord, LedgerError};
use rusqlite::params;

impl Journal {
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
                    d.amount.map(|a| a.stored()),
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
                    d.amount.map(|a| a.stored()),
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
                        .map(|v| non_negative(5, v).map(Msat::new))
                        .transpose()?,
                    created_at: r.get(6)?,
                    count: r.get::<_, i64>(7)?.max(1) as u64,
                })
            })?;
            rows.collect()
        })
        .await
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
}
