//! Who is asking: agents are known by `Proxy-Authorization: Basic base64(name:key)`. Keys are
//! stored only as sha256 and compared in constant time.

use crate::config::{AgentConfig, HostRules, Limits};
use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// One configured agent.
#[derive(Debug)]
pub struct Agent {
    pub name: Arc<str>,
    key_sha256: [u8; 32],
    pub limits: Limits,
    pub hosts: HostRules,
}

/// Why a request was refused with 407.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Rejected,
}

impl AuthError {
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
    pub fn from_config(configs: &[AgentConfig]) -> Agents {
        let by_name = configs
            .iter()
            .filter_map(|c| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(&c.key_sha256, &mut key).ok()?;
                let agent = Agent {
                    name: Arc::from(c.name.as_str()),
                    key_sha256: key,
                    limits: c.limits.clone(),
                    hosts: c.hosts.clone(),
                };
                Some((c.name.clone(), Arc::new(agent)))
            })
            .collect();
        Agents {
            by_name,
            verified: DashMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Agent>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

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
