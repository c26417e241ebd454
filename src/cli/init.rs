//! `keyrot init`: a first key set for a cluster that has none (a new cluster, the sandbox).

use super::out::outln;
use std::process::ExitCode;

use keyrot::atomic_file::{self, Existing};
use keyrot::keys::SigningKey;

use super::foreground;
use super::plan_args::PlanArg;

/// Create a first signing key and verification bundle where none exist, and record them.
///
/// Refuses when either file exists: an existing cluster's keys are adopted as they are on
/// keyrot's first run, never replaced.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    plan: PlanArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan.load()?;
    let files = &plan.apiserver;
    for path in [&files.signing_key_file, &files.verification_bundle] {
        if path.exists() {
            anyhow::bail!(
                "{} already exists: keyrot adopts existing keys on its first run (`keyrot plan -c {}` shows how)",
                path.display(),
                args.plan.path.display()
            );
        }
    }
    let mut session = foreground::Session::open(plan.clone())?;
    let key = SigningKey::generate(plan.key)?;
    for path in [&files.signing_key_file, &files.verification_bundle] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        }
    }
    atomic_file::write(
        &files.signing_key_file,
        key.to_private_pem().as_bytes(),
        0o600,
        Existing::Refuse,
    )?;
    atomic_file::write(
        &files.verification_bundle,
        key.public().to_spki_pem().as_bytes(),
        0o644,
        Existing::Refuse,
    )?;
    outln!(
        "created {} and {}",
        files.signing_key_file.display(),
        files.verification_bundle.display()
    );
    outln!("kid {}", key.public().kid());
    session.run_until_waiting()?;
    Ok(ExitCode::SUCCESS)
}
