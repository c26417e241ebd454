//! The real restarter: static-pod manifest edit, systemd unit restart, a command, or nothing.
//!
//! Units and commands run through [`super::command::run`]: clean environment, time limit, capped
//! output.
//!
//! A static pod restarts only when its manifest's content changes, so keyrot sets one annotation
//! (`keyrot.io/restart`) to a new value, editing that line alone and writing the manifest
//! atomically; the temp file is a dot-file, which the kubelet ignores.

use std::path::Path;

use super::command::{self, RunError};
use super::{AdapterError, Restarter};
use crate::atomic_file;
use crate::plan::{Plan, Restart};
use crate::signer::client::ServingError;

/// How long the signer may take to serve changed key files (its watcher looks every 250 ms).
const SIGNER_RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The annotation whose value changes on every static-pod restart.
pub const RESTART_ANNOTATION: &str = "keyrot.io/restart";

pub struct ProcessRestarter<'a> {
    plan: &'a Plan,
}

impl<'a> ProcessRestarter<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        ProcessRestarter { plan }
    }
}

impl Restarter for ProcessRestarter<'_> {
    fn restart(&mut self, tag: &str, controller_manager: bool) -> Result<(), AdapterError> {
        match &self.plan.apiserver.restart {
            Restart::ExternalSigner => signer_reload(self.plan)?,
            other => restart_one(other, tag)?,
        }
        if let Some(cm) = &self.plan.controller_manager
            && controller_manager
            && cm.restart != self.plan.apiserver.restart
        {
            restart_one(&cm.restart, tag)?;
        }
        Ok(())
    }
}

/// The apiserver takes its keys from keyrot's signer: done once the signer serves the files.
fn signer_reload(plan: &Plan) -> Result<(), AdapterError> {
    // Validation guarantees the section; without one there is no signer to wait for.
    let Some(signer) = &plan.signer else {
        return Ok(());
    };
    let sources = crate::signer::keyset::Sources::of(plan);
    crate::signer::client::wait_until_serving(&signer.socket, &sources, SIGNER_RELOAD_WAIT).map_err(
        |e| match e {
            ServingError::Keys(_) => AdapterError::permanent(e.to_string()),
            ServingError::NotYet { .. }
            | ServingError::Runtime(_)
            | ServingError::NotAnswering { .. } => AdapterError::transient(e.to_string()),
        },
    )
}

/// Restarts with `restart` (the signer's reload excepted), naming the cause `tag`.
pub(crate) fn restart_one(restart: &Restart, tag: &str) -> Result<(), AdapterError> {
    match restart {
        // Plan validation keeps the signer's reload off kube-controller-manager.
        Restart::None | Restart::ExternalSigner => Ok(()),
        Restart::StaticPod { manifest } => touch_static_pod(manifest, tag),
        Restart::SystemdUnit { unit, timeout } => run(&systemctl_restart(unit), *timeout),
        Restart::Command { argv, timeout } => run(argv, *timeout),
    }
}

/// `--` ends systemctl's options: the plan validates unit names, and this holds even if a name
/// starting with `-` got through, which systemctl would otherwise read as an option.
fn systemctl_restart(unit: &str) -> Vec<String> {
    ["systemctl", "restart", "--", unit]
        .map(String::from)
        .to_vec()
}

/// A command that cannot start (missing, not executable) needs a person; one that failed or
/// timed out may succeed next time (systemd busy, the apiserver slow to stop).
fn run(argv: &[String], timeout: std::time::Duration) -> Result<(), AdapterError> {
    command::run(argv, timeout).map_err(|e| match &e {
        RunError::Empty => AdapterError::permanent(e.to_string()),
        RunError::Spawn { error, .. } | RunError::Wait { error, .. } => {
            AdapterError::io(error, e.to_string())
        }
        RunError::TimedOut { .. } | RunError::Failed { .. } => {
            AdapterError::transient(e.to_string())
        }
    })
}

fn touch_static_pod(manifest: &Path, tag: &str) -> Result<(), AdapterError> {
    let text = crate::fs_read::read_to_string(manifest)
        .map_err(|e| AdapterError::io(&e, format!("{}: {e}", manifest.display())))?;
    let edited = set_restart_annotation(&text, tag).ok_or_else(|| {
        AdapterError::permanent(format!(
            "{}: no top-level `metadata:` mapping",
            manifest.display()
        ))
    })?;
    atomic_file::replace_keeping_metadata(manifest, edited.as_bytes(), 0o600)
        .map_err(AdapterError::write)
}

/// The manifest with `keyrot.io/restart: "<tag>"` under `metadata.annotations`, changing only that
/// line (or adding it, and the `annotations:` key if missing). Block-style YAML as kubeadm writes.
pub fn set_restart_annotation(manifest: &str, tag: &str) -> Option<String> {
    let lines: Vec<&str> = manifest.lines().collect();
    let metadata = lines.iter().position(|l| l.trim_end() == "metadata:")?;
    let child_indent = lines[metadata + 1..]
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .filter(|&n| n > 0)
        .unwrap_or(2);
    let block_end = (metadata + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent(lines[i]) < child_indent)
        .unwrap_or(lines.len());
    let pad = " ".repeat(child_indent);
    let annotation = format!("{pad}{pad}{RESTART_ANNOTATION}: \"{tag}\"");
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match (metadata + 1..block_end).find(|&i| lines[i].trim_end() == format!("{pad}annotations:")) {
        Some(annotations) => {
            let existing = (annotations + 1..block_end)
                .take_while(|&i| lines[i].trim().is_empty() || indent(lines[i]) > child_indent)
                .find(|&i| {
                    lines[i]
                        .trim_start()
                        .starts_with(&format!("{RESTART_ANNOTATION}:"))
                });
            match existing {
                Some(i) => out[i] = annotation,
                None => out.insert(annotations + 1, annotation),
            }
        }
        None => {
            out.insert(metadata + 1, format!("{pad}annotations:"));
            out.insert(metadata + 2, annotation);
        }
    }
    let mut text = out.join("\n");
    if manifest.ends_with('\n') {
        text.push('\n');
    }
    Some(text)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.1:6443\n  creationTimestamp: null\n  labels:\n    component: kube-apiserver\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n";

    #[test]
    fn a_missing_restart_command_needs_a_person_and_a_failing_one_is_retried() {
        use crate::adapters::FailureKind;
        let wait = std::time::Duration::from_secs(60);
        let missing = run(&["/nonexistent/keyrot-restart".to_string()], wait).unwrap_err();
        assert_eq!(missing.kind, FailureKind::Permanent, "{missing}");
        let failing = run(&["false".to_string()], wait).unwrap_err();
        assert_eq!(failing.kind, FailureKind::Transient, "{failing}");
    }

    #[test]
    fn a_manifest_without_metadata_is_a_permanent_failure() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("kube-apiserver.yaml");
        std::fs::write(&manifest, "kind: Pod\n").unwrap();
        let error = touch_static_pod(&manifest, "t1").unwrap_err();
        assert_eq!(
            error.kind,
            crate::adapters::FailureKind::Permanent,
            "{error}"
        );
        let missing = touch_static_pod(&dir.path().join("gone.yaml"), "t1").unwrap_err();
        assert_eq!(
            missing.kind,
            crate::adapters::FailureKind::Permanent,
            "{missing}"
        );
    }

    #[test]
    fn systemd_unit_starting_with_a_dash_is_not_an_option() {
        let argv = systemctl_restart("--now");
        assert_eq!(argv, ["systemctl", "restart", "--", "--now"]);
    }

    #[test]
    fn adds_the_annotation_under_existing_annotations_and_changes_nothing_else() {
        let edited = set_restart_annotation(KUBEADM, "r1").unwrap();
        let added: Vec<&str> = edited
            .lines()
            .filter(|l| !KUBEADM.lines().any(|k| k == *l))
            .collect();
        assert_eq!(added, ["    keyrot.io/restart: \"r1\""]);
        assert_eq!(edited.lines().count(), KUBEADM.lines().count() + 1);
        assert!(edited.ends_with('\n'));
    }

    #[test]
    fn a_second_restart_replaces_the_value_in_place() {
        let once = set_restart_annotation(KUBEADM, "r1").unwrap();
        let twice = set_restart_annotation(&once, "r2").unwrap();
        assert_eq!(twice.lines().count(), once.lines().count());
        assert!(twice.contains("keyrot.io/restart: \"r2\"") && !twice.contains("\"r1\""));
    }

    #[test]
    fn creates_annotations_when_the_manifest_has_none() {
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\nspec: {}\n";
        let edited = set_restart_annotation(manifest, "r1").unwrap();
        assert_eq!(
            edited,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    keyrot.io/restart: \"r1\"\n  name: kube-apiserver\nspec: {}\n"
        );
    }

    #[test]
    fn a_manifest_without_metadata_is_refused() {
        assert_eq!(set_restart_annotation("kind: Pod\n", "r1"), None);
    }
}
