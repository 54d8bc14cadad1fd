//! `approval:` — how long a payment held for the operator waits.

use super::{err, ConfigError};
use serde::Deserialize;

/// `approval:` — how long a held payment waits for the operator's decision.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Seconds a payment above `approve_above_sats` waits (the agent's request with it); the
    /// invoice's expiry shortens the wait. Unanswered: declined `approval-timeout`.
    #[serde(default = "default_approval_timeout")]
    pub timeout_secs: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            timeout_secs: default_approval_timeout(),
        }
    }
}

fn default_approval_timeout() -> u64 {
    120
}

impl ApprovalConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if self.timeout_secs == 0 || self.timeout_secs > 86_400 {
            note(Err(err(
                "approval.timeout_secs",
                "must be between 1 and 86400 (a day); the agent's request waits this long",
            )));
        }
        out
    }
}
