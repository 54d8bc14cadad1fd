//! `store:` — where the ledger lives: SQLite, or PostgreSQL with its URL, TLS and pool.

use super::{err, one_secret_source, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Where the money authority lives: the ledger of payments, reservations, tokens and declines.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (embedded, one process) or `postgres` (shared by every replica and sidecar).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The SQLite file (`backend: sqlite`).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// The PostgreSQL connection (`backend: postgres`).
    pub postgres: Option<PostgresConfig>,
    /// How long payments and declines are kept (unset: forever).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `store.retention:` — old payments and declines leave the ledger, online and in small
/// batches, after being appended to an archive when `archive_dir` is set. What budgets read is
/// kept: the `total` limit counts removed payments through per-(agent, origin, day) rollups,
/// the price-jump guard through the price memory, and no payment inside a budget window (the
/// current week and month) is ever removed, nor a pending one, nor one whose credential may
/// still be used.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Payments older than this many days are compacted; at least 31 (a monthly window).
    pub payments_days: Option<u32>,
    /// Declines older than this many days are removed; at least 1.
    pub declines_days: Option<u32>,
    /// A directory where removed rows are appended first (`payments.jsonl`, `declines.jsonl`).
    pub archive_dir: Option<PathBuf>,
    /// Seconds between compaction runs (3600).
    pub every_secs: Option<u64>,
    /// Rows removed per batch (500): each batch is one short transaction.
    pub batch: Option<usize>,
}

/// The shortest `store.retention.payments_days` accepted: the longest budget window, a calendar
/// month, lasts up to 31 days.
pub const MIN_PAYMENTS_DAYS: u32 = 31;

impl RetentionConfig {
    /// Whether anything is ever removed.
    pub fn enabled(&self) -> bool {
        self.payments_days.is_some() || self.declines_days.is_some()
    }

    /// Seconds between runs.
    pub fn every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.every_secs.unwrap_or(3600).max(1))
    }

    /// Rows per batch.
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(500)
    }

    fn problems(&self, out: &mut Vec<ConfigError>) {
        if let Some(days) = self.payments_days {
            if days < MIN_PAYMENTS_DAYS {
                out.push(err(
                    "store.retention.payments_days",
                    format!(
                        "{days} days is shorter than the longest budget window (a calendar month, up to \
                         {MIN_PAYMENTS_DAYS} days), whose totals read the payments: set it to \
                         {MIN_PAYMENTS_DAYS} or more, or remove it to keep payments forever"
                    ),
                ));
            }
        }
        if self.declines_days == Some(0) {
            out.push(err(
                "store.retention.declines_days",
                "must be at least 1 (or removed to keep declines forever)",
            ));
        }
        if matches!(self.batch, Some(b) if b == 0 || b > 10_000) {
            out.push(err("store.retention.batch", "must be between 1 and 10000"));
        }
        if self.every_secs == Some(0) {
            out.push(err("store.retention.every_secs", "must be at least 1"));
        }
        if !self.enabled() && (self.archive_dir.is_some() || self.every_secs.is_some()) {
            out.push(err(
                "store.retention",
                "archive_dir or every_secs set without payments_days or declines_days: nothing \
                 would be removed; set store.retention.payments_days (31 or more) or declines_days",
            ));
        }
    }
}

/// Which ledger implementation holds the money authority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// An embedded SQLite file: one proxy process owns it.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every replica pointing at it.
    Postgres,
}

impl StoreBackend {
    /// The name used in the config file and in logs.
    pub fn name(self) -> &'static str {
        match self {
            StoreBackend::Sqlite => "sqlite",
            StoreBackend::Postgres => "postgres",
        }
    }
}

/// How to reach the shared PostgreSQL ledger. The URL holds a password, so it comes from an
/// environment variable or a file, never from the config itself.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Environment variable holding `postgres://user:password@host:5432/db`.
    pub url_env: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// libpq's `sslmode` values: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    /// Unset: the URL's `sslmode`, else `verify-full`. Set together with the URL's `sslmode`,
    /// the two must agree (see [`postgres_url`](super::postgres_url)).
    #[serde(default)]
    pub tls: Option<PostgresTls>,
    /// Extra PEM file trusted for the database's certificate (a private CA); the URL's
    /// `sslrootcert` says the same (both set must name the same file).
    pub ca_file: Option<PathBuf>,
    /// Connections kept open to the database per proxy process.
    #[serde(default = "default_pg_pool")]
    pub pool_size: usize,
}

fn default_pg_pool() -> usize {
    8
}

/// TLS towards PostgreSQL, with libpq's `sslmode` names and meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// TLS with the certificate chain (public roots plus the CA file) and the host name
    /// verified.
    #[default]
    VerifyFull,
    /// TLS with the certificate chain verified, any host name.
    VerifyCa,
    /// TLS required; the certificate is verified (as `verify-ca`) only when a CA file is given
    /// (`ca_file` or `sslrootcert`), as libpq does with a root certificate present.
    Require,
    /// TLS when the server offers it, plain TCP otherwise; nothing verified.
    Prefer,
    /// Plain TCP: only for a database on the same host or a private network.
    Disable,
}

impl PostgresTls {
    /// The libpq / config name (`verify-full` …).
    pub fn name(self) -> &'static str {
        match self {
            PostgresTls::VerifyFull => "verify-full",
            PostgresTls::VerifyCa => "verify-ca",
            PostgresTls::Require => "require",
            PostgresTls::Prefer => "prefer",
            PostgresTls::Disable => "disable",
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data/l402-proxy.db")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: default_store_path(),
            postgres: None,
            retention: RetentionConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if self.backend == StoreBackend::Postgres {
            match &self.postgres {
                None => note(Err(err(
                    "store.postgres",
                    "missing, but store.backend is postgres: set store.postgres.url_env (or url_file)",
                ))),
                Some(pg) => {
                    note(one_secret_source(
                        pg.url_env.is_some(),
                        pg.url_file.is_some(),
                        "store.postgres.url_env",
                    ));
                    if pg.pool_size == 0 || pg.pool_size > 256 {
                        note(Err(err(
                            "store.postgres.pool_size",
                            "must be between 1 and 256",
                        )));
                    }
                }
            }
        }
        self.retention.problems(&mut out);
        out
    }
}
