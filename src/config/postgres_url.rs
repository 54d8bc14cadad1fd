//! What the PostgreSQL URL says about TLS, with libpq's meanings, and how it combines with
//! `store.postgres.tls` / `store.postgres.ca_file`.
//!
//! The URL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and
//! `sslrootcert` (a PEM file, or `system` for the public roots) are read and taken out before the
//! rest is handed to the driver (which knows neither `verify-*` nor `sslrootcert`). Invariants:
//!
//! - `store.postgres.tls`, when set, must equal the URL's `sslmode` when that is given too;
//!   otherwise the config is refused naming both. Unset, the URL's mode applies.
//! - Neither set: `verify-full`. (libpq's own default, `prefer`, silently falls back to plain
//!   TCP and verifies nothing; this connection carries every payment's reservation, so an
//!   impostor or a reader on the path must not be possible unless the operator says so.)
//! - `ca_file` and `sslrootcert` name one root: both set and different is refused.
//! - Errors never contain the URL (it holds the password).

use super::{err, ConfigError, PostgresConfig, PostgresTls};
use std::path::PathBuf;

/// The database connection the ledger makes: the driver's config without the TLS keywords,
/// the TLS mode, and the extra root trusted for the server's certificate.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host, port, user, password, database… as the URL says, `sslmode` not yet applied.
    pub config: tokio_postgres::Config,
    /// The effective TLS mode.
    pub tls: PostgresTls,
    /// `store.postgres.ca_file` or the URL's `sslrootcert` (a file), if any.
    pub root: Option<PathBuf>,
    /// Where the mode came from, for messages: `sslmode=… in the database URL`,
    /// `store.postgres.tls`, or the default.
    pub source: &'static str,
}

impl Target {
    /// Where to change the mode, for an error's fix.
    pub fn how_to_change(&self) -> &'static str {
        match self.source {
            SOURCE_URL => "change sslmode in the database URL (and store.postgres.tls, if set)",
            SOURCE_CONFIG => "change store.postgres.tls (or set sslmode in the database URL and leave store.postgres.tls out)",
            _ => "set sslmode in the database URL or store.postgres.tls",
        }
    }
}

const SOURCE_URL: &str = "sslmode in the database URL";
const SOURCE_CONFIG: &str = "store.postgres.tls";
const SOURCE_DEFAULT: &str =
    "the default (neither store.postgres.tls nor sslmode in the URL is set)";

/// The URL's TLS keywords, and the URL without them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Split {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    unsupported: Vec<String>,
}

/// Keywords libpq knows that we refuse rather than ignore.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// Reads `url` with `pg`'s TLS settings. `field` names where the URL came from
/// (`store.postgres.url_env` / `url_file`) for errors about the URL itself.
pub fn resolve(url: &str, pg: &PostgresConfig, field: &str) -> Result<Target, ConfigError> {
    let split = split(url.trim());
    if let Some(key) = split.unsupported.first() {
        return Err(err(
            field,
            format!("the database URL sets {key}: client certificates are not supported; authenticate with a password in the URL"),
        ));
    }
    let url_mode = match split.sslmode.as_deref() {
        None => None,
        Some("allow") => {
            return Err(err(
                field,
                "the database URL says sslmode=allow (plain first, TLS only if refused), which is not supported: use sslmode=prefer or sslmode=disable",
            ))
        }
        Some(mode) => Some(parse_mode(mode).ok_or_else(|| {
            err(
                field,
                format!("the database URL says sslmode={mode}; expected disable, prefer, require, verify-ca or verify-full"),
            )
        })?),
    };
    let (tls, source) = match (url_mode, pg.tls) {
        (Some(u), Some(c)) if u != c => {
            return Err(err(
                "store.postgres.tls",
                format!(
                    "is {} but the database URL ({field}) says sslmode={}: make them agree, or leave store.postgres.tls out to follow the URL",
                    c.name(),
                    u.name()
                ),
            ))
        }
        (Some(u), _) => (u, SOURCE_URL),
        (None, Some(c)) => (c, SOURCE_CONFIG),
        (None, None) => (PostgresTls::VerifyFull, SOURCE_DEFAULT),
    };
    let url_root = match split.sslrootcert.as_deref() {
        None => None,
        Some("system") => {
            if tls != PostgresTls::VerifyFull {
                return Err(err(
                    field,
                    format!("the database URL says sslrootcert=system with TLS mode {}: as in libpq, the public roots go with sslmode=verify-full only", tls.name()),
                ));
            }
            None
        }
        Some(path) => Some(PathBuf::from(path)),
    };
    let root = match (&pg.ca_file, url_root) {
        (Some(file), Some(url)) if *file != url => {
            return Err(err(
                "store.postgres.ca_file",
                format!(
                    "is {} but the database URL ({field}) says sslrootcert={}: name the database's CA once (or the same file in both)",
                    file.display(),
                    url.display()
                ),
            ))
        }
        (Some(file), _) => Some(file.clone()),
        (None, url) => url,
    };
    let config = split.rest.parse::<tokio_postgres::Config>().map_err(|e| {
        err(
            field,
            format!("the database URL does not parse ({e}); expected postgres://user:password@host:5432/db"),
        )
    })?;
    Ok(Target {
        config,
        tls,
        root,
        source,
    })
}

fn parse_mode(mode: &str) -> Option<PostgresTls> {
    Some(match mode {
        "disable" => PostgresTls::Disable,
        "prefer" => PostgresTls::Prefer,
        "require" => PostgresTls::Require,
        "verify-ca" => PostgresTls::VerifyCa,
        "verify-full" => PostgresTls::VerifyFull,
        _ => return None,
    })
}

/// Takes the TLS keywords out of a URI (`postgres://…?k=v&…`) or a key/value string
/// (`host=… sslmode=…`).
fn split(url: &str) -> Split {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_uri(url)
    } else {
        split_key_values(url)
    }
}

fn split_uri(url: &str) -> Split {
    let mut out = Split::default();
    let Some((base, query)) = url.split_once('?') else {
        out.rest = url.to_string();
        return out;
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        if !take(&mut out, key, value) {
            kept.push(pair);
        }
    }
    out.rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    out
}

/// Records `key`'s value if it is a TLS keyword; false if the pair stays in the URL.
fn take(out: &mut Split, key: &str, value: String) -> bool {
    match key {
        "sslmode" => out.sslmode = Some(value),
        "sslrootcert" => out.sslrootcert = Some(value),
        k if UNSUPPORTED.contains(&k) => out.unsupported.push(k.to_string()),
        _ => return false,
    }
    true
}

/// `key = value` pairs separated by spaces; a value may be single-quoted with `\'` and `\\`
/// escapes (libpq's syntax). What is not understood is kept whole for the driver to judge.
fn split_key_values(text: &str) -> Split {
    let mut out = Split::default();
    let mut kept: Vec<&str> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            // Not key=value: leave the rest to the driver's parser and its error.
            kept.push(&text[start..]);
            break;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value = String::from_utf8_lossy(&value).into_owned();
        if !take(&mut out, key, value) {
            kept.push(&text[start..i]);
        }
    }
    out.rest = kept.join(" ");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(tls: Option<PostgresTls>, ca: Option<&str>) -> PostgresConfig {
        PostgresConfig {
            url_env: Some("L402_STORE_URL".into()),
            url_file: None,
            tls,
            ca_file: ca.map(PathBuf::from),
            pool_size: 8,
        }
    }

    const F: &str = "store.postgres.url_env";

    #[test]
    fn every_libpq_mode_is_read_and_taken_out_of_the_url() {
        for (mode, want) in [
            ("disable", PostgresTls::Disable),
            ("prefer", PostgresTls::Prefer),
            ("require", PostgresTls::Require),
            ("verify-ca", PostgresTls::VerifyCa),
            ("verify-full", PostgresTls::VerifyFull),
        ] {
            let url =
                format!("postgres://u:p@db.internal:5432/l402?sslmode={mode}&connect_timeout=5");
            let t = resolve(&url, &pg(None, None), F).unwrap();
            assert_eq!(t.tls, want, "{mode}");
            assert_eq!(t.source, SOURCE_URL);
            assert_eq!(
                t.config.get_connect_timeout(),
                Some(&std::time::Duration::from_secs(5))
            );
            let kv = format!("host=db.internal user=u sslmode = '{mode}' dbname=l402");
            assert_eq!(resolve(&kv, &pg(None, None), F).unwrap().tls, want);
        }
        let t = resolve("postgres://u@h/db", &pg(None, None), F).unwrap();
        assert_eq!((t.tls, t.source), (PostgresTls::VerifyFull, SOURCE_DEFAULT));
        let t = resolve(
            "postgres://u@h/db",
            &pg(Some(PostgresTls::Disable), None),
            F,
        )
        .unwrap();
        assert_eq!((t.tls, t.source), (PostgresTls::Disable, SOURCE_CONFIG));
    }

    #[test]
    fn a_disagreement_is_refused_naming_both() {
        let e = resolve(
            "postgres://u:secret@h/db?sslmode=disable",
            &pg(Some(PostgresTls::VerifyFull), None),
            F,
        )
        .unwrap_err();
        assert_eq!(e.field, "store.postgres.tls");
        assert!(e.problem.contains("verify-full"), "{e}");
        assert!(e.problem.contains("sslmode=disable"), "{e}");
        assert!(!e.to_string().contains("secret"));
        // Agreeing is fine.
        let t = resolve(
            "postgres://u@h/db?sslmode=require",
            &pg(Some(PostgresTls::Require), None),
            F,
        )
        .unwrap();
        assert_eq!(t.tls, PostgresTls::Require);
    }

    #[test]
    fn sslrootcert_and_ca_file_name_one_root() {
        let t = resolve(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=%2Fetc%2Fdb-ca.pem",
            &pg(None, None),
            F,
        )
        .unwrap();
        assert_eq!(t.root, Some(PathBuf::from("/etc/db-ca.pem")));
        let e = resolve(
            "postgres://u@h/db?sslrootcert=/a.pem",
            &pg(None, Some("/b.pem")),
            F,
        )
        .unwrap_err();
        assert_eq!(e.field, "store.postgres.ca_file");
        assert!(e.problem.contains("sslrootcert=/a.pem"), "{e}");
        let t = resolve("postgres://u@h/db?sslrootcert=system", &pg(None, None), F).unwrap();
        assert_eq!((t.tls, t.root), (PostgresTls::VerifyFull, None));
        assert!(resolve(
            "postgres://u@h/db?sslmode=require&sslrootcert=system",
            &pg(None, None),
            F
        )
        .is_err());
    }

    #[test]
    fn unknown_and_unsupported_modes_are_refused() {
        for url in [
            "postgres://u@h/db?sslmode=allow",
            "postgres://u@h/db?sslmode=verify_full",
            "postgres://u@h/db?sslcert=/c.pem",
            "host=h sslkey=/k.pem",
        ] {
            let e = resolve(url, &pg(None, None), F).unwrap_err();
            assert_eq!(e.field, F, "{url}");
        }
    }
}
