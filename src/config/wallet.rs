//! `wallet:` — the backend that pays (LNbits, LND, CLN, NWC, the dev wallet), its network,
//! and the fee and time one payment may take.

use super::{err, one_secret_source, Config, ConfigError};
use crate::invoice::Network;
use serde::Deserialize;
use std::path::PathBuf;

/// The Lightning backend that pays (`wallet.backend`); only its own section of
/// [`WalletConfig`] is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// LND's REST gateway (`wallet.lnd`): a macaroon, usually with LND's pinned `tls.cert`.
    Lnd,
    /// Core Lightning's clnrest plugin (`wallet.cln`): a rune.
    Cln,
    /// An LNbits wallet (`wallet.lnbits`): its admin key.
    Lnbits,
    /// Nostr Wallet Connect, NIP-47 (`wallet.nwc`): a connection URI holding a spending key.
    Nwc,
    /// The built-in simulated wallet (`wallet.dev`): pays dev invoices only, moves no money.
    Dev,
}

impl Backend {
    /// The value of `wallet.backend` that selects it (`lnd`, `cln`, `lnbits`, `nwc`, `dev`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Lnd => "lnd",
            Backend::Cln => "cln",
            Backend::Lnbits => "lnbits",
            Backend::Nwc => "nwc",
            Backend::Dev => "dev",
        }
    }
}

/// `wallet:` (required) — which backend pays, on which network, within what fee and time per
/// payment. Changes need a restart.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalletConfig {
    /// `lnd | cln | lnbits | nwc | dev` (required). The section of the same name is then
    /// required too (`dev`'s has defaults); the others are ignored.
    pub backend: Backend,
    /// The network the node pays on: bitcoin | testnet | signet | regtest. Invoices for any
    /// other network are refused. Default: regtest for `dev`, bitcoin otherwise.
    pub network: Option<String>,
    /// `wallet.lnbits:` — read only with `backend: lnbits`, which requires it.
    pub lnbits: Option<LnbitsConfig>,
    /// `wallet.lnd:` — read only with `backend: lnd`, which requires it.
    pub lnd: Option<LndConfig>,
    /// `wallet.cln:` — read only with `backend: cln`, which requires it.
    pub cln: Option<ClnConfig>,
    /// `wallet.nwc:` — read only with `backend: nwc`, which requires it.
    pub nwc: Option<NwcConfig>,
    /// `wallet.dev:` — read only with `backend: dev`. Absent: 1 000 000 sats, no delay, no fee,
    /// the built-in secret, in memory only.
    #[serde(default)]
    pub dev: DevWalletConfig,
    /// The most routing fee one payment may cost, in sats (default 10). The wallet is given it
    /// as its fee limit, and every payment reserves its amount plus this against each budget
    /// until it settles; the unused part is then given back.
    #[serde(default = "default_max_fee")]
    pub max_fee_sats: crate::core::Sats,
    /// Seconds a payment may take to settle (default 60, at least 1). Past it the outcome is
    /// unknown: the payment stays reserved and is only ever looked up, never sent again.
    #[serde(default = "default_payment_timeout")]
    pub payment_timeout_secs: u64,
}

fn default_max_fee() -> crate::core::Sats {
    crate::core::Sats::new(10)
}
fn default_payment_timeout() -> u64 {
    60
}

/// `wallet.lnbits:` — an LNbits wallet, paid from with its admin key (an invoice key cannot
/// pay). Exactly one of `admin_key_env` and `admin_key_file` is required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LnbitsConfig {
    /// The LNbits base URL, http(s) (`http://127.0.0.1:5000`; a path prefix is kept). Required.
    pub url: String,
    /// Environment variable holding the admin key (read at start, trimmed, never logged).
    pub admin_key_env: Option<String>,
    /// File holding the admin key, instead of `admin_key_env`.
    pub admin_key_file: Option<PathBuf>,
}

/// `wallet.lnd:` — LND over its REST gateway (see [`crate::wallet::lnd`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LndConfig {
    /// LND's REST listener, http(s) (`https://127.0.0.1:8080`). Required.
    pub url: String,
    /// The macaroon (binary as LND writes it, or hex), sent on every call. Required; least
    /// privilege is SendPaymentV2, TrackPaymentV2 and ChannelBalance (or
    /// `offchain:read offchain:write`).
    pub macaroon_file: PathBuf,
    /// LND's `tls.cert`, pinned as the only certificate trusted for the node. Absent: the
    /// public web roots (an LND behind a publicly issued certificate).
    pub tls_cert_file: Option<PathBuf>,
}

/// `wallet.cln:` — Core Lightning over clnrest (see [`crate::wallet::cln`]). Exactly one of
/// `rune_env` and `rune_file` is required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClnConfig {
    /// The clnrest base URL, http(s) (`https://127.0.0.1:3010`). Required.
    pub url: String,
    /// Environment variable holding the rune (least privilege: `pay`, `listpays`, and
    /// `listfunds` for the balance). Read at start, trimmed, never logged.
    pub rune_env: Option<String>,
    /// File holding the rune, instead of `rune_env`.
    pub rune_file: Option<PathBuf>,
    /// clnrest's CA certificate (`ca.pem` in clnrest's certificate directory), pinned. Absent:
    /// the public web roots.
    pub tls_cert_file: Option<PathBuf>,
    /// The node's id (66 hex characters, `lightning-cli getinfo`), sent as the `Nodeid` header:
    /// required by the Python clnrest of CLN v23.08 (it answers "Not authorized: Missing
    /// nodeid" without it), ignored by later releases. Optional.
    pub nodeid: Option<String>,
}

/// `wallet.nwc:` — Nostr Wallet Connect (NIP-47). The connection URI
/// (`nostr+walletconnect://<wallet pubkey>?relay=…&secret=…`) holds a key that can spend, so it
/// comes from the environment or a file: exactly one of `uri_env` and `uri_file` is required.
/// NIP-47 sends no fee limit: set the connection's budget and fee cap in the wallet.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NwcConfig {
    /// Environment variable holding the connection URI (read at start, never logged).
    pub uri_env: Option<String>,
    /// File holding the connection URI, instead of `uri_env`.
    pub uri_file: Option<PathBuf>,
}

/// The built-in simulated wallet: pays invoices minted with the same `secret` (the demo seller's
/// and test sellers'), so the whole flow runs without a node. Never moves real money.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevWalletConfig {
    /// The simulated balance at start, in sats (default 1 000 000). Each payment's amount and
    /// fee are debited from it; with a `state_file`, so are the payments it journaled earlier.
    #[serde(default = "default_dev_balance")]
    pub balance_sats: crate::core::Sats,
    /// Simulated time a payment takes.
    #[serde(default)]
    pub pay_delay_ms: u64,
    /// Shared with the dev sellers: the preimage of a dev invoice is HMAC(secret, payment secret).
    #[serde(default = "default_dev_secret")]
    pub secret: String,
    /// Simulated routing fee, in msat per payment.
    #[serde(default)]
    pub fee_msat: u64,
    /// Where the simulated network journals payments, so they outlive the proxy process (as a
    /// real node's would) and are found by lookup after a restart. Absent: in memory only.
    pub state_file: Option<PathBuf>,
}

fn default_dev_balance() -> crate::core::Sats {
    crate::core::Sats::new(1_000_000)
}
/// `wallet.dev.secret` when absent, `l402-proxy-dev`: also the demo seller's, so the demo runs
/// with no configuration. Being public it protects nothing, which is fine: dev invoices move no
/// money.
pub fn default_dev_secret() -> String {
    "l402-proxy-dev".to_string()
}

impl Default for DevWalletConfig {
    fn default() -> Self {
        DevWalletConfig {
            balance_sats: default_dev_balance(),
            pay_delay_ms: 0,
            secret: default_dev_secret(),
            fee_msat: 0,
            state_file: None,
        }
    }
}

impl WalletConfig {
    /// Problems of `wallet.network` and of the backend's own section (`wallet.lnd`, …).
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if let Some(n) = &self.network {
            note(n.parse::<Network>().map(|_| ()).map_err(|_| {
                err(
                    "wallet.network",
                    format!("unknown network {n:?}; use bitcoin, testnet, signet or regtest"),
                )
            }));
        }
        let w = self;
        let need = |present: bool, field: &str| {
            if present {
                Ok(())
            } else {
                Err(err(
                    field,
                    format!("missing, but wallet.backend is {}", w.backend.name()),
                ))
            }
        };
        match w.backend {
            Backend::Lnbits => {
                note(need(w.lnbits.is_some(), "wallet.lnbits"));
                if let Some(l) = &w.lnbits {
                    note(check_url(&l.url, "wallet.lnbits.url"));
                    note(one_secret_source(
                        l.admin_key_env.is_some(),
                        l.admin_key_file.is_some(),
                        "wallet.lnbits.admin_key_env",
                    ));
                }
            }
            Backend::Lnd => {
                note(need(w.lnd.is_some(), "wallet.lnd"));
                if let Some(l) = &w.lnd {
                    note(check_url(&l.url, "wallet.lnd.url"));
                }
            }
            Backend::Cln => {
                note(need(w.cln.is_some(), "wallet.cln"));
                if let Some(c) = &w.cln {
                    note(check_url(&c.url, "wallet.cln.url"));
                    if let Some(id) = &c.nodeid {
                        let hex_id = id.len() == 66 && id.bytes().all(|b| b.is_ascii_hexdigit());
                        if !hex_id {
                            note(Err(err(
                                "wallet.cln.nodeid",
                                format!(
                                    "{id:?} is not a node id (66 hex characters, the `id` \
                                     `lightning-cli getinfo` prints)"
                                ),
                            )));
                        }
                    }
                    note(one_secret_source(
                        c.rune_env.is_some(),
                        c.rune_file.is_some(),
                        "wallet.cln.rune_env",
                    ));
                }
            }
            Backend::Nwc => {
                note(need(w.nwc.is_some(), "wallet.nwc"));
                if let Some(n) = &w.nwc {
                    note(one_secret_source(
                        n.uri_env.is_some(),
                        n.uri_file.is_some(),
                        "wallet.nwc.uri_env",
                    ));
                }
            }
            Backend::Dev => {
                if w.dev.secret.is_empty() {
                    note(Err(err("wallet.dev.secret", "must not be empty")));
                }
            }
        }
        out
    }

    /// Problems of `wallet.payment_timeout_secs` (listed after `store:`'s, as they always were).
    pub(super) fn timeout_problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if self.payment_timeout_secs == 0 {
            note(Err(err(
                "wallet.payment_timeout_secs",
                "must be at least 1",
            )));
        }
        out
    }
}

impl Config {
    /// The network invoices must be for.
    pub fn network(&self) -> Network {
        self.wallet
            .network
            .as_deref()
            .and_then(|n| n.parse().ok())
            .unwrap_or(match self.wallet.backend {
                Backend::Dev => Network::Regtest,
                _ => Network::Bitcoin,
            })
    }
}

fn check_url(url: &str, field: &str) -> Result<(), ConfigError> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(err(field, format!("{url:?} is not an http(s) URL"))),
    }
}
