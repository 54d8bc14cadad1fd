//! Host globs for `tls.intercept` and agent host rules: `*` matches any run of characters,
//! matching is ASCII case-insensitive (host names are).

/// True when `host` matches `pattern`. `*` alone matches every host; `*.example.com`
/// matches sub-domains but not `example.com` itself, as operators expect from certificates.
pub fn matches(pattern: &str, host: &str) -> bool {
    let p = pattern.as_bytes();
    let h = host.as_bytes();
    // Iterative wildcard match with single backtrack point: linear in practice, no recursion.
    let (mut pi, mut hi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while hi < h.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&h[hi]) {
            pi += 1;
            hi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = hi;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            hi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// True when any pattern in the list matches.
pub fn any_matches(patterns: &[String], host: &str) -> bool {
    patterns.iter().any(|p| matches(p, host))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("*", "api.example.com"));
        assert!(matches("*.example.com", "api.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("API.example.com", "api.EXAMPLE.com"));
        assert!(matches("api.*.com", "api.foo.com"));
        assert!(!matches("api.*.com", "api.foo.org"));
        assert!(matches("localhost", "localhost"));
        assert!(!matches("localhost", "localhost2"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }
}
