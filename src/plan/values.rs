//! Single values from raw to typed (paths, durations, names), reporting each bad one where it is.

use std::path::{Component, Path, PathBuf};

use chrono::TimeDelta;

use super::Flavour;
use super::locate::FieldPath;
use super::raw::RawDuration;
use super::report::Report;

/// What every check needs: the report to add to, the directory relative paths start from, and
/// the flavour (for saying why a field is required).
pub struct Context<'a> {
    pub report: Report<'a>,
    base_dir: PathBuf,
    /// `None` when the plan names none; that is reported once, and the fields a flavour would
    /// have supplied are then not reported missing one by one.
    flavour: Option<Flavour>,
}

impl<'a> Context<'a> {
    pub fn new(report: Report<'a>, plan_file: &Path, flavour: Option<Flavour>) -> Context<'a> {
        let dir = match plan_file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Absolute, so that the daemon's working directory never changes what a path means.
        let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Context {
            report,
            base_dir: normalize(&base_dir),
            flavour,
        }
    }

    pub fn error(&mut self, at: &FieldPath, message: impl Into<String>) {
        self.report.at_value(at, message);
    }

    /// A field every plan must have.
    pub fn missing(&mut self, at: &FieldPath, why: &str) {
        self.report.at_value(at, format!("required: {why}"));
    }

    /// A field the flavour would supply, but this one does not.
    pub fn missing_default(&mut self, at: &FieldPath) {
        match self.flavour {
            None => {}
            Some(Flavour::Custom) => {
                self.error(at, "required: flavour custom supplies no defaults")
            }
            Some(flavour) => self.error(
                at,
                format!(
                    "required: flavour {} has no default for it",
                    flavour_name(flavour)
                ),
            ),
        }
    }

    /// A written path, resolved against the plan file's directory and cleaned of `.` and `..`.
    pub fn path(&mut self, at: &FieldPath, written: &Path) -> Option<PathBuf> {
        if written.as_os_str().is_empty() {
            self.error(at, "must not be empty");
            return None;
        }
        Some(normalize(&self.base_dir.join(written)))
    }

    /// A written path, else the default, else a missing-default problem.
    pub fn path_or(
        &mut self,
        at: &FieldPath,
        written: Option<&PathBuf>,
        default: Option<&PathBuf>,
    ) -> Option<PathBuf> {
        match (written, default) {
            (Some(written), _) => self.path(at, written),
            (None, Some(default)) => Some(default.clone()),
            (None, None) => {
                self.missing_default(at);
                None
            }
        }
    }

    /// A name or other text that must say something.
    pub fn text(&mut self, at: &FieldPath, written: &str) -> Option<String> {
        if written.trim().is_empty() {
            self.error(at, "must not be empty");
            return None;
        }
        Some(written.to_string())
    }

    /// A written duration (`30s`, `10m`, `24h`, `1h30m`), or the default when not written.
    /// Longer than [`MAX_DURATION`] is refused, so adding one to any time keyrot meets cannot
    /// leave chrono's calendar.
    pub fn duration(
        &mut self,
        at: &FieldPath,
        written: Option<&RawDuration>,
        default: TimeDelta,
    ) -> Option<TimeDelta> {
        let Some(RawDuration(text)) = written else {
            return Some(default);
        };
        let Ok(parsed) = humantime::parse_duration(text) else {
            self.error(
                at,
                format!("{text:?} is not a duration: write a number and a unit, such as 30s, 10m, 24h or 1h30m"),
            );
            return None;
        };
        match TimeDelta::from_std(parsed) {
            Ok(duration) if duration <= MAX_DURATION => Some(duration),
            _ => {
                self.error(
                    at,
                    format!("{text:?} is longer than 10 years, the longest wait keyrot accepts"),
                );
                None
            }
        }
    }
}

/// The longest duration a plan may write: 10 years as humantime counts them (`10y`, 365.25 days
/// each).
pub const MAX_DURATION: TimeDelta = TimeDelta::hours(87_660);

pub fn flavour_name(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Kubeadm => "kubeadm",
        Flavour::K3s => "k3s",
        Flavour::Rke2 => "rke2",
        Flavour::Systemd => "systemd",
        Flavour::Custom => "custom",
    }
}

/// `a/./b/../c` -> `a/c`, without touching the file system: the files need not exist yet, and
/// comparisons (same file twice, a directory inside another) must see through such spellings.
pub fn normalize(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match clean.components().next_back() {
                Some(Component::Normal(_)) => {
                    clean.pop();
                }
                // `..` of the root is the root.
                Some(Component::RootDir) => {}
                _ => clean.push(component),
            },
            other => clean.push(other),
        }
    }
    clean
}

/// A duration as people write it: `24h`, `1h30m`, `45s`, `1500ms`; `0s` for zero.
pub fn format_duration(duration: TimeDelta) -> String {
    let millis = duration.num_milliseconds();
    if millis == 0 {
        return "0s".to_string();
    }
    let parts = [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")];
    let mut rest = millis;
    let mut text = String::new();
    for (size, unit) in parts {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(
            normalize(Path::new("/etc/kubernetes/manifests/../pki")),
            Path::new("/etc/kubernetes/pki")
        );
        assert_eq!(normalize(Path::new("/..")), Path::new("/"));
        assert_eq!(normalize(Path::new("../../a")), Path::new("../../a"));
    }

    #[test]
    fn relative_paths_resolve_against_the_plan_directory() {
        let file = Path::new("/srv/plans/x.yaml");
        let mut cx = Context::new(Report::new(file, ""), file, None);
        let at = FieldPath::root().key("stateDir");
        assert_eq!(
            cx.path(&at, Path::new("sandbox/state")),
            Some("/srv/plans/sandbox/state".into())
        );
        assert_eq!(
            cx.path(&at, Path::new("../state")),
            Some("/srv/state".into())
        );
        assert_eq!(
            cx.path(&at, Path::new("/var/lib/keyrot")),
            Some("/var/lib/keyrot".into())
        );
    }

    #[test]
    fn durations_format_like_they_are_written() {
        assert_eq!(format_duration(TimeDelta::hours(24)), "24h");
        assert_eq!(format_duration(TimeDelta::minutes(90)), "1h30m");
        assert_eq!(format_duration(TimeDelta::milliseconds(1500)), "1s500ms");
        assert_eq!(format_duration(TimeDelta::zero()), "0s");
    }

    #[test]
    fn bad_durations_are_reported() {
        let file = Path::new("x.yaml");
        let mut cx = Context::new(Report::new(file, "a: forever\n"), file, None);
        let at = FieldPath::root().key("a");
        let written = RawDuration("forever".into());
        assert_eq!(cx.duration(&at, Some(&written), TimeDelta::zero()), None);
        assert_eq!(
            cx.duration(&at, Some(&RawDuration("2h30m".into())), TimeDelta::zero()),
            Some(TimeDelta::minutes(150))
        );
        assert_eq!(
            cx.duration(&at, None, TimeDelta::seconds(7)),
            Some(TimeDelta::seconds(7))
        );
        let err = cx.report.finish::<()>(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml:1:4: a: \"forever\" is not a duration: write a number and a unit, such as 30s, 10m, 24h or 1h30m"
        );
    }

    #[test]
    fn durations_longer_than_ten_years_are_refused() {
        let file = Path::new("x.yaml");
        let mut cx = Context::new(Report::new(file, "a: 200000000y\n"), file, None);
        let at = FieldPath::root().key("a");
        assert_eq!(
            cx.duration(&at, Some(&RawDuration("10y".into())), TimeDelta::zero()),
            Some(MAX_DURATION)
        );
        let huge = RawDuration("200000000y".into());
        assert_eq!(cx.duration(&at, Some(&huge), TimeDelta::zero()), None);
        // Beyond what chrono can hold at all.
        let huger = RawDuration("900000000y".into());
        assert_eq!(cx.duration(&at, Some(&huger), TimeDelta::zero()), None);
        let err = cx.report.finish::<()>(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml:1:4: a: \"200000000y\" is longer than 10 years, the longest wait keyrot accepts\n\
             x.yaml:1:4: a: \"900000000y\" is longer than 10 years, the longest wait keyrot accepts"
        );
    }
}
