//! `keyrot migrate-issuer`: runs the issuer migration of the plan's `issuerMigration` section.

use std::process::ExitCode;

use keyrot::migration::{self, Outcome};
use keyrot::state::StateStore;

use super::plan_args::PlanArg;

/// Move the cluster's service-account issuer to the plan's `issuerMigration.newIssuer`, in five
/// steps, each verified before the next: publish the new issuer's documents, read them back
/// anonymously, change kube-apiserver's flags (new issuer first, old kept) and restart, check
/// the apiserver and a new token, and after the grace period (if `dropOldIssuer`) drop the old
/// issuer.
///
/// Stops at the first failure, changing nothing after it. Finished steps are recorded in the
/// state directory: run the command again to continue (after a fix, or once the grace period is
/// over). Exit status: 0 done, 1 a step failed, 3 waiting (grace period, or a manual change).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Print the documents that would be published and the flag changes; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Nothing failed, but the migration is not finished yet.
const WAITING: u8 = 3;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    if args.dry_run {
        print!("{}", migration::dry_run(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = StateStore::new(&plan.state_dir).try_lock()?;
    let outcome = migration::run(&plan, chrono::Utc::now, &mut |line| println!("{line}"));
    match outcome {
        Ok(Outcome::Done) => {
            println!("issuer migration done");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Waiting(what)) => {
            println!("{what}");
            Ok(ExitCode::from(WAITING))
        }
        Err(e) => {
            eprintln!("error: {e}; nothing after it was changed");
            Ok(ExitCode::FAILURE)
        }
    }
}
