//! YAML → typed configuration. Every error names the field path and the problem, so an
//! operator can fix the file without reading code. Unknown keys are errors (typos fail loudly).
//! [`check`] finds everything `run` would refuse — the file's own problems and what
//! [`preflight`] finds in the environment — all at once, before anything is created.

pub mod postgres_url;
pub mod preflight;

use crate::invoice::Network;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, with the dotted path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted path of the key at fault (`wallet.lnd.url`, `agents[0].limits.daily_sats`);
    /// empty when the problem is the file as a whole (unreadable, not YAML).
    pub field: String,
    /// What is wrong, in words for the operator, usually with the fix.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "config: {}", self.problem)
        } else {
            write!(f, "config field `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The whole configuration file. Only `wallet` is required; every other key has a default,
/// given on its field. Unknown keys are errors. [`Config::load`] resolves relative paths against
/// the file's directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where agents connect (their HTTP_PROXY / HTTPS_PROXY).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `admin:` — the admin API, dashboard, `/metrics` and probes. Absent: no admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `mcp:` — the agents' MCP server. It is always reachable through the proxy at
    /// `http://l402-proxy.local/mcp`; `mcp.listen` adds a listener of its own. Absent: none.
    #[serde(default)]
    pub mcp: McpConfig,
    /// `tls:` — the interception CA, which hosts are intercepted, extra upstream roots. Absent:
    /// the CA in `data/ca.pem` and `data/ca-key.pem`, every host intercepted.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `guard:` — the destination guard against SSRF. Absent: loopback, private, link-local and
    /// metadata destinations are refused, with no exception.
    #[serde(default)]
    pub guard: GuardConfig,
    /// `wallet:` (required) — the backend that pays, its network, and the fee and time one
    /// payment may take.
    pub wallet: WalletConfig,
    /// `store:` — where the ledger lives. Absent: SQLite in `data/l402-proxy.db`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `http:` — replay buffering, timeouts and connection caps. Absent: each key's default.
    #[serde(default)]
    pub http: HttpConfig,
    /// Which 402 dialects are paid, in order of preference.
    #[serde(default)]
    pub pay: PayConfig,
    /// `agents:` — the agents the file defines (applied again on SIGHUP). Absent: none from the
    /// file; agents made through the admin API still authenticate.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Caps over all agents together (same keys as an agent's limits).
    #[serde(default)]
    pub operator_limits: Limits,
    /// `log:` — the log format. Absent: `text`.
    #[serde(default)]
    pub log: LogConfig,
    /// How payments above `approve_above_sats` wait for the operator.
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// Budget thresholds, the low-wallet level and the webhooks events go to.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
    /// On SIGTERM: how long open connections and in-flight payments may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_grace() -> u64 {
    30
}

/// `approval:` — how long a held payment waits for the operator's decision.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Seconds a payment above `approve_above_sats` waits (the agent's request with it); the
    /// invoice's expiry shortens the wait. Unanswered: declined `approval-timeout`.
    #[serde(default = "default_approval_timeout")]
    pub timeout_secs: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            timeout_secs: default_approval_timeout(),
        }
    }
}

fn default_approval_timeout() -> u64 {
    120
}

/// `log:` — the shape of the proxy's log lines.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (readable, the default) or `json` (one object per line); `--log-format` overrides.
    #[serde(default)]
    pub format: LogFormat,
}

/// How a log line is written (`log.format`, overridden by `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8402))
}

/// `admin:` — the admin listener: the API under `/v1/*` (bearer token), the dashboard at `/`,
/// `/metrics` and the probes `/healthz` and `/readyz`. Without `listen` there is none; with it,
/// `token_env` or `token_file` is required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin API, /metrics and probes. Absent: no admin listener.
    pub listen: Option<SocketAddr>,
    /// The bearer token for `/v1/*`, from this environment variable…
    pub token_env: Option<String>,
    /// …or this file.
    pub token_file: Option<PathBuf>,
    /// When set, `/metrics` (which names agents and their spend) needs this bearer token (or
    /// the admin token). Unset, `/metrics` is open on a loopback `admin.listen` and needs the
    /// admin token anywhere else (unless `metrics_public`).
    #[serde(default)]
    pub metrics_token_env: Option<String>,
    /// The metrics token from a file instead.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// `/metrics` open without a token even when `admin.listen` is not loopback (for scrapers
    /// that cannot send one). Default false. Ignored when a metrics token is set.
    #[serde(default)]
    pub metrics_public: bool,
    /// Names (besides the listener's own address, and `localhost` on loopback) a request's
    /// `Host` may give: a Service or ingress name. Any other is answered `421`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Admin connections open at once; one more is closed at accept. Default 64.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

fn default_admin_max_connections() -> usize {
    crate::admin::gate::DEFAULT_MAX_CONNECTIONS
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token_env: None,
            token_file: None,
            metrics_token_env: None,
            metrics_token_file: None,
            metrics_public: false,
            hosts: Vec::new(),
            max_connections: default_admin_max_connections(),
        }
    }
}

/// `mcp:` — the MCP server agents (language models) call for their balance, quotes, paid
/// fetches and history. Through the proxy it needs no setting; `listen` serves it on its own
/// address too, for MCP hosts that cannot use a proxy (`Authorization: Bearer <agent>:<key>`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Where the MCP listener binds (path `/mcp`). Absent (the default): no listener of its
    /// own; the server stays reachable through the proxy.
    pub listen: Option<SocketAddr>,
}

/// `tls:` — TLS interception: the CA that signs a certificate for each intercepted host, which
/// CONNECTs are intercepted, and what upstream TLS (always verified) trusts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM) agents must trust for intercepted hosts. Default `data/ca.pem`.
    /// When neither it nor `ca_key` exists, both are created at start; one without the other is
    /// an error, never silently replaced.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM; created with mode 0600 alongside `ca_cert`). Default
    /// `data/ca-key.pem`.
    #[serde(default = "default_ca_key")]
    pub ca_key: PathBuf,
    /// Host globs whose TLS we terminate; every other CONNECT is tunnelled untouched.
    #[serde(default = "default_intercept")]
    pub intercept: Vec<String>,
    /// Extra PEM files trusted for upstream TLS, beside the public web roots.
    #[serde(default)]
    pub upstream_roots: Vec<PathBuf>,
}

fn default_ca_cert() -> PathBuf {
    PathBuf::from("data/ca.pem")
}
fn default_ca_key() -> PathBuf {
    PathBuf::from("data/ca-key.pem")
}
fn default_intercept() -> Vec<String> {
    vec!["*".to_string()]
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_cert: default_ca_cert(),
            ca_key: default_ca_key(),
            intercept: default_intercept(),
            upstream_roots: Vec::new(),
        }
    }
}

/// `guard:` — which destinations agents may reach, judged on the addresses DNS returns (see
/// [`crate::guard`]). Absent: every refused address stays refused, with no exception.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Allow loopback, private, link-local and metadata destinations (off by default: SSRF).
    #[serde(default)]
    pub allow_private: bool,
    /// `host:port` entries allowed even when they resolve to a refused address.
    #[serde(default)]
    pub allow: Vec<String>,
}

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
    pub max_fee_sats: u64,
    /// Seconds a payment may take to settle (default 60, at least 1). Past it the outcome is
    /// unknown: the payment stays reserved and is only ever looked up, never sent again.
    #[serde(default = "default_payment_timeout")]
    pub payment_timeout_secs: u64,
}

fn default_max_fee() -> u64 {
    10
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
    pub balance_sats: u64,
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

fn default_dev_balance() -> u64 {
    1_000_000
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
    /// the two must agree (see [`postgres_url`]).
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
        }
    }
}

/// How 402s are paid.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PayConfig {
    /// The dialects paid and, in this order, which one is preferred when a 402 offers several
    /// (one 402 is paid once, whatever it offers). Default `[l402, payment]`.
    #[serde(default = "PayScheme::defaults")]
    pub schemes: Vec<PayScheme>,
    /// Announce on requests the proxy sees into (plain HTTP, intercepted HTTPS) what it can pay,
    /// with MPP's `Accept-Payment: lightning/charge` (when `payment` is paid and the agent sent
    /// none). Default off.
    #[serde(default)]
    pub accept_payment: bool,
}

impl Default for PayConfig {
    fn default() -> Self {
        PayConfig {
            schemes: PayScheme::defaults(),
            accept_payment: false,
        }
    }
}

/// A 402 dialect the proxy can pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayScheme {
    /// L402 (and LSAT): a macaroon and an invoice in `WWW-Authenticate`; a reusable token.
    L402,
    /// MPP `Payment` with the Lightning `charge` intent; single-use.
    Payment,
    /// x402 v2 `exact` on a Lightning network; single-use.
    X402,
}

impl PayScheme {
    /// Every dialect.
    pub const ALL: [PayScheme; 3] = [PayScheme::L402, PayScheme::Payment, PayScheme::X402];

    /// `[l402, payment]`: x402 is opt-in.
    pub fn defaults() -> Vec<PayScheme> {
        vec![PayScheme::L402, PayScheme::Payment]
    }

    /// The name in the config.
    pub fn name(self) -> &'static str {
        match self {
            PayScheme::L402 => "l402",
            PayScheme::Payment => "payment",
            PayScheme::X402 => "x402",
        }
    }
}

/// How requests are handled on the way through.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Request bodies up to this size are buffered so a paid request can be replayed; a larger
    /// body streams upstream and cannot be replayed (the agent gets the 402 with a reason).
    #[serde(default = "default_max_replay_body")]
    pub max_replay_body_bytes: usize,
    /// Time to connect to an upstream, in seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Idle keep-alive connections to upstreams are closed after this many seconds.
    #[serde(default = "default_pool_idle")]
    pub pool_idle_secs: u64,
    /// An agent's request head must arrive within this many seconds (slowloris), which also
    /// closes a keep-alive connection idle for that long.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// A tunnel (blind or intercepted) with no byte moving and no request in flight for this
    /// many seconds is closed.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout_secs: u64,
    /// The TLS handshake of an intercepted tunnel (from its first byte) must complete within.
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// An upstream must send its response head within this many seconds (504 otherwise).
    #[serde(default = "default_upstream_response_timeout")]
    pub upstream_response_timeout_secs: u64,
    /// Agent connections open at once, in all; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections per source address that have not yet sent valid proxy credentials; one more
    /// from that source closes the oldest of them (never a newcomer: an unauthenticated peer
    /// cannot keep an agent at the same address out).
    #[serde(default = "default_max_unauthenticated_per_source")]
    pub max_unauthenticated_per_source: usize,
    /// A new connection must send a request with valid proxy credentials within this many
    /// seconds of opening, or it is closed (idle, slow or credential-less peers).
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
}

fn default_auth_timeout() -> u64 {
    10
}

fn default_header_read_timeout() -> u64 {
    30
}
fn default_tunnel_idle_timeout() -> u64 {
    300
}
fn default_tls_handshake_timeout() -> u64 {
    10
}
fn default_upstream_response_timeout() -> u64 {
    300
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_unauthenticated_per_source() -> usize {
    256
}

fn default_max_replay_body() -> usize {
    1 << 20
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_pool_idle() -> u64 {
    90
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_replay_body_bytes: default_max_replay_body(),
            connect_timeout_secs: default_connect_timeout(),
            pool_idle_secs: default_pool_idle(),
            header_read_timeout_secs: default_header_read_timeout(),
            tunnel_idle_timeout_secs: default_tunnel_idle_timeout(),
            tls_handshake_timeout_secs: default_tls_handshake_timeout(),
            upstream_response_timeout_secs: default_upstream_response_timeout(),
            max_connections: default_max_connections(),
            max_unauthenticated_per_source: default_max_unauthenticated_per_source(),
            auth_timeout_secs: default_auth_timeout(),
        }
    }
}

/// One entry of `agents:`: an agent the config file defines. On SIGHUP changes reach open
/// connections too; a name also made through the admin API is the file's agent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The user name in `Proxy-Authorization: Basic base64(name:key)`.
    pub name: String,
    /// sha256 of the key, 64 hex characters (`l402-proxy hash-key` prints it).
    pub key_sha256: String,
    /// Its spending limits and guardrails. Absent: none of its own (`operator_limits` still
    /// apply).
    #[serde(default)]
    pub limits: Limits,
    /// The hosts it may pay. Absent: every host (`allow: ["*"]`, no deny).
    #[serde(default)]
    pub hosts: HostRules,
}

/// Spending limits in sats; an absent limit means none of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most one payment may be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request_sats: Option<u64>,
    /// Per calendar hour (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_sats: Option<u64>,
    /// Per calendar day (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_sats: Option<u64>,
    /// Per week (UTC, from Monday).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly_sats: Option<u64>,
    /// Per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_sats: Option<u64>,
    /// In total (the admin API can top it up or recall it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sats: Option<u64>,
    /// A payment above this many sats waits for the operator's approval
    /// (`GET /v1/approvals`, `POST /v1/approvals/{id}`), up to `approval.timeout_secs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_above_sats: Option<u64>,
    /// Requests through the proxy per minute (a token bucket; over it: 429 `rate-limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Payments per minute (a token bucket; over it: 429 `rate-limited`, nothing paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments_per_minute: Option<u32>,
    /// A new price more than this many per cent above the last price paid for the same
    /// service is refused (`price-jump`); absent = no check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_price_increase_pct: Option<u32>,
    /// The most connections the agent may hold open at once (over it: 429 at connect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

impl Limits {
    /// Values no operator means: `(field, problem and fix)` for each, fields relative to the
    /// limits object (`per_request_sats`, …).
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.per_request_sats == Some(0) {
            out.push((
                "per_request_sats",
                "0 would refuse every payment; remove the key for no limit (or pause the agent)",
            ));
        }
        if self.requests_per_minute == Some(0) {
            out.push((
                "requests_per_minute",
                "0 would refuse every request; remove the key for no limit (or pause the agent)",
            ));
        }
        if self.payments_per_minute == Some(0) {
            out.push((
                "payments_per_minute",
                "0 would refuse every payment; remove the key for no limit (or pause the agent)",
            ));
        }
        if self.max_connections == Some(0) {
            out.push((
                "max_connections",
                "0 would refuse every connection; remove the key for no limit",
            ));
        }
        out
    }

    /// No limit of any kind.
    pub const NONE: Limits = Limits {
        per_request_sats: None,
        hourly_sats: None,
        daily_sats: None,
        weekly_sats: None,
        monthly_sats: None,
        total_sats: None,
        approve_above_sats: None,
        requests_per_minute: None,
        payments_per_minute: None,
        max_price_increase_pct: None,
        max_connections: None,
    };
}

/// Which hosts an agent may pay: deny wins over allow.
///
/// Matching is on the destination's canonical form, never the text the agent wrote (see
/// [`crate::hosts`]): brackets and one trailing dot are removed, names are lower-cased, and an
/// IP literal is its address however it is spelled (`127.1`, `2130706433`, `0x7f.1`,
/// `0177.0.0.1`, `[::ffff:127.0.0.1]` are all `127.0.0.1`; an IPv4-mapped IPv6 address and its
/// IPv4 address are one). Entries are normalised the same way, so `127.1` in a rule is
/// `127.0.0.1` and `LOCALHOST.` is `localhost`. Each entry is one of:
/// - a name or glob (`api.example.com`, `*.example.com`: `*` is any run of characters, and
///   `*.example.com` does not match `example.com` itself), matched against the canonical name,
///   or the canonical text of an IP literal (`*` matches every host, `10.*` every 10/8 literal);
/// - an IP address, matched against IP-literal destinations in any spelling (not against the
///   addresses a name resolves to: write `127.0.0.1/32` for that);
/// - a CIDR (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1/32`), matched against the address the host is,
///   or for a name the addresses it resolves to (the resolver the destination guard uses):
///   a name is denied when ANY of its addresses is in a deny CIDR (or it cannot be resolved),
///   and is allowed by allow CIDRs only when ALL of its addresses are in them (a name matching
///   an allow glob is allowed whatever it resolves to).
///
/// Invalid entries are config errors (`agents[i].hosts.allow[j]`); rules that somehow skipped
/// validation fail closed (an unreadable deny entry refuses every host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostRules {
    /// Hosts it may pay: names, globs, IP addresses, CIDRs (default `["*"]`).
    #[serde(default = "default_intercept")]
    pub allow: Vec<String>,
    /// Hosts it may never pay (wins over allow): names, globs, IP addresses, CIDRs.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Default for HostRules {
    fn default() -> Self {
        HostRules {
            allow: default_intercept(),
            deny: Vec::new(),
        }
    }
}

impl HostRules {
    /// Whether `host` may be paid, without its addresses: a name that CIDR rules would need
    /// resolved is refused here (use [`HostRules::needs_addresses`] and
    /// [`HostRules::permits_resolved`]).
    pub fn permits(&self, host: &str) -> bool {
        self.permits_resolved(host, &[])
    }

    /// Whether deciding for `host` needs the addresses it resolves to (it is a name and CIDR
    /// rules could decide it).
    pub fn needs_addresses(&self, host: &str) -> bool {
        crate::hosts::Matcher::new(&self.allow, &self.deny).needs_addresses(host)
    }

    /// Whether `host` may be paid, `addrs` being what it resolved to (consulted for a name
    /// when CIDR rules exist; empty when not resolved).
    pub fn permits_resolved(&self, host: &str, addrs: &[std::net::IpAddr]) -> bool {
        crate::hosts::Matcher::new(&self.allow, &self.deny).permits(host, addrs)
    }

    /// Entries that are not a name, glob, IP address or CIDR: `(field, problem)`, fields
    /// relative to the rules (`allow[0]`, `deny[2]`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (j, entry) in entries.iter().enumerate() {
                if let Err(problem) = crate::hosts::Rule::parse(entry) {
                    out.push((format!("{list}[{j}]"), problem));
                }
            }
        }
        out
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths inside it are resolved
    /// against the file's directory, so a config works wherever the proxy is started from.
    /// Stops at the first problem; [`check`] lists every one.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        let mut config = Config::parse(&text)?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// Parses and validates YAML text (paths stay as written).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_unchecked(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text into a config without the checks serde cannot do.
    pub fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(yaml_error)
    }

    /// Resolves every relative path against `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.tls.ca_cert);
        fix(&mut self.tls.ca_key);
        self.tls.upstream_roots.iter_mut().for_each(fix);
        fix(&mut self.store.path);
        if let Some(pg) = self.store.postgres.as_mut() {
            pg.url_file.as_mut().map(fix);
            pg.ca_file.as_mut().map(fix);
        }
        if let Some(p) = self.wallet.dev.state_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.admin.token_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.admin.metrics_token_file.as_mut() {
            fix(p);
        }
        if let Some(l) = self.wallet.lnbits.as_mut() {
            l.admin_key_file.as_mut().map(fix);
        }
        if let Some(l) = self.wallet.lnd.as_mut() {
            fix(&mut l.macaroon_file);
            l.tls_cert_file.as_mut().map(fix);
        }
        if let Some(c) = self.wallet.cln.as_mut() {
            c.rune_file.as_mut().map(fix);
            c.tls_cert_file.as_mut().map(fix);
        }
        if let Some(n) = self.wallet.nwc.as_mut() {
            n.uri_file.as_mut().map(fix);
        }
        self.alerts.resolve_paths(dir);
    }

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

    /// Checks everything serde cannot: value ranges, uniqueness, cross-field rules. The first
    /// problem, if any (see [`Config::problems`] for all of them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem [`Config::validate`] knows, in file order.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        if let Some(n) = &self.wallet.network {
            note(n.parse::<Network>().map(|_| ()).map_err(|_| {
                err(
                    "wallet.network",
                    format!("unknown network {n:?}; use bitcoin, testnet, signet or regtest"),
                )
            }));
        }
        let w = &self.wallet;
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
        if self.store.backend == StoreBackend::Postgres {
            match &self.store.postgres {
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
        if w.payment_timeout_secs == 0 {
            note(Err(err(
                "wallet.payment_timeout_secs",
                "must be at least 1",
            )));
        }
        if self.admin.listen.is_some()
            && self.admin.token_env.is_none()
            && self.admin.token_file.is_none()
        {
            note(Err(err(
                "admin.token_env",
                "admin.listen is set, so a bearer token is required: set admin.token_env or admin.token_file",
            )));
        }
        if self.admin.max_connections == 0 {
            note(Err(err(
                "admin.max_connections",
                "must be at least 1 (the probes and the operator need a connection)",
            )));
        }
        for (i, host) in self.admin.hosts.iter().enumerate() {
            let h = host.trim();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                note(Err(err(
                    format!("admin.hosts[{i}]"),
                    format!("{host:?} is not a host name (give the name alone, e.g. l402-admin.example.internal)"),
                )));
            }
        }
        if self.admin.metrics_token_env.is_some() && self.admin.metrics_token_file.is_some() {
            note(Err(err(
                "admin.metrics_token_env",
                "set either admin.metrics_token_env or admin.metrics_token_file, not both",
            )));
        }
        for (i, entry) in self.guard.allow.iter().enumerate() {
            if split_host_port(entry).is_none() {
                note(Err(err(
                    format!("guard.allow[{i}]"),
                    format!("{entry:?} is not host:port"),
                )));
            }
        }
        for (i, scheme) in self.pay.schemes.iter().enumerate() {
            if self.pay.schemes[..i].contains(scheme) {
                note(Err(err(
                    format!("pay.schemes[{i}]"),
                    format!("{} is listed twice", scheme.name()),
                )));
            }
        }
        for (field, secs) in [
            ("http.connect_timeout_secs", self.http.connect_timeout_secs),
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            (
                "http.tunnel_idle_timeout_secs",
                self.http.tunnel_idle_timeout_secs,
            ),
            ("http.auth_timeout_secs", self.http.auth_timeout_secs),
            (
                "http.tls_handshake_timeout_secs",
                self.http.tls_handshake_timeout_secs,
            ),
            (
                "http.upstream_response_timeout_secs",
                self.http.upstream_response_timeout_secs,
            ),
        ] {
            if secs == 0 || secs > 86_400 {
                note(Err(err(field, "must be between 1 and 86400 seconds")));
            }
        }
        if self.http.max_connections == 0 {
            note(Err(err("http.max_connections", "must be at least 1")));
        }
        if self.http.max_unauthenticated_per_source == 0 {
            note(Err(err(
                "http.max_unauthenticated_per_source",
                "must be at least 1",
            )));
        }
        if self.http.max_replay_body_bytes > (256 << 20) {
            note(Err(err(
                "http.max_replay_body_bytes",
                "at most 268435456 (256 MiB)",
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let at = |f: &str| format!("agents[{i}].{f}");
            if let Err(problem) = check_agent_name(&a.name) {
                note(Err(err(at("name"), problem)));
            } else if !seen.insert(a.name.to_lowercase()) {
                // Unique without regard to case: `ALICE` beside `alice` would read as one agent
                // in every log, table and alert.
                note(Err(err(
                    at("name"),
                    format!(
                        "duplicate agent name {:?} (agent names are unique without regard to case)",
                        a.name
                    ),
                )));
            }
            if a.key_sha256.len() != 64 || !a.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                note(Err(err(
                    at("key_sha256"),
                    "must be 64 hex characters: the sha256 of the agent's key (`l402-proxy hash-key` prints it)",
                )));
            }
            for (field, problem) in a.limits.problems() {
                note(Err(err(at(&format!("limits.{field}")), problem)));
            }
            for (field, problem) in a.hosts.problems() {
                note(Err(err(at(&format!("hosts.{field}")), problem)));
            }
        }
        for (field, problem) in self.operator_limits.problems() {
            note(Err(err(format!("operator_limits.{field}"), problem)));
        }
        for (field, set) in [
            (
                "requests_per_minute",
                self.operator_limits.requests_per_minute.is_some(),
            ),
            (
                "max_connections",
                self.operator_limits.max_connections.is_some(),
            ),
        ] {
            if set {
                note(Err(err(
                    format!("operator_limits.{field}"),
                    "is per agent only: set it in each agent's limits (http.max_connections caps all connections)",
                )));
            }
        }
        for (field, problem) in self.alerts.validate() {
            note(Err(err(field, problem)));
        }
        if self.approval.timeout_secs == 0 || self.approval.timeout_secs > 86_400 {
            note(Err(err(
                "approval.timeout_secs",
                "must be between 1 and 86400 (a day); the agent's request waits this long",
            )));
        }
        out
    }
}

/// Whether `name` can be an agent's name: the user part of `Proxy-Authorization: Basic`, so
/// non-empty, at most 64 characters, no `:`, no control characters or spaces.
pub fn check_agent_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if name.contains(':') || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain ':', spaces or control characters");
    }
    Ok(())
}

/// Reads `path` and lists everything `run` would refuse: the YAML's own errors, every value
/// problem, then what [`preflight::check`] finds (unset secrets, unreadable files, a broken CA),
/// all at once. Creates nothing.
pub fn check(path: &Path) -> Result<Config, Vec<ConfigError>> {
    checked(path, true)
}

/// As [`check`], for the file alone: no look at the environment it will run in.
pub fn check_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    checked(path, false)
}

fn checked(path: &Path, environment: bool) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![err("", format!("cannot read {}: {e}", path.display()))])?;
    let mut config = Config::parse_unchecked(&text).map_err(|e| vec![e])?;
    if let Some(dir) = path.parent() {
        config.resolve_paths(dir);
    }
    let mut problems = config.problems();
    if environment {
        problems.extend(preflight::check(&config));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn check_url(url: &str, field: &str) -> Result<(), ConfigError> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(err(field, format!("{url:?} is not an http(s) URL"))),
    }
}

fn one_secret_source(env: bool, file: bool, field: &str) -> Result<(), ConfigError> {
    match (env, file) {
        (true, true) => Err(err(field, "set either the _env or the _file key, not both")),
        (false, false) => Err(err(
            field,
            "missing: name an environment variable (_env) or a file (_file)",
        )),
        _ => Ok(()),
    }
}

/// Splits `host:port` (IPv6 in brackets) into its parts.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

/// serde_yaml_ng messages already carry the field path ("agents[0]: missing field `name`");
/// lift it into our `field` so every config error reads the same way.
fn yaml_error(e: serde_yaml_ng::Error) -> ConfigError {
    let msg = e.to_string();
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => err(path, rest),
        _ => err("", msg),
    }
}

/// Reads a secret named by an `_env` or `_file` key. The value is trimmed; it is never logged.
pub fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    field: &str,
) -> Result<String, ConfigError> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            _ => Err(err(field, format!("environment variable {var} is not set"))),
        };
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|v| v.trim().to_string())
            .map_err(|e| err(field, format!("cannot read {}: {e}", path.display())));
    }
    Err(err(field, "no secret source configured"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn minimal() -> String {
        format!(
            "wallet: {{ backend: dev }}\nagents:\n  - name: research\n    key_sha256: \"{KEY}\"\n"
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&minimal()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8402".parse().unwrap());
        assert_eq!(c.tls.intercept, vec!["*"]);
        assert_eq!(c.network(), Network::Regtest);
        assert_eq!(c.wallet.max_fee_sats, 10);
        assert!(c.agents[0].hosts.permits("anything.example"));
    }

    #[test]
    fn unknown_key_names_the_field() {
        let e = Config::parse(&format!("{}    limts: {{}}\n", minimal())).unwrap_err();
        assert!(e.field.starts_with("agents[0]"), "{e}");
        assert!(e.problem.contains("limts"), "{e}");
    }

    #[test]
    fn bad_key_hash_names_the_field() {
        let e =
            Config::parse("wallet: {backend: dev}\nagents:\n  - {name: a, key_sha256: nothex}\n")
                .unwrap_err();
        assert_eq!(e.field, "agents[0].key_sha256");
    }

    #[test]
    fn duplicate_agents_refused() {
        let text = format!("wallet: {{backend: dev}}\nagents:\n  - {{name: a, key_sha256: \"{KEY}\"}}\n  - {{name: a, key_sha256: \"{KEY}\"}}\n");
        assert_eq!(Config::parse(&text).unwrap_err().field, "agents[1].name");
        let text = format!("wallet: {{backend: dev}}\nagents:\n  - {{name: alice, key_sha256: \"{KEY}\"}}\n  - {{name: ALICE, key_sha256: \"{KEY}\"}}\n");
        let e = Config::parse(&text).unwrap_err();
        assert_eq!(e.field, "agents[1].name");
        assert!(e.problem.contains("without regard to case"), "{e}");
    }

    #[test]
    fn backend_needs_its_section() {
        let e = Config::parse("wallet: {backend: lnbits}\n").unwrap_err();
        assert_eq!(e.field, "wallet.lnbits");
        let e = Config::parse("wallet: {backend: lnbits, lnbits: {url: 'ftp://x'}}\n").unwrap_err();
        assert_eq!(e.field, "wallet.lnbits.url");
        let e = Config::parse("wallet: {backend: dev, network: moon}\n").unwrap_err();
        assert_eq!(e.field, "wallet.network");
    }

    #[test]
    fn admin_needs_token() {
        let e = Config::parse("wallet: {backend: dev}\nadmin: {listen: '127.0.0.1:9402'}\n")
            .unwrap_err();
        assert_eq!(e.field, "admin.token_env");
    }

    #[test]
    fn operator_limits_and_window_limits_parse() {
        let text = format!(
            "wallet: {{backend: dev}}\noperator_limits: {{daily_sats: 50}}\nagents:\n  - {{name: a, key_sha256: \"{KEY}\", limits: {{daily_sats: 5, total_sats: 9}}}}\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.operator_limits.daily_sats, Some(50));
        assert_eq!(c.agents[0].limits.total_sats, Some(9));
    }

    #[test]
    fn wrong_type_is_reported_with_path() {
        let e = Config::parse("listen: nope\nwallet: {backend: dev}\n").unwrap_err();
        assert_eq!(e.field, "listen", "{e}");
    }

    #[test]
    fn host_rules_deny_wins() {
        let r = HostRules {
            allow: vec!["*.example.com".into()],
            deny: vec!["evil.example.com".into()],
        };
        assert!(r.permits("api.example.com"));
        assert!(!r.permits("evil.example.com"));
        assert!(!r.permits("other.org"));
        assert!(!r.permits("EVIL.example.com."));
    }

    #[test]
    fn host_rules_normalise_entries_and_destinations() {
        let text = format!(
            "{}    hosts: {{ allow: ['*'], deny: ['127.0.0.1', 'LOCALHOST.', '10.0.0.0/8'] }}\n",
            minimal()
        );
        let c = Config::parse(&text).unwrap();
        let r = &c.agents[0].hosts;
        for host in [
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "localhost.",
            "LOCALHOST",
            "10.1.2.3",
            "012.1",
        ] {
            assert!(!r.permits(host), "{host} must be denied");
        }
        assert!(r.permits("127.0.0.2"));
        assert!(r.needs_addresses("api.example.com"));
        assert!(r.permits_resolved("api.example.com", &["93.184.216.34".parse().unwrap()]));
        assert!(!r.permits_resolved("api.example.com", &["10.9.9.9".parse().unwrap()]));
    }

    #[test]
    fn bad_host_rules_name_the_entry() {
        for (rules, field, says) in [
            (
                "{ allow: ['*', '10.0.0.1/8'] }",
                "agents[0].hosts.allow[1]",
                "10.0.0.0/8",
            ),
            (
                "{ allow: ['10.0.0.0/33'] }",
                "agents[0].hosts.allow[0]",
                "0 to 32",
            ),
            (
                "{ deny: ['ok.example', 'api.example.com:443'] }",
                "agents[0].hosts.deny[1]",
                "port",
            ),
            ("{ deny: [''] }", "agents[0].hosts.deny[0]", "empty"),
            ("{ deny: ['300.1.1.1'] }", "agents[0].hosts.deny[0]", "IPv4"),
            (
                "{ deny: ['fd00::/8', 'x/y'] }",
                "agents[0].hosts.deny[1]",
                "CIDR",
            ),
        ] {
            let text = format!("{}    hosts: {rules}\n", minimal());
            let e = Config::parse(&text).unwrap_err();
            assert_eq!(e.field, field, "{rules}: {e}");
            assert!(e.problem.contains(says), "{rules}: {e}");
        }
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.b:80"), Some(("a.b", 80)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", 443)));
        assert_eq!(split_host_port("nope"), None);
        assert_eq!(split_host_port(":80"), None);
    }
}
