//! Plan problems: each names the file, line, column and field path; `PlanError` holds them all.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{FieldPath, Locations, Position};

/// One thing wrong with a plan, shown as `file:line:column: field.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// `None` only when the file could not be read at all.
    pub position: Option<Position>,
    /// Empty for problems of the whole document (syntax, an empty file).
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(Position { line, column }) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.path.is_root() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a plan, in the order they appear in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for PlanError {
    /// One problem per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems while a plan is checked, placing each at its field in the text.
pub struct Report<'a> {
    file: &'a Path,
    locations: Locations,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a Path, text: &str) -> Report<'a> {
        Report {
            file,
            locations: Locations::index(text),
            problems: Vec::new(),
        }
    }

    /// A problem with the value written at `path` (or, for a missing field, with its absence).
    pub fn at_value(&mut self, path: &FieldPath, message: impl Into<String>) {
        let position = self.locations.value(path);
        self.push(Some(position), path.clone(), message.into());
    }

    /// A problem with the field's key itself, such as a field that does not exist.
    pub fn at_key(&mut self, path: &FieldPath, message: impl Into<String>) {
        let position = self.locations.key(path);
        self.push(Some(position), path.clone(), message.into());
    }

    /// A problem the YAML parser placed itself.
    pub fn at_position(&mut self, position: Option<Position>, message: impl Into<String>) {
        self.push(
            position.or(Some(Position::START)),
            FieldPath::root(),
            message.into(),
        );
    }

    /// The value if nothing was found wrong, else every problem, sorted by place in the file.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, PlanError> {
        let mut problems = self.problems;
        match value {
            Some(value) if problems.is_empty() => Ok(value),
            _ => {
                // A stable sort keeps the order of checks for problems at the same place.
                problems.sort_by_key(|p| p.position);
                assert!(
                    !problems.is_empty(),
                    "a plan was rejected without a problem"
                );
                Err(PlanError { problems })
            }
        }
    }

    fn push(&mut self, position: Option<Position>, path: FieldPath, message: String) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            position,
            path,
            message,
        });
    }
}

impl PlanError {
    /// The plan file could not be read.
    pub fn unreadable(file: &Path, error: &std::io::Error) -> PlanError {
        PlanError {
            problems: vec![Problem {
                file: file.to_path_buf(),
                position: None,
                path: FieldPath::root(),
                message: format!("cannot read the plan: {error}"),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_one_per_line_in_file_order() {
        let text = "cluster: x\ntimings:\n  retireAfter: 2h\n";
        let file = Path::new("plans/x.yaml");
        let mut report = Report::new(file, text);
        let retire = FieldPath::root().key("timings").key("retireAfter");
        report.at_value(&retire, "too short");
        report.at_value(&FieldPath::root().key("cluster"), "bad name");
        let err = report.finish::<()>(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plans/x.yaml:1:10: cluster: bad name\nplans/x.yaml:3:16: timings.retireAfter: too short"
        );
    }

    #[test]
    fn a_value_without_problems_passes() {
        let report = Report::new(Path::new("x.yaml"), "");
        assert_eq!(report.finish(Some(7)), Ok(7));
    }

    #[test]
    fn an_unreadable_file_has_no_line() {
        let err = PlanError::unreadable(Path::new("x.yaml"), &std::io::Error::other("gone"));
        assert_eq!(err.to_string(), "x.yaml: cannot read the plan: gone");
    }
}
