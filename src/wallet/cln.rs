//! Core Lightning over clnrest (the REST plugin shipped with CLN).
//!
//! - Pay: `POST /v1/pay {"bolt11", "maxfee", "retry_for"}` blocks until the payment completes
//!   or fails; success is `{"status": "complete", "payment_preimage", "amount_msat",
//!   "amount_sent_msat"}` (fee = sent − amount). A failure is HTTP 500 with the RPC error
//!   itself, `{"code", "message", "data"}` (clnrest serialises cln-rpc's `RpcError`); the codes
//!   are lightningd's `jsonrpc_errors.h` PAY_* values.
//! - Lookup: `POST /v1/listpays {"payment_hash"}` → `{"pays": [{"status", "preimage", …}]}`.
//! - Balance: `POST /v1/listfunds` → the sum of `our_amount_msat` over `channels[]` that are
//!   `CHANNELD_NORMAL` and `connected` (what the node can spend through its channels now).
//! - Auth: the `Rune` header. Least privilege: a rune restricted to `pay`, `listpays` and
//!   `listfunds` (the last only for the balance; without it the balance is unavailable).
//! - TLS: clnrest's self-signed certificates; pin `tls_cert_file` (its CA or server cert).
//!
//! CLN's `pay` is idempotent for a hash it already paid: it returns the earlier success.

use super::http::{snippet, str_field, NodeClient, Reply, Trust};
use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::money::{Msat, PaymentHash, Preimage};
use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(500);

// lightningd/jsonrpc_errors.h (see `lightning-pay(7)`).
const PAY_IN_PROGRESS: i64 = 200;
const PAY_RHASH_ALREADY_USED: i64 = 201;
const PAY_DESTINATION_PERM_FAIL: i64 = 203;
const PAY_TRY_OTHER_ROUTE: i64 = 204;
const PAY_ROUTE_NOT_FOUND: i64 = 205;
const PAY_ROUTE_TOO_EXPENSIVE: i64 = 206;
const PAY_INVOICE_EXPIRED: i64 = 207;
const PAY_STOPPED_RETRYING: i64 = 210;
const JSONRPC2_INVALID_PARAMS: i64 = -32602;

/// A Core Lightning node reached through clnrest, authenticated by a rune.
#[derive(Debug)]
pub struct ClnWallet {
    node: NodeClient,
}

impl ClnWallet {
    /// A client for the clnrest at `url`, sending `rune` on every call (as a sensitive header,
    /// never logged) and trusting the node's TLS as `trust` says. Fails on a rune that cannot
    /// be a header value or a TLS setup that cannot be built; nothing is sent yet.
    pub fn new(url: &str, rune: &str, trust: Trust) -> anyhow::Result<ClnWallet> {
        let auth = super::http::secret_header("rune", rune, "wallet.cln.rune_env")?;
        Ok(ClnWallet {
            node: NodeClient::new(url, trust, vec![auth])?,
        })
    }

    /// Polls `listpays` until the payment completes, fails, or `deadline` passes.
    async fn follow(&self, request: &PayRequest, deadline: Instant) -> Result<Paid, PayError> {
        let hash = request.payment_hash;
        super::follow(
            request,
            deadline,
            POLL_EVERY,
            |t| self.listpays(&hash, t),
            PayError::NoRoute,
        )
        .await
    }

    async fn listpays(
        &self,
        hash: &PaymentHash,
        timeout: Duration,
    ) -> Result<PaymentStatus, PayError> {
        let body = json!({"payment_hash": hash.to_hex()});
        let reply = self
            .node
            .call(Method::POST, "/v1/listpays", Some(&body), timeout)
            .await
            .map_err(|e| e.into_lookup(timeout))?;
        if !reply.status.is_success() {
            return Err(rpc_error(&reply));
        }
        let json: Value = reply.json("clnrest listpays")?;
        let pays = json
            .get("pays")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let with = |s: &str| pays.iter().find(|p| str_field(p, "status") == Some(s));
        if let Some(p) = with("complete") {
            let preimage = str_field(p, "preimage").unwrap_or("");
            let preimage =
                Preimage::verify_hex(preimage, hash).map_err(|_| PayError::BadPreimage)?;
            return Ok(PaymentStatus::Succeeded(Paid {
                preimage,
                fee: fee(p),
            }));
        }
        if with("pending").is_some() {
            return Ok(PaymentStatus::InFlight);
        }
        if with("failed").is_some() {
            return Ok(PaymentStatus::Failed(
                "CLN reports the payment failed".into(),
            ));
        }
        Ok(PaymentStatus::Unknown)
    }
}

/// The spendable balance in a `listfunds` result: `our_amount_msat` summed over the channels
/// in `CHANNELD_NORMAL` that are `connected`. Any field we need that is missing or of another
/// shape is an error naming it.
fn listfunds_balance(json: &Value) -> Result<Msat, PayError> {
    let malformed = |what: String| PayError::Unavailable(format!("clnrest listfunds: {what}"));
    let channels = json
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("the reply has no `channels` array".into()))?;
    let mut total: u64 = 0;
    for (i, channel) in channels.iter().enumerate() {
        let normal = str_field(channel, "state") == Some("CHANNELD_NORMAL");
        let connected = channel.get("connected").and_then(Value::as_bool) == Some(true);
        if !(normal && connected) {
            continue;
        }
        let ours = msat_field(channel.get("our_amount_msat")).ok_or_else(|| {
            malformed(format!(
                "`channels[{i}].our_amount_msat` is missing or not an amount: {}",
                channel
                    .get("our_amount_msat")
                    .map_or_else(|| "absent".to_string(), Value::to_string)
            ))
        })?;
        total = total
            .checked_add(ours)
            .ok_or_else(|| malformed("the channels' `our_amount_msat` overflow".into()))?;
    }
    Ok(Msat(total))
}

/// A `listfunds` that did not succeed. Nothing moves, so every case is `Unavailable`; a refused
/// rune says it must allow `listfunds`.
fn listfunds_error(reply: &Reply) -> PayError {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let err = body.get("error").filter(|e| e.is_object()).unwrap_or(&body);
    let message = match err.get("message") {
        Some(Value::String(s)) => s.clone(),
        _ => snippet(&reply.body),
    };
    let status = reply.status.as_u16();
    // 1501/1502: clnrest's "not authorized" (rune missing, invalid, or not allowing the method).
    let refused = matches!(status, 401 | 403)
        || matches!(err.get("code").and_then(Value::as_i64), Some(1501 | 1502))
        || message.to_ascii_lowercase().contains("not authorized");
    if refused {
        PayError::Unavailable(format!(
            "clnrest refused the rune for the balance (HTTP {status}: {message}); \
             the rune must also allow the listfunds method"
        ))
    } else {
        PayError::Unavailable(format!(
            "clnrest listfunds answered HTTP {status}: {message}"
        ))
    }
}

/// CLN amounts: integers in msat (CLN ≥ 23), or strings like "1000msat" (older releases).
fn msat_field(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim_end_matches("msat").parse().ok(),
        _ => None,
    }
}

fn fee(p: &Value) -> Msat {
    match (
        msat_field(p.get("amount_sent_msat")),
        msat_field(p.get("amount_msat")),
    ) {
        (Some(sent), Some(amount)) => Msat(sent.saturating_sub(amount)),
        _ => Msat::ZERO,
    }
}

/// clnrest's error body is the RPC error (`{"code","message"}`); older builds wrapped it in
/// `{"error": …}`. Both are read.
fn rpc_error(reply: &Reply) -> PayError {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let err = body.get("error").filter(|e| e.is_object()).unwrap_or(&body);
    let code = err.get("code").and_then(Value::as_i64);
    let message = match err.get("message") {
        Some(Value::String(s)) => s.clone(),
        _ => snippet(&reply.body),
    };
    match reply.status.as_u16() {
        401 | 403 => {
            return PayError::Rejected(format!(
                "clnrest refused the rune ({message}); it must allow the pay and listpays methods"
            ))
        }
        404 => {
            return PayError::Rejected(format!(
                "clnrest does not know this method ({message}); is the URL a clnrest endpoint?"
            ))
        }
        _ => {}
    }
    let m = message.to_ascii_lowercase();
    match code {
        Some(PAY_RHASH_ALREADY_USED) => PayError::AlreadyPaid,
        Some(PAY_ROUTE_NOT_FOUND | PAY_TRY_OTHER_ROUTE) => {
            if m.contains("insufficient") || m.contains("not enough") {
                PayError::InsufficientBalance
            } else {
                PayError::NoRoute(format!("CLN: {message}"))
            }
        }
        Some(PAY_ROUTE_TOO_EXPENSIVE) => PayError::FeeTooHigh,
        Some(PAY_INVOICE_EXPIRED) => PayError::InvoiceExpired,
        Some(PAY_STOPPED_RETRYING) => PayError::NoRoute(format!(
            "CLN stopped retrying within the payment timeout, nothing in flight: {message}"
        )),
        Some(PAY_DESTINATION_PERM_FAIL) => PayError::Rejected(format!(
            "the payee permanently rejected the payment: {message}"
        )),
        Some(JSONRPC2_INVALID_PARAMS) => PayError::Rejected(format!("CLN: {message}")),
        Some(_) if m.contains("already paid") => PayError::AlreadyPaid,
        Some(_) if m.contains("expired") => PayError::InvoiceExpired,
        Some(_) if m.contains("insufficient") => PayError::InsufficientBalance,
        Some(_) => PayError::Rejected(format!("CLN: {message}")),
        // No RPC error code: clnrest itself (or something in front of it) failed.
        None => PayError::Unavailable(format!(
            "clnrest answered HTTP {}: {message}",
            reply.status.as_u16()
        )),
    }
}

#[async_trait::async_trait]
impl Wallet for ClnWallet {
    fn backend(&self) -> &'static str {
        "cln"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let deadline = Instant::now() + request.timeout;
        // CLN gets most of our time budget, so it reports a definite failure (210) before our
        // own deadline makes the outcome unknown.
        let secs = request.timeout.as_secs();
        let body = json!({
            "bolt11": request.bolt11,
            "maxfee": request.max_fee.0,
            "retry_for": (secs - secs / 5).max(1),
        });
        let reply = self
            .node
            .call(Method::POST, "/v1/pay", Some(&body), request.timeout)
            .await
            .map_err(|e| e.into_pay(request.timeout))?;
        if !reply.status.is_success() {
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let err = body.get("error").filter(|e| e.is_object()).unwrap_or(&body);
            // Another `pay` of this hash is running: follow it instead of failing.
            if err.get("code").and_then(Value::as_i64) == Some(PAY_IN_PROGRESS) {
                return self.follow(request, deadline).await;
            }
            return Err(rpc_error(&reply));
        }
        let json: Value = reply.json("clnrest pay")?;
        match str_field(&json, "status").unwrap_or("") {
            "complete" => {
                let preimage = str_field(&json, "payment_preimage").unwrap_or("");
                let preimage = Preimage::verify_hex(preimage, &request.payment_hash)
                    .map_err(|_| PayError::BadPreimage)?;
                let paid = Paid {
                    preimage,
                    fee: fee(&json),
                };
                if paid.fee > request.max_fee {
                    tracing::warn!(hash = %request.payment_hash.short(), fee = %paid.fee, max_fee = %request.max_fee, "CLN reports a fee above the limit it was given");
                }
                Ok(paid)
            }
            "failed" => Err(PayError::NoRoute("CLN reports the payment failed".into())),
            // "pending": the payment left but has not resolved yet.
            _ => self.follow(request, deadline).await,
        }
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        self.listpays(hash, LOOKUP_TIMEOUT).await
    }

    /// `POST /v1/listfunds` (the rune must allow `listfunds`): the sum of `our_amount_msat`
    /// over the channels that are `CHANNELD_NORMAL` and `connected`; amounts are read as msat
    /// integers (CLN ≥ 23) or `"NNNmsat"` strings (older releases).
    async fn balance(&self) -> Result<Msat, PayError> {
        let reply = self
            .node
            .call(
                Method::POST,
                "/v1/listfunds",
                Some(&json!({})),
                LOOKUP_TIMEOUT,
            )
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?;
        if !reply.status.is_success() {
            return Err(listfunds_error(&reply));
        }
        listfunds_balance(&reply.json("clnrest listfunds")?)
    }
}

#[cfg(test)]
mod tests;
