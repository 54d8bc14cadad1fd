//! LND over its REST gateway (routerrpc v2).
//!
//! - Pay: `POST /v2/router/send` (SendPaymentV2) with `fee_limit_msat` and `timeout_seconds`.
//!   The reply is a stream of newline-delimited JSON updates `{"result": Payment}` (or
//!   `{"error": {code, message}}`); we read until `SUCCEEDED` or `FAILED`.
//! - Lookup: `GET /v2/router/track/{payment_hash}` (TrackPaymentV2). The gateway takes a bytes
//!   field in a path as base64 — URL-safe here, as LNbits' own LND REST backend sends it — and
//!   the first update is the payment's current state, so one line answers the lookup; a hash LND
//!   never saw is gRPC NotFound ("payment isn't initiated").
//! - Balance: `GET /v1/balance/channels` (ChannelBalance): what the channels can spend now,
//!   `local_balance.msat`.
//! - Auth: the macaroon, hex-encoded, in `Grpc-Metadata-macaroon` on every request.
//! - TLS: LND's self-signed `tls.cert` pinned as the only trusted certificate.
//!
//! Least privilege: a macaroon baked with `offchain:read offchain:write` covers all three calls
//! (ChannelBalance needs `offchain:read`; a URI-scoped macaroon needs
//! `uri:/lnrpc.Lightning/ChannelBalance` next to the two router RPCs).
//!
//! Errors (`lnrpc/routerrpc/router_server.go` `SendPaymentV2`): once `PreparePayment` has
//! registered the payment, LND owns it, so only an error known to come before that is a
//! definite failure — the macaroon and start-up checks of the RPC interceptor, the invoice
//! checks of `extractIntentFromSendRequest` (see `BEFORE_REGISTRATION`), and "invoice is
//! already paid". "payment is in transition" and "payment already exists" (gRPC AlreadyExists,
//! HTTP 409) mean an earlier attempt of this hash is still out; they and every other error are
//! [`PayError::Unresolved`]: the payment is tracked until the deadline, then reconciled.
//! Updates are read with their `htlcs` emptied as they stream (see `http::Lines::eliding`), so
//! a long payment history never exceeds the per-line limit.

use super::http::{snippet, str_field, u64_field, CallError, Lines, NodeClient, Trust};
use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::money::{Msat, PaymentHash, Preimage};
use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Messages of errors `SendPaymentV2` returns before the payment is registered (nothing sent):
/// `lnrpc/routerrpc/router_backend.go` `extractIntentFromSendRequest` (and its
/// `ValidatePayReqExpiry`, `routing.ValidateCLTVLimit`). Matched lower-cased, as substrings.
const BEFORE_REGISTRATION: &[&str] = &[
    "time preference out of range",
    "requested max_parts",
    "keysend payments cannot",
    "dest and payment_request cannot",
    "payment_hash and payment_request cannot",
    "final_cltv_delta and payment_request cannot",
    "payment request must contain",
    "amount must be specified",
    "amount must not be specified",
    "the amp flag",
    "destination doesn't",
    "exceeds maximum possible amount",
    "self-payments not allowed",
    "cltv limit",
];

/// What TrackPaymentV2's first update says about a payment.
enum Tracked {
    /// Settled, proof verified.
    Settled(Paid),
    /// FAILED: every HTLC is resolved; the reason as an error.
    Failed(PayError),
    /// Registered and not final yet.
    InFlight,
    /// LND has no record of the hash ("payment isn't initiated").
    Unknown,
}

/// An LND node reached through its REST gateway, authenticated by a macaroon.
#[derive(Debug)]
pub struct LndWallet {
    node: NodeClient,
}

impl LndWallet {
    /// `macaroon` as stored by LND (binary) or already hex-encoded.
    pub fn new(url: &str, macaroon: &[u8], trust: Trust) -> anyhow::Result<LndWallet> {
        let hex_macaroon = macaroon_hex(macaroon);
        if hex_macaroon.is_empty() {
            anyhow::bail!("config field `wallet.lnd.macaroon_file`: the macaroon is empty");
        }
        let auth = super::http::secret_header(
            "grpc-metadata-macaroon",
            &hex_macaroon,
            "wallet.lnd.macaroon_file",
        )?;
        Ok(LndWallet {
            node: NodeClient::new(url, trust, vec![auth])?,
        })
    }

    /// Reads the macaroon and (when given) the certificate to pin, naming the field on error.
    pub fn from_files(
        url: &str,
        macaroon_file: &Path,
        tls_cert_file: Option<&Path>,
    ) -> anyhow::Result<LndWallet> {
        let macaroon = std::fs::read(macaroon_file).map_err(|e| {
            anyhow::anyhow!(
                "config field `wallet.lnd.macaroon_file`: cannot read {}: {e}",
                macaroon_file.display()
            )
        })?;
        let trust = match tls_cert_file {
            Some(path) => Trust::pinned_file(path, "wallet.lnd.tls_cert_file")?,
            None => Trust::PublicRoots,
        };
        LndWallet::new(url, &macaroon, trust)
    }

    async fn send(&self, request: &PayRequest) -> Result<Paid, PayError> {
        // LND gets most of our time budget for pathfinding, so that it reports a definite
        // failure (FAILURE_REASON_TIMEOUT) before our own deadline makes the outcome unknown.
        let secs = request.timeout.as_secs();
        let timeout_seconds = (secs - secs / 5).max(1);
        let body = json!({
            "payment_request": request.bolt11,
            "timeout_seconds": timeout_seconds,
            "fee_limit_msat": request.max_fee.get().to_string(),
            "no_inflight_updates": false,
        });
        let res = self
            .node
            .open(Method::POST, "/v2/router/send", Some(&body))
            .await
            .map_err(|e| e.into_pay(request.timeout))?;
        let status = res.status();
        let mut lines = Lines::eliding(res.into_body(), "htlcs");
        let mut in_flight = false;
        while let Some(line) = lines.next_line().await.map_err(|e| match e {
            // A broken stream after LND took the request: it may have registered the payment,
            // which may still settle; it is tracked.
            CallError::Transport(why) => PayError::Unresolved(format!("LND: {why}")),
            CallError::Timeout => PayError::Timeout(request.timeout),
        })? {
            let update: Value = serde_json::from_slice(&line).map_err(|e| {
                PayError::Unavailable(format!(
                    "LND sent an update that is not JSON (HTTP {}): {e}: {:?}",
                    status.as_u16(),
                    snippet(&line)
                ))
            })?;
            // Streamed errors are wrapped in "error"; a gateway error before the stream
            // starts can also come bare, as `{"code", "message"}`.
            let bare = update.get("code").is_some() && update.get("message").is_some();
            if let Some(err) = update.get("error").or(bare.then_some(&update)) {
                if in_flight {
                    return Err(PayError::Unresolved(format!(
                        "LND reported an error after the payment left: {}",
                        str_field(err, "message").unwrap_or("(no message)")
                    )));
                }
                return Err(send_error(err, status.as_u16()));
            }
            let Some(payment) = update.get("result") else {
                continue;
            };
            match str_field(payment, "status").unwrap_or("") {
                "SUCCEEDED" => {
                    let paid = succeeded(payment, &request.payment_hash)?;
                    if paid.fee > request.max_fee {
                        tracing::warn!(hash = %request.payment_hash.short(), fee = %paid.fee, max_fee = %request.max_fee, "LND reports a fee above the limit it was given");
                    }
                    return Ok(paid);
                }
                "FAILED" => return Err(failure(str_field(payment, "failure_reason"))),
                _ => in_flight = true,
            }
        }
        if !status.is_success() {
            return Err(PayError::Unavailable(format!(
                "LND answered HTTP {} with no error detail",
                status.as_u16()
            )));
        }
        Err(PayError::Unresolved(
            "LND closed the update stream before the payment settled".into(),
        ))
    }

    /// Tracks the payment after an unresolved reply (`why`) until it settles or fails, or
    /// `deadline` passes; then it stays [`PayError::Unresolved`], for reconciliation. "Not
    /// initiated" proves nothing here: it is asked again.
    async fn follow(
        &self,
        request: &PayRequest,
        deadline: std::time::Instant,
        why: String,
    ) -> Result<Paid, PayError> {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(PayError::Unresolved(format!(
                    "{why}; TrackPaymentV2 showed no outcome within {:?}",
                    request.timeout
                )));
            }
            let tracked =
                tokio::time::timeout(left.min(LOOKUP_TIMEOUT), self.track(&request.payment_hash))
                    .await;
            match tracked {
                Ok(Ok(Tracked::Settled(paid))) => return Ok(paid),
                Ok(Ok(Tracked::Failed(e))) => return Err(e),
                _ => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            tokio::time::sleep(POLL_EVERY.min(left)).await;
        }
    }

    /// TrackPaymentV2's first update for `hash`.
    async fn track(&self, hash: &PaymentHash) -> Result<Tracked, PayError> {
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(hash.0);
        let res = self
            .node
            .open(
                Method::GET,
                &format!("/v2/router/track/{encoded}?no_inflight_updates=false"),
                None,
            )
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?;
        let status = res.status();
        let mut lines = Lines::eliding(res.into_body(), "htlcs");
        // The stream stays open while the payment is in flight: the first update is the answer.
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?
        {
            let update: Value = serde_json::from_slice(&line).map_err(|e| {
                PayError::Unavailable(format!("LND track sent an update that is not JSON: {e}"))
            })?;
            let bare = update.get("code").is_some() && update.get("message").is_some();
            if let Some(err) = update.get("error").or(bare.then_some(&update)) {
                // router_server.go `subscribePayment`: paymentsdb.ErrPaymentNotInitiated as
                // gRPC NotFound. Only that message: the gateway's own 404 for a wrong path is
                // NotFound too, and must not read as "never sent".
                let message = str_field(err, "message").unwrap_or("");
                if message.contains("isn't initiated") {
                    return Ok(Tracked::Unknown);
                }
                return Err(lookup_error(err, status.as_u16()));
            }
            let Some(payment) = update.get("result") else {
                continue;
            };
            return Ok(match str_field(payment, "status").unwrap_or("") {
                "SUCCEEDED" => Tracked::Settled(succeeded(payment, hash)?),
                "FAILED" => Tracked::Failed(failure(str_field(payment, "failure_reason"))),
                // IN_FLIGHT, INITIATED, or a status this code does not know: LND has the
                // payment and has not called it final.
                _ => Tracked::InFlight,
            });
        }
        Err(PayError::Unavailable(format!(
            "LND track answered HTTP {} with no update",
            status.as_u16()
        )))
    }
}

/// The spendable balance in a ChannelBalanceResponse: `local_balance.msat` (uint64 as a
/// string), else `local_balance.sat` × 1000, else the deprecated top-level `balance` (sat).
/// A field that is present but not a number is an error naming it, never a silent fallback.
fn channel_balance(body: &Value) -> Result<Msat, PayError> {
    let malformed = |field: &str, v: &Value| {
        PayError::Unavailable(format!(
            "LND balance: `{field}` is not an amount: {}",
            snippet(v.to_string().as_bytes())
        ))
    };
    let sats = |field: &str, v: &Value| {
        u64_field(Some(v))
            .and_then(|s| s.checked_mul(1000))
            .map(Msat::new)
            .ok_or_else(|| malformed(field, v))
    };
    let local = body.get("local_balance").filter(|v| !v.is_null());
    if let Some(v) = local.and_then(|l| l.get("msat")).filter(|v| !v.is_null()) {
        return u64_field(Some(v))
            .map(Msat::new)
            .ok_or_else(|| malformed("local_balance.msat", v));
    }
    if let Some(v) = local.and_then(|l| l.get("sat")).filter(|v| !v.is_null()) {
        return sats("local_balance.sat", v);
    }
    if let Some(v) = body.get("balance").filter(|v| !v.is_null()) {
        return sats("balance", v);
    }
    Err(PayError::Unavailable(format!(
        "LND balance: the reply has no `local_balance.msat` (nor `local_balance.sat` or `balance`): {}",
        snippet(body.to_string().as_bytes())
    )))
}

/// A macaroon LND refused: missing, not matching, expired (a timeout caveat:
/// macaroon-bakery's `checkers` "macaroon has expired"), or lacking a permission — checked by
/// the RPC interceptor (`rpcperms/interceptor.go`, `macaroons/service.go`) before any handler.
fn macaroon_refused(m: &str, code: Option<i64>, http_status: u16) -> bool {
    m.contains("macaroon")
        || m.contains("verification failed")
        || m.contains("permission denied")
        || matches!(code, Some(7 | 16))
        || matches!(http_status, 401 | 403)
}

/// LND not ready to serve: `rpcperms/interceptor.go` ErrWaitingToStart, ErrNoWallet,
/// ErrWalletLocked, ErrRPCStarting (gRPC Unknown, HTTP 500), or gRPC Unavailable.
fn not_ready(m: &str, code: Option<i64>) -> bool {
    m.contains("waiting to start")
        || m.contains("wallet not created")
        || m.contains("wallet locked")
        || m.contains("in the process of starting up")
        || m.contains("not yet ready")
        || code == Some(14)
}

/// `{code, message}` and the lower-cased message of a gateway error.
fn error_parts(err: &Value) -> (String, Option<i64>, String) {
    let message = str_field(err, "message").unwrap_or("").to_string();
    let lower = message.to_ascii_lowercase();
    (message, err.get("code").and_then(Value::as_i64), lower)
}

/// A ChannelBalance that did not answer 200: the macaroon lacking `offchain:read`, LND not
/// ready, or anything else — all `Unavailable`, since no money is involved.
fn balance_error(status: u16, body: &[u8]) -> PayError {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
    let (message, code, m) = error_parts(err);
    let message = if message.is_empty() {
        snippet(body)
    } else {
        message
    };
    if macaroon_refused(&m, code, status) {
        PayError::Unavailable(format!(
            "LND refused the macaroon for the balance (HTTP {status}: {message}); \
             ChannelBalance needs a macaroon with offchain:read"
        ))
    } else if not_ready(&m, code) {
        PayError::Unavailable(format!("LND is not ready: {message}"))
    } else {
        PayError::Unavailable(format!("LND balance: HTTP {status}: {message}"))
    }
}

/// A TrackPaymentV2 error other than "not initiated" (a lookup: nothing moves either way).
fn lookup_error(err: &Value, http_status: u16) -> PayError {
    let (message, code, m) = error_parts(err);
    if macaroon_refused(&m, code, http_status) {
        PayError::Unavailable(format!(
            "LND refused the macaroon ({message}); TrackPaymentV2 needs offchain:read"
        ))
    } else if not_ready(&m, code) {
        PayError::Unavailable(format!("LND is not ready: {message}"))
    } else {
        PayError::Unavailable(format!("LND track: HTTP {http_status}: {message}"))
    }
}

/// LND stores macaroons in binary; some deployments hand them over hex-encoded already.
fn macaroon_hex(raw: &[u8]) -> String {
    let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
    if !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        text.to_ascii_lowercase()
    } else {
        hex::encode(raw)
    }
}

/// A SUCCEEDED Payment: the preimage (hex) must hash to ours; `fee_msat` is an int64 string.
fn succeeded(payment: &Value, hash: &PaymentHash) -> Result<Paid, PayError> {
    let preimage = str_field(payment, "payment_preimage").unwrap_or("");
    let preimage = Preimage::verify_hex(preimage, hash).map_err(|_| PayError::BadPreimage)?;
    let fee = u64_field(payment.get("fee_msat")).unwrap_or(0);
    Ok(Paid {
        preimage,
        fee: Msat::new(fee),
    })
}

/// LND's `PaymentFailureReason` for a FAILED payment. None of these leave an HTLC in flight.
fn failure(reason: Option<&str>) -> PayError {
    match reason.unwrap_or("FAILURE_REASON_NONE") {
        "FAILURE_REASON_NO_ROUTE" => {
            PayError::NoRoute("LND found no route to the payee within the fee limit".into())
        }
        "FAILURE_REASON_INSUFFICIENT_BALANCE" => PayError::InsufficientBalance,
        "FAILURE_REASON_TIMEOUT" => {
            PayError::NoRoute("LND gave up: no route succeeded within the payment timeout".into())
        }
        "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS" => PayError::Rejected(
            "the payee rejected the payment (unknown or already settled invoice, or wrong amount)"
                .into(),
        ),
        "FAILURE_REASON_ERROR" => {
            PayError::Rejected("LND failed the payment with an internal error".into())
        }
        "FAILURE_REASON_CANCELED" => PayError::Rejected("the payment was canceled in LND".into()),
        other => PayError::Rejected(format!("LND failed the payment ({other})")),
    }
}

/// An error `{code, message}` from SendPaymentV2 before its first update (bare, or as the
/// stream's `{"error": …}`), at `http_status` (the gateway maps the gRPC code: AlreadyExists
/// 409, Unknown 500, Unavailable 503, PermissionDenied 403, Unauthenticated 401). Checked in
/// this order: the interceptor's refusals (nothing reached the router), "already paid", the
/// checks made before the payment is registered; anything else may have been registered, and
/// is unresolved.
fn send_error(err: &Value, http_status: u16) -> PayError {
    let (message, code, m) = error_parts(err);
    if macaroon_refused(&m, code, http_status) {
        PayError::Rejected(format!(
            "LND refused the macaroon ({message}); it needs offchain:read and offchain:write, \
             and must not have expired"
        ))
    } else if not_ready(&m, code) {
        PayError::Unavailable(format!("LND is not ready: {message}"))
    } else if m.contains("invoice is already paid") {
        // paymentsdb.ErrAlreadyPaid: a SUCCEEDED payment of this hash; its proof is looked up.
        PayError::AlreadyPaid
    } else if m.contains("invoice expired") {
        // router_backend.go ValidatePayReqExpiry, before registration.
        PayError::InvoiceExpired
    } else if BEFORE_REGISTRATION.iter().any(|p| m.contains(p)) || code == Some(3) {
        // The request's own checks, or the gateway's InvalidArgument: nothing registered.
        PayError::Rejected(format!("LND: {message}"))
    } else {
        // paymentsdb.ErrPaymentInFlight ("payment is in transition"), ErrPaymentExists
        // ("payment already exists"), and anything not known to come before registration.
        PayError::Unresolved(format!(
            "LND answered HTTP {http_status} (gRPC code {}): {message}",
            code.map_or_else(|| "none".to_string(), |c| c.to_string())
        ))
    }
}

#[async_trait::async_trait]
impl Wallet for LndWallet {
    fn backend(&self) -> &'static str {
        "lnd"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let deadline = std::time::Instant::now() + request.timeout;
        let outcome = match tokio::time::timeout(request.timeout, self.send(request)).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(PayError::Timeout(request.timeout)),
        };
        match outcome {
            Err(PayError::Unresolved(why)) => {
                tracing::warn!(hash = %request.payment_hash.short(), reason = %why, "LND answered without an outcome; tracking the payment");
                self.follow(request, deadline, why).await
            }
            other => other,
        }
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.track(hash)).await {
            Ok(Ok(Tracked::Settled(paid))) => Ok(PaymentStatus::Succeeded(paid)),
            Ok(Ok(Tracked::Failed(e))) => Ok(PaymentStatus::Failed(e.to_string())),
            Ok(Ok(Tracked::InFlight)) => Ok(PaymentStatus::InFlight),
            Ok(Ok(Tracked::Unknown)) => Ok(PaymentStatus::Unknown),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Timeout.into_lookup(LOOKUP_TIMEOUT)),
        }
    }

    /// `GET /v1/balance/channels` (ChannelBalance, needs `offchain:read`): the channels'
    /// `local_balance.msat`, falling back to `local_balance.sat` × 1000 or the deprecated
    /// `balance` (sat). A 401/403 or permission error says the macaroon needs `offchain:read`.
    async fn balance(&self) -> Result<Msat, PayError> {
        let reply = self
            .node
            .call(Method::GET, "/v1/balance/channels", None, LOOKUP_TIMEOUT)
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?;
        if !reply.status.is_success() {
            return Err(balance_error(reply.status.as_u16(), &reply.body));
        }
        channel_balance(&reply.json("LND balance")?)
    }
}

#[cfg(test)]
mod tests;
