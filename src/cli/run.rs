//! `keyrot run`: logging and the plan, then the daemon's loop (`keyrot::daemon::service`).

use std::process::ExitCode;

use keyrot::daemon::service::Daemon;

use super::logging::{self, LogFormat};
use super::plan_args::PlanArg;

/// Run as a service: rotate on the plan's schedule, resume a rotation in progress, act on
/// `keyrot rotate|approve|abort|rollback` at once, serve metrics, talk to systemd.
///
/// Sleeps until the next scheduled rotation, gate check or retry, waking early only for a
/// request, a signal or the systemd watchdog. SIGHUP reloads the plan (an invalid plan is
/// reported and the running one kept); SIGTERM or SIGINT finishes the current step and exits 0.
/// One `keyrot run` per state directory: a second one is refused.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Log lines as text (readable in journald) or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format);
    let plan = args.plan.load()?;
    if let Some(ha) = &plan.ha {
        keyrot::ha::daemon::run(&plan, ha)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(daemon) = Daemon::start(plan, args.plan.path.clone())? {
        daemon.run();
    }
    Ok(ExitCode::SUCCESS)
}
