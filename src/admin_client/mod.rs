//! The command line's side of the admin API: `l402-proxy agents …`, `payments`, `status` and
//! `audit` call a running proxy's `/v1/*` with the operator's bearer token and print tables a
//! person can read (or the API's JSON with `--json`). Nothing here touches the ledger or the
//! config: the proxy is the one authority, so the CLI works against any replica.

pub mod commands;
pub mod table;

use crate::wallet::http::{CallError, NodeClient, Trust};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// The admin API's address when neither `--admin` nor `L402_PROXY_ADMIN_URL` says otherwise
/// (the contract's default `admin.listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9402";

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one proxy's admin API.
pub struct AdminClient {
    client: NodeClient,
}

/// What went wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the URL.
    #[error("cannot reach the admin API at {url}: {why} (is the proxy running with admin.listen set? point --admin or L402_PROXY_ADMIN_URL at it)")]
    Unreachable {
        /// The admin API's base URL that was called.
        url: String,
        /// The transport failure, or that no answer came within the call's 30 s.
        why: String,
    },
    /// The token was refused.
    #[error("the admin API at {url} refused the token (401): set the token in the variable --token-env names (default L402_PROXY_ADMIN_TOKEN), or use --token-file")]
    Unauthorized {
        /// The admin API's base URL that was called.
        url: String,
    },
    /// The API answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status the API answered with.
        status: u16,
        /// The API's `error` text, the start of the body when it has none, or why the answer
        /// could not be read as JSON.
        message: String,
    },
    /// A local problem (a bad argument, a missing token).
    #[error("{0}")]
    Usage(String),
}

impl AdminClient {
    /// A client for `url`, sending `token` as the bearer; `cacert` pins the TLS certificate of
    /// an https admin endpoint (otherwise the public roots are trusted).
    pub fn new(
        url: &str,
        token: &str,
        cacert: Option<&std::path::Path>,
    ) -> Result<AdminClient, ClientError> {
        let trust = match cacert {
            Some(path) => Trust::pinned_file(path, "--cacert")
                .map_err(|e| ClientError::Usage(e.to_string()))?,
            None => Trust::PublicRoots,
        };
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                ClientError::Usage("the admin token holds characters a header cannot carry".into())
            })?;
        bearer.set_sensitive(true);
        let auth: Vec<(HeaderName, HeaderValue)> = vec![(AUTHORIZATION, bearer)];
        let client = NodeClient::new(url, trust, auth)
            .map_err(|e| ClientError::Usage(format!("--admin {url}: {e}")))?;
        Ok(AdminClient { client })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        self.client.base()
    }

    /// Calls `method path` and returns the JSON answer (`null` for an empty one); an error
    /// status becomes a [`ClientError`] carrying the API's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
            status: status.as_u16(),
            message: format!("the admin API answered something that is not JSON: {e}"),
        })?;
        Ok(value)
    }

    /// Calls and returns the body as text (CSV downloads).
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        let (_, bytes) = self.raw(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        let reply = self
            .client
            .call(method, path, body, TIMEOUT)
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.url().to_string(),
                why: match e {
                    CallError::Timeout => format!("no answer within {TIMEOUT:?}"),
                    CallError::Transport(why) => why,
                },
            })?;
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                url: self.url().to_string(),
            });
        }
        if !reply.status.is_success() {
            let message = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| crate::wallet::http::snippet(&reply.body));
            return Err(ClientError::Api {
                status: reply.status.as_u16(),
                message,
            });
        }
        Ok((reply.status, reply.body))
    }
}

/// Where the admin API is and how to authenticate to it (flags shared by every command).
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The admin API's URL.
    #[arg(long = "admin", env = "L402_PROXY_ADMIN_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// The environment variable holding the admin token.
    #[arg(long, default_value = "L402_PROXY_ADMIN_TOKEN", global = true)]
    pub token_env: String,
    /// A file holding the admin token (instead of the variable).
    #[arg(long, global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// The PEM certificate an https admin endpoint must present (default: public roots).
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Connection {
    /// The client, with the token read from the file or the variable.
    pub fn client(&self) -> Result<AdminClient, ClientError> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| ClientError::Usage(format!("--token-file {}: {e}", path.display())))?,
            None => std::env::var(&self.token_env).map_err(|_| {
                ClientError::Usage(format!(
                    "no admin token: set {} (or pass --token-env VAR / --token-file FILE)",
                    self.token_env
                ))
            })?,
        };
        if token.trim().is_empty() {
            return Err(ClientError::Usage("the admin token is empty".into()));
        }
        AdminClient::new(&self.url, &token, self.cacert.as_deref())
    }
}
