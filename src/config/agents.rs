//! `agents:` — the agents the file defines, and what a valid agent name is.

use super::{err, ConfigError, HostRules, Limits};
use serde::Deserialize;

/// One entry of `agents:`: an agent the config file defines. On SIGHUP changes reach open
/// connections too; a name also made through the admin API is the file's agent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The user name in `Proxy-Authorization: Basic base64(name:key)`.
    pub name: String,
    /// sha256 of the key, 64 hex characters (`l402-proxy hash-key` prints it).
    pub key_sha256: String,
    /// Its spending limits and guardrails. Absent: none of its own (`operator_limits` still
    /// apply).
    #[serde(default)]
    pub limits: Limits,
    /// The hosts it may pay. Absent: every host (`allow: ["*"]`, no deny).
    #[serde(default)]
    pub hosts: HostRules,
}

/// Problems of `agents:`: names (valid, unique without regard to case), keys, limits, hosts.
pub(super) fn problems(agents: &[AgentConfig]) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut note = |r: Result<(), ConfigError>| {
        if let Err(e) = r {
            out.push(e);
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, a) in agents.iter().enumerate() {
        let at = |f: &str| format!("agents[{i}].{f}");
        if let Err(problem) = check_agent_name(&a.name) {
            note(Err(err(at("name"), problem)));
        } else if !seen.insert(a.name.to_lowercase()) {
            // Unique without regard to case: `ALICE` beside `alice` would read as one agent
            // in every log, table and alert.
            note(Err(err(
                at("name"),
                format!(
                    "duplicate agent name {:?} (agent names are unique without regard to case)",
                    a.name
                ),
            )));
        }
        if a.key_sha256.len() != 64 || !a.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            note(Err(err(
                at("key_sha256"),
                "must be 64 hex characters: the sha256 of the agent's key (`l402-proxy hash-key` prints it)",
            )));
        }
        for (field, problem) in a.limits.problems() {
            note(Err(err(at(&format!("limits.{field}")), problem)));
        }
        for (field, problem) in a.hosts.problems() {
            note(Err(err(at(&format!("hosts.{field}")), problem)));
        }
    }
    out
}

/// Whether `name` can be an agent's name: the user part of `Proxy-Authorization: Basic`, so
/// non-empty, at most 64 characters, no `:`, no control characters or spaces.
pub fn check_agent_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if name.contains(':') || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain ':', spaces or control characters");
    }
    Ok(())
}
