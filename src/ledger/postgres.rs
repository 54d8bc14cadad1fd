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

pub mod schema;
pub mod tls;

use super::{
    ApprovalRecord, ApprovalState, AuditEntry, Begun, DeclineFilter, DeclineRecord, Flight, Ledger,
    LedgerError, LimitSet, NewPayment, PaymentFilter, PaymentRecord, PaymentState, StoredToken,
};
use crate::agents::StoredAgent;
use crate::budget::{limit_for, BudgetView};
use crate::config::{Limits, PostgresConfig};
use crate::core::decline::{Period, Whose};
use crate::core::window::Window;
use crate::core::{Clock, Decline, Msat, PaymentHash, Preimage};
use crate::pay::dialect::StoredCredential;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{NoTls, Row};

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

/// The error with its causes (tokio-postgres says only "db error" at the top).
fn unavailable(e: impl std::error::Error) -> LedgerError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    LedgerError::Unavailable(format!("PostgreSQL: {text}"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> LedgerError {
    unavailable(e)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
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

    /// Runs the reservation inside `txn`: increments the usage rows of every window (agent
    /// first, then the operator: one lock order for everyone, so no deadlock) and checks the
    /// results against the limits. Returns the decline when a limit would pass.
    async fn reserve(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
        starts: &[i64; 4],
        amount: Msat,
        limits: LimitSet<'_>,
    ) -> Result<Option<Decline>, LedgerError> {
        let stmt = txn
            .prepare_cached(
                "INSERT INTO l402_usage (owner, period, start, msat) VALUES
                 ($1, 'hour', $3, $7), ($1, 'day', $4, $7), ($1, 'week', $5, $7), ($1, 'month', $6, $7), ($1, 'total', 0, $7),
                 ($2, 'hour', $3, $7), ($2, 'day', $4, $7), ($2, 'week', $5, $7), ($2, 'month', $6, $7), ($2, 'total', 0, $7)
                 ON CONFLICT (owner, period, start) DO UPDATE SET msat = l402_usage.msat + EXCLUDED.msat
                 RETURNING owner, period, msat",
            )
            .await
            .map_err(unavailable)?;
        let totals = txn
            .prepare_cached("SELECT total_msat FROM l402_totals WHERE agent = $1")
            .await
            .map_err(unavailable)?;
        // Pipelined, one round trip.
        let msat = i(amount.0);
        let usage: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &agent, &OPERATOR, &starts[0], &starts[1], &starts[2], &starts[3], &msat,
        ];
        let owner: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&agent];
        let (rows, total_override) =
            tokio::try_join!(txn.query(&stmt, &usage), txn.query_opt(&totals, &owner))
                .map_err(unavailable)?;
        let total_override = total_override.map(|r| Msat(u(r.get(0))));
        for row in rows {
            let owner: String = row.get(0);
            let period: String = row.get(1);
            let after = Msat(u(row.get(2)));
            let (whose, limits) = if owner == OPERATOR {
                (Whose::Operator, limits.operator)
            } else {
                (Whose::Agent, limits.agent)
            };
            let (period, limit) = match period.as_str() {
                "total" => (
                    Period::Total,
                    match whose {
                        Whose::Agent => total_override.or(limits.total_sats.map(Msat::from_sats)),
                        Whose::Operator => limits.total_sats.map(Msat::from_sats),
                    },
                ),
                name => {
                    let Some(w) = Window::ALL.into_iter().find(|w| w.name_short() == name) else {
                        continue;
                    };
                    (Period::Window(w), limit_for(limits, w))
                }
            };
            if let Some(limit) = limit {
                if after > limit {
                    return Ok(Some(Decline::OverLimit {
                        whose,
                        period,
                        used: after.saturating_sub(amount),
                        amount,
                        limit,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Adds `delta` msat (negative to give back) to the usage rows of a payment's windows.
    async fn adjust(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
        starts: &[i64; 4],
        delta: i64,
    ) -> Result<(), LedgerError> {
        if delta == 0 {
            return Ok(());
        }
        // Lock the rows in the order `reserve` does (the agent's, then the operator's; hour to
        // total), or a settle and a concurrent begin each hold what the other waits for.
        let lock = txn
            .prepare_cached(
                "SELECT 1 FROM l402_usage
                 WHERE owner IN ($1, $2) AND ((period = 'hour' AND start = $3) OR (period = 'day' AND start = $4)
                 OR (period = 'week' AND start = $5) OR (period = 'month' AND start = $6) OR period = 'total')
                 ORDER BY owner = $2, CASE period WHEN 'hour' THEN 0 WHEN 'day' THEN 1 WHEN 'week' THEN 2
                 WHEN 'month' THEN 3 ELSE 4 END
                 FOR UPDATE",
            )
            .await
            .map_err(unavailable)?;
        let update = txn
            .prepare_cached(
                "UPDATE l402_usage SET msat = GREATEST(msat + $7, 0)
                 WHERE owner IN ($1, $2) AND ((period = 'hour' AND start = $3) OR (period = 'day' AND start = $4)
                 OR (period = 'week' AND start = $5) OR (period = 'month' AND start = $6) OR period = 'total')",
            )
            .await
            .map_err(unavailable)?;
        // Pipelined, one round trip: the server runs them in the order sent, the lock first.
        let rows: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &agent, &OPERATOR, &starts[0], &starts[1], &starts[2], &starts[3], &delta,
        ];
        tokio::try_join!(txn.query(&lock, &rows[..6]), txn.execute(&update, &rows))
            .map_err(unavailable)?;
        Ok(())
    }

    async fn begin_inner(
        &self,
        p: &NewPayment,
        limits: LimitSet<'_>,
    ) -> Result<Result<Begun, Decline>, LedgerError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        let starts = Window::ALL.map(|w| w.start(p.created_at));
        let hash = p.hash.to_hex();
        let (token, scheme) = match &p.credential {
            Some(c) => (c.token.as_str(), Some(c.scheme.as_str())),
            None => ("", None),
        };
        let flight = p.service.as_deref().unwrap_or(&p.scope);
        let fields: [&(dyn tokio_postgres::types::ToSql + Sync); 21] = [
            &hash,
            &&*p.agent,
            &p.host,
            &p.origin,
            &p.dialect,
            &flight,
            &i(p.amount.0),
            &i(p.fee_reserve.0),
            &p.bolt11,
            &token,
            &scheme,
            &p.service,
            &p.scope,
            &p.token_expires_at.map(i),
            &self.replica,
            &starts[0],
            &starts[1],
            &starts[2],
            &starts[3],
            &p.created_at,
            &p.created_at,
        ];
        let insert = txn
            .prepare_cached(
                "INSERT INTO l402_payments (payment_hash, agent, host, origin, dialect, flight, amount_msat, fee_reserve_msat,
                 status, bolt11, token, scheme, services, scope, token_expires_at, owner, w_hour, w_day, w_week, w_month,
                 created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                 ON CONFLICT (payment_hash) DO NOTHING RETURNING 1",
            )
            .await
            .map_err(unavailable)?;
        let claimed = txn
            .query_opt(&insert, &fields)
            .await
            .map_err(unavailable)?
            .is_some();
        if !claimed {
            let known = txn
                .query_one(
                    "SELECT status, agent, origin, preimage, fee_msat FROM l402_payments WHERE payment_hash = $1 FOR UPDATE",
                    &[&hash],
                )
                .await
                .map_err(unavailable)?;
            let status: String = known.get(0);
            match status.as_str() {
                "settled" => {
                    let preimage: Option<String> = known.get(3);
                    let proof = match preimage {
                        Some(hex) => Some(Preimage::verify_hex(&hex, &p.hash).map_err(|_| {
                            LedgerError::Inconsistent(
                                "a stored preimage does not match its hash".into(),
                            )
                        })?),
                        None => None,
                    };
                    return Ok(Ok(Begun::Settled {
                        agent: known.get(1),
                        origin: known.get(2),
                        proof,
                        fee: Msat(u(known.get::<_, Option<i64>>(4).unwrap_or(0))),
                    }));
                }
                "pending" => return Ok(Ok(Begun::InFlight)),
                _ => {
                    // A failed attempt: this hash may be tried again, as a fresh payment.
                    let retry = txn
                        .prepare_cached(
                            "UPDATE l402_payments SET agent = $2, host = $3, origin = $4, dialect = $5, flight = $6,
                             amount_msat = $7, fee_reserve_msat = $8, status = 'pending', bolt11 = $9, token = $10,
                             scheme = $11, services = $12, scope = $13, token_expires_at = $14, owner = $15,
                             w_hour = $16, w_day = $17, w_week = $18, w_month = $19, created_at = $20, updated_at = $21,
                             fee_msat = NULL, failure = NULL, preimage = NULL, scopes = '', token_retired = FALSE
                             WHERE payment_hash = $1 AND status = 'failed'",
                        )
                        .await
                        .map_err(unavailable)?;
                    txn.execute(&retry, &fields).await.map_err(unavailable)?;
                }
            }
        }
        let reserve = p.amount.saturating_add(p.fee_reserve);
        if let Some(decline) = self
            .reserve(&txn, &p.agent, &starts, reserve, limits)
            .await?
        {
            txn.rollback().await.map_err(unavailable)?;
            return Ok(Err(decline));
        }
        txn.commit().await.map_err(unavailable)?;
        Ok(Ok(Begun::Fresh))
    }
}

impl Window {
    /// The period's name in the usage table.
    fn name_short(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }
}

const PAYMENT_COLUMNS: &str =
    "payment_hash, agent, host, origin, dialect, amount_msat, fee_msat, fee_reserve_msat, status, \
     created_at, updated_at, failure, token, scheme, services, scope, token_expires_at, scopes, preimage";

fn payment_row(r: &Row) -> Result<PaymentRecord, LedgerError> {
    let hash: String = r.get(0);
    let status: String = r.get(8);
    let token: String = r.get(12);
    let scheme: Option<String> = r.get(13);
    Ok(PaymentRecord {
        hash: PaymentHash::from_hex(&hash)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment hash {hash:?}")))?,
        agent: r.get(1),
        host: r.get(2),
        origin: r.get(3),
        dialect: r.get(4),
        amount: Msat(u(r.get(5))),
        fee: r.get::<_, Option<i64>>(6).map(|v| Msat(u(v))),
        fee_reserve: Msat(u(r.get(7))),
        state: PaymentState::parse(&status)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment status {status:?}")))?,
        created_at: r.get(9),
        updated_at: r.get(10),
        failure: r.get(11),
        credential: match scheme {
            Some(scheme) if !token.is_empty() => Some(StoredCredential { scheme, token }),
            _ => None,
        },
        service: r.get(14),
        scope: r.get(15),
        token_expires_at: r.get::<_, Option<i64>>(16).map(u),
    })
}

/// A settled row as a stored token, its proof verified on the way out.
fn token_row(r: &Row) -> Option<StoredToken> {
    let record = payment_row(r).ok()?;
    let preimage: Option<String> = r.get(18);
    let scopes: String = r.get(17);
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

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "l402-proxy".to_string())
}

async fn beat_once(client: &tokio_postgres::Client, replica: &str) -> Result<(), LedgerError> {
    client
        .execute(
            "INSERT INTO l402_replicas (id, heartbeat_at, started_at)
             VALUES ($1, EXTRACT(EPOCH FROM now())::bigint, EXTRACT(EPOCH FROM now())::bigint)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
            &[&replica],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Announces this replica every second, and records whether the database answered.
async fn heartbeat(pool: Pool, replica: String, up: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match tokio::time::timeout(Duration::from_secs(3), async {
            let client = pool.get().await.map_err(pool_err)?;
            beat_once(&client, &replica).await
        })
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if up.load(Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the PostgreSQL ledger is unreachable: payments are refused (store-unavailable) until it is back");
                }
                false
            }
            Err(_) => false,
        };
        if ok && !up.load(Ordering::Relaxed) {
            tracing::info!("the PostgreSQL ledger is back: payments resume");
        }
        up.store(ok, Ordering::Relaxed);
    }
}

/// Where announcements from other replicas go.
struct Sinks {
    tokens: mpsc::UnboundedSender<StoredToken>,
    agents: mpsc::UnboundedSender<()>,
    own_settles: Arc<OwnSettles>,
}

/// Listens for tokens other replicas store and agent changes they make, and feeds them to this
/// process. Reconnects with a pause when the connection drops.
async fn listen(
    pg: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    pool: Pool,
    sinks: Sinks,
) {
    loop {
        if let Err(e) = listen_once(&pg, tls.as_ref(), &pool, &sinks).await {
            tracing::debug!(error = %e, "ledger listener stopped; reconnecting");
        }
        if sinks.tokens.is_closed() {
            return;
        }
        // A change may have been missed while the connection was down.
        let _ = sinks.agents.send(());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    pg: &tokio_postgres::Config,
    tls: Option<&rustls::ClientConfig>,
    pool: &Pool,
    sinks: &Sinks,
) -> Result<(), LedgerError> {
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<(String, String)>();
    let client = match tls {
        Some(tls) => {
            let (client, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()))
                .await
                .map_err(unavailable)?;
            tokio::spawn(forward_notifications(conn, notes_tx));
            client
        }
        None => {
            let (client, conn) = pg.connect(NoTls).await.map_err(unavailable)?;
            tokio::spawn(forward_notifications(conn, notes_tx));
            client
        }
    };
    client
        .batch_execute(&format!("LISTEN {TOKENS_CHANNEL}; LISTEN {AGENTS_CHANNEL}"))
        .await
        .map_err(unavailable)?;
    // Notifications sent while no connection listened are gone: nothing to skip any more.
    sinks.own_settles.clear();
    while let Some((channel, payload)) = notes.recv().await {
        if channel == AGENTS_CHANNEL {
            if sinks.agents.send(()).is_err() {
                return Ok(());
            }
            continue;
        }
        if sinks.own_settles.take(&payload) {
            continue;
        }
        let Ok(c) = pool.get().await else {
            continue;
        };
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM l402_payments WHERE payment_hash = $1 AND status = 'settled'
             AND preimage IS NOT NULL AND token_retired = FALSE AND scheme IS NOT NULL"
        );
        let Ok(stmt) = c.prepare_cached(&sql).await else {
            continue;
        };
        if let Ok(Some(row)) = c.query_opt(&stmt, &[&payload]).await {
            if let Some(token) = token_row(&row) {
                if sinks.tokens.send(token).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Err(LedgerError::Unavailable(
        "PostgreSQL: the listening connection closed".into(),
    ))
}

/// Drives a listening connection, passing each notification's channel and payload on.
async fn forward_notifications<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notes: mpsc::UnboundedSender<(String, String)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::future::poll_fn;
    while let Some(message) = poll_fn(|cx| conn.poll_message(cx)).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                let note = (n.channel().to_string(), n.payload().to_string());
                if notes.send(note).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn agent_row(r: &Row) -> Result<StoredAgent, LedgerError> {
    let limits: String = r.get(2);
    let hosts: String = r.get(3);
    let bad = |e: serde_json::Error| LedgerError::Inconsistent(format!("a stored agent: {e}"));
    Ok(StoredAgent {
        name: r.get(0),
        key_sha256: r.get(1),
        limits: serde_json::from_str(&limits).map_err(bad)?,
        hosts: serde_json::from_str(&hosts).map_err(bad)?,
        paused: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    })
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
                "SELECT status, agent, amount_msat, fee_reserve_msat, w_hour, w_day, w_week, w_month, scheme IS NOT NULL
                 FROM l402_payments WHERE payment_hash = $1 FOR UPDATE",
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = txn.query_opt(&select, &[&hex]).await.map_err(unavailable)? else {
            return Err(LedgerError::Inconsistent(format!(
                "settling a payment the ledger does not know: {}",
                hash.short()
            )));
        };
        let status: String = row.get(0);
        let agent: String = row.get(1);
        let (amount, reserve): (i64, i64) = (row.get(2), row.get(3));
        let starts = [row.get(4), row.get(5), row.get(6), row.get(7)];
        let keep_proof: bool = row.get(8);
        let delta = match status.as_str() {
            "settled" => return Ok(()),
            // The reservation still holds amount + reserve: give the unused reserve back.
            "pending" => i(fee.0) - reserve,
            // Released as failed, yet the money moved after all: count it again.
            _ => amount + i(fee.0),
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
            self.adjust(&txn, &agent, &starts, delta),
            async {
                txn.execute(&update, &[&hex, &i(fee.0), &preimage, &now, &self.replica])
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
                 RETURNING agent, amount_msat, fee_reserve_msat, w_hour, w_day, w_week, w_month",
            )
            .await
            .map_err(unavailable)?;
        let row = txn
            .query_opt(&update, &[&hex, &reason, &now])
            .await
            .map_err(unavailable)?;
        if let Some(row) = row {
            let agent: String = row.get(0);
            let held: i64 = row.get::<_, i64>(1) + row.get::<_, i64>(2);
            let starts = [row.get(3), row.get(4), row.get(5), row.get(6)];
            self.adjust(&txn, &agent, &starts, -held).await?;
        }
        txn.commit().await.map_err(unavailable)
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
        let client = self.client().await?;
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
                    &d.amount.map(|a| i(a.0)),
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
                        &d.amount.map(|a| i(a.0)),
                        &i(d.count),
                        &d.created_at,
                    ],
                )
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn declines(&self, filter: DeclineFilter) -> Result<Vec<DeclineRecord>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT agent, host, path, code, detail, amount_msat, created_at, count FROM l402_declines
                 WHERE ($1::text IS NULL OR agent = $1) ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&filter.agent, &i(filter.limit.max(1) as u64)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| DeclineRecord {
                agent: r.get(0),
                host: r.get(1),
                path: r.get(2),
                code: r.get(3),
                detail: r.get(4),
                amount: r.get::<_, Option<i64>>(5).map(|v| Msat(u(v))),
                created_at: r.get(6),
                count: u(r.get::<_, i64>(7)).max(1),
            })
            .collect())
    }

    async fn payments(&self, filter: PaymentFilter) -> Result<Vec<PaymentRecord>, LedgerError> {
        let client = self.client().await?;
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

    async fn set_total(
        &self,
        agent: &str,
        total: Option<Msat>,
        now: i64,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        match total {
            Some(total) => client
                .execute(
                    "INSERT INTO l402_totals (agent, total_msat, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (agent) DO UPDATE SET total_msat = $2, updated_at = $3",
                    &[&agent, &i(total.0), &now],
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

    async fn total_override(&self, agent: &str) -> Result<Option<Msat>, LedgerError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT total_msat FROM l402_totals WHERE agent = $1",
                &[&agent],
            )
            .await
            .map_err(unavailable)?
            .map(|r| Msat(u(r.get(0)))))
    }

    async fn operator_budget(&self, limits: &Limits) -> Result<BudgetView, LedgerError> {
        self.budget(OPERATOR, limits).await
    }

    async fn budget(&self, agent: &str, limits: &Limits) -> Result<BudgetView, LedgerError> {
        let client = self.client().await?;
        let now = self.clock.now();
        let starts = Window::ALL.map(|w| w.start(now));
        let rows = client
            .query(
                "SELECT period, msat FROM l402_usage WHERE owner = $1 AND ((period = 'hour' AND start = $2)
                 OR (period = 'day' AND start = $3) OR (period = 'week' AND start = $4)
                 OR (period = 'month' AND start = $5) OR period = 'total')",
                &[&agent, &starts[0], &starts[1], &starts[2], &starts[3]],
            )
            .await
            .map_err(unavailable)?;
        let mut spent = [Msat::ZERO; 4];
        let mut total = Msat::ZERO;
        for row in rows {
            let period: String = row.get(0);
            let msat = Msat(u(row.get(1)));
            match period.as_str() {
                "total" => total = msat,
                name => {
                    if let Some(idx) = Window::ALL.iter().position(|w| w.name_short() == name) {
                        spent[idx] = msat;
                    }
                }
            }
        }
        let over = client
            .query_opt(
                "SELECT total_msat FROM l402_totals WHERE agent = $1",
                &[&agent],
            )
            .await
            .map_err(unavailable)?
            .map(|r| Msat(u(r.get(0))));
        Ok(BudgetView::new(agent, limits, over, spent, total))
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        // Every operation commits before it answers.
        Ok(())
    }

    async fn api_agents(&self) -> Result<Vec<StoredAgent>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, key_sha256, limits, hosts, paused, created_at, updated_at FROM l402_agents ORDER BY name",
                &[],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(agent_row).collect()
    }

    async fn create_agent(&self, a: &StoredAgent) -> Result<bool, LedgerError> {
        self.write_agent(a, true).await
    }

    async fn update_agent(&self, a: &StoredAgent) -> Result<bool, LedgerError> {
        self.write_agent(a, false).await
    }

    async fn delete_agent(&self, name: &str) -> Result<bool, LedgerError> {
        let mut client = self.client().await?;
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

    async fn audit(&self, e: AuditEntry) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO l402_audit (at, who, action, agent, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&e.at, &e.who, &e.action, &e.agent, &e.detail],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_approval(&self, a: &ApprovalRecord) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                &format!("INSERT INTO l402_approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                &[
                    &a.id,
                    &a.agent,
                    &a.host,
                    &a.service,
                    &i(a.amount.0),
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

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, LedgerError> {
        let client = self.client().await?;
        approval_by_id(&client, id).await
    }

    async fn pending_approvals(&self, now: i64) -> Result<Vec<ApprovalRecord>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {APPROVAL_COLUMNS} FROM l402_approvals WHERE state = 'pending' AND expires_at > $1 ORDER BY created_at, id"),
                &[&now],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(approval_row).collect()
    }

    async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        at: i64,
    ) -> Result<Option<ApprovalRecord>, LedgerError> {
        let client = self.client().await?;
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

    async fn claim_alert(&self, key: &str, at: i64) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO l402_alerts_sent (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &at],
            )
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn last_price(
        &self,
        agent: &str,
        origin: &str,
        flight: &str,
    ) -> Result<Option<Msat>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT amount_msat FROM l402_payments
                 WHERE agent = $1 AND origin = $2 AND flight = $3 AND status = 'settled'
                 ORDER BY created_at DESC LIMIT 1",
                &[&agent, &origin, &flight],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| Msat(r.get::<_, i64>(0).max(0) as u64)))
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at, who, action, agent, detail FROM l402_audit ORDER BY id DESC LIMIT $1",
                &[&i(limit.max(1) as u64)],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get(0),
                who: r.get(1),
                action: r.get(2),
                agent: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }
}

const APPROVAL_COLUMNS: &str = "id, agent, host, service, amount_msat, payment_hash, created_at, expires_at, state, decided_by, decided_at";

/// The approval `id`, as it stands.
async fn approval_by_id(
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

fn approval_row(r: &tokio_postgres::Row) -> Result<ApprovalRecord, LedgerError> {
    let hash: String = r.get(5);
    let state: String = r.get(8);
    Ok(ApprovalRecord {
        id: r.get(0),
        agent: r.get(1),
        host: r.get(2),
        service: r.get(3),
        amount: Msat(r.get::<_, i64>(4).max(0) as u64),
        payment_hash: PaymentHash::from_hex(&hash).ok_or_else(|| {
            LedgerError::Inconsistent(format!(
                "approval {}: bad payment hash",
                r.get::<_, String>(0)
            ))
        })?,
        created_at: r.get(6),
        expires_at: r.get(7),
        state: ApprovalState::parse(&state).ok_or_else(|| {
            LedgerError::Inconsistent(format!(
                "approval {}: bad state {state:?}",
                r.get::<_, String>(0)
            ))
        })?,
        decided_by: r.get(9),
        decided_at: r.get(10),
    })
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
