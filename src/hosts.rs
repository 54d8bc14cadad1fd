//! One destination, many spellings: `127.0.0.1` is also `127.1`, `2130706433`, `0x7f.1`,
//! `0177.0.0.1` and `[::ffff:127.0.0.1]`, and `localhost` is also `LOCALHOST.`. Destination
//! allowances and the agents' host rules match the canonical form this module gives every
//! spelling, never the text the agent wrote, so no spelling slips past a rule.
//!
//! Canonical form of a host (what [`Host::parse`] does):
//! - one pair of IPv6 brackets is removed, then one trailing dot;
//! - an IPv4 literal in any form the system resolver (`getaddrinfo`, i.e. `inet_aton`) accepts
//!   is that address: 1 to 4 dot-separated parts, each decimal, octal (leading `0`) or hex
//!   (`0x`), the last part filling the remaining bytes (`127.1`, `2130706433`, `0x7f.0.1`);
//! - an IPv6 literal is that address (any zone, `%eth0`, is dropped); an IPv4-mapped one
//!   (`::ffff:a.b.c.d`, however written) is its IPv4 address;
//! - anything else is a name, ASCII lower-cased.
//!
//! Nothing here panics or allocates much on hostile input: parsing is linear in the length.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A destination host in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP literal (an IPv4-mapped IPv6 address is held as its IPv4 address).
    Ip(IpAddr),
    /// A name: ASCII lower-case, one trailing dot stripped.
    Name(String),
}

impl Host {
    /// The canonical form of `host` as written in a URI or config (brackets allowed).
    pub fn parse(host: &str) -> Host {
        let bare = strip_brackets(host);
        let bare = bare.strip_suffix('.').unwrap_or(bare);
        match parse_ip(bare) {
            Some(ip) => Host::Ip(ip),
            None => Host::Name(bare.to_ascii_lowercase()),
        }
    }

    /// The address, for an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    /// The canonical text: IPv6 without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// `host` without one pair of enclosing brackets.
fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// An IPv4-mapped IPv6 address as its IPv4 address; any other address unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The address and, for an IPv4 address (or an IPv4-mapped one), its other form: the two are
/// one destination, so rules see both.
pub fn forms(ip: IpAddr) -> [IpAddr; 2] {
    match unmap(ip) {
        IpAddr::V4(v4) => [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())],
        v6 => [v6, v6],
    }
}

/// An IP literal (brackets and a trailing dot already removed): IPv4 in every `inet_aton`
/// form, or IPv6 (zone dropped). IPv4-mapped IPv6 comes back as IPv4.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4_loose(s) {
        return Some(IpAddr::V4(v4));
    }
    if !s.contains(':') {
        return None;
    }
    let addr = s.split_once('%').map_or(s, |(a, _zone)| a);
    addr.parse::<Ipv6Addr>()
        .ok()
        .map(|v6| unmap(IpAddr::V6(v6)))
}

/// IPv4 as `inet_aton` reads it (and so `getaddrinfo`, which would connect there): 1 to 4
/// parts separated by dots; each part decimal, octal (leading `0`) or hex (`0x`/`0X`, at least
/// one digit); every part but the last at most 255, the last filling the bytes left
/// (`a` = 32 bits, `a.b` = 8.24, `a.b.c` = 8.8.16). No signs, spaces or empty parts.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut n = 0usize;
    for part in s.split('.') {
        if n == 4 {
            return None;
        }
        parts[n] = parse_part(part)?;
        n += 1;
    }
    let (last, head) = (parts[n - 1], &parts[..n - 1]);
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let max: u32 = match n {
        1 => u32::MAX,
        2 => 0x00ff_ffff,
        3 => 0xffff,
        _ => 0xff,
    };
    if last > max {
        return None;
    }
    let mut value = last;
    for (i, &p) in head.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(value))
}

/// One `inet_aton` part: `strtoul(.., 0)` that must start with a digit and consume it all.
fn parse_part(part: &str) -> Option<u32> {
    let b = part.as_bytes();
    if !b.first()?.is_ascii_digit() {
        return None;
    }
    let (digits, radix) = if b.len() > 1 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        (&part[2..], 16)
    } else if b[0] == b'0' {
        (part, 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u32 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(d)?;
    }
    Some(value)
}

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix`; the address is written in standard form (dotted quad or IPv6)
    /// and has no bits set beyond the prefix. The error says what is wrong.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix)"))?;
        let addr = strip_brackets(addr);
        let net: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?}: {addr:?} is not an IP address in standard form (a CIDR needs e.g. 10.0.0.0/8 or fd00::/8)"
            )
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.parse::<u8>() {
            Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
        };
        let cidr = Cidr { net, prefix };
        let network = cidr.network();
        if network != net {
            return Err(format!(
                "{s:?} has bits set beyond the /{prefix} prefix; did you mean {network}/{prefix}?"
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.net {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(self.prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(self.prefix))),
        }
    }

    /// True when `ip` is in the block (an IPv4 address and its mapped IPv6 form alike).
    pub fn contains(&self, ip: IpAddr) -> bool {
        forms(ip).into_iter().any(|f| self.contains_exact(f))
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// One entry of an agent's `hosts.allow` / `hosts.deny`, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A name or a glob of names (`*.example.com`), canonical (lower-case, no trailing dot).
    /// A glob is also matched against the canonical text of IP literals (`*` matches them).
    Glob(String),
    /// One address, matched against IP-literal destinations in any spelling; as a deny entry
    /// also against the addresses a name resolves to (so `127.0.0.1` also catches
    /// `localhost`). As an allow entry it names the literal only: allowing an address never
    /// allows every name that resolves to it.
    Ip(IpAddr),
    /// A block, matched against the address a destination is or resolves to.
    Net(Cidr),
}

impl Rule {
    /// Reads a rule entry; the error is the problem and its fix.
    pub fn parse(entry: &str) -> Result<Rule, String> {
        if entry.is_empty() {
            return Err("is empty; write a host name, a glob (*.example.com), an IP address or a CIDR (10.0.0.0/8)".into());
        }
        if entry.contains('/') {
            return Cidr::parse(entry).map(Rule::Net);
        }
        match Host::parse(entry) {
            Host::Ip(ip) => Ok(Rule::Ip(ip)),
            Host::Name(name) => {
                if let Some(bad) = name
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*')))
                {
                    let hint = if bad == ':' {
                        " (rules name hosts, without a port; IPv6 addresses in standard form)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "{entry:?} is not a host name, glob, IP address or CIDR: {bad:?} is not allowed{hint}"
                    ));
                }
                if !name.contains('*') && name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(format!(
                        "{entry:?} looks like an IPv4 address but is not one"
                    ));
                }
                if name.is_empty() {
                    return Err(format!("{entry:?} names no host"));
                }
                Ok(Rule::Glob(name))
            }
        }
    }

    /// True when the rule names `host` itself (its canonical name or IP literal).
    pub fn matches_host(&self, host: &Host) -> bool {
        match (self, host) {
            (Rule::Glob(g), Host::Name(n)) => crate::glob::matches(g, n),
            (Rule::Glob(g), Host::Ip(ip)) => {
                let [a, b] = forms(*ip);
                crate::glob::matches(g, &a.to_string())
                    || (a != b && crate::glob::matches(g, &b.to_string()))
            }
            (Rule::Ip(r), Host::Ip(ip)) => unmap(*r) == unmap(*ip),
            (Rule::Net(net), Host::Ip(ip)) => net.contains(*ip),
            _ => false,
        }
    }

    /// True when the rule is a block containing `addr` (an address a name resolved to).
    pub fn contains_address(&self, addr: IpAddr) -> bool {
        matches!(self, Rule::Net(net) if net.contains(addr))
    }

    /// As a deny entry: true when `addr` (an address a name resolved to) is in the block or
    /// is the address.
    pub fn denies_address(&self, addr: IpAddr) -> bool {
        match self {
            Rule::Net(net) => net.contains(addr),
            Rule::Ip(ip) => unmap(*ip) == unmap(addr),
            Rule::Glob(_) => false,
        }
    }
}

/// An agent's host rules, read: see [`crate::config::HostRules`] for what they mean.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// A deny entry could not be read (only possible for rules that skipped config
    /// validation): every host is refused rather than the entry ignored.
    deny_unreadable: bool,
}

impl Matcher {
    /// Reads the entries; unreadable allow entries allow nothing, an unreadable deny entry
    /// denies everything (fail closed).
    pub fn new(allow: &[String], deny: &[String]) -> Matcher {
        let deny_rules: Vec<Option<Rule>> = deny.iter().map(|e| Rule::parse(e).ok()).collect();
        Matcher {
            allow: allow.iter().filter_map(|e| Rule::parse(e).ok()).collect(),
            deny_unreadable: deny_rules.iter().any(Option::is_none),
            deny: deny_rules.into_iter().flatten().collect(),
        }
    }

    fn has_nets(rules: &[Rule]) -> bool {
        rules.iter().any(|r| matches!(r, Rule::Net(_)))
    }

    /// Whether a deny entry matches by address (a CIDR or an IP), so a name must be resolved.
    fn denies_addresses(&self) -> bool {
        self.deny
            .iter()
            .any(|r| matches!(r, Rule::Net(_) | Rule::Ip(_)))
    }

    /// True when deciding for `host` needs the addresses it resolves to: it is a name, and a
    /// deny CIDR or IP could catch it, or only an allow CIDR could let it through.
    pub fn needs_addresses(&self, host: &str) -> bool {
        let host = Host::parse(host);
        matches!(host, Host::Name(_))
            && !self.deny.iter().any(|r| r.matches_host(&host))
            && (self.denies_addresses()
                || (Self::has_nets(&self.allow)
                    && !self.allow.iter().any(|r| r.matches_host(&host))))
    }

    /// Whether `host` may be paid, given the addresses it resolved to (`addrs`, used for a
    /// name only). A name that needs its addresses checked and has none is refused.
    pub fn permits(&self, host: &str, addrs: &[IpAddr]) -> bool {
        if self.deny_unreadable {
            return false;
        }
        let host = Host::parse(host);
        if self.deny.iter().any(|r| r.matches_host(&host)) {
            return false;
        }
        let is_name = matches!(host, Host::Name(_));
        if is_name && self.denies_addresses() {
            if addrs.is_empty() {
                return false;
            }
            if addrs
                .iter()
                .any(|&a| self.deny.iter().any(|r| r.denies_address(a)))
            {
                return false;
            }
        }
        if self.allow.iter().any(|r| r.matches_host(&host)) {
            return true;
        }
        is_name
            && !addrs.is_empty()
            && addrs
                .iter()
                .all(|&a| self.allow.iter().any(|r| r.contains_address(a)))
    }
}

/// Spellings of 127.0.0.1 and `localhost` a rule denying those two must catch (for tests here
/// and of the payment policy above).
#[cfg(test)]
pub(crate) const LOOPBACK_SPELLINGS: &[&str] = &[
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f.1",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "LOCALHOST.",
    "localhost.",
    "LocalHost",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Option<String> {
        parse_ipv4_loose(s).map(|a| a.to_string())
    }

    #[test]
    fn every_inet_aton_spelling_of_an_ipv4_address() {
        for (s, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0177.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("00000000000000000000127.1", "87.0.0.1"),
            ("0", "0.0.0.0"),
            ("0x0", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            ("10.0x10.4660", "10.16.18.52"),
            ("169.254.43518", "169.254.169.254"),
            ("1.2.3.4", "1.2.3.4"),
        ] {
            assert_eq!(v4(s).as_deref(), Some(want), "{s}");
        }
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1..2",
            "1.2.3.4.5",
            "256.1",
            "1.16777216",
            "1.2.65536",
            "1.2.3.256",
            "4294967296",
            "99999999999999999999999",
            "08",
            "09.1",
            "0x",
            "0x.1",
            "0xg",
            "+1",
            "-1",
            " 1",
            "1 ",
            "a.b.c.d",
            "1.2.3.4x",
            "١٢٧.0.0.1",
        ] {
            assert_eq!(v4(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hosts_get_one_canonical_form() {
        let lo = Host::Ip("127.0.0.1".parse().unwrap());
        for s in [
            "127.0.0.1",
            "127.0.0.1.",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "[::ffff:127.0.0.1]",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "[::FFFF:7F00:1]",
            "[0:0:0:0:0:ffff:7f00:1]",
        ] {
            assert_eq!(Host::parse(s), lo, "{s}");
        }
        let v6 = Host::Ip("fe80::1".parse().unwrap());
        assert_eq!(Host::parse("[fe80::1%eth0]"), v6);
        assert_eq!(Host::parse("FE80:0::1"), v6);
        assert_eq!(Host::parse("[::1]").to_string(), "::1");
        for s in ["localhost", "LOCALHOST", "localhost.", "LocalHost."] {
            assert_eq!(Host::parse(s), Host::Name("localhost".into()), "{s}");
        }
        // One trailing dot only, and a name stays a name.
        assert_eq!(Host::parse("localhost.."), Host::Name("localhost.".into()));
        assert_eq!(Host::parse("127.0.0.1.nip.io").ip(), None);
        assert_eq!(Host::parse("[::1"), Host::Name("[::1".into()));
        assert_eq!(Host::parse(""), Host::Name(String::new()));
    }

    #[test]
    fn cidrs() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(c("::ffff:0:0/96").contains(ip("1.2.3.4")));
        assert!(c("127.0.0.1/32").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!c("0.0.0.0/0").contains(ip("2001:4860::8888")));
        assert!(c("::/0").contains(ip("2001:4860::8888")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("fe80::1")));
        assert!(c("[fd00::]/8").contains(ip("fd00::1")));
        assert!(c("::1/128").contains(ip("::1")));
        for (bad, says) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10/8", "standard form"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/8/8", "0 to 32"),
            ("/8", "standard form"),
            ("example.com/8", "standard form"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rule_entries() {
        assert_eq!(
            Rule::parse("*.Example.COM."),
            Ok(Rule::Glob("*.example.com".into()))
        );
        assert_eq!(
            Rule::parse("127.1"),
            Ok(Rule::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            Rule::parse("[::ffff:127.0.0.1]"),
            Ok(Rule::Ip("127.0.0.1".parse().unwrap()))
        );
        assert!(matches!(Rule::parse("10.0.0.0/8"), Ok(Rule::Net(_))));
        for bad in [
            "",
            "example.com:443",
            "exa mple.com",
            "http://x",
            "1.2.3.256",
            "256.1",
            ".",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn m(allow: &[&str], deny: &[&str]) -> Matcher {
        let s = |l: &[&str]| l.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        Matcher::new(&s(allow), &s(deny))
    }

    #[test]
    fn deny_sees_through_every_spelling() {
        let rules = m(&["*"], &["127.0.0.1", "localhost"]);
        for &s in LOOPBACK_SPELLINGS {
            assert!(!rules.permits(s, &[]), "{s} must be denied");
            assert!(!rules.needs_addresses(s), "{s}");
        }
        for s in ["127.0.0.2", "::1"] {
            assert!(rules.permits(s, &[]), "{s} must be allowed");
        }
        // Names are resolved (the IP deny entry catches names resolving to it).
        let elsewhere = ["93.184.216.34".parse::<IpAddr>().unwrap()];
        for s in ["example.com", "localhost2"] {
            assert!(rules.needs_addresses(s), "{s}");
            assert!(rules.permits(s, &elsewhere), "{s} must be allowed");
        }
        // A mapped rule catches the plain IPv4 spelling too.
        assert!(!m(&["*"], &["::ffff:127.0.0.1"]).permits("127.1", &[]));
    }

    #[test]
    fn globs_keep_working_and_see_canonical_ips() {
        let rules = m(&["*.example.com", "10.*"], &["evil.example.com"]);
        assert!(rules.permits("api.example.com", &[]));
        assert!(rules.permits("API.Example.com.", &[]));
        assert!(!rules.permits("evil.example.com", &[]));
        assert!(!rules.permits("EVIL.example.com.", &[]));
        assert!(!rules.permits("example.com", &[]));
        assert!(!rules.permits("other.org", &[]));
        assert!(rules.permits("10.1.2.3", &[]));
        assert!(
            rules.permits("167772161", &[]),
            "10.0.0.1 spelled as one number"
        );
        assert!(!rules.permits("11.1.2.3", &[]));
    }

    #[test]
    fn cidr_rules_check_the_addresses_a_name_resolves_to() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let rules = m(&["*"], &["127.0.0.0/8", "fd00::/8"]);
        assert!(!rules.permits("127.9.9.9", &[]));
        assert!(!rules.permits("[::ffff:127.0.0.1]", &[]));
        assert!(!rules.permits("fd00::1", &[]));
        assert!(rules.permits("8.8.8.8", &[]));
        assert!(rules.needs_addresses("localhost"));
        assert!(!rules.needs_addresses("127.1"));
        // Any resolved address in a deny block denies the name.
        assert!(!rules.permits("localhost", &[ip("::1"), ip("127.0.0.1")]));
        assert!(!rules.permits("x.example", &[ip("8.8.8.8"), ip("fd00::5")]));
        assert!(rules.permits("x.example", &[ip("8.8.8.8"), ip("2606:4700::1")]));
        // Unresolved: cannot be vetted, so refused.
        assert!(!rules.permits("x.example", &[]));

        let only = m(&["10.0.0.0/8", "api.example.com"], &[]);
        assert!(only.permits("10.1.1.1", &[]));
        assert!(!only.permits("11.1.1.1", &[]));
        assert!(
            only.permits("api.example.com", &[]),
            "the glob allows the name"
        );
        assert!(!only.needs_addresses("api.example.com"));
        assert!(only.needs_addresses("internal.example"));
        assert!(only.permits("internal.example", &[ip("10.0.0.5")]));
        // All addresses must be allowed.
        assert!(!only.permits("internal.example", &[ip("10.0.0.5"), ip("8.8.8.8")]));
        assert!(!only.permits("internal.example", &[]));
        // A bare IP allow entry names that literal only, not names resolving to it.
        let lit = m(&["10.0.0.5"], &[]);
        assert!(lit.permits("10.0.0.5", &[]));
        assert!(lit.permits("0xa.5", &[]));
        assert!(!lit.needs_addresses("internal.example"));
        assert!(!lit.permits("internal.example", &[ip("10.0.0.5")]));
        // A bare IP deny entry also catches names resolving to it (fail closed).
        let deny = m(&["*"], &["127.0.0.1"]);
        assert!(deny.needs_addresses("LOCALHOST"));
        assert!(!deny.permits("LOCALHOST", &[ip("127.0.0.1")]));
        assert!(!deny.permits("localhost.", &[ip("::1"), ip("::ffff:127.0.0.1")]));
        assert!(!deny.permits("localhost", &[]), "unresolved: refused");
        assert!(deny.permits("x.example", &[ip("8.8.8.8")]));
    }

    #[test]
    fn unreadable_entries_fail_closed() {
        assert!(!m(&["*"], &["not a host"]).permits("example.com", &[]));
        assert!(!m(&["not a host"], &[]).permits("example.com", &[]));
        assert!(m(&["not a host", "*"], &[]).permits("example.com", &[]));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let long = "0".repeat(100_000) + "1";
        assert_eq!(v4(&long).as_deref(), Some("0.0.0.1"));
        let _ = Host::parse(&"9".repeat(100_000));
        let _ = Host::parse(&":".repeat(1000));
        let _ = Host::parse("%");
        let _ = Host::parse("[%]");
        let _ = Cidr::parse("::/99999999999999999999");
        let _ = Rule::parse("\u{0}");
        let _ = Rule::parse("é.example");
    }
}
