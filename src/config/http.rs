//! `http:` — replay buffering, timeouts and connection caps.

use super::{err, ConfigError};
use serde::Deserialize;

/// How requests are handled on the way through.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Request bodies up to this size are buffered so a paid request can be replayed; a larger
    /// body streams upstream and cannot be replayed (the agent gets the 402 with a reason).
    #[serde(default = "default_max_replay_body")]
    pub max_replay_body_bytes: usize,
    /// Time to connect to an upstream, in seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Idle keep-alive connections to upstreams are closed after this many seconds.
    #[serde(default = "default_pool_idle")]
    pub pool_idle_secs: u64,
    /// An agent's request head must arrive within this many seconds (slowloris), which also
    /// closes a keep-alive connection idle for that long.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// A tunnel (blind or intercepted) with no byte moving and no request in flight for this
    /// many seconds is closed.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout_secs: u64,
    /// The TLS handshake of an intercepted tunnel (from its first byte) must complete within.
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// An upstream must send its response head within this many seconds (504 otherwise).
    #[serde(default = "default_upstream_response_timeout")]
    pub upstream_response_timeout_secs: u64,
    /// Agent connections open at once, in all; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections per source address that have not yet sent valid proxy credentials; one more
    /// from that source closes the oldest of them (never a newcomer: an unauthenticated peer
    /// cannot keep an agent at the same address out).
    #[serde(default = "default_max_unauthenticated_per_source")]
    pub max_unauthenticated_per_source: usize,
    /// A new connection must send a request with valid proxy credentials within this many
    /// seconds of opening, or it is closed (idle, slow or credential-less peers).
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
}

fn default_auth_timeout() -> u64 {
    10
}

fn default_header_read_timeout() -> u64 {
    30
}
fn default_tunnel_idle_timeout() -> u64 {
    300
}
fn default_tls_handshake_timeout() -> u64 {
    10
}
fn default_upstream_response_timeout() -> u64 {
    300
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_unauthenticated_per_source() -> usize {
    256
}

fn default_max_replay_body() -> usize {
    1 << 20
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_pool_idle() -> u64 {
    90
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_replay_body_bytes: default_max_replay_body(),
            connect_timeout_secs: default_connect_timeout(),
            pool_idle_secs: default_pool_idle(),
            header_read_timeout_secs: default_header_read_timeout(),
            tunnel_idle_timeout_secs: default_tunnel_idle_timeout(),
            tls_handshake_timeout_secs: default_tls_handshake_timeout(),
            upstream_response_timeout_secs: default_upstream_response_timeout(),
            max_connections: default_max_connections(),
            max_unauthenticated_per_source: default_max_unauthenticated_per_source(),
            auth_timeout_secs: default_auth_timeout(),
        }
    }
}

impl HttpConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        for (field, secs) in [
            ("http.connect_timeout_secs", self.connect_timeout_secs),
            (
                "http.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            (
                "http.tunnel_idle_timeout_secs",
                self.tunnel_idle_timeout_secs,
            ),
            ("http.auth_timeout_secs", self.auth_timeout_secs),
            (
                "http.tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            (
                "http.upstream_response_timeout_secs",
                self.upstream_response_timeout_secs,
            ),
        ] {
            if secs == 0 || secs > 86_400 {
                note(Err(err(field, "must be between 1 and 86400 seconds")));
            }
        }
        if self.max_connections == 0 {
            note(Err(err("http.max_connections", "must be at least 1")));
        }
        if self.max_unauthenticated_per_source == 0 {
            note(Err(err(
                "http.max_unauthenticated_per_source",
                "must be at least 1",
            )));
        }
        if self.max_replay_body_bytes > (256 << 20) {
            note(Err(err(
                "http.max_replay_body_bytes",
                "at most 268435456 (256 MiB)",
            )));
        }
        out
    }
}
