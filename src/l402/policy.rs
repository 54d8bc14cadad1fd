//! Whether an invoice may be paid for an agent. Every refusal has a stable code (sent to the
//! agent in a header and counted) and a sentence a person can act on.

use crate::agents::Agent;
use crate::invoice::{Invoice, Network};
use crate::money::Msat;
use std::fmt;

/// A refusal to pay, returned to the agent beside the upstream 402.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub code: &'static str,
    pub detail: String,
}

impl Decline {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Decline {
        Decline {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Checks an invoice against the node's network, its own validity and the agent's rules.
/// Returns the amount to pay.
pub fn check_invoice(
    invoice: &Invoice,
    agent: &Agent,
    host: &str,
    network: Network,
    now_unix: u64,
) -> Result<Msat, Decline> {
    let amount = invoice.amount_msat.map(Msat).ok_or_else(|| {
        Decline::new(
            "invoice-amountless",
            "the invoice has no amount; amountless invoices are never paid",
        )
    })?;
    if amount == Msat::ZERO {
        return Err(Decline::new(
            "invoice-amountless",
            "the invoice is for 0 msat",
        ));
    }
    if invoice.network != network {
        return Err(Decline::new(
            "invoice-wrong-network",
            format!(
                "the invoice is for {}, the wallet pays on {}",
                invoice.network, network
            ),
        ));
    }
    if invoice.is_expired_at(now_unix) {
        return Err(Decline::new(
            "invoice-expired",
            format!("the invoice expired at unix time {}", invoice.expires_at()),
        ));
    }
    if !agent.hosts.permits(host) {
        return Err(Decline::new(
            "host-not-allowed",
            format!("agent {} may not pay {host}", agent.name),
        ));
    }
    if let Some(limit) = agent.limits.per_request_sats {
        if amount.sats_ceil() > limit {
            return Err(Decline::new(
                "over-per-request-limit",
                format!("the invoice is for {amount}, over per_request_sats {limit}"),
            ));
        }
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{hash_key, Agents};
    use crate::config::{AgentConfig, HostRules, Limits};

    fn invoice(amount: Option<u64>, network: Network, ts: u64) -> Invoice {
        Invoice {
            network,
            amount_msat: amount,
            payment_hash: [1; 32],
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
            check_invoice(&inv, &a, host, Network::Regtest, now).map_err(|d| d.code)
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
}
