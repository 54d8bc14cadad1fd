//! Paid MCP tool calls. Over MCP's streamable HTTP transport a paid `tools/call` does not answer
//! HTTP 402: the payment requirement travels inside the JSON-RPC answer (as `application/json`
//! or one event of a `text/event-stream`), in one of two transports:
//!
//! - MPP (draft-payment-transport-mcp-00): a JSON-RPC error `-32042` whose `data.challenges` are
//!   `Payment` challenges as native JSON; the retry carries
//!   `params._meta["org.paymentauth/credential"] = {challenge, payload: {preimage}}`;
//! - x402 (`specs/transports-v2/mcp.md`): a tool result `isError: true` whose
//!   `structuredContent` (or `content[0].text`) is a `PaymentRequired`; the retry carries
//!   `params._meta["x402/payment"] = PaymentPayload` (bound with the `mcp:1` profile).
//!
//! The layer reads the answer to a single `tools/call` request (never a batch, never a
//! notification), finds the message with the request's `id`, and turns a requirement into the
//! same [`Offer`]s a 402 yields, wrapped in [`McpTerms`]: the tool's name is the service, and
//! the credential is a `_meta` member [`rewrite`] puts into the replayed request (same `id`).

use super::dialect::{mpp, x402, Credential, Offer, Offers, RequestHead, StoredCredential, Terms};
use crate::core::{Decline, PaymentHash, Preimage};
use crate::invoice::Invoice;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::HeaderName;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Map, Value};

/// The `_meta` member of an MPP credential.
pub const MPP_CREDENTIAL: &str = "org.paymentauth/credential";
/// The `_meta` member of an x402 payment.
pub const X402_PAYMENT: &str = "x402/payment";
/// The JSON-RPC error code of an MPP payment requirement.
pub const PAYMENT_REQUIRED_CODE: i64 = -32042;
/// The name under which an MCP credential travels from the purchase to the layer. It is never
/// sent as a header: [`rewrite`] turns it into the request's `_meta`.
pub const META_CREDENTIAL: HeaderName = HeaderName::from_static("x-l402-proxy-mcp-meta");
/// Most of an answer read while looking for the tool call's message; past it the answer passes
/// through unread.
pub const MAX_READ: usize = 1024 * 1024;

/// Longest tool name a paid call is accounted under.
pub const MAX_TOOL: usize = 256;

/// A `tools/call` the agent sent: what the layer needs to recognise its answer.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The JSON-RPC `id` (any JSON value but null).
    pub id: Value,
    /// `params.name`.
    pub tool: String,
}

impl ToolCall {
    /// The tool call `request` is, if it is one (a POSTed single JSON-RPC request object).
    pub fn of(request: &RequestHead<'_>) -> Option<ToolCall> {
        if request.method != http::Method::POST {
            return None;
        }
        let body = request.body?;
        if !body.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        let v: Value = serde_json::from_slice(body).ok()?;
        // The tool names the service in the ledger: a name past MAX_TOOL is not one.
        let tool = v["params"]["name"]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOOL)?;
        (v["jsonrpc"] == "2.0" && v["method"] == "tools/call" && !v["id"].is_null()).then(|| {
            ToolCall {
                id: v["id"].clone(),
                tool: tool.to_string(),
            }
        })
    }
}

/// The framing of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`: the whole body is the message.
    Json,
    /// `text/event-stream`: one event's data is the message.
    Sse,
}

impl Framing {
    /// The framing a `Content-Type` names, when it is one a JSON-RPC answer comes in.
    pub fn of(content_type: Option<&http::HeaderValue>) -> Option<Framing> {
        let t = content_type?.to_str().ok()?.to_ascii_lowercase();
        if t.starts_with("application/json") {
            Some(Framing::Json)
        } else if t.starts_with("text/event-stream") {
            Some(Framing::Sse)
        } else {
            None
        }
    }
}

/// An answer read as far as the tool call's message.
pub struct Read {
    /// The bytes read.
    pub prefix: Bytes,
    /// The rest of the body, unread (`None` once read to its end).
    pub rest: Option<Incoming>,
    /// The JSON-RPC message answering the call, when found.
    pub message: Option<Value>,
}

/// How long an SSE answer is scanned for the call's message: a server asking to be paid says so
/// at once, before running the tool; a tool that runs longer gets its stream passed on, so its
/// progress events are held back no longer than this.
pub const SSE_SCAN: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads `body` until the message answering `id` is complete (JSON: the whole body; SSE: the
/// event carrying it, for at most [`SSE_SCAN`]), at most [`MAX_READ`] bytes. A body error ends
/// the read where it stands.
pub async fn read(mut body: Incoming, framing: Framing, id: &Value) -> Read {
    let mut buf = BytesMut::new();
    let mut events = SseScan::default();
    let deadline = tokio::time::Instant::now() + SSE_SCAN;
    loop {
        if framing == Framing::Sse {
            if let Some(message) = events.scan(&buf, id) {
                return Read {
                    prefix: buf.freeze(),
                    rest: Some(body),
                    message: Some(message),
                };
            }
        }
        if buf.len() > MAX_READ {
            return Read {
                prefix: buf.freeze(),
                rest: Some(body),
                message: None,
            };
        }
        let next = match framing {
            Framing::Json => body.frame().await,
            Framing::Sse => match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(next) => next,
                Err(_) => {
                    return Read {
                        prefix: buf.freeze(),
                        rest: Some(body),
                        message: None,
                    }
                }
            },
        };
        match next {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let message = match framing {
        Framing::Json => serde_json::from_slice::<Value>(&buf)
            .ok()
            .filter(|m| answers(m, id)),
        Framing::Sse => events.scan(&buf, id),
    };
    Read {
        prefix: buf.freeze(),
        rest: None,
        message,
    }
}

/// Where an SSE scan stands: every complete event before `next` has been looked at, so each
/// byte is scanned once however the stream is split into frames.
#[derive(Debug, Default)]
struct SseScan {
    /// Where the next event starts.
    next: usize,
    /// How far the event starting at `next` has been searched for its end.
    searched: usize,
}

impl SseScan {
    /// The message answering `id` among the events completed since the last call.
    fn scan(&mut self, buf: &[u8], id: &Value) -> Option<Value> {
        loop {
            // A terminator may straddle the old end: look 2 bytes back.
            let from = self.next.max(self.searched.saturating_sub(2));
            let Some((end, after)) = event_end(buf, from) else {
                self.searched = buf.len();
                return None;
            };
            let event = buf.get(self.next..end).unwrap_or_default();
            self.next = after;
            self.searched = after;
            if let Some(m) = event_message(event).filter(|m| answers(m, id)) {
                return Some(m);
            }
        }
    }
}

/// The end of the first event whose end lies at or after `from` (a blank line: `\n\n` or
/// `\r\n\r\n`) and where the next one starts.
fn event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = buf.get(from..)?;
    rest.windows(2).enumerate().find_map(|(i, w)| {
        let at = from + i;
        match (w, buf.get(at + 2)) {
            ([b'\n', b'\n'], _) => Some((at, at + 2)),
            ([b'\n', b'\r'], Some(b'\n')) => Some((at, at + 3)),
            _ => None,
        }
    })
}

/// The JSON-RPC message an event's `data:` lines carry.
fn event_message(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// Whether `m` is the JSON-RPC response to `id`.
fn answers(m: &Value, id: &Value) -> bool {
    m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some())
}

/// The message answering `id` among the complete events of an SSE stream.
#[cfg(test)]
fn sse_message(buf: &[u8], id: &Value) -> Option<Value> {
    SseScan::default().scan(buf, id)
}

/// The JSON-RPC error code of an MPP credential that failed verification.
pub const PAYMENT_VERIFICATION_FAILED_CODE: i64 = -32043;

/// Whether a message refuses the payment it was given (MPP's `-32043`, verification failed).
pub fn refuses_payment(message: &Value) -> bool {
    message["error"]["code"].as_i64() == Some(PAYMENT_VERIFICATION_FAILED_CODE)
}

/// Logs what the server says of a paid call: MPP's `_meta["org.paymentauth/receipt"]` or
/// x402's `_meta["x402/payment-response"]` in the result (a missing one is said too).
pub fn log_receipt(agent: &str, origin: &str, tool: &str, message: &Value, hash: &PaymentHash) {
    let meta = &message["result"]["_meta"];
    if let Some(r) = meta.get("org.paymentauth/receipt") {
        tracing::info!(agent, origin, tool, payment_hash = %hash.to_hex(), status = %r["status"], reference = %r["reference"], "MPP receipt for a paid tool call");
    } else if let Some(r) = meta.get("x402/payment-response") {
        let confirms = r["success"] == true && r["transaction"] == hash.to_hex().as_str();
        if confirms {
            tracing::info!(agent, origin, tool, payment_hash = %hash.to_hex(), network = %r["network"], "x402 settlement confirmed for a paid tool call");
        } else {
            tracing::warn!(agent, origin, tool, payment_hash = %hash.to_hex(), report = %r, "x402 payment-response does not confirm this payment");
        }
    } else {
        tracing::info!(agent, origin, tool, payment_hash = %hash.to_hex(), "a paid tool call answered without a receipt");
    }
}

/// Which transport a requirement came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MPP's `-32042`.
    Mpp,
    /// x402's `isError` tool result.
    X402,
}

impl Transport {
    /// The `pay.schemes` name of the dialect it carries.
    pub fn dialect(self) -> &'static str {
        match self {
            Transport::Mpp => "payment",
            Transport::X402 => "x402",
        }
    }
}

/// The payment requirement a message carries, if any: its transport and its offers (for x402,
/// bound with `mcp:1` against `request`).
pub fn requirement(
    message: &Value,
    request: &RequestHead<'_>,
    call: &ToolCall,
) -> Option<(Transport, Offers)> {
    let mut out = Offers::default();
    if let Some(error) = message.get("error") {
        if error["code"].as_i64() != Some(PAYMENT_REQUIRED_CODE) {
            return None;
        }
        let challenges = error["data"]["challenges"].as_array()?;
        for c in challenges {
            match mpp::json_offer(c) {
                Ok(offer) => {
                    out.payable.push(wrap(offer, Transport::Mpp, call));
                    break;
                }
                Err(reason) => out.unsupported.push(("payment", reason)),
            }
        }
        if !out.payable.is_empty() {
            out.unsupported.clear();
        }
        return Some((Transport::Mpp, out));
    }
    let result = message.get("result")?;
    if result["isError"] != true {
        return None;
    }
    let structured = result
        .get("structuredContent")
        .filter(|s| s.get("x402Version").is_some() && s.get("accepts").is_some())
        .cloned()
        .or_else(|| {
            let text = result["content"][0]["text"].as_str()?;
            let v: Value = serde_json::from_str(text).ok()?;
            (v.get("x402Version").is_some() && v.get("accepts").is_some()).then_some(v)
        })?;
    x402::required_offers(structured.to_string().as_bytes(), Some(request), &mut out);
    out.payable = out
        .payable
        .into_iter()
        .map(|o| wrap(o, Transport::X402, call))
        .collect();
    Some((Transport::X402, out))
}

fn wrap(offer: Offer, transport: Transport, call: &ToolCall) -> Offer {
    Offer {
        dialect: offer.dialect,
        invoice: offer.invoice,
        terms: Box::new(McpTerms {
            inner: offer.terms,
            transport,
            tool: call.tool.clone(),
        }),
    }
}

/// A dialect's terms, paid for one tool call: the tool is the service, the credential goes in
/// `_meta`.
#[derive(Debug)]
pub struct McpTerms {
    inner: Box<dyn Terms>,
    transport: Transport,
    tool: String,
}

impl Terms for McpTerms {
    fn check(&self, invoice: &Invoice, body: &[u8], now: u64) -> Result<(), Decline> {
        self.inner.check(invoice, body, now)
    }

    fn service(&self) -> Option<&str> {
        Some(&self.tool)
    }

    fn expires_at(&self) -> Option<u64> {
        None
    }

    fn reusable(&self) -> bool {
        false
    }

    /// The dialect's own credential, decoded back to its JSON and carried as the `_meta`
    /// member of its transport.
    fn credential(&self, proof: &Preimage) -> Result<Credential, Decline> {
        let header = self.inner.credential(proof)?;
        let text = header.value.to_str().unwrap_or("");
        let invalid = || Decline::ChallengeInvalid {
            reason: "the credential could not be carried in MCP _meta".into(),
        };
        let (key, json) = match self.transport {
            Transport::Mpp => (
                MPP_CREDENTIAL,
                URL_SAFE_NO_PAD
                    .decode(text.strip_prefix("Payment ").ok_or_else(invalid)?)
                    .map_err(|_| invalid())?,
            ),
            Transport::X402 => (X402_PAYMENT, STANDARD.decode(text).map_err(|_| invalid())?),
        };
        let value: Value = serde_json::from_slice(&json).map_err(|_| invalid())?;
        let mut meta = Map::new();
        meta.insert(key.to_string(), value);
        Credential::new(
            META_CREDENTIAL,
            &STANDARD.encode(Value::Object(meta).to_string()),
        )
    }

    fn stored(&self) -> Option<StoredCredential> {
        None
    }
}

/// The tool call `body` again, with the `_meta` members of `credential` (an MCP credential)
/// added to `params._meta`; everything else (the `id` too) unchanged. `None` when either is
/// not what it should be.
pub fn rewrite(body: &[u8], credential: &Credential) -> Option<Bytes> {
    let meta: Value =
        serde_json::from_slice(&STANDARD.decode(credential.value.to_str().ok()?).ok()?).ok()?;
    let mut call: Value = serde_json::from_slice(body).ok()?;
    let params = call.get_mut("params")?.as_object_mut()?;
    let target = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()?;
    for (k, v) in meta.as_object()? {
        target.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&call).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests;
