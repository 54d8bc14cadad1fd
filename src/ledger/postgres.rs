//! The shared ledger: every replica and sidecar pointing at one PostgreSQL database shares one
//! truth. The money authority is the database's: a payment is begun in one transaction that
//! claims its hash (the primary key), reserves amount + fee reserve by incrementing the usage
//! rows of every window of the agent and of the operator (row locks serialise concurrent
//! reservations; the transaction rolls back when any limit would pass) and records it pending,
//! owned by this replica. Replicas announce themselves with a heartbeat; pending payments of a
//! replica that stopped beating are taken over by a survivor and reconciled through the wallet.
//! Purchase leases, tokens (announced with LISTEN/NOTIFY), operator overrides and declines live
//! in the database too. When the database cannot be reached, nothing is paid: every money
//! operation fails closed within the pool's timeouts.

mod begin;
mod outbox;
mod records;
mod replica;
mod retention;
mod rows;
pub mod schema;
pub mod tls;

use replica::{beat_once, heartbeat, hostname, listen, Sinks};
use rows::{get, i, payment_row, token_row, PAYMENT_COLUMNS};

use super::{
    ApprovalRecord, ApprovalState, AuditEntry, Begun, Compacted, Compaction, DeclineFilter,
    DeclineRecord, DeliveryOutcome, Flight, Ledger, LedgerError, LimitSet, NewPayment,
    OutboxDelivery, PaymentFilter, PaymentRecord, PaymentState, Stop, StoredToken,
};
use crate::agents::StoredAgent;
use crate::budget::BudgetView;
use crate::config::{Limits, PostgresConfig};
use crate::core::window::Window;
use crate::core::{Clock, Decline, Msat, PaymentHash, Preimage};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

/// A replica whose heartbeat is older than this is presumed dead: its pending payments and
/// leases are taken over.
pub const STALE_AFTER_SECS: i64 = 5;
/// How often a replica beats (and checks the database).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Tokens are restored from payments this recent.
const TOKEN_RESTORE_WINDOW_SECS: i64 = 30 * 86_400;
/// Repeats of one refusal within this many seconds are folded into one record.
const DECLINE_FOLD_SECS: i64 = 60;
/// The NOTIFY channel announcing stored tokens (payload: the payment hash).
const TOKENS_CHANNEL: &str = "l402_tokens";
/// The NOTIFY channel announcing a change of the API's agents (payload: the name).
const AGENTS_CHANNEL: &str = "l402_agents";
/// The usage owner that stands for the operator (agent names are never empty).
const OPERATOR: &str = "";

/// The shared ledger.
pub struct PostgresLedger {
    pool: Pool,
    clock: Arc<dyn Clock>,
    /// This process, as the `owner` of its pending payments and the holder of its leases.
    replica: String,
    up: Arc<AtomicBool>,
    feed: Mutex<Option<mpsc::UnboundedReceiver<StoredToken>>>,
    agent_feed: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    /// Tokens this process is settling: its listener skips their notifications (it has the
    /// token already) instead of reading each back from the database.
    own_settles: Arc<OwnSettles>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Payment hashes (hex) whose token notification this process sent itself. Bounded: beyond
/// [`OwnSettles::CAP`] (a listener long down) a notification is simply read back as any other.
#[derive(Default)]
struct OwnSettles(std::sync::Mutex<std::collections::HashSet<String>>);

impl OwnSettles {
    const CAP: usize = 10_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `hex` as settled here; false when the set is full.
    fn insert(&self, hex: &str) -> bool {
        let mut set = self.lock();
        set.len() < Self::CAP && set.insert(hex.to_string())
    }

    /// Whether `hex` was settled here (forgetting it).
    fn take(&self, hex: &str) -> bool {
        self.lock().remove(hex)
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

impl Drop for PostgresLedger {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads the database URL the config names.
pub fn database_url(config: &PostgresConfig) -> Result<String, LedgerError> {
    crate::config::read_secret(
        config.url_env.as_deref(),
        config.url_file.as_deref(),
        if config.url_env.is_some() {
            "store.postgres.url_env"
        } else {
            "store.postgres.url_file"
        },
    )
    .map_err(|e| LedgerError::Unavailable(e.to_string()))
}

/// The driver's error, kept as the source, with its causes spelled out (tokio-postgres says
/// only "db error" at the top).
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    LedgerError::Postgres {
        text,
        source: Arc::new(e),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> LedgerError {
    unavailable(e)
}

impl PostgresLedger {
    /// Connects to the database at `url` (TLS per `config`), migrates the schema, registers
    /// this replica and starts its heartbeat and token listener.
    pub async fn open(
        url: &str,
        config: &PostgresConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<PostgresLedger, LedgerError> {
        // sslmode / sslrootcert with libpq's meanings, agreeing with store.postgres.tls.
        let target = crate::config::postgres_url::resolve(url, config, "store.postgres.url")
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let mut pg = target.config.clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(3));
        }
        pg.application_name("l402-proxy");
        // No statement may hold a payment up for long: a stuck database fails closed.
        pg.options("-c statement_timeout=10000 -c lock_timeout=5000");
        let (tls, ssl_mode) = tls::client_config(target.tls, target.root.as_ref())
            .map_err(|e| LedgerError::Unavailable(format!("store.postgres.ca_file: {e}")))?;
        pg.ssl_mode(ssl_mode);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(
                pg.clone(),
                tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()),
                manager_config,
            ),
            None => Manager::from_config(pg.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(3)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(unavailable)?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| tls::explain(pool_err(e), &target))?;
            let current = schema::migrate(&mut client).await.map_err(unavailable)? as usize;
            if current > schema::known_version() {
                return Err(LedgerError::Inconsistent(format!(
                    "the database's ledger schema is version {current}, newer than this l402-proxy knows ({}); upgrade this replica",
                    schema::known_version()
                )));
            }
        }
        let replica = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        let up = Arc::new(AtomicBool::new(true));
        let (sink, feed) = mpsc::unbounded_channel();
        let (agent_sink, agent_feed) = mpsc::unbounded_channel();
        let own_settles = Arc::new(OwnSettles::default());
        let mut ledger = PostgresLedger {
            pool,
            clock,
            replica,
            up,
            feed: Mutex::new(Some(feed)),
            agent_feed: Mutex::new(Some(agent_feed)),
            own_settles: own_settles.clone(),
            tasks: Vec::new(),
        };
        ledger.beat().await?;
        ledger.tasks.push(tokio::spawn(heartbeat(
            ledger.pool.clone(),
            ledger.replica.clone(),
            ledger.up.clone(),
        )));
        ledger.tasks.push(tokio::spawn(listen(
            pg,
            tls,
            ledger.pool.clone(),
            Sinks {
                tokens: sink,
                agents: agent_sink,
                own_settles,
            },
        )));
        Ok(ledger)
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    async fn beat(&self) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        beat_once(&client, &self.replica).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.up.store(false, Ordering::Relaxed);
                Err(pool_err(e))
            }
        }
    }
}

#[async_trait::async_trait]
impl Ledger for PostgresLedger {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn available(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn token_feed(&self) -> Option<mpsc::UnboundedReceiver<StoredToken>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn agent_changes(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.agent_feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn begin(&self, payment: NewPayment, limits: LimitSet<'_>) -> Result<Begun, Decline> {
        match self.begin_inner(&payment, limits).await {
            Ok(Err(decline)) => {
                Err(super::trip(self, decline, &payment.agent, payment.created_at).await)
            }
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a pending payment; not paying");
                Err(e.into())
            }
        }
    }

    async fn settle(
        &self,
        hash: PaymentHash,
        fee: Msat,
        proof: &Preimage,
        now: i64,
    ) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        let hex = hash.to_hex();
        let select = txn
            .prepare_cached(
                "SELECT status, agent, amount_msat, fee_reserve_msat, w_hour, w_day, w_week, w_month, scheme IS NOT NULL,
                 created_at, sellers FROM l402_payments WHERE payment_hash = $1 FOR UPDATE",
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = txn.query_opt(&select, &[&hex]).await.map_err(unavailable)? else {
            return Err(LedgerError::Inconsistent(format!(
                "settling a payment the ledger does not know: {}",
                hash.short()
            )));
        };
        let status: String = get(&row, 0)?;
        let agent: String = get(&row, 1)?;
        let (amount, reserve): (i64, i64) = (get(&row, 2)?, get(&row, 3)?);
        let starts = begin::usage_starts(
            [get(&row, 4)?, get(&row, 5)?, get(&row, 6)?, get(&row, 7)?],
            get(&row, 9)?,
        );
        let keep_proof: bool = get(&row, 8)?;
        let sellers = super::sellers_from_text(get::<Option<String>>(&row, 10)?.as_deref());
        let delta = match status.as_str() {
            "settled" => return Ok(()),
            // The reservation still holds amount + reserve: give the unused reserve back.
            "pending" => i(fee.get()) - reserve,
            // Released as failed, yet the money moved after all: count it again.
            _ => amount + i(fee.get()),
        };
        // Settled, and this replica's purchase lease on the payment's flight let go in the same
        // commit: whoever waits on the lease finds the token the moment the lease is gone.
        let update = txn
            .prepare_cached(
                "WITH settled AS (
                   UPDATE l402_payments SET status = 'settled', fee_msat = $2, preimage = $3, failure = NULL,
                   owner = NULL, updated_at = $4 WHERE payment_hash = $1 RETURNING agent, origin, flight)
                 DELETE FROM l402_leases WHERE holder = $5
                   AND key IN (SELECT agent || E'\\n' || origin || E'\\n' || flight FROM settled)",
            )
            .await
            .map_err(unavailable)?;
        let notify = txn
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(unavailable)?;
        let preimage = keep_proof.then(|| proof.to_hex());
        // Pipelined, one round trip: the usage rows (locked in the one lock order), the row,
        // the lease and the announcement, in the order sent.
        tokio::try_join!(
            self.adjust(&txn, &agent, &starts, delta, &sellers),
            async {
                txn.execute(
                    &update,
                    &[&hex, &i(fee.get()), &preimage, &now, &self.replica],
                )
                .await
                .map_err(unavailable)
            },
            async {
                if keep_proof {
                    txn.execute(&notify, &[&TOKENS_CHANNEL, &hex])
                        .await
                        .map_err(unavailable)?;
                }
                Ok(0)
            },
        )?;
        if keep_proof {
            // Marked before the commit, which is when the notification goes out.
            let marked = self.own_settles.insert(&hex);
            let committed = txn.commit().await.map_err(unavailable);
            if committed.is_err() && marked {
                self.own_settles.take(&hex);
            }
            return committed;
        }
        txn.commit().await.map_err(unavailable)
    }

    async fn fail(&self, hash: PaymentHash, reason: &str, now: i64) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        let hex = hash.to_hex();
        let update = txn
            .prepare_cached(
                "UPDATE l402_payments SET status = 'failed', failure = $2, owner = NULL, updated_at = $3
                 WHERE payment_hash = $1 AND status = 'pending'
                 RETURNING agent, amount_msat, fee_reserve_msat, w_hour, w_day, w_week, w_month, created_at, sellers",
            )
            .await
            .map_err(unavailable)?;
        let row = txn
            .query_opt(&update, &[&hex, &reason, &now])
            .await
            .map_err(unavailable)?;
        if let Some(row) = row {
            let agent: String = get(&row, 0)?;
            let held: i64 = get::<i64>(&row, 1)? + get::<i64>(&row, 2)?;
            let starts = begin::usage_starts(
                [get(&row, 3)?, get(&row, 4)?, get(&row, 5)?, get(&row, 6)?],
                get(&row, 7)?,
            );
            let sellers = super::sellers_from_text(get::<Option<String>>(&row, 8)?.as_deref());
            self.adjust(&txn, &agent, &starts, -held, &sellers).await?;
        }
        txn.commit().await.map_err(unavailable)
    }

    async fn payment_state(&self, hash: PaymentHash) -> Result<Option<PaymentState>, LedgerError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT status FROM l402_payments WHERE payment_hash = $1")
            .await
            .map_err(unavailable)?;
        let Some(row) = client
            .query_opt(&stmt, &[&hash.to_hex()])
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let status: String = get(&row, 0)?;
        PaymentState::parse(&status)
            .map(Some)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment status {status:?}")))
    }

    async fn unresolved(&self) -> Result<Vec<PaymentRecord>, LedgerError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE l402_payments SET owner = $1 WHERE status = 'pending' AND (owner IS NULL OR owner = $1
             OR owner NOT IN (SELECT id FROM l402_replicas WHERE heartbeat_at >= EXTRACT(EPOCH FROM now())::bigint - $2))
             RETURNING {PAYMENT_COLUMNS}"
        );
        let rows = client
            .query(&sql, &[&self.replica, &STALE_AFTER_SECS])
            .await
            .map_err(unavailable)?;
        let mut out = rows
            .iter()
            .map(payment_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    async fn lease(&self, flight: &Flight<'_>, ttl: Duration) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // Not granted while a payment for this flight is pending (it may yet settle and
        // serve: wait for it), nor while a live replica holds an unexpired lease.
        let stmt = client
            .prepare_cached(
                "INSERT INTO l402_leases (key, holder, expires_at_ms)
                 SELECT $1, $2, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint + $3
                 WHERE NOT EXISTS (SELECT 1 FROM l402_payments
                                   WHERE status = 'pending' AND agent = $5 AND origin = $6 AND flight = $7)
                 ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at_ms = EXCLUDED.expires_at_ms
                 WHERE l402_leases.holder = EXCLUDED.holder
                    OR l402_leases.expires_at_ms < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint
                    OR l402_leases.holder NOT IN (SELECT id FROM l402_replicas
                                                  WHERE heartbeat_at >= EXTRACT(EPOCH FROM now())::bigint - $4)
                 RETURNING holder",
            )
            .await
            .map_err(unavailable)?;
        let row = client
            .query_opt(
                &stmt,
                &[
                    &flight.key(),
                    &self.replica,
                    &ttl_ms,
                    &STALE_AFTER_SECS,
                    &flight.agent,
                    &flight.origin,
                    &flight.service,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, flight: &Flight<'_>) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM l402_leases WHERE key = $1 AND holder = $2")
            .await
            .map_err(unavailable)?;
        client
            .execute(&stmt, &[&flight.key(), &self.replica])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn find_token(
        &self,
        agent: &str,
        origin: &str,
        service: Option<&str>,
        scope: &str,
        now: u64,
    ) -> Result<Option<StoredToken>, LedgerError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM l402_payments WHERE status = 'settled' AND preimage IS NOT NULL
             AND token_retired = FALSE AND scheme IS NOT NULL AND agent = $1 AND origin = $2
             AND (($3::text IS NOT NULL AND services = $3) OR ($3::text IS NULL AND scope = $4))
             AND (token_expires_at IS NULL OR token_expires_at > $5) ORDER BY created_at DESC LIMIT 1"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(unavailable)?;
        let row = client
            .query_opt(&stmt, &[&agent, &origin, &service, &scope, &i(now)])
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().and_then(token_row))
    }

    async fn live_tokens(&self, now: u64) -> Result<Vec<StoredToken>, LedgerError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM l402_payments WHERE status = 'settled' AND preimage IS NOT NULL
             AND token_retired = FALSE AND scheme IS NOT NULL AND created_at >= $2
             AND (token_expires_at IS NULL OR token_expires_at > $1) ORDER BY created_at ASC"
        );
        let rows = client
            .query(&sql, &[&i(now), &(i(now) - TOKEN_RESTORE_WINDOW_SECS)])
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().filter_map(token_row).collect())
    }

    async fn retire_token(&self, hash: PaymentHash) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE l402_payments SET token_retired = TRUE WHERE payment_hash = $1",
                &[&hash.to_hex()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn learn_scope(&self, hash: PaymentHash, scope: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE l402_payments SET scopes = CASE WHEN scopes = '' THEN $2 ELSE scopes || E'\\n' || $2 END
                 WHERE payment_hash = $1 AND position(E'\\n' || $2 || E'\\n' in E'\\n' || scopes || E'\\n') = 0
                 AND length(scopes) - length(replace(scopes, E'\\n', '')) < 63",
                &[&hash.to_hex(), &scope],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn record_decline(&self, d: DeclineRecord) -> Result<(), LedgerError> {
        records::record_decline(self, d).await
    }

    async fn declines(&self, filter: DeclineFilter) -> Result<Vec<DeclineRecord>, LedgerError> {
        records::declines(self, filter).await
    }

    async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError> {
        records::payments(self, filter).await
    }

    async fn set_total(
        &self,
        agent: &str,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError> {
        records::set_total(self, agent, total, now).await
    }

    async fn total_override(&self, agent: &str) -> Result<Option<Msat>, LedgerError> {
        records::total_override(self, agent).await
    }

    async fn operator_budget(&self, limits: &Limits) -> Result<BudgetView, LedgerError> {
        self.budget(OPERATOR, limits).await
    }

    async fn budget(&self, agent: &str, limits: &Limits) -> Result<BudgetView, LedgerError> {
        records::budget(self, agent, limits).await
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        // Every operation commits before it answers.
        Ok(())
    }

    async fn api_agents(&self) -> Result<Vec<StoredAgent>, LedgerError> {
        records::api_agents(self).await
    }

    async fn create_agent(&self, a: &StoredAgent) -> Result<bool, LedgerError> {
        self.write_agent(a, true).await
    }

    async fn update_agent(&self, a: &StoredAgent) -> Result<bool, LedgerError> {
        self.write_agent(a, false).await
    }

    async fn delete_agent(&self, name: &str) -> Result<bool, LedgerError> {
        records::delete_agent(self, name).await
    }

    async fn audit(&self, e: AuditEntry) -> Result<(), LedgerError> {
        records::audit(self, e).await
    }

    async fn create_approval(&self, a: &ApprovalRecord) -> Result<(), LedgerError> {
        records::create_approval(self, a).await
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, LedgerError> {
        records::approval(self, id).await
    }

    async fn pending_approvals(&self, now: i64) -> Result<Vec<ApprovalRecord>, LedgerError> {
        records::pending_approvals(self, now).await
    }

    async fn agent_approvals(
        &self,
        agent: &str,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, LedgerError> {
        records::agent_approvals(self, agent, limit).await
    }

    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<Option<ApprovalRecord>, LedgerError> {
        records::decide_approval(self, id, state, by, at).await
    }

    async fn claim_alert(&self, key: &str, at: i64) -> Result<bool, LedgerError> {
        records::claim_alert(self, key, at).await
    }

    async fn last_price(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
    ) -> Result<Option<Msat>, LedgerError> {
        records::last_price(self, agent, origin, flight).await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError> {
        records::audit_log(self, limit).await
    }

    async fn stops(&self) -> Result<Vec<Stop>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT scope, by_whom, reason, at FROM l402_stops ORDER BY at, scope",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Stop {
                    scope: get(r, 0)?,
                    by: get(r, 1)?,
                    reason: get(r, 2)?,
                    at: get(r, 3)?,
                })
            })
            .collect()
    }

    async fn stop(&self, stop: &Stop) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO l402_stops (scope, by_whom, reason, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope) DO NOTHING",
                &[&stop.scope, &stop.by, &stop.reason, &stop.at],
            )
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn resume(&self, scope: &str) -> Result<Option<Stop>, LedgerError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        let row = txn
            .query_opt(
                "DELETE FROM l402_stops WHERE scope = $1 RETURNING scope, by_whom, reason, at",
                &[&scope],
            )
            .await
            .map_err(unavailable)?;
        if row.is_some() {
            // The breaker counts afresh: the spend that tripped it no longer counts.
            let owner = if scope == super::FLEET {
                OPERATOR
            } else {
                scope
            };
            txn.execute(
                "DELETE FROM l402_usage WHERE owner = $1 AND period = 'minute'",
                &[&owner],
            )
            .await
            .map_err(unavailable)?;
        }
        txn.commit().await.map_err(unavailable)?;
        match row {
            Some(r) => Ok(Some(Stop {
                scope: get(&r, 0)?,
                by: get(&r, 1)?,
                reason: get(&r, 2)?,
                at: get(&r, 3)?,
            })),
            None => Ok(None),
        }
    }

    async fn highest_price(&self, agent: &str, origin: &str) -> Result<Option<Msat>, LedgerError> {
        records::highest_price(self, agent, origin).await
    }

    async fn queue_deliveries(
        &self,
        deliveries: Vec<OutboxDelivery>,
        cap: usize,
        now_ms: i64,
    ) -> Result<u64, LedgerError> {
        outbox::queue_deliveries(self, deliveries, cap, now_ms).await
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxDelivery>, LedgerError> {
        outbox::claim_deliveries(self, endpoints, holder, now_ms, lease_ms, limit).await
    }

    async fn finish_delivery(
        &self,
        id: &str,
        endpoint: &str,
        outcome: DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        outbox::finish_delivery(self, id, endpoint, outcome, now_ms).await
    }

    async fn compact(&self, round: &Compaction) -> Result<Compacted, LedgerError> {
        retention::compact(self, round).await
    }
}

impl PostgresLedger {
    /// Writes an API agent (a new one, or a replacement) and announces the change.
    async fn write_agent(&self, a: &StoredAgent, create: bool) -> Result<bool, LedgerError> {
        let limits = serde_json::to_string(&a.limits).unwrap_or_else(|_| "{}".into());
        let hosts = serde_json::to_string(&a.hosts).unwrap_or_else(|_| "{}".into());
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        let sql = if create {
            "INSERT INTO l402_agents (name, key_sha256, limits, hosts, paused, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING"
        } else {
            "UPDATE l402_agents SET key_sha256 = $2, limits = $3, hosts = $4, paused = $5, updated_at = $7
             WHERE name = $1 AND $6::bigint IS NOT NULL"
        };
        let n = txn
            .execute(
                sql,
                &[
                    &a.name,
                    &a.key_sha256,
                    &limits,
                    &hosts,
                    &a.paused,
                    &a.created_at,
                    &a.updated_at,
                ],
            )
            .await
            .map_err(unavailable)?;
        txn.execute("SELECT pg_notify($1, $2)", &[&AGENTS_CHANNEL, &a.name])
            .await
            .map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests;
