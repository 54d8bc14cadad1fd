//! The shared ledger's schema, created and migrated by the proxy on start. Versioned steps run
//! under a transaction-scoped advisory lock, so replicas starting at once apply each step once
//! and in order; a replica meeting a newer schema than it knows refuses to run.

use tokio_postgres::Client;

/// Any constant works, as long as every l402-proxy uses the same: the migrations' lock.
const MIGRATION_LOCK: i64 = 0x1402_0402;

/// Version 1.
const V1: &str = "
CREATE TABLE l402_payments (
    payment_hash TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    origin TEXT NOT NULL,
    dialect TEXT NOT NULL,
    flight TEXT NOT NULL,
    amount_msat BIGINT NOT NULL,
    fee_reserve_msat BIGINT NOT NULL,
    fee_msat BIGINT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'failed')),
    bolt11 TEXT NOT NULL,
    token TEXT NOT NULL DEFAULT '',
    scheme TEXT,
    services TEXT,
    scope TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '',
    token_expires_at BIGINT,
    token_retired BOOLEAN NOT NULL DEFAULT FALSE,
    preimage TEXT,
    failure TEXT,
    owner TEXT,
    w_hour BIGINT NOT NULL,
    w_day BIGINT NOT NULL,
    w_week BIGINT NOT NULL,
    w_month BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX l402_payments_created ON l402_payments (created_at);
CREATE INDEX l402_payments_agent ON l402_payments (agent, created_at);
CREATE INDEX l402_payments_pending ON l402_payments (agent, origin, flight) WHERE status = 'pending';
CREATE INDEX l402_payments_tokens ON l402_payments (agent, origin) WHERE status = 'settled' AND scheme IS NOT NULL;
CREATE TABLE l402_usage (
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    start BIGINT NOT NULL,
    msat BIGINT NOT NULL,
    PRIMARY KEY (owner, period, start)
);
CREATE TABLE l402_totals (
    agent TEXT PRIMARY KEY,
    total_msat BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE l402_declines (
    id BIGSERIAL PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    path TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    amount_msat BIGINT,
    count BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);
CREATE INDEX l402_declines_fold ON l402_declines (agent, host, code, created_at);
CREATE INDEX l402_declines_created ON l402_declines (created_at);
CREATE TABLE l402_leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE l402_replicas (
    id TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL
);
";

/// Version 2: agents made through the admin API, and the audit log of such changes.
const V2: &str = "
CREATE TABLE l402_agents (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL,
    limits TEXT NOT NULL,
    hosts TEXT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE l402_audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    agent TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Version 3: payments held for approval, the once-only keys of alerts already sent, and the
/// index the price-jump guard reads.
const V3: &str = "
CREATE TABLE l402_approvals (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    host TEXT NOT NULL,
    service TEXT NOT NULL,
    amount_msat BIGINT NOT NULL,
    payment_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    decided_by TEXT,
    decided_at BIGINT
);
CREATE INDEX l402_approvals_pending ON l402_approvals (expires_at) WHERE state = 'pending';
CREATE TABLE l402_alerts_sent (
    key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX l402_payments_price ON l402_payments (agent, origin, flight, created_at) WHERE status = 'settled';
";

/// Version 4: the purchase each payment belongs to. At most one payment of a purchase is pending
/// at a time, across every replica: a purchase left unresolved by a timeout or a crash stays
/// open, and nothing else is paid for it, until the wallet says how it ended. (Rows written
/// before this version have no purchase and are not constrained.)
const V4: &str = "
ALTER TABLE l402_payments ADD COLUMN purchase TEXT;
CREATE UNIQUE INDEX l402_payments_open_purchase ON l402_payments (agent, origin, purchase)
    WHERE status = 'pending' AND purchase IS NOT NULL;
";

/// Version 5: the webhook outbox (deliveries waiting, leased to one replica, finished), and
/// what retention keeps of removed payments: spend per (agent, origin, day) and the prices paid.
const V5: &str = "
CREATE TABLE l402_outbox (
    id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    host TEXT NOT NULL,
    event TEXT NOT NULL,
    body BYTEA NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'failed', 'dropped')),
    next_at_ms BIGINT NOT NULL,
    lease_holder TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (id, endpoint)
);
CREATE INDEX l402_outbox_due ON l402_outbox (endpoint, next_at_ms) WHERE state = 'queued';
CREATE INDEX l402_outbox_queued ON l402_outbox (created_at_ms) WHERE state = 'queued';
CREATE INDEX l402_outbox_finished ON l402_outbox (updated_at_ms) WHERE state <> 'queued';
CREATE TABLE l402_spend_rollups (
    agent TEXT NOT NULL,
    origin TEXT NOT NULL,
    day BIGINT NOT NULL,
    settled_count BIGINT NOT NULL,
    settled_msat BIGINT NOT NULL,
    failed_count BIGINT NOT NULL,
    PRIMARY KEY (agent, origin, day)
);
CREATE TABLE l402_price_memory (
    agent TEXT NOT NULL,
    origin TEXT NOT NULL,
    flight TEXT NOT NULL,
    last_msat BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    highest_msat BIGINT NOT NULL,
    PRIMARY KEY (agent, origin, flight)
);
";

/// The unique index that keeps one payment per purchase pending.
pub const OPEN_PURCHASE_INDEX: &str = "l402_payments_open_purchase";

/// Version 6: payments stopped for the fleet (`*`) or an agent by the kill switch or a
/// spend-spike breaker, read by every reservation until the operator resumes.
const V6: &str = "
CREATE TABLE l402_stops (
    scope TEXT PRIMARY KEY,
    by_whom TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
";

/// Version 7: the caps per seller each payment counts under (owner keys, one per line), so its
/// settlement adjusts the same usage rows its reservation took.
const V7: &str = "
ALTER TABLE l402_payments ADD COLUMN sellers TEXT;
";

/// The steps, in order; `l402_schema.version` records how many were applied.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// Brings the schema to the newest version this build knows.
pub async fn migrate(client: &mut Client) -> Result<u32, tokio_postgres::Error> {
    // Everything under the lock, in one transaction: replicas starting at once queue here.
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS l402_schema (version INTEGER NOT NULL)")
        .await?;
    let row = txn
        .query_opt("SELECT version FROM l402_schema", &[])
        .await?;
    let current = match row {
        Some(row) => row.get::<_, i32>(0) as usize,
        None => {
            txn.execute("INSERT INTO l402_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    for step in MIGRATIONS.iter().skip(current) {
        txn.batch_execute(step).await?;
    }
    let newest = MIGRATIONS.len().max(current);
    txn.execute("UPDATE l402_schema SET version = $1", &[&(newest as i32)])
        .await?;
    txn.commit().await?;
    Ok(current as u32)
}

/// The newest schema version this build knows.
pub fn known_version() -> usize {
    MIGRATIONS.len()
}
