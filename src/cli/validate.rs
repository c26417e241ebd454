//! `keyrot validate`: check a rotation plan and summarise it, or list every problem in it.

use super::out::out;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use keyrot::decision::next_rotation_due;
use keyrot::keys::GenerateSpec;
use keyrot::plan::{self, Plan, Probe, Restart, TargetKind, flavour_name, format_duration};
use keyrot::state::{State, StateStore};

/// Check a rotation plan without touching anything.
///
/// On success prints what the plan resolves to (presets filled in, relative paths resolved)
/// and the next scheduled run, and exits 0. Otherwise prints every problem, one per line as
/// FILE:LINE:COLUMN: FIELD: MESSAGE, and exits 1.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan file (YAML).
    #[arg(short = 'c', long = "config", value_name = "PLAN")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match plan::load(&args.config) {
        Ok(plan) => {
            // The state only says when the schedule next fires; an unreadable one is `status`'s
            // to report, not a problem of the plan.
            let state = StateStore::new(&plan.state_dir).read().ok().flatten();
            out!("{}", summary(&plan, state.as_ref(), Utc::now()));
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{err}");
            let count = err.problems.len();
            let noun = if count == 1 { "problem" } else { "problems" };
            eprintln!("{}: {count} {noun}", args.config.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The plan as keyrot will act on it. The state and `now` give the next scheduled run.
fn summary(plan: &Plan, state: Option<&State>, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<20} {value}");
    };
    line("plan", format!("{} is valid", plan.path.display()));
    line(
        "cluster",
        format!("{} (flavour {})", plan.cluster, flavour_name(plan.flavour)),
    );
    line("key", key(plan.key));
    line("state", plan.state_dir.display().to_string());
    line("private keys", plan.private_key_dir.display().to_string());
    let api = &plan.apiserver;
    line(
        "verification bundle",
        api.verification_bundle.display().to_string(),
    );
    for extra in &api.extra_verification_files {
        line("also verifying", extra.display().to_string());
    }
    line("signing key", api.signing_key_file.display().to_string());
    line("apiserver restart", restart(&api.restart));
    match &plan.controller_manager {
        Some(cm) => {
            line("controller key", cm.private_key_file.display().to_string());
            line("controller restart", restart(&cm.restart));
        }
        None => line(
            "controller manager",
            "none to restart separately".to_string(),
        ),
    }
    line("probe", probe(&plan.probe));
    line("issuer", plan.issuer.url.clone());
    line("jwks_uri", plan.issuer.jwks_uri.clone());
    for target in &plan.targets {
        line(
            "target",
            format!(
                "{}: {}, max-age {}",
                target.name,
                destination(&target.kind),
                format_duration(target.cache_max_age)
            ),
        );
    }
    line("schedule", schedule(plan, state, now));
    let t = &plan.timings;
    line(
        "timings",
        format!(
            "publishSettle {}, retireAfter {}, gateTimeout {}, retryBackoff {} up to {}",
            format_duration(t.publish_settle),
            format_duration(t.retire_after),
            format_duration(t.gate_timeout),
            format_duration(t.retry_backoff),
            format_duration(t.retry_backoff_max)
        ),
    );
    let approvals: Vec<&str> = plan.approvals.iter().map(|p| p.as_str()).collect();
    line(
        "approvals",
        if approvals.is_empty() {
            "none".to_string()
        } else {
            approvals.join(", ")
        },
    );
    line("keepRetired", plan.keep_retired.to_string());
    if plan.keep_next_key {
        line(
            "keepNextKey",
            "true: the next key stays staged and published until the schedule promotes it"
                .to_string(),
        );
    }
    if let Some(signer) = &plan.signer {
        let switch = match &signer.switch {
            Some(switch) => format!("; `keyrot switch-signer` edits {}", switch.path.display()),
            None => String::new(),
        };
        line(
            "signer",
            format!(
                "{} (kube-apiserver's --service-account-signing-endpoint){switch}",
                signer.socket.display()
            ),
        );
    }
    if let Some(ha) = &plan.ha {
        let members = match &ha.members {
            keyrot::plan::Members::Named(names) => {
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            }
            keyrot::plan::Members::EndpointSlice => {
                "the apiservers of the kubernetes EndpointSlice".to_string()
            }
        };
        line(
            "ha",
            format!(
                "node {} of [{members}]; ring ConfigMap {ns}/{}, Lease {ns}/{} through {}; \
                 lease {}, renew deadline {}, retry {}",
                ha.node_name,
                ha.ring,
                ha.lease,
                ha.kubeconfig.display(),
                std_duration(ha.lease_duration),
                std_duration(ha.renew_deadline),
                std_duration(ha.retry_period),
                ns = ha.namespace,
            ),
        );
    }
    line(
        "metrics",
        match plan.metrics {
            Some(m) => format!("http://{}/metrics (keyrot run)", m.listen),
            None => "off".to_string(),
        },
    );
    if plan.test_plan {
        line(
            "testPlan",
            "true: production minimums do not apply".to_string(),
        );
    }
    out
}

fn key(spec: GenerateSpec) -> String {
    match spec {
        GenerateSpec::Rsa { bits } => format!("RS256 (RSA, {bits} bits)"),
        GenerateSpec::P256 => "ES256 (ECDSA P-256)".to_string(),
    }
}

fn std_duration(duration: std::time::Duration) -> String {
    chrono::TimeDelta::from_std(duration)
        .map(format_duration)
        .unwrap_or_else(|_| format!("{duration:?}"))
}

fn restart(restart: &Restart) -> String {
    match restart {
        Restart::StaticPod { manifest } => format!("static pod {}", manifest.display()),
        Restart::SystemdUnit { unit, timeout } => {
            format!("systemd unit {unit}, timeout {}", std_duration(*timeout))
        }
        Restart::Command { argv, timeout } => {
            format!("command {argv:?}, timeout {}", std_duration(*timeout))
        }
        Restart::ExternalSigner => "externalSigner: keyrot's signer reloads the key files".into(),
        Restart::None => "none".to_string(),
    }
}

fn probe(probe: &Probe) -> String {
    match probe {
        Probe::None => "none: keyrot does not ask an apiserver".to_string(),
        Probe::Kubeconfig {
            path,
            namespace,
            service_account,
            audience,
        } => format!(
            "kubeconfig {}, ServiceAccount {namespace}/{service_account}, audience {audience}",
            path.display()
        ),
    }
}

fn schedule(plan: &Plan, state: Option<&State>, now: DateTime<Utc>) -> String {
    let Some(schedule) = &plan.schedule else {
        return "none: rotations start only when triggered by hand".to_string();
    };
    let empty = State::default();
    let next = match next_rotation_due(plan, state.unwrap_or(&empty), now) {
        Some(due) if due <= now => format!("due now (since {})", due.format("%Y-%m-%d %H:%M UTC")),
        Some(next) if schedule.timezone() == chrono_tz::Tz::UTC => {
            format!("next run {}", next.format("%Y-%m-%d %H:%M UTC"))
        }
        Some(next) => {
            let local = next.with_timezone(&schedule.timezone());
            format!(
                "next run {} ({})",
                local.format("%Y-%m-%d %H:%M %Z"),
                next.format("%Y-%m-%d %H:%M UTC")
            )
        }
        None => "it never fires again".to_string(),
    };
    format!(
        "{:?} in {}; {next}",
        schedule.expression(),
        schedule.timezone()
    )
}

/// Where a target publishes and, for object stores, where it is read back from outside.
fn destination(kind: &TargetKind) -> String {
    let under = |base: String, prefix: &str| match prefix {
        "" => base,
        prefix => format!("{base}/{prefix}"),
    };
    let stored = match kind {
        TargetKind::LocalDirectory { path } => {
            return format!("local directory {}", path.display());
        }
        TargetKind::GcpWorkloadIdentityProvider(provider) => {
            return format!("GCP provider {} (oidc.jwksJson)", provider.name);
        }
        TargetKind::S3 { bucket, objects } => format!(
            "{} in {}",
            under(format!("s3://{}", bucket.bucket), &objects.prefix),
            bucket.region
        ),
        TargetKind::Azure { container, objects } => under(
            format!("azure://{}/{}", container.account, container.container),
            &objects.prefix,
        ),
        TargetKind::Gcs { bucket, objects } => {
            under(format!("gs://{}", bucket.bucket), &objects.prefix)
        }
    };
    let objects = kind.objects().expect("object-store target");
    let read_at = objects.public.url.as_deref().unwrap_or("the issuer URL");
    format!(
        "{stored}, Cache-Control {:?}, JWKS as {}, read back at {read_at}",
        objects.cache_control, objects.jwks_content_type
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn summary_shows_resolved_files_and_the_next_run() {
        let text = "\
cluster: demo
flavour: kubeadm
issuer: { url: \"https://oidc.example.com/demo\" }
targets: [{ name: web, localDirectory: www }]
schedule: { cron: \"0 3 * * 0\", timeZone: Europe/Berlin }
approvals: [promote]
";
        let plan = plan::parse(Path::new("/etc/keyrot/plan.yaml"), text).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 7, 12, 0, 0).unwrap();
        let summary = summary(&plan, None, now);
        for expected in [
            "cluster              demo (flavour kubeadm)",
            "signing key          /etc/kubernetes/pki/sa.key",
            "controller restart   static pod /etc/kubernetes/manifests/kube-controller-manager.yaml",
            "target               web: local directory /etc/keyrot/www, max-age 5m",
            "schedule             \"0 3 * * 0\" in Europe/Berlin; next run 2026-01-11 03:00 CET (2026-01-11 02:00 UTC)",
            "approvals            promote",
            "metrics              off",
        ] {
            assert!(
                summary.lines().any(|l| l == expected),
                "{expected:?} not in\n{summary}"
            );
        }
    }

    #[test]
    fn the_next_run_counts_from_the_last_rotation_as_status_and_the_daemon_do() {
        let text = "\
cluster: demo
flavour: kubeadm
issuer: { url: \"https://oidc.example.com/demo\" }
targets: [{ name: web, localDirectory: www }]
schedule: { cron: \"0 3 * * SUN\" }
";
        let plan = plan::parse(Path::new("/etc/keyrot/plan.yaml"), text).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 7, 12, 0, 0).unwrap();
        // The last rotation started before last Sunday's run: the schedule is overdue.
        let state = State {
            last_rotation_started_at: Some(Utc.with_ymd_and_hms(2025, 12, 30, 3, 0, 0).unwrap()),
            ..State::default()
        };
        let summary = summary(&plan, Some(&state), now);
        assert!(
            summary.contains("due now (since 2026-01-04 03:00 UTC)"),
            "{summary}"
        );
        let status = keyrot::status::status_with_unreadable_files(&plan, Some(&state), "-", now);
        assert_eq!(
            status.next_rotation,
            Some(Utc.with_ymd_and_hms(2026, 1, 4, 3, 0, 0).unwrap())
        );
    }
}
