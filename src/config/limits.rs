//! Spending limits (an agent's `limits:`, `operator_limits:`) and the values no operator means.

use super::{err, ConfigError};
use serde::Deserialize;

/// Spending limits in sats; an absent limit means none of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most one payment may be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request_sats: Option<crate::core::Sats>,
    /// Per calendar hour (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_sats: Option<crate::core::Sats>,
    /// Per calendar day (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_sats: Option<crate::core::Sats>,
    /// Per week (UTC, from Monday).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly_sats: Option<crate::core::Sats>,
    /// Per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_sats: Option<crate::core::Sats>,
    /// In total (the admin API can top it up or recall it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sats: Option<crate::core::Sats>,
    /// A payment above this many sats waits for the operator's approval
    /// (`GET /v1/approvals`, `POST /v1/approvals/{id}`), up to `approval.timeout_secs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_above_sats: Option<crate::core::Sats>,
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
    /// The spend-spike breaker: a payment that would take the spend over the last
    /// `spike_window_secs` above this many sats is refused (`spend-spike`; in
    /// `operator_limits`, over all agents: `fleet-spend-spike`) and the breaker trips — the
    /// agent (or the whole fleet) is stopped until the operator resumes it. Absent: no breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike_max_sats: Option<crate::core::Sats>,
    /// The breaker's sliding window in seconds, 60 to 3600 (default 300), counted in one-minute
    /// steps: the spend of the current minute and of the whole minutes before it that fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike_window_secs: Option<u32>,
    /// The breaker also trips when the spend over its window would pass this many times the
    /// usual spend over as long (the average of the last 24 whole hours). Without a usual rate
    /// yet (no spend in those hours) only `spike_max_sats` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike_multiple: Option<u32>,
    /// Caps per seller: a payment counts against the first rule whose `hosts` match the
    /// seller's host (none: no seller cap), on top of every other limit, with the same windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sellers: Vec<SellerCap>,
}

/// One cap per seller (`limits.sellers[]`): the spend of payments to hosts matching `hosts`, per
/// window and in total. Its count is kept under [`SellerCap::key`], so reordering the rules
/// keeps every count, and changing a rule's hosts starts that rule's count afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SellerCap {
    /// Host globs (`api.example.com`, `*.example.org`, `*` for anything else), matched against
    /// the seller's host name without the port, ASCII case-insensitively.
    pub hosts: Vec<String>,
    /// Per calendar hour (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_sats: Option<crate::core::Sats>,
    /// Per calendar day (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_sats: Option<crate::core::Sats>,
    /// Per week (UTC, from Monday).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly_sats: Option<crate::core::Sats>,
    /// Per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_sats: Option<crate::core::Sats>,
    /// In total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sats: Option<crate::core::Sats>,
}

impl SellerCap {
    /// The name its count is kept under: its host globs, lower-cased, joined by `,`.
    pub fn key(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `host` (a bare name or `name:port`) is one of this rule's sellers.
    pub fn matches(&self, host: &str) -> bool {
        let bare = super::split_host_port(host).map_or(host, |(h, _)| h);
        crate::glob::any_matches(&self.hosts, bare)
    }

    /// The limits this rule sets, as [`Limits`] with only the window and total keys.
    pub fn limits(&self) -> Limits {
        Limits {
            hourly_sats: self.hourly_sats,
            daily_sats: self.daily_sats,
            weekly_sats: self.weekly_sats,
            monthly_sats: self.monthly_sats,
            total_sats: self.total_sats,
            ..Limits::NONE
        }
    }

    fn problems(&self, i: usize) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        if self.hosts.is_empty() || self.hosts.iter().any(|h| h.trim().is_empty()) {
            out.push((
                format!("sellers[{i}].hosts"),
                "needs at least one host glob (`api.example.com`, `*.example.org`, or `*` for any other seller)",
            ));
        }
        if self.hosts.iter().any(|h| h.contains(',')) {
            out.push((
                format!("sellers[{i}].hosts"),
                "a host glob cannot contain `,`: list each host separately",
            ));
        }
        let windows = [
            self.hourly_sats,
            self.daily_sats,
            self.weekly_sats,
            self.monthly_sats,
            self.total_sats,
        ];
        if windows.iter().all(Option::is_none) {
            out.push((
                format!("sellers[{i}]"),
                "sets no cap: give it hourly_sats, daily_sats, weekly_sats, monthly_sats or total_sats",
            ));
        }
        out
    }
}

/// The spend-spike breaker's window when `spike_window_secs` is not set.
pub const DEFAULT_SPIKE_WINDOW_SECS: u32 = 300;
/// The longest breaker window (the ledgers keep one-minute spend for this long).
pub const MAX_SPIKE_WINDOW_SECS: u32 = 3600;
/// The hours whose average spend is the usual rate `spike_multiple` compares with.
pub const SPIKE_BASELINE_HOURS: i64 = 24;

/// A spend-spike breaker as configured: its absolute maximum, its multiple of the usual rate
/// (at least one of the two), and its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spike {
    /// `spike_max_sats`.
    pub max: Option<crate::core::Sats>,
    /// `spike_multiple`.
    pub multiple: Option<u32>,
    /// `spike_window_secs` (or its default), in seconds.
    pub window_secs: u32,
}

impl Spike {
    /// The most the window may hold given `usual`, the spend over the last
    /// [`SPIKE_BASELINE_HOURS`] whole hours: the lower of the maximum and the multiple of the
    /// usual spend over as long as the window (the multiple counts only once there is one).
    pub fn threshold(&self, usual: crate::core::Msat) -> Option<crate::core::Msat> {
        let by_rate = self.multiple.filter(|_| usual.get() > 0).map(|m| {
            // Multiplied first, divided last: no rounding before the multiple.
            let msat = u128::from(usual.get()) * u128::from(self.window_secs) * u128::from(m)
                / (SPIKE_BASELINE_HOURS as u128 * 3600);
            crate::core::Msat::new(u64::try_from(msat).unwrap_or(u64::MAX))
        });
        match (self.max.map(|m| m.msat()), by_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Limits {
    /// Values no operator means: `(field, problem and fix)` for each, fields relative to the
    /// limits object (`per_request_sats`, …).
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        if self.per_request_sats == Some(crate::core::Sats::new(0)) {
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
        if self.spike_max_sats == Some(crate::core::Sats::new(0)) {
            out.push((
                "spike_max_sats",
                "0 would trip the breaker on the first payment; remove the key for no breaker (or pause the agent)",
            ));
        }
        if self.spike_multiple.is_some_and(|m| m < 2) {
            out.push((
                "spike_multiple",
                "must be 2 or more (times the usual spend); remove the key for no such breaker",
            ));
        }
        if let Some(w) = self.spike_window_secs {
            if !(60..=MAX_SPIKE_WINDOW_SECS).contains(&w) {
                out.push((
                    "spike_window_secs",
                    "must be between 60 and 3600 seconds (the breaker counts whole minutes, for up to an hour)",
                ));
            }
        }
        if self.max_connections == Some(0) {
            out.push((
                "max_connections",
                "0 would refuse every connection; remove the key for no limit",
            ));
        }
        let mut out: Vec<(String, &'static str)> =
            out.into_iter().map(|(f, p)| (f.to_string(), p)).collect();
        let mut keys = std::collections::HashSet::new();
        for (i, cap) in self.sellers.iter().enumerate() {
            out.extend(cap.problems(i));
            if !keys.insert(cap.key()) {
                out.push((
                    format!("sellers[{i}].hosts"),
                    "the same hosts as an earlier rule: the first one wins, so this one would never apply",
                ));
            }
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
        spike_max_sats: None,
        spike_window_secs: None,
        spike_multiple: None,
        sellers: Vec::new(),
    };

    /// The seller cap a payment to `host` counts against: the first rule matching it.
    pub fn seller_cap(&self, host: &str) -> Option<&SellerCap> {
        self.sellers.iter().find(|c| c.matches(host))
    }

    /// The spend-spike breaker, when set.
    pub fn spike(&self) -> Option<Spike> {
        if self.spike_max_sats.is_none() && self.spike_multiple.is_none() {
            return None;
        }
        let window_secs = self
            .spike_window_secs
            .unwrap_or(DEFAULT_SPIKE_WINDOW_SECS)
            .clamp(60, MAX_SPIKE_WINDOW_SECS);
        Some(Spike {
            max: self.spike_max_sats,
            multiple: self.spike_multiple,
            window_secs,
        })
    }
}

impl Limits {
    /// Problems of `operator_limits:`: values no operator means, and the keys that are per agent only.
    pub(super) fn operator_problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        for (field, problem) in self.problems() {
            note(Err(err(format!("operator_limits.{field}"), problem)));
        }
        for (field, set) in [
            ("requests_per_minute", self.requests_per_minute.is_some()),
            ("max_connections", self.max_connections.is_some()),
        ] {
            if set {
                note(Err(err(
                    format!("operator_limits.{field}"),
                    "is per agent only: set it in each agent's limits (http.max_connections caps all connections)",
                )));
            }
        }
        out
    }
}
