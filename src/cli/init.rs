//! `keyrot init`: a first key set for a cluster that has none (a new cluster, the sandbox).

use super::out::outln;
use std::process::ExitCode;

use keyrot::atomic_file::{self, Existing};
use keyrot::keys::SigningKey;
use keyrot::safe_dir::{self, Trust};

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
    let mut session = foreground::open(plan.clone())?;
    let key = SigningKey::generate(plan.key)?;
    // The signing key's directory first: when both files share it, it holds a private key and
    // gets 0700; modes are explicit, so `umask 0` does not make it world-writable.
    let dirs = [
        (&files.signing_key_file, safe_dir::PRIVATE_DIR_MODE),
        (&files.verification_bundle, safe_dir::PUBLIC_DIR_MODE),
    ];
    for (path, mode) in dirs {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            safe_dir::create_dir_all(dir, mode)?;
        }
    }
    if let Some(dir) = files
        .signing_key_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        safe_dir::check_trusted(dir, Trust::NotWritableByOthers, "a signing key")?;
    }
    atomic_file::write_private_key(
        &files.signing_key_file,
        key.to_private_pem().as_bytes(),
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
    foreground::adopt_only(&mut session)?;
    Ok(ExitCode::SUCCESS)
}
