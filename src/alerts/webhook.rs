//! A webhook: where alerts go, the secret that signs them, which events it wants, and one
//! signed POST of a body.
//!
//! Signature: `X-L402-Signature: sha256=<lowercase hex HMAC-SHA256(secret, body)>` over the
//! exact body bytes. Receivers check it with [`verify`] (or the same HMAC in any language).

use super::filter::EventFilter;
use crate::wallet::http::{CallError, NodeClient, Trust};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use sha2::Sha256;
use std::fmt;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-l402-signature";
/// The header carrying the event's name.
pub const EVENT_HEADER: &str = "x-l402-event";

/// `sha256=<hex>`: the lowercase hex HMAC-SHA256 of `body` under `secret`, as sent in
/// `X-L402-Signature`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body)))
}

/// True only when `header` is `sha256=<hex>` of exactly this `body` under `secret`. The digests
/// are compared in constant time; hex case is ignored; anything malformed is false.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_part) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    let expected = mac(secret, body);
    given.len() == expected.len() && bool::from(given.ct_eq(&expected))
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut m) => {
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// One configured webhook, secret read. The URL is http(s) with a host (checked when built);
/// the secret is never printed (Debug redacts it) nor logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    url: String,
    /// `scheme://authority`, the only part of the URL that appears in logs and errors.
    origin: String,
    /// Path and query (may hold a token: never logged).
    path: String,
    host: String,
    secret: Vec<u8>,
    events: EventFilter,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("origin", &self.origin)
            .field("secret", &"<redacted>")
            .field("events", &self.events.patterns())
            .finish()
    }
}

impl Webhook {
    /// A webhook posting to `url` (http or https, with a host), signing with `secret`
    /// (non-empty), for the events `events` matches. The error says which of the three is wrong.
    pub fn new(url: &str, secret: impl Into<Vec<u8>>, events: EventFilter) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let (Some(scheme @ ("http" | "https")), Some(authority), Some(host)) =
            (uri.scheme_str(), uri.authority(), uri.host())
        else {
            return Err(format!("{url:?} is not an http(s) URL with a host"));
        };
        let secret = secret.into();
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Webhook {
            url: url.to_string(),
            origin: format!("{scheme}://{authority}"),
            path,
            host: host.to_string(),
            secret,
            events,
        })
    }

    /// The URL as configured (may contain a token in its query: do not log it; use [`host`]).
    ///
    /// [`host`]: Webhook::host
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's host, which is what logs name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when this webhook wants events named `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.matches(event)
    }

    /// The event filter.
    pub fn events(&self) -> &EventFilter {
        &self.events
    }

    /// The webhook's key in the ledger's outbox: a digest of its URL, secret and filter, so the
    /// same webhook configured again (after a restart, or on another replica) finds its
    /// deliveries, a changed one does not, and neither the URL nor the secret is stored.
    pub fn key(&self) -> String {
        use sha2::Digest;
        let mut h = Sha256::new();
        h.update(self.url.as_bytes());
        h.update([0]);
        h.update(&self.secret);
        for p in self.events.patterns() {
            h.update([0]);
            h.update(p.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered(u16),
    /// Any other answer, with its status.
    Refused(u16),
    /// No answer: connect error, TLS, timeout… (says what, without the secret or the path).
    Unreachable(String),
}

/// A webhook with its HTTP client (pooled connections, public web roots for https).
pub(super) struct Poster {
    pub webhook: Webhook,
    client: NodeClient,
}

impl Poster {
    pub fn new(webhook: Webhook) -> Result<Poster, String> {
        let client = NodeClient::new(&webhook.origin, Trust::PublicRoots, Vec::new())
            .map_err(|e| format!("webhook {}: {e}", webhook.host))?;
        Ok(Poster { webhook, client })
    }

    /// POSTs `body` once, signed, within `timeout`.
    pub async fn post(&self, event: &str, body: &Bytes, timeout: Duration) -> Attempt {
        let signature = sign(&self.webhook.secret, body);
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                USER_AGENT,
                HeaderValue::from_static(concat!("l402-proxy/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        if let Ok(v) = HeaderValue::from_str(event) {
            headers.push((HeaderName::from_static(EVENT_HEADER), v));
        }
        if let Ok(mut v) = HeaderValue::from_str(&signature) {
            v.set_sensitive(true);
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), v));
        }
        match self
            .client
            .post_raw(&self.webhook.path, body.clone(), &headers, timeout)
            .await
        {
            Ok(reply) if reply.status.is_success() => Attempt::Delivered(reply.status.as_u16()),
            Ok(reply) => Attempt::Refused(reply.status.as_u16()),
            Err(CallError::Timeout) => {
                Attempt::Unreachable(format!("no answer within {timeout:?}"))
            }
            Err(CallError::Transport(why)) => Attempt::Unreachable(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently: Python `hmac.new(key, msg, hashlib.sha256).hexdigest()`.
    #[test]
    fn signature_matches_known_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign(
                b"whsec_5f2b1c",
                br#"{"event":"wallet.low","id":"d1","at":1796083200}"#
            ),
            "sha256=7b1c5830793489fd171d6585708466dee3d6c095bf576a180546f9fce06ebf4d"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_body_and_secret() {
        let body = br#"{"event":"wallet.low","id":"d1","at":1796083200}"#;
        let header = sign(b"whsec_5f2b1c", body);
        assert!(verify(b"whsec_5f2b1c", body, &header));
        assert!(verify(
            b"whsec_5f2b1c",
            body,
            &header.to_uppercase().replace("SHA256=", "sha256=")
        ));
        let mut changed = body.to_vec();
        changed[10] ^= 1;
        assert!(!verify(b"whsec_5f2b1c", &changed, &header));
        assert!(!verify(b"whsec_5f2b1d", body, &header));
        assert!(!verify(
            b"whsec_5f2b1c",
            body,
            header.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"whsec_5f2b1c", body, "sha256=zz"));
        assert!(!verify(b"whsec_5f2b1c", body, &header[..header.len() - 2]));
        assert!(!verify(b"whsec_5f2b1c", body, ""));
    }

    #[test]
    fn webhook_urls_must_be_http_with_a_host() {
        let ok = Webhook::new("https://ops.example/hook?t=1", "s", EventFilter::all()).unwrap();
        assert_eq!(ok.host(), "ops.example");
        assert_eq!(ok.origin, "https://ops.example");
        assert_eq!(ok.path, "/hook?t=1");
        let bare = Webhook::new("http://127.0.0.1:9", "s", EventFilter::all()).unwrap();
        assert_eq!(bare.path, "/");
        for bad in ["ftp://ops.example/", "/hook", "ops example", "https:///x"] {
            assert!(Webhook::new(bad, "s", EventFilter::all()).is_err(), "{bad}");
        }
        assert!(Webhook::new("https://ops.example/", "", EventFilter::all()).is_err());
    }

    #[test]
    fn debug_redacts_the_secret_and_the_path() {
        let w = Webhook::new(
            "https://ops.example/hook?token=abc",
            "topsecret",
            EventFilter::all(),
        )
        .unwrap();
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("token=abc"),
            "{shown}"
        );
    }
}
