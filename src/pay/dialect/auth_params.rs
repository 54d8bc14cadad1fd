//! The auth-param grammar of `WWW-Authenticate` (RFC 9110 §11.6.1), read tolerantly: one
//! header value may fold several challenges, values are quoted or bare, separators vary. Every
//! dialect's challenges are read with this lexer; nothing here panics on hostile input.

/// One challenge: its scheme and its parameters, as sent (names lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChallenge {
    /// The scheme name as sent.
    pub scheme: String,
    /// `(name, value)` in order; the name lower-cased.
    pub params: Vec<(String, String)>,
}

impl AuthChallenge {
    /// The first non-empty value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge of scheme `scheme` (case-insensitive) across all header values.
pub fn challenges<'a, I: IntoIterator<Item = &'a [u8]>>(
    values: I,
    scheme: &str,
) -> Vec<AuthChallenge> {
    let mut out = Vec::new();
    for raw in values {
        let Ok(value) = std::str::from_utf8(raw) else {
            continue;
        };
        let mut cursor = Cursor::new(value);
        let mut current: Option<AuthChallenge> = None;
        while let Some(item) = cursor.next_item() {
            match item {
                Item::Scheme(name) => {
                    out.extend(current.take());
                    current = name.eq_ignore_ascii_case(scheme).then(|| AuthChallenge {
                        scheme: name.to_string(),
                        params: Vec::new(),
                    });
                }
                Item::Param(key, value) => {
                    if let (Some(c), Some(v)) = (current.as_mut(), value.into_string()) {
                        c.params.push((key.to_ascii_lowercase(), v));
                    }
                }
            }
        }
        out.extend(current);
    }
    out
}

/// One lexical element of a header value.
pub(crate) enum Item<'a> {
    /// A word not followed by `=`: the start of a new challenge.
    Scheme(&'a str),
    /// `key = value`.
    Param(&'a str, Value<'a>),
}

/// A param value as it appears in the header, not yet unescaped.
pub(crate) enum Value<'a> {
    Bare(&'a str),
    /// The text between the quotes, still containing quoted-pairs.
    Quoted(&'a str),
    /// A quoted-string with no closing quote: probably a truncated header, so unusable.
    Unterminated,
}

impl Value<'_> {
    /// The value's text with quoted-pairs (`\x` → `x`) resolved.
    pub(crate) fn into_string(self) -> Option<String> {
        match self {
            Value::Bare(s) => Some(s.to_owned()),
            Value::Quoted(s) if !s.contains('\\') => Some(s.to_owned()),
            Value::Quoted(s) => Some(unescape(s)),
            Value::Unterminated => None,
        }
    }
}

/// Resolves RFC 9110 quoted-pairs: a backslash makes the next character literal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// A forward-only reader over one header value.
///
/// Every stop condition is an ASCII byte, so every slice it takes falls on UTF-8
/// character boundaries; `str::get` is used anyway so a mistake cannot panic.
pub(crate) struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Advances over bytes matching `keep` and returns what was passed.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.text.get(start..self.pos).unwrap_or("")
    }

    fn skip_whitespace(&mut self) {
        self.take_while(|b| b.is_ascii_whitespace());
    }

    /// The next scheme or param, skipping separators and stray bytes.
    ///
    /// A word is a param key only if `=` follows it (after optional whitespace);
    /// otherwise it is a scheme name. Values are read whole (quoted, or up to ',' or
    /// whitespace), so base64 padding inside a value is never taken for a `key=`.
    pub(crate) fn next_item(&mut self) -> Option<Item<'a>> {
        loop {
            self.take_while(|b| b.is_ascii_whitespace() || b == b',');
            match self.peek()? {
                b'"' => {
                    // A quoted-string where a word should be: junk, skip it whole.
                    self.pos += 1;
                    self.quoted_rest();
                    continue;
                }
                b'=' => {
                    // A stray '=' with no key.
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let word = self.take_while(|b| !is_word_end(b));
            let after_word = self.pos;
            self.skip_whitespace();
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_whitespace();
                return Some(Item::Param(word, self.value()));
            }
            self.pos = after_word;
            return Some(Item::Scheme(word));
        }
    }

    /// Reads a param value starting at the cursor: a quoted-string or a bare run.
    fn value(&mut self) -> Value<'a> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return self.quoted_rest();
        }
        Value::Bare(self.take_while(|b| b != b',' && !b.is_ascii_whitespace()))
    }

    /// Reads the rest of a quoted-string whose opening quote was consumed.
    fn quoted_rest(&mut self) -> Value<'a> {
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Value::Unterminated,
                Some(b'"') => break,
                // Skip the escaped byte too; if it is a UTF-8 lead byte, its
                // continuation bytes are never '"' or '\\', so the scan stays correct.
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
            }
        }
        let inner = self.text.get(start..self.pos);
        self.pos += 1;
        inner.map_or(Value::Unterminated, Value::Quoted)
    }
}

/// Bytes that end a scheme name or param key.
fn is_word_end(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b',' | b'=' | b'"')
}
