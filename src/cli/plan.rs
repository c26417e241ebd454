//! `keyrot plan`: the dry run. Reads, never writes: no state file, no lock, no key file.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use keyrot::dry_run::{render_text, simulate};
use keyrot::observe::observe_files;
use keyrot::state::StateStore;

use super::plan_args::{Output, PlanArg};

/// Show the coming rotation as a timeline without changing anything.
///
/// Every phase and action with its earliest time and the gate it waits for, the verification
/// bundle and the JWKS before and after, the file writes and restarts it would make. Nothing is
/// written anywhere: not the state, not a lock file, not a key.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Simulate from this time instead of now (RFC 3339, e.g. 2026-12-06T03:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    at: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Do not contact the apiserver; the simulation assumes it serves what its files hold.
    #[arg(long)]
    offline: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let state = StateStore::new(&plan.state_dir).read()?;
    let observed = observe_files(&plan)?;
    let mut run = simulate(
        &plan,
        state.as_ref(),
        &observed,
        args.at.unwrap_or_else(Utc::now),
    );
    if !args.offline && !matches!(plan.probe, keyrot::plan::Probe::None) {
        run.notes.push(
            "the apiserver was not probed: the plan's kubeconfig probe runs during rotations"
                .into(),
        );
    }
    match args.output {
        Output::Text => print!("{}", render_text(&run)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&run)?),
    }
    Ok(if run.blocked.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
