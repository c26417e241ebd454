//! Command-line surface: one module per subcommand, each turning arguments into library calls.

mod discovery;
mod inspect;
mod jwks;
mod keygen;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rotates the Kubernetes service-account signing key and keeps the cluster's OIDC issuer
/// documents (discovery document and JWKS) published, byte for byte as kube-apiserver serves them.
#[derive(Debug, Parser)]
#[command(name = "keyrot", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Jwks(jwks::Args),
    Discovery(discovery::Args),
    Inspect(inspect::Args),
    Validate(validate::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Jwks(args) => jwks::run(args),
        Command::Discovery(args) => discovery::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Validate(args) => validate::run(args),
    }
}

/// Prints kube's silent skips so the user sees them.
fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
