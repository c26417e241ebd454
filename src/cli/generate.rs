//! `keyrot man` and `keyrot completions` (hidden): the man pages and shell completions the
//! package ships, generated from these very clap definitions so they never drift from `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// Write the man pages: keyrot.1 and one keyrot-COMMAND.1 per command.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory the pages are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// Print the completion script for a shell.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.out_dir)
        .with_context(|| format!("cannot write the man pages to {}", args.out_dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "keyrot", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
