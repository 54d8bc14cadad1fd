//! The PostgreSQL URL means what it means to libpq: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` are honoured, `store.postgres.tls` must agree
//! with them, and a TLS mismatch at start names the fix. Against real PostgreSQL servers on
//! 127.0.0.1: the tests' own (plain TCP, as the official image and compose files run it) and one
//! started with a certificate made here.

mod common;

use common::pg_server::PgServer;
use l402_proxy::config::{PostgresConfig, PostgresTls};
use l402_proxy::core::time::SystemClock;
use l402_proxy::ledger::postgres::PostgresLedger;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;
use std::sync::Arc;

fn config(tls: Option<PostgresTls>, ca_file: Option<PathBuf>) -> PostgresConfig {
    PostgresConfig {
        url_env: Some("L402_STORE_URL".into()),
        url_file: None,
        tls,
        ca_file,
        pool_size: 2,
    }
}

async fn open(url: &str, tls: Option<PostgresTls>) -> Result<PostgresLedger, String> {
    open_with(url, tls, None).await
}

async fn open_with(
    url: &str,
    tls: Option<PostgresTls>,
    ca: Option<PathBuf>,
) -> Result<PostgresLedger, String> {
    PostgresLedger::open(url, &config(tls, ca), Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())
}

/// `url` with `?query` (or `&query`) added.
fn with(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_in_the_url_is_honoured_against_a_server_without_tls() {
    let db = PgServer::start();
    let url = db.url();
    // The case: a plain URL that says sslmode=disable, store.postgres.tls unset.
    open(&with(url, "sslmode=disable"), None)
        .await
        .expect("sslmode=disable connects in plain TCP");
    open(&with(url, "sslmode=prefer"), None)
        .await
        .expect("sslmode=prefer falls back to plain TCP");
    open(&with(url, "sslmode=disable"), Some(PostgresTls::Disable))
        .await
        .expect("agreeing settings");

    // Neither says: verify-full, and the refusal names the fix and both places.
    let e = open(url, None).await.err().expect("no TLS on the server");
    assert!(e.contains("does not offer TLS"), "{e}");
    assert!(e.contains("verify-full"), "{e}");
    assert!(e.contains("sslmode=disable"), "{e}");
    assert!(e.contains("store.postgres.tls"), "{e}");
    let e = open(&with(url, "sslmode=require"), None)
        .await
        .err()
        .expect("require needs TLS");
    assert!(
        e.contains("from sslmode in the database URL") && e.contains("change sslmode"),
        "{e}"
    );

    // A disagreement is refused before connecting, naming both.
    let e = open(&with(url, "sslmode=disable"), Some(PostgresTls::VerifyFull))
        .await
        .err()
        .expect("a disagreement");
    assert!(
        e.contains("store.postgres.tls")
            && e.contains("verify-full")
            && e.contains("sslmode=disable"),
        "{e}"
    );
}

/// A CA and a server certificate naming `localhost` only; (CA PEM, chain PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "l402 test database CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_and_sslrootcert_against_a_tls_server() {
    let (ca_pem, chain, key) = certificates();
    let db = PgServer::start_with_tls(&chain, &key);
    let dir = common::temp_dir("pg-tls");
    let ca = dir.join("db-ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let by_ip = db.url().to_string();
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    let root = format!("sslrootcert={}", ca.display());

    // libpq's require: encrypted, nothing verified without a root (an unknown CA is fine).
    open(&with(&by_ip, "sslmode=require"), None)
        .await
        .expect("require without a root encrypts unverified");
    // verify-full with the root from the URL, by the certificate's name.
    open(
        &with(&by_name, &format!("sslmode=verify-full&{root}")),
        None,
    )
    .await
    .expect("verify-full with sslrootcert");
    // verify-ca: the chain, whatever the host is called.
    open(&with(&by_ip, &format!("sslmode=verify-ca&{root}")), None)
        .await
        .expect("verify-ca by address");
    // The same root from store.postgres.ca_file.
    open_with(&by_name, Some(PostgresTls::VerifyFull), Some(ca.clone()))
        .await
        .expect("verify-full with ca_file");

    // verify-full by an address the certificate does not name: the fix is named.
    let e = open(&with(&by_ip, &format!("sslmode=verify-full&{root}")), None)
        .await
        .err()
        .expect("the name does not match");
    assert!(
        e.contains("verify-ca") && e.contains("does not name the host"),
        "{e}"
    );
    // No root for a private CA: the fix is named.
    let e = open(&with(&by_name, "sslmode=verify-ca"), None)
        .await
        .err()
        .expect("unknown issuer");
    assert!(
        e.contains("store.postgres.ca_file") && e.contains("sslrootcert"),
        "{e}"
    );
    // require with a root verifies the chain, as libpq does: a wrong root is refused.
    let (other_ca, _, _) = certificates();
    let other = dir.join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let e = open(
        &with(
            &by_ip,
            &format!("sslmode=require&sslrootcert={}", other.display()),
        ),
        None,
    )
    .await
    .err()
    .expect("require with a root checks the chain");
    assert!(e.contains("not signed by a CA trusted here"), "{e}");
}
