//! Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; serde_json does
//! not. Applying the same escapes makes our bytes equal to kube-apiserver's for any issuer URL.

/// Re-escapes serde_json output the way `json.Marshal` would have written it.
///
/// Safe on a whole document: these characters can only occur inside JSON strings.
pub fn escape_like_go(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_go_escapes_and_nothing_else() {
        let json = serde_json::to_string("a<b>&c\u{2028}/\"").unwrap();
        assert_eq!(escape_like_go(json), r#""a\u003cb\u003e\u0026c\u2028/\"""#);
    }
}
