//! Prometheus metrics, served on the admin listener at `/metrics`. Counters on the request path
//! are resolved to their label values once, at start, so counting costs one atomic add.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// How a request through the proxy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded; no payment needed (with or without a cached token).
    Passed,
    /// A challenge was paid and the request replayed.
    Paid,
    /// Rode on a token a concurrent request paid.
    Shared,
    /// The upstream 402 went back unpaid, with a reason.
    Declined,
    /// 407.
    AuthFailed,
    /// 403 from the destination guard.
    Refused,
    /// 502: the upstream could not be reached or failed.
    UpstreamError,
    /// 400: not a proxy request, unreadable body.
    BadRequest,
    /// Answered by the proxy itself (the agent's balance).
    SelfView,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::Passed,
        Outcome::Paid,
        Outcome::Shared,
        Outcome::Declined,
        Outcome::AuthFailed,
        Outcome::Refused,
        Outcome::UpstreamError,
        Outcome::BadRequest,
        Outcome::SelfView,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Paid => "paid",
            Outcome::Shared => "shared",
            Outcome::Declined => "declined",
            Outcome::AuthFailed => "auth_failed",
            Outcome::Refused => "refused",
            Outcome::UpstreamError => "upstream_error",
            Outcome::BadRequest => "bad_request",
            Outcome::SelfView => "self_view",
        }
    }
}

/// Every metric the proxy exports, registered once in its own registry ([`Metrics::render`]
/// writes them). Label values known in advance are created at start, so they read 0 before
/// their first event.
pub struct Metrics {
    registry: Registry,
    requests: [IntCounter; 9],
    /// `l402_proxy_challenges_total`: 402 (or 401) responses carrying an L402 challenge.
    pub challenges: IntCounter,
    payments: IntCounterVec,
    paid_msat: IntCounterVec,
    fees_msat: IntCounterVec,
    /// `l402_proxy_payment_duration_seconds{backend}`: from handing an invoice to the wallet
    /// to its outcome.
    pub payment_seconds: HistogramVec,
    /// `l402_proxy_upstream_duration_seconds`: from sending a request upstream to its response
    /// head.
    pub upstream_seconds: Histogram,
    /// `l402_proxy_token_cache_hits_total`: requests sent with a cached token.
    pub token_hits: IntCounter,
    /// `l402_proxy_token_cache_misses_total`: requests sent with no cached token for their
    /// agent and origin.
    pub token_misses: IntCounter,
    declines: IntCounterVec,
    /// `l402_proxy_open_connections`: agent connections open now (held by a [`GaugeGuard`]).
    pub open_connections: IntGauge,
    /// `l402_proxy_open_tunnels`: CONNECT tunnels, relayed or intercepted, open now.
    pub open_tunnels: IntGauge,
    connects: IntCounterVec,
    refused_connections: IntCounterVec,
    closed_unauthenticated: IntCounterVec,
    /// `l402_proxy_certificates_minted_total`: leaf certificates our CA has signed.
    pub certificates_minted: IntCounter,
    /// 1 while the ledger's store answers, 0 while payments fail closed.
    pub store_up: IntGauge,
    /// What the wallet can spend, as last read in the background (absent until first read).
    pub wallet_balance_msat: IntGauge,
    /// Operator alerts emitted, by event name (counted with or without a webhook).
    alerts: IntCounterVec,
    /// Webhook delivery outcomes: delivered, retried (one failed attempt that will be retried),
    /// failed (gave up), dropped (never queued, or its webhook was removed).
    webhook_deliveries: IntCounterVec,
    /// MCP tool calls, by tool and result (ok, error).
    mcp_calls: IntCounterVec,
    /// `l402_proxy_policy_hook_duration_seconds`: from sending a decision request to the
    /// operator's policy service to its answer (or the failure).
    pub policy_hook_seconds: Histogram,
    /// `l402_proxy_policy_hook_decisions_total{decision}`: allow, deny, hold, error.
    policy_decisions: IntCounterVec,
}

/// The `decision` labels of `l402_proxy_policy_hook_decisions_total`.
pub const POLICY_DECISIONS: [&str; 4] = ["allow", "deny", "hold", "error"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c =
        IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, in a fresh registry (so several instances, as in tests, never
    /// collide).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "l402_proxy_requests_total",
            "Requests through the proxy, by how they ended.",
            &["outcome"],
        );
        let payment_seconds = HistogramVec::new(
            HistogramOpts::new(
                "l402_proxy_payment_duration_seconds",
                "Time from handing an invoice to the wallet to its outcome.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["backend"],
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let _ = registry.register(Box::new(payment_seconds.clone()));
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "l402_proxy_upstream_duration_seconds",
                "Time from sending a request upstream to its response headers.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let _ = registry.register(Box::new(upstream_seconds.clone()));
        let alerts = counter_vec(
            &registry,
            "l402_proxy_alerts_total",
            "Operator alerts emitted, by event (whether or not a webhook is configured).",
            &["event"],
        );
        for name in crate::alerts::EVENT_NAMES {
            alerts.with_label_values(&[name]);
        }
        let webhook_deliveries = counter_vec(
            &registry,
            "l402_proxy_webhook_deliveries_total",
            "Alert webhook deliveries, by result (delivered, retried, failed, dropped).",
            &["result"],
        );
        for result in crate::alerts::DELIVERY_RESULTS {
            webhook_deliveries.with_label_values(&[result]);
        }
        let mcp_calls = counter_vec(
            &registry,
            "l402_proxy_mcp_tool_calls_total",
            "MCP tool calls by agents, by tool and result (ok, error: isError, a refusal).",
            &["tool", "result"],
        );
        let policy_hook_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "l402_proxy_policy_hook_duration_seconds",
                "Time the operator's policy service took to decide a payment (or to fail).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        let _ = registry.register(Box::new(policy_hook_seconds.clone()));
        let policy_decisions = counter_vec(
            &registry,
            "l402_proxy_policy_hook_decisions_total",
            "Decisions of the operator's policy service, by decision (allow, deny, hold, error: no usable answer).",
            &["decision"],
        );
        for d in POLICY_DECISIONS {
            policy_decisions.with_label_values(&[d]);
        }
        Metrics {
            mcp_calls,
            policy_hook_seconds,
            policy_decisions,
            requests: Outcome::ALL.map(|o| requests.with_label_values(&[o.label()])),
            challenges: counter(
                &registry,
                "l402_proxy_challenges_total",
                "402 (or 401) responses carrying an L402 challenge.",
            ),
            payments: counter_vec(
                &registry,
                "l402_proxy_payments_total",
                "Payments handed to the wallet, by outcome (succeeded, failed, in_flight) and backend.",
                &["outcome", "backend"],
            ),
            paid_msat: counter_vec(&registry, "l402_proxy_paid_msat_total", "Millisatoshis paid, per agent (fees excluded).", &["agent"]),
            fees_msat: counter_vec(&registry, "l402_proxy_fees_msat_total", "Millisatoshis paid in routing fees, per agent.", &["agent"]),
            payment_seconds,
            upstream_seconds,
            token_hits: counter(&registry, "l402_proxy_token_cache_hits_total", "Requests sent with a cached token."),
            token_misses: counter(
                &registry,
                "l402_proxy_token_cache_misses_total",
                "Requests sent with no cached token for their agent and origin.",
            ),
            declines: counter_vec(&registry, "l402_proxy_declines_total", "Refusals to pay, by reason.", &["reason"]),
            open_connections: gauge(&registry, "l402_proxy_open_connections", "Agent connections open now."),
            open_tunnels: gauge(&registry, "l402_proxy_open_tunnels", "CONNECT tunnels (relayed or intercepted) open now."),
            connects: counter_vec(&registry, "l402_proxy_connects_total", "CONNECT requests accepted, by mode (tunnel, intercept).", &["mode"]),
            closed_unauthenticated: {
                let c = counter_vec(&registry, "l402_proxy_unauthenticated_closed_total", "Connections closed before they authenticated: evicted (the oldest) to admit a newer one under a cap (max_connections, max_unauthenticated_per_source), or not authenticated within http.auth_timeout_secs (auth_timeout).", &["why"]);
                for why in Unauthenticated::ALL {
                    c.with_label_values(&[why.label()]);
                }
                c
            },
            refused_connections: {
                let c = counter_vec(&registry, "l402_proxy_refused_connections_total", "Agent connections closed at accept, by cap (max_connections: every open connection had authenticated).", &["cap"]);
                for cap in ["max_connections", "max_unauthenticated_per_source"] {
                    c.with_label_values(&[cap]);
                }
                c
            },
            certificates_minted: counter(&registry, "l402_proxy_certificates_minted_total", "Leaf certificates minted by our CA."),
            store_up: gauge(&registry, "l402_proxy_store_up", "1 while the ledger's store answers; 0 while new payments are refused (store-unavailable)."),
            wallet_balance_msat: gauge(&registry, "l402_proxy_wallet_balance_msat", "What the operator's wallet can spend, in msat, as last read in the background (0 until read; backends that cannot tell stay 0)."),
            alerts,
            webhook_deliveries,
            registry,
        }
    }

    /// Counts one request through the proxy by how it ended (`l402_proxy_requests_total`).
    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    /// Counts one payment handed to the wallet by its outcome (`succeeded`, `failed`,
    /// `in_flight`) and the wallet backend (`l402_proxy_payments_total`).
    pub fn payment(&self, outcome: &str, backend: &str) {
        self.payments.with_label_values(&[outcome, backend]).inc();
    }

    /// Adds a settled payment's amount and routing fee to the agent's totals
    /// (`l402_proxy_paid_msat_total`, fees excluded, and `l402_proxy_fees_msat_total`).
    pub fn paid(&self, agent: &str, amount_msat: u64, fee_msat: u64) {
        self.paid_msat
            .with_label_values(&[agent])
            .inc_by(amount_msat);
        self.fees_msat.with_label_values(&[agent]).inc_by(fee_msat);
    }

    /// Counts one refusal to pay by its decline code (`l402_proxy_declines_total`).
    pub fn decline(&self, reason: &str) {
        self.declines.with_label_values(&[reason]).inc();
    }

    /// Counts one accepted CONNECT by mode, `tunnel` or `intercept`
    /// (`l402_proxy_connects_total`).
    pub fn connect(&self, mode: &'static str) {
        self.connects.with_label_values(&[mode]).inc();
    }

    /// Counts a connection closed at accept by a cap.
    pub fn refused_connection(&self, refusal: crate::proxy::admission::Refusal) {
        let cap = match refusal {
            crate::proxy::admission::Refusal::Full => "max_connections",
            crate::proxy::admission::Refusal::SourceFull => "max_unauthenticated_per_source",
        };
        self.refused_connections.with_label_values(&[cap]).inc();
    }

    /// Counts one connection closed before it authenticated.
    pub fn closed_unauthenticated(&self, why: Unauthenticated) {
        self.closed_unauthenticated
            .with_label_values(&[why.label()])
            .inc();
    }

    /// Counts one emitted alert (`l402_proxy_alerts_total{event}`).
    pub fn alert(&self, event: &str) {
        self.alerts.with_label_values(&[event]).inc();
    }

    /// Counts one webhook delivery outcome (`l402_proxy_webhook_deliveries_total{result}`);
    /// `result` is one of [`crate::alerts::DELIVERY_RESULTS`].
    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries.with_label_values(&[result]).inc();
    }

    /// Counts one MCP tool call (`l402_proxy_mcp_tool_calls_total{tool,result}`); `tool` is a
    /// name from the catalogue (unknown names are never counted), `result` `ok` or `error`.
    pub fn mcp_call(&self, tool: &str, result: &str) {
        self.mcp_calls.with_label_values(&[tool, result]).inc();
    }

    /// Counts one policy-service decision (`l402_proxy_policy_hook_decisions_total`);
    /// `decision` is one of [`POLICY_DECISIONS`].
    pub fn policy_decision(&self, decision: &str) {
        self.policy_decisions.with_label_values(&[decision]).inc();
    }

    /// How many policy-service decisions of each kind this process counted, in
    /// [`POLICY_DECISIONS`] order.
    pub fn policy_decisions(&self) -> [u64; 4] {
        POLICY_DECISIONS.map(|d| self.policy_decisions.with_label_values(&[d]).get())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Decrements a gauge when dropped: open connections and tunnels are counted exactly, however
/// their task ends.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `gauge` now; the guard decrements it once, when dropped.
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_conventional_names() {
        let m = Metrics::new();
        m.request(Outcome::Paid);
        m.payment("succeeded", "dev");
        m.paid("alice", 10_000, 3);
        m.decline("over-daily-limit");
        m.connect("intercept");
        m.payment_seconds.with_label_values(&["dev"]).observe(0.01);
        let _open = GaugeGuard::new(&m.open_connections);
        let text = m.render();
        for line in [
            "l402_proxy_requests_total{outcome=\"paid\"} 1",
            "l402_proxy_requests_total{outcome=\"passed\"} 0",
            "l402_proxy_payments_total{backend=\"dev\",outcome=\"succeeded\"} 1",
            "l402_proxy_paid_msat_total{agent=\"alice\"} 10000",
            "l402_proxy_fees_msat_total{agent=\"alice\"} 3",
            "l402_proxy_declines_total{reason=\"over-daily-limit\"} 1",
            "l402_proxy_open_connections 1",
            "l402_proxy_payment_duration_seconds_count{backend=\"dev\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        drop(_open);
        assert!(m.render().contains("l402_proxy_open_connections 0"));
    }
}

/// Why a connection was closed before it authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Evicted (the oldest unauthenticated) to admit a newer connection: `max_connections`.
    MaxConnections,
    /// Evicted (its source's oldest unauthenticated) for a newer one from that source.
    PerSource,
    /// Not authenticated within `http.auth_timeout_secs`.
    AuthTimeout,
}

impl Unauthenticated {
    const ALL: [Unauthenticated; 3] = [
        Unauthenticated::MaxConnections,
        Unauthenticated::PerSource,
        Unauthenticated::AuthTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Unauthenticated::MaxConnections => "max_connections",
            Unauthenticated::PerSource => "max_unauthenticated_per_source",
            Unauthenticated::AuthTimeout => "auth_timeout",
        }
    }
}

impl From<crate::proxy::admission::Refusal> for Unauthenticated {
    fn from(cap: crate::proxy::admission::Refusal) -> Self {
        match cap {
            crate::proxy::admission::Refusal::Full => Unauthenticated::MaxConnections,
            crate::proxy::admission::Refusal::SourceFull => Unauthenticated::PerSource,
        }
    }
}
