//! Checks across sections: key files kept apart, nothing written where the node runs files, caches.

use std::path::{Path, PathBuf};

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::presets::WatchedDir;
use super::values::{Context, format_duration};
use super::{Apiserver, ControllerManager, Restart, Target};

/// Each key file has one job. Sharing one between jobs breaks a rotation in a way kube does not
/// detect: rewriting the signing key would change the verification set under the apiserver.
pub fn key_files_apart(
    cx: &mut Context,
    apiserver: &Apiserver,
    controller_manager: Option<&ControllerManager>,
) {
    let at = FieldPath::root().key("apiserver");
    let bundle = &apiserver.verification_bundle;
    let extras = &apiserver.extra_verification_files;
    let extra_at = |i: usize| at.key("extraVerificationKeyFiles").index(i);

    let signing = &apiserver.signing_key_file;
    if signing == bundle {
        cx.error(
            &at.key("signingKeyFile"),
            format!(
                "{} is also apiserver.verificationKeyFile: keyrot rewrites the bundle and the signing key \
                 separately, so they must be two files",
                signing.display()
            ),
        );
    }
    if let Some(i) = extras.iter().position(|extra| extra == signing) {
        cx.error(
            &at.key("signingKeyFile"),
            format!(
                "{} is also {}: promoting a new key would drop the old one from verification at once",
                signing.display(),
                extra_at(i)
            ),
        );
    }
    for (i, extra) in extras.iter().enumerate() {
        if extra == bundle {
            cx.error(
                &extra_at(i),
                format!(
                    "{} is the bundle keyrot manages (apiserver.verificationKeyFile): list it only there",
                    extra.display()
                ),
            );
        } else if let Some(first) = extras[..i].iter().position(|earlier| earlier == extra) {
            cx.error(
                &extra_at(i),
                format!(
                    "{} is listed twice (also {})",
                    extra.display(),
                    extra_at(first)
                ),
            );
        }
    }
    // A controller manager sharing the signing key (kubeadm's sa.key) is covered by the checks
    // above; one with a key file of its own gets the same checks here.
    if let Some(cm) = controller_manager.filter(|cm| &cm.private_key_file != signing) {
        let private = &cm.private_key_file;
        let shared = if private == bundle {
            Some("apiserver.verificationKeyFile".to_string())
        } else {
            extras
                .iter()
                .position(|extra| extra == private)
                .map(|i| extra_at(i).to_string())
        };
        if let Some(other) = shared {
            cx.error(
                &FieldPath::root()
                    .key("controllerManager")
                    .key("privateKeyFile"),
                format!(
                    "{} is also {other}: a private key file must not be a verification file",
                    private.display()
                ),
            );
        }
    }
}

/// The kubelet runs every file in a static-pod directory (k3s and RKE2 also apply every file in
/// their manifests directory): a key, a state file or a temp file there would be run. Paths are
/// compared as written and with symlinks resolved: a symlink must not lead a write there.
pub fn nothing_in_watched_dirs(
    cx: &mut Context,
    watched: &[WatchedDir],
    written: &[(FieldPath, PathBuf)],
) {
    for (at, path) in written {
        let resolved = resolved(path);
        let inside = |dir: &WatchedDir| {
            path.starts_with(&dir.path)
                || resolved.starts_with(&dir.path)
                || resolved.starts_with(self::resolved(&dir.path))
        };
        if let Some(dir) = watched.iter().find(|dir| inside(dir)) {
            cx.error(
                at,
                format!(
                    "{}{} is inside {}, where {}: keep keyrot's files elsewhere",
                    path.display(),
                    resolved_note(path, &resolved),
                    dir.path.display(),
                    dir.what
                ),
            );
        }
    }
}

/// A local-directory target is served to the world: nothing private may be in it, and it may
/// not lie inside a directory of keyrot's own private files. `private` holds every such path
/// with its field; the comparison is on resolved paths, so a symlink cannot hide one.
pub fn nothing_private_published(
    cx: &mut Context,
    targets: &[(FieldPath, PathBuf)],
    private: &[(FieldPath, PathBuf, Private)],
) {
    for (target_at, target) in targets {
        let target_resolved = resolved(target);
        for (private_at, path, kind) in private {
            let path_resolved = resolved(path);
            let problem = if path_resolved.starts_with(&target_resolved) {
                "would publish"
            } else if *kind == Private::Directory && target_resolved.starts_with(&path_resolved) {
                "lies inside"
            } else {
                continue;
            };
            cx.error(
                target_at,
                format!(
                    "{}{} {problem} {private_at} {}{}: a web server serving the target would                      serve keyrot's private files; publish from a directory of its own",
                    target.display(),
                    resolved_note(target, &target_resolved),
                    path.display(),
                    resolved_note(path, &path_resolved),
                ),
            );
        }
    }
}

/// What a private path is, for [`nothing_private_published`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Private {
    /// A private key file: a target must not contain it.
    File,
    /// A directory of keyrot's own (state, private keys): a target must neither contain it nor
    /// lie inside it.
    Directory,
}

/// `path` with symlinks resolved where it exists; as written where it cannot be resolved.
fn resolved(path: &Path) -> PathBuf {
    crate::safe_dir::resolve(path).unwrap_or_else(|_| path.to_path_buf())
}

/// " (resolved: X)" when resolving changed the path.
fn resolved_note(path: &Path, resolved: &Path) -> String {
    match std::path::absolute(path) {
        Ok(absolute) if absolute == resolved => String::new(),
        _ => format!(" (resolved: {})", resolved.display()),
    }
}

/// The directories of the static-pod manifests the plan restarts through, besides the preset's.
pub fn manifest_dirs(restarts: &[&Restart]) -> Vec<WatchedDir> {
    restarts
        .iter()
        .filter_map(|restart| match restart {
            Restart::StaticPod { manifest } => manifest.parent().map(Path::to_path_buf),
            _ => None,
        })
        .map(|path| WatchedDir {
            path,
            what: super::presets::STATIC_PODS,
        })
        .collect()
}

/// A new key may sign only once no cache can still hand out a JWKS without it.
pub fn settle_covers_caches(
    cx: &mut Context,
    settle: TimeDelta,
    settle_written: bool,
    targets: &[Option<Target>],
) {
    let longest = targets
        .iter()
        .enumerate()
        .filter_map(|(i, target)| Some((i, target.as_ref()?)))
        .max_by_key(|(i, target)| (target.cache_max_age, std::cmp::Reverse(*i)));
    let Some((i, target)) = longest else { return };
    if settle < target.cache_max_age {
        let default = if settle_written { "" } else { " (the default)" };
        cx.error(
            &FieldPath::root().key("timings").key("publishSettle"),
            format!(
                "{}{default} is shorter than targets[{i}].cacheMaxAge {}: caches could still serve a JWKS \
                 without the new key when it starts signing",
                format_duration(settle),
                format_duration(target.cache_max_age)
            ),
        );
    }
}
