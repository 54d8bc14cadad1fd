//! Nostr Wallet Connect (NIP-47), with the `nwc` crate (rust-nostr, 0.44 line); tested
//! against the Alby SDK's `NWCWalletService` (npm `@getalby/sdk` 8.0.3) on a local relay.
//!
//! The connection URI `nostr+walletconnect://<wallet pubkey>?relay=…&secret=…` names the wallet
//! service, the relay(s) it listens on, and the private key this client signs and encrypts
//! with — it is a secret and is never logged. One client lives as long as the wallet: it
//! connects to the relays on the first request and the relay pool reconnects by itself.
//!
//! `pay_invoice` answers once the payment settled (with the preimage, which we verify) or
//! failed (with a NIP-47 error code); no answer within `PayRequest::timeout` is a `Timeout`,
//! which may still settle and is only ever looked up again (`lookup_invoice` by hash).
//!
//! **Encryption:** `nwc` 0.44 encrypts every request with NIP-04 and sends no `encryption` tag;
//! it neither reads the wallet's kind-13194 info event nor speaks NIP-44. NIP-47 defines a
//! request without that tag as NIP-04, which wallet services keep supporting (the Alby SDK
//! service advertises `nip04 nip44_v2` and answers in the encryption of the request). A
//! service that dropped NIP-04 would answer `UNSUPPORTED_ENCRYPTION`, which we report as such.
//!
//! NIP-47 has no fee limit on `pay_invoice`: the fee cap and a spending budget belong on the
//! wallet side of the connection (see README, "Wallet backends").

use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::money::{Msat, PaymentHash, Preimage};
use nwc::nostr::nips::nip47::{
    self, ErrorCode, LookupInvoiceRequest, NIP47Error, NostrWalletConnectURI, PayInvoiceRequest,
    TransactionState, TransactionType,
};
use nwc::{NostrWalletConnectOptions, NWC};
use std::fmt;
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A NIP-47 wallet connection. Give it a dedicated connection that may only `pay_invoice`
/// and `lookup_invoice`, with a budget set in the wallet: whoever holds the URI can spend.
pub struct NwcWallet {
    client: NWC,
    wallet_pubkey: String,
    relays: Vec<String>,
}

impl fmt::Debug for NwcWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NwcWallet")
            .field("wallet_pubkey", &self.wallet_pubkey)
            .field("relays", &self.relays)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl NwcWallet {
    /// Parses the connection URI; `field` names where it came from, for the error.
    /// `max_wait` bounds how long the client waits for any one answer (requests carry their
    /// own, shorter, deadlines).
    pub fn new(uri: &str, field: &str, max_wait: Duration) -> anyhow::Result<NwcWallet> {
        let uri = NostrWalletConnectURI::parse(uri.trim()).map_err(|e| {
            // The message of the parser never contains the URI; still, say nothing of it.
            anyhow::anyhow!(
                "config field `{field}`: not a nostr+walletconnect://<pubkey>?relay=…&secret=… URI ({e})"
            )
        })?;
        if uri.relays.is_empty() {
            anyhow::bail!("config field `{field}`: the NWC URI names no relay");
        }
        let wallet_pubkey = uri.public_key.to_hex();
        let relays = uri.relays.iter().map(|r| r.to_string()).collect();
        let opts = NostrWalletConnectOptions::new().timeout(max_wait.max(LOOKUP_TIMEOUT));
        Ok(NwcWallet {
            client: NWC::with_opts(uri, opts),
            wallet_pubkey,
            relays,
        })
    }
}

/// What a NIP-47 error reply means for the payment. `PAYMENT_FAILED` carries the wallet's
/// reason in prose, so its message decides between the more specific variants.
fn pay_error(code: &str, message: &str) -> PayError {
    let m = message.to_ascii_lowercase();
    match code {
        "INSUFFICIENT_BALANCE" => PayError::InsufficientBalance,
        "PAYMENT_FAILED" => {
            if m.contains("insufficient balance") {
                PayError::InsufficientBalance
            } else if m.contains("already paid") {
                PayError::AlreadyPaid
            } else if m.contains("expired") {
                PayError::InvoiceExpired
            } else if m.contains("route") {
                PayError::NoRoute(format!("NWC wallet: {message}"))
            } else {
                PayError::Rejected(format!("NWC wallet: payment failed: {message}"))
            }
        }
        "RATE_LIMITED" => PayError::Rejected(format!(
            "NWC wallet is rate limiting this connection (RATE_LIMITED): {message}"
        )),
        "NOT_IMPLEMENTED" => PayError::Rejected(format!(
            "NWC wallet does not implement this method (NOT_IMPLEMENTED): {message}"
        )),
        "QUOTA_EXCEEDED" => PayError::Rejected(format!(
            "the NWC connection's budget is spent (QUOTA_EXCEEDED); raise it in the wallet: {message}"
        )),
        "RESTRICTED" => PayError::Rejected(format!(
            "the NWC connection lacks the permission (RESTRICTED); it needs pay_invoice and lookup_invoice: {message}"
        )),
        "UNAUTHORIZED" => PayError::Rejected(format!(
            "the NWC wallet has no wallet for this connection key (UNAUTHORIZED); check wallet.nwc: {message}"
        )),
        // The service failed in a way that says nothing about the payment: it may have left.
        "INTERNAL" => PayError::Unavailable(format!(
            "NWC wallet internal error; the payment may still be in flight: {message}"
        )),
        "NOT_FOUND" => PayError::Rejected(format!("NWC wallet: not found: {message}")),
        "OTHER" => PayError::Rejected(format!("NWC wallet: {message}")),
        other => PayError::Rejected(format!("NWC wallet error {other}: {message}")),
    }
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// A request that got no usable answer, or an error answer, as a `PayError`. `waited` is the
/// deadline that passed when the wallet stayed silent.
fn client_error(e: nwc::Error, waited: Duration) -> PayError {
    match e {
        nwc::Error::Timeout | nwc::Error::PrematureExit => PayError::Timeout(waited),
        nwc::Error::NIP47(nip47::Error::ErrorCode(NIP47Error { code, message })) => {
            pay_error(&code_name(code), &message)
        }
        // A code `nwc` does not know (e.g. UNSUPPORTED_ENCRYPTION, BAD_REQUEST) fails its
        // parser; the raw reply still has the code and message.
        nwc::Error::NIP47(nip47::Error::CantDeserializeResponse { response, error }) => {
            let v: serde_json::Value = serde_json::from_str(&response).unwrap_or_default();
            match (
                v.pointer("/error/code").and_then(|c| c.as_str()),
                v.pointer("/error/message").and_then(|c| c.as_str()),
            ) {
                (Some(code), message) => pay_error(code, message.unwrap_or("")),
                _ => PayError::Unavailable(format!(
                    "NWC wallet sent a reply we cannot read ({error}); the payment may still be in flight"
                )),
            }
        }
        nwc::Error::NIP47(e) => PayError::Unavailable(format!(
            "NWC reply unusable ({e}); the payment may still be in flight"
        )),
        nwc::Error::Pool(e) => PayError::Unavailable(format!("NWC relay: {e}")),
        nwc::Error::Handler(e) => PayError::Unavailable(format!("NWC: {e}")),
    }
}

/// Runs one request with a deadline of our own (the client's is only a backstop).
async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, nwc::Error>>,
) -> Result<T, PayError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(client_error(e, limit)),
        Err(_) => Err(PayError::Timeout(limit)),
    }
}

/// True for a `NOT_FOUND` answer: the wallet has no record of the hash.
fn is_not_found(e: &nwc::Error) -> bool {
    matches!(
        e,
        nwc::Error::NIP47(nip47::Error::ErrorCode(NIP47Error {
            code: ErrorCode::NotFound,
            ..
        }))
    )
}

#[async_trait::async_trait]
impl Wallet for NwcWallet {
    fn backend(&self) -> &'static str {
        "nwc"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let paid = within(
            request.timeout,
            self.client
                .pay_invoice(PayInvoiceRequest::new(request.bolt11.clone())),
        )
        .await?;
        let preimage = Preimage::verify_hex(&paid.preimage, &request.payment_hash)
            .map_err(|_| PayError::BadPreimage)?;
        let fee = Msat(paid.fees_paid.unwrap_or(0));
        if fee > request.max_fee {
            tracing::warn!(
                hash = %request.payment_hash.short(),
                fee = %fee,
                max_fee = %request.max_fee,
                "the NWC wallet charged more than the fee limit; the payment already settled"
            );
        }
        Ok(Paid { preimage, fee })
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        let call = self.client.lookup_invoice(LookupInvoiceRequest {
            payment_hash: Some(hash.to_hex()),
            invoice: None,
        });
        let tx = match tokio::time::timeout(LOOKUP_TIMEOUT, call).await {
            Ok(Ok(tx)) => tx,
            Ok(Err(e)) if is_not_found(&e) => return Ok(PaymentStatus::Unknown),
            Ok(Err(e)) => return Err(client_error(e, LOOKUP_TIMEOUT)),
            Err(_) => return Err(PayError::Timeout(LOOKUP_TIMEOUT)),
        };
        // An invoice of this wallet with that hash is money coming in, not our payment.
        if tx.transaction_type == Some(TransactionType::Incoming) {
            return Ok(PaymentStatus::Unknown);
        }
        Ok(match tx.state {
            Some(TransactionState::Settled) | None if tx.preimage.is_some() => {
                let preimage = Preimage::verify_hex(tx.preimage.as_deref().unwrap_or(""), hash)
                    .map_err(|_| PayError::BadPreimage)?;
                PaymentStatus::Succeeded(Paid {
                    preimage,
                    fee: Msat(tx.fees_paid),
                })
            }
            Some(TransactionState::Failed) => {
                PaymentStatus::Failed("the NWC wallet reports the payment failed".into())
            }
            Some(TransactionState::Expired) => {
                PaymentStatus::Failed("the NWC wallet reports the payment expired".into())
            }
            // Settled without a preimage cannot be used; keep asking.
            _ => PaymentStatus::InFlight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4?relay=ws%3A%2F%2F127.0.0.1%3A7777&secret=71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c";

    #[test]
    fn nip47_codes_map_to_reasons() {
        assert_eq!(
            pay_error("INSUFFICIENT_BALANCE", "x"),
            PayError::InsufficientBalance
        );
        assert!(matches!(
            pay_error("PAYMENT_FAILED", "no route found"),
            PayError::NoRoute(_)
        ));
        assert_eq!(
            pay_error("PAYMENT_FAILED", "Internal invoice already paid."),
            PayError::AlreadyPaid
        );
        assert_eq!(
            pay_error("PAYMENT_FAILED", "invoice expired"),
            PayError::InvoiceExpired
        );
        assert!(matches!(
            pay_error("PAYMENT_FAILED", "boom"),
            PayError::Rejected(_)
        ));
        for (code, word) in [
            ("RATE_LIMITED", "rate limiting"),
            ("NOT_IMPLEMENTED", "does not implement"),
            ("QUOTA_EXCEEDED", "budget"),
            ("RESTRICTED", "permission"),
            ("UNAUTHORIZED", "connection key"),
            ("NOT_FOUND", "not found"),
            ("OTHER", "NWC wallet"),
            ("UNSUPPORTED_ENCRYPTION", "UNSUPPORTED_ENCRYPTION"),
        ] {
            match pay_error(code, "m") {
                PayError::Rejected(why) => assert!(why.contains(word), "{code}: {why}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        let internal = pay_error("INTERNAL", "db down");
        assert!(internal.may_be_in_flight(), "{internal:?}");
    }

    #[test]
    fn unknown_codes_are_read_from_the_raw_reply() {
        let e = client_error(
            nwc::Error::NIP47(nip47::Error::CantDeserializeResponse {
                response: r#"{"result_type":"pay_invoice","error":{"code":"UNSUPPORTED_ENCRYPTION","message":"nip44 only"}}"#.into(),
                error: "unknown variant".into(),
            }),
            Duration::from_secs(1),
        );
        match e {
            PayError::Rejected(why) => assert!(why.contains("UNSUPPORTED_ENCRYPTION"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code_name(ErrorCode::QuotaExceeded),
            "QUOTA_EXCEEDED".to_string()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let w = NwcWallet::new(URI, "wallet.nwc.uri_env", Duration::from_secs(60)).unwrap();
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c"),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
        assert!(shown.contains("b889ff5b"), "{shown}");
    }

    #[test]
    fn malformed_uris_name_the_field() {
        for bad in [
            "https://example.com",
            "nostr+walletconnect://nothex?relay=ws%3A%2F%2F127.0.0.1&secret=00",
            "nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4?relay=ws%3A%2F%2F127.0.0.1%3A7777",
        ] {
            let e = NwcWallet::new(bad, "wallet.nwc.uri_file", Duration::from_secs(1))
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.to_string().contains("wallet.nwc.uri_file"), "{e}");
        }
    }
}
