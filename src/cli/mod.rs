//! Command-line surface: one module per subcommand, each turning arguments into library calls.

mod discovery;
mod doctor;
mod foreground;
mod generate;
mod ha;
mod init;
mod inspect;
mod jwks;
mod keygen;
mod logging;
mod migrate_issuer;
mod out;
mod plan;
mod plan_args;
mod publish;
mod run;
mod status;
mod switch_signer;
mod trigger;
mod validate;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyrot::state::TriggerKind;

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
    Plan(plan::Args),
    Status(status::Args),
    Init(init::Args),
    Publish(publish::Args),
    Verify(verify::Args),
    Doctor(doctor::Args),
    MigrateIssuer(migrate_issuer::Args),
    SwitchSigner(switch_signer::Args),
    Run(run::Args),
    Node(ha::NodeArgs),
    /// Start a rotation now.
    Rotate(trigger::Args),
    /// Release the phase held for approval, or the issuer migration step waiting for a person.
    Approve(trigger::ApproveArgs),
    /// Before promotion: drop the new key; the old key keeps signing.
    Abort(trigger::Args),
    /// After promotion, before retirement: sign with the previous key again.
    Rollback(trigger::Args),
    Completions(generate::CompletionsArgs),
    Man(generate::ManArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Jwks(args) => jwks::run(args),
        Command::Discovery(args) => discovery::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Status(args) => status::run(args),
        Command::Init(args) => init::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::MigrateIssuer(args) => migrate_issuer::run(args),
        Command::SwitchSigner(args) => switch_signer::run(args),
        Command::Run(args) => run::run(args),
        Command::Node(args) => ha::node(args),
        Command::Rotate(args) => trigger::run(TriggerKind::Rotate, args),
        Command::Approve(args) => trigger::run_approve(args),
        Command::Abort(args) => trigger::run(TriggerKind::Abort, args),
        Command::Rollback(args) => trigger::run(TriggerKind::Rollback, args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

/// Prints kube's silent skips so the user sees them.
fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {}", keyrot::escape::printable(warning));
    }
}
