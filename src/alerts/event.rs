//! What an alert says: the [`Event`] variants, their names, and the JSON body a webhook
//! receives. Events carry amounts, hosts, agent names and payment hashes — never preimages,
//! macaroons, keys or any other secret.

use serde::Serialize;

/// Every event name, in the order of [`Event`]'s variants. Config filters are checked against
/// it, and the `l402_proxy_alerts_total{event}` family is initialised with it.
pub const EVENT_NAMES: [&str; 13] = [
    "budget.threshold",
    "approval.requested",
    "approval.decided",
    "payment.failed",
    "payment.stuck",
    "wallet.low",
    "store.unavailable",
    "store.recovered",
    "price.jump",
    "fleet.paused",
    "fleet.resumed",
    "breaker.tripped",
    "agent.resumed",
];

/// Whose limit a [`Event::BudgetThreshold`] is about. Serialised as `"agent"` or `"operator"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One agent's own limit (`agent` names it).
    Agent,
    /// A cap over all agents together (`operator_limits`).
    Operator,
}

/// Something an operator wants to hear about. Each variant's fields become top-level keys of
/// the webhook body next to `event`, `id`, `at` and `at_rfc3339`; an `Option` that is `None` is
/// left out (so `agent` appears only where there is one). No variant holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// `budget.threshold`: spend reached `percent` of a limit (once per window and threshold).
    BudgetThreshold {
        /// Whose limit: one agent's or the operator's cap over all agents.
        scope: Scope,
        /// The agent, for [`Scope::Agent`]; `None` (and absent from the body) for the operator.
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// `hourly`, `daily`, `weekly`, `monthly` or `total`.
        limit: String,
        /// The threshold crossed, in per cent of the limit (one of `budget_thresholds`).
        percent: u32,
        /// Spent in the window when the threshold was crossed.
        spent_msat: u64,
        /// The limit itself.
        limit_msat: u64,
        /// Unix seconds the window started; absent for `total`.
        #[serde(skip_serializing_if = "Option::is_none")]
        window_start: Option<i64>,
    },
    /// `approval.requested`: a payment waits for an operator's decision. The approval's id is
    /// sent as `approval_id` (the body's `id` is the delivery id).
    ApprovalRequested {
        /// The approval's id (sent as `approval_id`), as the admin API names it.
        #[serde(rename = "approval_id")]
        id: String,
        /// The agent whose payment waits.
        agent: String,
        /// The host asking to be paid.
        host: String,
        /// The invoice's amount.
        amount_msat: u64,
        /// Unix seconds the approval was requested.
        created_at: i64,
        /// Unix seconds after which it counts as refused.
        expires_at: i64,
    },
    /// `approval.decided`: an approval was granted or refused. The approval's id is sent as
    /// `approval_id`.
    ApprovalDecided {
        /// The approval's id (sent as `approval_id`).
        #[serde(rename = "approval_id")]
        id: String,
        /// The agent whose payment it was.
        agent: String,
        /// The host asking to be paid.
        host: String,
        /// The invoice's amount.
        amount_msat: u64,
        /// True when the payment may go ahead.
        approved: bool,
        /// Who or what decided: an operator, or `expiry`.
        by: String,
    },
    /// `payment.failed`: the wallet reported a payment as failed.
    PaymentFailed {
        /// The agent the payment was for.
        agent: String,
        /// The host that asked to be paid.
        host: String,
        /// The invoice's amount.
        amount_msat: u64,
        /// Hex payment hash (public; never the preimage).
        payment_hash: String,
        /// A stable machine-readable failure code.
        code: String,
        /// The failure in words.
        reason: String,
    },
    /// `payment.stuck`: a payment is still in flight long after it started.
    PaymentStuck {
        /// The agent the payment is for.
        agent: String,
        /// The host that asked to be paid.
        host: String,
        /// The invoice's amount.
        amount_msat: u64,
        /// Hex payment hash (public; never the preimage).
        payment_hash: String,
        /// Unix seconds the payment started.
        pending_since: i64,
    },
    /// `wallet.low`: the wallet's balance fell below `alerts.wallet_low_sats`.
    WalletLow {
        /// The wallet backend (`lnd`, `cln`, `lnbits`, `nwc`, `dev`).
        backend: String,
        /// The balance read.
        balance_msat: u64,
        /// `alerts.wallet_low_sats`, in msat.
        threshold_msat: u64,
    },
    /// `store.unavailable`: the ledger's store stopped answering; payments fail closed.
    StoreUnavailable {
        /// The store backend (`sqlite`, `postgres`).
        backend: String,
        /// Why, in words (no connection string or password).
        reason: String,
    },
    /// `store.recovered`: the store answers again.
    StoreRecovered {
        /// The store backend (`sqlite`, `postgres`).
        backend: String,
    },
    /// `price.jump`: a service's price rose by more than the allowed per cent.
    PriceJump {
        /// The agent whose payment was refused.
        agent: String,
        /// The host that asked to be paid.
        host: String,
        /// The service (as tokens are scoped) whose price jumped.
        service: String,
        /// The price paid last time.
        last_msat: u64,
        /// The price asked now.
        new_msat: u64,
        /// How much higher, in per cent of `last_msat`.
        increase_pct: u32,
        /// The largest increase allowed, in per cent.
        limit_pct: u32,
    },
    /// `fleet.paused`: every new payment is stopped, on every replica (the kill switch, or the
    /// fleet's spend-spike breaker).
    FleetPaused {
        /// `operator`, or `breaker`.
        by: String,
        /// Why, as recorded.
        reason: String,
        /// Held payments denied by it.
        approvals_denied: u64,
    },
    /// `fleet.resumed`: payments are allowed again.
    FleetResumed {
        /// Who resumed (`operator`).
        by: String,
    },
    /// `breaker.tripped`: a spend-spike breaker refused a payment and stopped its agent (or,
    /// for the operator's, the fleet) until the operator resumes.
    BreakerTripped {
        /// The agent's breaker, or the operator's over all agents.
        scope: Scope,
        /// The agent whose payment tripped it.
        agent: String,
        /// The breaker's sliding window, in seconds.
        window_secs: u64,
        /// Spent in the window before the refused payment.
        spent_msat: u64,
        /// The refused payment (amount + fee reserve).
        amount_msat: u64,
        /// The breaker's maximum.
        max_msat: u64,
    },
    /// `agent.resumed`: the operator lifted an agent's stop (a tripped breaker).
    AgentResumed {
        /// The agent.
        agent: String,
        /// Who resumed it (`operator`).
        by: String,
    },
}

impl Event {
    /// The event's stable name (one of [`EVENT_NAMES`]), as sent in `event` and `X-L402-Event`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::BudgetThreshold { .. } => "budget.threshold",
            Event::ApprovalRequested { .. } => "approval.requested",
            Event::ApprovalDecided { .. } => "approval.decided",
            Event::PaymentFailed { .. } => "payment.failed",
            Event::PaymentStuck { .. } => "payment.stuck",
            Event::WalletLow { .. } => "wallet.low",
            Event::StoreUnavailable { .. } => "store.unavailable",
            Event::StoreRecovered { .. } => "store.recovered",
            Event::PriceJump { .. } => "price.jump",
            Event::FleetPaused { .. } => "fleet.paused",
            Event::FleetResumed { .. } => "fleet.resumed",
            Event::BreakerTripped { .. } => "breaker.tripped",
            Event::AgentResumed { .. } => "agent.resumed",
        }
    }

    /// The webhook body: `{"event", "id", "at", "at_rfc3339", ...fields}` as compact JSON. These
    /// exact bytes are signed and sent on every attempt, so retries carry the same `id`.
    pub fn body(&self, id: &str, at: i64) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            event: &'static str,
            id: &'a str,
            at: i64,
            at_rfc3339: String,
            #[serde(flatten)]
            fields: &'a Event,
        }
        // Every string is cleaned and capped: hosts, services and reasons can be a seller's.
        let fields = self.cleaned();
        let envelope = Envelope {
            event: self.name(),
            id,
            at,
            at_rfc3339: rfc3339(at),
            fields: &fields,
        };
        // Plain strings, integers and booleans only: serialising cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// This event with every string field passed through [`crate::core::text::shown`].
    fn cleaned(&self) -> Event {
        fn c(s: &mut String) {
            if let std::borrow::Cow::Owned(clean) =
                crate::core::text::shown(s, crate::core::text::TEXT_MAX)
            {
                *s = clean;
            }
        }
        let mut e = self.clone();
        match &mut e {
            Event::BudgetThreshold { agent, limit, .. } => {
                agent.iter_mut().for_each(c);
                c(limit);
            }
            Event::ApprovalRequested {
                id, agent, host, ..
            }
            | Event::PaymentStuck {
                payment_hash: id,
                agent,
                host,
                ..
            } => [id, agent, host].into_iter().for_each(c),
            Event::ApprovalDecided {
                id,
                agent,
                host,
                by,
                ..
            } => [id, agent, host, by].into_iter().for_each(c),
            Event::PaymentFailed {
                agent,
                host,
                payment_hash,
                code,
                reason,
                ..
            } => [agent, host, payment_hash, code, reason]
                .into_iter()
                .for_each(c),
            Event::WalletLow { backend, .. } | Event::StoreRecovered { backend } => c(backend),
            Event::StoreUnavailable { backend, reason } => {
                [backend, reason].into_iter().for_each(c)
            }
            Event::PriceJump {
                agent,
                host,
                service,
                ..
            } => [agent, host, service].into_iter().for_each(c),
            Event::FleetPaused { by, reason, .. } => [by, reason].into_iter().for_each(c),
            Event::FleetResumed { by } => c(by),
            Event::BreakerTripped { agent, .. } => c(agent),
            Event::AgentResumed { agent, by } => [agent, by].into_iter().for_each(c),
        }
        e
    }
}

use crate::core::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const AT: i64 = 1_796_083_200;

    fn shape(event: &Event) -> Value {
        let v: Value = serde_json::from_slice(&event.body("d1", AT)).unwrap();
        assert_eq!(v["event"], event.name());
        assert_eq!(v["id"], "d1");
        assert_eq!(v["at"], AT);
        assert_eq!(v["at_rfc3339"], "2026-12-01T00:00:00Z");
        let mut v = v;
        let m = v.as_object_mut().unwrap();
        for k in ["event", "id", "at", "at_rfc3339"] {
            m.remove(k);
        }
        v
    }

    #[test]
    fn seller_text_in_an_event_is_cleaned_and_capped() {
        let event = Event::PriceJump {
            agent: "a".into(),
            host: "h.example".into(),
            service: format!("<b>cheap</b>\u{202E}gnp.exe\u{1b}[2J{}", "x".repeat(3000)),
            last_msat: 1,
            new_msat: 2,
            increase_pct: 100,
            limit_pct: 50,
        };
        let v = shape(&event);
        let service = v["service"].as_str().unwrap();
        assert!(
            service.starts_with("<b>cheap</b>\u{FFFD}gnp.exe\u{FFFD}[2J"),
            "{service}"
        );
        assert_eq!(
            service.chars().count(),
            crate::core::text::TEXT_MAX,
            "capped"
        );
    }

    #[test]
    fn every_variant_has_its_name_and_flat_fields() {
        let cases = [
            (
                Event::BudgetThreshold {
                    scope: Scope::Agent,
                    agent: Some("research".into()),
                    limit: "daily".into(),
                    percent: 80,
                    spent_msat: 8_000_000,
                    limit_msat: 10_000_000,
                    window_start: Some(AT),
                },
                json!({"scope": "agent", "agent": "research", "limit": "daily", "percent": 80,
                       "spent_msat": 8_000_000, "limit_msat": 10_000_000, "window_start": AT}),
            ),
            (
                Event::BudgetThreshold {
                    scope: Scope::Operator,
                    agent: None,
                    limit: "total".into(),
                    percent: 100,
                    spent_msat: 5,
                    limit_msat: 5,
                    window_start: None,
                },
                json!({"scope": "operator", "limit": "total", "percent": 100,
                       "spent_msat": 5, "limit_msat": 5}),
            ),
            (
                Event::ApprovalRequested {
                    id: "ap_1".into(),
                    agent: "a".into(),
                    host: "h.example".into(),
                    amount_msat: 1000,
                    created_at: AT,
                    expires_at: AT + 600,
                },
                json!({"approval_id": "ap_1", "agent": "a", "host": "h.example",
                       "amount_msat": 1000, "created_at": AT, "expires_at": AT + 600}),
            ),
            (
                Event::ApprovalDecided {
                    id: "ap_1".into(),
                    agent: "a".into(),
                    host: "h.example".into(),
                    amount_msat: 1000,
                    approved: false,
                    by: "expiry".into(),
                },
                json!({"approval_id": "ap_1", "agent": "a", "host": "h.example",
                       "amount_msat": 1000, "approved": false, "by": "expiry"}),
            ),
            (
                Event::PaymentFailed {
                    agent: "a".into(),
                    host: "h.example".into(),
                    amount_msat: 1000,
                    payment_hash: "ab".repeat(32),
                    code: "no_route".into(),
                    reason: "no route found".into(),
                },
                json!({"agent": "a", "host": "h.example", "amount_msat": 1000,
                       "payment_hash": "ab".repeat(32), "code": "no_route",
                       "reason": "no route found"}),
            ),
            (
                Event::PaymentStuck {
                    agent: "a".into(),
                    host: "h.example".into(),
                    amount_msat: 1000,
                    payment_hash: "cd".repeat(32),
                    pending_since: AT - 3600,
                },
                json!({"agent": "a", "host": "h.example", "amount_msat": 1000,
                       "payment_hash": "cd".repeat(32), "pending_since": AT - 3600}),
            ),
            (
                Event::WalletLow {
                    backend: "lnd".into(),
                    balance_msat: 9_000_000,
                    threshold_msat: 10_000_000,
                },
                json!({"backend": "lnd", "balance_msat": 9_000_000, "threshold_msat": 10_000_000}),
            ),
            (
                Event::StoreUnavailable {
                    backend: "postgres".into(),
                    reason: "connection refused".into(),
                },
                json!({"backend": "postgres", "reason": "connection refused"}),
            ),
            (
                Event::StoreRecovered {
                    backend: "postgres".into(),
                },
                json!({"backend": "postgres"}),
            ),
            (
                Event::PriceJump {
                    agent: "a".into(),
                    host: "h.example".into(),
                    service: "h.example/v1".into(),
                    last_msat: 1000,
                    new_msat: 5000,
                    increase_pct: 400,
                    limit_pct: 100,
                },
                json!({"agent": "a", "host": "h.example", "service": "h.example/v1",
                       "last_msat": 1000, "new_msat": 5000, "increase_pct": 400,
                       "limit_pct": 100}),
            ),
            (
                Event::FleetPaused {
                    by: "operator".into(),
                    reason: "incident".into(),
                    approvals_denied: 2,
                },
                json!({"by": "operator", "reason": "incident", "approvals_denied": 2}),
            ),
            (
                Event::FleetResumed {
                    by: "operator".into(),
                },
                json!({"by": "operator"}),
            ),
            (
                Event::BreakerTripped {
                    scope: Scope::Agent,
                    agent: "a".into(),
                    window_secs: 300,
                    spent_msat: 30_000,
                    amount_msat: 10_000,
                    max_msat: 30_000,
                },
                json!({"scope": "agent", "agent": "a", "window_secs": 300, "spent_msat": 30_000,
                       "amount_msat": 10_000, "max_msat": 30_000}),
            ),
            (
                Event::AgentResumed {
                    agent: "a".into(),
                    by: "operator".into(),
                },
                json!({"agent": "a", "by": "operator"}),
            ),
        ];
        let mut named: Vec<&str> = Vec::new();
        for (event, fields) in &cases {
            assert_eq!(shape(event), *fields, "{}", event.name());
            if !named.contains(&event.name()) {
                named.push(event.name());
            }
        }
        assert_eq!(named, EVENT_NAMES, "every name covered, in order");
    }

    #[test]
    fn body_leads_with_the_envelope() {
        let body = Event::StoreRecovered {
            backend: "sqlite".into(),
        }
        .body("d1", AT);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"event":"store.recovered","id":"d1","at":1796083200,"at_rfc3339":"2026-12-01T00:00:00Z","backend":"sqlite"}"#
        );
    }
}
