//! The schema's versions and the migration that brings a database file to the newest.

use rusqlite::Connection;

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

/// Version 6: the webhook outbox (deliveries waiting, leased, finished), and what retention
/// keeps of removed payments: spend per (agent, origin, day) and the prices paid.
const SCHEMA_V6: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    host TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'failed', 'dropped')),
    next_at_ms INTEGER NOT NULL,
    lease_holder TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (id, endpoint)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at_ms);
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox (state, created_at_ms);
CREATE TABLE IF NOT EXISTS spend_rollups (
    agent TEXT NOT NULL,
    origin TEXT NOT NULL,
    day INTEGER NOT NULL,
    settled_count INTEGER NOT NULL,
    settled_msat INTEGER NOT NULL,
    failed_count INTEGER NOT NULL,
    PRIMARY KEY (agent, origin, day)
);
CREATE TABLE IF NOT EXISTS price_memory (
    agent TEXT NOT NULL,
    origin TEXT NOT NULL,
    flight TEXT NOT NULL,
    last_msat INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    highest_msat INTEGER NOT NULL,
    PRIMARY KEY (agent, origin, flight)
);
CREATE INDEX IF NOT EXISTS declines_created ON declines (created_at);
";

/// Version 7: payments stopped for the fleet (`*`) or an agent, until the operator resumes.
const SCHEMA_V7: &str = "
CREATE TABLE IF NOT EXISTS stops (
    scope TEXT PRIMARY KEY,
    by_whom TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// Version 8: the caps per seller each payment counts under (owner keys, one per line), so a
/// restart counts it under the same caps; and what retention removed, per set of caps.
const SCHEMA_V8: &str = "
ALTER TABLE payments ADD COLUMN sellers TEXT;
CREATE TABLE IF NOT EXISTS seller_rollups (
    sellers TEXT PRIMARY KEY,
    settled_msat INTEGER NOT NULL
);
";

/// The schema versions, applied in order; `PRAGMA user_version` records the last applied.
const MIGRATIONS: [&str; 8] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
];

/// On a new, empty file: pages freed by retention go back to the file system in small steps
/// (`PRAGMA incremental_vacuum`), which only works when set before the journal mode and the
/// first table. (An older file keeps reusing its freed pages instead; an offline `VACUUM`
/// after `PRAGMA auto_vacuum = INCREMENTAL` converts it.)
pub(super) fn prepare_new_file(conn: &Connection) -> rusqlite::Result<()> {
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    Ok(())
}

/// Brings the schema to the newest version, each step in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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
