//! Nostr Wallet Connect (NIP-47) on the rust-nostr stack of the `nwc` crate (0.44 line: its
//! URI and request/response types, `nostr` for keys and encryption, its relay pool); tested
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
//! **Encryption: NIP-44 v2 when the wallet offers it, else NIP-04.** The `nwc` 0.44 client
//! (`nwc::NWC`) encrypts every request with NIP-04, sends no `encryption` tag, and never reads
//! the wallet's kind-13194 info event, so it cannot use NIP-44. This module therefore sends
//! requests itself over the same relay pool: on first use it fetches the info event; when its
//! `encryption` tag lists `nip44_v2` (the Alby SDK service publishes `nip04 nip44_v2`), requests
//! are NIP-44 v2 with `["encryption", "nip44_v2"]`; without an info event or without that entry
//! they are NIP-04 and untagged, which NIP-47 defines as the legacy default (the info event is
//! then asked for again on the next request). Replies are decrypted by their format (NIP-04
//! payloads carry `?iv=`). A reply counts only when signed by the wallet's key.
//!
//! The balance is NIP-47 `get_balance` (msat), under the same deadline as `lookup_invoice`; the
//! connection needs that permission too for the balance to be shown.
//!
//! NIP-47 has no fee limit on `pay_invoice`: the fee cap and a spending budget belong on the
//! wallet side of the connection (see README, "Wallet backends").

use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::money::{Msat, PaymentHash, Preimage};
use nwc::nostr::nips::nip47::{
    GetBalanceResponse, LookupInvoiceRequest, LookupInvoiceResponse, NostrWalletConnectURI,
    PayInvoiceRequest, PayInvoiceResponse, Request, TransactionState, TransactionType,
};
use nwc::nostr::nips::{nip04, nip44};
use nwc::prelude::{
    Event, EventBuilder, Filter, JsonUtil, Keys, Kind, RelayOptions, RelayPool, ReqExitPolicy, Tag,
    TagKind,
};
use std::fmt;
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first request waits for a relay connection and the wallet's info event.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// How requests and replies are encrypted, chosen from the wallet's kind-13194 info event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encryption {
    /// NIP-44 v2, sent with the `["encryption", "nip44_v2"]` tag.
    Nip44,
    /// NIP-04: what NIP-47 assumes for a request without an `encryption` tag.
    Nip04,
}

impl Encryption {
    /// The `encryption` tag of an info event lists what the wallet accepts, space-separated;
    /// no tag means a NIP-04-only wallet.
    fn from_info(info: &Event) -> Encryption {
        let listed = info
            .tags
            .find(TagKind::custom("encryption"))
            .and_then(|t| t.as_slice().get(1))
            .is_some_and(|v| v.split_whitespace().any(|e| e == "nip44_v2"));
        if listed {
            Encryption::Nip44
        } else {
            Encryption::Nip04
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
enum CallError {
    /// No reply before our deadline.
    Silent,
    /// The relay could not be reached or refused the request.
    Relay(String),
    /// A reply that could not be decrypted or read.
    Reply(String),
    /// The wallet answered with a NIP-47 error.
    Wallet { code: String, message: String },
}

/// A NIP-47 wallet connection. Give it a dedicated connection that may only `pay_invoice`
/// and `lookup_invoice`, with a budget set in the wallet: whoever holds the URI can spend.
pub struct NwcWallet {
    uri: NostrWalletConnectURI,
    keys: Keys,
    pool: RelayPool,
    /// Set once the wallet's info event was read; until then every request looks again.
    encryption: tokio::sync::OnceCell<Encryption>,
    /// The most a reply subscription stays open (requests carry their own, shorter, deadlines).
    max_wait: Duration,
}

impl fmt::Debug for NwcWallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NwcWallet")
            .field("wallet_pubkey", &self.uri.public_key.to_hex())
            .field("relays", &self.uri.relays)
            .field("secret", &"<redacted>")
            .field("encryption", &self.encryption.get())
            .finish()
    }
}

impl NwcWallet {
    /// Parses the connection URI; `field` names where it came from, for the error.
    /// `max_wait` bounds how long the client waits for any one answer.
    pub fn new(uri: &str, field: &str, max_wait: Duration) -> anyhow::Result<NwcWallet> {
        let uri = NostrWalletConnectURI::parse(uri.trim()).map_err(|e| {
            // The parser's messages never contain the URI; still, say nothing of it.
            anyhow::anyhow!(
                "config field `{field}`: not a nostr+walletconnect://<pubkey>?relay=…&secret=… URI ({e})"
            )
        })?;
        if uri.relays.is_empty() {
            anyhow::bail!("config field `{field}`: the NWC URI names no relay");
        }
        Ok(NwcWallet {
            keys: Keys::new(uri.secret.clone()),
            uri,
            pool: RelayPool::default(),
            encryption: tokio::sync::OnceCell::new(),
            max_wait: max_wait.max(LOOKUP_TIMEOUT),
        })
    }

    /// The encryption picked from the wallet's info event once one was read: `"nip44_v2"` or
    /// `"nip04"` (None before, or while the wallet publishes none — requests then use NIP-04).
    pub fn negotiated_encryption(&self) -> Option<&'static str> {
        self.encryption.get().map(|e| match e {
            Encryption::Nip44 => "nip44_v2",
            Encryption::Nip04 => "nip04",
        })
    }

    /// Connects to the relays (once; the pool reconnects by itself) and picks the encryption
    /// from the wallet's info event. A wallet without one gets NIP-04, and is asked again
    /// next time.
    async fn encryption(&self) -> Result<Encryption, CallError> {
        if let Some(e) = self.encryption.get() {
            return Ok(*e);
        }
        for url in &self.uri.relays {
            self.pool
                .add_relay(url, RelayOptions::default())
                .await
                .map_err(|e| CallError::Relay(e.to_string()))?;
        }
        self.pool.connect().await;
        self.pool.wait_for_connection(CONNECT_WAIT).await;
        let relays = self.pool.relays().await;
        if !relays.values().any(|r| r.is_connected()) {
            let states: Vec<String> = relays
                .iter()
                .map(|(url, r)| format!("{url}: {}", r.status()))
                .collect();
            return Err(CallError::Relay(format!(
                "no relay connected within {CONNECT_WAIT:?} ({})",
                states.join(", ")
            )));
        }
        let filter = Filter::new()
            .author(self.uri.public_key)
            .kind(Kind::WalletConnectInfo)
            .limit(1);
        let infos = self
            .pool
            .fetch_events(filter, CONNECT_WAIT, ReqExitPolicy::ExitOnEOSE)
            .await
            .map_err(|e| CallError::Relay(e.to_string()))?;
        match infos.first() {
            Some(info) if info.pubkey == self.uri.public_key && info.verify().is_ok() => {
                let e = Encryption::from_info(info);
                tracing::debug!(encryption = ?e, "NWC wallet info event read");
                Ok(*self.encryption.get_or_init(|| async { e }).await)
            }
            _ => Ok(Encryption::Nip04),
        }
    }

    /// Sends one request and waits for the wallet's reply to it; returns the reply's `result`.
    async fn call(&self, request: Request) -> Result<serde_json::Value, CallError> {
        let encryption = self.encryption().await?;
        let secret = self.keys.secret_key();
        let wallet = &self.uri.public_key;
        let json = request.as_json();
        let content = match encryption {
            Encryption::Nip44 => nip44::encrypt(secret, wallet, json, nip44::Version::V2)
                .map_err(|e| CallError::Reply(format!("NIP-44 encryption: {e}")))?,
            Encryption::Nip04 => nip04::encrypt(secret, wallet, json)
                .map_err(|e| CallError::Reply(format!("NIP-04 encryption: {e}")))?,
        };
        let mut event =
            EventBuilder::new(Kind::WalletConnectRequest, content).tag(Tag::public_key(*wallet));
        if encryption == Encryption::Nip44 {
            event = event.tag(Tag::custom(TagKind::custom("encryption"), ["nip44_v2"]));
        }
        let event = event
            .sign_with_keys(&self.keys)
            .map_err(|e| CallError::Reply(format!("signing the request: {e}")))?;
        let filter = Filter::new()
            .author(*wallet)
            .kind(Kind::WalletConnectResponse)
            .event(event.id);
        // Subscribe before publishing, so a fast reply is not missed.
        let mut replies = self
            .pool
            .stream_events(
                filter,
                self.max_wait + CONNECT_WAIT,
                ReqExitPolicy::WaitForEvents(1),
            )
            .await
            .map_err(|e| CallError::Relay(e.to_string()))?;
        self.pool
            .send_event(&event)
            .await
            .map_err(|e| CallError::Relay(e.to_string()))?;
        use futures_util::StreamExt;
        let reply = loop {
            // Our own deadline (in `within`) ends a silent wait; a stream that ends sooner
            // lost its relay after the request went out.
            let reply = replies.next().await.ok_or_else(|| {
                CallError::Relay("the relay subscription ended before the wallet answered".into())
            })?;
            // The relay's filter is not a proof: only the wallet's signed reply to this very
            // request counts (a relay could replay an older reply).
            let to_us = reply.tags.event_ids().any(|id| *id == event.id);
            if reply.pubkey == *wallet && to_us && reply.verify().is_ok() {
                break reply;
            }
        };
        // The wallet answers in the encryption of the request; NIP-04 payloads carry `?iv=`.
        let plain = if reply.content.contains("?iv=") {
            nip04::decrypt(secret, wallet, &reply.content)
                .map_err(|e| CallError::Reply(format!("NIP-04 decryption: {e}")))?
        } else {
            nip44::decrypt(secret, wallet, &reply.content)
                .map_err(|e| CallError::Reply(format!("NIP-44 decryption: {e}")))?
        };
        let mut value: serde_json::Value = serde_json::from_str(&plain)
            .map_err(|e| CallError::Reply(format!("reply is not JSON: {e}")))?;
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            let field = |k: &str| {
                error
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            return Err(CallError::Wallet {
                code: field("code"),
                message: field("message"),
            });
        }
        Ok(value
            .get_mut("result")
            .map(serde_json::Value::take)
            .unwrap_or_default())
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

/// A request that got no usable answer, or an error answer, as a `PayError`. `waited` is the
/// deadline that passed when the wallet stayed silent.
fn call_error(e: CallError, waited: Duration) -> PayError {
    match e {
        CallError::Silent => PayError::Timeout(waited),
        CallError::Wallet { code, message } => pay_error(&code, &message),
        CallError::Relay(e) => PayError::Unavailable(format!("NWC relay: {e}")),
        CallError::Reply(e) => PayError::Unavailable(format!(
            "NWC reply unusable ({e}); the payment may still be in flight"
        )),
    }
}

/// Why `get_balance` gave no balance. Nothing moves on a balance read: all `Unavailable`.
fn balance_error(e: CallError, waited: Duration) -> PayError {
    PayError::Unavailable(match e {
        CallError::Silent => format!("the NWC wallet did not answer get_balance within {waited:?}"),
        CallError::Relay(e) => format!("NWC relay: {e}"),
        CallError::Reply(e) => format!("NWC get_balance reply unusable: {e}"),
        CallError::Wallet { code, message } => match code.as_str() {
            "RESTRICTED" => format!(
                "the NWC connection lacks the get_balance permission (RESTRICTED): {message}"
            ),
            "NOT_IMPLEMENTED" => format!(
                "the NWC wallet does not implement get_balance (NOT_IMPLEMENTED): {message}"
            ),
            _ => format!("the NWC wallet answered get_balance with {code}: {message}"),
        },
    })
}

/// Runs one request with a deadline of our own and reads its result as `T`.
async fn within<T: serde::de::DeserializeOwned>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<serde_json::Value, CallError>>,
) -> Result<T, CallError> {
    let value = match tokio::time::timeout(limit, call).await {
        Ok(result) => result?,
        Err(_) => return Err(CallError::Silent),
    };
    serde_json::from_value(value).map_err(|e| CallError::Reply(format!("unexpected result: {e}")))
}

#[async_trait::async_trait]
impl Wallet for NwcWallet {
    fn backend(&self) -> &'static str {
        "nwc"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let call = self.call(Request::pay_invoice(PayInvoiceRequest::new(
            request.bolt11.clone(),
        )));
        let paid: PayInvoiceResponse = within(request.timeout, call)
            .await
            .map_err(|e| call_error(e, request.timeout))?;
        let preimage = Preimage::verify_hex(&paid.preimage, &request.payment_hash)
            .map_err(|_| PayError::BadPreimage)?;
        let fee = Msat::new(paid.fees_paid.unwrap_or(0));
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
        let call = self.call(Request::lookup_invoice(LookupInvoiceRequest {
            payment_hash: Some(hash.to_hex()),
            invoice: None,
        }));
        let tx: LookupInvoiceResponse = match within(LOOKUP_TIMEOUT, call).await {
            Ok(tx) => tx,
            Err(CallError::Wallet { code, .. }) if code == "NOT_FOUND" => {
                return Ok(PaymentStatus::Unknown)
            }
            Err(e) => return Err(call_error(e, LOOKUP_TIMEOUT)),
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
                    fee: Msat::new(tx.fees_paid),
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

    /// NIP-47 `get_balance` (the connection needs that permission): `balance`, in msat, with
    /// the lookup's deadline.
    async fn balance(&self) -> Result<Msat, PayError> {
        let call = self.call(Request::get_balance());
        let GetBalanceResponse { balance } = within(LOOKUP_TIMEOUT, call)
            .await
            .map_err(|e| balance_error(e, LOOKUP_TIMEOUT))?;
        Ok(Msat::new(balance))
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
    fn silence_relays_and_bad_replies_map_to_reasons() {
        let limit = Duration::from_secs(3);
        assert_eq!(
            call_error(CallError::Silent, limit),
            PayError::Timeout(limit)
        );
        assert!(call_error(CallError::Relay("refused".into()), limit).may_be_in_flight());
        assert!(call_error(CallError::Reply("garbled".into()), limit).may_be_in_flight());
        let e = call_error(
            CallError::Wallet {
                code: "UNSUPPORTED_ENCRYPTION".into(),
                message: "nip44 only".into(),
            },
            limit,
        );
        assert!(
            matches!(e, PayError::Rejected(ref why) if why.contains("UNSUPPORTED_ENCRYPTION")),
            "{e:?}"
        );
    }

    #[test]
    fn encryption_follows_the_info_event() {
        let info = |tags: Vec<Tag>| {
            EventBuilder::new(Kind::WalletConnectInfo, "pay_invoice lookup_invoice")
                .tags(tags)
                .sign_with_keys(&Keys::generate())
                .unwrap()
        };
        let tag = |v: &str| Tag::custom(TagKind::custom("encryption"), [v]);
        assert_eq!(
            Encryption::from_info(&info(vec![tag("nip04 nip44_v2")])),
            Encryption::Nip44
        );
        assert_eq!(
            Encryption::from_info(&info(vec![tag("nip44_v2")])),
            Encryption::Nip44
        );
        assert_eq!(
            Encryption::from_info(&info(vec![tag("nip04")])),
            Encryption::Nip04
        );
        assert_eq!(Encryption::from_info(&info(vec![])), Encryption::Nip04);
    }

    #[tokio::test]
    async fn an_unreachable_relay_is_unavailable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let uri = URI.replace("7777", &port.to_string());
        let w = NwcWallet::new(&uri, "wallet.nwc.uri_env", Duration::from_secs(60)).unwrap();
        let request = PayRequest {
            bolt11: "lnbc1x".into(),
            payment_hash: PaymentHash([3; 32]),
            amount: Msat::new(1000),
            max_fee: Msat::new(0),
            timeout: Duration::from_secs(20),
        };
        let started = std::time::Instant::now();
        let err = w.pay(&request).await.unwrap_err();
        assert!(matches!(err, PayError::Unavailable(_)), "{err:?}");
        assert!(err.may_be_in_flight());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn balance_errors_are_all_unavailable() {
        let limit = Duration::from_secs(15);
        let cases = [
            (CallError::Silent, "within"),
            (CallError::Relay("refused".into()), "refused"),
            (
                CallError::Reply("unexpected result: missing field `balance`".into()),
                "`balance`",
            ),
            (
                CallError::Wallet {
                    code: "RESTRICTED".into(),
                    message: "m".into(),
                },
                "get_balance permission",
            ),
            (
                CallError::Wallet {
                    code: "NOT_IMPLEMENTED".into(),
                    message: "m".into(),
                },
                "does not implement get_balance",
            ),
            (
                CallError::Wallet {
                    code: "INTERNAL".into(),
                    message: "db down".into(),
                },
                "db down",
            ),
        ];
        for (e, word) in cases {
            match balance_error(e, limit) {
                PayError::Unavailable(why) => assert!(why.contains(word), "{word}: {why}"),
                other => panic!("{word}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_balance_of_an_unreachable_relay_is_unavailable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let uri = URI.replace("7777", &port.to_string());
        let w = NwcWallet::new(&uri, "wallet.nwc.uri_env", Duration::from_secs(60)).unwrap();
        match w.balance().await {
            Err(PayError::Unavailable(why)) => assert!(why.contains("relay"), "{why}"),
            other => panic!("{other:?}"),
        }
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
