//! `keyrot switch-signer`: kube-apiserver takes its service-account keys from keyrot's external
//! signer instead of its key files, or (`--back`) from its key files again.

use std::process::ExitCode;

use chrono::Utc;
use keyrot::adapters::key_flags::FlagFileSwitch;
use keyrot::daemon::control::MigrationAsk;
use keyrot::decision::Action;
use keyrot::dry_run::{render_request_text, simulate_request};
use keyrot::observe::observe_files;
use keyrot::plan::Plan;
use keyrot::state::{StateStore, TriggerKind};

use super::out::out;
use super::plan_args::PlanArg;

/// Switch kube-apiserver between its key files and keyrot's external signer.
///
/// To the signer: once the signer (served by `keyrot run`) serves the key files' keys, the
/// plan's `signer.switch` flag file gets `--service-account-signing-endpoint` in place of
/// `--service-account-key-file` and `--service-account-signing-key-file` (with a kubeadm
/// manifest, keyrot's patches in the plan's `kubeadmPatches` directory keep the change across
/// `kubeadm upgrade`), kube-apiserver restarts, and keyrot checks it serves the key files' keys
/// and signs new tokens with the signing key. Every key stays verifiable: the signer lists the
/// key files' keys under the kids kube computes. `--back` does the reverse; run while a switch
/// is in progress it rolls that one back. The plan's `apiserver.restart` must already say how
/// rotations restart the apiserver afterwards (`externalSigner` for the signer). No rotation or
/// issuer migration runs meanwhile. Needs `keyrot run`, which serves the signer and carries the
/// switch out. Exit status: 0 done, 1 refused or failed, 3 still waiting (it goes on).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
    /// Back to the key files (or roll back a switch to the signer in progress).
    #[arg(long)]
    back: bool,
    /// Print the steps and what they would write (the flag file's diff, kubeadm's patches);
    /// change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let ask = match args.back {
        true => MigrationAsk::UseKeyFiles,
        false => MigrationAsk::UseSigner,
    };
    if args.dry_run {
        return dry_run(&plan, ask.kind());
    }
    match super::migrate_issuer::hand_to_daemon(&plan, ask)? {
        Some(code) => Ok(code),
        None => anyhow::bail!(
            "keyrot run is not running for {}: it serves the signer and carries the switch \
             out; start it (systemctl start keyrot), then run this again",
            plan.state_dir.display()
        ),
    }
}

/// The steps the core would take, each with what it would write. Writes nothing.
fn dry_run(plan: &Plan, kind: TriggerKind) -> anyhow::Result<ExitCode> {
    let state = StateStore::new(&plan.state_dir).read()?;
    let observed = observe_files(plan)?;
    let switch = FlagFileSwitch::new(plan);
    let mut detail = |action: &Action| match action {
        Action::SwitchKeyFlags { to } => Some(
            switch
                .preview(*to)
                .unwrap_or_else(|e| format!("cannot show what it writes: {e}\n")),
        ),
        _ => None,
    };
    let run = simulate_request(
        plan,
        state.as_ref(),
        &observed,
        Utc::now(),
        kind,
        &mut detail,
    );
    match (&run.blocked, run.timeline.is_empty()) {
        (Some(why), true) => anyhow::bail!("{why}"),
        (blocked, _) => {
            out!("{}", render_request_text(&run, "the switch"));
            Ok(match blocked {
                Some(_) => ExitCode::FAILURE,
                None => ExitCode::SUCCESS,
            })
        }
    }
}
