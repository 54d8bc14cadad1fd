//! Where a request goes: scheme, authority, and the normalised origin that keys the token cache.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// Where a request goes: the origin is the token cache key.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// As the agent wrote it.
    pub authority: Authority,
    /// The port, defaulted from the scheme.
    pub port: u16,
    /// `scheme://host:port`, lower-cased host; the host is a slice of it (one allocation).
    pub origin: String,
    host: std::ops::Range<usize>,
}

/// Whether `authority` names a port that is not one (`:99999`, `:0`, `:http`): such a request
/// is answered 400, never sent to the scheme's default port.
pub fn has_invalid_port(authority: &Authority) -> bool {
    // `Authority::port` hides a port that does not parse, so the text is read here.
    let s = authority.as_str();
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    let after_host = s.rsplit_once(']').map_or(s, |(_, rest)| rest);
    match after_host.rsplit_once(':') {
        None => false,
        Some((_, "")) => false,
        Some((_, port)) => !matches!(port.parse::<u16>(), Ok(n) if n != 0),
    }
}

impl Target {
    /// The target at `authority` over `scheme` (check [`has_invalid_port`] first).
    pub fn new(scheme: Scheme, authority: Authority) -> Target {
        use std::fmt::Write;
        let https = scheme == Scheme::HTTPS;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let ipv6 = host.contains(':');
        let mut origin = String::with_capacity(scheme.as_str().len() + host.len() + 11);
        origin.push_str(scheme.as_str());
        origin.push_str(if ipv6 { "://[" } else { "://" });
        let start = origin.len();
        origin.push_str(host);
        origin[start..].make_ascii_lowercase();
        let end = origin.len();
        let _ = write!(origin, "{}:{port}", if ipv6 { "]" } else { "" });
        Target {
            scheme,
            authority,
            port,
            origin,
            host: start..end,
        }
    }

    /// The destination host, lower-cased, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.origin[self.host.clone()]
    }

    /// The target of an absolute-form request (`GET http://host/path`). WebSocket URIs
    /// (`ws://`, `wss://`, as aiohttp sends them through an HTTP proxy) are their HTTP(S)
    /// equivalents: the protocol switch travels in the headers.
    pub fn from_absolute(uri: &Uri) -> Option<Target> {
        let scheme = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") => Scheme::HTTP,
            s if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => Scheme::HTTPS,
            _ => return None,
        };
        Some(Target::new(scheme, uri.authority()?.clone()))
    }

    /// The absolute URI to send upstream for `path` (`/` when absent).
    pub fn upstream_uri(&self, path: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(
                path.cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            )
            .build()
    }

    /// The destination as the payment layer sees it.
    pub fn destination(&self) -> crate::pay::Destination<'_> {
        crate::pay::Destination {
            origin: &self.origin,
            host: self.host(),
            port: self.port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_normalise_host_and_port_into_the_origin() {
        let t = Target::new(Scheme::HTTPS, Authority::from_static("API.Example.com"));
        assert_eq!(
            (t.origin.as_str(), t.host(), t.port),
            ("https://api.example.com:443", "api.example.com", 443)
        );
        let t = Target::new(Scheme::HTTP, Authority::from_static("[::1]:8080"));
        assert_eq!(
            (t.origin.as_str(), t.host(), t.port),
            ("http://[::1]:8080", "::1", 8080)
        );
        let uri: Uri = "http://127.0.0.1/x".parse().unwrap();
        let t = Target::from_absolute(&uri).unwrap();
        assert_eq!(
            (t.origin.as_str(), t.host()),
            ("http://127.0.0.1:80", "127.0.0.1")
        );
        assert!(Target::from_absolute(&"/relative".parse().unwrap()).is_none());
        let ws = Target::from_absolute(&"ws://127.0.0.1:9/chat".parse().unwrap()).unwrap();
        assert_eq!(ws.origin, "http://127.0.0.1:9");
        let wss = Target::from_absolute(&"wss://h/chat".parse().unwrap()).unwrap();
        assert_eq!(wss.origin, "https://h:443");
        assert!(Target::from_absolute(&"ftp://h/x".parse().unwrap()).is_none());
        for bad in ["h:99999", "h:0", "h:65536"] {
            assert!(has_invalid_port(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["h", "h:1", "h:65535", "[::1]:443"] {
            assert!(!has_invalid_port(&good.parse().unwrap()), "{good}");
        }
    }
}
