//! Which ledger a test's proxy keeps: the embedded SQLite file, or a throw-away PostgreSQL
//! cluster on 127.0.0.1. Money tests run their bodies once per store; the other end-to-end
//! tests run on SQLite, and on PostgreSQL when `L402_TEST_STORE=postgres` is set (`.ci/run`
//! runs the budget, guardrail and dialect suites that way too).

use super::pg_server::PgServer;
use super::TempDir;

/// A store kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    /// The store the environment asks for (`L402_TEST_STORE=postgres`), SQLite otherwise.
    pub fn from_env() -> Store {
        match std::env::var("L402_TEST_STORE").as_deref() {
            Ok("postgres") => Store::Postgres,
            _ => Store::Sqlite,
        }
    }
}

/// What backs a store for as long as it lives: nothing for SQLite (the harness's `ledger.db`),
/// a running cluster and the file holding its URL for PostgreSQL.
pub struct Backing {
    /// The `store:` value for the config (`None`: the harness's default SQLite file).
    pub yaml: Option<String>,
    pg: Option<PgServer>,
    _url_dir: Option<TempDir>,
}

impl Backing {
    /// The PostgreSQL server, when this is one.
    pub fn pg(&self) -> Option<&PgServer> {
        self.pg.as_ref()
    }
}

/// A fresh store of `kind`.
pub fn backing(kind: Store) -> Backing {
    match kind {
        Store::Sqlite => Backing {
            yaml: None,
            pg: None,
            _url_dir: None,
        },
        Store::Postgres => {
            let pg = PgServer::start();
            let dir = super::temp_dir("pg-url");
            let file = dir.join("store-url");
            std::fs::write(&file, pg.url()).expect("write the store URL");
            Backing {
                yaml: Some(format!(
                    "{{ backend: postgres, postgres: {{ url_file: \"{}\", tls: disable }} }}",
                    file.display()
                )),
                pg: Some(pg),
                _url_dir: Some(dir),
            }
        }
    }
}
