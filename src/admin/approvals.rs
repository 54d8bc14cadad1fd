//! Held payments through the admin API: `GET /v1/approvals` lists those still waiting (across
//! every replica sharing the ledger), `POST /v1/approvals/{id} {"approve": true|false}` decides
//! one — the agent's request waiting on it goes on at once.

use super::render::{error, json, rfc3339};
use crate::body::Body;
use crate::guardrails::DecideError;
use crate::ledger::ApprovalRecord;
use crate::proxy::Shared;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// One held payment as the API shows it.
pub fn approval(a: &ApprovalRecord) -> Value {
    json!({
        "id": a.id,
        "agent": a.agent,
        "host": a.host,
        "service": a.service,
        "amount_msat": a.amount.get(),
        "payment_hash": a.payment_hash.to_hex(),
        "created_at": a.created_at,
        "created_at_rfc3339": rfc3339(a.created_at),
        "expires_at": a.expires_at,
        "expires_at_rfc3339": rfc3339(a.expires_at),
        "state": a.state.as_str(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at,
    })
}

/// `GET /v1/approvals`.
pub async fn list(shared: &Shared) -> Response<Body> {
    match shared.guardrails.approvals.pending().await {
        Ok(rows) => {
            let rows: Vec<Value> = rows.iter().map(approval).collect();
            json(StatusCode::OK, &json!({ "approvals": rows }))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    approve: bool,
}

/// `POST /v1/approvals/{id}`.
pub async fn decide(shared: &Shared, id: &str, body: &[u8]) -> Response<Body> {
    let decision: Decision = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"approve\": true}} or {{\"approve\": false}}: {e}"),
            )
        }
    };
    match shared
        .guardrails
        .approvals
        .decide(id, decision.approve, super::agents::WHO)
        .await
    {
        // The same decision again: still 200, nothing recorded or announced twice.
        Ok(decided) if !decided.first => json(StatusCode::OK, &approval(&decided.record)),
        Ok(decided) => {
            let record = decided.record;
            super::agents::record(
                shared,
                "approval",
                &record.agent,
                format!(
                    "{} {} ({} msat to {})",
                    if decision.approve {
                        "approved"
                    } else {
                        "denied"
                    },
                    record.id,
                    record.amount.get(),
                    record.host
                ),
            )
            .await;
            json(StatusCode::OK, &approval(&record))
        }
        Err(DecideError::NotFound) => error(StatusCode::NOT_FOUND, "no such approval"),
        Err(e @ DecideError::Decided(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(DecideError::Store(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
