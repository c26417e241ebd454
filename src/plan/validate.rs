//! Plan file to `Plan`: parse, fill presets, check every field and report all problems at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use chrono_tz::Tz;

use super::checks::{self, Private};
use super::components;
use super::decode::decode;
use super::locate::FieldPath;
use super::presets;
use super::publishing;
use super::raw::{RawDuration, RawFlavour, RawKey, RawPlan, RawSchedule, RawTimings};
use super::report::{PlanError, Report};
use super::schedule::{Schedule, parse_timezone};
use super::values::{Context, format_duration};
use super::{Apiserver, ControllerManager, Flavour, Plan, Target, TargetKind, Timings};
use crate::keys::signing::KeyGenError;
use crate::keys::{Alg, GenerateSpec};

/// Reads and validates the plan at `path`.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text =
        crate::fs_read::read_to_string(path).map_err(|err| PlanError::unreadable(path, &err))?;
    parse(path, &text)
}

/// Validates plan text. `path` names the file in problems, and relative paths in the plan
/// resolve against its directory.
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let mut report = Report::new(path, text);
    // Shape problems stop here: checking values after a field was cut out would report
    // consequences of the cut rather than problems in the file.
    let Some(raw) = decode(text, &mut report) else {
        return report.finish(None);
    };
    let flavour = raw.flavour.map(flavour);
    let mut cx = Context::new(report, path, flavour);
    let plan = plan(&mut cx, path, &raw, flavour);
    cx.report.finish(plan)
}

fn plan(cx: &mut Context, path: &Path, raw: &RawPlan, flavour: Option<Flavour>) -> Option<Plan> {
    let root = FieldPath::root();
    let cluster = match &raw.cluster {
        Some(name) => cx.text(&root.key("cluster"), name),
        None => {
            cx.missing(&root.key("cluster"), "a name for logs, status and metrics");
            None
        }
    };
    if flavour.is_none() {
        cx.missing(
            &root.key("flavour"),
            "one of kubeadm, k3s, rke2, systemd or custom",
        );
    }
    let preset = flavour
        .map(presets::preset)
        .unwrap_or_else(|| presets::preset(Flavour::Custom));
    let test_plan = raw.test_plan.unwrap_or(false);
    let key = key(cx, raw.key.as_ref());

    let default_state_dir = PathBuf::from(presets::STATE_DIR);
    let state_dir = cx.path_or(
        &root.key("stateDir"),
        raw.state_dir.as_ref(),
        Some(&default_state_dir),
    );
    let private_key_dir = match &raw.private_key_dir {
        Some(dir) => cx.path(&root.key("privateKeyDir"), dir),
        None => state_dir
            .as_ref()
            .map(|dir| dir.join(presets::PRIVATE_KEY_SUBDIR)),
    };

    let apiserver = components::apiserver(cx, raw.apiserver.as_ref(), &preset);
    let controller_manager =
        components::controller_manager(cx, raw.controller_manager.as_ref(), &preset);
    let probe = components::probe(cx, raw.probe.as_ref(), &preset);
    let issuer = publishing::issuer(cx, raw.issuer.as_ref());
    let checked_targets = publishing::targets(cx, raw.targets.as_ref(), test_plan);
    let schedule = schedule(cx, raw.schedule.as_ref());
    let timings = timings(
        cx,
        raw.timings.as_ref(),
        test_plan,
        checked_targets.as_deref(),
    );
    let approvals: BTreeSet<_> = raw.approvals.iter().flatten().copied().collect();
    let keep_retired = keep_retired(cx, raw.keep_retired);
    let metrics = super::metrics::metrics(cx, raw.metrics.as_ref());
    let signer = super::signer::signer(
        cx,
        raw.signer.as_ref(),
        timings.map(|t| t.retire_after),
        test_plan,
    );
    super::signer::restarts_match_signer(cx, raw);
    let ha = super::ha::ha(cx, raw, &probe);
    let issuer_migration = super::migration::issuer_migration(
        cx,
        raw.issuer_migration.as_ref(),
        issuer.as_ref(),
        test_plan,
    );

    // Checks across sections, on whatever parts came out valid.
    let cm = controller_manager.as_ref().and_then(Option::as_ref);
    if let Some(apiserver) = &apiserver {
        checks::key_files_apart(cx, apiserver, cm);
    }
    let mut watched = preset.watched_dirs.clone();
    let restarts: Vec<_> = apiserver
        .iter()
        .map(|a| &a.restart)
        .chain(cm.map(|cm| &cm.restart))
        .collect();
    watched.extend(checks::manifest_dirs(&restarts));
    let written = written_paths(
        raw,
        &state_dir,
        &private_key_dir,
        &apiserver,
        cm,
        checked_targets.as_deref(),
    );
    checks::nothing_in_watched_dirs(cx, &watched, &written);
    let published = local_directories(checked_targets.as_deref());
    let private = private_paths(&state_dir, &private_key_dir, &apiserver, cm);
    checks::nothing_private_published(cx, &published, &private);

    Some(Plan {
        path: path.to_path_buf(),
        cluster: cluster?,
        flavour: flavour?,
        test_plan,
        key: key?,
        private_key_dir: private_key_dir?,
        state_dir: state_dir?,
        apiserver: apiserver?,
        controller_manager: controller_manager?,
        probe: probe?,
        issuer: issuer?,
        targets: checked_targets?.into_iter().collect::<Option<_>>()?,
        schedule: schedule?,
        timings: timings?,
        approvals,
        keep_retired: keep_retired? as usize,
        keep_next_key: raw.keep_next_key.unwrap_or(false),
        metrics: metrics?,
        issuer_migration: issuer_migration?,
        signer: signer?,
        ha: ha?,
    })
}

fn flavour(raw: RawFlavour) -> Flavour {
    match raw {
        RawFlavour::Kubeadm => Flavour::Kubeadm,
        RawFlavour::K3s => Flavour::K3s,
        RawFlavour::Rke2 => Flavour::Rke2,
        RawFlavour::Systemd => Flavour::Systemd,
        RawFlavour::Custom => Flavour::Custom,
    }
}

fn key(cx: &mut Context, raw: Option<&RawKey>) -> Option<GenerateSpec> {
    let at = FieldPath::root().key("key");
    let alg = match raw.and_then(|k| k.algorithm.as_deref()) {
        None | Some("RS256") => Alg::RS256,
        Some("ES256") => Alg::ES256,
        Some(other) => {
            cx.error(
                &at.key("algorithm"),
                format!("{other:?} is not an algorithm keyrot generates: use RS256 or ES256"),
            );
            return None;
        }
    };
    let bits = raw.and_then(|k| k.bits).map(|bits| bits as usize);
    match GenerateSpec::new(alg, bits) {
        Ok(spec) => Some(spec),
        Err(KeyGenError::RsaSize(bits)) => {
            cx.error(
                &at.key("bits"),
                format!("RSA key size {bits} is not allowed: use 2048, 3072 or 4096"),
            );
            None
        }
        Err(KeyGenError::BitsWithEc) => {
            cx.error(
                &at.key("bits"),
                "applies to RS256 only; ES256 keys are always P-256",
            );
            None
        }
        Err(other) => {
            cx.error(&at.key("algorithm"), other.to_string());
            None
        }
    }
}

/// `Some(None)` when the plan has no schedule (rotations start only by hand).
fn schedule(cx: &mut Context, raw: Option<&RawSchedule>) -> Option<Option<Schedule>> {
    let Some(raw) = raw else { return Some(None) };
    let at = FieldPath::root().key("schedule");
    let timezone = match raw.time_zone.as_deref() {
        None => Some(Tz::UTC),
        Some(name) => parse_timezone(name)
            .map_err(|e| cx.error(&at.key("timeZone"), e.to_string()))
            .ok(),
    };
    let Some(expression) = raw.cron.as_deref() else {
        cx.missing(
            &at.key("cron"),
            "when rotations start, such as \"0 3 * * SUN\"",
        );
        return None;
    };
    // Parsed even when the zone is bad, so that a bad expression is reported too.
    let schedule = Schedule::parse(expression, timezone.unwrap_or(Tz::UTC))
        .map_err(|e| cx.error(&at.key("cron"), e.to_string()))
        .ok()?;
    timezone.map(|_| Some(schedule))
}

/// The timings, checked against each other and against the targets' cache lifetimes.
fn timings(
    cx: &mut Context,
    raw: Option<&RawTimings>,
    test_plan: bool,
    targets: Option<&[Option<Target>]>,
) -> Option<Timings> {
    let at = FieldPath::root().key("timings");
    let defaults = presets::TIMINGS;
    let mut field = |name: &str, written: Option<&RawDuration>, default: TimeDelta| {
        cx.duration(&at.key(name), written, default)
    };
    let publish_settle = field(
        "publishSettle",
        raw.and_then(|t| t.publish_settle.as_ref()),
        defaults.publish_settle,
    );
    let mut retire_after = field(
        "retireAfter",
        raw.and_then(|t| t.retire_after.as_ref()),
        defaults.retire_after,
    );
    let mut gate_timeout = field(
        "gateTimeout",
        raw.and_then(|t| t.gate_timeout.as_ref()),
        defaults.gate_timeout,
    );
    let mut retry_backoff = field(
        "retryBackoff",
        raw.and_then(|t| t.retry_backoff.as_ref()),
        defaults.retry_backoff,
    );
    let mut retry_backoff_max = field(
        "retryBackoffMax",
        raw.and_then(|t| t.retry_backoff_max.as_ref()),
        defaults.retry_backoff_max,
    );

    if let (Some(settle), Some(targets)) = (publish_settle, targets) {
        let written = raw.is_some_and(|t| t.publish_settle.is_some());
        checks::settle_covers_caches(cx, settle, written, targets);
    }
    if let Some(retire) = retire_after
        && retire < presets::MIN_RETIRE_AFTER
        && !test_plan
    {
        cx.error(
            &at.key("retireAfter"),
            format!(
                "{} is shorter than {}; only a plan with testPlan: true may retire keys sooner",
                format_duration(retire),
                format_duration(presets::MIN_RETIRE_AFTER)
            ),
        );
        retire_after = None;
    }
    // A zero timeout fails every gate at once; a zero backoff retries in a tight loop.
    for (name, value) in [
        ("gateTimeout", &mut gate_timeout),
        ("retryBackoff", &mut retry_backoff),
        ("retryBackoffMax", &mut retry_backoff_max),
    ] {
        if *value == Some(TimeDelta::zero()) {
            cx.error(&at.key(name), "must be longer than zero");
            *value = None;
        }
    }
    if let (Some(backoff), Some(max)) = (retry_backoff, retry_backoff_max)
        && max < backoff
    {
        cx.error(
            &at.key("retryBackoffMax"),
            format!(
                "{} is shorter than timings.retryBackoff {}",
                format_duration(max),
                format_duration(backoff)
            ),
        );
        retry_backoff_max = None;
    }
    Some(Timings {
        publish_settle: publish_settle?,
        retire_after: retire_after?,
        gate_timeout: gate_timeout?,
        retry_backoff: retry_backoff?,
        retry_backoff_max: retry_backoff_max?,
    })
}

fn keep_retired(cx: &mut Context, written: Option<u32>) -> Option<u32> {
    let keep = written.unwrap_or(presets::KEEP_RETIRED);
    if keep > presets::KEEP_RETIRED_MAX {
        cx.error(
            &FieldPath::root().key("keepRetired"),
            format!(
                "{keep} is more than {}: retired keys are kept only as history",
                presets::KEEP_RETIRED_MAX
            ),
        );
        return None;
    }
    Some(keep)
}

/// The local-directory targets, with the field that names each.
fn local_directories(targets: Option<&[Option<Target>]>) -> Vec<(FieldPath, PathBuf)> {
    let targets = targets.unwrap_or_default().iter().enumerate();
    targets
        .filter_map(|(i, target)| match &target.as_ref()?.kind {
            TargetKind::LocalDirectory { path } => Some((
                FieldPath::root()
                    .key("targets")
                    .index(i)
                    .key("localDirectory"),
                path.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Every path that holds private material, with the field that names it.
fn private_paths(
    state_dir: &Option<PathBuf>,
    private_key_dir: &Option<PathBuf>,
    apiserver: &Option<Apiserver>,
    controller_manager: Option<&ControllerManager>,
) -> Vec<(FieldPath, PathBuf, Private)> {
    let root = FieldPath::root();
    let mut private = Vec::new();
    private.extend(
        state_dir
            .clone()
            .map(|dir| (root.key("stateDir"), dir, Private::Directory)),
    );
    private.extend(
        private_key_dir
            .clone()
            .map(|dir| (root.key("privateKeyDir"), dir, Private::Directory)),
    );
    if let Some(apiserver) = apiserver {
        let at = root.key("apiserver").key("signingKeyFile");
        private.push((at, apiserver.signing_key_file.clone(), Private::File));
    }
    if let Some(cm) = controller_manager {
        let at = root.key("controllerManager").key("privateKeyFile");
        private.push((at, cm.private_key_file.clone(), Private::File));
    }
    private
}

/// Every path keyrot writes to, with the field that names it. A default private key directory
/// is left out: it lies under the state directory, which is checked already.
fn written_paths(
    raw: &RawPlan,
    state_dir: &Option<PathBuf>,
    private_key_dir: &Option<PathBuf>,
    apiserver: &Option<Apiserver>,
    controller_manager: Option<&ControllerManager>,
    targets: Option<&[Option<Target>]>,
) -> Vec<(FieldPath, PathBuf)> {
    let root = FieldPath::root();
    let mut written = Vec::new();
    written.extend(state_dir.clone().map(|dir| (root.key("stateDir"), dir)));
    if raw.private_key_dir.is_some() {
        written.extend(
            private_key_dir
                .clone()
                .map(|dir| (root.key("privateKeyDir"), dir)),
        );
    }
    if let Some(apiserver) = apiserver {
        let at = root.key("apiserver");
        written.push((
            at.key("verificationKeyFile"),
            apiserver.verification_bundle.clone(),
        ));
        written.push((at.key("signingKeyFile"), apiserver.signing_key_file.clone()));
    }
    if let Some(cm) = controller_manager {
        let at = root.key("controllerManager").key("privateKeyFile");
        written.push((at, cm.private_key_file.clone()));
    }
    written.extend(local_directories(targets));
    written
}
