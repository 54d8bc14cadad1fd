//! Which events a webhook wants: `*` (all), an exact name (`wallet.low`), or a prefix glob
//! (`budget.*`: every event whose name starts with `budget.`).

use super::event::EVENT_NAMES;

/// A webhook's `events` list. Matches an event when any pattern does; an empty list matches
/// nothing (config validation refuses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(Vec<String>);

impl EventFilter {
    /// Every event (`["*"]`).
    pub fn all() -> EventFilter {
        EventFilter(vec!["*".into()])
    }

    /// A filter from patterns, each checked with [`check_pattern`]; the first bad one is the
    /// error.
    pub fn new(patterns: Vec<String>) -> Result<EventFilter, String> {
        for p in &patterns {
            check_pattern(p)?;
        }
        Ok(EventFilter(patterns))
    }

    /// True when `event` (an event name) matches one of the patterns.
    pub fn matches(&self, event: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, event))
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

fn pattern_matches(pattern: &str, event: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// Whether `pattern` is `*`, a known event name, or `prefix.*` matching at least one known
/// event. The error says what is wrong and lists the known names.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let known = || EVENT_NAMES.join(", ");
    if pattern == "*" || EVENT_NAMES.contains(&pattern) {
        return Ok(());
    }
    if let Some(prefix) = pattern.strip_suffix(".*") {
        if !prefix.is_empty()
            && !prefix.contains('*')
            && EVENT_NAMES.iter().any(|n| pattern_matches(pattern, n))
        {
            return Ok(());
        }
        return Err(format!(
            "{pattern:?} matches no event; use \"*\", a prefix such as \"budget.*\", or one of: {}",
            known()
        ));
    }
    Err(format!(
        "unknown event {pattern:?}; use \"*\", a prefix such as \"budget.*\", or one of: {}",
        known()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(p: &[&str]) -> EventFilter {
        EventFilter::new(p.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn star_matches_everything() {
        let f = EventFilter::all();
        assert!(EVENT_NAMES.iter().all(|n| f.matches(n)));
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let f = filter(&["wallet.low", "store.unavailable"]);
        assert!(f.matches("wallet.low"));
        assert!(f.matches("store.unavailable"));
        assert!(!f.matches("store.recovered"));
        assert!(!f.matches("budget.threshold"));
    }

    #[test]
    fn prefix_globs_match_their_family() {
        let f = filter(&["budget.*", "approval.*"]);
        assert!(f.matches("budget.threshold"));
        assert!(f.matches("approval.requested"));
        assert!(f.matches("approval.decided"));
        assert!(!f.matches("payment.failed"));
        assert!(!filter(&["store.*"]).matches("storex.recovered"));
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        assert!(!filter(&[]).matches("wallet.low"));
    }

    #[test]
    fn unknown_patterns_list_the_known_names() {
        for bad in ["wallet.lo", "nothing.*", "*.low", ".*", "budget.**"] {
            let e = check_pattern(bad).unwrap_err();
            assert!(
                e.contains("budget.threshold, approval.requested"),
                "{bad}: {e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
