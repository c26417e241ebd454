//! `keyrot man` and `keyrot completions`: the man pages and shell completions the package ships,
//! generated from these very clap definitions so they never drift from `--help`. They are
//! ordinary commands, so that a static binary installed without the package can make its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use keyrot::atomic_file::{self, Existing};
use keyrot::safe_dir;

/// Write the man pages: keyrot.1 and one keyrot-COMMAND.1 per command (the Debian package ships
/// them; `man -l DIR/keyrot.1` reads one without installing it).
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory the pages are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// Print the completion script for a shell, e.g. `keyrot completions bash >
/// /etc/bash_completion.d/keyrot` (the Debian package ships them for bash, zsh and fish).
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    safe_dir::create_dir_all(&args.out_dir, 0o755)?;
    let mut command = super::Cli::command().disable_help_subcommand(true);
    // Built first, so that each subcommand's display name is `keyrot-COMMAND`.
    command.build();
    write_pages(&command, &args.out_dir)?;
    Ok(ExitCode::SUCCESS)
}

/// The page of `command` and of each of its subcommands, named as clap_mangen names them.
fn write_pages(command: &clap::Command, out_dir: &Path) -> anyhow::Result<()> {
    for sub in command.get_subcommands() {
        write_pages(sub, out_dir)?;
    }
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let path = out_dir.join(man.get_filename());
    atomic_file::write(&path, &page, 0o644, Existing::Replace)?;
    Ok(())
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "keyrot", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
