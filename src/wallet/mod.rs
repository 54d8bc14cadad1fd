//! The one seam between the proxy and the operator's money: `pay` an invoice and `lookup` a
//! payment by hash. Backends are interchangeable; each must return a preimage verified
//! against the payment hash, which the `Preimage` type enforces.

pub mod dev;

use crate::money::{Msat, PaymentHash, Preimage};
use std::time::Duration;

/// What to pay, with the limits the wallet must honour.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub bolt11: String,
    pub payment_hash: PaymentHash,
    pub amount: Msat,
    pub max_fee: Msat,
    pub timeout: Duration,
}

/// A settled payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paid {
    pub preimage: Preimage,
    pub fee: Msat,
}

/// Where a payment stands, as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded(Paid),
    InFlight,
    Failed(String),
    /// The node has no record of this hash: it never left.
    Unknown,
}

/// Why a payment did not settle. Every variant says whether money may still move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    #[error("no route to the payee: {0}")]
    NoRoute(String),
    #[error("insufficient balance in the operator's wallet")]
    InsufficientBalance,
    #[error("the invoice expired")]
    InvoiceExpired,
    #[error("the invoice was already paid")]
    AlreadyPaid,
    #[error("the payment did not settle within {0:?}; it may still be in flight")]
    Timeout(Duration),
    #[error("the fee would exceed the limit")]
    FeeTooHigh,
    #[error("the wallet refused the payment: {0}")]
    Rejected(String),
    #[error("the wallet is unreachable: {0}")]
    Unavailable(String),
    #[error("the wallet returned a preimage that does not match the payment hash")]
    BadPreimage,
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
        }
    }

    /// True when the payment might still complete, so its budget must stay reserved and the
    /// hash must be looked up, never paid again.
    pub fn may_be_in_flight(&self) -> bool {
        matches!(self, PayError::Timeout(_) | PayError::Unavailable(_))
    }
}

#[async_trait::async_trait]
pub trait Wallet: Send + Sync + 'static {
    /// The backend's name, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Pays the invoice; returns only once it settled or definitely failed.
    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError>;
    /// Asks the node about a payment by hash (used to resume after a crash or a timeout).
    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError>;
}

/// Builds the wallet named by `wallet.backend`.
pub fn from_config(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Wallet>> {
    use crate::config::Backend;
    let w = &config.wallet;
    match w.backend {
        Backend::Dev => {
            let wallet = dev::DevWallet::new(
                &w.dev.secret,
                Msat::from_sats(w.dev.balance_sats),
                Msat(w.dev.fee_msat),
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
            Ok(std::sync::Arc::new(wallet))
        }
        other => anyhow::bail!(
            "wallet.backend {} is not available in this build yet; use `dev` (simulated) for now",
            other.name()
        ),
    }
}
