//! Field paths (`targets[1].name`) and where each field of a plan sits in its YAML text.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, Span};

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The path of a field from the top of the plan, shown as `timings.retireAfter` or
/// `targets[1].name`; the top itself shows as an empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> FieldPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        FieldPath(segments)
    }

    pub fn index(&self, index: usize) -> FieldPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    pub fn parent(&self) -> Option<FieldPath> {
        let (_, rest) = self.0.split_last()?;
        Some(FieldPath(rest.to_vec()))
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl From<&serde_path_to_error::Path> for FieldPath {
    fn from(path: &serde_path_to_error::Path) -> FieldPath {
        use serde_path_to_error::Segment as S;
        let segments = path
            .iter()
            .map(|segment| match segment {
                S::Seq { index } => Segment::Index(*index),
                S::Map { key } => Segment::Key(key.clone()),
                S::Enum { variant } => Segment::Key(variant.clone()),
                S::Unknown => Segment::Key("?".to_string()),
            })
            .collect();
        FieldPath(segments)
    }
}

/// A place in the plan text; both numbers count from 1, columns in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };

    fn of(span: Span) -> Position {
        Position {
            line: span.start.line(),
            // saphyr counts columns from 0, editors and compilers from 1.
            column: span.start.col() + 1,
        }
    }
}

/// Where each node of a plan's YAML starts, by field path.
#[derive(Debug, Default)]
pub struct Locations {
    nodes: HashMap<FieldPath, Node>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Where the key is written; list items and the top have none.
    key: Option<Position>,
    value: Position,
}

/// What the walk over the parser's events is inside of.
enum Frame {
    /// A mapping; `key` is set between a key and its value.
    Mapping {
        path: FieldPath,
        key: Option<(String, Position)>,
    },
    Sequence {
        path: FieldPath,
        next: usize,
    },
    /// Inside a key that is itself a mapping or list (legal YAML, never a plan field): nothing
    /// in it has a field path, so only its depth is tracked.
    ComplexKey {
        depth: usize,
    },
}

impl Locations {
    /// Indexes the first document of `text`. Text the parser rejects is indexed up to the error:
    /// the YAML deserializer reports the syntax problem itself.
    pub fn index(text: &str) -> Locations {
        let mut nodes = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_seen = false;
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let position = Position::of(span);
            let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            match event {
                Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..) => {}
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::ComplexKey { depth }) = stack.last_mut()
                        && *depth > 1
                    {
                        *depth -= 1;
                    } else {
                        stack.pop();
                    }
                    continue;
                }
                Event::DocumentEnd => break,
                _ => continue,
            }
            let path = match stack.last_mut() {
                Some(Frame::ComplexKey { depth }) => {
                    if opens {
                        *depth += 1;
                    }
                    continue;
                }
                Some(Frame::Mapping {
                    key: key @ None, ..
                }) => {
                    let name = match &event {
                        Event::Scalar(name, ..) => name.to_string(),
                        _ => "?".to_string(),
                    };
                    *key = Some((name, position));
                    if opens {
                        stack.push(Frame::ComplexKey { depth: 1 });
                    }
                    continue;
                }
                Some(Frame::Mapping { path, key }) => {
                    let (name, key_position) = key.take().expect("matched Some above");
                    let path = path.key(&name);
                    nodes.insert(
                        path.clone(),
                        Node {
                            key: Some(key_position),
                            value: position,
                        },
                    );
                    path
                }
                Some(Frame::Sequence { path, next }) => {
                    let path = path.index(*next);
                    *next += 1;
                    nodes.insert(
                        path.clone(),
                        Node {
                            key: None,
                            value: position,
                        },
                    );
                    path
                }
                None if root_seen => break,
                None => {
                    root_seen = true;
                    nodes.insert(
                        FieldPath::root(),
                        Node {
                            key: None,
                            value: position,
                        },
                    );
                    FieldPath::root()
                }
            };
            match event {
                Event::MappingStart(..) => stack.push(Frame::Mapping { path, key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Sequence { path, next: 0 }),
                _ => {}
            }
        }
        Locations { nodes }
    }

    /// Where the value at `path` starts. A field that is not written (a missing one) is placed
    /// where its nearest written parent is named.
    pub fn value(&self, path: &FieldPath) -> Position {
        match self.nodes.get(path) {
            Some(node) => node.value,
            None => self.nearest_written(path),
        }
    }

    /// Where the key of the field at `path` is written (for fields that should not be there).
    pub fn key(&self, path: &FieldPath) -> Position {
        match self.nodes.get(path) {
            Some(node) => node.key.unwrap_or(node.value),
            None => self.nearest_written(path),
        }
    }

    fn nearest_written(&self, path: &FieldPath) -> Position {
        let mut current = path.parent();
        while let Some(path) = current {
            if let Some(node) = self.nodes.get(&path) {
                return node.key.unwrap_or(node.value);
            }
            current = path.parent();
        }
        Position::START
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    fn path(text: &str) -> FieldPath {
        // Test helper: "a.b[1].c" -> segments.
        let mut path = FieldPath::root();
        for part in text.split('.') {
            let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
            path = path.key(key);
            for index in indexes.split('[').filter(|s| !s.is_empty()) {
                path = path.index(index.trim_end_matches(']').parse().unwrap());
            }
        }
        path
    }

    const TEXT: &str = "\
# a comment
cluster: prod
timings:
  retireAfter: 2h
targets:
  - name: web
    localDirectory: /srv
  - { name: \"b\", cacheMaxAge: 1s }
schedule: { cron: \"0 3 * * SUN\" }
";

    #[test]
    fn block_and_flow_values_are_found() {
        let locations = Locations::index(TEXT);
        assert_eq!(locations.value(&path("cluster")), at(2, 10));
        assert_eq!(locations.key(&path("cluster")), at(2, 1));
        assert_eq!(locations.value(&path("timings.retireAfter")), at(4, 16));
        assert_eq!(
            locations.value(&path("targets[0].localDirectory")),
            at(7, 21)
        );
        assert_eq!(locations.value(&path("targets[1].name")), at(8, 13));
        assert_eq!(locations.key(&path("targets[1].cacheMaxAge")), at(8, 18));
        assert_eq!(locations.value(&path("schedule.cron")), at(9, 19));
    }

    #[test]
    fn a_missing_field_is_placed_at_its_nearest_written_parent() {
        let locations = Locations::index(TEXT);
        assert_eq!(locations.value(&path("timings.gateTimeout")), at(3, 1));
        assert_eq!(
            locations.value(&path("targets[1].localDirectory")),
            at(8, 5)
        );
        // Nothing of `issuer` is written: the start of the plan's mapping, after the comment.
        assert_eq!(locations.value(&path("issuer.url")), at(2, 1));
        assert_eq!(
            Locations::index("").value(&path("issuer.url")),
            Position::START
        );
    }

    #[test]
    fn complex_keys_do_not_confuse_the_walk() {
        let text = "? [a, b]\n: 1\nafter: 2\n";
        let locations = Locations::index(text);
        assert_eq!(locations.value(&path("after")), at(3, 8));
    }

    #[test]
    fn paths_display_like_the_yaml() {
        assert_eq!(path("targets[2].name").to_string(), "targets[2].name");
        assert_eq!(FieldPath::root().key("a").key("b").to_string(), "a.b");
        assert_eq!(FieldPath::root().to_string(), "");
    }
}
