//! The kill switch and the breakers through the admin API: `POST /v1/pause-all` stops every new
//! payment on every replica (pass-through and cached tokens keep working, held approvals are
//! denied, in-flight payments finish and are recorded), `POST /v1/resume-all` lifts it, and
//! `POST /v1/agents/{name}/resume` lifts an agent's tripped breaker. Each change is audited;
//! repeating one changes nothing and is still `200`.

use super::agents::{parse, record};
use super::render::{error, json, rfc3339};
use crate::body::Body;
use crate::guardrails::stops::Change;
use crate::ledger::{Stop, FLEET};
use crate::proxy::Shared;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest reason kept with a pause.
const REASON_MAX: usize = 200;

/// One stop as the API shows it.
pub fn stop(s: &Stop) -> Value {
    json!({
        "scope": if s.scope == FLEET { "fleet" } else { "agent" },
        "agent": (s.scope != FLEET).then_some(&s.scope),
        "by": s.by,
        "reason": s.reason,
        "at": s.at,
        "at_rfc3339": rfc3339(s.at),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/pause-all` (body optional: `{"reason": "…"}`).
pub async fn pause_all(shared: &Shared, body: &[u8]) -> Response<Body> {
    let parsed: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match parse(body, "{\"reason\"?: string}") {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let reason = parsed
        .reason
        .map(|r| crate::core::text::shown(r.trim(), REASON_MAX).into_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "paused by the operator".into());
    let now = shared.clock.now();
    match shared
        .guardrails
        .pause_fleet(&*shared.ledger, &reason, now)
        .await
    {
        Ok(change) => {
            if change.changed {
                record(
                    shared,
                    "fleet.pause",
                    "",
                    format!(
                        "{reason}; {} held payment(s) denied",
                        change.approvals_denied
                    ),
                )
                .await;
            }
            answer(true, &change)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /v1/resume-all`.
pub async fn resume_all(shared: &Shared) -> Response<Body> {
    match shared.guardrails.resume_fleet(&*shared.ledger).await {
        Ok(change) => {
            if let (true, Some(lifted)) = (change.changed, &change.stop) {
                record(
                    shared,
                    "fleet.resume",
                    "",
                    format!("lifted the stop by {} ({})", lifted.by, lifted.reason),
                )
                .await;
            }
            answer(false, &change)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `POST /v1/agents/{name}/resume`: lifts the agent's stop (a tripped breaker).
pub async fn resume_agent(shared: &Shared, name: &str) -> Response<Body> {
    if shared.agents.load().get(name).is_none() {
        return error(StatusCode::NOT_FOUND, "no such agent");
    }
    match shared.guardrails.resume_agent(&*shared.ledger, name).await {
        Ok(change) => {
            if let (true, Some(lifted)) = (change.changed, &change.stop) {
                record(
                    shared,
                    "agent.resume",
                    name,
                    format!("lifted the stop by {} ({})", lifted.by, lifted.reason),
                )
                .await;
            }
            json(
                StatusCode::OK,
                &json!({
                    "agent": name,
                    "stopped": false,
                    "changed": change.changed,
                    "lifted": change.stop.as_ref().map(stop),
                }),
            )
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The answer to a pause or resume: the state now, and whether this call changed it.
fn answer(paused: bool, change: &Change) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({
            "paused": paused,
            "changed": change.changed,
            "stop": change.stop.as_ref().map(stop),
            "approvals_denied": change.approvals_denied,
        }),
    )
}
