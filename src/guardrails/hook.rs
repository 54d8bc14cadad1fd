//! The operator's policy service (`policy_hook:`): before a payment leaves, one signed JSON
//! POST asks it `allow`, `deny` (with a reason the agent is told) or `hold` (an approval).
//!
//! The request is signed exactly as alert webhooks are: `X-L402-Signature: sha256=<lowercase
//! hex HMAC-SHA256(secret, body)>` over the exact body bytes, with `X-L402-Event:
//! policy.check`; the body carries a unique `id` and the unix second `at`, so a receiver that
//! verifies webhooks verifies this the same way (and may refuse old or repeated ids).
//!
//! Invariants: the service is asked only on the paying path (never for a cached or shared
//! token); anything but a 2xx answer whose JSON `decision` is `allow`, `deny` or `hold` within
//! `timeout_ms` is a failure, decided by `on_failure` (deny unless the operator chose allow);
//! seller-chosen text sent to it and the service's reason passed on are cleaned and capped
//! ([`crate::core::text::shown`]); the secret is never logged, the URL's path never shown, and
//! the agent is told why the service failed without its address (the log has the detail).

use crate::alerts::webhook::{sign, EVENT_HEADER, SIGNATURE_HEADER};
use crate::budget::BudgetView;
use crate::config::{read_secret, OnFailure, PolicyHookConfig};
use crate::core::text::{shown, NAME_MAX, TEXT_MAX};
use crate::core::{Decline, Msat, PaymentHash};
use crate::metrics::Metrics;
use crate::wallet::http::{CallError, NodeClient, Trust};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `X-L402-Event` value (and the body's `event`) of a decision request.
pub const POLICY_EVENT: &str = "policy.check";

/// The most characters of the service's reason passed to the agent and the operator.
pub const REASON_MAX: usize = 256;

/// One payment the service is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The agent paying.
    pub agent: &'a str,
    /// `scheme://host:port` of the seller.
    pub origin: &'a str,
    /// `host:port` of the seller.
    pub host: &'a str,
    /// The request's path (and query).
    pub path: &'a str,
    /// The service bought, or the path scope when the offer names none.
    pub service: &'a str,
    /// The dialect paid (`l402`, `payment`, `x402`).
    pub dialect: &'a str,
    /// The invoice amount.
    pub amount: Msat,
    /// The invoice's payment hash.
    pub payment_hash: &'a PaymentHash,
    /// The invoice's description, as the seller wrote it (cleaned here).
    pub description: Option<&'a str>,
    /// The agent's budget now (absent when the store could not be read).
    pub budget: Option<&'a BudgetView>,
}

/// The service's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (to the approval, if one applies, and the reservation).
    Allow,
    /// Hold the payment for the operator's approval; the reason as given (cleaned), maybe
    /// empty.
    Hold(String),
}

/// The JSON body POSTed.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    id: String,
    at: i64,
    agent: &'a str,
    origin: std::borrow::Cow<'a, str>,
    host: std::borrow::Cow<'a, str>,
    path: std::borrow::Cow<'a, str>,
    service: std::borrow::Cow<'a, str>,
    dialect: &'a str,
    amount_msat: u64,
    payment_hash: String,
    description: Option<std::borrow::Cow<'a, str>>,
    budget: Option<BudgetPart<'a>>,
}

/// The budget part of the body: spent and remaining per window, and what can still be paid.
#[derive(Serialize)]
struct BudgetPart<'a> {
    spent_msat: &'a crate::budget::view::WindowAmounts,
    remaining_msat: &'a crate::budget::view::WindowAmounts,
    spendable_msat: Option<u64>,
}

/// The answer's shape: `{"decision": "allow" | "deny" | "hold", "reason": "..."}`.
#[derive(Deserialize)]
struct Answer {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

/// What the service said, before `on_failure` applies.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Allow,
    Deny(String),
    Hold(String),
    /// No usable answer: what the agent is told (without the service's address), and the
    /// detail the operator's log gets.
    Failed {
        told: String,
        detail: String,
    },
}

impl Said {
    fn failed(told: impl Into<String>, detail: impl Into<String>) -> Said {
        Said::Failed {
            told: told.into(),
            detail: detail.into(),
        }
    }
}

/// The configured policy service, its secret read and its client built.
pub struct PolicyHook {
    config: PolicyHookConfig,
    /// `scheme://authority`: the client's base.
    host: String,
    /// Path and query (may hold a token: never logged).
    path: String,
    secret: Vec<u8>,
    client: NodeClient,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for PolicyHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHook")
            .field("host", &self.host)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.config.timeout_ms)
            .field("on_failure", &self.config.on_failure)
            .finish()
    }
}

impl PolicyHook {
    /// Builds the hook from a validated config: reads its secret (environment or file) and
    /// prepares a pooled client trusting the public web roots, as alert webhooks do. The error
    /// names the field, never the secret.
    pub fn from_config(
        config: &PolicyHookConfig,
        metrics: Arc<Metrics>,
    ) -> Result<PolicyHook, String> {
        let field = if config.secret_env.is_some() {
            "policy_hook.secret_env"
        } else {
            "policy_hook.secret_file"
        };
        let secret = read_secret(
            config.secret_env.as_deref(),
            config.secret_file.as_deref(),
            field,
        )
        .map_err(|e| e.to_string())?;
        if secret.is_empty() {
            return Err(format!("config field `{field}`: the secret is empty"));
        }
        let uri: http::Uri = config
            .url
            .parse()
            .map_err(|_| "config field `policy_hook.url`: not a URL".to_string())?;
        let (Some(scheme @ ("http" | "https")), Some(authority), Some(host)) =
            (uri.scheme_str(), uri.authority(), uri.host())
        else {
            return Err("config field `policy_hook.url`: not an http(s) URL with a host".into());
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let client = NodeClient::new(
            &format!("{scheme}://{authority}"),
            Trust::PublicRoots,
            Vec::new(),
        )
        .map_err(|e| format!("config field `policy_hook.url`: {e}"))?;
        Ok(PolicyHook {
            config: config.clone(),
            host: host.to_string(),
            path,
            secret: secret.into_bytes(),
            client,
            metrics,
        })
    }

    /// True when a payment of `agent` to `host` (without its port) is asked about.
    pub fn applies(&self, agent: &str, host: &str) -> bool {
        self.config.applies(agent, host)
    }

    /// The URL's host: what logs, the status and the dashboard name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `deny` (fail closed) or `allow` (fail open).
    pub fn on_failure(&self) -> OnFailure {
        self.config.on_failure
    }

    /// How long one decision may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Asks the service about `ask` at unix second `now`. `Ok(Allow)`: go on; `Ok(Hold)`: the
    /// operator must approve; `Err`: declined `policy-denied`, or `policy-unavailable` when the
    /// service failed and `on_failure` is `deny`. Counted, timed and logged.
    pub async fn decide(&self, ask: &Ask<'_>, now: i64) -> Result<Verdict, Decline> {
        let id = format!("pol_{}", hex::encode(rand::random::<[u8; 12]>()));
        let started = Instant::now();
        let said = self.ask(&id, ask, now).await;
        let elapsed = started.elapsed();
        self.metrics
            .policy_hook_seconds
            .observe(elapsed.as_secs_f64());
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let (agent, hook) = (ask.agent, self.host.as_str());
        match said {
            Said::Allow => {
                self.metrics.policy_decision("allow");
                tracing::info!(%id, agent, host = ask.host, amount = %ask.amount, hook, ms, "payment policy: allow");
                Ok(Verdict::Allow)
            }
            Said::Deny(reason) => {
                self.metrics.policy_decision("deny");
                tracing::info!(%id, agent, host = ask.host, amount = %ask.amount, hook, ms, %reason, "payment policy: deny");
                Err(Decline::PolicyDenied { reason })
            }
            Said::Hold(reason) => {
                self.metrics.policy_decision("hold");
                tracing::info!(%id, agent, host = ask.host, amount = %ask.amount, hook, ms, %reason, "payment policy: hold for approval");
                Ok(Verdict::Hold(reason))
            }
            Said::Failed { told, detail } => {
                self.metrics.policy_decision("error");
                match self.config.on_failure {
                    OnFailure::Deny => {
                        tracing::warn!(%id, agent, host = ask.host, hook, ms, error = %detail, "payment policy service failed; declining (on_failure: deny)");
                        Err(Decline::PolicyUnavailable { reason: told })
                    }
                    OnFailure::Allow => {
                        tracing::warn!(%id, agent, host = ask.host, hook, ms, error = %detail, "payment policy service failed; paying anyway (on_failure: allow)");
                        Ok(Verdict::Allow)
                    }
                }
            }
        }
    }

    /// One signed POST and its answer read.
    async fn ask(&self, id: &str, ask: &Ask<'_>, now: i64) -> Said {
        let body = Body {
            event: POLICY_EVENT,
            id: id.to_string(),
            at: now,
            agent: ask.agent,
            origin: shown(ask.origin, TEXT_MAX),
            host: shown(ask.host, NAME_MAX),
            path: shown(ask.path, TEXT_MAX),
            service: shown(ask.service, NAME_MAX),
            dialect: ask.dialect,
            amount_msat: ask.amount.get(),
            payment_hash: ask.payment_hash.to_hex(),
            description: ask.description.map(|d| shown(d, TEXT_MAX)),
            budget: ask.budget.map(|b| BudgetPart {
                spent_msat: &b.spent_msat,
                remaining_msat: &b.remaining_msat,
                spendable_msat: b.spendable_msat,
            }),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Said::failed(
                    "the request could not be built",
                    format!("cannot encode the request: {e}"),
                )
            }
        };
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                USER_AGENT,
                HeaderValue::from_static(concat!("l402-proxy/", env!("CARGO_PKG_VERSION"))),
            ),
            (
                HeaderName::from_static(EVENT_HEADER),
                HeaderValue::from_static(POLICY_EVENT),
            ),
        ];
        if let Ok(mut v) = HeaderValue::from_str(&sign(&self.secret, &body)) {
            v.set_sensitive(true);
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), v));
        }
        let timeout = self.timeout();
        let reply = match self
            .client
            .post_raw(&self.path, body, &headers, timeout)
            .await
        {
            Ok(reply) => reply,
            Err(CallError::Timeout) => {
                let told = format!("no answer within {} ms", self.config.timeout_ms);
                return Said::failed(told.clone(), told);
            }
            Err(CallError::Transport(why)) => {
                return Said::failed("it could not be reached", shown(&why, TEXT_MAX))
            }
        };
        if !reply.status.is_success() {
            let told = format!("it answered HTTP {}", reply.status.as_u16());
            return Said::failed(told.clone(), told);
        }
        read_answer(&reply.body)
            .unwrap_or_else(|why| Said::failed("its answer was not a decision", why))
    }
}

/// The decision in a 2xx body, or why there is none.
fn read_answer(body: &[u8]) -> Result<Said, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        format!("the answer is not {{\"decision\": \"allow\" | \"deny\" | \"hold\"}}: {e}")
    })?;
    let reason = answer
        .reason
        .as_deref()
        .map(|r| shown(r.trim(), REASON_MAX).into_owned())
        .unwrap_or_default();
    match answer.decision.to_ascii_lowercase().as_str() {
        "allow" => Ok(Said::Allow),
        "deny" => Ok(Said::Deny(reason)),
        "hold" => Ok(Said::Hold(reason)),
        other => Err(format!(
            "unknown decision {:?}: expected allow, deny or hold",
            shown(other, NAME_MAX)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(read_answer(br#"{"decision":"allow"}"#), Ok(Said::Allow));
        assert_eq!(
            read_answer(br#"{"decision":"DENY","reason":"over the team's budget"}"#),
            Ok(Said::Deny("over the team's budget".into()))
        );
        assert_eq!(
            read_answer(br#"{"decision":"hold"}"#),
            Ok(Said::Hold(String::new()))
        );
        for bad in [
            &br#"{"decision":"maybe"}"#[..],
            br#"{"reason":"x"}"#,
            br#"allow"#,
            b"",
            br#"{"decision":1}"#,
        ] {
            assert!(
                read_answer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reasons_are_cleaned_and_capped() {
        let hostile = format!(
            r#"{{"decision":"deny","reason":"no\u202e\u0007{}"}}"#,
            "x".repeat(1000)
        );
        let Ok(Said::Deny(reason)) = read_answer(hostile.as_bytes()) else {
            panic!("a deny");
        };
        assert_eq!(reason.chars().count(), REASON_MAX);
        assert!(reason.starts_with("no\u{FFFD}\u{FFFD}x"), "{reason}");
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn debug_shows_neither_secret_nor_path() {
        let var = format!("L402_POLICY_UNIT_{}", rand::random::<u32>());
        std::env::set_var(&var, "topsecret");
        let config: PolicyHookConfig = serde_yaml_ng::from_str(&format!(
            "{{url: 'https://policy.example/check?token=abc', secret_env: {var}}}"
        ))
        .unwrap();
        let hook = PolicyHook::from_config(&config, Arc::new(Metrics::new())).unwrap();
        assert_eq!(hook.host(), "policy.example");
        let shown = format!("{hook:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("token=abc"),
            "{shown}"
        );
        let missing: PolicyHookConfig = serde_yaml_ng::from_str(
            "{url: 'https://policy.example/', secret_env: L402_POLICY_UNIT_NEVER_SET}",
        )
        .unwrap();
        let e = PolicyHook::from_config(&missing, Arc::new(Metrics::new())).unwrap_err();
        assert!(e.contains("policy_hook.secret_env"), "{e}");
    }
}
