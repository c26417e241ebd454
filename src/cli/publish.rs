//! `keyrot publish`: the documents for the current key files, written to every target now.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::adapters::publish::{preview_target, publish_target, render_documents};
use keyrot::keys::load_verification_keys;
use keyrot::plan::Plan;
use keyrot::state::StateStore;
use keyrot::stores::conditional::Written;

use super::plan_args::PlanArg;

/// Publish the discovery document and the JWKS of the current verification keys (the bundle and
/// the extra verification files, as kube-apiserver serves them) to every target, now.
///
/// Idempotent: objects that already hold the right bytes and headers are left alone. Writes to
/// object stores are conditional, so another writer is reported, never overwritten. Refused
/// while another keyrot holds the state lock (a rotation publishes by itself).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Show what would change on each target; write nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let _lock = match args.dry_run {
        true => None,
        false => Some(StateStore::new(&plan.state_dir).try_lock()?),
    };
    let kids = verification_kids(&plan)?;
    let documents = render_documents(&plan, &kids)?;
    outln!("kids [{}]", kids.join(", "));
    let mut failed = false;
    for target in &plan.targets {
        let outcome = match args.dry_run {
            true => preview_target(target, &documents),
            false => publish_target(target, &documents),
        };
        // Every object written is reported, also those written before a failure.
        let (objects, error) = match outcome {
            Ok(objects) => (objects, None),
            Err(e) => (e.written, Some(e.error)),
        };
        for object in objects {
            let what = match (object.written, args.dry_run) {
                (Written::Unchanged, _) => "unchanged",
                (Written::Created, false) => "created",
                (Written::Replaced, false) => "replaced",
                (Written::Created, true) => "would create",
                (Written::Replaced, true) => "would replace",
            };
            outln!("target {}: {}: {what}", target.name, object.url);
        }
        if let Some(e) = error {
            failed = true;
            eprintln!("error: target {}: {e}", target.name);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The kids kube-apiserver serves for the plan's verification files, in flag order.
pub fn verification_kids(plan: &Plan) -> anyhow::Result<Vec<String>> {
    let files = &plan.apiserver;
    let paths: Vec<PathBuf> = std::iter::once(&files.verification_bundle)
        .chain(&files.extra_verification_files)
        .cloned()
        .collect();
    let loaded = load_verification_keys(&paths)?;
    super::print_warnings(&loaded.warnings);
    Ok(loaded.keys.iter().map(|k| k.kid().to_string()).collect())
}
