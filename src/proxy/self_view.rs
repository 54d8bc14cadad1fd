//! An agent may ask the proxy, through the proxy, what it may still spend:
//! `GET http://l402-proxy.local/balance` (or https). It only ever sees its own budget. (The
//! MCP server at `/mcp` on the same name is [`crate::mcp`].)

use super::Shared;
use crate::agents::Agent;
use crate::body::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

/// The reserved host name answered by the proxy itself.
pub const SELF_HOST: &str = "l402-proxy.local";

/// The agent's own budget (`/` or `/balance`), as JSON.
pub async fn respond(shared: &Shared, agent: &Agent, path: &str) -> Response<Body> {
    let (status, body) = match path {
        "/" | "/balance" => match shared.ledger.budget(&agent.name, &agent.limits).await {
            Ok(view) => {
                match serde_json::to_vec_pretty(&view.with_fee_reserve(shared.fee_reserve())) {
                    Ok(json) => (StatusCode::OK, json),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, b"{}".to_vec()),
                }
            }
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::to_vec(&serde_json::json!({ "error": e.to_string() }))
                    .unwrap_or_default(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            br#"{"error":"try /balance, or /mcp for the MCP server (docs/mcp.md)"}"#.to_vec(),
        ),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
