//! Payments whose outcome is not known yet — a wallet timeout, a crash, a replica that died —
//! keep their budget reserved and their hash claimed until the wallet says how they ended. At
//! start, one pass runs before any new payment; then the reconciler keeps looking in the
//! background.

use super::purchase::Purchases;
use std::sync::Arc;
use std::time::Duration;

/// What the start-up pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StartReport {
    /// Tokens put back in the cache.
    pub tokens: usize,
    /// Payments still unresolved after the first pass.
    pub still_in_flight: usize,
}

/// Fills the token cache from the ledger, then resolves what earlier runs left pending.
pub async fn start(purchases: &Purchases) -> Result<StartReport, crate::ledger::LedgerError> {
    let tokens = purchases.restore_tokens().await?;
    let still_in_flight = purchases.reconcile().await?;
    Ok(StartReport {
        tokens,
        still_in_flight,
    })
}

/// Keeps resolving unresolved payments every `every`, until the task is dropped.
pub fn spawn(purchases: Arc<Purchases>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = purchases.reconcile().await {
                tracing::warn!(error = %e, "reconciliation pass failed; will retry");
            }
        }
    })
}

/// Caches the tokens other processes sharing the ledger buy, as they are announced.
pub fn spawn_token_feed(
    purchases: Arc<Purchases>,
    mut feed: tokio::sync::mpsc::UnboundedReceiver<crate::ledger::StoredToken>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(stored) = feed.recv().await {
            purchases.install_if_new(&stored);
        }
    })
}
