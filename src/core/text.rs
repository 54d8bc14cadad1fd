//! Text a seller (or anyone but the operator) chose, made safe to show the operator: the one
//! place that decides what an approval card, a CSV cell, a webhook field or a log line may
//! contain.
//!
//! Invariants of [`shown`]'s output: no control characters (C0, DEL, C1), no bidirectional
//! controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), no zero-width or invisible format
//! characters (U+00AD, U+180E, U+200B–U+200D, U+2060–U+2064, U+FEFF, U+FFF9–U+FFFB, tag
//! characters U+E0000–U+E007F), no line or paragraph separators (U+2028/U+2029): each is
//! replaced by U+FFFD, so tampering stays visible rather than silently disappearing. At most
//! `max_chars` characters, the last of them `…` when cut. Text already clean and short is
//! returned borrowed.

use std::borrow::Cow;

/// The cap for a seller-chosen name (an L402 `services=` caveat, a service in an event).
pub const NAME_MAX: usize = 128;

/// The cap for any other string the operator is shown (decline reasons, failures, details).
pub const TEXT_MAX: usize = 1024;

/// What stands in for a character that must not be shown.
const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` may reach the operator as it is.
fn showable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        ))
}

/// `text` cleaned and capped as the module says.
pub fn shown(text: &str, max_chars: usize) -> Cow<'_, str> {
    let mut chars = 0usize;
    let mut clean = true;
    for c in text.chars() {
        chars += 1;
        clean &= showable(c);
    }
    if clean && chars <= max_chars {
        return Cow::Borrowed(text);
    }
    let keep = if chars <= max_chars {
        chars
    } else {
        max_chars.saturating_sub(1)
    };
    let mut out: String = text
        .chars()
        .take(keep)
        .map(|c| if showable(c) { c } else { REPLACEMENT })
        .collect();
    if chars > max_chars && max_chars > 0 {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Every string in `value` (keys included) passed through [`shown`] with `max_chars`.
pub fn shown_json(value: &mut serde_json::Value, max_chars: usize) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = shown(s, max_chars) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shown_json(v, max_chars)),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|k| matches!(shown(k, max_chars), Cow::Owned(_)))
                .cloned()
                .collect();
            for key in dirty {
                if let Some(v) = map.remove(&key) {
                    map.insert(shown(&key, max_chars).into_owned(), v);
                }
            }
            map.values_mut().for_each(|v| shown_json(v, max_chars));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_replaced_and_length_capped() {
        let hostile = "cheap\u{202E}gnp.exe\u{1b}[31m\nFAKE\u{200B}\u{2066}x\u{E0041}";
        let out = shown(hostile, NAME_MAX);
        assert_eq!(
            out,
            "cheap\u{FFFD}gnp.exe\u{FFFD}[31m\u{FFFD}FAKE\u{FFFD}\u{FFFD}x\u{FFFD}"
        );
        assert!(matches!(shown("plain ünïcode – ok", 64), Cow::Borrowed(_)));
        let long = "a".repeat(300);
        let out = shown(&long, NAME_MAX);
        assert_eq!(out.chars().count(), NAME_MAX);
        assert!(out.ends_with('…'));
        assert_eq!(shown(&"é".repeat(5), 5), "ééééé");
    }

    #[test]
    fn every_string_of_a_json_value_is_shown() {
        let mut v = serde_json::json!({
            "service": "a\u{202E}b",
            "list": ["ok", "c\u{7}"],
            "n": 5,
            "k\u{0}": true
        });
        shown_json(&mut v, TEXT_MAX);
        assert_eq!(
            v,
            serde_json::json!({
                "service": "a\u{FFFD}b",
                "list": ["ok", "c\u{FFFD}"],
                "n": 5,
                "k\u{FFFD}": true
            })
        );
    }
}
