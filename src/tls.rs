//! Our certificate authority (created on first start, key file 0600), leaf certificates minted
//! per intercepted host and cached, and the client TLS config used towards upstreams.

use dashmap::DashMap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Why a CA, a certificate file or a TLS configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable certificate or key.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Generating a certificate failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A verifier or store could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Every PEM certificate in `path` (read through rustls-pki-types' `PemObject`); an error when
/// the file is unreadable or holds none.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|e| file_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn file_err(path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Leaves live a week and are re-minted a day before they expire.
const LEAF_LIFETIME: Duration = Duration::days(7);
const LEAF_REFRESH_BEFORE: Duration = Duration::days(1);
/// Bounds the per-host cache; hosts beyond it are minted again when needed.
const LEAF_CACHE_MAX: usize = 10_000;

/// The proxy's CA: signs a leaf for every intercepted host.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// One key for all leaves: minting then costs a signature, not a key generation.
    leaf_key: KeyPair,
    leaf_key_der: PrivatePkcs8KeyDer<'static>,
    provider: Arc<CryptoProvider>,
    leaves: DashMap<String, (Arc<ServerConfig>, OffsetDateTime)>,
    minted: AtomicU64,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("leaves", &self.leaves.len())
            .finish_non_exhaustive()
    }
}

/// The rustls crypto provider (ring) every TLS config of the proxy is built with, always
/// passed explicitly: no process-wide default provider is installed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertificateAuthority {
    /// Loads the CA from `cert_path`/`key_path`, creating both (key mode 0600) when neither
    /// exists. One present without the other is an error, never silently replaced.
    pub fn load_or_create(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) => Self::create(cert_path, key_path),
            (true, false) => Err(file_err(
                key_path,
                "CA key missing while its certificate exists",
            )),
            (false, true) => Err(file_err(
                cert_path,
                "CA certificate missing while its key exists",
            )),
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = fs::read_to_string(cert_path).map_err(|e| file_err(cert_path, e))?;
        let key_pem = fs::read_to_string(key_path).map_err(|e| file_err(key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| file_err(key_path, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| file_err(cert_path, e))?;
        let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| file_err(cert_path, "no certificate in file"))?
            .map_err(|e| file_err(cert_path, e))?;
        Self::assemble(issuer, der, cert_pem)
    }

    fn create(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "l402-proxy CA");
        dn.push(DnType::OrganizationName, "l402-proxy");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(cert_path, cert_pem.as_bytes(), 0o644)?;
        let der = cert.der().clone();
        Self::assemble(Issuer::new(params, key), der, cert_pem)
    }

    fn assemble(
        issuer: Issuer<'static, KeyPair>,
        ca_der: CertificateDer<'static>,
        ca_pem: String,
    ) -> Result<Self, TlsError> {
        let leaf_key = KeyPair::generate()?;
        let leaf_key_der = PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
        Ok(CertificateAuthority {
            issuer,
            ca_der,
            ca_pem,
            leaf_key,
            leaf_key_der,
            provider: crypto_provider(),
            leaves: DashMap::new(),
            minted: AtomicU64::new(0),
        })
    }

    /// The CA certificate, PEM, for agents to trust.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How many leaf certificates were minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// A server config presenting a leaf for `host` (DNS name or IP), minted on first use.
    /// Offers h2 and http/1.1 to the agent.
    pub fn server_config_for(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let host = host.to_ascii_lowercase();
        let now = OffsetDateTime::now_utc();
        if let Some(entry) = self.leaves.get(&host) {
            if entry.1 - LEAF_REFRESH_BEFORE > now {
                return Ok(entry.0.clone());
            }
        }
        let (config, not_after) = self.mint(&host, now)?;
        if self.leaves.len() >= LEAF_CACHE_MAX {
            self.leaves.clear();
        }
        self.leaves.insert(host, (config.clone(), not_after));
        Ok(config)
    }

    fn mint(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<(Arc<ServerConfig>, OffsetDateTime), TlsError> {
        let mut params = CertificateParams::default();
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into()?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        // Backdated so agents with a slightly slow clock still accept it.
        params.not_before = now - Duration::hours(1);
        let not_after = now + LEAF_LIFETIME;
        params.not_after = not_after;
        params.serial_number = Some(rand::random::<u64>().into());
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let chain = vec![leaf.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(self.leaf_key_der.clone_key());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok((Arc::new(config), not_after))
    }
}

/// Writes a file, creating parent directories, with the given Unix mode set at creation so a
/// private key is never readable by others, not even briefly.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| file_err(path, e))?;
    file.write_all(contents).map_err(|e| file_err(path, e))?;
    file.sync_all().map_err(|e| file_err(path, e))
}

/// TLS towards upstreams: the public web roots plus the operator's extra PEM roots, ALPN set by
/// the connector. Verification is always on.
pub fn upstream_client_config(
    extra_roots: &[std::path::PathBuf],
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_roots {
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| file_err(path, e))?;
        }
    }
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_ca_with_private_key_mode() {
        let dir = std::env::temp_dir().join(format!("l402-ca-{}", rand::random::<u64>()));
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        let ca = CertificateAuthority::load_or_create(&cert, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = CertificateAuthority::load_or_create(&cert, &key).unwrap();
        assert_eq!(ca.ca_cert_pem(), again.ca_cert_pem());
        let a = again.server_config_for("Example.COM").unwrap();
        let b = again.server_config_for("example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(again.minted(), 1);
        again.server_config_for("127.0.0.1").unwrap();
        assert_eq!(again.minted(), 2);
        fs::remove_file(&cert).unwrap();
        assert!(CertificateAuthority::load_or_create(&cert, &key).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
