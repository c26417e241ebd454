//! Input that once made keyrot panic or hang: each test is named after the problem it pins.

mod common;

use std::path::Path;
use std::process::Command;

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

/// A good key after a block whose label is `label`.
fn pem_with_label(dir: &Path, label: &str) -> std::path::PathBuf {
    let good = read_string(&common::pem("rsa-spki-public.pem"));
    let path = dir.join("odd.pem");
    let text = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n{good}");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn inspect_of_a_pem_label_longer_than_65535_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = pem_with_label(dir.path(), &"X".repeat(70_000));
    let before = std::fs::read(&path).unwrap();
    let run = keyrot(["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("PUBLIC KEY"), "{}", run.stdout);
    assert!(run.stdout.contains(&"X".repeat(70_000)));
    assert_eq!(std::fs::read(&path).unwrap(), before, "input untouched");
}

#[test]
fn inspect_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let path = pem_with_label(dir.path(), "\u{1b}]0;owned\u{7}\u{1b}[31mEVIL");
    let inspect = keyrot(["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(inspect.code, Some(0), "{}", inspect.stderr);
    assert!(
        inspect
            .stdout
            .contains("\\u{1b}]0;owned\\u{7}\\u{1b}[31mEVIL"),
        "{}",
        inspect.stdout
    );
    // jwks reports the skipped block on stderr: escaped as well.
    let jwks = keyrot(["jwks".as_ref(), path.as_os_str()]);
    assert_eq!(jwks.code, Some(0), "{}", jwks.stderr);
    assert!(jwks.stderr.contains("\\u{1b}"), "{}", jwks.stderr);
    for run in [&inspect, &jwks] {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
        }
    }
}

#[test]
fn key_path_that_is_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("sa.pub");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Without a writer, opening the FIFO for reading would block forever: the test would hang.
    for command in ["jwks", "inspect"] {
        let run = keyrot([command.as_ref(), fifo.as_os_str()]);
        assert_eq!(run.code, Some(1), "{command}: {run:?}");
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(text.contains("sa.pub"), "{command}: {text}");
        assert!(
            text.contains("is a FIFO (named pipe), not a regular file"),
            "{command}: {text}"
        );
    }
}

#[test]
fn key_path_that_is_a_device_is_refused() {
    let run = keyrot(["jwks", "/dev/zero"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("/dev/zero: cannot read: is a character device, not a regular file"),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_larger_than_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    let cap = keyrot::fs_read::MAX_BYTES as usize;
    // A valid YAML comment, one byte over the cap.
    let mut text = String::from("#");
    text.push_str(&"x".repeat(cap));
    std::fs::write(&plan, &text).unwrap();
    for command in ["validate", "plan"] {
        let run = keyrot([command.as_ref(), "-c".as_ref(), plan.as_os_str()]);
        assert_eq!(run.code, Some(1), "{command}: {}", run.stderr);
        assert!(
            run.stderr.contains("plan.yaml"),
            "{command}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!("larger than {cap} bytes")),
            "{command}: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read(&plan).unwrap().len(),
        cap + 1,
        "input untouched"
    );
}
