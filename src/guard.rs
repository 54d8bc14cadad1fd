//! Destination guard: agents must not reach loopback, private, link-local or cloud-metadata
//! addresses through us (SSRF). The check runs on the addresses DNS returns, and we connect to
//! exactly those vetted addresses, so a rebinding DNS answer cannot slip past it.
//!
//! Hosts are read in their canonical form ([`crate::hosts`]): an IP literal in any spelling
//! (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`) is its address and is connected to as such,
//! never handed to the system resolver; a name is lower-cased with one trailing dot removed
//! before it is resolved. `guard.allow` entries are normalised the same way, and match as:
//! - an IP entry (`127.0.0.1:8080`) exempts that address and port when the destination is an
//!   IP literal, however it is spelled (`127.1:8080`, `[::ffff:127.0.0.1]:8080`); it does not
//!   exempt names that happen to resolve to it (a name's answers are whoever runs its DNS);
//! - a name entry (`seller.internal:8080`) exempts that name (any case, with or without the
//!   trailing dot) whatever it resolves to; it does not exempt IP literals.
//!
//! So an allowance covers exactly one destination, whatever the spelling, and no spelling of
//! another destination matches it; the agents' host rules see the same canonical form.

use crate::config::{split_host_port, GuardConfig};
use crate::hosts::Host;
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

/// Why no connection to a destination was made. Only [`GuardError::Refused`] is a refusal on
/// policy ([`GuardError::is_refusal`]); the others are failures to reach the destination.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The destination is, or resolves to, a refused address and is not allowed by
    /// `guard.allow` or `guard.allow_private`. The address is for the operator's log only.
    #[error("destination {host}:{port} resolves to {addr}, which is refused (loopback, private, link-local or metadata); allow it with guard.allow or guard.allow_private")]
    Refused {
        /// The destination host, canonical.
        host: String,
        /// The destination port.
        port: u16,
        /// The first refused address among its answers (any one fails the whole name).
        addr: IpAddr,
    },
    /// The system resolver failed for the name.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// The name, canonical.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The name resolved to no address at all.
    #[error("{host} has no addresses")]
    NoAddresses {
        /// The host that resolved to nothing.
        host: String,
    },
    /// Every vetted address was tried and the last one refused or failed the TCP connection.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// The destination host, as asked for.
        host: String,
        /// The destination port.
        port: u16,
        /// The last address's connect error.
        #[source]
        source: std::io::Error,
    },
    /// Every vetted address was tried and the last one did not accept within the connect
    /// timeout (`http.connect_timeout_secs`).
    #[error("connecting to {host}:{port} timed out")]
    Timeout {
        /// The destination host, as asked for.
        host: String,
        /// The destination port.
        port: u16,
    },
    /// The upstream URI names no host, so there is nothing to vet or connect to.
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

/// The destination guard: resolves a destination, refuses it when any of its addresses is
/// loopback, private, link-local, metadata or otherwise special (unless `guard.allow` or
/// `guard.allow_private` exempts it), and connects only to the addresses it vetted.
#[derive(Debug)]
pub struct Guard {
    allow_private: bool,
    /// `guard.allow`, canonical ([`Host::parse`]).
    allow: HashSet<(Host, u16)>,
    connect_timeout: Duration,
}

/// The addresses `host` is (an IP literal in any spelling, an IPv4-mapped IPv6 one as IPv4) or
/// resolves to (a name, canonical, through the system resolver). The one resolver of the guard
/// and of the agents' host rules, so both see the same addresses. Nothing is vetted here.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
    let canonical = Host::parse(host);
    let addrs: Vec<SocketAddr> = match &canonical {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|source| GuardError::Dns {
                host: name.clone(),
                source,
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(GuardError::NoAddresses {
            host: canonical.to_string(),
        });
    }
    Ok(addrs)
}

impl Guard {
    /// The guard `config` describes, giving each address `connect_timeout` to accept. Entries
    /// of `guard.allow` that are not `host:port` are skipped (config validation refuses them).
    pub fn new(config: &GuardConfig, connect_timeout: Duration) -> Guard {
        let allow = config
            .allow
            .iter()
            .filter_map(|e| split_host_port(e).map(|(h, p)| (Host::parse(h), p)))
            .collect();
        Guard {
            allow_private: config.allow_private,
            allow,
            connect_timeout,
        }
    }

    fn explicitly_allowed(&self, host: &Host, port: u16) -> bool {
        self.allow_private || self.allow.contains(&(host.clone(), port))
    }

    /// Resolves `host` and returns only addresses we may connect to; refuses when none remain.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs = lookup(host, port).await?;
        let canonical = Host::parse(host);
        if self.explicitly_allowed(&canonical, port) {
            return Ok(addrs);
        }
        // Any refused address fails the whole name: a name mixing public and internal answers
        // is exactly what a rebinding attack looks like.
        if let Some(bad) = addrs.iter().find(|a| is_refused_ip(a.ip())) {
            return Err(GuardError::Refused {
                host: canonical.to_string(),
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
        IpAddr::V6(v6) => is_refused_v6(v6),
    }
}

/// IPv6: the special ranges, and every form that carries an IPv4 address (the translator or
/// tunnel at the other end delivers to that address) when the IPv4 address is refused.
fn is_refused_v6(v6: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(v6) {
        if is_refused_v4(v4) {
            return true;
        }
    }
    let s = v6.segments();
    v6.is_loopback() // ::1
        || v6.is_unspecified() // ::
        || v6.is_multicast() // ff00::/8
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254 in it)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed inside)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32: the far end is not ours to vet
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        // 64:ff9b::/32 outside the two NAT64 prefixes (checked through embedded_v4) is
        // unassigned: refused rather than guessed at.
        || (s[0] == 0x64 && s[1] == 0xff9b && !is_nat64(s))
}

/// 64:ff9b::/96 (well-known NAT64 prefix) or 64:ff9b:1::/48 (local-use NAT64).
fn is_nat64(s: [u16; 8]) -> bool {
    s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1)
}

/// The IPv4 address an IPv6 address carries, for the forms that deliver to it: IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d` and `64:ff9b:1::/48` (last 32 bits), and 6to4 `2002:AABB:CCDD::/48`.
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let last = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0 || s[5] == 0xffff) {
        return Some(last(s[6], s[7])); // compatible (::/96) and mapped (::ffff:0:0/96)
    }
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(last(s[6], s[7])); // translated ::ffff:0:0:0/96
    }
    if is_nat64(s) {
        return Some(last(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(last(s[1], s[2])); // 6to4
    }
    None
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
    /// A connector opening every connection through `guard`; a URI without a port gets 443
    /// for `https`, 80 otherwise.
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

    #[test]
    fn refuses_ipv6_forms_that_carry_a_refused_ipv4_address() {
        // Each form, with refused IPv4 addresses embedded (loopback, private, link-local,
        // metadata, CGNAT, 0/8, broadcast) and with a public one, which passes.
        let refused_v4 = [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
        ];
        type Embed = fn(Ipv4Addr) -> Ipv6Addr;
        let forms: [(&str, Embed); 6] = [
            ("mapped ::ffff:a.b.c.d", |v4| v4.to_ipv6_mapped()),
            ("compatible ::a.b.c.d", |v4| v4.to_ipv6_compatible()),
            ("translated ::ffff:0:a.b.c.d", |v4| {
                let [a, b, c, d] = v4.octets();
                Ipv6Addr::new(
                    0,
                    0,
                    0,
                    0,
                    0xffff,
                    0,
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d]),
                )
            }),
            ("NAT64 64:ff9b::/96", |v4| {
                let [a, b, c, d] = v4.octets();
                Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    0,
                    0,
                    0,
                    0,
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d]),
                )
            }),
            ("local NAT64 64:ff9b:1::/48", |v4| {
                let [a, b, c, d] = v4.octets();
                Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    1,
                    0xabcd,
                    0,
                    0,
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d]),
                )
            }),
            ("6to4 2002::/16", |v4| {
                let [a, b, c, d] = v4.octets();
                Ipv6Addr::new(
                    0x2002,
                    u16::from_be_bytes([a, b]),
                    u16::from_be_bytes([c, d]),
                    0,
                    0,
                    0,
                    0,
                    1,
                )
            }),
        ];
        for (form, make) in forms {
            for bad in refused_v4 {
                let v6 = make(bad.parse().unwrap());
                assert_eq!(embedded_v4(v6), Some(bad.parse().unwrap()), "{form}: {v6}");
                assert!(
                    is_refused_ip(IpAddr::V6(v6)),
                    "{form}: {v6} ({bad}) should be refused"
                );
            }
            let public = make("8.8.8.8".parse().unwrap());
            assert!(
                !is_refused_ip(IpAddr::V6(public)),
                "{form}: {public} should pass"
            );
        }
        // As written by hand, too.
        for bad in [
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::c0a8:1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
        ] {
            assert!(is_refused_ip(ip(bad)), "{bad} should be refused");
        }
        for good in [
            "::8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1:2::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_refused_ip(ip(good)), "{good} should pass");
        }
    }

    #[test]
    fn refuses_special_ipv6_ranges() {
        for bad in [
            "::",
            "::1",
            "fc00::1",
            "fd00::1",
            "fdff:ffff::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff05::2",
            "ff0e::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo, whatever it embeds
            "2001:0:ffff::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "64:ff9b:2::1", // unassigned part of 64:ff9b::/32
            "64:ff9b:0:1::808:808",
        ] {
            assert!(is_refused_ip(ip(bad)), "{bad} should be refused");
        }
        for good in [
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2001:db9::1",
            "100:0:0:1::1",
            "2a00:1450::1",
            "fbff::1",
        ] {
            assert!(!is_refused_ip(ip(good)), "{good} should pass");
        }
    }

    #[tokio::test]
    async fn guard_allow_matches_every_spelling_of_its_destination_and_no_other() {
        let listed = Guard::new(
            &GuardConfig {
                allow_private: false,
                allow: vec!["127.0.0.1:8080".into(), "LOCALHOST.:9".into()],
            },
            Duration::from_secs(1),
        );
        for spelling in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "127.0.0.1.",
        ] {
            let addrs = listed.resolve(spelling, 8080).await;
            // The mapped spelling is connected to as IPv4, the address it names.
            assert_eq!(
                addrs.as_ref().ok().map(|a| a.as_slice()),
                Some(&["127.0.0.1:8080".parse::<SocketAddr>().unwrap()][..]),
                "{spelling}: {addrs:?}"
            );
            assert!(
                listed
                    .resolve(spelling, 8081)
                    .await
                    .unwrap_err()
                    .is_refusal(),
                "{spelling}"
            );
        }
        for spelling in ["localhost", "LOCALHOST", "localhost."] {
            assert!(listed.resolve(spelling, 9).await.is_ok(), "{spelling}");
        }
        // The IP entry does not exempt a name, nor the name entry an address; another
        // loopback address, or an IPv6 form that is not the same destination, is refused.
        assert!(listed
            .resolve("localhost", 8080)
            .await
            .unwrap_err()
            .is_refusal());
        assert!(listed
            .resolve("127.0.0.1", 9)
            .await
            .unwrap_err()
            .is_refusal());
        for other in [
            "127.0.0.2",
            "127.2",
            "[::1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::]",
        ] {
            assert!(
                listed.resolve(other, 8080).await.unwrap_err().is_refusal(),
                "{other}"
            );
        }
    }

    #[tokio::test]
    async fn lookup_reads_literals_itself() {
        let one = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            lookup("127.1", 80).await.unwrap(),
            vec![one("127.0.0.1:80")]
        );
        assert_eq!(lookup("[::1]", 80).await.unwrap(), vec![one("[::1]:80")]);
        assert_eq!(
            lookup("::ffff:10.0.0.1", 80).await.unwrap(),
            vec![one("10.0.0.1:80")]
        );
        assert!(lookup("no-such-host.invalid", 80).await.is_err());
        assert!(lookup("", 80).await.is_err());
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
