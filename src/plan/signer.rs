//! The `signer` section of a plan, and the checks that tie it to the restarts and the timings.

use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::raw::{RawDuration, RawPlan, RawSigner, RawSignerSwitch, RestartField};
use super::values::{Context, format_duration};
use super::{FlagSource, Restart, Signer, SignerGroup, SignerSwitch};
use crate::issuer::FlagFile;

/// kube-apiserver refuses a `max_token_expiration_seconds` below this (10 minutes).
pub const MIN_MAX_TOKEN_EXPIRATION: TimeDelta = TimeDelta::minutes(10);
pub const MAX_TOKEN_EXPIRATION: TimeDelta = TimeDelta::hours(24);
pub const REFRESH_HINT: TimeDelta = TimeDelta::minutes(5);
pub const ROTATION_REFRESH_HINT: TimeDelta = TimeDelta::seconds(10);
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
const GROUP_FILE: &str = "/etc/group";

/// `Some(None)` when the plan has no `signer` section.
pub fn signer(
    cx: &mut Context,
    raw: Option<&RawSigner>,
    retire_after: Option<TimeDelta>,
    test_plan: bool,
) -> Option<Option<Signer>> {
    let Some(raw) = raw else { return Some(None) };
    let at = FieldPath::root().key("signer");
    let socket = socket(cx, &at.key("socket"), raw.socket.as_ref());
    let group = match &raw.group {
        None => Some(None),
        Some(written) => group(cx, &at.key("group"), written).map(Some),
    };
    let refresh_hint = hint(
        cx,
        &at.key("refreshHint"),
        raw.refresh_hint.as_ref(),
        REFRESH_HINT,
    );
    let mut rotation_refresh_hint = hint(
        cx,
        &at.key("rotationRefreshHint"),
        raw.rotation_refresh_hint.as_ref(),
        ROTATION_REFRESH_HINT,
    );
    if let (Some(steady), Some(rotating)) = (refresh_hint, rotation_refresh_hint)
        && rotating > steady
    {
        cx.error(
            &at.key("rotationRefreshHint"),
            format!(
                "{} is longer than signer.refreshHint {}: it is the shorter hint used while a \
                 rotation is in progress",
                format_duration(rotating),
                format_duration(steady)
            ),
        );
        rotation_refresh_hint = None;
    }
    let max_at = at.key("maxTokenExpiration");
    let max_token_expiration = cx
        .duration(
            &max_at,
            raw.max_token_expiration.as_ref(),
            MAX_TOKEN_EXPIRATION,
        )
        .and_then(|max| max_token_expiration(cx, &max_at, max, retire_after, test_plan));
    let switch = match &raw.switch {
        None => Some(None),
        Some(written) => switch(cx, &at.key("switch"), written).map(Some),
    };
    Some(Some(Signer {
        socket: socket?,
        group: group?,
        refresh_hint: whole_seconds(refresh_hint?),
        rotation_refresh_hint: whole_seconds(rotation_refresh_hint?),
        max_token_expiration: whole_seconds(max_token_expiration?),
        switch: switch?,
    }))
}

/// `signer.switch`: a flag file keyrot can edit (kubeadm manifest with its patches directory,
/// or systemd unit), and the restart after the edit.
fn switch(cx: &mut Context, at: &FieldPath, raw: &RawSignerSwitch) -> Option<SignerSwitch> {
    let flags_at = at.key("flags");
    let flags = match super::migration::flags(cx, &flags_at, raw.flags.as_ref()) {
        Some(FlagSource::File { path, file }) => match file {
            FlagFile::K3sConfig(_) => {
                cx.error(&flags_at, crate::issuer::key_flags::K3S_CANNOT_SWITCH);
                None
            }
            file => Some((path, file)),
        },
        Some(FlagSource::Manual) => {
            cx.error(
                &flags_at,
                "keyrot edits the flags it switches: name the kubeadmManifest or systemdUnit \
                 (docs/external-signer.md says how to switch by hand)",
            );
            None
        }
        None => None,
    };
    let patches_at = at.key("kubeadmPatches");
    let kubeadm = matches!(flags, Some((_, FlagFile::KubeadmManifest)));
    let kubeadm_patches = match (&raw.kubeadm_patches, kubeadm) {
        (Some(dir), true) => cx.path(&patches_at, dir).map(Some),
        (None, true) => {
            cx.missing(
                &patches_at,
                "the directory given to kubeadm's --patches: kubeadm upgrade regenerates the \
                 manifest, and keyrot keeps the switch there",
            );
            None
        }
        (Some(_), false) if flags.is_some() => {
            cx.error(&patches_at, "applies to kubeadmManifest only");
            None
        }
        (_, false) => Some(None),
    };
    let restart = super::components::restart(
        cx,
        &at.key("restart"),
        raw.restart.as_ref(),
        Some(&Restart::None),
    );
    if matches!(restart, Some(Restart::ExternalSigner)) {
        cx.error(
            &at.key("restart"),
            "the switch changes kube-apiserver's flags: it must restart (or, for a static pod, \
             leave it out: the kubelet restarts the pod when its manifest changes)",
        );
        return None;
    }
    let (path, file) = flags?;
    Some(SignerSwitch {
        path,
        file,
        kubeadm_patches: kubeadm_patches?,
        restart: restart?,
    })
}

/// `restart: externalSigner` needs a signer to reload, and only the apiserver takes its keys
/// from one: kube-controller-manager reads its key file and must be restarted.
pub fn restarts_match_signer(cx: &mut Context, raw: &RawPlan) {
    let root = FieldPath::root();
    let apiserver_restart = raw.apiserver.as_ref().and_then(|a| a.restart.as_ref());
    if matches!(apiserver_restart, Some(RestartField::ExternalSigner)) && raw.signer.is_none() {
        cx.error(
            &root.key("apiserver").key("restart"),
            "externalSigner needs a signer section: keyrot's signer is what reloads the keys",
        );
    }
    let cm_restart = match &raw.controller_manager {
        Some(super::raw::OrNone::Some(cm)) => cm.restart.as_ref(),
        _ => None,
    };
    if matches!(cm_restart, Some(RestartField::ExternalSigner)) {
        cx.error(
            &root.key("controllerManager").key("restart"),
            "externalSigner applies to the apiserver only: kube-controller-manager reads its key \
             file and must be restarted to read it again",
        );
    }
}

fn socket(cx: &mut Context, at: &FieldPath, written: Option<&PathBuf>) -> Option<PathBuf> {
    let Some(written) = written else {
        cx.missing(
            at,
            "the unix socket kube-apiserver's --service-account-signing-endpoint names",
        );
        return None;
    };
    if written.to_str().is_some_and(|w| w.starts_with('@')) {
        cx.error(
            at,
            "abstract sockets (@name) have no file mode to keep other users out: name a path",
        );
        return None;
    }
    let path = cx.path(at, written)?;
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        cx.error(
            at,
            format!(
                "{} is {len} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH}",
                path.display()
            ),
        );
        return None;
    }
    Some(path)
}

/// A group name or number, resolved through /etc/group (a number needs no entry).
fn group(cx: &mut Context, at: &FieldPath, written: &str) -> Option<SignerGroup> {
    let name = cx.text(at, written)?;
    if let Ok(gid) = name.parse::<u32>() {
        return Some(SignerGroup { name, gid });
    }
    let groups = crate::fs_read::read_to_string(GROUP_FILE).unwrap_or_default();
    match gid_of(&groups, &name) {
        Some(gid) => Some(SignerGroup { name, gid }),
        None => {
            cx.error(
                at,
                format!("no group {name:?} in {GROUP_FILE}: name an existing group or its number"),
            );
            None
        }
    }
}

/// The gid of `name` in /etc/group text (`name:password:gid:members`).
fn gid_of(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// A refresh hint: kube-apiserver refuses 0 and counts whole seconds.
fn hint(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&RawDuration>,
    default: TimeDelta,
) -> Option<TimeDelta> {
    let hint = cx.duration(at, written, default)?;
    if hint < TimeDelta::seconds(1) {
        cx.error(
            at,
            "must be at least 1s: kube-apiserver refuses a refresh hint of 0",
        );
        return None;
    }
    Some(hint)
}

fn max_token_expiration(
    cx: &mut Context,
    at: &FieldPath,
    max: TimeDelta,
    retire_after: Option<TimeDelta>,
    test_plan: bool,
) -> Option<TimeDelta> {
    if max < MIN_MAX_TOKEN_EXPIRATION {
        cx.error(
            at,
            format!(
                "{} is shorter than {}: kube-apiserver refuses to start with such a signer",
                format_duration(max),
                format_duration(MIN_MAX_TOKEN_EXPIRATION)
            ),
        );
        return None;
    }
    // A token lives at most this long, and the old key must verify it until it expires.
    if let Some(retire) = retire_after
        && retire < max
        && !test_plan
    {
        cx.error(
            at,
            format!(
                "{} is longer than timings.retireAfter {}: the old key would leave before the \
                 last tokens it signed expire",
                format_duration(max),
                format_duration(retire)
            ),
        );
        return None;
    }
    Some(max)
}

/// Durations sent as whole seconds, so what the plan says is what kube-apiserver sees.
fn whole_seconds(duration: TimeDelta) -> Duration {
    Duration::from_secs(duration.num_seconds().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::gid_of;

    #[test]
    fn a_group_is_found_by_its_name_only() {
        let groups = "root:x:0:\nkube:x:996:alice,bob\nkubelet:x:997:\n";
        assert_eq!(gid_of(groups, "kube"), Some(996));
        assert_eq!(gid_of(groups, "kubelet"), Some(997));
        assert_eq!(gid_of(groups, "kub"), None);
    }
}
