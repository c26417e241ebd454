//! YAML text to `RawPlan`, reporting syntax errors and every shape error (unknown field, wrong type).

use serde_yaml::Value;

use super::locate::{FieldPath, Position, Segment};
use super::raw::RawPlan;
use super::report::Report;

/// Enough for any real plan; a bound keeps a pathological file from looping long.
const MAX_SHAPE_PROBLEMS: usize = 50;

/// The raw plan, or `None` after reporting why the text does not have the plan's shape.
///
/// serde stops at the first error, so after each one the offending field is cut out of the
/// document and the rest is tried again; that way one run lists every unknown field and wrong
/// type, not just the first.
pub fn decode(text: &str, report: &mut Report) -> Option<RawPlan> {
    let mut document: Value = match serde_yaml::from_str(text) {
        Ok(document) => document,
        Err(err) => {
            let position = err.location().map(|l| Position {
                line: l.line(),
                column: l.column(),
            });
            report.at_position(position, syntax_message(&err));
            return None;
        }
    };
    if document.is_null() {
        report.at_position(Some(Position::START), "the plan is empty");
        return None;
    }
    let mut clean = true;
    for _ in 0..MAX_SHAPE_PROBLEMS {
        match serde_path_to_error::deserialize::<_, RawPlan>(document.clone()) {
            Ok(raw) => return clean.then_some(raw),
            Err(err) => {
                clean = false;
                let path = FieldPath::from(err.path());
                let message = err.into_inner().to_string();
                if message.starts_with("unknown field") {
                    report.at_key(&path, message);
                } else {
                    report.at_value(&path, message);
                }
                if !cut(&mut document, &path) {
                    return None;
                }
            }
        }
    }
    None
}

/// serde_yaml's message without the places it appends (" at line L column C", once for the
/// problem and once for its context): the problem's place is printed in front already.
fn syntax_message(err: &serde_yaml::Error) -> String {
    let mut message = err.to_string();
    while let Some(start) = message.find(" at line ") {
        let rest = &message[start + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line_len = digits(rest);
        let Some(after_column) = rest[line_len..].strip_prefix(" column ") else {
            break;
        };
        let end = start + " at line ".len() + line_len + " column ".len() + digits(after_column);
        message.replace_range(start..end, "");
    }
    message
}

/// Removes the mapping entry that holds `path` (the field itself, or the list it is an item of),
/// so the next attempt gets past it. False if there is nothing left to cut.
fn cut(document: &mut Value, path: &FieldPath) -> bool {
    let segments = path.segments();
    let Some(last_key) = segments.iter().rposition(|s| matches!(s, Segment::Key(_))) else {
        return false;
    };
    let mut node = document;
    for segment in &segments[..last_key] {
        let next = match (segment, node) {
            (Segment::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str()),
            (Segment::Index(index), Value::Sequence(items)) => items.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match (&segments[last_key], node) {
        (Segment::Key(key), Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut report = Report::new(Path::new("p.yaml"), text);
        let raw = decode(text, &mut report);
        assert!(raw.is_none(), "expected problems in {text:?}");
        let err = report.finish::<()>(None).unwrap_err();
        err.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_shape_problem_is_reported_not_just_the_first() {
        let text = "cluster: a\ncolour: blue\ntimings:\n  retireAfer: 2h\nkeepRetired: many\n";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("p.yaml:2:1: colour: unknown field `colour`"));
        assert!(found[1].starts_with("p.yaml:4:3: timings.retireAfer: unknown field `retireAfer`"));
        assert_eq!(
            found[2],
            "p.yaml:5:14: keepRetired: invalid type: string \"many\", expected u32"
        );
    }

    #[test]
    fn problems_inside_list_items_keep_their_index() {
        let text = "targets:\n  - name: a\n  - name: b\n    r2: x\n";
        let found = problems(text);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("p.yaml:4:5: targets[1].r2: unknown field `r2`"));
    }

    #[test]
    fn syntax_errors_name_their_place_once() {
        assert_eq!(
            problems("cluster: [a\n"),
            ["p.yaml:2:1: did not find expected ',' or ']', while parsing a flow sequence"]
        );
    }

    #[test]
    fn an_empty_file_is_one_problem() {
        assert_eq!(problems("# nothing\n"), ["p.yaml:1:1: the plan is empty"]);
    }

    #[test]
    fn a_clean_plan_decodes() {
        let text = "cluster: a\nprobe: none\napiserver:\n  restart: { staticPod: /m.yaml }\n";
        let mut report = Report::new(Path::new("p.yaml"), text);
        let raw = decode(text, &mut report).expect("decodes");
        assert!(matches!(raw.probe, Some(super::super::raw::OrNone::None)));
    }

    #[test]
    fn none_is_the_only_word_a_section_accepts() {
        assert_eq!(
            problems("probe: off\n"),
            ["p.yaml:1:8: probe: invalid value: string \"off\", expected `none` or a mapping"]
        );
    }
}
