//! The `alerts:` section of the config file: thresholds that raise events, and the webhooks
//! they go to.
//!
//! ```yaml
//! alerts:
//!   budget_thresholds: [50, 80, 100]
//!   wallet_low_sats: 10000
//!   webhooks:
//!     - url: "https://ops.example/hook"
//!       secret_env: L402_WEBHOOK_SECRET   # or secret_file: path
//!       events: ["*"]                     # or names, or prefixes like "budget.*"
//! ```

use super::filter::{check_pattern, EventFilter};
use super::webhook::Webhook;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `alerts:`. The default (section absent) raises no threshold events and has no webhook;
/// events are still counted in Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Per cent of any agent or operator limit at which `budget.threshold` fires, once per
    /// window and threshold. Each 1..=1000, no duplicates. Empty (the default): off.
    #[serde(default)]
    pub budget_thresholds: Vec<u32>,
    /// `wallet.low` fires when the wallet's balance falls below this. Absent: off.
    #[serde(default)]
    pub wallet_low_sats: Option<u64>,
    /// Where events are POSTed, signed.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// One entry of `alerts.webhooks`. Exactly one of `secret_env` / `secret_file` names the
/// signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http(s) URL with a host.
    pub url: String,
    /// Environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the signing secret (trimmed); relative to the config file's directory
    /// once [`AlertsConfig::resolve_paths`] ran.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event names, `*`, or prefixes such as `budget.*`. Default `["*"]`.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

/// Largest accepted `budget_thresholds` entry (per cent).
const MAX_THRESHOLD: u32 = 1000;

impl AlertsConfig {
    /// Every problem serde cannot see, as `(field path, problem and fix)`, in file order; empty
    /// when the section is usable. Does not look at the environment or the file system.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, &t) in self.budget_thresholds.iter().enumerate() {
            let field = format!("alerts.budget_thresholds[{i}]");
            if !(1..=MAX_THRESHOLD).contains(&t) {
                out.push((
                    field,
                    format!("{t} is out of range: a per cent of a limit, 1 to {MAX_THRESHOLD}"),
                ));
            } else if self.budget_thresholds[..i].contains(&t) {
                out.push((field, format!("{t} is listed twice; remove one")));
            }
        }
        if self.wallet_low_sats == Some(0) {
            out.push((
                "alerts.wallet_low_sats".into(),
                "0 never fires; set a balance in sats, or remove the key to turn it off".into(),
            ));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = |f: &str| format!("alerts.webhooks[{i}].{f}");
            if let Err(problem) = check_url(&w.url) {
                out.push((at("url"), problem));
            }
            match (&w.secret_env, &w.secret_file) {
                (Some(_), Some(_)) => out.push((
                    at("secret_env"),
                    "set either secret_env or secret_file, not both".into(),
                )),
                (None, None) => out.push((
                    at("secret_env"),
                    "a signing secret is required: name an environment variable (secret_env) or a file (secret_file)".into(),
                )),
                (Some(var), None) if var.trim().is_empty() => out.push((
                    at("secret_env"),
                    "empty: name the environment variable holding the secret".into(),
                )),
                (None, Some(path)) if path.as_os_str().is_empty() => out.push((
                    at("secret_file"),
                    "empty: name the file holding the secret".into(),
                )),
                _ => {}
            }
            if w.events.is_empty() {
                out.push((
                    at("events"),
                    "empty, so this webhook would receive nothing; use [\"*\"] for every event"
                        .into(),
                ));
            }
            for (j, pattern) in w.events.iter().enumerate() {
                if let Err(problem) = check_pattern(pattern) {
                    out.push((format!("alerts.webhooks[{i}].events[{j}]"), problem));
                }
            }
        }
        out
    }

    /// Reads every webhook's secret (environment variable or file, trimmed, non-empty) and
    /// builds the webhooks. The error names the field and the variable or file, never a secret.
    /// Call after [`validate`](AlertsConfig::validate) found nothing.
    pub fn read_secrets(&self) -> Result<Vec<Webhook>, String> {
        let mut out = Vec::with_capacity(self.webhooks.len());
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = |f: &str| format!("config field `alerts.webhooks[{i}].{f}`");
            let secret = match (&w.secret_env, &w.secret_file) {
                (Some(var), None) => match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
                    Ok(_) => {
                        return Err(format!(
                            "{}: environment variable {var} is empty",
                            at("secret_env")
                        ))
                    }
                    Err(_) => {
                        return Err(format!(
                            "{}: environment variable {var} is not set",
                            at("secret_env")
                        ))
                    }
                },
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
                    Ok(_) => {
                        return Err(format!(
                            "{}: {} is empty",
                            at("secret_file"),
                            path.display()
                        ))
                    }
                    Err(e) => {
                        return Err(format!(
                            "{}: cannot read {}: {e}",
                            at("secret_file"),
                            path.display()
                        ))
                    }
                },
                _ => {
                    return Err(format!(
                        "{}: set exactly one of secret_env or secret_file",
                        at("secret_env")
                    ))
                }
            };
            let events = EventFilter::new(w.events.clone())
                .map_err(|problem| format!("{}: {problem}", at("events")))?;
            let webhook = Webhook::new(&w.url, secret, events)
                .map_err(|problem| format!("{}: {problem}", at("url")))?;
            out.push(webhook);
        }
        Ok(out)
    }

    /// Resolves relative `secret_file` paths against `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for w in &mut self.webhooks {
            if let Some(p) = w.secret_file.as_mut() {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
    }

    /// `wallet_low_sats` in millisatoshis (saturating), if set.
    pub fn wallet_low_msat(&self) -> Option<u64> {
        self.wallet_low_sats.map(|s| s.saturating_mul(1000))
    }

    /// The thresholds (ascending) that spend moving from `before` to `after` crosses against
    /// `limit` (all msat): those with `before < t% of limit <= after`. Empty for a zero limit or
    /// spend that did not grow. Firing each once per window is the caller's job (spend can
    /// shrink when a reservation is released, and cross again).
    pub fn crossed_thresholds(&self, before: u64, after: u64, limit: u64) -> Vec<u32> {
        if limit == 0 || after <= before {
            return Vec::new();
        }
        let mut out: Vec<u32> = self
            .budget_thresholds
            .iter()
            .copied()
            .filter(|&t| {
                let mark = u128::from(limit) * u128::from(t);
                // before < limit*t/100 <= after, without rounding: compare ×100.
                u128::from(before) * 100 < mark && mark <= u128::from(after) * 100
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(format!(
            "{url:?} is not an http(s) URL with a host; write it like \"https://ops.example/hook\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AlertsConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        parse(yaml).unwrap().validate()
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c = parse(
            "budget_thresholds: [50, 80, 100]\nwallet_low_sats: 10000\nwebhooks:\n  - url: \"https://ops.example/hook\"\n    secret_env: L402_WEBHOOK_SECRET\n    events: [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(c.budget_thresholds, vec![50, 80, 100]);
        assert_eq!(c.wallet_low_msat(), Some(10_000_000));
        assert_eq!(c.webhooks[0].events, vec!["*"]);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn defaults_are_off() {
        let c = parse("{}").unwrap();
        assert_eq!(c, AlertsConfig::default());
        assert!(c.validate().is_empty());
        let w = parse("webhooks: [{url: 'http://127.0.0.1:9/h', secret_file: s}]").unwrap();
        assert_eq!(
            w.webhooks[0].events,
            vec!["*"],
            "events default to every event"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("webhook: []").unwrap_err();
        assert!(e.contains("webhook"), "{e}");
        let e = parse("webhooks: [{url: 'https://a.example', secret_env: X, event: ['*']}]")
            .unwrap_err();
        assert!(e.contains("event"), "{e}");
    }

    #[test]
    fn thresholds_must_be_in_range_and_distinct() {
        let p = problems("budget_thresholds: [0, 50, 1001, 50, 1000]");
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "alerts.budget_thresholds[0]",
                "alerts.budget_thresholds[2]",
                "alerts.budget_thresholds[3]"
            ]
        );
        assert!(p[0].1.contains("1 to 1000"), "{p:?}");
        assert!(p[2].1.contains("twice"), "{p:?}");
    }

    #[test]
    fn zero_wallet_low_is_refused() {
        let p = problems("wallet_low_sats: 0");
        assert_eq!(p[0].0, "alerts.wallet_low_sats");
    }

    #[test]
    fn webhook_problems_name_their_field() {
        let p = problems(
            "webhooks:\n  - {url: 'ftp://ops.example/x', secret_env: S}\n  - {url: 'https://ok.example/', secret_env: S, secret_file: f}\n  - {url: 'https://ok.example/'}\n  - {url: 'https://ok.example/', secret_env: S, events: ['budget.*', 'wallet.lo', 'nope.*']}\n  - {url: 'https://ok.example/', secret_file: f, events: []}\n",
        );
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "alerts.webhooks[0].url",
                "alerts.webhooks[1].secret_env",
                "alerts.webhooks[2].secret_env",
                "alerts.webhooks[3].events[1]",
                "alerts.webhooks[3].events[2]",
                "alerts.webhooks[4].events",
            ],
            "{p:?}"
        );
        assert!(
            p[0].1.contains("https://ops.example/hook"),
            "says how: {p:?}"
        );
        assert!(p[1].1.contains("not both"), "{p:?}");
        assert!(p[2].1.contains("required"), "{p:?}");
        assert!(
            p[3].1.contains("wallet.low") && p[3].1.contains("price.jump"),
            "lists the names: {p:?}"
        );
    }

    #[test]
    fn read_secrets_reads_env_and_file_trimmed() {
        let dir = std::env::temp_dir().join(format!("l402-alerts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "  from-file\n").unwrap();
        std::env::set_var("L402_ALERTS_TEST_SECRET", " from-env \n");
        let mut c = parse(
            "webhooks:\n  - {url: 'https://a.example/h', secret_env: L402_ALERTS_TEST_SECRET, events: ['budget.*']}\n  - {url: 'https://b.example/h', secret_file: secret}\n",
        )
        .unwrap();
        c.resolve_paths(&dir);
        let hooks = c.read_secrets().unwrap();
        let budget = EventFilter::new(vec!["budget.*".into()]).unwrap();
        assert_eq!(
            hooks,
            vec![
                Webhook::new("https://a.example/h", "from-env", budget).unwrap(),
                Webhook::new("https://b.example/h", "from-file", EventFilter::all()).unwrap(),
            ]
        );
        assert_eq!(hooks[0].host(), "a.example");
        assert!(hooks[0].wants("budget.threshold") && !hooks[0].wants("wallet.low"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn read_secrets_errors_name_the_field_and_source() {
        let c = parse(
            "webhooks:\n  - {url: 'https://a.example/h', secret_env: L402_ALERTS_TEST_UNSET_VAR}\n",
        )
        .unwrap();
        let e = c.read_secrets().unwrap_err();
        assert!(
            e.contains("alerts.webhooks[0].secret_env") && e.contains("L402_ALERTS_TEST_UNSET_VAR"),
            "{e}"
        );
        let c = parse(
            "webhooks:\n  - {url: 'https://a.example/h', secret_file: /nonexistent/l402/secret}\n",
        )
        .unwrap();
        let e = c.read_secrets().unwrap_err();
        assert!(
            e.contains("alerts.webhooks[0].secret_file") && e.contains("/nonexistent/l402/secret"),
            "{e}"
        );
    }

    #[test]
    fn crossed_thresholds_fire_on_the_crossing_spend_only() {
        let c = AlertsConfig {
            budget_thresholds: vec![100, 50, 80],
            ..AlertsConfig::default()
        };
        assert_eq!(c.crossed_thresholds(0, 499, 1000), Vec::<u32>::new());
        assert_eq!(c.crossed_thresholds(0, 500, 1000), vec![50]);
        assert_eq!(c.crossed_thresholds(500, 799, 1000), Vec::<u32>::new());
        assert_eq!(c.crossed_thresholds(499, 1200, 1000), vec![50, 80, 100]);
        assert_eq!(c.crossed_thresholds(1000, 1200, 1000), Vec::<u32>::new());
        assert_eq!(c.crossed_thresholds(0, 10, 0), Vec::<u32>::new());
        assert_eq!(
            c.crossed_thresholds(u64::MAX - 1, u64::MAX, u64::MAX),
            vec![100]
        );
    }
}
