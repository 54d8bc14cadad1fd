//! Query strings of the admin API, parsed strictly: an unknown parameter or a value that does
//! not parse is a 400 naming it, never silently ignored.

use crate::ledger::PaymentState;

/// The filters the listing endpoints take.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `agent=`
    pub agent: Option<String>,
    /// `status=pending|settled|failed`
    pub status: Option<PaymentState>,
    /// `host=` (`host` or `host:port`)
    pub host: Option<String>,
    /// `since=` (unix seconds or RFC 3339)
    pub since: Option<i64>,
    /// `until=` (unix seconds or RFC 3339)
    pub until: Option<i64>,
    /// `limit=` (1..=10000, default 100)
    pub limit: Option<usize>,
    /// `format=csv` (same as `Accept: text/csv`)
    pub csv: bool,
}

/// The most rows one listing returns.
pub const MAX_LIMIT: usize = 10_000;

impl Query {
    /// Parses `query`, accepting only the parameters in `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Query, String> {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let v = percent_decode(v);
            if !allowed.contains(&k.as_str()) {
                return Err(format!(
                    "unknown query parameter {k:?}; this endpoint takes {}",
                    allowed.join(", ")
                ));
            }
            match k.as_str() {
                "agent" if !v.is_empty() => q.agent = Some(v),
                "host" if !v.is_empty() => q.host = Some(v.to_ascii_lowercase()),
                "status" if !v.is_empty() => {
                    q.status = Some(PaymentState::parse(&v).ok_or_else(|| {
                        format!("status must be pending, settled or failed, not {v:?}")
                    })?)
                }
                "limit" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| format!("limit must be a whole number, not {v:?}"))?;
                    if n == 0 || n > MAX_LIMIT {
                        return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
                    }
                    q.limit = Some(n);
                }
                "since" => q.since = Some(timestamp(&v).map_err(|e| format!("since: {e}"))?),
                "until" => q.until = Some(timestamp(&v).map_err(|e| format!("until: {e}"))?),
                "format" => match v.as_str() {
                    "csv" => q.csv = true,
                    "json" => q.csv = false,
                    other => return Err(format!("format must be csv or json, not {other:?}")),
                },
                _ => {}
            }
        }
        Ok(q)
    }

    /// `limit`, or 100.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100)
    }
}

/// Unix seconds, or an RFC 3339 date-time.
fn timestamp(v: &str) -> Result<i64, String> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("{v:?} is neither unix seconds nor an RFC 3339 time"))
}

/// A query-string component decoded: `+` is a space, `%XX` escapes are bytes, invalid UTF-8
/// is replaced rather than refused.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &["agent", "status", "limit", "since", "host", "format"];

    #[test]
    fn filters_parse_and_bad_values_are_refused() {
        let q = Query::parse(Some("agent=re%20search&status=settled&limit=5"), ALL).unwrap();
        assert_eq!(q.agent.as_deref(), Some("re search"));
        assert_eq!(q.status, Some(PaymentState::Settled));
        assert_eq!(q.limit(), 5);
        let q = Query::parse(Some("since=2026-12-01T00:00:00Z&format=csv"), ALL).unwrap();
        assert_eq!(q.since, Some(1_796_083_200));
        assert!(q.csv);
        for bad in [
            "limit=abc",
            "limit=0",
            "status=paid",
            "since=yesterday",
            "colour=red",
        ] {
            assert!(Query::parse(Some(bad), ALL).is_err(), "{bad}");
        }
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%2Cb"), "a,b");
    }
}
