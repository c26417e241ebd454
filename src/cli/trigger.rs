//! `keyrot rotate`, `approve`, `abort`, `rollback`: hand the request to a running daemon, or
//! record it and carry it out in the foreground. `approve` goes to the issuer migration instead
//! when it waits for a person.

use super::out::outln;
use std::process::ExitCode;

use keyrot::daemon::control::{self, Ask};
use keyrot::migration;
use keyrot::plan::Plan;
use keyrot::state::TriggerKind;

use super::foreground::{self, Rest};
use super::migrate_issuer;
use super::plan_args::PlanArg;

/// Arguments shared by the four triggers.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Do not hand the request to a running `keyrot run`: act in this process, printing each
    /// phase and gate, until the rotation completes or waits for a person. Without a running
    /// daemon, triggers always run in the foreground.
    #[arg(long)]
    foreground: bool,
}

/// `keyrot approve` also takes `--force`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    common: Args,
    /// Pass the gate the rotation waits on now (publish-settle, retire-after, or a check that
    /// keeps failing) although keyrot did not see it pass. This can lock workloads out: it is
    /// recorded in the state and logged loudly. Use it only when you know why the gate is closed.
    #[arg(long)]
    force: bool,
}

pub fn run_approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let plan = args.common.plan.load()?;
    if migration::awaiting(&plan)
        .map_err(anyhow::Error::msg)?
        .is_some()
    {
        anyhow::ensure!(
            !args.force,
            "the issuer migration waits for a person, not for a gate: --force does not apply; \
             approve without it once the change is made"
        );
        return migrate_issuer::approve(plan, args.common.foreground);
    }
    if args.force {
        eprintln!(
            "WARNING: forcing the gate the rotation waits on; keyrot will not have seen it pass"
        );
    }
    run_trigger(
        TriggerKind::Approve,
        plan,
        args.common.foreground,
        args.force,
    )
}

pub fn run(kind: TriggerKind, args: Args) -> anyhow::Result<ExitCode> {
    run_trigger(kind, args.plan.load()?, args.foreground, false)
}

fn run_trigger(
    kind: TriggerKind,
    plan: Plan,
    foreground: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(ha) = &plan.ha {
        // On an HA control plane a request goes to the ring, where every node's keyrot sees it.
        anyhow::ensure!(
            kind == TriggerKind::Rotate,
            "keyrot {} is not supported on an HA control plane yet (docs/ha.md); `keyrot rotate` \
             and `keyrot node remove` are",
            control::request_word(kind)
        );
        return super::ha::rotate(ha);
    }
    if !foreground
        && let Some(answer) = control::ask(&plan.state_dir, Ask::Trigger { kind, force })?
    {
        outln!(
            "{}: {answer} (by the running keyrot daemon)",
            control::request_word(kind)
        );
        return Ok(exit_code(&answer));
    }
    let mut session = foreground::open(plan)?;
    session.trigger(kind, force)?;
    let rest = foreground::run_to_rest(&mut session)?;
    if let Rest::Stuck(blocked) = rest {
        // A request left recorded would be acted on by whatever runs next (`keyrot init`, say),
        // long after the person who asked has gone: take it back, and fail so they see it.
        let withdrawn = session.withdraw(kind)?.is_some();
        let what = match (withdrawn, session.rotation()) {
            (true, _) => format!("{}: nothing was done", control::request_word(kind)),
            (false, Some(r)) => format!(
                "rotation {} stopped in phase {}: nothing will carry it on until this is fixed",
                r.id, r.phase
            ),
            (false, None) => format!("{}: cannot go on", control::request_word(kind)),
        };
        let resume = match withdrawn {
            true => "then run this command again",
            false => "then run `keyrot rotate` (it continues the rotation) or start `keyrot run`",
        };
        anyhow::bail!(
            "{what}: [{}] {}; fix that, {resume}",
            blocked.gate,
            blocked.reason
        );
    }
    let outcome = session.outcomes().last().map_or("", String::as_str);
    Ok(exit_code(outcome))
}

/// A request the core refused (or the daemon could not take) fails the command, so scripts see it.
fn exit_code(outcome: &str) -> ExitCode {
    if outcome.starts_with("refused") || outcome.starts_with("error") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
