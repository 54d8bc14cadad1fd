//! Who the admin listener answers, before any handler runs:
//!
//! - **`Host`**: only names of the listener itself are served — the IP address the connection
//!   reached, `localhost` (and every loopback literal) when that address is loopback, and the
//!   names in `admin.hosts`. Anything else is `421 Misdirected Request`, so a web page that
//!   rebinds its own name to the admin address (DNS rebinding) cannot read `/metrics`, the
//!   dashboard or the probes through the operator's browser. The port is not compared (a
//!   `kubectl port-forward` or a NAT may change it; rebinding changes only the name). A request
//!   with no `Host` at all (an HTTP/1.0 probe) is served: a browser always sends one.
//! - **`/metrics`**: open on a loopback listener, as Prometheus scrapers expect; on any other
//!   address it needs the metrics token or the admin token unless `admin.metrics_public` says
//!   otherwise. With `admin.metrics_token_*` set it always needs a token.
//! - **connections**: at most `admin.max_connections` at once; one past the cap is closed at
//!   accept, before anything is read.

use http::header;
use http::HeaderMap;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// The listener's accepted names and the `/metrics` rule (fixed once `serve` starts).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `admin.hosts`, lower-cased, without a trailing dot.
    pub hosts: Vec<String>,
    /// `admin.metrics_public`: `/metrics` open even off loopback.
    pub metrics_public: bool,
    /// `admin.max_connections`.
    pub max_connections: usize,
}

/// The default `admin.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

impl Default for Policy {
    /// No extra names, `/metrics` closed off loopback, [`DEFAULT_MAX_CONNECTIONS`].
    fn default() -> Self {
        Policy {
            hosts: Vec::new(),
            metrics_public: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Policy {
    /// The policy of `admin:` in the config.
    pub fn from_config(admin: &crate::config::AdminConfig) -> Policy {
        Policy {
            hosts: admin
                .hosts
                .iter()
                .map(|h| normalise(strip_port(h.trim())))
                .collect(),
            metrics_public: admin.metrics_public,
            max_connections: admin.max_connections,
        }
    }

    /// Whether a request with these headers, on a connection that reached `local`, names this
    /// listener. `authority` is the request target's authority when it was in absolute form.
    pub fn host_allowed(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        local: IpAddr,
    ) -> bool {
        let named = match (authority, headers.get(header::HOST)) {
            (Some(a), _) => a,
            (None, None) => return true,
            (None, Some(v)) => match v.to_str() {
                Ok(s) => s,
                Err(_) => return false,
            },
        };
        let host = normalise(strip_port(named.trim()));
        if host.is_empty() {
            return false;
        }
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return canonical(ip) == canonical(local)
                || (canonical(local).is_loopback() && canonical(ip).is_loopback());
        }
        if canonical(local).is_loopback() && (host == "localhost" || host.ends_with(".localhost")) {
            return true;
        }
        self.hosts.contains(&host)
    }

    /// Whether `/metrics` is open without a token on a listener bound to `listen`.
    pub fn metrics_open_without_token(&self, listen: IpAddr) -> bool {
        self.metrics_public || canonical(listen).is_loopback()
    }
}

/// The bearer tokens that open `/metrics`, and whether none is needed.
#[derive(Debug, Clone)]
pub struct MetricsGate {
    /// sha256 of `admin.metrics_token_*`, when set (then a token is always needed).
    pub metrics_token: Option<[u8; 32]>,
    /// sha256 of the admin token (always opens `/metrics`).
    pub admin_token: [u8; 32],
    /// No metrics token is set and the listener's rule says open.
    pub open: bool,
}

impl MetricsGate {
    /// Whether `presented` (the sha256 of the bearer token sent, if any) opens `/metrics`.
    pub fn allows(&self, presented: Option<[u8; 32]>) -> bool {
        match self.metrics_token {
            None if self.open => true,
            metrics => presented.is_some_and(|p| {
                bool::from(p.ct_eq(&self.admin_token))
                    || metrics.is_some_and(|m| bool::from(p.ct_eq(&m)))
            }),
        }
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 self (a dual-stack socket reports those).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare v6 literal stays whole.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// Lower case, no trailing dot.
fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn host(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_listeners_own_names_pass() {
        let p = Policy {
            hosts: vec!["l402-admin.internal".into()],
            ..Policy::default()
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let pod: IpAddr = "10.1.2.3".parse().unwrap();
        for ok in [
            "127.0.0.1:9402",
            "127.0.0.1",
            "localhost:9402",
            "LOCALHOST.:1",
            "[::1]:9402",
            "127.0.0.2:9402",
            "app.localhost",
            "l402-admin.internal:9402",
            "L402-Admin.Internal",
        ] {
            assert!(p.host_allowed(&host(ok), None, lo), "{ok}");
        }
        for bad in [
            "evil.example:9402",
            "127.0.0.1.nip.io",
            "10.1.2.3",
            "",
            ":9402",
        ] {
            assert!(!p.host_allowed(&host(bad), None, lo), "{bad}");
        }
        assert!(p.host_allowed(&host("10.1.2.3:9402"), None, pod));
        assert!(!p.host_allowed(&host("localhost:9402"), None, pod));
        assert!(!p.host_allowed(&host("127.0.0.1:9402"), None, pod));
        assert!(
            p.host_allowed(&HeaderMap::new(), None, pod),
            "no Host: served"
        );
        assert!(!p.host_allowed(&host("x"), Some("evil.example:1"), lo));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(p.host_allowed(&host("10.1.2.3"), None, mapped));
    }

    #[test]
    fn metrics_need_a_token_off_loopback_by_default() {
        let p = Policy::default();
        assert!(p.metrics_open_without_token("127.0.0.1".parse().unwrap()));
        assert!(p.metrics_open_without_token("::1".parse().unwrap()));
        assert!(!p.metrics_open_without_token("0.0.0.0".parse().unwrap()));
        assert!(!p.metrics_open_without_token("10.0.0.1".parse().unwrap()));
        let public = Policy {
            metrics_public: true,
            ..Policy::default()
        };
        assert!(public.metrics_open_without_token("0.0.0.0".parse().unwrap()));

        let admin = [1u8; 32];
        let metrics = [2u8; 32];
        let closed = MetricsGate {
            metrics_token: None,
            admin_token: admin,
            open: false,
        };
        assert!(!closed.allows(None));
        assert!(!closed.allows(Some([3; 32])));
        assert!(closed.allows(Some(admin)));
        let open = MetricsGate {
            open: true,
            ..closed.clone()
        };
        assert!(open.allows(None));
        let tokened = MetricsGate {
            metrics_token: Some(metrics),
            admin_token: admin,
            open: true,
        };
        assert!(!tokened.allows(None));
        assert!(tokened.allows(Some(metrics)));
        assert!(tokened.allows(Some(admin)));
    }
}
