//! Secrets named by an `_env` or `_file` key: exactly one source, read trimmed, never logged.

use super::{err, ConfigError};
use std::path::Path;

pub(super) fn one_secret_source(env: bool, file: bool, field: &str) -> Result<(), ConfigError> {
    match (env, file) {
        (true, true) => Err(err(field, "set either the _env or the _file key, not both")),
        (false, false) => Err(err(
            field,
            "missing: name an environment variable (_env) or a file (_file)",
        )),
        _ => Ok(()),
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
