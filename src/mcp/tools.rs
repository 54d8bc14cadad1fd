//! The tools an agent calls, with their JSON Schemas: `balance`, `quote`, `fetch`, `payments`,
//! `declines` and `approvals`. Every result carries `structuredContent` (valid against the
//! tool's output schema) and a one-line text an LLM can read; a refusal is `isError: true` with
//! `error.code` (the decline code, as in `x-l402-proxy-decline`) and `error.reason`.
//!
//! Invariant: a tool only ever reads or spends as the calling agent — every ledger query is
//! filtered by its name, every request goes through the payment layer as that agent.

use super::requests;
use crate::agents::Agent;
use crate::proxy::Shared;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Who is calling: the proxy's state and the authenticated agent.
pub struct Caller<'a> {
    /// Everything the proxy shares.
    pub shared: &'a Shared,
    /// The agent, authenticated by its proxy credentials or its bearer token.
    pub agent: &'a Arc<Agent>,
}

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The `structuredContent`.
    pub structured: Value,
    /// The short text summary.
    pub text: String,
    /// A refusal or failure (`isError: true`).
    pub is_error: bool,
}

impl Outcome {
    /// A successful result.
    pub fn ok(structured: Value, text: String) -> Outcome {
        Outcome {
            structured,
            text,
            is_error: false,
        }
    }

    /// A refusal: `error.code` and `error.reason`, plus whatever else `extra` holds.
    pub fn refused(code: &str, reason: &str, extra: Map<String, Value>) -> Outcome {
        let mut structured = extra;
        structured.insert("error".into(), json!({ "code": code, "reason": reason }));
        Outcome {
            structured: Value::Object(structured),
            text: format!("refused ({code}): {reason}"),
            is_error: true,
        }
    }

    /// The MCP `CallToolResult`.
    pub fn into_result(self) -> Value {
        json!({
            "content": [{ "type": "text", "text": self.text }],
            "structuredContent": self.structured,
            "isError": self.is_error,
        })
    }
}

/// The most rows `payments`, `declines` and `approvals` return.
pub const MAX_ROWS: usize = 200;
/// Rows returned when `limit` is not given.
pub const DEFAULT_ROWS: usize = 20;

/// Runs tool `name`; `None` for a tool that does not exist.
pub async fn call(caller: &Caller<'_>, name: &str, args: &Map<String, Value>) -> Option<Outcome> {
    let outcome = match name {
        "balance" => balance(caller).await,
        "quote" => requests::quote(caller, args).await,
        "fetch" => requests::fetch(caller, args).await,
        "payments" => payments(caller, args).await,
        "declines" => declines(caller, args).await,
        "approvals" => approvals(caller, args).await,
        _ => return None,
    };
    caller
        .shared
        .metrics
        .mcp_call(name, if outcome.is_error { "error" } else { "ok" });
    Some(outcome)
}

/// `{"code", "reason"}`: present on refusals only.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Present when the call was refused (isError): the decline code (the value of x-l402-proxy-decline, e.g. over-per-request-limit, daily-limit, host-not-allowed) and a sentence saying why.",
        "properties": { "code": { "type": "string" }, "reason": { "type": "string" } },
        "required": ["code", "reason"]
    })
}

fn msat_windows() -> Value {
    let n = json!({ "type": "integer", "minimum": 0 });
    json!({
        "type": "object",
        "description": "msat per window (calendar hour, day, week from Monday, month, all UTC) and in total; a window without a limit is absent from remaining_msat",
        "properties": { "hourly": n, "daily": n, "weekly": n, "monthly": n, "total": n }
    })
}

fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}

fn request_properties() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert(
        "url".into(),
        json!({ "type": "string", "description": "An absolute http:// or https:// URL" }),
    );
    p.insert(
        "method".into(),
        json!({ "type": "string", "description": "The HTTP method (default GET)" }),
    );
    p.insert(
        "headers".into(),
        json!({
            "type": "object",
            "description": "Request headers, name to value",
            "additionalProperties": { "type": "string" }
        }),
    );
    p.insert(
        "body".into(),
        json!({ "type": "string", "description": "The request body, as text" }),
    );
    p
}

fn history_input(what: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "since": {
                "type": ["integer", "string"],
                "description": format!("Only {what} at or after this time: unix seconds or an RFC 3339 date-time")
            },
            "limit": {
                "type": "integer", "minimum": 1, "maximum": MAX_ROWS,
                "description": format!("At most this many, newest first (default {DEFAULT_ROWS})")
            }
        },
        "additionalProperties": false
    })
}

/// Every tool, as `tools/list` shows it.
pub fn catalogue() -> Vec<Value> {
    let error = error_schema();
    let windows = msat_windows();
    let offer = json!({
        "type": "object",
        "description": "What the server asks to be paid",
        "properties": {
            "dialect": { "type": "string", "description": "l402, payment or x402" },
            "amount_msat": { "type": "integer" },
            "amount_sats": { "type": "integer", "description": "amount_msat rounded up to whole sats" },
            "service": nullable("string"),
            "payment_hash": { "type": "string" },
            "description": nullable("string"),
            "invoice_expires_at": { "type": "integer", "description": "unix seconds" },
            "invoice_expires_in_secs": { "type": "integer" }
        },
        "required": ["dialect"]
    });
    let paid = json!({
        "type": "object",
        "description": "What this request paid (token: paid), or that it rode on a token bought earlier (cached) or by a concurrent request (shared)",
        "properties": {
            "token": { "type": "string", "enum": ["paid", "shared", "cached"] },
            "dialect": nullable("string"),
            "amount_msat": nullable("integer"),
            "fee_msat": nullable("integer"),
            "payment_hash": nullable("string")
        },
        "required": ["token"]
    });
    let payment_row = json!({
        "type": "object",
        "properties": {
            "payment_hash": { "type": "string" },
            "agent": { "type": "string" },
            "host": { "type": "string" },
            "dialect": { "type": "string" },
            "amount_msat": { "type": "integer" },
            "fee_msat": nullable("integer"),
            "status": { "type": "string", "enum": ["pending", "settled", "failed"] },
            "created_at": { "type": "integer" },
            "created_at_rfc3339": { "type": "string" },
            "updated_at": { "type": "integer" },
            "failure": nullable("string")
        },
        "required": ["payment_hash", "host", "amount_msat", "status", "created_at"]
    });
    let decline_row = json!({
        "type": "object",
        "properties": {
            "agent": { "type": "string" },
            "host": { "type": "string" },
            "path": { "type": "string" },
            "code": { "type": "string" },
            "reason": { "type": "string" },
            "amount_msat": nullable("integer"),
            "count": { "type": "integer" },
            "created_at": { "type": "integer" },
            "created_at_rfc3339": { "type": "string" }
        },
        "required": ["host", "code", "reason", "created_at"]
    });
    let approval_row = json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "agent": { "type": "string" },
            "host": { "type": "string" },
            "service": { "type": "string" },
            "amount_msat": { "type": "integer" },
            "payment_hash": { "type": "string" },
            "created_at": { "type": "integer" },
            "created_at_rfc3339": { "type": "string" },
            "expires_at": { "type": "integer" },
            "expires_at_rfc3339": { "type": "string" },
            "state": { "type": "string", "enum": ["pending", "approved", "denied", "expired"] },
            "decided_by": nullable("string"),
            "decided_at": nullable("integer")
        },
        "required": ["id", "host", "amount_msat", "state", "created_at", "expires_at"]
    });
    let quote_in = request_properties();
    let mut fetch_in = request_properties();
    fetch_in.insert(
        "max_sats".into(),
        json!({
            "type": "integer", "minimum": 1,
            "description": "Pay at most this many sats (the invoice amount) for this call; a higher price is declined over-per-request-limit and nothing is paid"
        }),
    );
    vec![
        json!({
            "name": "balance",
            "title": "Budget and balance",
            "description": "This agent's spending limits and where they come from, what it spent (settled plus pending) and has left per window (hour, day, week, month, total), what is pending now, the largest invoice it can pay now (spendable_msat), the operator's caps over all agents that also bind it, and whether the operator paused it.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "agent": { "type": "string" },
                    "paused": { "type": "boolean", "description": "A paused agent pays nothing (declined agent-paused); free requests still pass" },
                    "fleet_paused": { "type": "boolean", "description": "The operator paused every payment (declined fleet-paused); free requests and cached tokens still pass" },
                    "stopped": { "type": ["object", "null"], "description": "This agent's spend-spike breaker tripped: nothing is paid for it (declined agent-stopped) until the operator resumes it" },
                    "limits": { "type": "object", "description": "The agent's limits in sats (per_request_sats, hourly_sats … total_sats, approve_above_sats, rate limits); an absent key is no limit" },
                    "limit_sources": { "type": "object" },
                    "spent_msat": windows,
                    "remaining_msat": windows,
                    "spendable_msat": { "type": "integer", "description": "The largest invoice payable now: the tightest remaining less the fee reserve, capped by per_request_sats; absent with no limit at all" },
                    "pending_msat": { "type": "integer", "description": "Reserved by payments not settled yet (included in spent_msat)" },
                    "pending_payments": { "type": "integer" },
                    "fee_reserve_msat": { "type": "integer", "description": "Held on top of each invoice until its routing fee is known" },
                    "operator": {
                        "type": "object",
                        "description": "The operator's caps over all agents together (in sats), and what remains under them (msat): they bind this agent too",
                        "properties": { "limits": { "type": "object" }, "remaining_msat": windows }
                    },
                    "error": error
                }
            },
            "annotations": { "title": "Budget and balance", "readOnlyHint": true, "openWorldHint": false }
        }),
        json!({
            "name": "quote",
            "title": "What would this cost?",
            "description": "Sends the request to the server WITHOUT paying and reports what it asks (dialect, amount in msat and sats, service, invoice expiry), whether a token this agent already holds would serve it for free, and what the proxy would do under this agent's policy: pay, hold for the operator's approval, or decline (with the decline code and reason). Nothing is paid or reserved. The request does reach the server, so only quote requests that are safe to send twice.",
            "inputSchema": { "type": "object", "properties": quote_in, "required": ["url"], "additionalProperties": false },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "url": { "type": "string" },
                    "status": { "type": "integer", "description": "The server's HTTP status to the unpaid request" },
                    "payment_required": { "type": "boolean" },
                    "offer": offer,
                    "cached_token": { "type": "boolean", "description": "A token this agent holds would serve this request: fetch pays nothing" },
                    "verdict": { "type": "string", "enum": ["free", "cached", "pay", "approval", "decline"], "description": "free: no payment asked; cached: a held token serves it; pay: fetch would pay it now; approval: fetch would wait for the operator; decline: fetch would not pay" },
                    "decline": error_schema(),
                    "spendable_msat": { "type": "integer" },
                    "error": error
                }
            },
            "annotations": { "title": "What would this cost?", "readOnlyHint": true, "openWorldHint": true }
        }),
        json!({
            "name": "fetch",
            "title": "Fetch a URL, paying if asked",
            "description": format!("Makes the HTTP request through the proxy as this agent and pays a 402 challenge (L402, Payment, x402) under every rule of a proxied request: budgets, per-request caps, host rules, approvals, rate limits, the destination guard. max_sats caps the price for this call. Returns the status, headers and body (text, or base64 for binary; at most {} bytes, truncated beyond) and what was paid. A refused payment is isError with the decline code; the server's 402 is in status, headers and body.", requests::BODY_LIMIT),
            "inputSchema": { "type": "object", "properties": fetch_in, "required": ["url"], "additionalProperties": false },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "url": { "type": "string" },
                    "status": { "type": "integer" },
                    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                    "body": { "type": "string" },
                    "body_encoding": { "type": "string", "enum": ["text", "base64"] },
                    "body_bytes": { "type": "integer", "description": "Bytes of body returned" },
                    "truncated": { "type": "boolean", "description": "The body was longer than body_limit_bytes and was cut" },
                    "body_limit_bytes": { "type": "integer" },
                    "timed_out": { "type": "boolean", "description": "The body did not end within http.upstream_response_timeout_secs (a stream): what arrived until then is returned" },
                    "paid": paid,
                    "remaining_msat": { "type": "integer", "description": "Left under the tightest limit after this payment" },
                    "spendable_msat": { "type": "integer" },
                    "max_sats": { "type": "integer" },
                    "error": error
                }
            },
            "annotations": { "title": "Fetch a URL, paying if asked", "readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": true }
        }),
        json!({
            "name": "payments",
            "title": "Payments made",
            "description": "This agent's own payments, newest first: amount, fee, host, dialect, status (pending, settled, failed).",
            "inputSchema": history_input("payments made"),
            "outputSchema": {
                "type": "object",
                "properties": { "payments": { "type": "array", "items": payment_row }, "error": error }
            },
            "annotations": { "title": "Payments made", "readOnlyHint": true, "openWorldHint": false }
        }),
        json!({
            "name": "declines",
            "title": "Payments refused",
            "description": "This agent's own refused payments, newest first: the decline code and reason, host, path and amount (repeats are folded, with a count).",
            "inputSchema": history_input("refusals recorded"),
            "outputSchema": {
                "type": "object",
                "properties": { "declines": { "type": "array", "items": decline_row }, "error": error }
            },
            "annotations": { "title": "Payments refused", "readOnlyHint": true, "openWorldHint": false }
        }),
        json!({
            "name": "approvals",
            "title": "Payments held for the operator",
            "description": "This agent's payments held for the operator's approval (above approve_above_sats), newest first: those still waiting, and how each was decided (approved, denied, expired) and by whom.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "limit": { "type": "integer", "minimum": 1, "maximum": MAX_ROWS, "description": format!("At most this many, newest first (default {DEFAULT_ROWS})") }
                },
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "waiting": { "type": "integer", "description": "How many still wait for the operator" },
                    "approvals": { "type": "array", "items": approval_row },
                    "error": error
                }
            },
            "annotations": { "title": "Payments held for the operator", "readOnlyHint": true, "openWorldHint": false }
        }),
    ]
}

/// A ledger failure as a tool refusal.
fn unavailable(e: impl std::fmt::Display) -> Outcome {
    Outcome::refused("store-unavailable", &e.to_string(), Map::new())
}

/// msat as sats, for people (rounded down: what can still be spent).
fn sats(msat: u64) -> u64 {
    msat / 1000
}

async fn balance(caller: &Caller<'_>) -> Outcome {
    let (shared, agent) = (caller.shared, caller.agent);
    let fee = shared.fee_reserve();
    let view = match shared.ledger.budget(&agent.name, &agent.limits).await {
        Ok(v) => v.with_fee_reserve(fee),
        Err(e) => return unavailable(e),
    };
    let pending = match shared
        .ledger
        .payments(crate::ledger::PaymentFilter {
            agent: Some(agent.name.to_string()),
            state: Some(crate::ledger::PaymentState::Pending),
            limit: crate::admin::query::MAX_LIMIT,
            ..Default::default()
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let pending_msat: u64 = pending.iter().map(|p| p.charged().get()).sum();
    let operator_limits = shared.layer.purchases().operator_limits();
    let operator = match shared.ledger.operator_budget(&operator_limits).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let mut structured = match serde_json::to_value(&view) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    structured.insert("paused".into(), json!(agent.paused));
    // The operator's kill switch, or this agent's tripped breaker, stop it too.
    let stops = shared.ledger.stops().await.unwrap_or_default();
    let fleet_paused = stops.iter().any(|s| s.scope == crate::ledger::FLEET);
    let stopped = stops.iter().find(|s| s.scope == *agent.name);
    structured.insert("fleet_paused".into(), json!(fleet_paused));
    structured.insert(
        "stopped".into(),
        json!(stopped.map(crate::admin::fleet::stop)),
    );
    structured.insert("pending_msat".into(), json!(pending_msat));
    structured.insert("pending_payments".into(), json!(pending.len()));
    structured.insert("fee_reserve_msat".into(), json!(fee.get()));
    structured.insert(
        "operator".into(),
        // What binds this agent; not what other agents spent.
        json!({
            "limits": operator.limits,
            "remaining_msat": operator.remaining_msat,
        }),
    );
    let mut text = format!("{}: ", agent.name);
    if agent.paused {
        text.push_str("PAUSED by the operator, pays nothing; ");
    }
    if fleet_paused {
        text.push_str("ALL PAYMENTS PAUSED by the operator, pays nothing; ");
    }
    if let Some(stop) = stopped {
        text.push_str(&format!(
            "STOPPED ({}) until the operator resumes it, pays nothing; ",
            stop.reason
        ));
    }
    match view.remaining_msat.tightest() {
        Some(left) => text.push_str(&format!(
            "{} sats left under the tightest limit",
            sats(left)
        )),
        None => text.push_str("no spending limit of its own"),
    }
    if let Some(s) = view.spendable_msat {
        text.push_str(&format!(
            ", can pay an invoice of up to {} sats now",
            sats(s)
        ));
    }
    text.push_str(&format!(
        "; {} sats spent in total",
        sats(view.spent_msat.total.unwrap_or(0))
    ));
    if pending_msat > 0 {
        text.push_str(&format!(
            " ({} payment(s) pending, {} sats reserved)",
            pending.len(),
            sats(pending_msat)
        ));
    }
    if let Some(left) = operator.remaining_msat.tightest() {
        text.push_str(&format!(
            "; the operator's caps leave {} sats for all agents",
            sats(left)
        ));
    }
    text.push('.');
    Outcome::ok(Value::Object(structured), text)
}

/// `limit` (1..=[`MAX_ROWS`], default [`DEFAULT_ROWS`]) or the refusal naming it.
fn limit_arg(args: &Map<String, Value>) -> Result<usize, Outcome> {
    match args.get("limit") {
        None | Some(Value::Null) => Ok(DEFAULT_ROWS),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_ROWS as u64).contains(&n) => Ok(n as usize),
            _ => Err(bad_argument(&format!(
                "limit must be a whole number from 1 to {MAX_ROWS}"
            ))),
        },
    }
}

/// `since` (unix seconds or RFC 3339) or the refusal naming it.
fn since_arg(args: &Map<String, Value>) -> Result<Option<i64>, Outcome> {
    match args.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad_argument("since must be whole unix seconds")),
        Some(Value::String(s)) => {
            if let Ok(n) = s.trim().parse::<i64>() {
                return Ok(Some(n));
            }
            time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
                .map(|t| Some(t.unix_timestamp()))
                .map_err(|_| {
                    bad_argument(&format!(
                        "since must be unix seconds or an RFC 3339 date-time (2026-12-01T00:00:00Z), not {s:?}"
                    ))
                })
        }
        Some(_) => Err(bad_argument(
            "since must be unix seconds or an RFC 3339 date-time",
        )),
    }
}

/// A call whose arguments are wrong: refused with `bad-argument`.
pub fn bad_argument(reason: &str) -> Outcome {
    Outcome::refused("bad-argument", reason, Map::new())
}

async fn payments(caller: &Caller<'_>, args: &Map<String, Value>) -> Outcome {
    let (limit, since) = match (limit_arg(args), since_arg(args)) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let rows = match caller
        .shared
        .ledger
        .payments(crate::ledger::PaymentFilter {
            agent: Some(caller.agent.name.to_string()),
            since,
            limit,
            ..Default::default()
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let settled: u64 = rows
        .iter()
        .filter(|r| r.state == crate::ledger::PaymentState::Settled)
        .map(|r| r.charged().get())
        .sum();
    let text = format!(
        "{} payment(s){}; {} sats settled among them (fees included).",
        rows.len(),
        if rows.len() == limit {
            " (the newest; raise limit or set since for more)"
        } else {
            ""
        },
        sats(settled)
    );
    let rows: Vec<Value> = rows.iter().map(crate::admin::render::payment).collect();
    Outcome::ok(json!({ "payments": rows }), text)
}

async fn declines(caller: &Caller<'_>, args: &Map<String, Value>) -> Outcome {
    let (limit, since) = match (limit_arg(args), since_arg(args)) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let rows = match caller
        .shared
        .ledger
        .declines(crate::ledger::DeclineFilter {
            agent: Some(caller.agent.name.to_string()),
            limit,
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    // Newest first: those at or after `since` are a prefix of the list.
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|d| since.is_none_or(|s| d.created_at >= s))
        .collect();
    let text = match rows.first() {
        Some(d) => format!(
            "{} refusal(s); the newest: {} at {} ({}).",
            rows.len(),
            d.code,
            d.host,
            d.detail
        ),
        None => "No refusals recorded.".to_string(),
    };
    let rows: Vec<Value> = rows.iter().map(crate::admin::render::decline).collect();
    Outcome::ok(json!({ "declines": rows }), text)
}

async fn approvals(caller: &Caller<'_>, args: &Map<String, Value>) -> Outcome {
    let limit = match limit_arg(args) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let rows = match caller
        .shared
        .ledger
        .agent_approvals(&caller.agent.name, limit)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let now = caller.shared.clock.now();
    let waiting = rows
        .iter()
        .filter(|a| a.state == crate::ledger::ApprovalState::Pending && a.expires_at > now)
        .count();
    use crate::ledger::ApprovalState as S;
    let decided = |s: S| {
        rows.iter()
            .filter(|a| {
                a.state == s || (s == S::Expired && a.state == S::Pending && a.expires_at <= now)
            })
            .count()
    };
    let text = format!(
        "{waiting} payment(s) waiting for the operator; of the {} listed, {} approved, {} denied, {} expired.",
        rows.len(),
        decided(S::Approved),
        decided(S::Denied),
        decided(S::Expired)
    );
    let rows: Vec<Value> = rows
        .iter()
        .map(|a| {
            let mut v = crate::admin::approvals::approval(a);
            // Past its time and not yet marked: it can no longer be approved.
            if a.state == S::Pending && a.expires_at <= now {
                v["state"] = json!("expired");
            }
            v
        })
        .collect();
    Outcome::ok(json!({ "waiting": waiting, "approvals": rows }), text)
}
