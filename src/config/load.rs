//! Reading a config file: parse, resolve relative paths, and [`check`] that lists every
//! problem at once.

use super::{err, preflight, Config, ConfigError};
use std::path::{Path, PathBuf};

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
        self.store.retention.archive_dir.as_mut().map(fix);
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
        if let Some(hook) = self.policy_hook.as_mut() {
            hook.resolve_paths(dir);
        }
    }
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

/// serde_yaml_ng messages already carry the field path ("agents[0]: missing field `name`");
/// lift it into our `field` so every config error reads the same way.
fn yaml_error(e: serde_yaml_ng::Error) -> ConfigError {
    let msg = e.to_string();
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => err(path, rest),
        _ => err("", msg),
    }
}
