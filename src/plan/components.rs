//! The control-plane sections of a plan: apiserver, controllerManager, their restarts, the probe.

use std::time::Duration;

use super::locate::FieldPath;
use super::presets::{self, Preset};
use super::raw::{
    OrNone, RawApiserver, RawControllerManager, RawDuration, RawProbe, RawRestart, RestartField,
};
use super::values::Context;
use super::{Apiserver, ControllerManager, Probe, Restart};

pub fn apiserver(
    cx: &mut Context,
    raw: Option<&RawApiserver>,
    preset: &Preset,
) -> Option<Apiserver> {
    let at = FieldPath::root().key("apiserver");
    let verification_bundle = cx.path_or(
        &at.key("verificationKeyFile"),
        raw.and_then(|r| r.verification_key_file.as_ref()),
        preset.verification_key_file.as_ref(),
    );
    let signing_key_file = cx.path_or(
        &at.key("signingKeyFile"),
        raw.and_then(|r| r.signing_key_file.as_ref()),
        preset.signing_key_file.as_ref(),
    );
    let extras_at = at.key("extraVerificationKeyFiles");
    let mut extra_verification_files = Vec::new();
    for (i, written) in raw
        .and_then(|r| r.extra_verification_key_files.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        extra_verification_files.push(cx.path(&extras_at.index(i), written));
    }
    let restart = restart(
        cx,
        &at.key("restart"),
        raw.and_then(|r| r.restart.as_ref()),
        preset.apiserver_restart.as_ref(),
    );
    Some(Apiserver {
        verification_bundle: verification_bundle?,
        extra_verification_files: extra_verification_files
            .into_iter()
            .collect::<Option<_>>()?,
        signing_key_file: signing_key_file?,
        restart: restart?,
    })
}

/// `None` when the cluster has no separate kube-controller-manager to keep in step: the flavour
/// has none and the plan adds none, or the plan says `controllerManager: none`.
pub fn controller_manager(
    cx: &mut Context,
    raw: Option<&OrNone<RawControllerManager>>,
    preset: &Preset,
) -> Option<Option<ControllerManager>> {
    let at = FieldPath::root().key("controllerManager");
    let default = preset.controller_manager.as_ref();
    let written = match raw {
        Some(OrNone::None) => return Some(None),
        None if default.is_none() => return Some(None),
        None => None,
        Some(OrNone::Some(written)) => Some(written),
    };
    let private_key_file = cx.path_or(
        &at.key("privateKeyFile"),
        written.and_then(|w| w.private_key_file.as_ref()),
        default.map(|d| &d.private_key_file),
    );
    let restart = restart(
        cx,
        &at.key("restart"),
        written.and_then(|w| w.restart.as_ref()),
        default.map(|d| &d.restart),
    );
    Some(Some(ControllerManager {
        private_key_file: private_key_file?,
        restart: restart?,
    }))
}

pub(super) fn restart(
    cx: &mut Context,
    at: &FieldPath,
    raw: Option<&RestartField>,
    default: Option<&Restart>,
) -> Option<Restart> {
    let written = match raw {
        Some(RestartField::None) => return Some(Restart::None),
        Some(RestartField::ExternalSigner) => return Some(Restart::ExternalSigner),
        Some(RestartField::Some(written)) => written,
        None => match default {
            Some(default) => return Some(default.clone()),
            None => {
                cx.missing_default(at);
                return None;
            }
        },
    };
    let RawRestart {
        static_pod,
        systemd_unit,
        command,
        timeout,
    } = written;
    let timeout_at = at.key("timeout");
    match (static_pod, systemd_unit, command) {
        (Some(manifest), None, None) => {
            if timeout.is_some() {
                cx.error(
                    &timeout_at,
                    "applies to systemdUnit and command only: a static pod restart is one file write",
                );
            }
            let manifest = cx.path(&at.key("staticPod"), manifest)?;
            timeout.is_none().then_some(Restart::StaticPod { manifest })
        }
        (None, Some(unit), None) => {
            let unit = systemd_unit_name(cx, &at.key("systemdUnit"), unit);
            let timeout = restart_timeout(cx, &timeout_at, timeout.as_ref());
            Some(Restart::SystemdUnit {
                unit: unit?,
                timeout: timeout?,
            })
        }
        (None, None, Some(argv)) => {
            let timeout = restart_timeout(cx, &timeout_at, timeout.as_ref());
            if argv.first().is_none_or(|program| program.trim().is_empty()) {
                cx.error(
                    &at.key("command"),
                    "needs a program to run: [program, arguments...]",
                );
                return None;
            }
            Some(Restart::Command {
                argv: argv.clone(),
                timeout: timeout?,
            })
        }
        (None, None, None) => {
            cx.error(
                at,
                "set one of staticPod, systemdUnit or command, or write restart: none",
            );
            None
        }
        _ => {
            cx.error(at, "set only one of staticPod, systemdUnit and command");
            None
        }
    }
}

/// A unit name systemctl cannot take for an option.
fn systemd_unit_name(cx: &mut Context, at: &FieldPath, written: &str) -> Option<String> {
    let unit = cx.text(at, written)?;
    if unit.starts_with('-') {
        cx.error(
            at,
            format!("{unit:?} starts with '-': systemctl would read it as an option, not a unit"),
        );
        return None;
    }
    Some(unit)
}

/// A restart's time limit: more than zero, and it should stay below the unit's `WatchdogSec`
/// (the acting thread does not ping while it waits for the restart).
fn restart_timeout(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&RawDuration>,
) -> Option<Duration> {
    let limit = cx.duration(at, written, presets::RESTART_TIMEOUT)?;
    match limit.to_std() {
        Ok(limit) if !limit.is_zero() => Some(limit),
        _ => {
            cx.error(at, "must be more than zero");
            None
        }
    }
}

pub fn probe(cx: &mut Context, raw: Option<&OrNone<RawProbe>>, preset: &Preset) -> Option<Probe> {
    let at = FieldPath::root().key("probe");
    let written = match raw {
        Some(OrNone::None) => return Some(Probe::None),
        Some(OrNone::Some(written)) => Some(written),
        None => None,
    };
    let kubeconfig_at = at.key("kubeconfig");
    let kubeconfig = match (
        written.and_then(|w| w.kubeconfig.as_ref()),
        &preset.kubeconfig,
    ) {
        (Some(path), _) => cx.path(&kubeconfig_at, path),
        (None, Some(default)) => Some(default.clone()),
        (None, None) => {
            cx.missing_default(&kubeconfig_at);
            None
        }
    };
    let account = written.and_then(|w| w.service_account.as_ref());
    let account_at = at.key("serviceAccount");
    let namespace = text_or(
        cx,
        &account_at.key("namespace"),
        account.and_then(|a| a.namespace.as_deref()),
        presets::PROBE_NAMESPACE,
    );
    let service_account = text_or(
        cx,
        &account_at.key("name"),
        account.and_then(|a| a.name.as_deref()),
        presets::PROBE_SERVICE_ACCOUNT,
    );
    let audience = text_or(
        cx,
        &at.key("audience"),
        written.and_then(|w| w.audience.as_deref()),
        presets::PROBE_AUDIENCE,
    );
    Some(Probe::Kubeconfig {
        path: kubeconfig?,
        namespace: namespace?,
        service_account: service_account?,
        audience: audience?,
    })
}

fn text_or(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&str>,
    default: &str,
) -> Option<String> {
    match written {
        Some(text) => cx.text(at, text),
        None => Some(default.to_string()),
    }
}
