//! `GET /v1/status`: the one call a dashboard or a script needs to see the proxy at a glance —
//! version, uptime, where agents connect, the wallet and its balance, the store and whether it
//! answers, how many agents and how many payments are in flight, and the policy service
//! payments are asked about (its host, failure mode, timeout and this process's decision
//! counts; never its secret or path).

use super::render::json;
use crate::body::Body;
use crate::ledger::PaymentFilter;
use crate::ledger::PaymentState;
use crate::proxy::Shared;
use http::{Response, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the status waits for the wallet's balance before answering without it.
const BALANCE_WAIT: Duration = Duration::from_secs(3);

/// Facts about this process that `Shared` does not hold.
pub struct Process {
    /// When the admin API started.
    pub started: Instant,
    /// The proxy listener's address, once bound.
    pub proxy_listen: std::sync::OnceLock<SocketAddr>,
}

/// The status document. Every part that depends on a peer (wallet, store) reports its own
/// failure instead of failing the whole answer.
pub async fn status(shared: &Shared, process: &Process) -> Response<Body> {
    let wallet = shared.layer.purchases().book().wallet().clone();
    let balance = match tokio::time::timeout(BALANCE_WAIT, wallet.balance()).await {
        Ok(Ok(msat)) => json!({ "balance_msat": msat.get(), "balance_sats": msat.get() / 1000 }),
        Ok(Err(e)) => json!({ "balance_msat": null, "error": e.to_string() }),
        Err(_) => json!({ "balance_msat": null, "error": "the wallet did not answer within 3 s" }),
    };
    let mut wallet_view = json!({ "backend": wallet.backend() });
    if let (Some(w), Some(b)) = (wallet_view.as_object_mut(), balance.as_object()) {
        w.extend(b.clone());
    }
    let ledger = &shared.ledger;
    let pending = ledger
        .payments(PaymentFilter {
            state: Some(PaymentState::Pending),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .map(|rows| rows.len());
    let policy_hook = shared.guardrails.policy_hook().map(|hook| {
        let [allow, deny, hold, error] = shared.metrics.policy_decisions();
        json!({
            "host": hook.host(),
            "on_failure": hook.on_failure().name(),
            "timeout_ms": u64::try_from(hook.timeout().as_millis()).unwrap_or(u64::MAX),
            "decisions": { "allow": allow, "deny": deny, "hold": hold, "error": error },
        })
    });
    let agents = shared.agents.load();
    let paused = agents.iter().filter(|a| a.paused).count();
    let stops = ledger.stops().await;
    let fleet = match &stops {
        Ok(stops) => match stops.iter().find(|s| s.scope == crate::ledger::FLEET) {
            Some(s) => {
                json!({ "paused": true, "by": s.by, "reason": s.reason, "at": s.at, "at_rfc3339": super::render::rfc3339(s.at) })
            }
            None => json!({ "paused": false }),
        },
        Err(e) => json!({ "paused": null, "error": e.to_string() }),
    };
    let stopped_agents: Vec<&str> = stops
        .as_ref()
        .map(|s| {
            s.iter()
                .filter(|s| s.scope != crate::ledger::FLEET)
                .map(|s| s.scope.as_str())
                .collect()
        })
        .unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": process.started.elapsed().as_secs(),
            "proxy_listen": process.proxy_listen.get().map(|a| a.to_string()),
            "wallet": wallet_view,
            "store": { "backend": ledger.backend(), "up": ledger.available() },
            "agents": { "total": agents.len(), "paused": paused, "stopped": stopped_agents },
            "fleet": fleet,
            "pending_payments": pending.ok(),
            "payments_in_progress_here": shared.layer.purchases().book().in_progress(),
            "policy_hook": policy_hook,
        }),
    )
}
