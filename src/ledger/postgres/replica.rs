//! This replica's presence (a heartbeat other replicas read to take over a dead one's pending
//! payments) and what other replicas announce (tokens they stored, agents they changed), over
//! LISTEN/NOTIFY.

use super::super::{LedgerError, StoredToken};
use super::rows::{token_row, PAYMENT_COLUMNS};
use super::{pool_err, unavailable, OwnSettles, AGENTS_CHANNEL, HEARTBEAT_EVERY, TOKENS_CHANNEL};
use deadpool_postgres::Pool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "l402-proxy".to_string())
}

pub(super) async fn beat_once(
    client: &tokio_postgres::Client,
    replica: &str,
) -> Result<(), LedgerError> {
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

/// Drops the breakers' one-minute usage rows no breaker window can reach any more: older
/// than the longest window (and an hour's margin) before the newest minute row, so the
/// ledger's clock, not this process's, decides (any replica may; the rows are the same for all).
async fn prune_minutes(client: &tokio_postgres::Client) -> Result<(), LedgerError> {
    let keep = i64::from(crate::config::limits::MAX_SPIKE_WINDOW_SECS) + 3600;
    client
        .execute(
            "DELETE FROM l402_usage WHERE period = 'minute'
             AND start < (SELECT MAX(start) FROM l402_usage WHERE period = 'minute') - $1",
            &[&keep],
        )
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Announces this replica every second, and records whether the database answered.
pub(super) async fn heartbeat(pool: Pool, replica: String, up: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        beats += 1;
        let ok = match tokio::time::timeout(Duration::from_secs(3), async {
            let client = pool.get().await.map_err(pool_err)?;
            if beats % 60 == 1 {
                prune_minutes(&client).await?;
            }
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
pub(super) struct Sinks {
    pub(super) tokens: mpsc::UnboundedSender<StoredToken>,
    pub(super) agents: mpsc::UnboundedSender<()>,
    pub(super) own_settles: Arc<OwnSettles>,
}

/// Listens for tokens other replicas store and agent changes they make, and feeds them to this
/// process. Reconnects with a pause when the connection drops.
pub(super) async fn listen(
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

pub(super) async fn listen_once(
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
pub(super) async fn forward_notifications<S, T>(
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
