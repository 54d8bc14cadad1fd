//! `tls:` — the interception CA, the hosts intercepted, extra upstream roots.

use serde::Deserialize;
use std::path::PathBuf;

/// `tls:` — TLS interception: the CA that signs a certificate for each intercepted host, which
/// CONNECTs are intercepted, and what upstream TLS (always verified) trusts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM) agents must trust for intercepted hosts. Default `data/ca.pem`.
    /// When neither it nor `ca_key` exists, both are created at start; one without the other is
    /// an error, never silently replaced.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM; created with mode 0600 alongside `ca_cert`). Default
    /// `data/ca-key.pem`.
    #[serde(default = "default_ca_key")]
    pub ca_key: PathBuf,
    /// Host globs whose TLS we terminate; every other CONNECT is tunnelled untouched.
    #[serde(default = "default_intercept")]
    pub intercept: Vec<String>,
    /// Extra PEM files trusted for upstream TLS, beside the public web roots.
    #[serde(default)]
    pub upstream_roots: Vec<PathBuf>,
}

fn default_ca_cert() -> PathBuf {
    PathBuf::from("data/ca.pem")
}
fn default_ca_key() -> PathBuf {
    PathBuf::from("data/ca-key.pem")
}
pub(super) fn default_intercept() -> Vec<String> {
    vec!["*".to_string()]
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_cert: default_ca_cert(),
            ca_key: default_ca_key(),
            intercept: default_intercept(),
            upstream_roots: Vec::new(),
        }
    }
}
