//! Stored rows read back as types: every column through `try_get`, so a type that does not
//! match (a schema this build does not know) is an inconsistent ledger, never a panic, and no
//! stored amount is wrapped or clamped into a decision.

use super::super::{
    ApprovalRecord, ApprovalState, LedgerError, PaymentRecord, PaymentState, StoredToken,
};
use super::unavailable;
use crate::agents::StoredAgent;
use crate::core::window::Window;
use crate::core::{Msat, PaymentHash, Preimage};
use crate::pay::dialect::StoredCredential;
use tokio_postgres::Row;

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored amount, which is never negative: a negative one is an inconsistent ledger, not a
/// number to wrap or clamp into a limit decision.
pub(super) fn non_negative(v: i64) -> Result<u64, LedgerError> {
    u64::try_from(v)
        .map_err(|_| LedgerError::Inconsistent(format!("a negative stored amount: {v}")))
}

/// A column of a row, or [`LedgerError::Inconsistent`] naming it when its type is not the one
/// expected (a schema this build does not know): never a panic.
pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, LedgerError> {
    row.try_get(index)
        .map_err(|e| LedgerError::Inconsistent(format!("column {index} of a stored row: {e}")))
}

impl Window {
    /// The period's name in the usage table.
    pub(super) fn name_short(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }
}

pub(super) const PAYMENT_COLUMNS: &str =
    "payment_hash, agent, host, origin, dialect, amount_msat, fee_msat, fee_reserve_msat, status, \
     created_at, updated_at, failure, token, scheme, services, scope, token_expires_at, scopes, preimage, purchase, sellers";

pub(super) fn payment_row(r: &Row) -> Result<PaymentRecord, LedgerError> {
    let hash: String = get(r, 0)?;
    let status: String = get(r, 8)?;
    let token: String = get(r, 12)?;
    let scheme: Option<String> = get(r, 13)?;
    Ok(PaymentRecord {
        hash: PaymentHash::from_hex(&hash)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment hash {hash:?}")))?,
        agent: get(r, 1)?,
        host: get(r, 2)?,
        origin: get(r, 3)?,
        dialect: get(r, 4)?,
        amount: Msat::new(u(get(r, 5)?)),
        fee: get::<Option<i64>>(r, 6)?.map(|v| Msat::new(u(v))),
        fee_reserve: Msat::new(u(get(r, 7)?)),
        state: PaymentState::parse(&status)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment status {status:?}")))?,
        created_at: get(r, 9)?,
        updated_at: get(r, 10)?,
        failure: get(r, 11)?,
        credential: match scheme {
            Some(scheme) if !token.is_empty() => Some(StoredCredential { scheme, token }),
            _ => None,
        },
        service: get(r, 14)?,
        scope: get(r, 15)?,
        token_expires_at: get::<Option<i64>>(r, 16)?.map(u),
        purchase: get(r, 19)?,
        sellers: crate::ledger::sellers_from_text(get::<Option<String>>(r, 20)?.as_deref()),
    })
}

/// A settled row as a stored token, its proof verified on the way out.
pub(super) fn token_row(r: &Row) -> Option<StoredToken> {
    let record = payment_row(r).ok()?;
    let preimage: Option<String> = get(r, 18).ok()?;
    let scopes: String = get(r, 17).ok()?;
    let proof = match Preimage::verify_hex(preimage.as_deref()?, &record.hash) {
        Ok(p) => p,
        Err(_) => {
            tracing::warn!(hash = %record.hash.short(), "ledger preimage does not match its hash; token skipped");
            return None;
        }
    };
    let mut all = vec![record.scope];
    all.extend(
        scopes
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    Some(StoredToken {
        agent: record.agent,
        origin: record.origin,
        credential: record.credential?,
        proof,
        service: record.service,
        scopes: all,
        expires_at: record.token_expires_at,
    })
}

pub(super) fn agent_row(r: &Row) -> Result<StoredAgent, LedgerError> {
    let limits: String = get(r, 2)?;
    let hosts: String = get(r, 3)?;
    let bad = |e: serde_json::Error| LedgerError::Inconsistent(format!("a stored agent: {e}"));
    Ok(StoredAgent {
        name: get(r, 0)?,
        key_sha256: get(r, 1)?,
        limits: serde_json::from_str(&limits).map_err(bad)?,
        hosts: serde_json::from_str(&hosts).map_err(bad)?,
        paused: get(r, 4)?,
        created_at: get(r, 5)?,
        updated_at: get(r, 6)?,
    })
}

pub(super) const APPROVAL_COLUMNS: &str = "id, agent, host, service, amount_msat, payment_hash, created_at, expires_at, state, decided_by, decided_at";

/// The approval `id`, as it stands.
pub(super) async fn approval_by_id(
    client: &deadpool_postgres::Client,
    id: &str,
) -> Result<Option<ApprovalRecord>, LedgerError> {
    let row = client
        .query_opt(
            &format!("SELECT {APPROVAL_COLUMNS} FROM l402_approvals WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(unavailable)?;
    row.as_ref().map(approval_row).transpose()
}

pub(super) fn approval_row(r: &tokio_postgres::Row) -> Result<ApprovalRecord, LedgerError> {
    let id: String = get(r, 0)?;
    let hash: String = get(r, 5)?;
    let state: String = get(r, 8)?;
    Ok(ApprovalRecord {
        agent: get(r, 1)?,
        host: get(r, 2)?,
        service: get(r, 3)?,
        amount: Msat::new(non_negative(get(r, 4)?)?),
        payment_hash: PaymentHash::from_hex(&hash)
            .ok_or_else(|| LedgerError::Inconsistent(format!("approval {id}: bad payment hash")))?,
        created_at: get(r, 6)?,
        expires_at: get(r, 7)?,
        state: ApprovalState::parse(&state).ok_or_else(|| {
            LedgerError::Inconsistent(format!("approval {id}: bad state {state:?}"))
        })?,
        decided_by: get(r, 9)?,
        decided_at: get(r, 10)?,
        id,
    })
}
