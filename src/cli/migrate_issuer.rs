//! `keyrot migrate-issuer`: runs the issuer migration of the plan's `issuerMigration` section,
//! or rolls it back; `keyrot approve` continues one that waits for a person.

use super::out::{out, outln};
use std::process::ExitCode;

use chrono::Utc;
use keyrot::adapters::migration::ClusterEffects;
use keyrot::daemon::control::{self, Ask, MigrationAsk};
use keyrot::dry_run::{render_request_text, simulate_migration};
use keyrot::executor::StepReport;
use keyrot::migration::{self, Outcome, RequestError};
use keyrot::observe::observe_files;
use keyrot::plan::Plan;
use keyrot::state::StateStore;
use keyrot::state::TriggerKind;

use super::plan_args::PlanArg;

/// Move the cluster's service-account issuer to the plan's `issuerMigration.newIssuer`, in five
/// steps, each verified before the next: publish the new issuer's documents, read them back
/// anonymously, change kube-apiserver's flags (new issuer first, old kept) and restart, check
/// the apiserver and a new token, and after the grace period (if `dropOldIssuer`) drop the old
/// issuer.
///
/// Stops at the first failure, changing nothing after it. Finished steps are recorded in the
/// state directory: run the command again to continue (after a fix, or once the grace period is
/// over). A step a person must make (`flags: manual`) waits for `keyrot approve`; so does, with
/// `acceptFirst` (several apiservers), the issuing with the new issuer, until every apiserver
/// accepts it. No key rotation starts while a migration is recorded. Exit status: 0 done, 1 a
/// step failed, 3 waiting (grace period, or a person).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Print what would be done (documents, targets, flag diffs); write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Put kube-apiserver's flags back to their bytes from before the migration, restart it,
    /// check it issues tokens with the old issuer again, and remove the migration's record.
    /// Tokens issued with the new issuer meanwhile are rejected afterwards.
    #[arg(long)]
    rollback: bool,
    /// Do not hand the migration to a running `keyrot run`: take the state lock and run it in
    /// this process. Without a running daemon it always runs here.
    #[arg(long)]
    foreground: bool,
}

/// Nothing failed, but the migration is not finished yet.
const WAITING: u8 = control::MIGRATION_WAITING;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let kind = match args.rollback {
        true => TriggerKind::RollbackIssuerMigration,
        false => TriggerKind::MigrateIssuer,
    };
    if args.dry_run {
        return dry_run(&plan, kind);
    }
    let ask = match args.rollback {
        true => MigrationAsk::Rollback,
        false => MigrationAsk::Run,
    };
    if !args.foreground
        && let Some(code) = hand_to_daemon(&plan, ask)?
    {
        return Ok(code);
    }
    in_foreground(plan, kind)
}

/// The steps the request would set going, as the decision core takes them, each with what it
/// would write. Reads the state, the key files and the targets; writes nothing.
fn dry_run(plan: &Plan, kind: TriggerKind) -> anyhow::Result<ExitCode> {
    let state = StateStore::new(&plan.state_dir).read()?;
    let observed = observe_files(plan)?;
    let effects = &mut ClusterEffects::new(plan);
    let run = simulate_migration(plan, state.as_ref(), &observed, Utc::now(), kind, effects);
    match (&run.blocked, run.timeline.is_empty()) {
        (Some(why), true) => anyhow::bail!("{why}"),
        (Some(_), false) => {
            out!("{}", render_request_text(&run, "the issuer migration"));
            Ok(ExitCode::FAILURE)
        }
        (None, _) => {
            out!("{}", render_request_text(&run, "the issuer migration"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Carries out the request in this process, printing what each step does.
fn in_foreground(plan: Plan, kind: TriggerKind) -> anyhow::Result<ExitCode> {
    let mut session = super::foreground::open(plan)?;
    let rollback = migration::is_rollback(kind, session.recorded());
    if let Some(warning) = migration::rollback_warning(session.plan(), kind, session.recorded()) {
        outln!("{warning}");
    }
    // What the steps say is the command's output; how it ended is printed below.
    let mut print_said = |_: &Plan, step: &StepReport| {
        if let StepReport::Said { line, .. } = step {
            outln!("{line}");
        }
    };
    let outcome = session.migration_request(kind, &mut print_said);
    Ok(report(outcome, rollback))
}

/// `keyrot approve` when the plan's migration waits for a person: the step goes on.
pub fn approve(plan: Plan, foreground: bool) -> anyhow::Result<ExitCode> {
    if !foreground && let Some(code) = hand_to_daemon(&plan, MigrationAsk::Approve)? {
        return Ok(code);
    }
    in_foreground(plan, TriggerKind::Approve)
}

/// Sends the request to a running `keyrot run` for the plan's state directory and prints its
/// answer; `None` when no daemon listens.
pub(super) fn hand_to_daemon(plan: &Plan, ask: MigrationAsk) -> anyhow::Result<Option<ExitCode>> {
    let Some(answer) = control::ask(&plan.state_dir, Ask::Migration(ask))? else {
        return Ok(None);
    };
    let (status, output) = answer.split_once('\n').unwrap_or((answer.as_str(), ""));
    let code = status
        .strip_prefix("exit ")
        .and_then(|c| c.parse::<u8>().ok());
    match code {
        Some(code) => {
            // As in the foreground: the failure on standard error, the rest on standard output.
            for line in output.lines() {
                match line.starts_with("error: ") {
                    true => eprintln!("{line}"),
                    false => outln!("{line}"),
                }
            }
            outln!("(carried out by the running keyrot daemon)");
            Ok(Some(ExitCode::from(code)))
        }
        None => {
            eprintln!("{answer} (from the running keyrot daemon)");
            Ok(Some(ExitCode::FAILURE))
        }
    }
}

fn report(outcome: Result<Outcome, RequestError>, rollback: bool) -> ExitCode {
    match outcome {
        Ok(Outcome::Done) => {
            if !rollback {
                outln!("issuer migration done");
            }
            ExitCode::SUCCESS
        }
        Ok(Outcome::Waiting(what)) => {
            outln!("{what}");
            ExitCode::from(WAITING)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
