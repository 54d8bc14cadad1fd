//! Single-use credentials that were paid for but never delivered: the paid replay failed before
//! any response arrived, or the payment settled after the agent had been told it timed out.
//! Such a credential is kept for a short while, for the same agent and the same request (method,
//! URL and body), so the agent's own retry is served with it instead of paying again.
//!
//! Invariants: a kept credential is found only by the agent that paid for it and only for the
//! request it was bought for; it is handed out once (taken); it lives at most [`KEEP_SECS`];
//! the store holds at most [`KEEP_MAX`] entries (expired ones go first, then the oldest).

use super::dialect::Credential;
use dashmap::DashMap;
use http::{Method, Uri};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How long an undelivered single-use credential waits for the agent's retry.
pub const KEEP_SECS: u64 = 600;
/// The most credentials kept at once.
pub const KEEP_MAX: usize = 10_000;

/// Which request a credential was bought for: a digest of its method, URL and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey([u8; 32]);

impl RequestKey {
    /// The key of one request, as the agent sent it.
    pub fn of(method: &Method, uri: &Uri, body: &[u8]) -> RequestKey {
        let mut h = Sha256::new();
        h.update(method.as_str().as_bytes());
        h.update(b"\n");
        h.update(uri.to_string().as_bytes());
        h.update(b"\n");
        h.update(Sha256::digest(body));
        RequestKey(h.finalize().into())
    }
}

/// A paid, undelivered single-use credential.
#[derive(Debug, Clone)]
pub struct KeptCredential {
    /// The header to replay with.
    pub credential: Credential,
    /// The dialect it answers.
    pub dialect: &'static str,
    /// The purchase it was bought for (for the agent's headers).
    pub flight: String,
    /// Unix seconds after which it is not handed out.
    until: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct Kept {
    by_request: DashMap<(Arc<str>, RequestKey), KeptCredential>,
}

impl Kept {
    /// An empty store.
    pub fn new() -> Kept {
        Kept::default()
    }

    /// Keeps `credential`, bought by `agent` for `request`, for [`KEEP_SECS`] from `now`.
    pub fn keep(
        &self,
        agent: &Arc<str>,
        request: RequestKey,
        credential: Credential,
        dialect: &'static str,
        flight: String,
        now: u64,
    ) {
        if self.by_request.len() >= KEEP_MAX {
            self.by_request.retain(|_, k| k.until > now);
        }
        if self.by_request.len() >= KEEP_MAX {
            let oldest = self
                .by_request
                .iter()
                .min_by_key(|e| e.value().until)
                .map(|e| e.key().clone());
            if let Some(key) = oldest {
                self.by_request.remove(&key);
            }
        }
        tracing::info!(%agent, flight = %flight, secs = KEEP_SECS, "a paid single-use credential was not delivered: kept for the agent's retry");
        self.by_request.insert(
            (agent.clone(), request),
            KeptCredential {
                credential,
                dialect,
                flight,
                until: now.saturating_add(KEEP_SECS),
            },
        );
    }

    /// Takes the credential `agent` paid for `request`, if one is kept and still fresh.
    pub fn take(&self, agent: &Arc<str>, request: RequestKey, now: u64) -> Option<KeptCredential> {
        if self.by_request.is_empty() {
            return None;
        }
        let (_, kept) = self.by_request.remove(&(agent.clone(), request))?;
        (kept.until > now).then_some(kept)
    }

    /// How many credentials are kept now.
    pub fn len(&self) -> usize {
        self.by_request.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.by_request.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn credential(v: &str) -> Credential {
        Credential::new(HeaderName::from_static("authorization"), v).expect("a header value")
    }

    #[test]
    fn a_kept_credential_serves_only_its_agent_and_request_once() {
        let kept = Kept::new();
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        let uri: Uri = "https://seller.test/gen".parse().expect("uri");
        let key = RequestKey::of(&Method::POST, &uri, b"{\"q\":1}");
        let other = RequestKey::of(&Method::POST, &uri, b"{\"q\":2}");
        kept.keep(
            &alice,
            key,
            credential("Payment x"),
            "payment",
            "=/gen".into(),
            100,
        );
        assert!(kept.take(&bob, key, 101).is_none(), "another agent");
        assert!(kept.take(&alice, other, 101).is_none(), "another body");
        let got = kept.take(&alice, key, 101).expect("kept");
        assert_eq!(got.dialect, "payment");
        assert_eq!(got.credential.value, "Payment x");
        assert!(kept.take(&alice, key, 102).is_none(), "handed out once");
    }

    #[test]
    fn a_kept_credential_expires() {
        let kept = Kept::new();
        let alice: Arc<str> = Arc::from("alice");
        let uri: Uri = "https://seller.test/gen".parse().expect("uri");
        let key = RequestKey::of(&Method::GET, &uri, b"");
        kept.keep(
            &alice,
            key,
            credential("Payment x"),
            "payment",
            "=/gen".into(),
            100,
        );
        assert!(kept.take(&alice, key, 100 + KEEP_SECS).is_none());
    }

    #[test]
    fn the_store_is_bounded() {
        let kept = Kept::new();
        let alice: Arc<str> = Arc::from("alice");
        let uri: Uri = "https://seller.test/gen".parse().expect("uri");
        for i in 0..(KEEP_MAX + 5) {
            let key = RequestKey::of(&Method::POST, &uri, i.to_string().as_bytes());
            kept.keep(
                &alice,
                key,
                credential("Payment x"),
                "payment",
                "=/gen".into(),
                7,
            );
        }
        assert_eq!(kept.len(), KEEP_MAX);
    }
}
