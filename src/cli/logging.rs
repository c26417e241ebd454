//! The daemon's log output through `tracing`: plain lines for journald and terminals, or JSON.

use std::io::IsTerminal;

/// How `keyrot run` writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // journald and files show escape codes as garbage: colour only for a person at a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Under systemd journald stamps every line itself; a second timestamp is noise.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text if journald => builder.without_time().init(),
        LogFormat::Text => builder.init(),
    }
}
