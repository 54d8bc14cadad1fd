//! JSON-RPC 2.0 and the MCP methods the server answers: `initialize`, `ping`, `tools/list` and
//! `tools/call`. Notifications (`notifications/initialized`, `notifications/cancelled`, …) and
//! responses from the client are accepted and need no answer. Transport-free: one message in,
//! at most one message out.
//!
//! Invariants: every request gets exactly one response with its own `id`; a failing tool is a
//! `tools/call` *result* with `isError: true` (never a JSON-RPC error, never a dropped
//! connection); only malformed messages, unknown methods and unknown tools are JSON-RPC errors.

use super::tools::{self, Caller};
use serde_json::{json, Map, Value};

/// The protocol versions this server speaks, newest first. A client asking for one of them
/// gets it; any other is answered with the newest (the client then decides).
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// JSON-RPC: the message is not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the parameters are wrong (also an unknown tool name, per MCP).
pub const INVALID_PARAMS: i64 = -32602;

/// What the server tells a client about itself on `initialize`.
const INSTRUCTIONS: &str = "Payments for this agent go through l402-proxy, which pays HTTP 402 \
(L402, Payment, x402) challenges from the operator's Lightning wallet within this agent's \
budget. Call `balance` to see what is left, `quote` to learn what a URL costs and whether it \
would be paid (nothing is paid), `fetch` to make the request and pay for it (set `max_sats` to \
cap this call), and `payments`, `declines`, `approvals` for the history.";

/// A JSON-RPC error response to `id`.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn result(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// Answers one JSON-RPC message from `caller`'s client: `Some(response)` for a request, `None`
/// for a notification or a response (the transport then answers 202 Accepted).
pub async fn handle(caller: &Caller<'_>, message: Value) -> Option<Value> {
    let Value::Object(message) = message else {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "expected one JSON-RPC message (an object); batches are not supported",
        ));
    };
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        if message.contains_key("method") && !message.contains_key("id") {
            // A notification: nothing to answer.
            return None;
        }
        if message.contains_key("result") || message.contains_key("error") {
            // A response to a request of ours: this server sends none, so there is nothing to
            // match it with.
            return None;
        }
        return Some(error(
            message.get("id").cloned().unwrap_or(Value::Null),
            INVALID_REQUEST,
            "a JSON-RPC request needs \"jsonrpc\": \"2.0\", an \"id\" and a \"method\"",
        ));
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "the request id must be a string or an integer",
        ));
    }
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error(id, INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""));
    }
    let params = match message.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Some(error(id, INVALID_PARAMS, "params must be an object")),
    };
    Some(match method {
        "initialize" => result(id, initialize(&params)),
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({ "tools": tools::catalogue() })),
        "tools/call" => match call(caller, &params).await {
            Ok(r) => result(id, r),
            Err(message) => error(id, INVALID_PARAMS, &message),
        },
        other => error(
            id,
            METHOD_NOT_FOUND,
            &format!("no method {other:?}: this server offers tools only (tools/list, tools/call)"),
        ),
    })
}

/// The `initialize` result: the version agreed, tools as the one capability.
fn initialize(params: &Map<String, Value>) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .and_then(|a| PROTOCOL_VERSIONS.iter().find(|v| **v == a))
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": {
            "name": "l402-proxy",
            "title": "l402-proxy: this agent's Lightning payments",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": INSTRUCTIONS,
    })
}

/// `tools/call`: the tool's result, or the message of the JSON-RPC error for an unknown tool or
/// a call without a name.
async fn call(caller: &Caller<'_>, params: &Map<String, Value>) -> Result<Value, String> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or("tools/call needs params.name (a tool from tools/list)")?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err("params.arguments must be an object".into()),
    };
    let outcome = tools::call(caller, name, &args)
        .await
        .ok_or_else(|| format!("unknown tool {name:?}; tools/list names them"))?;
    Ok(outcome.into_result())
}

/// Whether an `MCP-Protocol-Version` header value is one this server speaks.
pub fn supported_version(v: &str) -> bool {
    PROTOCOL_VERSIONS.contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_asked_for_is_agreed_when_spoken_else_the_newest() {
        let asked = |v: &str| {
            let mut p = Map::new();
            p.insert("protocolVersion".into(), json!(v));
            initialize(&p)["protocolVersion"].clone()
        };
        assert_eq!(asked("2025-06-18"), "2025-06-18");
        assert_eq!(asked("2025-11-25"), "2025-11-25");
        assert_eq!(asked("1999-01-01"), PROTOCOL_VERSIONS[0]);
        assert_eq!(
            initialize(&Map::new())["capabilities"],
            json!({ "tools": { "listChanged": false } })
        );
        assert!(supported_version("2025-03-26") && !supported_version("2024-11-05"));
    }
}
