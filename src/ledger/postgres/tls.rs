//! TLS towards PostgreSQL with rustls, with libpq's `sslmode` meanings: `verify-full` checks
//! the certificate chain and the host name (public roots plus the CA file), `verify-ca` the
//! chain only (databases reached by an address their certificate does not name), `require`
//! encrypts and checks the chain only when a CA file is given, `prefer` tries TLS unverified and
//! falls back to plain TCP, `disable` is plain TCP. Which mode applies, and from where, is
//! [`crate::config::postgres_url`]'s business.

use crate::config::postgres_url::Target;
use crate::config::PostgresTls;
use crate::ledger::LedgerError;
use crate::tls::upstream_client_config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// The rustls client configuration for `mode` (`None` for `disable`) and the driver's
/// `sslmode` (`prefer` falls back to plain TCP when the server offers no TLS).
pub fn client_config(
    mode: PostgresTls,
    ca_file: Option<&PathBuf>,
) -> Result<(Option<rustls::ClientConfig>, SslMode), crate::tls::TlsError> {
    let extra: Vec<PathBuf> = ca_file.cloned().into_iter().collect();
    let chain_only = |extra: &[PathBuf]| -> Result<rustls::ClientConfig, crate::tls::TlsError> {
        let mut config = upstream_client_config(extra)?;
        let roots = root_store(extra)?;
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            crate::tls::crypto_provider(),
        )
        .build()
        .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?;
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(ChainOnly(inner)));
        Ok(config)
    };
    let unverified = || -> Result<rustls::ClientConfig, crate::tls::TlsError> {
        let mut config = upstream_client_config(&[])?;
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Unverified(crate::tls::crypto_provider())));
        Ok(config)
    };
    Ok(match mode {
        PostgresTls::Disable => (None, SslMode::Disable),
        PostgresTls::Prefer => (Some(unverified()?), SslMode::Prefer),
        PostgresTls::Require if extra.is_empty() => (Some(unverified()?), SslMode::Require),
        PostgresTls::Require | PostgresTls::VerifyCa => {
            (Some(chain_only(&extra)?), SslMode::Require)
        }
        PostgresTls::VerifyFull => (Some(upstream_client_config(&extra)?), SslMode::Require),
    })
}

/// `error` (the first connection's) with the fix when it is a TLS mismatch between this side's
/// mode and the server: naming the mode, where it came from, and what to change.
pub fn explain(error: LedgerError, target: &Target) -> LedgerError {
    let text = match &error {
        LedgerError::Unavailable(_) | LedgerError::Postgres { .. } => error.reason(),
        _ => return error,
    };
    let mode = target.tls.name();
    let from = target.source;
    let change = target.how_to_change();
    let fix = if text.contains("server does not support TLS") {
        format!("the database server does not offer TLS, but the ledger's TLS mode is {mode} (from {from}). For a database on this host or a private network, {change} to sslmode=disable (or prefer); otherwise enable ssl on the server")
    } else if text.contains("no encryption") {
        format!("the database server accepts only TLS connections here, but the ledger's TLS mode is {mode} (from {from}): {change} to require, verify-ca or verify-full")
    } else if text.contains("not valid for name") || text.contains("NotValidForName") {
        format!("the database's certificate does not name the host in the URL (TLS mode {mode}, from {from}): connect by a name the certificate holds, or {change} to verify-ca")
    } else if text.contains("invalid peer certificate") {
        format!("the database's certificate is not signed by a CA trusted here (TLS mode {mode}, from {from}): set store.postgres.ca_file (or sslrootcert in the URL) to the CA that signed it, or {change} to require to encrypt without verifying")
    } else {
        return error;
    };
    LedgerError::Unavailable(format!("{text}: {fix}"))
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

/// Accepts any certificate (`prefer`, and `require` without a CA file, as in libpq): the
/// connection is encrypted against a passive reader, not against an impostor. The handshake's
/// signatures are still checked against the certificate presented.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain to a trusted root, accepting any host name (`verify-ca`, and `require`
/// with a CA file).
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
