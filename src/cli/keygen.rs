//! `keyrot keygen`: create a signing key pair in the forms every Kubernetes version reads.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::atomic_file::Existing;
use keyrot::keys::{Alg, GenerateSpec, SigningKey};

/// Generate a signing key pair and print its kid.
///
/// The private key is written as PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY` with mode
/// 0600, the public key as SPKI `PUBLIC KEY` with mode 0644, each atomically.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signing algorithm: RS256 (RSA) or ES256 (ECDSA P-256).
    #[arg(long, value_enum)]
    alg: KeygenAlg,
    /// RSA modulus size: 2048, 3072 or 4096 [default: 2048]. Not for ES256.
    #[arg(long)]
    bits: Option<usize>,
    /// Where to write the private key.
    #[arg(long, value_name = "PATH")]
    private: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "PATH")]
    public: PathBuf,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "verbatim")]
enum KeygenAlg {
    RS256,
    ES256,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let alg = match args.alg {
        KeygenAlg::RS256 => Alg::RS256,
        KeygenAlg::ES256 => Alg::ES256,
    };
    let spec = GenerateSpec::new(alg, args.bits)?;
    let existing = if args.force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    if existing == Existing::Refuse {
        // Checked before the (possibly slow) key generation, and again atomically when writing.
        if let Some(taken) = [&args.private, &args.public]
            .into_iter()
            .find(|p| p.exists())
        {
            anyhow::bail!(
                "{} already exists; pass --force to replace it",
                taken.display()
            );
        }
    }
    let key = SigningKey::generate(spec)?;
    key.write_pair(&args.private, &args.public, existing)?;
    outln!("{}", key.public().kid());
    Ok(ExitCode::SUCCESS)
}
