//! Who is asking: agents are known by `Proxy-Authorization: Basic base64(name:key)`. Keys are
//! stored only as sha256 and compared in constant time. The directory holds the agents of the
//! config file and those made through the admin API (kept in the ledger); it is replaced whole
//! on every change, and requests inside a tunnel look their agent up again in the current one,
//! so a removed agent, a rotated key, new limits or a pause reach open connections at once.

pub mod directory;

use crate::config::{AgentConfig, HostRules, Limits};
use crate::core::Sats;
use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Where an agent is defined, and so where it may be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    /// The config file: changed by editing it (and SIGHUP).
    Config,
    /// The admin API: stored in the ledger, changed through the API.
    Api,
}

/// One agent.
#[derive(Debug)]
pub struct Agent {
    /// The user name in `Proxy-Authorization`.
    pub name: Arc<str>,
    key_sha256: [u8; 32],
    /// Its spending limits.
    pub limits: Limits,
    /// The hosts it may pay.
    pub hosts: HostRules,
    /// A paused agent's paid requests are declined (`agent-paused`); free traffic passes.
    pub paused: bool,
    /// Where it is defined.
    pub managed_by: ManagedBy,
}

impl Agent {
    /// The same agent, for one request, with `per_request_sats` no higher than `cap_sats`
    /// (an MCP `fetch` call's `max_sats`): a payment above it is declined
    /// `over-per-request-limit` like any other over the agent's own cap.
    pub fn with_request_cap(&self, cap_sats: u64) -> Agent {
        let mut limits = self.limits.clone();
        limits.per_request_sats = Some(
            limits
                .per_request_sats
                .map_or(Sats::new(cap_sats), |l| l.min(Sats::new(cap_sats))),
        );
        Agent {
            name: self.name.clone(),
            key_sha256: self.key_sha256,
            limits,
            hosts: self.hosts.clone(),
            paused: self.paused,
            managed_by: self.managed_by,
        }
    }

    /// The same agent, with the same key, in `directory`: what a request authenticated
    /// earlier (on CONNECT) acts as now. `None` once the agent is gone or its key rotated.
    pub fn current_in(&self, directory: &Agents) -> Option<Arc<Agent>> {
        directory
            .by_name
            .get(&*self.name)
            .filter(|a| bool::from(a.key_sha256.ct_eq(&self.key_sha256)))
            .cloned()
    }
}

/// An agent as the admin API stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAgent {
    /// Its name.
    pub name: String,
    /// sha256 of its key, hex.
    pub key_sha256: String,
    /// Its limits.
    pub limits: Limits,
    /// Its host rules.
    pub hosts: HostRules,
    /// Paused or not.
    pub paused: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Why a request was refused with 407.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Proxy-Authorization` header.
    Missing,
    /// The header is not `Basic base64(name:key)` (another scheme, bad base64, no `:`).
    Malformed,
    /// Well formed, but no agent has that name, or its key is not that one (which of the two
    /// is not told, and takes the same time).
    Rejected,
}

impl AuthError {
    /// The explanation sent to the agent with the 407.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "proxy credentials required",
            AuthError::Malformed => "Proxy-Authorization must be Basic base64(name:key)",
            AuthError::Rejected => "unknown agent or wrong key",
        }
    }
}

/// The configured agents, plus a cache of header values already proven good so a keep-alive
/// agent costs one hash-map probe per request instead of a base64 decode and a sha256.
#[derive(Debug, Default)]
pub struct Agents {
    by_name: HashMap<String, Arc<Agent>>,
    verified: DashMap<Bytes, Arc<Agent>>,
}

/// Bounds the verified-header cache; only successful logins enter it, so this is never reached
/// by honest fleets and only caps memory if agents vary their header spelling.
const VERIFIED_CACHE_MAX: usize = 4096;

impl Agents {
    /// The config file's agents alone.
    pub fn from_config(configs: &[AgentConfig]) -> Agents {
        Agents::build(configs, &[])
    }

    /// The config file's agents and the API's. On a name in both, the file wins (and the API
    /// agent is logged as hidden).
    pub fn build(configs: &[AgentConfig], api: &[StoredAgent]) -> Agents {
        let key_of = |hex_key: &str| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(hex_key, &mut key).ok().map(|_| key)
        };
        let mut by_name: HashMap<String, Arc<Agent>> = HashMap::new();
        for c in configs {
            let Some(key) = key_of(&c.key_sha256) else {
                continue;
            };
            let agent = Agent {
                name: Arc::from(c.name.as_str()),
                key_sha256: key,
                limits: c.limits.clone(),
                hosts: c.hosts.clone(),
                paused: false,
                managed_by: ManagedBy::Config,
            };
            by_name.insert(c.name.clone(), Arc::new(agent));
        }
        for a in api {
            if by_name.contains_key(&a.name) {
                tracing::warn!(agent = %a.name, "an agent of the config file has the name of an API-made agent: the file's wins");
                continue;
            }
            let Some(key) = key_of(&a.key_sha256) else {
                continue;
            };
            let agent = Agent {
                name: Arc::from(a.name.as_str()),
                key_sha256: key,
                limits: a.limits.clone(),
                hosts: a.hosts.clone(),
                paused: a.paused,
                managed_by: ManagedBy::Api,
            };
            by_name.insert(a.name.clone(), Arc::new(agent));
        }
        Agents {
            by_name,
            verified: DashMap::new(),
        }
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Agent>> {
        self.by_name.get(name)
    }

    /// Every agent.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.by_name.values()
    }

    /// How many agents.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// No agent at all.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks a `Proxy-Authorization` header value.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Arc<Agent>, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        if let Some(agent) = self.verified.get(header.as_bytes()) {
            return Ok(agent.clone());
        }
        let agent = self.check(header.as_bytes())?;
        if self.verified.len() < VERIFIED_CACHE_MAX {
            self.verified
                .insert(Bytes::copy_from_slice(header.as_bytes()), agent.clone());
        }
        Ok(agent)
    }

    fn check(&self, value: &[u8]) -> Result<Arc<Agent>, AuthError> {
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let (scheme, creds) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Malformed);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(creds.trim())
            .map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (name, key) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        match self.by_name.get(name) {
            Some(agent) if bool::from(agent.key_sha256.ct_eq(&presented)) => Ok(agent.clone()),
            Some(_) => Err(AuthError::Rejected),
            None => {
                // Same work as a known name, so timing does not reveal which names exist.
                let _ = [0u8; 32].ct_eq(&presented);
                Err(AuthError::Rejected)
            }
        }
    }
}

/// The `key_sha256` value for a key, as `l402-proxy hash-key` prints it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(
        key.trim_end_matches(['\r', '\n']).as_bytes(),
    ))
}

/// A fresh agent key: 32 random bytes, base64url (URL-safe: it goes in proxy URLs).
pub fn new_key() -> String {
    format!(
        "lpk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// Whether `name` can be an API-made agent's name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (it goes in proxy URLs as the user name).
pub fn check_api_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("a name is 1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    }
}

/// A `Proxy-Authorization` value for name and key (used by the demo and tests).
pub fn basic_credentials(name: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{key}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Agents {
        Agents::from_config(&[AgentConfig {
            name: "research".into(),
            key_sha256: hash_key("s3cret"),
            limits: Limits::default(),
            hosts: HostRules::default(),
        }])
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn good_credentials_pass_and_are_cached() {
        let a = agents();
        let h = hv(&basic_credentials("research", "s3cret"));
        assert_eq!(&*a.authenticate(Some(&h)).unwrap().name, "research");
        assert_eq!(a.verified.len(), 1);
        assert_eq!(&*a.authenticate(Some(&h)).unwrap().name, "research");
    }

    #[test]
    fn bad_credentials_fail() {
        let a = agents();
        assert_eq!(a.authenticate(None).unwrap_err(), AuthError::Missing);
        let wrong = hv(&basic_credentials("research", "nope"));
        assert_eq!(
            a.authenticate(Some(&wrong)).unwrap_err(),
            AuthError::Rejected
        );
        let unknown = hv(&basic_credentials("ghost", "s3cret"));
        assert_eq!(
            a.authenticate(Some(&unknown)).unwrap_err(),
            AuthError::Rejected
        );
        assert_eq!(
            a.authenticate(Some(&hv("Bearer x"))).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            a.authenticate(Some(&hv("Basic !!!"))).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(a.verified.len(), 0);
    }

    #[test]
    fn hash_key_ignores_trailing_newline() {
        assert_eq!(hash_key("abc\n"), hash_key("abc"));
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
