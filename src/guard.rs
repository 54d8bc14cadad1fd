//! Destination guard: agents must not reach loopback, private, link-local or cloud-metadata
//! addresses through us (SSRF). The check runs on the addresses DNS returns, and we connect to
//! exactly those vetted addresses, so a rebinding DNS answer cannot slip past it.

use crate::config::{split_host_port, GuardConfig};
use http::Uri;
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("destination {host}:{port} resolves to {addr}, which is refused (loopback, private, link-local or metadata); allow it with guard.allow or guard.allow_private")]
    Refused {
        host: String,
        port: u16,
        addr: IpAddr,
    },
    #[error("cannot resolve {host}: {source}")]
    Dns {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} has no addresses")]
    NoAddresses { host: String },
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {host}:{port} timed out")]
    Timeout { host: String, port: u16 },
    #[error("request has no host")]
    NoHost,
}

impl GuardError {
    /// True when the guard refused on policy (403), as opposed to a network failure (502).
    pub fn is_refusal(&self) -> bool {
        matches!(self, GuardError::Refused { .. })
    }

    /// What the agent is told: never the internal address a name resolved to (the operator's
    /// log has it).
    pub fn agent_message(&self) -> String {
        match self {
            GuardError::Refused { host, port, .. } => {
                format!("destination {host}:{port} is refused by the proxy's destination guard")
            }
            other => other.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct Guard {
    allow_private: bool,
    allow: HashSet<(String, u16)>,
    connect_timeout: Duration,
}

impl Guard {
    pub fn new(config: &GuardConfig, connect_timeout: Duration) -> Guard {
        let allow = config
            .allow
            .iter()
            .filter_map(|e| split_host_port(e).map(|(h, p)| (h.to_ascii_lowercase(), p)))
            .collect();
        Guard {
            allow_private: config.allow_private,
            allow,
            connect_timeout,
        }
    }

    fn explicitly_allowed(&self, host: &str, port: u16) -> bool {
        self.allow_private
            || (!self.allow.is_empty() && self.allow.contains(&(host.to_ascii_lowercase(), port)))
    }

    /// Resolves `host` and returns only addresses we may connect to; refuses when none remain.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|source| GuardError::Dns {
                    host: bare.to_string(),
                    source,
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(GuardError::NoAddresses {
                host: bare.to_string(),
            });
        }
        if self.explicitly_allowed(bare, port) {
            return Ok(addrs);
        }
        // Any refused address fails the whole name: a name mixing public and internal answers
        // is exactly what a rebinding attack looks like.
        if let Some(bad) = addrs.iter().find(|a| is_refused_ip(a.ip())) {
            return Err(GuardError::Refused {
                host: bare.to_string(),
                port,
                addr: bad.ip(),
            });
        }
        Ok(addrs)
    }

    /// Resolves, vets and connects; the stream has Nagle off (small requests, low latency).
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, GuardError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(source)) => {
                    last = Some(GuardError::Connect {
                        host: host.to_string(),
                        port,
                        source,
                    })
                }
                Err(_) => {
                    last = Some(GuardError::Timeout {
                        host: host.to_string(),
                        port,
                    })
                }
            }
        }
        Err(last.unwrap_or(GuardError::NoAddresses {
            host: host.to_string(),
        }))
    }
}

/// Addresses an agent may never reach unless the operator allows it.
pub fn is_refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_refused_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata (v6)
                || (seg0 == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 can reach anything v4
        }
    }
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

/// A hyper-util connector that goes through the guard: the pooled upstream client can only
/// ever open connections the guard vetted.
#[derive(Clone, Debug)]
pub struct GuardedConnector {
    guard: Arc<Guard>,
}

impl GuardedConnector {
    pub fn new(guard: Arc<Guard>) -> Self {
        GuardedConnector { guard }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = GuardError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, GuardError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GuardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(GuardError::NoHost)?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            guard.connect(host, port).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_internal_ranges() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
            "255.255.255.255",
        ] {
            assert!(is_refused_ip(ip(bad)), "{bad} should be refused");
        }
        for good in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_refused_ip(ip(good)), "{good} should pass");
        }
    }

    #[tokio::test]
    async fn allow_list_and_allow_private() {
        let strict = Guard::new(&GuardConfig::default(), Duration::from_secs(1));
        assert!(strict
            .resolve("127.0.0.1", 80)
            .await
            .unwrap_err()
            .is_refusal());
        assert!(strict
            .resolve("localhost", 80)
            .await
            .unwrap_err()
            .is_refusal());
        let listed = Guard::new(
            &GuardConfig {
                allow_private: false,
                allow: vec!["127.0.0.1:8080".into(), "LOCALHOST:9".into()],
            },
            Duration::from_secs(1),
        );
        assert!(listed.resolve("127.0.0.1", 8080).await.is_ok());
        assert!(listed.resolve("localhost", 9).await.is_ok());
        assert!(listed.resolve("127.0.0.1", 8081).await.is_err());
        let open = Guard::new(
            &GuardConfig {
                allow_private: true,
                allow: vec![],
            },
            Duration::from_secs(1),
        );
        assert!(open.resolve("[::1]", 80).await.is_ok());
    }
}
