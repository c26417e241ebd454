//! `keyrot status`: the key ring, the rotation in progress, the next run, what blocks.

use super::out::{out, outln};
use std::process::ExitCode;

use chrono::Utc;
use keyrot::observe::observe_files;
use keyrot::state::StateStore;
use keyrot::status::{render_text, status, status_with_unreadable_files};

use super::plan_args::{Output, PlanArg};

/// Show keys (kid, alg, role, age, when a retiring key may leave), the phase in progress, the
/// next scheduled rotation, the last error, whether a keyrot carries the rotation on, and an
/// issuer migration's progress. Reads only; works while a daemon runs, and while a key file is
/// broken (the failing check is shown instead of the decision).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    if let Some(ha) = &plan.ha {
        return super::ha::status(&plan, ha, args.output);
    }
    let store = StateStore::new(&plan.state_dir);
    let state = store.read()?;
    let now = Utc::now();
    let mut status = match observe_files(&plan) {
        Ok(observed) => status(&plan, state.as_ref(), &observed, now),
        Err(e) => status_with_unreadable_files(&plan, state.as_ref(), &e.to_string(), now),
    };
    status.lock_holder = Some(store.holder()?);
    status.issuer_migration =
        keyrot::migration::record::read(&plan.state_dir).map_err(anyhow::Error::msg)?;
    match args.output {
        Output::Text => out!("{}", render_text(&status, now)),
        Output::Json => outln!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}
