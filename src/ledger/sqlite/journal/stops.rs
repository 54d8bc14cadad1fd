//! Stops in force: the fleet's kill switch and tripped breakers, kept until resumed.

use super::Journal;
use crate::ledger::{LedgerError, Stop};
use rusqlite::params;

impl Journal {
    /// Every stop in force, oldest first.
    pub async fn stops(&self) -> Result<Vec<Stop>, LedgerError> {
        self.run(|t| {
            let mut st = t.prepare_cached(
                "SELECT scope, by_whom, reason, at FROM stops ORDER BY at, scope",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Stop {
                    scope: r.get(0)?,
                    by: r.get(1)?,
                    reason: r.get(2)?,
                    at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records a stop (replacing none: the caller checked its scope was free).
    pub async fn stop(&self, stop: Stop) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached(
                "INSERT INTO stops (scope, by_whom, reason, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope) DO NOTHING",
            )?
            .execute(params![stop.scope, stop.by, stop.reason, stop.at])
            .map(|_| ())
        })
        .await
    }

    /// Removes the stop of `scope`.
    pub async fn resume(&self, scope: String) -> Result<(), LedgerError> {
        self.run(move |t| {
            t.prepare_cached("DELETE FROM stops WHERE scope = ?1")?
                .execute([scope])
                .map(|_| ())
        })
        .await
    }
}
