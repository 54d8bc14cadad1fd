//! `admin:` — the admin listener, its tokens, Host names and connection cap.

use super::{err, ConfigError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `admin:` — the admin listener: the API under `/v1/*` (bearer token), the dashboard at `/`,
/// `/metrics` and the probes `/healthz` and `/readyz`. Without `listen` there is none; with it,
/// `token_env` or `token_file` is required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin API, /metrics and probes. Absent: no admin listener.
    pub listen: Option<SocketAddr>,
    /// The bearer token for `/v1/*`, from this environment variable…
    pub token_env: Option<String>,
    /// …or this file.
    pub token_file: Option<PathBuf>,
    /// When set, `/metrics` (which names agents and their spend) needs this bearer token (or
    /// the admin token). Unset, `/metrics` is open on a loopback `admin.listen` and needs the
    /// admin token anywhere else (unless `metrics_public`).
    #[serde(default)]
    pub metrics_token_env: Option<String>,
    /// The metrics token from a file instead.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// `/metrics` open without a token even when `admin.listen` is not loopback (for scrapers
    /// that cannot send one). Default false. Ignored when a metrics token is set.
    #[serde(default)]
    pub metrics_public: bool,
    /// Names (besides the listener's own address, and `localhost` on loopback) a request's
    /// `Host` may give: a Service or ingress name. Any other is answered `421`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Admin connections open at once; one more is closed at accept. Default 64.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

fn default_admin_max_connections() -> usize {
    crate::admin::gate::DEFAULT_MAX_CONNECTIONS
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token_env: None,
            token_file: None,
            metrics_token_env: None,
            metrics_token_file: None,
            metrics_public: false,
            hosts: Vec::new(),
            max_connections: default_admin_max_connections(),
        }
    }
}

impl AdminConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if self.listen.is_some() && self.token_env.is_none() && self.token_file.is_none() {
            note(Err(err(
                "admin.token_env",
                "admin.listen is set, so a bearer token is required: set admin.token_env or admin.token_file",
            )));
        }
        if self.max_connections == 0 {
            note(Err(err(
                "admin.max_connections",
                "must be at least 1 (the probes and the operator need a connection)",
            )));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let h = host.trim();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                note(Err(err(
                    format!("admin.hosts[{i}]"),
                    format!("{host:?} is not a host name (give the name alone, e.g. l402-admin.example.internal)"),
                )));
            }
        }
        if self.metrics_token_env.is_some() && self.metrics_token_file.is_some() {
            note(Err(err(
                "admin.metrics_token_env",
                "set either admin.metrics_token_env or admin.metrics_token_file, not both",
            )));
        }
        out
    }
}
