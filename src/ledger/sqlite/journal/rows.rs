//! Row mapping: stored columns to payment and approval records, refusing inconsistent rows.

use crate::core::{Msat, PaymentHash};
use crate::ledger::{ApprovalRecord, ApprovalState, LedgerError, PaymentRecord, PaymentState};
use crate::pay::dialect::StoredCredential;

pub(super) const APPROVAL_COLUMNS: &str = "id, agent, host, service, amount_msat, payment_hash, created_at, expires_at, state, decided_by, decided_at";

pub(super) fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRecord> {
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

pub(super) const PAYMENT_COLUMNS: &str =
    "payment_hash, agent, host, origin, dialect, amount_msat, fee_msat, fee_reserve_msat, status, \
     created_at, updated_at, failure, token, scheme, services, scope, token_expires_at, scopes, purchase, sellers";

/// A stored amount as msat. Amounts are never stored negative: a negative one is refused as
/// an inconsistent row rather than wrapped into a huge number.
pub(super) fn msat_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Msat> {
    non_negative(i, r.get(i)?).map(Msat::new)
}

/// See [`msat_at`].
pub(super) fn non_negative(i: usize, v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Integer,
            format!("a negative stored amount: {v}").into(),
        )
    })
}

pub(super) fn sql_err(e: rusqlite::Error) -> LedgerError {
    LedgerError::Sqlite(std::sync::Arc::new(e))
}

pub(super) fn payment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentRecord> {
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
            .map(|v| non_negative(6, v).map(Msat::new))
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
        sellers: crate::ledger::sellers_from_text(r.get::<_, Option<String>>(19)?.as_deref()),
    })
}

/// A settled row's learned scopes (newline-separated) and its stored preimage.
pub(super) fn token_extras(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(Vec<String>, Option<String>)> {
    let scopes: String = r.get(17)?;
    let preimage: Option<String> = r.get(20)?;
    Ok((
        scopes
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        preimage,
    ))
}
