//! YAML lists of strings at the text level, for editors that must keep formatting and comments.
//!
//! Only the simple forms kubeadm and people write are read: block items `- value` one per line,
//! and one-line flow lists `[a, "b"]`, each value plain, 'single-' or "double-quoted" without
//! escapes. The editors compare what is read here with what serde_yaml parses and refuse the
//! file when they differ, so anything fancier is refused rather than misread.

/// How a scalar was written, so new items can be written the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Single,
    Double,
}

impl Style {
    pub(crate) fn render(self, value: &str) -> String {
        match self {
            Style::Plain => value.to_string(),
            Style::Single => format!("'{value}'"),
            Style::Double => format!("\"{value}\""),
        }
    }
}

/// A one-line scalar and anything after it: `(value, style, rest)`. `rest` is what follows the
/// scalar (spaces, a comment, a comma in a flow list); `None` for forms not read here.
pub(crate) fn scalar(text: &str, in_flow: bool) -> Option<(String, Style, &str)> {
    if let Some(body) = text.strip_prefix('"') {
        let end = body.find('"')?;
        let value = &body[..end];
        if value.contains('\\') {
            return None;
        }
        return Some((value.to_string(), Style::Double, &body[end + 1..]));
    }
    if let Some(body) = text.strip_prefix('\'') {
        // '' inside single quotes is one quote.
        let mut value = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                return Some((value, Style::Single, &body[i + 1..]));
            }
            value.push(c);
        }
        return None;
    }
    // A plain scalar ends at " #" (a comment), or in a flow list at ',' or ']'.
    let mut end = text.len();
    if let Some(i) = text.find(" #") {
        end = end.min(i);
    }
    if in_flow && let Some(i) = text.find([',', ']']) {
        end = end.min(i);
    }
    let value = text[..end].trim_end();
    Some((value.to_string(), Style::Plain, &text[value.len()..]))
}

/// True when `rest` (what follows a scalar on its line) holds nothing but spaces or a comment.
pub(crate) fn only_comment(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.is_empty() || rest.starts_with('#')
}

/// An item of a block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// Index of the item's line.
    pub line: usize,
    /// Everything before the value: indentation and `- `.
    pub prefix: String,
    pub value: String,
    pub style: Style,
}

/// The block list whose key is on line `key`: its items, in order. The list ends at the first
/// line (not blank, not a comment) that is not an item at the first item's indentation.
/// `None` when an item is in a form not read here.
pub(crate) fn block_items(lines: &[&str], key: usize) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    let mut indent = None;
    for (i, line) in lines.iter().enumerate().skip(key + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this_indent = line.len() - trimmed.len();
        let Some(body) = trimmed.strip_prefix("- ") else {
            break;
        };
        if *indent.get_or_insert(this_indent) != this_indent {
            break;
        }
        let (value, style, rest) = scalar(body.trim_start(), false)?;
        if !only_comment(rest) {
            return None;
        }
        items.push(Item {
            line: i,
            prefix: line[..line.len() - body.trim_start().len()].to_string(),
            value,
            style,
        });
    }
    Some(items)
}

/// An item of a one-line flow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowItem {
    pub value: String,
    pub style: Style,
    /// The item as written, quotes included.
    pub original: String,
}

/// A flow list `[a, "b", 'c']` on one line: its items and what follows the `]`.
/// `None` when the text is not such a list (or the list does not close on this line).
pub(crate) fn flow_items(text: &str) -> Option<(Vec<FlowItem>, &str)> {
    let mut rest = text.strip_prefix('[')?.trim_start();
    let mut items = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            return Some((items, after));
        }
        let (value, style, after) = scalar(rest, true)?;
        let original = rest[..rest.len() - after.len()].to_string();
        if style == Style::Plain && value.is_empty() {
            return None;
        }
        items.push(FlowItem {
            value,
            style,
            original,
        });
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.starts_with(']') => after,
            None => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_quoted_scalars_and_what_follows() {
        assert_eq!(
            scalar("--v=2 # verbose", false),
            Some(("--v=2".into(), Style::Plain, " # verbose"))
        );
        assert_eq!(
            scalar("\"a=b\"", false),
            Some(("a=b".into(), Style::Double, ""))
        );
        assert_eq!(
            scalar("'it''s'", false),
            Some(("it's".into(), Style::Single, ""))
        );
        assert_eq!(scalar("\"a\\\"b\"", false), None);
        assert_eq!(scalar("\"open", false), None);
    }

    #[test]
    fn reads_a_block_list_up_to_the_next_key() {
        let lines = [
            "args:",
            "  - one",
            "  # a comment",
            "  - \"two\"",
            "other: x",
            "  - not-an-item",
        ];
        let items = block_items(&lines, 0).unwrap();
        let values: Vec<(&str, usize, &str)> = items
            .iter()
            .map(|i| (i.value.as_str(), i.line, i.prefix.as_str()))
            .collect();
        assert_eq!(values, [("one", 1, "  - "), ("two", 3, "  - ")]);
    }

    #[test]
    fn reads_a_one_line_flow_list() {
        let (items, rest) = flow_items("[\"a=1\", b=2,'c'] # tail").unwrap();
        let values: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.value.as_str(), i.original.as_str()))
            .collect();
        assert_eq!(values, [("a=1", "\"a=1\""), ("b=2", "b=2"), ("c", "'c'")]);
        assert_eq!(rest, " # tail");
        assert_eq!(flow_items("[]").unwrap().0, vec![]);
        assert_eq!(flow_items("[\"a\",").map(|(i, _)| i.len()), None);
    }
}
