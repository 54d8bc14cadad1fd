//! The one seam between the proxy and the operator's money: `pay` an invoice and `lookup` a
//! payment by hash. Backends are interchangeable; each must return a preimage verified
//! against the payment hash, which the `Preimage` type enforces.

pub mod cln;
pub mod dev;
#[cfg(test)]
pub(crate) mod fixture;
pub mod http;
pub mod lnbits;
pub mod lnd;
pub mod nwc;
#[cfg(test)]
pub(crate) mod scripted;

use crate::core::money::{Msat, PaymentHash, Preimage};
use std::time::Duration;

/// What to pay, with the limits the wallet must honour.
#[derive(Debug, Clone)]
pub struct PayRequest {
    /// The BOLT 11 invoice, as the seller sent it.
    pub bolt11: String,
    /// The invoice's payment hash: the preimage returned must hash to it, and lookups use it.
    pub payment_hash: PaymentHash,
    /// The invoice's amount: what was reserved against the budgets for it.
    pub amount: Msat,
    /// The most routing fee the wallet may pay on top of `amount` (`wallet.max_fee_sats`).
    pub max_fee: Msat,
    /// How long the payment may take (`wallet.payment_timeout_secs`); unsettled by then it is
    /// [`PayError::Timeout`], possibly still in flight.
    pub timeout: Duration,
}

/// A settled payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paid {
    /// The proof of payment; a [`Preimage`] is always verified against the hash it pays.
    pub preimage: Preimage,
    /// The routing fee actually paid, on top of the invoice's amount.
    pub fee: Msat,
}

/// Where a payment stands, as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Settled, with its verified preimage and the fee paid.
    Succeeded(Paid),
    /// Sent and not finished: it may still settle or fail; only ask again.
    InFlight,
    /// Failed for good, with the node's reason: nothing moved and nothing will.
    Failed(String),
    /// The node has no record of this hash: it never left.
    Unknown,
}

/// Why a payment did not settle. Every variant says whether money may still move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// No route to the payee was found (the node's reason): nothing moved.
    #[error("no route to the payee: {0}")]
    NoRoute(String),
    /// The operator's wallet cannot cover the amount and fee: nothing moved.
    #[error("insufficient balance in the operator's wallet")]
    InsufficientBalance,
    /// The invoice expired before it could be paid: nothing moved.
    #[error("the invoice expired")]
    InvoiceExpired,
    /// The node had already paid this hash: this attempt moved nothing (the earlier payment's
    /// proof is then looked up).
    #[error("the invoice was already paid")]
    AlreadyPaid,
    /// Not settled within the given time: it may still be in flight, so its budget stays
    /// reserved and its hash is only looked up, never paid again.
    #[error("the payment did not settle within {0:?}; it may still be in flight")]
    Timeout(Duration),
    /// Every route would cost more than [`PayRequest::max_fee`]: nothing moved.
    #[error("the fee would exceed the limit")]
    FeeTooHigh,
    /// The wallet refused the payment for good (its reason): nothing moved.
    #[error("the wallet refused the payment: {0}")]
    Rejected(String),
    /// The wallet could not be reached or answered in an unexpected shape. For a payment the
    /// node may have acted on it, so it counts as possibly in flight; for a lookup nothing
    /// moved.
    #[error("the wallet is unreachable: {0}")]
    Unavailable(String),
    /// The node claimed success with a preimage that does not hash to the payment hash: there
    /// is no proof to present, so the payment is recorded failed (though money may have moved).
    #[error("the wallet returned a preimage that does not match the payment hash")]
    BadPreimage,
    /// The node answered, but not with an outcome: its reply (kept here) does not prove that
    /// nothing is in flight — an error code not known to be final, a payment LND still holds
    /// ("payment is in transition"), a pay plugin that died with HTLCs out, a failure reported
    /// while parts may still be pending. Like [`PayError::Timeout`], the budget stays reserved
    /// and the hash is only looked up until the node says settled or failed.
    #[error("the payment's outcome is not known yet ({0}); it may still settle")]
    Unresolved(String),
}

impl PayError {
    /// A stable, machine-readable code for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PayError::NoRoute(_) => "no-route",
            PayError::InsufficientBalance => "insufficient-balance",
            PayError::InvoiceExpired => "invoice-expired",
            PayError::AlreadyPaid => "already-paid",
            PayError::Timeout(_) => "payment-timeout",
            PayError::FeeTooHigh => "fee-too-high",
            PayError::Rejected(_) => "payment-rejected",
            PayError::Unavailable(_) => "wallet-unavailable",
            PayError::BadPreimage => "bad-preimage",
            PayError::Unresolved(_) => "payment-unresolved",
        }
    }

    /// True when the payment might still complete, so its budget must stay reserved and the
    /// hash must be looked up, never paid again.
    pub fn may_be_in_flight(&self) -> bool {
        matches!(
            self,
            PayError::Timeout(_) | PayError::Unavailable(_) | PayError::Unresolved(_)
        )
    }
}

/// A Lightning backend: pays invoices and answers for payments by hash. Implementations return
/// only preimages verified against the payment hash, and report an outcome they cannot know as
/// [`PayError::Timeout`], [`PayError::Unavailable`] or [`PayError::Unresolved`], never as a
/// definite failure (a failure releases the payment's reservation): only a reply the node's own
/// code documents as "nothing is in flight" may become one.
#[async_trait::async_trait]
pub trait Wallet: Send + Sync + 'static {
    /// The backend's name, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Pays the invoice; returns only once it settled or definitely failed.
    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError>;
    /// Asks the node about a payment by hash (used to resume after a crash or a timeout).
    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError>;
    /// What the wallet can spend now (for the operator's status, the balance gauge and the
    /// low-balance alert). Never used to decide a payment: the node is the authority.
    async fn balance(&self) -> Result<Msat, PayError> {
        Err(PayError::Unavailable(format!(
            "the {} backend does not report its balance",
            self.backend()
        )))
    }
}

/// Follows a payment a node accepted but has not settled, asking `status` (given the time left
/// for one lookup) every `every` until it settles or fails, or until `deadline` — then it is a
/// `Timeout`: it may still settle, so the engine only ever looks it up again. A lookup that
/// errors or does not know the hash yet is asked again: the node already took the payment (a
/// node may have no record of it before its first HTLC leaves). `failed` turns the node's
/// reason for a definite failure into the error returned.
pub(crate) async fn follow<F, Fut, G>(
    request: &PayRequest,
    deadline: std::time::Instant,
    every: Duration,
    mut status: F,
    failed: G,
) -> Result<Paid, PayError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<PaymentStatus, PayError>>,
    G: FnOnce(String) -> PayError,
{
    const ONE_LOOKUP: Duration = Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(PayError::Timeout(request.timeout));
        }
        match status(left.min(ONE_LOOKUP)).await {
            Ok(PaymentStatus::Succeeded(paid)) => return Ok(paid),
            Ok(PaymentStatus::Failed(why)) => return Err(failed(why)),
            Ok(PaymentStatus::InFlight | PaymentStatus::Unknown) | Err(_) => {}
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(every.min(left)).await;
    }
}

/// Builds the wallet named by `wallet.backend`, reading its secrets now so a missing key fails
/// at startup with the config field named, not at the first payment.
pub fn from_config(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Wallet>> {
    use crate::config::{read_secret, Backend};
    use std::sync::Arc;
    let w = &config.wallet;
    let missing = |field: &str| anyhow::anyhow!("config field `{field}`: missing");
    match w.backend {
        Backend::Dev => {
            let wallet = dev::DevWallet::new(
                &w.dev.secret,
                w.dev.balance_sats.msat(),
                Msat::new(w.dev.fee_msat),
                Duration::from_millis(w.dev.pay_delay_ms),
            );
            let wallet = match &w.dev.state_file {
                Some(path) => wallet.with_state_file(path).map_err(|e| {
                    anyhow::anyhow!(
                        "config field `wallet.dev.state_file`: {}: {e}",
                        path.display()
                    )
                })?,
                None => wallet,
            };
            Ok(Arc::new(wallet))
        }
        Backend::Lnbits => {
            let c = w.lnbits.as_ref().ok_or_else(|| missing("wallet.lnbits"))?;
            let field = if c.admin_key_env.is_some() {
                "wallet.lnbits.admin_key_env"
            } else {
                "wallet.lnbits.admin_key_file"
            };
            let key = read_secret(
                c.admin_key_env.as_deref(),
                c.admin_key_file.as_deref(),
                field,
            )?;
            Ok(Arc::new(lnbits::LnbitsWallet::new(&c.url, &key)?))
        }
        Backend::Lnd => {
            let c = w.lnd.as_ref().ok_or_else(|| missing("wallet.lnd"))?;
            Ok(Arc::new(lnd::LndWallet::from_files(
                &c.url,
                &c.macaroon_file,
                c.tls_cert_file.as_deref(),
            )?))
        }
        Backend::Cln => {
            let c = w.cln.as_ref().ok_or_else(|| missing("wallet.cln"))?;
            let field = if c.rune_env.is_some() {
                "wallet.cln.rune_env"
            } else {
                "wallet.cln.rune_file"
            };
            let rune = read_secret(c.rune_env.as_deref(), c.rune_file.as_deref(), field)?;
            let trust = match &c.tls_cert_file {
                Some(path) => http::Trust::pinned_file(path, "wallet.cln.tls_cert_file")?,
                None => http::Trust::PublicRoots,
            };
            Ok(Arc::new(cln::ClnWallet::new(
                &c.url,
                &rune,
                c.nodeid.as_deref(),
                trust,
            )?))
        }
        Backend::Nwc => {
            let c = w.nwc.as_ref().ok_or_else(|| missing("wallet.nwc"))?;
            let field = if c.uri_env.is_some() {
                "wallet.nwc.uri_env"
            } else {
                "wallet.nwc.uri_file"
            };
            let uri = read_secret(c.uri_env.as_deref(), c.uri_file.as_deref(), field)?;
            Ok(Arc::new(nwc::NwcWallet::new(
                &uri,
                field,
                Duration::from_secs(w.payment_timeout_secs),
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn build(yaml: &str) -> anyhow::Result<std::sync::Arc<dyn super::Wallet>> {
        super::from_config(&Config::parse(yaml).expect("valid config"))
    }

    #[test]
    fn missing_secrets_name_the_config_field() {
        let e = build("wallet: {backend: lnbits, lnbits: {url: 'http://127.0.0.1:5000', admin_key_env: L402_TEST_SURELY_UNSET}}\n")
            .err()
            .expect("unset variable");
        assert!(e.to_string().contains("wallet.lnbits.admin_key_env"), "{e}");
        assert!(e.to_string().contains("L402_TEST_SURELY_UNSET"), "{e}");
        let e = build("wallet: {backend: lnd, lnd: {url: 'https://127.0.0.1:8080', macaroon_file: /nonexistent/pay.macaroon}}\n")
            .err()
            .expect("missing macaroon");
        assert!(e.to_string().contains("wallet.lnd.macaroon_file"), "{e}");
        let e = build("wallet: {backend: cln, cln: {url: 'https://127.0.0.1:3010', rune_file: /nonexistent/rune}}\n")
            .err()
            .expect("missing rune");
        assert!(e.to_string().contains("wallet.cln.rune_file"), "{e}");
        let e = build("wallet: {backend: nwc, nwc: {uri_env: L402_TEST_SURELY_UNSET}}\n")
            .err()
            .expect("unset variable");
        assert!(e.to_string().contains("wallet.nwc.uri_env"), "{e}");
        let e = build("wallet: {backend: nwc, nwc: {uri_file: /nonexistent/nwc-uri}}\n")
            .err()
            .expect("missing file");
        assert!(e.to_string().contains("wallet.nwc.uri_file"), "{e}");
    }

    #[test]
    fn each_backend_is_built_from_its_section() {
        let dir = std::env::temp_dir().join(format!("l402-wallet-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "adminkey\n").unwrap();
        let w = build(&format!(
            "wallet: {{backend: lnbits, lnbits: {{url: 'http://127.0.0.1:5000', admin_key_file: {}}}}}\n",
            key.display()
        ))
        .unwrap();
        assert_eq!(w.backend(), "lnbits");
        let w = build(&format!(
            "wallet: {{backend: lnd, lnd: {{url: 'https://127.0.0.1:8080', macaroon_file: {}}}}}\n",
            key.display()
        ))
        .unwrap();
        assert_eq!(w.backend(), "lnd");
        let w = build(&format!(
            "wallet: {{backend: cln, cln: {{url: 'https://127.0.0.1:3010', rune_file: {}}}}}\n",
            key.display()
        ))
        .unwrap();
        assert_eq!(w.backend(), "cln");
        let w = build(&format!(
            "wallet: {{backend: cln, cln: {{url: 'https://127.0.0.1:3010', rune_file: {}, nodeid: 024b9a1fa8e006f1e3937f65f66c408e6da8e1ca728ea43222a7381df1cc449605}}}}\n",
            key.display()
        ))
        .unwrap();
        assert_eq!(w.backend(), "cln");
        let e = Config::parse(&format!(
            "wallet: {{backend: cln, cln: {{url: 'https://127.0.0.1:3010', rune_file: {}, nodeid: 'my node'}}}}\n",
            key.display()
        ))
        .expect_err("not a node id");
        assert!(e.to_string().contains("wallet.cln.nodeid"), "{e}");
        let e = build(&format!(
            "wallet: {{backend: cln, cln: {{url: 'https://127.0.0.1:3010', rune_file: {k}, tls_cert_file: {k}}}}}\n",
            k = key.display()
        ))
        .err()
        .expect("not a certificate");
        assert!(e.to_string().contains("wallet.cln.tls_cert_file"), "{e}");
        // The key file is not a URI: the error names the field, and shows no secret.
        let e = build(&format!(
            "wallet: {{backend: nwc, nwc: {{uri_file: {}}}}}\n",
            key.display()
        ))
        .err()
        .expect("not a URI");
        assert!(e.to_string().contains("wallet.nwc.uri_file"), "{e}");
        assert!(!e.to_string().contains("adminkey"), "{e}");
        let uri = dir.join("uri");
        std::fs::write(&uri, "nostr+walletconnect://b889ff5b1513b641e2a139f661a661364979c5beee91842f8f0ef42ab558e9d4?relay=ws%3A%2F%2F127.0.0.1%3A7777&secret=71a8c14c1407c113601079c4302dab36460f0ccd0ad506f1f2dc73b5100e4f3c\n").unwrap();
        let w = build(&format!(
            "wallet: {{backend: nwc, nwc: {{uri_file: {}}}}}\n",
            uri.display()
        ))
        .unwrap();
        assert_eq!(w.backend(), "nwc");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
