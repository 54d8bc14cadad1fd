//! `pay:` — which 402 dialects are paid, in order of preference.

use super::{err, ConfigError};
use serde::Deserialize;

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

impl PayConfig {
    /// Problems in this section serde cannot find (ranges, cross-field rules), fields
    /// named from the file's root.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        for (i, scheme) in self.schemes.iter().enumerate() {
            if self.schemes[..i].contains(scheme) {
                note(Err(err(
                    format!("pay.schemes[{i}]"),
                    format!("{} is listed twice", scheme.name()),
                )));
            }
        }
        out
    }
}
