//! YAML → typed configuration. Every error names the field path and the problem, so an
//! operator can fix the file without reading code. Unknown keys are errors (typos fail loudly).
//! [`check`] finds everything `run` would refuse — the file's own problems and what
//! [`preflight`] finds in the environment — all at once, before anything is created.

mod admin;
mod agents;
mod approval;
mod guard;
mod host_rules;
mod http;
pub mod limits;
mod load;
mod log;
mod mcp;
mod pay;
mod policy_hook;
pub mod postgres_url;
pub mod preflight;
mod secret;
mod store;
mod tls;
mod wallet;

pub use admin::AdminConfig;
pub use agents::{check_agent_name, AgentConfig};
pub use approval::ApprovalConfig;
pub use guard::{split_host_port, GuardConfig};
pub use host_rules::HostRules;
pub use http::HttpConfig;
pub use limits::{Limits, SellerCap};
pub use load::{check, check_file};
pub use log::{LogConfig, LogFormat};
pub use mcp::McpConfig;
pub use pay::{PayConfig, PayScheme};
pub use policy_hook::{OnFailure, PolicyHookConfig};
pub use secret::read_secret;
pub use store::{
    PostgresConfig, PostgresTls, RetentionConfig, StoreBackend, StoreConfig, MIN_PAYMENTS_DAYS,
};
pub use tls::TlsConfig;
pub use wallet::{
    default_dev_secret, Backend, ClnConfig, DevWalletConfig, LnbitsConfig, LndConfig, NwcConfig,
    WalletConfig,
};

use secret::one_secret_source;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;

/// A configuration problem, with the dotted path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted path of the key at fault (`wallet.lnd.url`, `agents[0].limits.daily_sats`);
    /// empty when the problem is the file as a whole (unreadable, not YAML).
    pub field: String,
    /// What is wrong, in words for the operator, usually with the fix.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "config: {}", self.problem)
        } else {
            write!(f, "config field `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The whole configuration file. Only `wallet` is required; every other key has a default,
/// given on its field. Unknown keys are errors. [`Config::load`] resolves relative paths against
/// the file's directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where agents connect (their HTTP_PROXY / HTTPS_PROXY).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `admin:` — the admin API, dashboard, `/metrics` and probes. Absent: no admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `mcp:` — the agents' MCP server. It is always reachable through the proxy at
    /// `http://l402-proxy.local/mcp`; `mcp.listen` adds a listener of its own. Absent: none.
    #[serde(default)]
    pub mcp: McpConfig,
    /// `tls:` — the interception CA, which hosts are intercepted, extra upstream roots. Absent:
    /// the CA in `data/ca.pem` and `data/ca-key.pem`, every host intercepted.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `guard:` — the destination guard against SSRF. Absent: loopback, private, link-local and
    /// metadata destinations are refused, with no exception.
    #[serde(default)]
    pub guard: GuardConfig,
    /// `wallet:` (required) — the backend that pays, its network, and the fee and time one
    /// payment may take.
    pub wallet: WalletConfig,
    /// `store:` — where the ledger lives. Absent: SQLite in `data/l402-proxy.db`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `http:` — replay buffering, timeouts and connection caps. Absent: each key's default.
    #[serde(default)]
    pub http: HttpConfig,
    /// Which 402 dialects are paid, in order of preference.
    #[serde(default)]
    pub pay: PayConfig,
    /// `agents:` — the agents the file defines (applied again on SIGHUP). Absent: none from the
    /// file; agents made through the admin API still authenticate.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Caps over all agents together (same keys as an agent's limits).
    #[serde(default)]
    pub operator_limits: Limits,
    /// `log:` — the log format. Absent: `text`.
    #[serde(default)]
    pub log: LogConfig,
    /// How payments above `approve_above_sats` wait for the operator.
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// Budget thresholds, the low-wallet level and the webhooks events go to.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
    /// `policy_hook:` — the operator's service asked, signed, before any payment leaves.
    /// Absent: none is asked.
    #[serde(default)]
    pub policy_hook: Option<PolicyHookConfig>,
    /// On SIGTERM: how long open connections and in-flight payments may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_grace() -> u64 {
    30
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8402))
}

impl Config {
    /// Checks everything serde cannot: value ranges, uniqueness, cross-field rules. The first
    /// problem, if any (see [`Config::problems`] for all of them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem [`Config::validate`] knows, in file order.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = self.wallet.problems();
        out.extend(self.store.problems());
        out.extend(self.wallet.timeout_problems());
        out.extend(self.admin.problems());
        out.extend(self.guard.problems());
        out.extend(self.pay.problems());
        out.extend(self.http.problems());
        out.extend(agents::problems(&self.agents));
        out.extend(self.operator_limits.operator_problems());
        for (field, problem) in self.alerts.validate() {
            out.push(err(field, problem));
        }
        out.extend(self.approval.problems());
        if let Some(hook) = &self.policy_hook {
            out.extend(hook.problems());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::Network;

    const KEY: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn minimal() -> String {
        format!(
            "wallet: {{ backend: dev }}\nagents:\n  - name: research\n    key_sha256: \"{KEY}\"\n"
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&minimal()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8402".parse().unwrap());
        assert_eq!(c.tls.intercept, vec!["*"]);
        assert_eq!(c.network(), Network::Regtest);
        assert_eq!(c.wallet.max_fee_sats.get(), 10);
        assert!(c.agents[0].hosts.permits("anything.example"));
    }

    #[test]
    fn caps_per_seller_are_checked_and_matched_first_rule_first() {
        let with = |limits: &str| {
            Config::parse(&format!(
                "wallet: {{ backend: dev }}\nagents:\n  - {{ name: r, key_sha256: \"{KEY}\", limits: {limits} }}\n"
            ))
        };
        let e = with("{ sellers: [ { hosts: [a.example] } ] }").unwrap_err();
        assert_eq!(e.field, "agents[0].limits.sellers[0]", "{e}");
        assert!(e.problem.contains("daily_sats"), "{e}");
        let e = with("{ sellers: [ { hosts: [], daily_sats: 5 } ] }").unwrap_err();
        assert_eq!(e.field, "agents[0].limits.sellers[0].hosts", "{e}");
        let e = with(
            "{ sellers: [ { hosts: ['*'], daily_sats: 5 }, { hosts: ['*'], daily_sats: 9 } ] }",
        )
        .unwrap_err();
        assert_eq!(e.field, "agents[0].limits.sellers[1].hosts", "{e}");
        let c = with(
            "{ sellers: [ { hosts: [api.example.com], daily_sats: 500 }, { hosts: ['*'], daily_sats: 50 } ] }",
        )
        .unwrap();
        let limits = &c.agents[0].limits;
        let cap = |host| limits.seller_cap(host).map(|c| c.key());
        assert_eq!(
            cap("API.example.com:443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(cap("other.example:8080").as_deref(), Some("*"));
    }

    #[test]
    fn a_retention_shorter_than_the_longest_window_is_refused_naming_the_field() {
        let e = Config::parse(&format!(
            "{}store: {{ retention: {{ payments_days: 7 }} }}\n",
            minimal()
        ))
        .unwrap_err();
        assert_eq!(e.field, "store.retention.payments_days", "{e}");
        assert!(e.problem.contains("31 or more"), "{e}");
        let e = Config::parse(&format!(
            "{}store: {{ retention: {{ archive_dir: /var/archive }} }}\n",
            minimal()
        ))
        .unwrap_err();
        assert_eq!(e.field, "store.retention", "{e}");
        let c = Config::parse(&format!(
            "{}store: {{ retention: {{ payments_days: 90, declines_days: 14, archive_dir: archive }} }}\n",
            minimal()
        ))
        .unwrap();
        let r = &c.store.retention;
        assert!(r.enabled());
        assert_eq!((r.payments_days, r.declines_days), (Some(90), Some(14)));
        assert_eq!((r.batch(), r.every().as_secs()), (500, 3600));
        assert!(!Config::parse(&minimal()).unwrap().store.retention.enabled());
    }

    #[test]
    fn unknown_key_names_the_field() {
        let e = Config::parse(&format!("{}    limts: {{}}\n", minimal())).unwrap_err();
        assert!(e.field.starts_with("agents[0]"), "{e}");
        assert!(e.problem.contains("limts"), "{e}");
    }

    #[test]
    fn bad_key_hash_names_the_field() {
        let e =
            Config::parse("wallet: {backend: dev}\nagents:\n  - {name: a, key_sha256: nothex}\n")
                .unwrap_err();
        assert_eq!(e.field, "agents[0].key_sha256");
    }

    #[test]
    fn duplicate_agents_refused() {
        let text = format!("wallet: {{backend: dev}}\nagents:\n  - {{name: a, key_sha256: \"{KEY}\"}}\n  - {{name: a, key_sha256: \"{KEY}\"}}\n");
        assert_eq!(Config::parse(&text).unwrap_err().field, "agents[1].name");
        let text = format!("wallet: {{backend: dev}}\nagents:\n  - {{name: alice, key_sha256: \"{KEY}\"}}\n  - {{name: ALICE, key_sha256: \"{KEY}\"}}\n");
        let e = Config::parse(&text).unwrap_err();
        assert_eq!(e.field, "agents[1].name");
        assert!(e.problem.contains("without regard to case"), "{e}");
    }

    #[test]
    fn backend_needs_its_section() {
        let e = Config::parse("wallet: {backend: lnbits}\n").unwrap_err();
        assert_eq!(e.field, "wallet.lnbits");
        let e = Config::parse("wallet: {backend: lnbits, lnbits: {url: 'ftp://x'}}\n").unwrap_err();
        assert_eq!(e.field, "wallet.lnbits.url");
        let e = Config::parse("wallet: {backend: dev, network: moon}\n").unwrap_err();
        assert_eq!(e.field, "wallet.network");
    }

    #[test]
    fn admin_needs_token() {
        let e = Config::parse("wallet: {backend: dev}\nadmin: {listen: '127.0.0.1:9402'}\n")
            .unwrap_err();
        assert_eq!(e.field, "admin.token_env");
    }

    #[test]
    fn operator_limits_and_window_limits_parse() {
        let text = format!(
            "wallet: {{backend: dev}}\noperator_limits: {{daily_sats: 50}}\nagents:\n  - {{name: a, key_sha256: \"{KEY}\", limits: {{daily_sats: 5, total_sats: 9}}}}\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.operator_limits.daily_sats, Some(50.into()));
        assert_eq!(c.agents[0].limits.total_sats, Some(9.into()));
    }

    #[test]
    fn wrong_type_is_reported_with_path() {
        let e = Config::parse("listen: nope\nwallet: {backend: dev}\n").unwrap_err();
        assert_eq!(e.field, "listen", "{e}");
    }

    #[test]
    fn host_rules_deny_wins() {
        let r = HostRules {
            allow: vec!["*.example.com".into()],
            deny: vec!["evil.example.com".into()],
        };
        assert!(r.permits("api.example.com"));
        assert!(!r.permits("evil.example.com"));
        assert!(!r.permits("other.org"));
        assert!(!r.permits("EVIL.example.com."));
    }

    #[test]
    fn host_rules_normalise_entries_and_destinations() {
        let text = format!(
            "{}    hosts: {{ allow: ['*'], deny: ['127.0.0.1', 'LOCALHOST.', '10.0.0.0/8'] }}\n",
            minimal()
        );
        let c = Config::parse(&text).unwrap();
        let r = &c.agents[0].hosts;
        for host in [
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "localhost.",
            "LOCALHOST",
            "10.1.2.3",
            "012.1",
        ] {
            assert!(!r.permits(host), "{host} must be denied");
        }
        assert!(r.permits("127.0.0.2"));
        assert!(r.needs_addresses("api.example.com"));
        assert!(r.permits_resolved("api.example.com", &["93.184.216.34".parse().unwrap()]));
        assert!(!r.permits_resolved("api.example.com", &["10.9.9.9".parse().unwrap()]));
    }

    #[test]
    fn bad_host_rules_name_the_entry() {
        for (rules, field, says) in [
            (
                "{ allow: ['*', '10.0.0.1/8'] }",
                "agents[0].hosts.allow[1]",
                "10.0.0.0/8",
            ),
            (
                "{ allow: ['10.0.0.0/33'] }",
                "agents[0].hosts.allow[0]",
                "0 to 32",
            ),
            (
                "{ deny: ['ok.example', 'api.example.com:443'] }",
                "agents[0].hosts.deny[1]",
                "port",
            ),
            ("{ deny: [''] }", "agents[0].hosts.deny[0]", "empty"),
            ("{ deny: ['300.1.1.1'] }", "agents[0].hosts.deny[0]", "IPv4"),
            (
                "{ deny: ['fd00::/8', 'x/y'] }",
                "agents[0].hosts.deny[1]",
                "CIDR",
            ),
        ] {
            let text = format!("{}    hosts: {rules}\n", minimal());
            let e = Config::parse(&text).unwrap_err();
            assert_eq!(e.field, field, "{rules}: {e}");
            assert!(e.problem.contains(says), "{rules}: {e}");
        }
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.b:80"), Some(("a.b", 80)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", 443)));
        assert_eq!(split_host_port("nope"), None);
        assert_eq!(split_host_port(":80"), None);
    }
}
