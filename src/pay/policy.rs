//! Whether an invoice may be paid for an agent, before any budget is touched: the invoice's own
//! validity (amount, network, expiry, date) and the agent's rules (hosts, per-request cap).

use crate::agents::Agent;
use crate::core::{Decline, Msat};
use crate::invoice::{Invoice, Network};
use std::net::IpAddr;

/// How far ahead of our clock an invoice's timestamp may be (clock skew between nodes).
pub const MAX_FUTURE_SKEW_SECS: u64 = 600;

/// The addresses `host` resolves to, when the agent's host rules need them to decide (a name,
/// and CIDR rules): looked up with the destination guard's resolver, so the rules see what the
/// guard connects to. Empty when not needed, or when the lookup fails (the rules then refuse a
/// name they needed to vet).
pub async fn host_addresses(agent: &Agent, host: &str, port: u16) -> Vec<IpAddr> {
    if !agent.hosts.needs_addresses(host) {
        return Vec::new();
    }
    match crate::guard::lookup(host, port).await {
        Ok(addrs) => addrs.into_iter().map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::warn!(agent = %agent.name, %host, error = %e, "cannot resolve the host to check the agent's CIDR host rules: refusing");
            Vec::new()
        }
    }
}

/// Checks an invoice against the node's network, its own validity and the agent's rules
/// (`addrs`: what [`host_addresses`] found for `host`). Returns the amount to pay.
pub fn check_invoice(
    invoice: &Invoice,
    agent: &Agent,
    host: &str,
    addrs: &[IpAddr],
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
    if !agent.hosts.permits_resolved(host, addrs) {
        return Err(Decline::HostNotAllowed {
            agent: agent.name.to_string(),
            host: host.to_string(),
        });
    }
    if let Some(limit) = agent.limits.per_request_sats {
        if amount.sats_ceil() > limit.get() {
            return Err(Decline::OverPerRequestLimit {
                amount,
                limit_sats: limit.get(),
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
            amount: amount.map(Msat::new),
            payment_hash: PaymentHash([1; 32]),
            payment_secret: Some([2; 32]),
            timestamp: ts,
            expiry_secs: 600,
            payee: [2; 33],
            description: None,
            description_hash: None,
        }
    }

    fn agent() -> std::sync::Arc<Agent> {
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            key_sha256: hash_key("k"),
            limits: Limits {
                per_request_sats: Some(100.into()),
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
            check_invoice(&inv, &a, host, &[], Network::Regtest, now).map_err(|d| d.code())
        };
        assert_eq!(
            code(invoice(Some(100_000), Network::Regtest, now), "x"),
            Ok(Msat::new(100_000))
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

    fn agent_with(allow: &[&str], deny: &[&str]) -> std::sync::Arc<Agent> {
        let s = |l: &[&str]| l.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            key_sha256: hash_key("k"),
            limits: Limits::default(),
            hosts: HostRules {
                allow: s(allow),
                deny: s(deny),
            },
        }]);
        agents.get("a").unwrap().clone()
    }

    #[test]
    fn host_rules_see_through_spellings_of_a_denied_address() {
        let a = agent_with(&["*"], &["127.0.0.1", "localhost"]);
        let now = 1_000_000;
        for &host in crate::hosts::LOOPBACK_SPELLINGS {
            let got = check_invoice(
                &invoice(Some(1000), Network::Regtest, now),
                &a,
                host,
                &[],
                Network::Regtest,
                now,
            )
            .map_err(|d| d.code());
            assert_eq!(got, Err("host-not-allowed"), "{host}");
        }
    }

    #[tokio::test]
    async fn cidr_rules_resolve_names() {
        let now = 1_000_000;
        let check = |a: &Agent, host: &str, addrs: &[IpAddr]| {
            check_invoice(
                &invoice(Some(1000), Network::Regtest, now),
                a,
                host,
                addrs,
                Network::Regtest,
                now,
            )
            .map_err(|d| d.code())
        };
        let a = agent_with(&["*"], &["127.0.0.0/8", "::1/128"]);
        // No lookup for an IP literal or when no CIDR could decide.
        assert!(host_addresses(&a, "127.1", 80).await.is_empty());
        assert!(host_addresses(&agent_with(&["*"], &["x"]), "localhost", 80)
            .await
            .is_empty());
        let addrs = host_addresses(&a, "localhost", 80).await;
        assert!(!addrs.is_empty());
        assert_eq!(check(&a, "localhost", &addrs), Err("host-not-allowed"));
        assert_eq!(check(&a, "LOCALHOST.", &addrs), Err("host-not-allowed"));
        // A name that cannot be resolved cannot be vetted.
        let none = host_addresses(&a, "no-such-host.invalid", 80).await;
        assert!(none.is_empty());
        assert_eq!(
            check(&a, "no-such-host.invalid", &none),
            Err("host-not-allowed")
        );
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert_eq!(check(&a, "example.com", &[public]), Ok(Msat::new(1000)));
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
                &[],
                Network::Regtest,
                now,
            )
            .map_err(|d| d.code())
        };
        assert_eq!(check(now + 60), Ok(Msat::new(1000)));
        assert_eq!(
            check(now + 10 * 365 * 86_400),
            Err("invoice-from-the-future")
        );
    }
}
