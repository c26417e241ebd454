//! The `keyrot` command: parses arguments and hands each subcommand to its module in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // The error may quote a file or a server: no control characters reach the terminal.
            let message = format!("{err:#}");
            eprintln!("error: {}", keyrot::escape::printable(&message));
            ExitCode::FAILURE
        }
    }
}
