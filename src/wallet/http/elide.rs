//! Empties one array-valued key of a newline-delimited JSON stream as the bytes stream past.
//!
//! LND's payment updates carry `htlcs`, one entry per HTLC attempt with its whole route and
//! failure: a payment that tried a few hundred routes sends updates (and a TrackPaymentV2 answer)
//! over a megabyte long, and the lines only grow as attempts are added. Nothing the proxy reads
//! is in that array, so it is dropped while reading — `"htlcs":[…]` arrives as `"htlcs":[]` —
//! and what is kept of a line stays small however long the payment's history is.
//!
//! This is a scanner, not a parser: it follows strings (with their escapes) and nesting only,
//! which is all it takes to find where the array ends. A line that is not JSON passes through
//! unchanged apart from that, and the JSON parser that reads the line afterwards judges it. A
//! newline ends a line and resets the scanner (a JSON string cannot hold a raw newline), so one
//! malformed line cannot affect the next.

/// The scanner's state between bytes. Invariant: while `skip_to` is `Some(d)`, no byte is kept
/// until nesting returns to depth `d`, where the closing `]` is kept.
#[derive(Debug)]
pub struct Elide {
    key: &'static [u8],
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The current (or last) string, kept up to one byte longer than `key`.
    string: Vec<u8>,
    /// The last token was a string equal to `key` (a `:` then makes it the key).
    key_seen: bool,
    /// `key` and `:` were just read: an array now is the one to empty.
    value_next: bool,
    skip_to: Option<usize>,
}

impl Elide {
    /// A scanner emptying every array that is the value of `key` (an ASCII name, unescaped).
    pub fn new(key: &'static str) -> Elide {
        Elide {
            key: key.as_bytes(),
            depth: 0,
            in_string: false,
            escaped: false,
            string: Vec::with_capacity(key.len() + 1),
            key_seen: false,
            value_next: false,
            skip_to: None,
        }
    }

    /// Appends to `out` what is kept of `input`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.keep(b) {
                out.push(b);
            }
        }
    }

    fn reset(&mut self) {
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.string.clear();
        self.key_seen = false;
        self.value_next = false;
        self.skip_to = None;
    }

    /// Advances over one byte; true when it is kept.
    fn keep(&mut self, b: u8) -> bool {
        if b == b'\n' {
            self.reset();
            return true;
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                self.key_seen = self.skip_to.is_none() && self.string == self.key;
                return self.skip_to.is_none();
            }
            if self.skip_to.is_none() && self.string.len() <= self.key.len() {
                self.string.push(b);
            }
            return self.skip_to.is_none();
        }
        if let Some(until) = self.skip_to {
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == until {
                        self.skip_to = None;
                        return true;
                    }
                }
                _ => {}
            }
            return false;
        }
        let key_seen = std::mem::take(&mut self.key_seen);
        match b {
            b'"' => {
                self.in_string = true;
                self.string.clear();
                self.value_next = false;
            }
            b':' => self.value_next = key_seen,
            b'[' if self.value_next => {
                self.value_next = false;
                self.skip_to = Some(self.depth);
                self.depth += 1;
            }
            b'[' | b'{' => {
                self.value_next = false;
                self.depth += 1;
            }
            b']' | b'}' => {
                self.value_next = false;
                self.depth = self.depth.saturating_sub(1);
            }
            b' ' | b'\t' | b'\r' => {
                // Whitespace between tokens changes nothing.
                self.key_seen = key_seen;
            }
            _ => self.value_next = false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Elide;

    fn elide(input: &str) -> String {
        let mut out = Vec::new();
        Elide::new("htlcs").feed(input.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_array_is_emptied_and_the_rest_kept() {
        assert_eq!(
            elide(
                r#"{"result":{"status":"IN_FLIGHT","htlcs":[{"route":{"hops":[{"a":1}]}},{"b":"]"}],"failure_reason":"FAILURE_REASON_NONE"}}"#
            ),
            r#"{"result":{"status":"IN_FLIGHT","htlcs":[],"failure_reason":"FAILURE_REASON_NONE"}}"#
        );
        // Whitespace around the colon, an empty array, brackets and quotes inside strings.
        assert_eq!(
            elide(r#"{"htlcs" : [ "x\"]}[", {"y": "\\"} ] , "z": 1}"#),
            r#"{"htlcs" : [] , "z": 1}"#
        );
        assert_eq!(elide(r#"{"htlcs":[]}"#), r#"{"htlcs":[]}"#);
    }

    #[test]
    fn only_the_key_is_touched() {
        for kept in [
            r#"{"htlcs_count":[1,2],"other":["htlcs"]}"#,
            r#"["htlcs",[1,2]]"#,
            r#"{"a":"htlcs","b":[1]}"#,
            r#"{"htlcs":{"not":"an array"}}"#,
            r#"{"htlc":[1],"xhtlcs":[2]}"#,
        ] {
            assert_eq!(elide(kept), kept);
        }
    }

    #[test]
    fn bytes_split_anywhere_give_the_same_result() {
        let line = r#"{"result":{"htlcs":[{"s":"a\"b]"},{"t":[[1],[2]]}],"status":"SUCCEEDED"}}"#;
        let whole = elide(line);
        for cut in 0..line.len() {
            let mut e = Elide::new("htlcs");
            let mut out = Vec::new();
            e.feed(&line.as_bytes()[..cut], &mut out);
            e.feed(&line.as_bytes()[cut..], &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_newline_ends_a_broken_line_and_starts_afresh() {
        assert_eq!(
            elide("{\"htlcs\":[1,\n{\"htlcs\":[2],\"s\":1}\n"),
            "{\"htlcs\":[\n{\"htlcs\":[],\"s\":1}\n"
        );
        // Cut inside a string: the next line is still read from the start.
        assert_eq!(
            elide("{\"htlcs\":[\"ab\n{\"htlcs\":[2]}\n"),
            "{\"htlcs\":[\n{\"htlcs\":[]}\n"
        );
    }
}
