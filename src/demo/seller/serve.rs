//! Serving the seller: its throwaway TLS identity, the HTTP and HTTPS listeners, and the
//! running seller a demo or a test holds.

use super::Seller;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The seller's own TLS identity: a throwaway CA (PEM, for `tls.upstream_roots` or a client's
/// trust store) and a leaf for localhost and 127.0.0.1.
pub struct SellerTls {
    /// The CA certificate, PEM: what a client must trust to reach the seller over HTTPS.
    pub ca_pem: String,
    /// The server side: the leaf and the CA as its chain, ALPN `h2` and `http/1.1`.
    pub server: Arc<rustls::ServerConfig>,
}

impl SellerTls {
    /// A fresh CA and a leaf for `localhost` and `127.0.0.1`.
    pub fn generate() -> anyhow::Result<SellerTls> {
        SellerTls::generate_for(&["localhost".to_string(), "127.0.0.1".to_string()])
    }

    /// As `generate`, with a leaf naming `names` (DNS names or IP addresses), e.g. the seller's
    /// service name on a compose network.
    pub fn generate_for(names: &[String]) -> anyhow::Result<SellerTls> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "l402-proxy demo seller CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(names.to_vec())?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SellerTls {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        })
    }
}

/// Serves the seller on a plain-HTTP listener until the task is dropped.
pub async fn serve_http(seller: Arc<Seller>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_io(seller.clone(), TokioIo::new(stream), "http"));
    }
}

/// Serves the seller over TLS (h2 or HTTP/1.1) until the task is dropped.
pub async fn serve_https(
    seller: Arc<Seller>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let seller = seller.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                serve_io(seller, TokioIo::new(tls), "https").await;
            }
        });
    }
}

/// The scheme a request reached the seller over (`http`, `https`): the x402 `lnbtc` route
/// binds the URL the client called.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServedOver(pub(super) &'static str);

async fn serve_io<I>(seller: Arc<Seller>, io: I, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        let seller = seller.clone();
        req.extensions_mut().insert(ServedOver(scheme));
        async move {
            if seller.resets_now(&req) {
                return Err(ConnectionReset);
            }
            Ok(seller.handle(req).await)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await;
}

/// Why a connection was dropped without a response (tests' resets).
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the seller")
    }
}

impl std::error::Error for ConnectionReset {}

/// A running seller: where it listens and the CA its HTTPS side uses.
/// Dropping it stops both listeners.
pub struct RunningSeller {
    /// The seller being served.
    pub seller: Arc<Seller>,
    /// Its plain-HTTP address, with the port actually bound.
    pub http: SocketAddr,
    /// Its HTTPS address, with the port actually bound.
    pub https: SocketAddr,
    /// The CA its HTTPS side chains to, PEM (see [`SellerTls::ca_pem`]).
    pub ca_pem: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningSeller {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Starts the seller on `ip` with ephemeral HTTP and HTTPS ports.
pub async fn start(seller: Arc<Seller>, ip: std::net::IpAddr) -> anyhow::Result<RunningSeller> {
    start_on(seller, SocketAddr::new(ip, 0), SocketAddr::new(ip, 0)).await
}

/// Starts the seller on the given HTTP and HTTPS addresses (port 0: any free one).
pub async fn start_on(
    seller: Arc<Seller>,
    http: SocketAddr,
    https: SocketAddr,
) -> anyhow::Result<RunningSeller> {
    let tls = SellerTls::generate()?;
    let http_listener = TcpListener::bind(http).await?;
    let https_listener = TcpListener::bind(https).await?;
    let http = http_listener.local_addr()?;
    let https = https_listener.local_addr()?;
    let tasks = vec![
        tokio::spawn(serve_http(seller.clone(), http_listener)),
        tokio::spawn(serve_https(seller.clone(), https_listener, tls.server)),
    ];
    Ok(RunningSeller {
        seller,
        http,
        https,
        ca_pem: tls.ca_pem,
        tasks,
    })
}
