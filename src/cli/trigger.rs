//! `keyrot rotate`, `approve`, `abort`, `rollback`: record a request and carry it out.

use std::process::ExitCode;

use keyrot::state::TriggerKind;

use super::foreground;
use super::plan_args::PlanArg;

/// Arguments shared by the four triggers.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Stay in the foreground, printing each phase and gate, until the rotation completes or
    /// waits for a person. (Without a running daemon, triggers always run in the foreground.)
    #[arg(long)]
    foreground: bool,
}

pub fn run(kind: TriggerKind, args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let mut session = foreground::Session::open(&plan)?;
    session.trigger(kind)?;
    session.run_to_rest()?;
    Ok(ExitCode::SUCCESS)
}
