//! What `run` needs from the world around a valid config, checked before anything is created:
//! every secret it names is set (or its file readable), every certificate file parses, the CA
//! is usable (or absent, to be created), the database URL parses. Each problem names the field
//! and the fix.

use super::{err, read_secret, Backend, Config, ConfigError, StoreBackend};
use std::path::Path;

/// Every problem found; empty when `run` can start.
pub fn check(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    admin(config, &mut out);
    wallet(config, &mut out);
    tls(config, &mut out);
    store(config, &mut out);
    for (i, hook) in config.alerts.webhooks.iter().enumerate() {
        secret(
            hook.secret_env.as_deref(),
            hook.secret_file.as_deref(),
            &format!("alerts.webhooks[{i}].secret"),
            &mut out,
        );
    }
    if let Some(hook) = &config.policy_hook {
        secret(
            hook.secret_env.as_deref(),
            hook.secret_file.as_deref(),
            "policy_hook.secret",
            &mut out,
        );
    }
    out
}

/// A secret named by an `_env` or `_file` key, reported under the key actually used.
fn secret(env: Option<&str>, file: Option<&Path>, prefix: &str, out: &mut Vec<ConfigError>) {
    if env.is_none() && file.is_none() {
        return; // reported by the config's own checks
    }
    let field = if env.is_some() {
        format!("{prefix}_env")
    } else {
        format!("{prefix}_file")
    };
    match read_secret(env, file, &field) {
        Ok(v) if v.is_empty() => out.push(err(field, "is empty")),
        Ok(_) => {}
        Err(e) => out.push(e),
    }
}

fn readable(path: &Path, field: &str, out: &mut Vec<ConfigError>) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if let Err(e) = std::fs::File::open(path) {
                out.push(err(field, format!("cannot read {}: {e}", path.display())));
            }
        }
        Ok(_) => out.push(err(field, format!("{} is not a file", path.display()))),
        Err(e) => out.push(err(field, format!("cannot read {}: {e}", path.display()))),
    }
}

fn certificates(path: &Path, field: &str, out: &mut Vec<ConfigError>) {
    if let Err(e) = crate::tls::read_certificates(path) {
        out.push(err(field, e.to_string()));
    }
}

fn admin(config: &Config, out: &mut Vec<ConfigError>) {
    if config.admin.listen.is_some() {
        secret(
            config.admin.token_env.as_deref(),
            config.admin.token_file.as_deref(),
            "admin.token",
            out,
        );
        secret(
            config.admin.metrics_token_env.as_deref(),
            config.admin.metrics_token_file.as_deref(),
            "admin.metrics_token",
            out,
        );
    }
}

fn wallet(config: &Config, out: &mut Vec<ConfigError>) {
    let w = &config.wallet;
    match w.backend {
        Backend::Lnbits => {
            if let Some(l) = &w.lnbits {
                secret(
                    l.admin_key_env.as_deref(),
                    l.admin_key_file.as_deref(),
                    "wallet.lnbits.admin_key",
                    out,
                );
            }
        }
        Backend::Lnd => {
            if let Some(l) = &w.lnd {
                readable(&l.macaroon_file, "wallet.lnd.macaroon_file", out);
                if let Some(cert) = &l.tls_cert_file {
                    certificates(cert, "wallet.lnd.tls_cert_file", out);
                }
            }
        }
        Backend::Cln => {
            if let Some(c) = &w.cln {
                secret(
                    c.rune_env.as_deref(),
                    c.rune_file.as_deref(),
                    "wallet.cln.rune",
                    out,
                );
                if let Some(cert) = &c.tls_cert_file {
                    certificates(cert, "wallet.cln.tls_cert_file", out);
                }
            }
        }
        Backend::Nwc => {
            if let Some(n) = &w.nwc {
                let before = out.len();
                secret(
                    n.uri_env.as_deref(),
                    n.uri_file.as_deref(),
                    "wallet.nwc.uri",
                    out,
                );
                if out.len() == before {
                    // The URI is there: it must also parse (its secret is never shown).
                    if let Err(e) = crate::wallet::from_config(config) {
                        out.push(err("", e.to_string()));
                    }
                }
            }
        }
        Backend::Dev => {
            if let Some(state) = &w.dev.state_file {
                if state.exists() {
                    readable(state, "wallet.dev.state_file", out);
                }
            }
        }
    }
}

fn tls(config: &Config, out: &mut Vec<ConfigError>) {
    let t = &config.tls;
    for (i, root) in t.upstream_roots.iter().enumerate() {
        certificates(root, &format!("tls.upstream_roots[{i}]"), out);
    }
    match (t.ca_cert.exists(), t.ca_key.exists()) {
        (true, true) => {
            if let Err(e) = crate::tls::CertificateAuthority::load_or_create(&t.ca_cert, &t.ca_key)
            {
                out.push(err(
                    "tls.ca_cert",
                    format!("the CA cannot be used: {e}; fix or remove both tls.ca_cert and tls.ca_key (a new CA is then created, and agents must trust it)"),
                ));
            }
        }
        (true, false) => out.push(err(
            "tls.ca_key",
            format!(
                "{} is missing while tls.ca_cert exists: restore the key, or remove both to create a new CA",
                t.ca_key.display()
            ),
        )),
        (false, true) => out.push(err(
            "tls.ca_cert",
            format!(
                "{} is missing while tls.ca_key exists: restore the certificate, or remove both to create a new CA",
                t.ca_cert.display()
            ),
        )),
        (false, false) => {} // created on first start
    }
}

fn store(config: &Config, out: &mut Vec<ConfigError>) {
    if config.store.backend != StoreBackend::Postgres {
        return;
    }
    let Some(pg) = &config.store.postgres else {
        return;
    };
    let field = if pg.url_env.is_some() {
        "store.postgres.url_env"
    } else {
        "store.postgres.url_file"
    };
    if pg.url_env.is_some() || pg.url_file.is_some() {
        match read_secret(pg.url_env.as_deref(), pg.url_file.as_deref(), field) {
            Ok(url) => {
                // The URL holds a password: the errors say what is wrong, never the URL.
                match super::postgres_url::resolve(&url, pg, field) {
                    Ok(target) => {
                        if pg.ca_file.is_none() {
                            if let Some(root) = &target.root {
                                certificates(root, "sslrootcert (in the database URL)", out);
                            }
                        }
                    }
                    Err(e) => out.push(e),
                }
            }
            Err(e) => out.push(e),
        }
    }
    if let Some(ca) = &pg.ca_file {
        certificates(ca, "store.postgres.ca_file", out);
    }
}
