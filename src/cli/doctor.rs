//! `keyrot doctor`: the "Check your cluster's keys" runbook, done by keyrot, read-only.

use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::doctor::gather::{Sources, gather, serves_issuer_locally};
use keyrot::doctor::{ApiserverProcess, Finding, Status, Verdict, diagnose, verdict};
use keyrot::documents::default_jwks_uri;
use keyrot::issuer::{FlagFile, K3sDefaults};
use keyrot::plan::{CLUSTER_DOMAIN, FlagSource, Flavour, Issuer, Plan, Probe, Restart};
use serde::Serialize;

/// Check this node's service-account keys, read-only: the signing key is among the verification
/// keys; every apiserver serves the files' kids in order (and, when not, whether it was restarted
/// since the files changed); the issuer flags are https and match the plan; every target serves
/// the same kids and the discovery document to anonymous readers; kube-controller-manager signs
/// with the signing key. Each problem comes with what to do.
///
/// With a plan (-c) everything comes from it; without one, name the files and URLs with the
/// flags below. Exit codes: 0 healthy, 1 problems found, 2 cannot check (invalid plan, nothing
/// readable or reachable).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rotation plan to check against (YAML).
    #[arg(short = 'c', long = "config", value_name = "PLAN")]
    plan: Option<PathBuf>,
    /// `--service-account-signing-key-file` (without a plan).
    #[arg(long, value_name = "PATH", conflicts_with = "plan")]
    signing_key_file: Option<PathBuf>,
    /// `--service-account-key-file`, repeated in flag order (without a plan).
    #[arg(long, value_name = "PATH", conflicts_with = "plan")]
    verification_key_file: Vec<PathBuf>,
    /// kube-controller-manager's `--service-account-private-key-file` (without a plan).
    #[arg(long, value_name = "PATH", conflicts_with = "plan")]
    controller_manager_key_file: Option<PathBuf>,
    /// The issuer URL the cluster should use (without a plan).
    #[arg(long, value_name = "URL", conflicts_with = "plan")]
    issuer: Option<String>,
    /// The jwks_uri the discovery document should name; default ISSUER/openid/v1/jwks.
    #[arg(long, value_name = "URL", conflicts_with = "plan", requires = "issuer")]
    jwks_uri: Option<String>,
    /// A kubeconfig reaching one apiserver; repeat it for every node of an HA control plane.
    /// The first is this node's. With a plan, these come after the plan's probe.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Vec<PathBuf>,
    /// A URL the documents are published under, read anonymously as a cloud reads it
    /// (URL/.well-known/openid-configuration and URL/openid/v1/jwks); repeatable. The issuer URL
    /// itself reads the discovery document and the jwks_uri it names.
    #[arg(long, value_name = "URL")]
    public_url: Vec<String>,
    /// The file kube-apiserver's issuer flags live in. Default with a plan: its issuerMigration
    /// flags, else the flavour's (kubeadm's static pod manifest, /etc/rancher/k3s/config.yaml,
    /// /etc/rancher/rke2/config.yaml, /etc/systemd/system/UNIT).
    #[arg(long, value_name = "PATH", requires = "flags_format")]
    flags_file: Option<PathBuf>,
    /// How --flags-file is written.
    #[arg(long, value_enum, requires = "flags_file")]
    flags_format: Option<FlagsFormat>,
    /// This node's kube-apiserver process, a program name or a PID: its start time tells whether
    /// it read the key files since they changed. Default `kube-apiserver`, or `k3s` with a k3s
    /// plan (the k3s server process runs the apiserver inside itself).
    #[arg(long, value_name = "NAME|PID")]
    apiserver_process: Option<String>,
    /// Extra root certificates (PEM) for reading the public URLs (test servers).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FlagsFormat {
    /// A kubeadm static pod manifest.
    Kubeadm,
    /// A k3s config.yaml (kube-apiserver-arg).
    K3s,
    /// An RKE2 config.yaml (kube-apiserver-arg).
    Rke2,
    /// A systemd unit running kube-apiserver.
    Systemd,
}

impl FlagsFormat {
    fn file(self) -> FlagFile {
        match self {
            FlagsFormat::Kubeadm => FlagFile::KubeadmManifest,
            FlagsFormat::K3s => FlagFile::K3sConfig(K3sDefaults::k3s(CLUSTER_DOMAIN)),
            FlagsFormat::Rke2 => FlagFile::K3sConfig(K3sDefaults::rke2(CLUSTER_DOMAIN)),
            FlagsFormat::Systemd => FlagFile::SystemdUnit,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    verdict: Verdict,
    findings: &'a [Finding],
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sources = match sources(&args) {
        Ok(sources) => sources,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(Verdict::CannotCheck.exit_code()));
        }
    };
    let findings = diagnose(&gather(&sources));
    let verdict = verdict(&findings);
    if args.json {
        let report = Report {
            verdict,
            findings: &findings,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&findings, verdict));
    }
    Ok(ExitCode::from(verdict.exit_code()))
}

fn sources(args: &Args) -> anyhow::Result<Sources> {
    let plan = args.plan.as_deref().map(keyrot::plan::load).transpose()?;
    let mut sources = match &plan {
        Some(plan) => from_plan(plan),
        None => Sources {
            issuer: args.issuer.as_ref().map(|url| Issuer {
                url: url.clone(),
                jwks_uri: args
                    .jwks_uri
                    .clone()
                    .unwrap_or_else(|| default_jwks_uri(url)),
            }),
            signing_key_file: args.signing_key_file.clone(),
            verification_files: args.verification_key_file.clone(),
            controller_manager_key_file: args.controller_manager_key_file.clone(),
            ..Sources::default()
        },
    };
    if let (Some(path), Some(format)) = (&args.flags_file, args.flags_format) {
        sources.flags = Some((path.clone(), format.file()));
    }
    sources.kubeconfigs.extend(args.kubeconfig.iter().cloned());
    let process = match (&args.apiserver_process, &plan) {
        (Some(named), _) => named.as_str(),
        (None, Some(plan)) if plan.flavour == Flavour::K3s => "k3s",
        (None, _) => "kube-apiserver",
    };
    sources.apiserver_process = Some(ApiserverProcess::parse(process));
    anyhow::ensure!(
        args.public_url.is_empty() || sources.issuer.is_some(),
        "--public-url needs the issuer its documents should name: give --issuer or a plan"
    );
    for url in &args.public_url {
        let is_issuer = sources.issuer.as_ref().is_some_and(|i| i.url == *url);
        sources.public_urls.push((!is_issuer).then(|| url.clone()));
    }
    sources.ca_file = args.ca_file.clone();
    let nothing = sources.signing_key_file.is_none()
        && sources.verification_files.is_empty()
        && sources.kubeconfigs.is_empty()
        && sources.flags.is_none()
        && sources.public_urls.is_empty();
    anyhow::ensure!(
        !nothing,
        "nothing to check: give a plan (-c PLAN) or name the files (see keyrot doctor --help)"
    );
    Ok(sources)
}

fn from_plan(plan: &Plan) -> Sources {
    let apiserver = &plan.apiserver;
    let mut sources = Sources {
        issuer: Some(plan.issuer.clone()),
        signing_key_file: Some(apiserver.signing_key_file.clone()),
        verification_files: std::iter::once(&apiserver.verification_bundle)
            .chain(&apiserver.extra_verification_files)
            .cloned()
            .collect(),
        controller_manager_key_file: plan
            .controller_manager
            .as_ref()
            .map(|cm| cm.private_key_file.clone()),
        flags: plan_flags(plan),
        targets: plan.targets.clone(),
        ..Sources::default()
    };
    if let Probe::Kubeconfig { path, .. } = &plan.probe {
        sources.kubeconfigs.push(path.clone());
    }
    if serves_issuer_locally(&plan.targets) {
        sources.public_urls.push(None);
    }
    sources
}

/// Where the plan's kube-apiserver flags live: the migration's flag file, else the flavour's.
fn plan_flags(plan: &Plan) -> Option<(PathBuf, FlagFile)> {
    if let Some(FlagSource::File { path, file }) = plan.issuer_migration.as_ref().map(|m| &m.flags)
    {
        return Some((path.clone(), file.clone()));
    }
    match (&plan.apiserver.restart, plan.flavour) {
        (Restart::StaticPod { manifest }, _) => Some((manifest.clone(), FlagFile::KubeadmManifest)),
        (_, Flavour::K3s) => Some((
            "/etc/rancher/k3s/config.yaml".into(),
            FlagsFormat::K3s.file(),
        )),
        (_, Flavour::Rke2) => Some((
            "/etc/rancher/rke2/config.yaml".into(),
            FlagsFormat::Rke2.file(),
        )),
        (Restart::SystemdUnit { unit, .. }, Flavour::Systemd) => Some((
            PathBuf::from("/etc/systemd/system").join(unit),
            FlagFile::SystemdUnit,
        )),
        _ => None,
    }
}

fn text(findings: &[Finding], verdict: Verdict) -> String {
    let mut out = String::new();
    for finding in findings {
        let mark = match finding.status {
            Status::Ok => "ok     ",
            Status::Problem => "PROBLEM",
            Status::Unreachable => "UNKNOWN",
        };
        out.push_str(&format!(
            "{mark} {} {}: {}\n",
            finding.check.name(),
            finding.subject,
            finding.detail
        ));
        if let Some(fix) = &finding.fix {
            out.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let problems = findings.iter().filter(|f| f.status != Status::Ok).count();
    out.push_str(&match verdict {
        Verdict::Healthy => format!("healthy: {} checks passed\n", findings.len()),
        Verdict::Problems => format!("{problems} of {} checks found problems\n", findings.len()),
        Verdict::CannotCheck => "cannot check: nothing could be read or reached\n".to_string(),
    });
    out
}
