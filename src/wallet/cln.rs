//! Core Lightning over clnrest (the REST plugin shipped with CLN: Python from v23.08 to
//! v24.11, Rust from v25.02).
//!
//! - Pay: `POST /v1/pay {"bolt11", "maxfee", "retry_for"}` blocks until the payment completes
//!   or the pay plugin gives up; success is HTTP 201 `{"status": "complete", "payment_preimage",
//!   "amount_msat", "amount_sent_msat"}` (fee = sent − amount). A failure is HTTP 500 with the
//!   RPC error `{"code", "message", "data"?}` (v23.08 wraps it in `{"error": …}`); the codes are
//!   `common/jsonrpc_errors.h`. From v26.06 xpay serves `pay` by default
//!   (`xpay-handle-pay`, off by default from v24.11 to v26.04), and reports some failures while parts are still
//!   in flight.
//! - Lookup: `POST /v1/listpays {"payment_hash"}` → `{"pays": [{"status", "preimage", …}]}`.
//! - Balance: `POST /v1/listfunds` → the sum of `our_amount_msat` over `channels[]` that are
//!   `CHANNELD_NORMAL` and `connected` (what the node can spend through its channels now).
//! - Auth: the `Rune` header, and `Nodeid` when configured (v23.08's clnrest requires it).
//!   Least privilege: a rune restricted to `pay`, `listpays` and `listfunds` (the last only
//!   for the balance; without it the balance is unavailable).
//! - TLS: clnrest's own CA (`ca.pem`) signs the certificate it serves (`server.pem` in the Rust
//!   plugin, `client.pem` in the Python one); pin `ca.pem` as `tls_cert_file`.
//!
//! Errors: only a code the CLN sources document as "nothing is in flight" (see `FINAL`) — or
//! legacy pay's own `data.status: "failed"` — is a definite failure. Anything else, including
//! an unknown code, `-1`/`-3`/`-4`, xpay's 209/203 and legacy pay's `data.status` `pending` or
//! `complete`, is [`PayError::Unresolved`]: the payment is followed with `listpays` until the
//! deadline and then left to reconciliation. CLN's `pay` is idempotent for a hash it already
//! paid: it returns the earlier success.

use super::http::{snippet, str_field, NodeClient, Reply, Trust};
use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::money::{Msat, PaymentHash, Preimage};
use ::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(500);

// common/jsonrpc_errors.h (ElementsProject/lightning v26.06 and master).
const PAY_RHASH_ALREADY_USED: i64 = 201;
const PAY_DESTINATION_PERM_FAIL: i64 = 203;
const PAY_TRY_OTHER_ROUTE: i64 = 204;
const PAY_ROUTE_NOT_FOUND: i64 = 205;
const PAY_ROUTE_TOO_EXPENSIVE: i64 = 206;
const PAY_INVOICE_EXPIRED: i64 = 207;
const PAY_UNSPECIFIED_ERROR: i64 = 209;
const PAY_STOPPED_RETRYING: i64 = 210;
const PAY_INVOICE_REQUEST_INVALID: i64 = 212;
const PAY_INVOICE_PREAPPROVAL_DECLINED: i64 = 213;
const PAY_KEYSEND_PREAPPROVAL_DECLINED: i64 = 214;
const PAY_INSUFFICIENT_FUNDS: i64 = 215;
const PAY_UNREACHABLE: i64 = 216;
const PAY_USER_ERROR: i64 = 217;
const PAY_INJECTPAYMENTONION_ALREADY_PAID: i64 = 219;
const PAY_DESTINATION_INSUFFICIENT_CAPACITY: i64 = 220;
const JSONRPC2_INVALID_REQUEST: i64 = -32600;
const JSONRPC2_METHOD_NOT_FOUND: i64 = -32601;
const JSONRPC2_INVALID_PARAMS: i64 = -32602;

/// The error codes a `pay` (legacy or xpay) only returns when no HTLC of the payment is out:
/// parameter and invoice checks before anything is sent (`-32600`, `-32602`, 207, 212–214,
/// 217), route finding that failed before the first attempt (xpay's `getroutes_done_err` with
/// no attempt made passes askrene's 205/210/215/220 on; legacy pay's pre-flight 215 and 216),
/// and "already paid" (201, 219: the earlier payment is then looked up). 204, 206 and 210 also
/// end legacy pay after attempts, when its `data.status` says whether parts are left (read
/// first). Every other code — 203 and 209 (xpay gives up on the first failure while other parts
/// may still be pending), 200, `-1`, `-3` (how xpay passes lightningd's "still in progress" on),
/// `-4` (the plugin died), codes newer than this list — is unresolved.
const FINAL: &[i64] = &[
    JSONRPC2_INVALID_REQUEST,
    JSONRPC2_METHOD_NOT_FOUND,
    JSONRPC2_INVALID_PARAMS,
    PAY_RHASH_ALREADY_USED,
    PAY_TRY_OTHER_ROUTE,
    PAY_ROUTE_NOT_FOUND,
    PAY_ROUTE_TOO_EXPENSIVE,
    PAY_INVOICE_EXPIRED,
    PAY_STOPPED_RETRYING,
    PAY_INVOICE_REQUEST_INVALID,
    PAY_INVOICE_PREAPPROVAL_DECLINED,
    PAY_KEYSEND_PREAPPROVAL_DECLINED,
    PAY_INSUFFICIENT_FUNDS,
    PAY_UNREACHABLE,
    PAY_USER_ERROR,
    PAY_INJECTPAYMENTONION_ALREADY_PAID,
    PAY_DESTINATION_INSUFFICIENT_CAPACITY,
];

/// A Core Lightning node reached through clnrest, authenticated by a rune.
#[derive(Debug)]
pub struct ClnWallet {
    node: NodeClient,
}

impl ClnWallet {
    /// A client for the clnrest at `url`, sending `rune` on every call (as a sensitive header,
    /// never logged), and `nodeid` as the `Nodeid` header when given (CLN v23.08's clnrest
    /// refuses a call without it), and trusting the node's TLS as `trust` says. Fails on a rune
    /// or node id that cannot be a header value or a TLS setup that cannot be built; nothing is
    /// sent yet.
    pub fn new(
        url: &str,
        rune: &str,
        nodeid: Option<&str>,
        trust: Trust,
    ) -> anyhow::Result<ClnWallet> {
        let mut headers = vec![super::http::secret_header(
            "rune",
            rune,
            "wallet.cln.rune_env",
        )?];
        if let Some(id) = nodeid {
            let value = ::http::HeaderValue::from_str(id.trim()).map_err(|_| {
                anyhow::anyhow!("config field `wallet.cln.nodeid`: not a valid header value")
            })?;
            headers.push((::http::HeaderName::from_static("nodeid"), value));
        }
        Ok(ClnWallet {
            node: NodeClient::new(url, trust, headers)?,
        })
    }

    /// Polls `listpays` after an unresolved reply (`why`) until the payment completes, fails,
    /// or `deadline` passes; then it is still [`PayError::Unresolved`], for reconciliation. An
    /// empty `listpays` proves nothing here: no record exists before the first HTLC leaves.
    async fn follow(
        &self,
        request: &PayRequest,
        deadline: Instant,
        why: Unresolved,
    ) -> Result<Paid, PayError> {
        let hash = request.payment_hash;
        let message = why.message.clone();
        super::follow(
            request,
            deadline,
            POLL_EVERY,
            |t| self.listpays(&hash, t),
            |_| why.failed(),
        )
        .await
        .map_err(|e| match e {
            PayError::Timeout(t) => PayError::Unresolved(format!(
                "{message}; listpays showed no outcome within {t:?}"
            )),
            other => other,
        })
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
            return Err(lookup_error(&reply));
        }
        let json: Value = reply.json("clnrest listpays")?;
        // A reply without the array is not "no record": that would fail a payment that may
        // have left.
        let pays = json.get("pays").and_then(Value::as_array).ok_or_else(|| {
            PayError::Unavailable(format!(
                "clnrest listpays: the reply has no `pays` array: {}",
                snippet(&reply.body)
            ))
        })?;
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
        // `pending`, or a status this code does not know: CLN has the payment and has not
        // called every attempt failed.
        if pays
            .iter()
            .any(|p| str_field(p, "status") != Some("failed"))
        {
            return Ok(PaymentStatus::InFlight);
        }
        if !pays.is_empty() {
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
    Ok(Msat::new(total))
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
        || matches!(err.get("code").and_then(Value::as_i64), Some(1501..=1503))
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
        (Some(sent), Some(amount)) => Msat::new(sent.saturating_sub(amount)),
        _ => Msat::ZERO,
    }
}

/// What a failed clnrest call said: the RPC error's code (absent when the body is not an RPC
/// error), message and legacy pay's `data.status`.
struct RpcError {
    code: Option<i64>,
    message: String,
    pay_status: Option<String>,
}

impl RpcError {
    /// clnrest's error body is the RPC error `{"code", "message", "data"}` (Python clnrest of
    /// v24.11, Rust clnrest); v23.08's Python clnrest wraps it in `{"error": …}`. Both are read.
    fn read(reply: &Reply) -> RpcError {
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let err = body.get("error").filter(|e| e.is_object()).unwrap_or(&body);
        RpcError {
            code: err.get("code").and_then(Value::as_i64),
            message: match err.get("message") {
                Some(Value::String(s)) => s.clone(),
                _ => snippet(&reply.body),
            },
            pay_status: err
                .get("data")
                .and_then(|d| str_field(d, "status"))
                .map(str::to_string),
        }
    }
}

/// A pay reply that does not prove the payment is over: followed, then left to reconciliation.
struct Unresolved {
    code: i64,
    message: String,
}

impl Unresolved {
    /// The error once `listpays` shows the payment failed for good: what the original code
    /// means when it has a cause of its own, else no route.
    fn failed(self) -> PayError {
        match self.code {
            PAY_DESTINATION_PERM_FAIL
            | PAY_ROUTE_TOO_EXPENSIVE
            | PAY_INVOICE_EXPIRED
            | PAY_INSUFFICIENT_FUNDS => definite(self.code, &self.message),
            _ => PayError::NoRoute(format!(
                "CLN reports the payment failed (pay had answered {}: {})",
                self.code, self.message
            )),
        }
    }
}

/// How a failed `pay` call ends: a definite failure, or a reply to follow up.
enum PayFailure {
    /// Nothing is in flight (or the node is not reachable in a way that says so): this error.
    Final(PayError),
    /// The payment may still settle.
    Unresolved(Unresolved),
}

/// Classifies a non-2xx `pay` reply by what the CLN sources say it means (see `FINAL`).
fn pay_failure(reply: &Reply) -> PayFailure {
    let status = reply.status.as_u16();
    let err = RpcError::read(reply);
    if let Some(refused) = refused(status, &err, "the pay and listpays methods") {
        return PayFailure::Final(refused);
    }
    let Some(code) = err.code else {
        // Not an RPC error: clnrest itself (or something in front of it) failed. Possibly in
        // flight, as with any transport failure.
        return PayFailure::Final(PayError::Unavailable(format!(
            "clnrest answered HTTP {status}: {}",
            err.message
        )));
    };
    let message = err.message;
    match err.pay_status.as_deref() {
        // Legacy pay's own verdict on its parts (plugins/libplugin-pay.c, payment_finished).
        Some("failed") => PayFailure::Final(definite(code, &message)),
        Some(other) => PayFailure::Unresolved(Unresolved {
            code,
            message: format!("CLN {code}: {message} (pay reports status {other:?})"),
        }),
        None if FINAL.contains(&code) => PayFailure::Final(definite(code, &message)),
        None => PayFailure::Unresolved(Unresolved {
            code,
            message: format!("CLN {code}: {message}"),
        }),
    }
}

/// A rune or URL clnrest refused (nothing was called): 401 (Rust clnrest, Python clnrest of
/// v24.11: checkrune refused it), 403 (no rune; v23.08: any refusal, or no `Nodeid`), 404 (an
/// unknown method or path). `allow` names what the rune must allow.
fn refused(status: u16, err: &RpcError, allow: &str) -> Option<PayError> {
    let message = &err.message;
    match status {
        401 | 403 if message.to_ascii_lowercase().contains("nodeid") => {
            Some(PayError::Rejected(format!(
                "clnrest refused the call ({message}): this clnrest (CLN v23.08) needs the node's \
                 id in `wallet.cln.nodeid`"
            )))
        }
        401 | 403 => Some(PayError::Rejected(format!(
            "clnrest refused the rune (HTTP {status}: {message}); it must allow {allow}"
        ))),
        404 => Some(PayError::Rejected(format!(
            "clnrest does not know this method (HTTP 404: {message}); is the URL a clnrest \
             endpoint, and is the method's plugin loaded?"
        ))),
        _ => None,
    }
}

/// What a final CLN error code means for the operator.
fn definite(code: i64, message: &str) -> PayError {
    match code {
        PAY_RHASH_ALREADY_USED | PAY_INJECTPAYMENTONION_ALREADY_PAID => PayError::AlreadyPaid,
        PAY_INSUFFICIENT_FUNDS => PayError::InsufficientBalance,
        PAY_ROUTE_TOO_EXPENSIVE => PayError::FeeTooHigh,
        PAY_INVOICE_EXPIRED => PayError::InvoiceExpired,
        PAY_ROUTE_NOT_FOUND
        | PAY_TRY_OTHER_ROUTE
        | PAY_STOPPED_RETRYING
        | PAY_UNREACHABLE
        | PAY_UNSPECIFIED_ERROR
        | PAY_DESTINATION_INSUFFICIENT_CAPACITY => {
            PayError::NoRoute(format!("CLN {code}: {message}"))
        }
        PAY_DESTINATION_PERM_FAIL => PayError::Rejected(format!(
            "the payee permanently rejected the payment: {message}"
        )),
        _ => PayError::Rejected(format!("CLN {code}: {message}")),
    }
}

/// A failed `listpays` (a lookup: nothing moves either way).
fn lookup_error(reply: &Reply) -> PayError {
    let status = reply.status.as_u16();
    let err = RpcError::read(reply);
    refused(status, &err, "the listpays method").unwrap_or_else(|| {
        PayError::Unavailable(format!(
            "clnrest listpays answered HTTP {status}: {}",
            err.message
        ))
    })
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
            "maxfee": request.max_fee.get(),
            "retry_for": (secs - secs / 5).max(1),
        });
        let reply = self
            .node
            .call(Method::POST, "/v1/pay", Some(&body), request.timeout)
            .await
            .map_err(|e| e.into_pay(request.timeout))?;
        if !reply.status.is_success() {
            return match pay_failure(&reply) {
                PayFailure::Final(e) => Err(e),
                PayFailure::Unresolved(why) => {
                    tracing::warn!(hash = %request.payment_hash.short(), code = why.code, reason = %why.message, "CLN answered pay without an outcome; following it with listpays");
                    self.follow(request, deadline, why).await
                }
            };
        }
        let json: Value = reply.json("clnrest pay")?;
        // Both pay plugins answer success only with `"status": "complete"` (xpay.c
        // `payment_succeeded`, libplugin-pay.c `json_add_payment_success`); anything else is
        // not an outcome, and is followed.
        if str_field(&json, "status") != Some("complete") {
            let why = Unresolved {
                code: 0,
                message: format!(
                    "clnrest answered pay with status {:?}",
                    str_field(&json, "status").unwrap_or("(none)")
                ),
            };
            return self.follow(request, deadline, why).await;
        }
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
