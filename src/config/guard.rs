//! `guard:` — the destination guard's exceptions (private destinations, `host:port` entries).

use super::{err, ConfigError};
use serde::Deserialize;

/// `guard:` — which destinations agents may reach, judged on the addresses DNS returns (see
/// [`crate::guard`]). Absent: every refused address stays refused, with no exception.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Allow loopback, private, link-local and metadata destinations (off by default: SSRF).
    #[serde(default)]
    pub allow_private: bool,
    /// `host:port` entries allowed even when they resolve to a refused address.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl GuardConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        for (i, entry) in self.allow.iter().enumerate() {
            if split_host_port(entry).is_none() {
                note(Err(err(
                    format!("guard.allow[{i}]"),
                    format!("{entry:?} is not host:port"),
                )));
            }
        }
        out
    }
}

/// Splits `host:port` (IPv6 in brackets) into its parts.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}
