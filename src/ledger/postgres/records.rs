//! What the operator reads and steers, kept in the shared database: declines, the payment
//! list, overrides and budget views, API agents, the audit log, held approvals, once-only alert
//! keys and the prices the price-jump guard compares with.

use super::rows::*;
use super::*;

pub(super) async fn record_decline(
    ledger: &PostgresLedger,
    d: DeclineRecord,
) -> Result<(), LedgerError> {
    let client = ledger.client().await?;
    let folded = client
        .execute(
            "UPDATE l402_declines SET count = count + $4, created_at = $5, detail = $6, path = $7, amount_msat = $8
             WHERE id = (SELECT id FROM l402_declines WHERE agent = $1 AND host = $2 AND code = $3
                         AND created_at >= $5::bigint - $9::bigint ORDER BY id DESC LIMIT 1)",
            &[
                &d.agent,
                &d.host,
                &d.code,
                &i(d.count),
                &d.created_at,
                &d.detail,
                &d.path,
                &d.amount.map(|a| i(a.get())),
                &DECLINE_FOLD_SECS,
            ],
        )
        .await
        .map_err(unavailable)?;
    if folded == 0 {
        client
            .execute(
                "INSERT INTO l402_declines (agent, host, code, detail, path, amount_msat, count, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &d.agent,
                    &d.host,
                    &d.code,
                    &d.detail,
                    &d.path,
                    &d.amount.map(|a| i(a.get())),
                    &i(d.count),
                    &d.created_at,
                ],
            )
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

pub(super) async fn declines(
    ledger: &PostgresLedger,
    filter: DeclineFilter,
) -> Result<Vec<DeclineRecord>, LedgerError> {
    let client = ledger.client().await?;
    let rows = client
        .query(
            "SELECT agent, host, path, code, detail, amount_msat, created_at, count FROM l402_declines
             WHERE ($1::text IS NULL OR agent = $1) ORDER BY created_at DESC, id DESC LIMIT $2",
            &[&filter.agent, &i(filter.limit.max(1) as u64)],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(DeclineRecord {
                agent: get(r, 0)?,
                host: get(r, 1)?,
                path: get(r, 2)?,
                code: get(r, 3)?,
                detail: get(r, 4)?,
                amount: get::<Option<i64>>(r, 5)?.map(|v| Msat::new(u(v))),
                created_at: get(r, 6)?,
                count: u(get::<i64>(r, 7)?).max(1),
            })
        })
        .collect()
}

pub(super) async fn payments(
    ledger: &PostgresLedger,
    filter: PaymentFilter,
) -> Result<Vec<PaymentRecord>, LedgerError> {
    let client = ledger.client().await?;
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM l402_payments WHERE ($1::text IS NULL OR agent = $1)
         AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR host = $3 OR host LIKE $3 || ':%')
         AND ($4::bigint IS NULL OR created_at >= $4) AND ($5::bigint IS NULL OR created_at < $5)
         ORDER BY created_at DESC, payment_hash DESC LIMIT $6"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.agent,
                &filter.state.map(PaymentState::as_str),
                &filter.host,
                &filter.since,
                &filter.until,
                &i(filter.limit.max(1) as u64),
            ],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(payment_row).collect()
}

pub(super) async fn set_total(
    ledger: &PostgresLedger,
    agent: &str,
    total: Option<Msat>,
    now: i64,
) -> Result<(), LedgerError> {
    let client = ledger.client().await?;
    match total {
        Some(total) => client
            .execute(
                "INSERT INTO l402_totals (agent, total_msat, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (agent) DO UPDATE SET total_msat = $2, updated_at = $3",
                &[&agent, &i(total.get()), &now],
            )
            .await
            .map_err(unavailable)?,
        None => client
            .execute("DELETE FROM l402_totals WHERE agent = $1", &[&agent])
            .await
            .map_err(unavailable)?,
    };
    Ok(())
}

pub(super) async fn total_override(
    ledger: &PostgresLedger,
    agent: &str,
) -> Result<Option<Msat>, LedgerError> {
    let client = ledger.client().await?;
    client
        .query_opt(
            "SELECT total_msat FROM l402_totals WHERE agent = $1",
            &[&agent],
        )
        .await
        .map_err(unavailable)?
        .map(|r| get(&r, 0).and_then(non_negative).map(Msat::new))
        .transpose()
}

pub(super) async fn budget(
    ledger: &PostgresLedger,
    agent: &str,
    limits: &Limits,
) -> Result<BudgetView, LedgerError> {
    let client = ledger.client().await?;
    let now = ledger.clock.now();
    let starts = Window::ALL.map(|w| w.start(now));
    let (spent, total) = usage_of(&client, agent, &starts).await?;
    let over = client
        .query_opt(
            "SELECT total_msat FROM l402_totals WHERE agent = $1",
            &[&agent],
        )
        .await
        .map_err(unavailable)?
        .map(|r| get(&r, 0).and_then(non_negative).map(Msat::new))
        .transpose()?;
    let whose = (agent != super::OPERATOR).then_some(agent);
    let mut sellers = Vec::with_capacity(limits.sellers.len());
    for cap in &limits.sellers {
        let owner = crate::budget::seller_owner(whose, cap);
        let (windows, total) = usage_of(&client, &owner, &starts).await?;
        sellers.push(crate::budget::SellerView::new(cap, windows, total));
    }
    Ok(BudgetView::new(agent, limits, over, spent, total).with_sellers(sellers))
}

/// What `owner` (an agent, the operator, or a cap per seller) used in the windows starting at
/// `starts`, and in total.
async fn usage_of(
    client: &deadpool_postgres::Client,
    owner: &str,
    starts: &[i64; 4],
) -> Result<([Msat; 4], Msat), LedgerError> {
    let rows = client
        .query(
            "SELECT period, msat FROM l402_usage WHERE owner = $1 AND ((period = 'hour' AND start = $2)
             OR (period = 'day' AND start = $3) OR (period = 'week' AND start = $4)
             OR (period = 'month' AND start = $5) OR period = 'total')",
            &[&owner, &starts[0], &starts[1], &starts[2], &starts[3]],
        )
        .await
        .map_err(unavailable)?;
    let mut spent = [Msat::ZERO; 4];
    let mut total = Msat::ZERO;
    for row in rows {
        let period: String = get(&row, 0)?;
        let msat = Msat::new(u(get(&row, 1)?));
        match period.as_str() {
            "total" => total = msat,
            name => {
                if let Some(idx) = Window::ALL.iter().position(|w| w.name_short() == name) {
                    spent[idx] = msat;
                }
            }
        }
    }
    Ok((spent, total))
}

pub(super) async fn api_agents(ledger: &PostgresLedger) -> Result<Vec<StoredAgent>, LedgerError> {
    let client = ledger.client().await?;
    let rows = client
        .query(
            "SELECT name, key_sha256, limits, hosts, paused, created_at, updated_at FROM l402_agents ORDER BY name",
            &[],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(agent_row).collect()
}

pub(super) async fn delete_agent(ledger: &PostgresLedger, name: &str) -> Result<bool, LedgerError> {
    let mut client = ledger.client().await?;
    let txn = client.transaction().await.map_err(unavailable)?;
    let n = txn
        .execute("DELETE FROM l402_agents WHERE name = $1", &[&name])
        .await
        .map_err(unavailable)?;
    txn.execute(
        "UPDATE l402_payments SET token_retired = TRUE WHERE agent = $1",
        &[&name],
    )
    .await
    .map_err(unavailable)?;
    txn.execute("SELECT pg_notify($1, $2)", &[&AGENTS_CHANNEL, &name])
        .await
        .map_err(unavailable)?;
    txn.commit().await.map_err(unavailable)?;
    Ok(n == 1)
}

pub(super) async fn audit(ledger: &PostgresLedger, e: AuditEntry) -> Result<(), LedgerError> {
    let client = ledger.client().await?;
    client
        .execute(
            "INSERT INTO l402_audit (at, who, action, agent, detail) VALUES ($1, $2, $3, $4, $5)",
            &[&e.at, &e.who, &e.action, &e.agent, &e.detail],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

pub(super) async fn create_approval(
    ledger: &PostgresLedger,
    a: &ApprovalRecord,
) -> Result<(), LedgerError> {
    let client = ledger.client().await?;
    client
        .execute(
            &format!("INSERT INTO l402_approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &a.id,
                &a.agent,
                &a.host,
                &a.service,
                &i(a.amount.get()),
                &a.payment_hash.to_hex(),
                &a.created_at,
                &a.expires_at,
                &a.state.as_str(),
                &a.decided_by,
                &a.decided_at,
            ],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

pub(super) async fn approval(
    ledger: &PostgresLedger,
    id: &str,
) -> Result<Option<ApprovalRecord>, LedgerError> {
    let client = ledger.client().await?;
    approval_by_id(&client, id).await
}

pub(super) async fn pending_approvals(
    ledger: &PostgresLedger,
    now: i64,
) -> Result<Vec<ApprovalRecord>, LedgerError> {
    let client = ledger.client().await?;
    let rows = client
        .query(
            &format!("SELECT {APPROVAL_COLUMNS} FROM l402_approvals WHERE state = 'pending' AND expires_at > $1 ORDER BY created_at, id"),
            &[&now],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(approval_row).collect()
}

pub(super) async fn agent_approvals(
    ledger: &PostgresLedger,
    agent: &str,
    limit: usize,
) -> Result<Vec<ApprovalRecord>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = ledger.client().await?;
    let rows = client
        .query(
            &format!("SELECT {APPROVAL_COLUMNS} FROM l402_approvals WHERE agent = $1 ORDER BY created_at DESC, id DESC LIMIT $2"),
            &[&agent, &limit],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(approval_row).collect()
}

pub(super) async fn decide_approval(
    ledger: &PostgresLedger,
    id: &str,
    state: ApprovalState,
    by: &str,
    at: i64,
) -> Result<Option<ApprovalRecord>, LedgerError> {
    let client = ledger.client().await?;
    client
        .execute(
            "UPDATE l402_approvals SET state = $2, decided_by = $3, decided_at = $4
             WHERE id = $1 AND state = 'pending' AND ($2 = 'expired' OR expires_at > $4)",
            &[&id, &state.as_str(), &by, &at],
        )
        .await
        .map_err(unavailable)?;
    approval_by_id(&client, id).await
}

pub(super) async fn claim_alert(
    ledger: &PostgresLedger,
    key: &str,
    at: i64,
) -> Result<bool, LedgerError> {
    let client = ledger.client().await?;
    let n = client
        .execute(
            "INSERT INTO l402_alerts_sent (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &at],
        )
        .await
        .map_err(unavailable)?;
    Ok(n == 1)
}

pub(super) async fn last_price(
    ledger: &PostgresLedger,
    agent: &str,
    origin: &str,
    flight: &str,
) -> Result<Option<Msat>, LedgerError> {
    let client = ledger.client().await?;
    let mut row = client
        .query_opt(
            "SELECT amount_msat FROM l402_payments
             WHERE agent = $1 AND origin = $2 AND flight = $3 AND status = 'settled'
             ORDER BY created_at DESC LIMIT 1",
            &[&agent, &origin, &flight],
        )
        .await
        .map_err(unavailable)?;
    if row.is_none() {
        // Older payments removed by retention left their last price here.
        row = client
            .query_opt(
                "SELECT last_msat FROM l402_price_memory WHERE agent = $1 AND origin = $2 AND flight = $3",
                &[&agent, &origin, &flight],
            )
            .await
            .map_err(unavailable)?;
    }
    row.map(|r| get(&r, 0).and_then(non_negative).map(Msat::new))
        .transpose()
}

pub(super) async fn audit_log(
    ledger: &PostgresLedger,
    limit: usize,
) -> Result<Vec<AuditEntry>, LedgerError> {
    let client = ledger.client().await?;
    let rows = client
        .query(
            "SELECT at, who, action, agent, detail FROM l402_audit ORDER BY id DESC LIMIT $1",
            &[&i(limit.max(1) as u64)],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: get(r, 0)?,
                who: get(r, 1)?,
                action: get(r, 2)?,
                agent: get(r, 3)?,
                detail: get(r, 4)?,
            })
        })
        .collect()
}

pub(super) async fn highest_price(
    ledger: &PostgresLedger,
    agent: &str,
    origin: &str,
) -> Result<Option<Msat>, LedgerError> {
    let client = ledger.client().await?;
    let row = client
        .query_one(
            "SELECT GREATEST(
                 (SELECT MAX(amount_msat) FROM l402_payments
                  WHERE agent = $1 AND origin = $2 AND status = 'settled'),
                 (SELECT MAX(highest_msat) FROM l402_price_memory WHERE agent = $1 AND origin = $2))",
            &[&agent, &origin],
        )
        .await
        .map_err(unavailable)?;
    let highest: Option<i64> = row
        .try_get(0)
        .map_err(|e| LedgerError::Inconsistent(format!("highest price: {e}")))?;
    highest
        .map(|v| {
            u64::try_from(v)
                .map(Msat::new)
                .map_err(|_| LedgerError::Inconsistent(format!("a settled payment of {v} msat")))
        })
        .transpose()
}
