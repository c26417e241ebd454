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
/// their manifests directory): a key, a state file or a temp file there would be run.
pub fn nothing_in_watched_dirs(
    cx: &mut Context,
    watched: &[WatchedDir],
    written: &[(FieldPath, PathBuf)],
) {
    for (at, path) in written {
        if let Some(dir) = watched.iter().find(|dir| path.starts_with(&dir.path)) {
            cx.error(
                at,
                format!(
                    "{} is inside {}, where {}: keep keyrot's files elsewhere",
                    path.display(),
                    dir.path.display(),
                    dir.what
                ),
            );
        }
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
