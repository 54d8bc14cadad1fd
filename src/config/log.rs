//! `log:` — the log format.

use serde::Deserialize;

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
