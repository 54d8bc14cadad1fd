//! JSON over HTTP(S) to a wallet node, shared by the LNbits, LND and CLN backends: build the
//! request with the backend's credentials, send it under a deadline, read a size-capped body,
//! and turn every transport failure into a `PayError` an operator can act on.
//!
//! TLS: either the public web roots (a node behind a real certificate) or a pinned certificate
//! file (LND's and clnrest's self-signed certificates). Pinning trusts exactly what the file
//! holds and nothing else — see [`PinnedVerifier`].

mod elide;

use super::PayError;
use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Replies larger than this are refused: no wallet answer we read is anywhere near it, and a
/// misbehaving node must not make the proxy buffer without bound.
pub const MAX_BODY: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which certificates the node's TLS must chain to.
pub enum Trust {
    /// The public web roots (webpki-roots), as for any HTTPS site.
    PublicRoots,
    /// Only these certificates (read from a `tls_cert_file`).
    Pinned(Vec<CertificateDer<'static>>),
}

impl Trust {
    /// Reads the PEM certificates a `tls_cert_file` holds. `field` names the config key.
    pub fn pinned_file(path: &Path, field: &str) -> anyhow::Result<Trust> {
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "config field `{field}`: cannot read {}: {e}",
                path.display()
            )
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("config field `{field}`: {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "config field `{field}`: {} holds no PEM certificate",
                path.display()
            );
        }
        Ok(Trust::Pinned(certs))
    }
}

/// A status and a body read in full (at most [`MAX_BODY`] bytes).
#[derive(Debug)]
pub struct Reply {
    /// The node's HTTP status, whatever it is (callers judge it).
    pub status: StatusCode,
    /// The whole body, never more than [`MAX_BODY`] bytes.
    pub body: Bytes,
}

impl Reply {
    /// Parses the body as `T`; a body of another shape means the node is not what we expect.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, PayError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PayError::Unavailable(format!(
                "{what}: unexpected answer (HTTP {}): {e}; body starts {:?}",
                self.status.as_u16(),
                snippet(&self.body)
            ))
        })
    }
}

/// The first 200 characters of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Why a call did not produce a reply.
#[derive(Debug)]
pub enum CallError {
    /// No complete answer within the deadline: the request may have been acted on.
    Timeout,
    /// Could not connect, TLS refused, connection dropped, body too large…
    Transport(String),
}

impl CallError {
    /// As the error of a payment: a timeout may still settle, so it stays in flight.
    pub fn into_pay(self, timeout: Duration) -> PayError {
        match self {
            CallError::Timeout => PayError::Timeout(timeout),
            CallError::Transport(why) => PayError::Unavailable(why),
        }
    }

    /// As the error of a lookup: nothing moved, the node just did not answer.
    pub fn into_lookup(self, timeout: Duration) -> PayError {
        match self {
            CallError::Timeout => {
                PayError::Unavailable(format!("the node did not answer within {timeout:?}"))
            }
            CallError::Transport(why) => PayError::Unavailable(why),
        }
    }
}

/// A client for one node: base URL, credentials, TLS trust. Cheap to clone (pooled inside).
#[derive(Clone)]
pub struct NodeClient {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Credentials sent on every request; marked sensitive and never printed.
    auth: Vec<(HeaderName, HeaderValue)>,
    pinned: bool,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("base", &self.base)
            .field(
                "auth",
                &self
                    .auth
                    .iter()
                    .map(|(k, _)| format!("{k}: <redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl NodeClient {
    /// `url` is the node's base URL (http or https; any path prefix is kept). `auth` headers are
    /// sent on every request and never logged.
    pub fn new(
        url: &str,
        trust: Trust,
        auth: Vec<(HeaderName, HeaderValue)>,
    ) -> anyhow::Result<NodeClient> {
        let provider = crate::tls::crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let pinned = matches!(trust, Trust::Pinned(_));
        let tls = match trust {
            Trust::PublicRoots => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Pinned(certs) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(certs, provider)))
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(https);
        let auth = auth
            .into_iter()
            .map(|(k, mut v)| {
                v.set_sensitive(true);
                (k, v)
            })
            .collect();
        Ok(NodeClient {
            base: url.trim_end_matches('/').to_string(),
            client,
            auth,
            pinned,
        })
    }

    /// The node's base URL as configured, without a trailing `/`: every path is appended to it.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in &self.auth {
            builder = builder.header(k, v.clone());
        }
        let bytes = match body {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(bytes)).map_err(|e| {
            CallError::Transport(format!(
                "cannot build a request to {}{path}: {e}",
                self.base
            ))
        })
    }

    /// Sends a request and returns the response head; the body is read by the caller (streams).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response<Incoming>, CallError> {
        let req = self.request(method, path, body)?;
        self.client
            .request(req)
            .await
            .map_err(|e| CallError::Transport(self.describe(&e)))
    }

    /// Sends a request and reads the whole reply, all within `timeout`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let exchange = async {
            let res = self.open(method, path, body).await?;
            let status = res.status();
            let body = read_capped(res.into_body()).await?;
            Ok(Reply { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// POSTs `body` byte for byte (no re-encoding, so a signature over it stays valid) with the
    /// client's auth headers and then `headers`, and reads the whole reply, all within
    /// `timeout`. Errors name the base URL only, never `path` or header values.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base));
        for (k, v) in self.auth.iter().chain(headers) {
            builder = builder.header(k, v.clone());
        }
        let req = builder.body(Full::new(body)).map_err(|e| {
            CallError::Transport(format!("cannot build a request to {}: {e}", self.base))
        })?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Transport(self.describe(&e)))?;
            let status = res.status();
            let body = read_capped(res.into_body()).await?;
            Ok(Reply { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// One line saying what went wrong on the wire, naming the certificate when TLS refused it.
    fn describe(&self, e: &hyper_util::client::legacy::Error) -> String {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        if chain.contains("certificate") || chain.contains("Certificate") {
            let hint = if self.pinned {
                "it is not the certificate pinned in tls_cert_file"
            } else {
                "it does not chain to a public root; set tls_cert_file to the node's certificate"
            };
            format!(
                "TLS to {} failed: the node's certificate was refused ({hint}): {chain}",
                self.base
            )
        } else if e.is_connect() {
            format!("cannot connect to {}: {chain}", self.base)
        } else {
            format!("{}: {chain}", self.base)
        }
    }
}

/// Reads a body in full, refusing more than [`MAX_BODY`] bytes.
pub async fn read_capped(mut body: Incoming) -> Result<Bytes, CallError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| CallError::Transport(format!("reading the reply failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(CallError::Transport(format!(
                    "the reply is larger than {MAX_BODY} bytes"
                )));
            }
            out.extend_from_slice(data.chunk());
        }
    }
    Ok(Bytes::from(out))
}

/// Splits a streamed body into lines (newline-delimited JSON, as LND's REST streams send).
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    elide: Option<elide::Elide>,
}

impl Lines {
    /// Lines of `body`, read as they arrive.
    pub fn new(body: Incoming) -> Lines {
        Lines {
            body,
            buf: Vec::new(),
            done: false,
            elide: None,
        }
    }

    /// Lines of `body` with every array under `key` emptied as it streams past (LND's `htlcs`,
    /// which grows with every attempt): the limit of [`MAX_BODY`] then applies to the rest of
    /// a line only, which a long payment history does not make longer.
    pub fn eliding(body: Incoming, key: &'static str) -> Lines {
        Lines {
            elide: Some(elide::Elide::new(key)),
            ..Lines::new(body)
        }
    }

    /// The next non-empty line, or None at the end of the stream. What is kept of a line may
    /// not exceed [`MAX_BODY`] bytes.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, CallError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                return Ok(Some(Bytes::copy_from_slice(trimmed)));
            }
            if self.done {
                let rest = std::mem::take(&mut self.buf);
                let trimmed = rest.trim_ascii();
                return Ok((!trimmed.is_empty()).then(|| Bytes::copy_from_slice(trimmed)));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    return Err(CallError::Transport(format!(
                        "the update stream broke off: {e}"
                    )))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        match &mut self.elide {
                            Some(elide) => elide.feed(data.chunk(), &mut self.buf),
                            None => self.buf.extend_from_slice(data.chunk()),
                        }
                        if self.buf.len() > MAX_BODY {
                            return Err(CallError::Transport(format!(
                                "a streamed update is larger than {MAX_BODY} bytes"
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// Trusts a node by its own certificate rather than by a public CA.
///
/// Accepts the server when (1) its end-entity certificate is byte-for-byte one of the pinned
/// certificates (LND's `tls.cert` is a self-signed CA certificate, which WebPKI refuses as an
/// end entity, so exact match is the way to trust it), or (2) its chain verifies against the
/// pinned certificates as the only roots (clnrest's server certificate signed by its own CA, the
/// CA given as `tls_cert_file`); a host-name mismatch is tolerated in that case, since the pinned
/// private CA is dedicated to this node and node certificates name `localhost`, not the address
/// the proxy dials. The handshake signature is always checked against the presented key, so
/// holding the certificate without its private key is not enough.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: Vec<CertificateDer<'static>>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// Trusts exactly `pinned` (as end entities, or as the only roots of a chain), checking
    /// signatures with `provider`. Pinned certificates that cannot be roots still match exactly.
    pub fn new(pinned: Vec<CertificateDer<'static>>, provider: Arc<CryptoProvider>) -> Self {
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            let _ = roots.add(cert.clone());
        }
        let chain = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        };
        PinnedVerifier {
            pinned,
            chain,
            provider,
        }
    }
}

/// Shown inside rustls' error (which prints it with Debug), so Debug says it in words.
struct NotPinned;

impl fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not the pinned certificate")
    }
}

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server's certificate does not match the pinned certificate")
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        if let Some(chain) = &self.chain {
            match chain.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(ok) => return Ok(ok),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => return Ok(ServerCertVerified::assertion()),
                Err(_) => {}
            }
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(NotPinned)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A JSON string or number as u64 (LND's REST encodes 64-bit integers as strings).
pub fn u64_field(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// A JSON string or number as i64 (LNbits reports fees as negative msat).
pub fn i64_field(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A string field, if present and a string.
pub fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// Builds an auth header from a secret; the error never contains the secret.
pub fn secret_header(
    name: &'static str,
    value: &str,
    field: &str,
) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        anyhow::anyhow!(
            "config field `{field}`: the secret contains characters not allowed in an HTTP header"
        )
    })?;
    v.set_sensitive(true);
    Ok((HeaderName::from_static(name), v))
}
