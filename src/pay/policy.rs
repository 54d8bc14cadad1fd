//! Whether an invoice may be paid for an agent, before any budget is touched: the invoice's own
//! validity (amount, network, expiry, date) and the agent's rules (hosts, per-request cap).

use crate::agents::Agent;
use crate::core::{Decline, Msat};
use crate::invoice::{Invoice, Network};

/// How far ahead of our clock an invoice's timestamp may be (clock skew between nodes).
pub const MAX_FUTURE_SKEW_SECS: u64 = 600;

/// Checks an invoice against the node's network, its own validity and the agent's rules.
/// Returns the amount to pay.
pub fn check_invoice(
    invoice: &Invoice,
    agent: &Agent,
    host: &str,
    network: Network,
    now_unix: u64,
) -> Result<Msat, Decline> {
    let amount = match invoice.amount {
        Some(amount) if amount > Msat::ZERO => amount,
        _ => return Err(Decline::InvoiceAmountless),
    };
    if invoice.network != network {
        return Err(Decline::InvoiceWrongNetwork {
            invoice: invoice.network.to_string(),
            wallet: network.to_string(),
        });
    }
    if invoice.is_expired_at(now_unix) {
        return Err(Decline::InvoiceExpired {
            at: invoice.expires_at(),
        });
    }
    if invoice.timestamp > now_unix.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(Decline::InvoiceFromTheFuture {
            timestamp: invoice.timestamp,
        });
    }
    if !agent.hosts.permits(host) {
        return Err(Decline::HostNotAllowed {
            agent: agent.name.to_string(),
            host: host.to_string(),
        });
    }
    if let Some(limit) = agent.limits.per_request_sats {
        if amount.sats_ceil() > limit {
            return Err(Decline::OverPerRequestLimit {
                amount,
                limit_sats: limit,
            });
        }
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{hash_key, Agents};
    use crate::config::{AgentConfig, HostRules, Limits};
    use crate::core::PaymentHash;

    fn invoice(amount: Option<u64>, network: Network, ts: u64) -> Invoice {
        Invoice {
            network,
            amount: amount.map(Msat),
            payment_hash: PaymentHash([1; 32]),
            payment_secret: Some([2; 32]),
            timestamp: ts,
            expiry_secs: 600,
            payee: [2; 33],
            description: None,
        }
    }

    fn agent() -> std::sync::Arc<Agent> {
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            key_sha256: hash_key("k"),
            limits: Limits {
                per_request_sats: Some(100),
                ..Limits::default()
            },
            hosts: HostRules {
                allow: vec!["*".into()],
                deny: vec!["blocked.example".into()],
            },
        }]);
        agents.get("a").unwrap().clone()
    }

    #[test]
    fn refusals_in_order() {
        let a = agent();
        let now = 1_000_000;
        let code = |inv: Invoice, host: &str| {
            check_invoice(&inv, &a, host, Network::Regtest, now).map_err(|d| d.code())
        };
        assert_eq!(
            code(invoice(Some(100_000), Network::Regtest, now), "x"),
            Ok(Msat(100_000))
        );
        assert_eq!(
            code(invoice(None, Network::Regtest, now), "x"),
            Err("invoice-amountless")
        );
        assert_eq!(
            code(invoice(Some(0), Network::Regtest, now), "x"),
            Err("invoice-amountless")
        );
        assert_eq!(
            code(invoice(Some(1000), Network::Bitcoin, now), "x"),
            Err("invoice-wrong-network")
        );
        assert_eq!(
            code(invoice(Some(1000), Network::Regtest, now - 600), "x"),
            Err("invoice-expired")
        );
        assert_eq!(
            code(invoice(Some(100_001), Network::Regtest, now), "x"),
            Err("over-per-request-limit")
        );
        assert_eq!(
            code(
                invoice(Some(1000), Network::Regtest, now),
                "blocked.example"
            ),
            Err("host-not-allowed")
        );
    }

    #[test]
    fn an_invoice_dated_far_ahead_is_refused_a_little_skew_is_not() {
        let a = agent();
        let now = 1_000_000;
        let check = |ts: u64| {
            check_invoice(
                &invoice(Some(1000), Network::Regtest, ts),
                &a,
                "x",
                Network::Regtest,
                now,
            )
            .map_err(|d| d.code())
        };
        assert_eq!(check(now + 60), Ok(Msat(1000)));
        assert_eq!(
            check(now + 10 * 365 * 86_400),
            Err("invoice-from-the-future")
        );
    }
}
