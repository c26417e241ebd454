//! `keyrot plan`: the dry run. Reads, never writes: no state file, no lock, no key file.

use super::out::{out, outln};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use keyrot::adapters::AdapterError;
use keyrot::adapters::Prober;
use keyrot::adapters::probe::KubeProber;
use keyrot::decision::{Observed, Probed};
use keyrot::dry_run::{render_request_text, render_text, simulate, simulate_migration};
use keyrot::observe::{observe_files, observe_offline};
use keyrot::plan::Probe;
use keyrot::state::{StateStore, TriggerKind};

use super::plan_args::{Output, PlanArg};

/// Show the coming rotation as a timeline without changing anything.
///
/// Every phase and action with its earliest time and the gate it waits for, the verification
/// bundle and the JWKS before and after, the file writes and restarts it would make. With an
/// `issuerMigration` section, also the documents `keyrot migrate-issuer` would publish and its
/// flag diffs (text output, not `--offline`). Nothing is written anywhere: not the state, not a
/// lock file, not a key.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Simulate from this time instead of now (RFC 3339, e.g. 2026-12-06T03:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    at: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Do not contact the apiserver or the publication targets behind the network: the
    /// simulation assumes the apiserver serves what its files hold and such targets serve nothing.
    #[arg(long)]
    offline: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    if let Some(ha) = &plan.ha {
        return super::ha::plan_timeline(&plan, ha, args.output);
    }
    let state = StateStore::new(&plan.state_dir).read()?;
    let observed = if args.offline {
        observe_offline(&plan)?
    } else {
        observe_files(&plan)?
    };
    let probe_note = match (&plan.probe, args.offline) {
        (
            Probe::Kubeconfig {
                path,
                namespace,
                service_account,
                audience,
            },
            false,
        ) => Some(apiserver_note(
            &observed,
            KubeProber::new(path, namespace, service_account, audience),
        )),
        _ => None,
    };
    let mut run = simulate(
        &plan,
        state.as_ref(),
        &observed,
        args.at.unwrap_or_else(Utc::now),
    );
    run.notes.extend(probe_note);
    match args.output {
        Output::Text => out!("{}", render_text(&run)),
        Output::Json => outln!("{}", serde_json::to_string_pretty(&run)?),
    }
    // The migration's dry run reads the targets (object stores over the network) and the flag
    // file; text only, and not offline.
    if plan.issuer_migration.is_some() && args.output == Output::Text && !args.offline {
        outln!("\nissuer migration (keyrot migrate-issuer):");
        let migration = simulate_migration(
            &plan,
            state.as_ref(),
            &observed,
            args.at.unwrap_or_else(Utc::now),
            TriggerKind::MigrateIssuer,
            &mut keyrot::adapters::migration::ClusterEffects::new(&plan),
        );
        match (&migration.blocked, migration.timeline.is_empty()) {
            (Some(why), true) => outln!("cannot migrate: {why}"),
            _ => out!(
                "{}",
                render_request_text(&migration, "the issuer migration")
            ),
        }
    }
    Ok(if run.blocked.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What the apiserver serves compared with its files: only a read (GET /openid/v1/jwks), never
/// the TokenRequest a rotation uses, which could create the probe ServiceAccount.
fn apiserver_note(observed: &Observed, prober: Result<KubeProber, AdapterError>) -> String {
    let files: Vec<String> = observed
        .bundle_kids()
        .into_iter()
        .chain(observed.extra.iter().map(|k| k.kid.clone()))
        .collect();
    match prober.map(|mut p| p.apiserver_kids()) {
        Err(e) => format!("the apiserver was not asked: {e}"),
        Ok(Probed::Failed(why)) => format!("the apiserver did not answer: {why}"),
        Ok(Probed::NotConfigured) => "the apiserver was not asked".into(),
        Ok(Probed::Seen(served)) => {
            let (mut a, mut b) = (served.clone(), files.clone());
            a.sort();
            b.sort();
            if a == b {
                format!(
                    "the apiserver serves the keys of its files: [{}]",
                    served.join(", ")
                )
            } else {
                format!(
                    "the apiserver serves [{}] but its files hold [{}]: it has not been restarted \
                     since they changed, or it reads other files",
                    served.join(", "),
                    files.join(", ")
                )
            }
        }
    }
}
