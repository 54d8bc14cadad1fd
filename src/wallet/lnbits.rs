//! LNbits (REST, tested against LNbits 1.6.2): pays from one LNbits wallet with its admin key.
//!
//! `POST /api/v1/payments {"out": true, "bolt11"}` blocks until the payment settles (internal or
//! through LNbits' funding source) and answers with `status` and the `preimage`; a funding
//! source that does not settle quickly leaves it `pending`, which we then follow with
//! `GET /api/v1/payments/{hash}` until the deadline. Failures come back as HTTP 520
//! `{"detail", "status"}` where `status` says whether money may still move.
//!
//! The balance is `GET /api/v1/wallet` → `balance`, in msat.

use super::http::{i64_field, secret_header, str_field, CallError, NodeClient, Reply, Trust};
use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::{Msat, PaymentHash, Preimage};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(500);

/// A wallet on an LNbits instance. Give it a dedicated wallet holding only the float the
/// agents may spend: the admin key can spend everything in that wallet.
#[derive(Debug)]
pub struct LnbitsWallet {
    node: NodeClient,
}

impl LnbitsWallet {
    /// `admin_key` is the wallet's admin key (an invoice key cannot pay).
    pub fn new(url: &str, admin_key: &str) -> anyhow::Result<LnbitsWallet> {
        let auth = secret_header("x-api-key", admin_key, "wallet.lnbits.admin_key_env")?;
        Ok(LnbitsWallet {
            node: NodeClient::new(url, Trust::PublicRoots, vec![auth])?,
        })
    }

    /// Follows a payment LNbits left pending until it settles, fails, or `deadline` passes.
    async fn follow(&self, request: &PayRequest, deadline: Instant) -> Result<Paid, PayError> {
        let hash = request.payment_hash;
        super::follow(
            request,
            deadline,
            POLL_EVERY,
            |t| self.status(&hash, t),
            PayError::Rejected,
        )
        .await
        .map(|paid| checked_fee(paid, request))
    }

    async fn status(
        &self,
        hash: &PaymentHash,
        timeout: Duration,
    ) -> Result<PaymentStatus, PayError> {
        let reply = self
            .node
            .call(
                Method::GET,
                &format!("/api/v1/payments/{}", hash.to_hex()),
                None,
                timeout,
            )
            .await
            .map_err(|e| e.into_lookup(timeout))?;
        if reply.status == StatusCode::NOT_FOUND {
            let body: Value = reply.json("LNbits payment lookup")?;
            // 404 is also LNbits' answer to an unknown key; only this detail means "no payment".
            return match str_field(&body, "detail") {
                Some(d) if d.to_ascii_lowercase().contains("payment does not exist") => {
                    Ok(PaymentStatus::Unknown)
                }
                other => Err(key_error(reply.status, other.unwrap_or(""))),
            };
        }
        if !reply.status.is_success() {
            let body: Value = reply.json("LNbits payment lookup").unwrap_or(Value::Null);
            return Err(http_error(&reply, &body));
        }
        let body: Value = reply.json("LNbits payment lookup")?;
        // `details` is only present when the record belongs to the wallet of our key; a hash
        // paid by another wallet on the same LNbits is not our payment.
        let ours = body
            .get("details")
            .and_then(|d| i64_field(d.get("amount")))
            .is_some_and(|amount| amount < 0);
        if body.get("paid").and_then(Value::as_bool) == Some(true) {
            if !ours {
                return Ok(PaymentStatus::Unknown);
            }
            let preimage = str_field(&body, "preimage").unwrap_or("");
            let preimage =
                Preimage::verify_hex(preimage, hash).map_err(|_| PayError::BadPreimage)?;
            let fee = body
                .get("details")
                .and_then(|d| i64_field(d.get("fee")))
                .unwrap_or(0);
            return Ok(PaymentStatus::Succeeded(Paid {
                preimage,
                fee: Msat::new(fee.unsigned_abs()),
            }));
        }
        let status = str_field(&body, "status")
            .or_else(|| body.get("details").and_then(|d| str_field(d, "status")))
            .unwrap_or("pending");
        Ok(match status {
            "failed" => PaymentStatus::Failed("LNbits reports the payment failed".into()),
            _ if !ours => PaymentStatus::Unknown,
            _ => PaymentStatus::InFlight,
        })
    }
}

/// The fee a node reports is checked against the limit even though the money already moved:
/// LNbits has no fee limit for internal payments, so all we can do is say so loudly.
fn checked_fee(paid: Paid, request: &PayRequest) -> Paid {
    if paid.fee > request.max_fee {
        tracing::warn!(
            hash = %request.payment_hash.short(),
            fee = %paid.fee,
            max_fee = %request.max_fee,
            "LNbits charged more than the fee limit; the payment already settled"
        );
    }
    paid
}

/// 401/403/404 on a pay or lookup: the key is wrong, not the payment.
fn key_error(status: StatusCode, detail: &str) -> PayError {
    PayError::Rejected(format!(
        "LNbits refused the wallet key (HTTP {}: {detail}); wallet.lnbits needs the admin key of an existing wallet",
        status.as_u16()
    ))
}

/// Maps an LNbits error reply to the reason the agent sees.
pub(crate) fn http_error(reply: &Reply, body: &Value) -> PayError {
    let detail = match body.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => super::http::snippet(&reply.body),
    };
    match reply.status.as_u16() {
        401 | 403 | 404 => key_error(reply.status, &detail),
        429 => PayError::Unavailable(format!("LNbits is rate limiting us: {detail}")),
        520 => classify_failure(&detail),
        400..=499 => PayError::Rejected(format!("LNbits: {detail}")),
        code => PayError::Unavailable(format!("LNbits answered HTTP {code}: {detail}")),
    }
}

/// The `detail` strings of LNbits' payment errors (HTTP 520), from its payment service.
fn classify_failure(detail: &str) -> PayError {
    let d = detail.to_ascii_lowercase();
    if d.contains("insufficient balance") || d.contains("reserve at least") {
        PayError::InsufficientBalance
    } else if d.contains("already paid") {
        PayError::AlreadyPaid
    } else if d.contains("only internal invoices") {
        PayError::NoRoute(format!(
            "LNbits can only pay invoices of its own wallets: {detail}"
        ))
    } else if d.contains("no route") || d.contains("route") && d.contains("not found") {
        PayError::NoRoute(detail.to_string())
    } else if d.contains("expired") {
        PayError::InvoiceExpired
    } else {
        PayError::Rejected(format!("LNbits: {detail}"))
    }
}

#[async_trait::async_trait]
impl Wallet for LnbitsWallet {
    fn backend(&self) -> &'static str {
        "lnbits"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let deadline = Instant::now() + request.timeout;
        let body = json!({"out": true, "bolt11": request.bolt11});
        let reply = self
            .node
            .call(
                Method::POST,
                "/api/v1/payments",
                Some(&body),
                request.timeout,
            )
            .await
            .map_err(|e: CallError| e.into_pay(request.timeout))?;
        let json: Value = if reply.status.is_success() {
            reply.json("LNbits pay")?
        } else {
            // Error bodies are JSON too, but an unparsable one must not hide the status.
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
        };
        let status = str_field(&json, "status").unwrap_or("");
        if !reply.status.is_success() {
            return match (reply.status.as_u16(), status) {
                // LNbits itself says this hash is settled (by us or earlier): look it up.
                (520, "success") => Err(PayError::AlreadyPaid),
                // Handed to the funding source and not known to have failed.
                (520, "pending") => self.follow(request, deadline).await,
                _ => Err(http_error(&reply, &json)),
            };
        }
        match status {
            "success" => {
                let preimage = str_field(&json, "preimage").unwrap_or("");
                let preimage = Preimage::verify_hex(preimage, &request.payment_hash)
                    .map_err(|_| PayError::BadPreimage)?;
                let fee = Msat::new(i64_field(json.get("fee")).unwrap_or(0).unsigned_abs());
                Ok(checked_fee(Paid { preimage, fee }, request))
            }
            "failed" => Err(PayError::Rejected(
                "LNbits reports the payment failed".into(),
            )),
            // "pending": the funding source did not settle within LNbits' own wait.
            _ => self.follow(request, deadline).await,
        }
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        self.status(hash, LOOKUP_TIMEOUT).await
    }

    /// `GET /api/v1/wallet` with the key in `X-Api-Key`: the wallet's `balance`, in msat.
    async fn balance(&self) -> Result<Msat, PayError> {
        let reply = self
            .node
            .call(Method::GET, "/api/v1/wallet", None, LOOKUP_TIMEOUT)
            .await
            .map_err(|e| e.into_lookup(LOOKUP_TIMEOUT))?;
        if !reply.status.is_success() {
            // Nothing moves on a balance read: every refusal is Unavailable, with the reason.
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let detail = match body.get("detail") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => super::http::snippet(&reply.body),
            };
            let code = reply.status.as_u16();
            return Err(PayError::Unavailable(match code {
                401 | 403 | 404 => format!(
                    "LNbits refused the wallet key for the balance (HTTP {code}: {detail}); wallet.lnbits needs the key of an existing wallet"
                ),
                _ => format!("LNbits balance: HTTP {code}: {detail}"),
            }));
        }
        let body: Value = reply.json("LNbits balance")?;
        match body.get("balance") {
            Some(Value::Number(n)) => n.as_u64().map(Msat::new),
            _ => None,
        }
        .ok_or_else(|| {
            PayError::Unavailable(format!(
                "LNbits balance: the reply's `balance` (msat) is missing or not a non-negative integer: {}",
                super::http::snippet(&reply.body)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnbits_details_map_to_reasons() {
        assert_eq!(
            classify_failure("Insufficient balance."),
            PayError::InsufficientBalance
        );
        assert_eq!(
            classify_failure("You must reserve at least (1  sat) to cover potential routing fees."),
            PayError::InsufficientBalance
        );
        assert_eq!(
            classify_failure("Internal invoice already paid."),
            PayError::AlreadyPaid
        );
        assert!(matches!(
            classify_failure("Payment failed: Only internal invoices can be used!"),
            PayError::NoRoute(_)
        ));
        assert!(matches!(
            classify_failure("Amountless invoices not supported."),
            PayError::Rejected(_)
        ));
        assert!(matches!(
            classify_failure("Bolt11 decoding failed."),
            PayError::Rejected(_)
        ));
    }

    #[tokio::test]
    async fn a_pay_without_answer_times_out_as_maybe_in_flight() {
        // Accepts the connection and reads the request, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let wallet = LnbitsWallet::new(&url, "key").unwrap();
        let request = PayRequest {
            bolt11: "lnbc1x".into(),
            payment_hash: PaymentHash([3; 32]),
            amount: Msat::new(1000),
            max_fee: Msat::new(0),
            timeout: Duration::from_millis(500),
        };
        let err = wallet.pay(&request).await.unwrap_err();
        assert_eq!(err, PayError::Timeout(Duration::from_millis(500)));
        assert!(err.may_be_in_flight());
        server.abort();
    }

    #[test]
    fn debug_never_shows_the_key() {
        let w = LnbitsWallet::new("http://127.0.0.1:1", "supersecretadminkey").unwrap();
        let shown = format!("{w:?}");
        assert!(!shown.contains("supersecretadminkey"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
