//! Why the proxy did not pay. Every refusal has a stable code — the value of the
//! `x-l402-proxy-decline` header, the metric label and the ledger's record — and a sentence a
//! person can act on. `budget`, `ledger` and `pay` all speak this one type.

use super::money::Msat;
use super::window::Window;
use std::fmt;

/// Whose limit a payment would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// The agent's own limits.
    Agent,
    /// The operator's limits over all agents together.
    Operator,
}

/// Which limit: a calendar window, or the lifetime total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// An hourly, daily, weekly or monthly window (UTC).
    Window(Window),
    /// The total limit.
    Total,
}

impl Period {
    /// `hourly`, `daily`, `weekly`, `monthly` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            Period::Window(w) => w.name(),
            Period::Total => "total",
        }
    }
}

/// A refusal to pay, returned to the agent beside the upstream 402.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decline {
    /// The challenge's invoice does not decode or fails its signature check.
    InvoiceInvalid {
        /// What was wrong with it.
        reason: String,
    },
    /// The invoice has no amount (or is for 0 msat): never paid.
    InvoiceAmountless,
    /// The invoice is for another network than the wallet's.
    InvoiceWrongNetwork {
        /// The invoice's network.
        invoice: String,
        /// The wallet's network.
        wallet: String,
    },
    /// The invoice expired (or expires before it could be paid).
    InvoiceExpired {
        /// Unix second at which it expired.
        at: u64,
    },
    /// The invoice is dated too far in the future to be honest.
    InvoiceFromTheFuture {
        /// Its timestamp, unix seconds.
        timestamp: u64,
    },
    /// The agent's host rules do not allow paying this host.
    HostNotAllowed {
        /// The agent.
        agent: String,
        /// The destination host.
        host: String,
    },
    /// The invoice is over the agent's `per_request_sats`.
    OverPerRequestLimit {
        /// The invoice amount.
        amount: Msat,
        /// The limit, in sats.
        limit_sats: u64,
    },
    /// Amount plus fee reserve would pass a window or total limit.
    OverLimit {
        /// The agent's or the operator's limit.
        whose: Whose,
        /// Which limit.
        period: Period,
        /// Already spent or reserved in it.
        used: Msat,
        /// What this payment would reserve (amount + fee reserve).
        amount: Msat,
        /// The limit.
        limit: Msat,
    },
    /// The payment would pass a cap per seller (`limits.sellers[]`) of the agent's or the
    /// operator's.
    OverSellerLimit {
        /// The agent's cap or the operator's.
        whose: Whose,
        /// Which window of it.
        period: Period,
        /// The rule's hosts (`api.example.com,*.example.org`).
        hosts: String,
        /// Already spent or reserved under it.
        used: Msat,
        /// What this payment would reserve (amount + fee reserve).
        amount: Msat,
        /// The cap.
        limit: Msat,
    },
    /// The token commits to another payment hash than its invoice carries.
    TokenInvoiceMismatch,
    /// The challenge cannot be answered (its token cannot be sent in a header, …).
    ChallengeInvalid {
        /// Why.
        reason: String,
    },
    /// The 402's challenge is larger than the proxy reads or could answer (too many challenge
    /// lines, a header or token over its cap): the seller's 402 goes back as it came, unpaid.
    ChallengeTooLarge {
        /// Which limit, in words.
        reason: String,
    },
    /// The request body was too large to buffer, so it cannot be replayed after paying.
    BodyNotReplayable {
        /// `http.max_replay_body_bytes`.
        limit: usize,
    },
    /// The paid replay met another challenge; one request never pays twice.
    ReplayRejected,
    /// This payment hash is in flight (sent before, outcome not known yet).
    PaymentInFlight,
    /// An earlier payment of this agent for the same service (or, for single-use credentials,
    /// the same path) is sent and not resolved: it may yet settle and serve, so nothing new is
    /// paid for it until the wallet says how it ended. The agent retries after `retry_after_secs`
    /// and is then served with what the earlier payment bought.
    PurchaseUnresolved {
        /// Seconds the agent should wait before retrying (sent as `Retry-After`).
        retry_after_secs: u64,
    },
    /// This payment hash was paid for another agent or service; one agent never rides on
    /// another's payment.
    HashPaidElsewhere,
    /// An earlier attempt at this hash failed.
    PaymentFailedEarlier {
        /// What the wallet said.
        reason: String,
    },
    /// The concurrent payment this request was waiting for failed.
    ConcurrentPaymentFailed(Box<Decline>),
    /// The payment task ended without an outcome (it panicked).
    PaymentAborted,
    /// No payment without a durable reservation: the ledger could not record it.
    StoreUnavailable {
        /// The store's error.
        reason: String,
    },
    /// The ledger holds a record that contradicts itself (a preimage that does not match).
    LedgerInconsistent,
    /// The offer and its invoice disagree (amount, hash, network, payee, body digest).
    OfferMismatch {
        /// The dialect of the offer.
        dialect: &'static str,
        /// What disagrees.
        what: String,
    },
    /// The offer is bound to another request than the agent's (x402 `lnbtc` request binding:
    /// a `requestHash`, profile or description hash that is not this request's digest), or
    /// carries no binding at all: paying it could buy some other request.
    OfferBindingMismatch {
        /// The dialect of the offer.
        dialect: &'static str,
        /// What disagrees.
        what: String,
    },
    /// The challenge itself expired before it could be paid.
    ChallengeExpired {
        /// Unix second it expired at.
        at: i64,
    },
    /// The 402 offers only what the proxy does not pay (an unpaid dialect, EVM x402, a
    /// session intent, Fewsats JSON offers): it passes through untouched.
    SchemeUnsupported {
        /// The dialect seen.
        dialect: &'static str,
        /// Why it is not paid.
        reason: String,
    },
    /// The server refused the paid credential (replay answered with a new challenge); this
    /// service is not paid again for a while, so it cannot drain the budget.
    CoolingOff {
        /// Seconds left.
        secs: u64,
    },
    /// The operator paused this agent: nothing is paid for it until resumed.
    AgentPaused {
        /// The agent.
        agent: String,
    },
    /// The agent was deleted while its payment waited (for approval, or for another
    /// purchase): nothing is paid for an agent that no longer exists.
    AgentDeleted {
        /// The agent.
        agent: String,
    },
    /// Payments are stopped for the whole fleet (`POST /v1/pause-all`, or the fleet's
    /// spend-spike breaker): nothing new is paid until the operator resumes.
    FleetPaused {
        /// Who stopped it (`operator`, `breaker`).
        by: String,
        /// Why, as recorded.
        reason: String,
    },
    /// This agent's spend-spike breaker tripped earlier: nothing is paid for it until the
    /// operator resumes it.
    AgentStopped {
        /// The agent.
        agent: String,
        /// Why, as recorded.
        reason: String,
    },
    /// This payment would take the spend over the breaker's sliding window above its maximum:
    /// refused, and the breaker tripped (the agent, or the fleet, is stopped).
    SpendSpike {
        /// The agent's breaker, or the fleet's.
        whose: Whose,
        /// The sliding window, in seconds.
        window_secs: u64,
        /// Spent (settled or pending) in the window before this payment.
        spent: Msat,
        /// This payment (amount + fee reserve).
        amount: Msat,
        /// The breaker's maximum over the window.
        max: Msat,
    },
    /// The request that asked for a single-use credential hung up before it could be paid:
    /// nobody would receive what it buys.
    RequesterGone,
    /// Over `requests_per_minute` or `payments_per_minute`: answered 429 with `Retry-After`.
    RateLimited {
        /// Which limit (`requests_per_minute`, `payments_per_minute`,
        /// `operator payments_per_minute`).
        limit: &'static str,
        /// Seconds until the next one is allowed.
        retry_after_secs: u64,
    },
    /// The price is more than `max_price_increase_pct` above the last price paid for the same
    /// service.
    PriceJump {
        /// The last price paid for the service (for a service new to the agent at this origin,
        /// the highest price paid there).
        last: Msat,
        /// The price asked now.
        now: Msat,
        /// The allowed increase, per cent.
        limit_pct: u32,
        /// True when `last` is the origin's highest price: the service was never paid for.
        new_service: bool,
    },
    /// The operator refused the payment held for approval.
    ApprovalDenied {
        /// The approval's id.
        id: String,
    },
    /// Nobody decided on the held payment in time.
    ApprovalTimeout {
        /// The approval's id.
        id: String,
        /// How long it waited.
        secs: u64,
    },
    /// The operator's policy service (`policy_hook`) answered `deny`.
    PolicyDenied {
        /// Its reason, cleaned of control and bidirectional characters and capped.
        reason: String,
    },
    /// The operator's policy service did not answer usably (timeout, connection refused, a
    /// non-2xx status, no decision) and `policy_hook.on_failure` is `deny`.
    PolicyUnavailable {
        /// What went wrong, in words without the service's address (the log has the detail).
        reason: String,
    },
    /// The wallet refused or failed the payment.
    Wallet {
        /// The wallet error's code (`no-route`, `insufficient-balance`, …).
        code: &'static str,
        /// The wallet's message.
        detail: String,
    },
}

impl Decline {
    /// The stable machine-readable code: header value, metric label, ledger record.
    pub fn code(&self) -> &'static str {
        use Decline::*;
        match self {
            InvoiceInvalid { .. } => "invoice-invalid",
            InvoiceAmountless => "invoice-amountless",
            InvoiceWrongNetwork { .. } => "invoice-wrong-network",
            InvoiceExpired { .. } => "invoice-expired",
            InvoiceFromTheFuture { .. } => "invoice-from-the-future",
            HostNotAllowed { .. } => "host-not-allowed",
            OverPerRequestLimit { .. } => "over-per-request-limit",
            OverLimit { whose, period, .. } => over_limit_code(*whose, *period),
            OverSellerLimit { whose, period, .. } => over_seller_limit_code(*whose, *period),
            TokenInvoiceMismatch => "token-invoice-mismatch",
            ChallengeInvalid { .. } => "challenge-invalid",
            ChallengeTooLarge { .. } => "challenge-too-large",
            BodyNotReplayable { .. } => "body-not-replayable",
            ReplayRejected => "replay-rejected",
            PaymentInFlight => "payment-in-flight",
            PurchaseUnresolved { .. } => "payment-in-flight",
            AgentDeleted { .. } => "agent-deleted",
            RequesterGone => "requester-gone",
            FleetPaused { .. } => "fleet-paused",
            AgentStopped { .. } => "agent-stopped",
            SpendSpike {
                whose: Whose::Agent,
                ..
            } => "spend-spike",
            SpendSpike {
                whose: Whose::Operator,
                ..
            } => "fleet-spend-spike",
            HashPaidElsewhere => "hash-paid-elsewhere",
            PaymentFailedEarlier { .. } => "payment-failed",
            ConcurrentPaymentFailed(inner) => inner.code(),
            PaymentAborted => "payment-aborted",
            StoreUnavailable { .. } => "store-unavailable",
            LedgerInconsistent => "ledger-inconsistent",
            OfferMismatch { .. } => "offer-invoice-mismatch",
            OfferBindingMismatch { .. } => "offer-binding-mismatch",
            ChallengeExpired { .. } => "challenge-expired",
            SchemeUnsupported { .. } => "scheme-unsupported",
            CoolingOff { .. } => "service-cooling-off",
            AgentPaused { .. } => "agent-paused",
            RateLimited { .. } => "rate-limited",
            PriceJump { .. } => "price-jump",
            ApprovalDenied { .. } => "approval-denied",
            ApprovalTimeout { .. } => "approval-timeout",
            PolicyDenied { .. } => "policy-denied",
            PolicyUnavailable { .. } => "policy-unavailable",
            Wallet { code, .. } => code,
        }
    }

    /// Seconds the agent should wait before retrying, for declines answered 429.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Decline::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Decline::ConcurrentPaymentFailed(inner) => inner.retry_after(),
            _ => None,
        }
    }

    /// Builds the decline for a wallet error.
    pub fn wallet(error: &crate::wallet::PayError) -> Decline {
        Decline::Wallet {
            code: error.code(),
            detail: error.to_string(),
        }
    }
}

fn over_seller_limit_code(whose: Whose, period: Period) -> &'static str {
    use Period::{Total, Window as W};
    use Window::*;
    match (whose, period) {
        (Whose::Agent, W(Hour)) => "over-seller-hourly-limit",
        (Whose::Agent, W(Day)) => "over-seller-daily-limit",
        (Whose::Agent, W(Week)) => "over-seller-weekly-limit",
        (Whose::Agent, W(Month)) => "over-seller-monthly-limit",
        (Whose::Agent, Total) => "over-seller-total-limit",
        (Whose::Operator, W(Hour)) => "operator-over-seller-hourly-limit",
        (Whose::Operator, W(Day)) => "operator-over-seller-daily-limit",
        (Whose::Operator, W(Week)) => "operator-over-seller-weekly-limit",
        (Whose::Operator, W(Month)) => "operator-over-seller-monthly-limit",
        (Whose::Operator, Total) => "operator-over-seller-total-limit",
    }
}

fn over_limit_code(whose: Whose, period: Period) -> &'static str {
    use Period::{Total, Window as W};
    use Window::*;
    match (whose, period) {
        (Whose::Agent, W(Hour)) => "over-hourly-limit",
        (Whose::Agent, W(Day)) => "over-daily-limit",
        (Whose::Agent, W(Week)) => "over-weekly-limit",
        (Whose::Agent, W(Month)) => "over-monthly-limit",
        (Whose::Agent, Total) => "over-total-limit",
        (Whose::Operator, W(Hour)) => "operator-over-hourly-limit",
        (Whose::Operator, W(Day)) => "operator-over-daily-limit",
        (Whose::Operator, W(Week)) => "operator-over-weekly-limit",
        (Whose::Operator, W(Month)) => "operator-over-monthly-limit",
        (Whose::Operator, Total) => "operator-over-total-limit",
    }
}

impl fmt::Display for Decline {
    /// The sentence for people (the `x-l402-proxy-reason` header and the logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Decline::*;
        match self {
            InvoiceInvalid { reason } => {
                write!(f, "the challenge's invoice is not payable: {reason}")
            }
            InvoiceAmountless => f.write_str(
                "the invoice has no amount (or is for 0 msat); amountless invoices are never paid",
            ),
            InvoiceWrongNetwork { invoice, wallet } => write!(
                f,
                "the invoice is for {invoice}, the wallet pays on {wallet}"
            ),
            InvoiceExpired { at } => write!(f, "the invoice expired at unix time {at}"),
            InvoiceFromTheFuture { timestamp } => write!(
                f,
                "the invoice is dated unix time {timestamp}, beyond the allowed clock skew"
            ),
            HostNotAllowed { agent, host } => write!(f, "agent {agent} may not pay {host}"),
            OverPerRequestLimit { amount, limit_sats } => write!(
                f,
                "the invoice is for {amount}, over per_request_sats {limit_sats}"
            ),
            OverLimit {
                whose,
                period,
                used,
                amount,
                limit,
            } => write!(
                f,
                "{amount} (with fee reserve) would pass {} {} limit: {used} of {limit} spent",
                match whose {
                    Whose::Agent => "the agent's",
                    Whose::Operator => "the operator's",
                },
                period.name()
            ),
            OverSellerLimit {
                whose,
                period,
                hosts,
                used,
                amount,
                limit,
            } => write!(
                f,
                "{amount} (with fee reserve) would pass {} {} cap for the sellers {hosts}: {used} of {limit} spent there",
                match whose {
                    Whose::Agent => "the agent's",
                    Whose::Operator => "the operator's",
                },
                period.name()
            ),
            TokenInvoiceMismatch => {
                f.write_str("the token commits to a different payment hash than the invoice")
            }
            ChallengeInvalid { reason } => write!(f, "the challenge cannot be answered: {reason}"),
            ChallengeTooLarge { reason } => {
                write!(f, "the challenge is too large to pay: {reason}; not paid")
            }
            BodyNotReplayable { limit } => write!(
                f,
                "the request body is larger than http.max_replay_body_bytes ({limit}) so it cannot be replayed after paying"
            ),
            ReplayRejected => f.write_str(
                "the server answered the paid token with another challenge; not paying twice for one request",
            ),
            PaymentInFlight => {
                f.write_str("this invoice's payment is still being resolved; retry later")
            }
            PurchaseUnresolved { retry_after_secs } => write!(
                f,
                "an earlier payment for this service is sent and not resolved yet (it may still settle); nothing new is paid until it is: retry in {retry_after_secs} s to be served with what it bought"
            ),
            AgentDeleted { agent } => write!(
                f,
                "agent {agent} was deleted by the operator: nothing is paid for it"
            ),
            RequesterGone => f.write_str(
                "the request hung up before its single-use credential was paid: not paying for nobody",
            ),
            HashPaidElsewhere => f.write_str(
                "this invoice was already paid for another agent or service; its proof is not shared",
            ),
            PaymentFailedEarlier { reason } => write!(f, "an earlier attempt failed: {reason}"),
            ConcurrentPaymentFailed(inner) => {
                write!(f, "a concurrent payment for this service failed: {inner}")
            }
            PaymentAborted => f.write_str("the payment task ended without an outcome"),
            StoreUnavailable { reason } => {
                write!(f, "not paying without a durable record: {reason}")
            }
            LedgerInconsistent => f.write_str("the ledger holds a wrong preimage for this hash"),
            OfferMismatch { dialect, what } => {
                write!(f, "the {dialect} offer disagrees with its invoice: {what}")
            }
            OfferBindingMismatch { dialect, what } => {
                write!(f, "the {dialect} offer is not bound to this request: {what}")
            }
            ChallengeExpired { at } => write!(f, "the challenge expired at unix time {at}"),
            SchemeUnsupported { dialect, reason } => {
                write!(f, "{dialect}: {reason}")
            }
            FleetPaused { by, reason } => write!(
                f,
                "payments are paused for the whole fleet (by {by}: {reason}): nothing new is paid until the operator resumes them"
            ),
            AgentStopped { agent, reason } => write!(
                f,
                "agent {agent} is stopped ({reason}): nothing is paid for it until the operator resumes it"
            ),
            SpendSpike {
                whose,
                window_secs,
                spent,
                amount,
                max,
            } => write!(
                f,
                "{} spent {spent} in the last {window_secs} s; {amount} more would pass the spend-spike breaker's {max}: it tripped, and payments stay stopped until the operator resumes them",
                match whose {
                    Whose::Agent => "the agent",
                    Whose::Operator => "the fleet",
                }
            ),
            AgentPaused { agent } => write!(
                f,
                "agent {agent} is paused by the operator: nothing is paid for it until it is resumed"
            ),
            CoolingOff { secs } => write!(
                f,
                "the server refused the last paid credential for this service; not paying it again for {secs} s"
            ),
            RateLimited {
                limit,
                retry_after_secs,
            } => write!(
                f,
                "over the {limit} limit; retry in {retry_after_secs} s"
            ),
            PriceJump {
                last,
                now,
                limit_pct,
                new_service: false,
            } => write!(
                f,
                "the price rose from {last} to {now}, more than max_price_increase_pct {limit_pct} % above the last price paid for this service"
            ),
            PriceJump {
                last,
                now,
                limit_pct,
                new_service: true,
            } => write!(
                f,
                "a service never paid for at this origin asks {now}, more than max_price_increase_pct {limit_pct} % above the highest price paid there ({last})"
            ),
            ApprovalDenied { id } => {
                write!(f, "the operator denied the payment (approval {id})")
            }
            ApprovalTimeout { id, secs } => write!(
                f,
                "nobody approved the payment within {secs} s (approval {id})"
            ),
            PolicyDenied { reason } if reason.is_empty() => {
                f.write_str("the operator's payment policy denied the payment")
            }
            PolicyDenied { reason } => {
                write!(f, "the operator's payment policy denied the payment: {reason}")
            }
            PolicyUnavailable { reason } => write!(
                f,
                "the operator's payment policy service did not decide ({reason}); not paying without its decision"
            ),
            Wallet { detail, .. } => f.write_str(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_header_values() {
        let over = |whose, period| {
            Decline::OverLimit {
                whose,
                period,
                used: Msat::new(1),
                amount: Msat::new(2),
                limit: Msat::new(3),
            }
            .code()
        };
        assert_eq!(
            over(Whose::Agent, Period::Window(Window::Hour)),
            "over-hourly-limit"
        );
        assert_eq!(over(Whose::Agent, Period::Total), "over-total-limit");
        assert_eq!(
            over(Whose::Operator, Period::Window(Window::Day)),
            "operator-over-daily-limit"
        );
        let inner = Decline::InvoiceAmountless;
        let wrapped = Decline::ConcurrentPaymentFailed(Box::new(inner.clone()));
        assert_eq!(wrapped.code(), inner.code());
        assert!(wrapped.to_string().contains("concurrent"));
    }

    #[test]
    fn over_limit_sentence_names_whose_limit() {
        let d = Decline::OverLimit {
            whose: Whose::Operator,
            period: Period::Window(Window::Month),
            used: Msat::new(5000),
            amount: Msat::new(11_000),
            limit: Msat::new(10_000),
        };
        assert_eq!(
            d.to_string(),
            "11 sat (with fee reserve) would pass the operator's monthly limit: 5 sat of 10 sat spent"
        );
    }
}
