//! `keyrot verify`: what every target serves, read as a cloud verifier reads it, compared with
//! the key files and with what keyrot's state last published.

use super::out::{out, outln};
use std::process::ExitCode;

use keyrot::adapters::Prober;
use keyrot::adapters::probe::KubeProber;
use keyrot::decision::Probed;
use keyrot::plan::Probe;
use keyrot::state::StateStore;
use keyrot::targets::verify::{Expected, TargetCheck, check};
use serde::Serialize;

use super::plan_args::{Output, PlanArg};
use super::publish::verification_kids;

/// Read each target's documents from outside (anonymous GETs of the discovery document and its
/// jwks_uri for object stores, the provider for GCP, the files for a local directory) and
/// compare its kids with the cluster's key files, with what the apiserver serves (when the plan
/// has a probe) and with keyrot's last publication. Exits 1 on any difference, an unreadable
/// target or an apiserver that does not answer. Reads only.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    /// Why the apiserver could not be asked, when the plan has a probe and it failed.
    apiserver_error: Option<String>,
    expected: Vec<ExpectedKids>,
    targets: Vec<TargetCheck>,
}

#[derive(Serialize)]
struct ExpectedKids {
    source: &'static str,
    kids: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let mut expected = vec![Expected {
        source: "the key files give",
        kids: verification_kids(&plan)?,
    }];
    let state = StateStore::new(&plan.state_dir).read()?;
    let published = state
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.published.as_ref());
    if let Some(published) = published {
        expected.push(Expected {
            source: "keyrot's rotation published",
            kids: published.kids.clone(),
        });
    }
    let mut apiserver_error = None;
    if let Probe::Kubeconfig {
        path,
        namespace,
        service_account,
        audience,
    } = &plan.probe
    {
        let served = KubeProber::new(path, namespace, service_account, audience)
            .map(|mut prober| prober.apiserver_kids());
        match served {
            Ok(Probed::Seen(kids)) => expected.push(Expected {
                source: "the apiserver serves",
                kids,
            }),
            Ok(Probed::Failed(why)) => {
                apiserver_error = Some(format!("the apiserver did not answer: {why}"))
            }
            Ok(Probed::NotConfigured) => {}
            Err(e) => apiserver_error = Some(format!("the apiserver was not asked: {e}")),
        }
    }
    let targets: Vec<TargetCheck> = plan
        .targets
        .iter()
        .map(|target| check(&plan.issuer, target, &expected))
        .collect();
    let report = Report {
        ok: apiserver_error.is_none() && targets.iter().all(|t| t.problems.is_empty()),
        apiserver_error,
        expected: expected
            .into_iter()
            .map(|e| ExpectedKids {
                source: e.source,
                kids: e.kids,
            })
            .collect(),
        targets,
    };
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => out!("{}", text(&report)),
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    if let Some(error) = &report.apiserver_error {
        out.push_str(&format!("apiserver: {error}\n"));
    }
    for expected in &report.expected {
        out.push_str(&format!(
            "expected: {} [{}]\n",
            expected.source,
            expected.kids.join(", ")
        ));
    }
    for target in &report.targets {
        let verdict = if target.problems.is_empty() {
            "ok"
        } else {
            "DIFFERS"
        };
        out.push_str(&format!(
            "target {} ({}): {verdict}: {}\n",
            target.name, target.kind, target.read_at
        ));
        for problem in &target.problems {
            out.push_str(&format!("  - {problem}\n"));
        }
    }
    out
}
