//! `keyrot inspect`: every PEM block of every file, with what kube-apiserver makes of it.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::escape::printable;
use keyrot::keys::reader::read_file;

/// Labels longer than this are not padded to: one odd block does not widen every line.
const MAX_LABEL_WIDTH: usize = 40;

/// List every PEM block with what kube-apiserver makes of it: key type, alg and kid, or
/// "skipped" and why.
///
/// Run it on the cluster's key files when a cloud says "kid not found": the kids listed are the
/// ones kube-apiserver serves and signs with. Exits non-zero when a file is unreadable or yields
/// no key (kube-apiserver would refuse to start).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// PEM files: verification bundles, signing keys, certificates.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in &args.files {
        outln!("{}", path.display());
        let report = match read_file(path) {
            Ok(report) => report,
            Err(err) => {
                outln!("  error: {err}");
                failed = true;
                continue;
            }
        };
        if report.blocks.is_empty() {
            outln!("  no PEM blocks");
        }
        // Labels come from the file: any length (a runtime width over 65535 makes the formatter
        // panic) and any character, so they are escaped and padded by hand, up to a width.
        let labels: Vec<String> = report
            .blocks
            .iter()
            .map(|b| printable(&b.label).into_owned())
            .collect();
        let label_width = labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(MAX_LABEL_WIDTH);
        for (block, label) in report.blocks.iter().zip(&labels) {
            let what = match &block.outcome {
                Ok((key, form)) => format!(
                    "{:<12} {}  kid {}  ({form})",
                    key.describe(),
                    key.alg(),
                    key.kid()
                ),
                Err(why) => format!("skipped: {why}"),
            };
            let pad = " ".repeat(label_width.saturating_sub(label.chars().count()));
            outln!("  line {:<4} {label}{pad}  {what}", block.line);
        }
        let keys = report.keys().count();
        if keys == 0 {
            outln!("  => no key: kube-apiserver refuses to start with this file");
            failed = true;
        } else {
            outln!("  => {keys} key(s) kube-apiserver would use");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
