//! Text from files and servers made safe for a terminal: control characters become escapes.
//!
//! A PEM label, a YAML value or a server's answer may hold ESC sequences that would recolour,
//! retitle or rewrite the operator's terminal; everything keyrot echoes goes through here.

use std::borrow::Cow;

/// `text` with every control character but newline and tab written as `\u{1b}` and the like.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(16));
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("kid é\n\tok"), "kid é\n\tok");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("\u{1b}[31mred\u{7}\r\u{9b}"),
            "\\u{1b}[31mred\\u{7}\\u{d}\\u{9b}"
        );
    }
}
