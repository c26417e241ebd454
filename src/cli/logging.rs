//! The daemon's log output through `tracing`: plain lines for journald and terminals, or JSON.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    // kube's client logs every failed request at ERROR ("failed with error client error
    // (Connect)") while an apiserver restarts; keyrot says what failed and what it does next.
    let quiet_kube = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("kube_client", LevelFilter::OFF);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .finish()
            .with(quiet_kube)
            .init(),
        LogFormat::Text if journald => builder.without_time().finish().with(quiet_kube).init(),
        LogFormat::Text => builder.finish().with(quiet_kube).init(),
    }
}
