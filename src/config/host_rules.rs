//! The hosts an agent may pay (`agents[i].hosts`): deny wins over allow.

use super::tls::default_intercept;
use serde::Deserialize;

/// Which hosts an agent may pay: deny wins over allow.
///
/// Matching is on the destination's canonical form, never the text the agent wrote (see
/// [`crate::hosts`]): brackets and one trailing dot are removed, names are lower-cased, and an
/// IP literal is its address however it is spelled (`127.1`, `2130706433`, `0x7f.1`,
/// `0177.0.0.1`, `[::ffff:127.0.0.1]` are all `127.0.0.1`; an IPv4-mapped IPv6 address and its
/// IPv4 address are one). Entries are normalised the same way, so `127.1` in a rule is
/// `127.0.0.1` and `LOCALHOST.` is `localhost`. Each entry is one of:
/// - a name or glob (`api.example.com`, `*.example.com`: `*` is any run of characters, and
///   `*.example.com` does not match `example.com` itself), matched against the canonical name,
///   or the canonical text of an IP literal (`*` matches every host, `10.*` every 10/8 literal);
/// - an IP address, matched against IP-literal destinations in any spelling (not against the
///   addresses a name resolves to: write `127.0.0.1/32` for that);
/// - a CIDR (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1/32`), matched against the address the host is,
///   or for a name the addresses it resolves to (the resolver the destination guard uses):
///   a name is denied when ANY of its addresses is in a deny CIDR (or it cannot be resolved),
///   and is allowed by allow CIDRs only when ALL of its addresses are in them (a name matching
///   an allow glob is allowed whatever it resolves to).
///
/// Invalid entries are config errors (`agents[i].hosts.allow[j]`); rules that somehow skipped
/// validation fail closed (an unreadable deny entry refuses every host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostRules {
    /// Hosts it may pay: names, globs, IP addresses, CIDRs (default `["*"]`).
    #[serde(default = "default_intercept")]
    pub allow: Vec<String>,
    /// Hosts it may never pay (wins over allow): names, globs, IP addresses, CIDRs.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Default for HostRules {
    fn default() -> Self {
        HostRules {
            allow: default_intercept(),
            deny: Vec::new(),
        }
    }
}

impl HostRules {
    /// Whether `host` may be paid, without its addresses: a name that CIDR rules would need
    /// resolved is refused here (use [`HostRules::needs_addresses`] and
    /// [`HostRules::permits_resolved`]).
    pub fn permits(&self, host: &str) -> bool {
        self.permits_resolved(host, &[])
    }

    /// Whether deciding for `host` needs the addresses it resolves to (it is a name and CIDR
    /// rules could decide it).
    pub fn needs_addresses(&self, host: &str) -> bool {
        crate::hosts::Matcher::new(&self.allow, &self.deny).needs_addresses(host)
    }

    /// Whether `host` may be paid, `addrs` being what it resolved to (consulted for a name
    /// when CIDR rules exist; empty when not resolved).
    pub fn permits_resolved(&self, host: &str, addrs: &[std::net::IpAddr]) -> bool {
        crate::hosts::Matcher::new(&self.allow, &self.deny).permits(host, addrs)
    }

    /// Entries that are not a name, glob, IP address or CIDR: `(field, problem)`, fields
    /// relative to the rules (`allow[0]`, `deny[2]`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (j, entry) in entries.iter().enumerate() {
                if let Err(problem) = crate::hosts::Rule::parse(entry) {
                    out.push((format!("{list}[{j}]"), problem));
                }
            }
        }
        out
    }
}
