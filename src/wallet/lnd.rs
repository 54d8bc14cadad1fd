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

use super::http::{snippet, str_field, u64_field, CallError, Lines, NodeClient, Trust};
use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::money::{Msat, PaymentHash, Preimage};
use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

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
            "fee_limit_msat": request.max_fee.0.to_string(),
            "no_inflight_updates": false,
        });
        let res = self
            .node
            .open(Method::POST, "/v2/router/send", Some(&body))
            .await
            .map_err(|e| e.into_pay(request.timeout))?;
        let status = res.status();
        let mut lines = Lines::new(res.into_body());
        let mut in_flight = false;
        while let Some(line) = lines.next_line().await.map_err(|e| match e {
            // A broken stream after LND took the payment: it may still settle.
            CallError::Transport(why) => PayError::Unavailable(format!("LND: {why}")),
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
                let e = send_error(err, status.as_u16());
                return Err(if in_flight && !e.may_be_in_flight() {
                    PayError::Unavailable(format!(
                        "LND reported an error after the payment left ({e}); it may still settle"
                    ))
                } else {
                    e
                });
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
        Err(PayError::Unavailable(
            "LND closed the update stream before the payment settled; it may still be in flight"
                .into(),
        ))
    }

    async fn track(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
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
        let mut lines = Lines::new(res.into_body());
        // The stream stays open while the payment is in flight: the first update is the answer.
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?
        {
            let update: Value = serde_json::from_slice(&line).map_err(|e| {
                PayError::Unavailable(format!("LND track sent an update that is not JSON: {e}"))
            })?;
            if let Some(err) = update.get("error") {
                let code = err.get("code").and_then(Value::as_i64);
                let message = str_field(err, "message").unwrap_or("").to_ascii_lowercase();
                if code == Some(5)
                    || message.contains("isn't initiated")
                    || message.contains("not found")
                {
                    return Ok(PaymentStatus::Unknown);
                }
                return Err(send_error(err, status.as_u16()));
            }
            let Some(payment) = update.get("result") else {
                continue;
            };
            return Ok(match str_field(payment, "status").unwrap_or("") {
                "SUCCEEDED" => PaymentStatus::Succeeded(succeeded(payment, hash)?),
                "FAILED" => {
                    PaymentStatus::Failed(failure(str_field(payment, "failure_reason")).to_string())
                }
                "IN_FLIGHT" | "INITIATED" => PaymentStatus::InFlight,
                _ => PaymentStatus::Unknown,
            });
        }
        if status.as_u16() == 404 {
            return Ok(PaymentStatus::Unknown);
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
            .map(Msat)
            .ok_or_else(|| malformed(field, v))
    };
    let local = body.get("local_balance").filter(|v| !v.is_null());
    if let Some(v) = local.and_then(|l| l.get("msat")).filter(|v| !v.is_null()) {
        return u64_field(Some(v))
            .map(Msat)
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

/// A ChannelBalance that did not answer 200: the macaroon lacking `offchain:read`, LND not
/// ready, or anything else — all `Unavailable`, since no money is involved.
fn balance_error(status: u16, body: &[u8]) -> PayError {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
    let message = str_field(err, "message")
        .map(str::to_string)
        .unwrap_or_else(|| snippet(body));
    let code = err.get("code").and_then(Value::as_i64);
    let m = message.to_ascii_lowercase();
    if matches!(status, 401 | 403)
        || matches!(code, Some(7 | 16))
        || m.contains("permission denied")
        || m.contains("macaroon")
        || m.contains("verification failed")
    {
        PayError::Unavailable(format!(
            "LND refused the macaroon for the balance (HTTP {status}: {message}); \
             ChannelBalance needs a macaroon with offchain:read"
        ))
    } else if m.contains("wallet locked")
        || m.contains("starting up")
        || m.contains("not yet ready")
        || matches!(code, Some(4 | 14))
    {
        PayError::Unavailable(format!("LND is not ready: {message}"))
    } else {
        PayError::Unavailable(format!("LND balance: HTTP {status}: {message}"))
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
        fee: Msat(fee),
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

/// An `{"error": {code, message}}` from the gateway: SendPaymentV2 refused the payment before
/// sending anything, except for the codes that say LND itself is not ready.
fn send_error(err: &Value, http_status: u16) -> PayError {
    let message = str_field(err, "message").unwrap_or("").to_string();
    let code = err.get("code").and_then(Value::as_i64);
    let m = message.to_ascii_lowercase();
    if m.contains("already paid") || m.contains("payment is in transition") {
        PayError::AlreadyPaid
    } else if m.contains("expired") {
        PayError::InvoiceExpired
    } else if m.contains("macaroon")
        || m.contains("verification failed")
        || m.contains("permission denied")
        || matches!(code, Some(7 | 16))
        || matches!(http_status, 401 | 403)
    {
        PayError::Rejected(format!(
            "LND refused the macaroon ({message}); it needs offchain:read and offchain:write"
        ))
    } else if m.contains("wallet locked")
        || m.contains("starting up")
        || m.contains("not yet ready")
        || matches!(code, Some(4 | 14))
    {
        PayError::Unavailable(format!("LND is not ready: {message}"))
    } else if m.contains("insufficient") {
        PayError::InsufficientBalance
    } else {
        PayError::Rejected(format!("LND: {message}"))
    }
}

#[async_trait::async_trait]
impl Wallet for LndWallet {
    fn backend(&self) -> &'static str {
        "lnd"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        match tokio::time::timeout(request.timeout, self.send(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PayError::Timeout(request.timeout)),
        }
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.track(hash)).await {
            Ok(outcome) => outcome,
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
