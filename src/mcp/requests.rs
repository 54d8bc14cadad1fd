//! The two tools that send a request upstream for the agent. `fetch` hands it to the payment
//! layer exactly as a proxied request is handed ([`crate::pay::PaymentLayer::exchange`]): the
//! token cache, budgets, approvals, host rules, rate limits, the guard, the ledger and the
//! metrics all apply, and `max_sats` only ever tightens the agent's per-request cap. `quote`
//! sends the request without any credential and reads the offer: nothing is paid, reserved,
//! held for approval or recorded as a decline.

use super::tools::{bad_argument, Caller, Outcome};
use crate::body::{self, RequestBody};
use crate::core::decline::Whose;
use crate::core::{Decline, Msat};
use crate::pay::dialect::ResponseHead;
use crate::pay::headers as ours;
use crate::pay::{policy, Outgoing, Upstream};
use crate::proxy::headers::strip_hop_by_hop;
use crate::proxy::responses::ERROR_HEADER;
use crate::proxy::target::{has_invalid_port, Target};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The most body bytes `fetch` returns; the rest is cut and `truncated` set.
pub const BODY_LIMIT: usize = 256 * 1024;

/// A request the agent asked for, checked and ready to go.
struct Prepared {
    target: Target,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    url: String,
}

/// Reads `url`, `method`, `headers` and `body`, or refuses naming the argument that is wrong.
fn prepare(caller: &Caller<'_>, args: &Map<String, Value>) -> Result<Prepared, Outcome> {
    let url = args
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_argument("url is required: an absolute http:// or https:// URL"))?;
    let uri: Uri = url
        .parse()
        .map_err(|_| bad_argument(&format!("url {url:?} is not a valid URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let target = Target::from_absolute(&uri)
        .filter(|_| scheme_ok)
        .ok_or_else(|| {
            bad_argument(&format!(
                "url {url:?} must be absolute, http:// or https://"
            ))
        })?;
    if has_invalid_port(&target.authority) {
        return Err(bad_argument(&format!(
            "url {url:?} names an invalid port (1 to 65535)"
        )));
    }
    if target.host() == crate::proxy::self_view::SELF_HOST {
        return Err(bad_argument(
            "the proxy's own address is not fetched through MCP: call the balance tool",
        ));
    }
    let method = match args.get("method") {
        None | Some(Value::Null) => Method::GET,
        Some(Value::String(m)) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| *m != Method::CONNECT)
            .ok_or_else(|| {
                bad_argument(&format!("method {m:?} is not an HTTP method one can fetch"))
            })?,
        Some(_) => return Err(bad_argument("method must be a string (GET, POST, …)")),
    };
    let mut headers = HeaderMap::new();
    match args.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    bad_argument(&format!("headers: {name:?} is not a header name"))
                })?;
                let v = value
                    .as_str()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                    .ok_or_else(|| {
                        bad_argument(&format!(
                            "headers.{name}: the value must be a string of visible characters"
                        ))
                    })?;
                headers.append(n, v);
            }
        }
        Some(_) => {
            return Err(bad_argument(
                "headers must be an object of header name to value",
            ))
        }
    }
    strip_hop_by_hop(&mut headers);
    // The proxy's own credentials never travel upstream; Host is the URL's authority.
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::HOST);
    // The body's length is the body's: a stated one that differs would corrupt the request.
    headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
        headers.insert(header::HOST, v);
    }
    let body = match args.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::copy_from_slice(s.as_bytes()),
        Some(_) => return Err(bad_argument("body must be a string")),
    };
    if body.len() > caller.shared.max_body {
        return Err(bad_argument(&format!(
            "body is {} bytes; at most {} (http.max_replay_body_bytes) can be sent, since a paid request is sent twice",
            body.len(),
            caller.shared.max_body
        )));
    }
    let uri = target
        .upstream_uri(uri.path_and_query())
        .map_err(|_| bad_argument(&format!("url {url:?} has an invalid path")))?;
    Ok(Prepared {
        target,
        method,
        uri,
        headers,
        body,
        url: url.to_string(),
    })
}

/// The agent's request rate limit, as for a proxied request (the refusal is recorded).
fn rate_limit(caller: &Caller<'_>) -> Result<(), Outcome> {
    let (shared, agent) = (caller.shared, caller.agent);
    match shared.guardrails.rates.request(&agent.name, &agent.limits) {
        Ok(()) => Ok(()),
        Err(d) => {
            // Counted and recorded exactly as for a proxied request.
            drop(crate::proxy::responses::rate_limited(
                shared,
                &agent.name,
                &d,
            ));
            Err(Outcome::refused(d.code(), &d.to_string(), Map::new()))
        }
    }
}

/// The proxy's own answer (guard refusal, upstream unreachable, …) as a refusal.
async fn local_failure(response: Response<crate::body::Body>, url: &str) -> Outcome {
    let code = response
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("proxy-error")
        .to_string();
    let status = response.status().as_u16();
    let read = read_limited(response.into_body(), 4096, Duration::from_secs(5)).await;
    let reason = String::from_utf8_lossy(&read.bytes);
    let reason = reason.trim().trim_start_matches("l402-proxy: ");
    let mut extra = Map::new();
    extra.insert("url".into(), json!(url));
    extra.insert("status".into(), json!(status));
    Outcome::refused(&code, reason, extra)
}

/// What was read of a body.
struct Read {
    bytes: Bytes,
    /// Cut at the size limit.
    truncated: bool,
    /// Cut because it did not end in time (a stream that never ends, a stalled server).
    timed_out: bool,
}

/// Up to `limit` bytes of `body`, read for at most `within`.
async fn read_limited<B>(body: B, limit: usize, within: Duration) -> Read
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = BytesMut::new();
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Read {
                    bytes: buf.freeze(),
                    truncated: false,
                    timed_out: true,
                }
            }
        };
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = limit - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                return Read {
                    bytes: buf.freeze(),
                    truncated: true,
                    timed_out: false,
                };
            }
            buf.extend_from_slice(&data);
        }
    }
    Read {
        bytes: buf.freeze(),
        truncated: false,
        timed_out: false,
    }
}

/// `fetch`: the request through the payment layer as the agent, the answer read back.
pub async fn fetch(caller: &Caller<'_>, args: &Map<String, Value>) -> Outcome {
    let p = match prepare(caller, args) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let max_sats = match args.get("max_sats") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return bad_argument("max_sats must be a whole number of sats, at least 1"),
        },
    };
    if let Err(e) = rate_limit(caller) {
        return e;
    }
    let shared = caller.shared;
    let capped;
    let agent: &Arc<crate::agents::Agent> = match max_sats {
        Some(cap) => {
            capped = Arc::new(caller.agent.with_request_cap(cap));
            &capped
        }
        None => caller.agent,
    };
    let method = p.method.clone();
    let outgoing = Outgoing {
        method: p.method,
        uri: p.uri,
        headers: p.headers,
        body: RequestBody::Buffered(p.body),
        upgrade: false,
        // A tool call's answer is its own: hyper drops the call when the MCP client leaves.
        requester: None,
    };
    let answer = shared
        .layer
        .exchange(&shared.upstream, agent, p.target.destination(), outgoing)
        .await;
    let response = match answer.response {
        Ok(r) => r.map(body::stream),
        // A decline the proxy answers itself (a payment rate limit: 429).
        Err(local) if answer.headers.contains_key(ours::DECLINE_HEADER) => local,
        Err(local) => return local_failure(local, &p.url).await,
    };
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    ours::strip_forged(&mut parts.headers);
    parts.headers.extend(answer.headers.clone());
    let read = read_limited(incoming, BODY_LIMIT, shared.timeouts.upstream_response).await;
    let (bytes, truncated) = (read.bytes, read.truncated);
    let mut out = Map::new();
    out.insert("url".into(), json!(p.url));
    out.insert("status".into(), json!(parts.status.as_u16()));
    out.insert(
        "headers".into(),
        Value::Object(header_object(&parts.headers)),
    );
    let (text_body, encoding) = body_text(&bytes, truncated);
    out.insert("body".into(), json!(text_body));
    out.insert("body_encoding".into(), json!(encoding));
    out.insert("body_bytes".into(), json!(bytes.len()));
    out.insert("truncated".into(), json!(truncated));
    if read.timed_out {
        out.insert("timed_out".into(), json!(true));
    }
    out.insert("body_limit_bytes".into(), json!(BODY_LIMIT));
    if let Some(cap) = max_sats {
        out.insert("max_sats".into(), json!(cap));
    }
    let h = &answer.headers;
    let num = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let text = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(left) = num(ours::REMAINING_HEADER) {
        out.insert("remaining_msat".into(), json!(left));
    }
    if let Some(s) = num(ours::SPENDABLE_HEADER) {
        out.insert("spendable_msat".into(), json!(s));
    }
    if let Some(code) = text(ours::DECLINE_HEADER) {
        let reason = text(ours::REASON_HEADER).unwrap_or_default();
        let mut outcome = Outcome::refused(&code, &reason, out);
        outcome.text = format!(
            "not paid ({code}): {reason}; the server answered {} and nothing was spent{}",
            parts.status.as_u16(),
            match max_sats {
                Some(cap) if code == "over-per-request-limit" => format!(" (max_sats was {cap})"),
                _ => String::new(),
            }
        );
        return outcome;
    }
    let token = text(ours::TOKEN_HEADER);
    let summary = match token.as_deref() {
        Some(kind) => {
            let amount = num(ours::PAID_MSAT_HEADER);
            let fee = num(ours::FEE_MSAT_HEADER);
            out.insert(
                "paid".into(),
                json!({
                    "token": kind,
                    "dialect": text(ours::SCHEME_HEADER),
                    "amount_msat": amount,
                    "fee_msat": fee,
                    "payment_hash": text(ours::PAYMENT_HASH_HEADER),
                }),
            );
            match (kind, amount) {
                ("paid", Some(a)) => format!(
                    "paid {} sats ({a} msat) plus a {} msat routing fee",
                    Msat::new(a).sats_ceil(),
                    fee.unwrap_or(0)
                ),
                ("cached", _) => "paid nothing: a token bought earlier served it".to_string(),
                _ => "paid nothing: rode on a token another request just bought".to_string(),
            }
        }
        None => "nothing to pay".to_string(),
    };
    let summary = format!(
        "{} {}: HTTP {}, {} body bytes{} ({encoding}); {summary}.",
        method,
        p.url,
        parts.status.as_u16(),
        bytes.len(),
        if truncated {
            format!(", truncated at {BODY_LIMIT}")
        } else if read.timed_out {
            format!(
                ", cut after {} s without an end",
                shared.timeouts.upstream_response.as_secs()
            )
        } else {
            String::new()
        },
    );
    Outcome::ok(Value::Object(out), summary)
}

/// Headers as a JSON object (repeated names joined with `, `; values not UTF-8 are lossy).
fn header_object(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_string(), Value::String(joined));
    }
    out
}

/// The body as text when it is UTF-8 (a character cut by truncation is dropped), else base64.
fn body_text(bytes: &[u8], truncated: bool) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), "text"),
        Err(e) if truncated && e.error_len().is_none() => (
            String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
            "text",
        ),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            "base64",
        ),
    }
}

/// `quote`: the request sent without paying, the offer read, the policy asked.
pub async fn quote(caller: &Caller<'_>, args: &Map<String, Value>) -> Outcome {
    let p = match prepare(caller, args) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Err(e) = rate_limit(caller) {
        return e;
    }
    let (shared, agent) = (caller.shared, caller.agent);
    let mut request = Request::new(body::from_bytes(p.body.clone()));
    *request.method_mut() = p.method.clone();
    *request.uri_mut() = p.uri.clone();
    *request.headers_mut() = p.headers.clone();
    let response = match shared.upstream.send(request, false).await {
        Ok(r) => r,
        Err(local) => return local_failure(local, &p.url).await,
    };
    let status = response.status();
    let offers = shared.layer.dialects().offers(&ResponseHead {
        status,
        headers: response.headers(),
        // The request as it would be paid for: an offer bound to another request is refused.
        request: Some(crate::pay::dialect::RequestHead {
            method: &p.method,
            uri: &p.uri,
            headers: &p.headers,
            body: Some(&p.body),
        }),
    });
    drop(response);
    let mut out = Map::new();
    out.insert("url".into(), json!(p.url));
    out.insert("status".into(), json!(status.as_u16()));
    out.insert("payment_required".into(), json!(!offers.is_empty()));
    if offers.is_empty() {
        out.insert("verdict".into(), json!("free"));
        let text = format!(
            "{} answered HTTP {} without asking to be paid: fetch would pay nothing.",
            p.url,
            status.as_u16()
        );
        return Outcome::ok(Value::Object(out), text);
    }
    let Some(offer) = offers.payable.into_iter().next() else {
        let (dialect, reason) = offers
            .unsupported
            .into_iter()
            .next()
            .unwrap_or(("unknown", String::new()));
        out.insert("offer".into(), json!({ "dialect": dialect }));
        let d = Decline::SchemeUnsupported { dialect, reason };
        return verdict_decline(out, &p.url, &d);
    };
    let now = shared.clock.now_unix();
    let dest = p.target.destination();
    let service = offer.terms.service().map(str::to_string);
    let mut offer_json = json!({ "dialect": offer.dialect, "service": service });
    let invoice = crate::invoice::decode(&offer.invoice);
    if let Ok(inv) = &invoice {
        if let Some(map) = offer_json.as_object_mut() {
            if let Some(a) = inv.amount {
                map.insert("amount_msat".into(), json!(a.get()));
                map.insert("amount_sats".into(), json!(a.sats_ceil()));
            }
            map.insert("payment_hash".into(), json!(inv.payment_hash.to_hex()));
            map.insert("description".into(), json!(inv.description));
            map.insert("invoice_expires_at".into(), json!(inv.expires_at()));
            map.insert(
                "invoice_expires_in_secs".into(),
                json!(inv.expires_at().saturating_sub(now)),
            );
        }
    }
    out.insert("offer".into(), offer_json);
    // A token the agent holds for this origin and path (or this service) would be used
    // instead of paying.
    let tokens = shared.layer.tokens();
    let cached = !agent.paused
        && (tokens
            .find(&agent.name, dest.origin, p.uri.path(), now)
            .is_some_and(|a| a.known)
            || (offer.terms.reusable()
                && tokens
                    .find_fresh(
                        &agent.name,
                        dest.origin,
                        service.as_deref(),
                        p.uri.path(),
                        now,
                        None,
                    )
                    .is_some()));
    out.insert("cached_token".into(), json!(cached));
    if cached {
        out.insert("verdict".into(), json!("cached"));
        let text = format!(
            "{} asks to be paid, but a token this agent bought earlier serves it: fetch would pay nothing.",
            p.url
        );
        return Outcome::ok(Value::Object(out), text);
    }
    let invoice = match invoice {
        Ok(inv) => inv,
        Err(e) => {
            let d = Decline::InvoiceInvalid {
                reason: e.to_string(),
            };
            return verdict_decline(out, &p.url, &d);
        }
    };
    match would_pay(caller, &p, &invoice, &offer, now).await {
        Err(d) => verdict_decline(out, &p.url, &d),
        Ok((amount, spendable, approval)) => {
            if let Some(s) = spendable {
                out.insert("spendable_msat".into(), json!(s));
            }
            let verdict = if approval { "approval" } else { "pay" };
            out.insert("verdict".into(), json!(verdict));
            let text = format!(
                "{} asks {} sats ({} msat, {}{}): fetch would {}.",
                p.url,
                amount.sats_ceil(),
                amount.get(),
                offer.dialect,
                service
                    .as_deref()
                    .map(|s| format!(", service {s}"))
                    .unwrap_or_default(),
                if approval {
                    "hold it for the operator's approval, then pay it if approved"
                } else {
                    "pay it"
                }
            );
            Outcome::ok(Value::Object(out), text)
        }
    }
}

/// A quote whose verdict is a decline: a successful call (the quote worked) saying why.
fn verdict_decline(mut out: Map<String, Value>, url: &str, d: &Decline) -> Outcome {
    out.insert("verdict".into(), json!("decline"));
    out.insert(
        "decline".into(),
        json!({ "code": d.code(), "reason": d.to_string() }),
    );
    let text = format!(
        "{url} asks to be paid; fetch would decline ({}): {d}.",
        d.code()
    );
    Outcome::ok(Value::Object(out), text)
}

/// What the payment layer would decide for this invoice, without touching anything: the
/// amount, what the agent can spend, and whether it would wait for approval — or the decline.
/// The checks are those a purchase makes, in its order: paused, the invoice and the agent's
/// rules, the operator's per-request cap, the dialect's own terms, the budgets (agent and
/// operator, amount plus fee reserve), then the approval threshold.
async fn would_pay(
    caller: &Caller<'_>,
    p: &Prepared,
    invoice: &crate::invoice::Invoice,
    offer: &crate::pay::dialect::Offer,
    now: u64,
) -> Result<(Msat, Option<u64>, bool), Decline> {
    let (shared, agent) = (caller.shared, caller.agent);
    if agent.paused {
        return Err(Decline::AgentPaused {
            agent: agent.name.to_string(),
        });
    }
    let purchases = shared.layer.purchases();
    let dest = p.target.destination();
    let addrs = policy::host_addresses(agent, dest.host, dest.port).await;
    let amount =
        policy::check_invoice(invoice, agent, dest.host, &addrs, purchases.network(), now)?;
    let operator = purchases.operator_limits();
    if let Some(limit) = operator.per_request_sats {
        if amount.sats_ceil() > limit.get() {
            return Err(Decline::OverPerRequestLimit {
                amount,
                limit_sats: limit.get(),
            });
        }
    }
    offer.terms.check(invoice, &p.body, now)?;
    let fee = shared.fee_reserve();
    let needed = amount.saturating_add(fee);
    let view = shared.ledger.budget(&agent.name, &agent.limits).await?;
    if let Some(d) = view.first_passed(needed, Whose::Agent) {
        return Err(d);
    }
    let operator_view = shared.ledger.operator_budget(&operator).await?;
    if let Some(d) = operator_view.first_passed(needed, Whose::Operator) {
        return Err(d);
    }
    if let Some(d) = view
        .first_passed_at(dest.host, needed, Whose::Agent)
        .or_else(|| operator_view.first_passed_at(dest.host, needed, Whose::Operator))
    {
        return Err(d);
    }
    // The kill switch, or a tripped breaker, refuses it too.
    if let Some(stop) = shared
        .ledger
        .stops()
        .await?
        .into_iter()
        .find(|s| s.scope == crate::ledger::FLEET || s.scope == *agent.name)
    {
        return Err(stop.decline(&agent.name));
    }
    let spendable = view.with_fee_reserve(fee).spendable_msat;
    let approval = crate::guardrails::approve_above(&agent.limits, &operator)
        .is_some_and(|above| amount > above.msat());
    Ok((amount, spendable, approval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    #[test]
    fn bodies_are_text_when_utf8_else_base64() {
        assert_eq!(body_text(b"hello", false), ("hello".to_string(), "text"));
        // A character cut by truncation is dropped, the text stays text.
        let cut = &"héllo".as_bytes()[..2];
        assert_eq!(body_text(cut, true), ("h".to_string(), "text"));
        // Not truncated, the same bytes are not text.
        assert_eq!(body_text(cut, false).1, "base64");
        assert_eq!(
            body_text(&[0xff, 0x00, 0x01], false),
            ("/wAB".to_string(), "base64")
        );
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let o = header_object(&h);
        assert_eq!(o["set-cookie"], "a=1, b=2");
        assert_eq!(o["content-type"], "text/plain");
    }

    #[test]
    fn the_first_limit_a_reservation_would_pass_is_named() {
        let limits = Limits {
            daily_sats: Some(100.into()),
            total_sats: Some(50.into()),
            ..Limits::default()
        };
        let view = crate::budget::BudgetView::new(
            "a",
            &limits,
            None,
            [
                Msat::new(0),
                Msat::new(40_000),
                Msat::new(40_000),
                Msat::new(40_000),
            ],
            Msat::new(40_000),
        );
        // 10 sats fit under both (60 left of the day, 10 of the total).
        assert_eq!(view.first_passed(Msat::new(10_000), Whose::Agent), None);
        let d = view.first_passed(Msat::new(20_000), Whose::Agent).unwrap();
        assert_eq!(d.code(), "over-total-limit");
        let d = view
            .first_passed(Msat::new(70_000), Whose::Operator)
            .unwrap();
        assert_eq!(d.code(), "operator-over-daily-limit");
    }
}
