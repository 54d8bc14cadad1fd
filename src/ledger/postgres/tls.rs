//! TLS towards PostgreSQL with rustls: `verify-full` checks the certificate chain and the host
//! name (public roots plus `store.postgres.ca_file`), `require` checks the chain only (for
//! databases reached by an address their certificate does not name), `disable` is plain TCP.

use crate::config::PostgresTls;
use crate::tls::upstream_client_config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// The rustls client configuration for `mode`, or `None` for `disable`.
pub fn client_config(
    mode: PostgresTls,
    ca_file: Option<&PathBuf>,
) -> Result<Option<rustls::ClientConfig>, crate::tls::TlsError> {
    let extra: Vec<PathBuf> = ca_file.cloned().into_iter().collect();
    match mode {
        PostgresTls::Disable => Ok(None),
        PostgresTls::VerifyFull => Ok(Some(upstream_client_config(&extra)?)),
        PostgresTls::Require => {
            let mut config = upstream_client_config(&extra)?;
            let roots = root_store(&extra)?;
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                crate::tls::crypto_provider(),
            )
            .build()
            .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?;
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(ChainOnly(inner)));
            Ok(Some(config))
        }
    }
}

fn root_store(extra: &[PathBuf]) -> Result<rustls::RootCertStore, crate::tls::TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra {
        for cert in crate::tls::read_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| crate::tls::TlsError::Config(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

/// Verifies the chain to a trusted root, accepting any host name (`tls: require`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
