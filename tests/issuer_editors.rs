//! Issuer flag editors on realistic files: exact results, idempotence, order, rollback, refusals,
//! and the accept step that precedes the add step on a control plane with several apiservers.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keyrot::issuer::{
    Applied, EditError, FlagEdit, FlagFile, IssuerFlags, K3sDefaults, ManualChange, MigrationStep,
    RolledBack, apply, compute_edit, rollback,
};

/// One layout: its fixture, where it lives on a node, and the migration it goes through.
struct Case {
    file: FlagFile,
    fixture: &'static str,
    /// The expected files after the accept step, after the add step (alone or after the accept
    /// step), and after the drop step that follows it.
    after_accept: &'static str,
    after_add: &'static str,
    after_drop: &'static str,
    /// The file's name on a node, alone in its directory as in /etc/kubernetes/manifests.
    name: &'static str,
    mode: u32,
    old_issuer: &'static str,
    new_issuer: &'static str,
}

impl Case {
    fn accept(&self) -> MigrationStep {
        MigrationStep::AcceptNewIssuer {
            new_issuer: self.new_issuer.into(),
        }
    }

    fn add(&self) -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: self.new_issuer.into(),
            new_jwks_uri: format!("{}/openid/v1/jwks", self.new_issuer),
        }
    }

    fn drop_old(&self) -> MigrationStep {
        MigrationStep::DropOldIssuer {
            old_issuer: self.old_issuer.into(),
        }
    }
}

const KUBEADM: Case = Case {
    file: FlagFile::KubeadmManifest,
    fixture: "kubeadm-kube-apiserver.yaml",
    after_accept: "kubeadm-kube-apiserver.accept-issuer.yaml",
    after_add: "kubeadm-kube-apiserver.add-issuer.yaml",
    after_drop: "kubeadm-kube-apiserver.drop-issuer.yaml",
    name: "kube-apiserver.yaml",
    mode: 0o600,
    old_issuer: "https://kubernetes.default.svc.cluster.local",
    new_issuer: "https://oidc.example.com/prod-eu1",
};

fn k3s() -> Case {
    Case {
        file: FlagFile::K3sConfig(K3sDefaults::k3s("cluster.local")),
        fixture: "k3s-config.yaml",
        after_accept: "k3s-config.accept-issuer.yaml",
        after_add: "k3s-config.add-issuer.yaml",
        after_drop: "k3s-config.drop-issuer.yaml",
        name: "config.yaml",
        mode: 0o600,
        old_issuer: "https://kubernetes.default.svc.cluster.local",
        new_issuer: "https://oidc.example.com/edge-k3s",
    }
}

fn rke2() -> Case {
    Case {
        file: FlagFile::K3sConfig(K3sDefaults::rke2("cluster.local")),
        fixture: "rke2-config.yaml",
        after_accept: "rke2-config.accept-issuer.yaml",
        after_add: "rke2-config.add-issuer.yaml",
        after_drop: "rke2-config.drop-issuer.yaml",
        name: "config.yaml",
        mode: 0o640,
        old_issuer: "https://rke2.corp.example.com",
        new_issuer: "https://oidc.corp.example.com/rke2",
    }
}

const HARD_WAY: Case = Case {
    file: FlagFile::SystemdUnit,
    fixture: "hard-way-kube-apiserver.service",
    after_accept: "hard-way-kube-apiserver.accept-issuer.service",
    after_add: "hard-way-kube-apiserver.add-issuer.service",
    after_drop: "hard-way-kube-apiserver.drop-issuer.service",
    name: "kube-apiserver.service",
    mode: 0o644,
    old_issuer: "https://server.kubernetes.local:6443",
    new_issuer: "https://oidc.example.com/hard-way",
};

fn fixture(name: &str) -> String {
    common::read_string(&common::data("issuer").join(name))
}

/// A node: the flags file alone in its directory, and keyrot's state directory elsewhere
/// (created by the first backup).
struct Node {
    _root: tempfile::TempDir,
    dir: PathBuf,
    target: PathBuf,
    state: PathBuf,
}

fn node(case: &Case) -> Node {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc");
    fs::create_dir(&dir).unwrap();
    let target = dir.join(case.name);
    fs::write(&target, fixture(case.fixture)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(case.mode)).unwrap();
    let state = root.path().join("var/lib/keyrot/issuer");
    Node {
        dir,
        target,
        state,
        _root: root,
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_issuer_flag(arg: &str) -> bool {
    [
        "service-account-issuer=",
        "service-account-jwks-uri=",
        "api-audiences=",
    ]
    .iter()
    .any(|flag| arg.contains(flag))
}

/// The text without the three flags: their lines, or their items in a one-line `[...]` list.
fn without_issuer_flags(text: &str) -> Vec<String> {
    let mut kept = Vec::new();
    for line in text.lines() {
        if let Some((head, list)) = line.split_once('[') {
            let list = list.strip_suffix(']').expect("one-line lists end the line");
            let items: Vec<&str> = list.split(", ").filter(|i| !is_issuer_flag(i)).collect();
            kept.push(format!("{head}[{}]", items.join(", ")));
        } else if !is_issuer_flag(line) {
            kept.push(line.to_string());
        }
    }
    kept
}

fn compute(case: &Case, node: &Node, step: &MigrationStep) -> FlagEdit {
    compute_edit(&case.file, &node.target, step).unwrap()
}

/// Everything the issue asks of an editor, on one layout: add, again, rollback, add, drop,
/// again, rollback.
fn migrate_and_roll_back(case: &Case) {
    let node = node(case);
    let original = fs::read(&node.target).unwrap();

    let edit = compute(case, &node, &case.add());
    assert_eq!(edit.flags_before.issuers, [case.old_issuer]);
    assert_eq!(edit.flags_after.issuers, [case.new_issuer, case.old_issuer]);
    let applied = apply(&edit, &node.state).unwrap();
    let backup = node.state.join(format!("{}.before-add-issuer", case.name));
    assert_eq!(
        applied,
        Applied::Written {
            backup: backup.clone()
        }
    );
    assert_eq!(fs::read(&backup).unwrap(), original);
    let after_add = fs::read_to_string(&node.target).unwrap();
    assert_eq!(after_add, fixture(case.after_add), "{}", case.fixture);
    assert_eq!(mode_of(&node.target), case.mode);
    assert_eq!(
        names_in(&node.dir),
        [case.name],
        "nothing extra beside the file"
    );

    // New issuer first, old after it.
    let new_at = after_add
        .find(&format!("service-account-issuer={}", case.new_issuer))
        .unwrap();
    let old_at = after_add
        .find(&format!("service-account-issuer={}", case.old_issuer))
        .unwrap();
    assert!(
        new_at < old_at,
        "{}: new issuer before the old",
        case.fixture
    );
    // Every other line and argument is untouched, in order.
    assert_eq!(
        without_issuer_flags(&after_add),
        without_issuer_flags(&String::from_utf8(original.clone()).unwrap()),
        "{}",
        case.fixture
    );

    // Twice: nothing to do, nothing written.
    let again = compute(case, &node, &case.add());
    assert!(again.changes_nothing());
    assert_eq!(again.diff(), "");
    assert_eq!(apply(&again, &node.state).unwrap(), Applied::Unchanged);
    assert_eq!(fs::read_to_string(&node.target).unwrap(), after_add);

    // Rollback: the original bytes exactly, the backup gone, nothing left behind.
    assert_eq!(
        rollback(&node.target, &case.add(), &node.state).unwrap(),
        RolledBack::Restored {
            backup: backup.clone()
        }
    );
    assert_eq!(fs::read(&node.target).unwrap(), original);
    assert_eq!(mode_of(&node.target), case.mode);
    assert!(!backup.exists());
    assert_eq!(names_in(&node.dir), [case.name]);
    assert_eq!(
        rollback(&node.target, &case.add(), &node.state).unwrap(),
        RolledBack::NoBackup
    );
    assert_eq!(fs::read(&node.target).unwrap(), original);

    // Add again, then drop the old issuer after the grace period.
    apply(&compute(case, &node, &case.add()), &node.state).unwrap();
    let drop_edit = compute(case, &node, &case.drop_old());
    assert_eq!(drop_edit.flags_after.issuers, [case.new_issuer]);
    apply(&drop_edit, &node.state).unwrap();
    assert_eq!(
        fs::read_to_string(&node.target).unwrap(),
        fixture(case.after_drop),
        "{}",
        case.fixture
    );
    let again = compute(case, &node, &case.drop_old());
    assert!(again.changes_nothing());
    assert_eq!(apply(&again, &node.state).unwrap(), Applied::Unchanged);
    assert_eq!(names_in(&node.dir), [case.name]);
    let mut backups = names_in(&node.state);
    backups.sort();
    assert_eq!(
        backups,
        [
            format!("{}.before-add-issuer", case.name),
            format!("{}.before-drop-issuer", case.name)
        ]
    );
    rollback(&node.target, &case.drop_old(), &node.state).unwrap();
    assert_eq!(fs::read_to_string(&node.target).unwrap(), after_add);
}

#[test]
fn kubeadm_manifest_migrates_and_rolls_back() {
    migrate_and_roll_back(&KUBEADM);
}

#[test]
fn k3s_config_with_an_inline_list_migrates_and_rolls_back() {
    migrate_and_roll_back(&k3s());
}

#[test]
fn rke2_config_with_a_block_list_migrates_and_rolls_back() {
    migrate_and_roll_back(&rke2());
}

#[test]
fn hard_way_unit_migrates_and_rolls_back() {
    migrate_and_roll_back(&HARD_WAY);
}

/// The accept step on one layout: its exact file, again, then the add step, which ends with the
/// file of the add step alone, then each step rolled back from its own backup.
fn accept_then_add_and_roll_back(case: &Case) {
    let node = node(case);
    let original = fs::read(&node.target).unwrap();
    let original_text = String::from_utf8(original.clone()).unwrap();

    let edit = compute(case, &node, &case.accept());
    assert_eq!(edit.flags_before.issuers, [case.old_issuer]);
    assert_eq!(edit.flags_after.issuers, [case.old_issuer, case.new_issuer]);
    assert_eq!(edit.flags_after.jwks_uri, edit.flags_before.jwks_uri);
    let accept_backup = node
        .state
        .join(format!("{}.before-accept-issuer", case.name));
    assert_eq!(
        apply(&edit, &node.state).unwrap(),
        Applied::Written {
            backup: accept_backup.clone()
        }
    );
    assert_eq!(fs::read(&accept_backup).unwrap(), original);
    let after_accept = fs::read_to_string(&node.target).unwrap();
    assert_eq!(after_accept, fixture(case.after_accept), "{}", case.fixture);
    assert_eq!(mode_of(&node.target), case.mode);
    assert_eq!(names_in(&node.dir), [case.name]);

    // The old issuer stays first, so tokens are still issued with it; the new one follows.
    let old_at = after_accept
        .find(&format!("service-account-issuer={}", case.old_issuer))
        .unwrap();
    let new_at = after_accept
        .find(&format!("service-account-issuer={}", case.new_issuer))
        .unwrap();
    assert!(
        old_at < new_at,
        "{}: old issuer before the new",
        case.fixture
    );
    assert_eq!(
        without_issuer_flags(&after_accept),
        without_issuer_flags(&original_text),
        "{}",
        case.fixture
    );

    // Twice: nothing to do, nothing written.
    let again = compute(case, &node, &case.accept());
    assert!(again.changes_nothing());
    assert_eq!(again.diff(), "");
    assert_eq!(apply(&again, &node.state).unwrap(), Applied::Unchanged);
    assert_eq!(fs::read_to_string(&node.target).unwrap(), after_accept);

    // Then the add step: the flags of the add step alone, in a file that reads back as them
    // (here even the very same file), with a backup of its own.
    let add_alone = case
        .file
        .edit_text(&original_text, &case.add())
        .unwrap()
        .flags_after;
    let add_edit = compute(case, &node, &case.add());
    assert_eq!(add_edit.flags_after, add_alone, "{}", case.fixture);
    let add_backup = node.state.join(format!("{}.before-add-issuer", case.name));
    assert_eq!(
        apply(&add_edit, &node.state).unwrap(),
        Applied::Written {
            backup: add_backup.clone()
        }
    );
    assert_eq!(fs::read_to_string(&add_backup).unwrap(), after_accept);
    let after_add = fs::read_to_string(&node.target).unwrap();
    assert_eq!(case.file.read_flags(&after_add).unwrap(), add_alone);
    assert_eq!(after_add, fixture(case.after_add), "{}", case.fixture);
    // Accepting once the new issuer issues has nothing left to do.
    assert!(compute(case, &node, &case.accept()).changes_nothing());
    assert_eq!(
        names_in(&node.state),
        [
            format!("{}.before-accept-issuer", case.name),
            format!("{}.before-add-issuer", case.name)
        ]
    );

    // Rollback, last step first: each backup puts back the bytes its step started from.
    assert_eq!(
        rollback(&node.target, &case.add(), &node.state).unwrap(),
        RolledBack::Restored { backup: add_backup }
    );
    assert_eq!(fs::read_to_string(&node.target).unwrap(), after_accept);
    assert_eq!(
        rollback(&node.target, &case.accept(), &node.state).unwrap(),
        RolledBack::Restored {
            backup: accept_backup
        }
    );
    assert_eq!(fs::read(&node.target).unwrap(), original);
    assert_eq!(mode_of(&node.target), case.mode);
    assert!(names_in(&node.state).is_empty());
    assert_eq!(names_in(&node.dir), [case.name]);
    assert_eq!(
        rollback(&node.target, &case.accept(), &node.state).unwrap(),
        RolledBack::NoBackup
    );
    assert_eq!(fs::read(&node.target).unwrap(), original);
}

#[test]
fn kubeadm_manifest_accepts_then_adds_and_rolls_back() {
    accept_then_add_and_roll_back(&KUBEADM);
}

#[test]
fn k3s_config_with_an_inline_list_accepts_then_adds_and_rolls_back() {
    accept_then_add_and_roll_back(&k3s());
}

#[test]
fn rke2_config_with_a_block_list_accepts_then_adds_and_rolls_back() {
    accept_then_add_and_roll_back(&rke2());
}

#[test]
fn hard_way_unit_accepts_then_adds_and_rolls_back() {
    accept_then_add_and_roll_back(&HARD_WAY);
}

#[test]
fn kubeadm_dry_run_of_the_accept_puts_the_new_issuer_after_the_old() {
    let node = node(&KUBEADM);
    let edit = compute(&KUBEADM, &node, &KUBEADM.accept());
    let path = node.target.display();
    assert_eq!(
        edit.diff(),
        format!(
            "--- {path} (now)
+++ {path} (after accept-issuer)
@@ -35,6 +35,8 @@
     - --requestheader-username-headers=X-Remote-User
     - --secure-port=6443
     - --service-account-issuer=https://kubernetes.default.svc.cluster.local
+    - --service-account-issuer=https://oidc.example.com/prod-eu1
+    - --api-audiences=https://kubernetes.default.svc.cluster.local,https://oidc.example.com/prod-eu1
     - --service-account-key-file=/etc/kubernetes/pki/sa.pub
     - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
     - --service-cluster-ip-range=10.96.0.0/12
"
        )
    );
    assert_eq!(
        fs::read_to_string(&node.target).unwrap(),
        fixture(KUBEADM.fixture)
    );
    assert!(!node.state.exists());
}

#[test]
fn kubeadm_dry_run_shows_the_exact_change_and_writes_nothing() {
    let node = node(&KUBEADM);
    let edit = compute(&KUBEADM, &node, &KUBEADM.add());
    let path = node.target.display();
    assert_eq!(
        edit.diff(),
        format!(
            "--- {path} (now)
+++ {path} (after add-issuer)
@@ -34,7 +34,10 @@
     - --requestheader-group-headers=X-Remote-Group
     - --requestheader-username-headers=X-Remote-User
     - --secure-port=6443
+    - --service-account-issuer=https://oidc.example.com/prod-eu1
     - --service-account-issuer=https://kubernetes.default.svc.cluster.local
+    - --service-account-jwks-uri=https://oidc.example.com/prod-eu1/openid/v1/jwks
+    - --api-audiences=https://oidc.example.com/prod-eu1,https://kubernetes.default.svc.cluster.local
     - --service-account-key-file=/etc/kubernetes/pki/sa.pub
     - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
     - --service-cluster-ip-range=10.96.0.0/12
"
        )
    );
    assert_eq!(
        fs::read_to_string(&node.target).unwrap(),
        fixture(KUBEADM.fixture)
    );
    assert!(!node.state.exists());
}

#[test]
fn hard_way_dry_run_of_the_drop_shows_the_removed_lines() {
    let node = node(&HARD_WAY);
    apply(&compute(&HARD_WAY, &node, &HARD_WAY.add()), &node.state).unwrap();
    let edit = compute(&HARD_WAY, &node, &HARD_WAY.drop_old());
    let path = node.target.display();
    assert_eq!(
        edit.diff(),
        format!(
            "--- {path} (now)
+++ {path} (after drop-issuer)
@@ -24,9 +24,8 @@
   --service-account-key-file=/var/lib/kubernetes/service-accounts.crt \\
   --service-account-signing-key-file=/var/lib/kubernetes/service-accounts.key \\
   --service-account-issuer=https://oidc.example.com/hard-way \\
-  --service-account-issuer=https://server.kubernetes.local:6443 \\
   --service-account-jwks-uri=https://oidc.example.com/hard-way/openid/v1/jwks \\
-  --api-audiences=https://oidc.example.com/hard-way,https://server.kubernetes.local:6443 \\
+  --api-audiences=https://oidc.example.com/hard-way \\
   --service-cluster-ip-range=10.32.0.0/24 \\
   --service-node-port-range=30000-32767 \\
   --tls-cert-file=/var/lib/kubernetes/kube-api-server.crt \\
"
        )
    );
}

#[test]
fn wrong_new_issuers_are_refused_and_change_nothing() {
    for case in [KUBEADM, k3s(), rke2(), HARD_WAY] {
        let node = node(&case);
        let original = fs::read(&node.target).unwrap();
        let path = node.target.display();
        let malformed = [
            (
                "http://oidc.example.com/x",
                "new issuer: issuer URL \"http://oidc.example.com/x\" must use the https scheme",
            ),
            (
                "https://oidc.example.com/x?cluster=a",
                "new issuer: issuer URL \"https://oidc.example.com/x?cluster=a\" may not include \
                 a query",
            ),
        ];
        for (new_issuer, reason) in malformed {
            let add = MigrationStep::AddNewIssuerFirst {
                new_issuer: new_issuer.into(),
                new_jwks_uri: format!("{new_issuer}/openid/v1/jwks"),
            };
            let accept = MigrationStep::AcceptNewIssuer {
                new_issuer: new_issuer.into(),
            };
            for step in [add, accept] {
                let err = compute_edit(&case.file, &node.target, &step).unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!("{path}: {reason}; nothing was changed"),
                    "{}",
                    step.tag()
                );
            }
        }

        // The cluster's own issuer as the new one. Accepting it is refused in the same words,
        // except where it would change nothing: k3s's own audiences name it already.
        let same_as_current = format!(
            "{path}: new issuer \"{}\" is the issuer the cluster already uses (its only \
             --service-account-issuer); nothing to migrate; nothing was changed",
            case.old_issuer
        );
        let add_own = MigrationStep::AddNewIssuerFirst {
            new_issuer: case.old_issuer.into(),
            new_jwks_uri: format!("{}/openid/v1/jwks", case.old_issuer),
        };
        let err = compute_edit(&case.file, &node.target, &add_own).unwrap_err();
        assert_eq!(err.to_string(), same_as_current);
        let accept_own = MigrationStep::AcceptNewIssuer {
            new_issuer: case.old_issuer.into(),
        };
        let accepted = compute_edit(&case.file, &node.target, &accept_own);
        if case.fixture == "k3s-config.yaml" {
            assert!(accepted.unwrap().changes_nothing());
        } else {
            assert_eq!(accepted.unwrap_err().to_string(), same_as_current);
        }

        let err = compute_edit(&case.file, &node.target, &case.drop_old()).unwrap_err();
        assert!(
            err.to_string()
                .contains("it is the first --service-account-issuer"),
            "{err}"
        );
        assert_eq!(fs::read(&node.target).unwrap(), original);
        assert_eq!(names_in(&node.dir), [case.name]);
        assert!(!node.state.exists());
    }
}

#[test]
fn an_unparseable_manifest_is_refused_and_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let manifest = root.path().join("kube-apiserver.yaml");
    let broken = fixture("kubeadm-not-parseable.yaml");
    fs::write(&manifest, &broken).unwrap();
    let err = compute_edit(&FlagFile::KubeadmManifest, &manifest, &KUBEADM.add()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: the manifest does not parse as YAML: ",
            manifest.display()
        )),
        "{message}"
    );
    assert!(message.ends_with("; nothing was changed"), "{message}");
    assert_eq!(fs::read_to_string(&manifest).unwrap(), broken);
    assert_eq!(names_in(root.path()), ["kube-apiserver.yaml"]);
}

#[test]
fn a_backup_directory_among_the_manifests_is_refused_before_anything_is_written() {
    let node = node(&KUBEADM);
    let edit = compute(&KUBEADM, &node, &KUBEADM.add());
    let inside = node.dir.join("keyrot-backups");
    let err = apply(&edit, &inside).unwrap_err();
    assert!(matches!(err, EditError::BackupBesideTarget { .. }), "{err}");
    assert_eq!(names_in(&node.dir), ["kube-apiserver.yaml"]);
    assert_eq!(
        fs::read_to_string(&node.target).unwrap(),
        fixture(KUBEADM.fixture)
    );
    // The manifests directory itself, named another way, is refused too.
    let same = node.dir.join(".");
    assert!(matches!(
        apply(&edit, &same),
        Err(EditError::BackupBesideTarget { .. })
    ));
    assert_eq!(names_in(&node.dir), ["kube-apiserver.yaml"]);
}

#[test]
fn a_file_changed_after_the_dry_run_is_not_written() {
    let node = node(&HARD_WAY);
    let edit = compute(&HARD_WAY, &node, &HARD_WAY.add());
    let changed = fixture(HARD_WAY.fixture).replace("--v=2", "--v=4");
    fs::write(&node.target, &changed).unwrap();
    let err = apply(&edit, &node.state).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the file changed since the edit was computed; nothing was changed, compute the \
             edit again",
            node.target.display()
        )
    );
    assert_eq!(fs::read_to_string(&node.target).unwrap(), changed);
    assert!(!node.state.exists());
}

#[test]
fn the_manual_change_is_what_the_editors_write() {
    let flags: IssuerFlags = HARD_WAY
        .file
        .read_flags(&fixture(HARD_WAY.fixture))
        .unwrap();
    let change = ManualChange::new(&flags, &HARD_WAY.add()).unwrap();
    let edited = HARD_WAY
        .file
        .read_flags(&fixture(HARD_WAY.after_add))
        .unwrap();
    assert_eq!(change.after, edited);
    let accept = ManualChange::new(&flags, &HARD_WAY.accept()).unwrap();
    let accepted = HARD_WAY
        .file
        .read_flags(&fixture(HARD_WAY.after_accept))
        .unwrap();
    assert_eq!(accept.after, accepted);
    assert!(change.render().ends_with(
        "@@ -1,1 +1,4 @@
+--service-account-issuer=https://oidc.example.com/hard-way
 --service-account-issuer=https://server.kubernetes.local:6443
+--service-account-jwks-uri=https://oidc.example.com/hard-way/openid/v1/jwks
+--api-audiences=https://oidc.example.com/hard-way,https://server.kubernetes.local:6443
"
    ));
}
