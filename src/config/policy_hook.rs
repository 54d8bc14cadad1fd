//! `policy_hook:` — the operator's own service, asked before any payment leaves (after the
//! price-jump guard and the rate limits, before an approval) whether it may be made.
//!
//! ```yaml
//! policy_hook:
//!   url: "https://policy.ops.example/l402"
//!   secret_env: L402_POLICY_SECRET      # or secret_file: path
//!   timeout_ms: 2000
//!   on_failure: deny                    # or allow (fail-open)
//!   agents: ["*"]                       # names or globs; default every agent
//!   hosts: ["*"]                        # seller host globs; default every host
//! ```

use super::{err, one_secret_source, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a payment comes to when the policy service cannot answer (timeout, connection
/// refused, a non-2xx status, an answer that is not a decision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fail closed (the default): declined `policy-unavailable`, nothing paid.
    #[default]
    Deny,
    /// Fail open: paid as if the service had allowed it (still under every other limit).
    Allow,
}

impl OnFailure {
    /// `deny` or `allow`, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Deny => "deny",
            OnFailure::Allow => "allow",
        }
    }
}

/// `policy_hook:`. Absent: no service is asked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyHookConfig {
    /// Where the signed decision request is POSTed: an http(s) URL with a host (https in
    /// production; plain http is for a service on the same machine).
    pub url: String,
    /// Environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the signing secret (trimmed); relative to the config file's directory.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How long one decision may take, in milliseconds (50 to 30000; default 2000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// What happens when the service cannot answer: `deny` (default) or `allow`.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The agents whose payments are asked about: names or globs (`*` is any run of
    /// characters). Default: every agent.
    #[serde(default = "everything")]
    pub agents: Vec<String>,
    /// The seller hosts whose payments are asked about: host globs. Default: every host.
    #[serde(default = "everything")]
    pub hosts: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    2000
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

/// The bounds of `timeout_ms`.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 50..=30_000;

impl PolicyHookConfig {
    /// Problems serde cannot find, fields named from the file's root. Does not look at the
    /// environment or the file system (the secret is read by `preflight` and at start).
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        match self.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => out.push(err(
                "policy_hook.url",
                format!(
                    "{:?} is not an http(s) URL with a host; write it like \"https://policy.ops.example/l402\"",
                    self.url
                ),
            )),
        }
        if let Err(e) = one_secret_source(
            self.secret_env.is_some(),
            self.secret_file.is_some(),
            "policy_hook.secret",
        ) {
            out.push(e);
        }
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            out.push(err(
                "policy_hook.timeout_ms",
                format!(
                    "{} is out of range: {} to {} milliseconds; a payment waits this long for the decision",
                    self.timeout_ms,
                    TIMEOUT_MS.start(),
                    TIMEOUT_MS.end()
                ),
            ));
        }
        for (key, list) in [("agents", &self.agents), ("hosts", &self.hosts)] {
            if list.is_empty() {
                out.push(err(
                    format!("policy_hook.{key}"),
                    "empty, so no payment would be asked about; use [\"*\"] for all, or remove policy_hook",
                ));
            }
            for (i, p) in list.iter().enumerate() {
                if p.trim().is_empty() {
                    out.push(err(
                        format!("policy_hook.{key}[{i}]"),
                        "empty: write a name or a glob such as \"*.example.com\"",
                    ));
                }
            }
        }
        out
    }

    /// Resolves a relative `secret_file` against `dir` (the config file's directory).
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(p) = self.secret_file.as_mut() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// True when a payment of `agent` to `host` is asked about.
    pub fn applies(&self, agent: &str, host: &str) -> bool {
        crate::glob::any_matches(&self.agents, agent) && crate::glob::any_matches(&self.hosts, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> PolicyHookConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_fail_closed_for_everyone() {
        let c = parse("{url: 'https://policy.example/x', secret_env: S}");
        assert_eq!(c.timeout_ms, 2000);
        assert_eq!(c.on_failure, OnFailure::Deny);
        assert!(c.applies("alice", "api.example.com"));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c = parse("{url: 'http://127.0.0.1:9/p', secret_file: s, on_failure: allow}");
        assert_eq!(c.on_failure, OnFailure::Allow);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn filters_select_agents_and_hosts() {
        let c = parse(
            "{url: 'https://p.example/', secret_env: S, agents: ['research-*'], hosts: ['*.example.com']}",
        );
        assert!(c.applies("research-1", "api.example.com"));
        assert!(!c.applies("ops", "api.example.com"));
        assert!(!c.applies("research-1", "example.org"));
    }

    #[test]
    fn problems_name_the_field() {
        let fields = |yaml: &str| -> Vec<String> {
            parse(yaml)
                .problems()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(
            fields("{url: 'ftp://x/', secret_env: S}"),
            ["policy_hook.url"]
        );
        assert_eq!(fields("{url: 'https://x/'}"), ["policy_hook.secret"]);
        assert_eq!(
            fields("{url: 'https://x/', secret_env: S, secret_file: f}"),
            ["policy_hook.secret"]
        );
        assert_eq!(
            fields("{url: 'https://x/', secret_env: S, timeout_ms: 10}"),
            ["policy_hook.timeout_ms"]
        );
        assert_eq!(
            fields("{url: 'https://x/', secret_env: S, agents: [], hosts: ['']}"),
            ["policy_hook.agents", "policy_hook.hosts[0]"]
        );
        assert!(serde_yaml_ng::from_str::<PolicyHookConfig>(
            "{url: 'https://x/', secret_env: S, on_failure: maybe}"
        )
        .is_err());
    }

    #[test]
    fn the_whole_config_checks_the_section_and_its_secret() {
        let text = "wallet: {backend: dev}\npolicy_hook: {url: 'https://p.example/', secret_env: L402_POLICY_UNIT_UNSET, timeout_ms: 0}\n";
        let e = crate::config::Config::parse(text).unwrap_err();
        assert_eq!(e.field, "policy_hook.timeout_ms", "{e}");
        let text = "wallet: {backend: dev}\npolicy_hook: {url: 'https://p.example/', secret_env: L402_POLICY_UNIT_UNSET}\n";
        let config = crate::config::Config::parse(text).unwrap();
        let found = crate::config::preflight::check(&config);
        assert!(
            found.iter().any(|e| e.field == "policy_hook.secret_env"
                && e.problem.contains("L402_POLICY_UNIT_UNSET")),
            "{found:?}"
        );
        let e = crate::config::Config::parse(
            "wallet: {backend: dev}\npolicy_hook: {url: x, secret_env: S, retries: 3}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("retries"), "{e}");
    }
}
