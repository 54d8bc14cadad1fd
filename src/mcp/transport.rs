//! The streamable HTTP transport of MCP, in its simplest conforming form: each JSON-RPC
//! message is POSTed to `/mcp` and a request is answered with one `application/json` response
//! (a notification or response with 202 and no body). The server opens no SSE stream (GET is
//! 405, as the transport allows) and keeps no session: every call is authenticated on its own,
//! so nothing outlives the HTTP request that carried it.

use super::protocol;
use super::tools::Caller;
use crate::agents::Agent;
use crate::body::{empty, full, Body};
use crate::proxy::Shared;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;

/// The header a client names the negotiated protocol version in (after `initialize`).
pub const PROTOCOL_HEADER: &str = "mcp-protocol-version";

/// Room for JSON around the largest body `fetch` may send (`http.max_replay_body_bytes`,
/// which escaping can double).
const ENVELOPE: usize = 64 * 1024;

/// Answers one HTTP request to the MCP endpoint for `agent` (already authenticated).
pub async fn serve(shared: &Shared, agent: &Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &protocol::error(
                Value::Null,
                protocol::INVALID_REQUEST,
                "POST JSON-RPC messages to this endpoint; this server opens no SSE stream and keeps no session",
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Some(v) = req.headers().get(PROTOCOL_HEADER) {
        let known = v.to_str().is_ok_and(protocol::supported_version);
        if !known {
            return json_response(
                StatusCode::BAD_REQUEST,
                &protocol::error(
                    Value::Null,
                    protocol::INVALID_REQUEST,
                    &format!(
                        "unsupported MCP-Protocol-Version; this server speaks {}",
                        protocol::PROTOCOL_VERSIONS.join(", ")
                    ),
                ),
            );
        }
    }
    let limit = shared.max_body.saturating_mul(2).saturating_add(ENVELOPE);
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &protocol::error(
                    Value::Null,
                    protocol::INVALID_REQUEST,
                    &format!("the message is unreadable or over {limit} bytes"),
                ),
            )
        }
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &protocol::error(
                    Value::Null,
                    protocol::PARSE_ERROR,
                    &format!("not JSON: {e}"),
                ),
            )
        }
    };
    let caller = Caller { shared, agent };
    match protocol::handle(&caller, message).await {
        Some(answer) => json_response(StatusCode::OK, &answer),
        None => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
    }
}

/// `value` as an `application/json` response, never cached.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
