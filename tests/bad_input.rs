//! Input that once made keyrot panic or hang: each test is named after the problem it pins.

mod common;

use std::path::Path;

use common::{keyrot, read_string};

/// The kind example plan with `retireAfter` replaced, in `dir`.
fn kind_plan_with(dir: &Path, field: &str, value: &str) -> std::path::PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("rotation-plans/kind.yaml");
    let text = read_string(&example);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{field}:")))
        .expect("the example sets the field");
    let changed = text.replace(line, &format!("  {field}: {value}"));
    assert_ne!(changed, text);
    let path = dir.join("kind.yaml");
    std::fs::write(&path, changed).unwrap();
    path
}

#[test]
fn plan_with_a_huge_retire_after_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (field, value) in [("retireAfter", "200000000y"), ("publishSettle", "262000y")] {
        let plan = kind_plan_with(dir.path(), field, value);
        for command in ["plan", "status", "validate"] {
            let run = keyrot([command.as_ref(), "-c".as_ref(), plan.as_os_str()]);
            assert_eq!(run.code, Some(1), "{command} {field}: {run:?}");
            let expected = format!(
                "timings.{field}: \"{value}\" is longer than 10 years, the longest wait keyrot accepts"
            );
            let line = run
                .stderr
                .lines()
                .find(|l| l.ends_with(&expected))
                .unwrap_or_else(|| panic!("{command} {field}: {}", run.stderr));
            let location = line.strip_suffix(&expected).unwrap();
            // FILE:LINE:COLUMN: of the value.
            let parts: Vec<&str> = location.trim_end_matches(": ").rsplitn(3, ':').collect();
            assert_eq!(parts.len(), 3, "{line}");
            assert!(
                parts[0].parse::<u32>().is_ok() && parts[1].parse::<u32>().is_ok(),
                "{line}"
            );
            assert!(parts[2].ends_with("kind.yaml"), "{line}");
        }
    }
}
