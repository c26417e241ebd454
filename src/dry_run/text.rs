//! The dry run for people: aligned columns, readable in 100 columns.

use std::fmt::Write;

use super::{DryRun, Keys, StepKind};
use crate::describe::shorten_kids;

/// What is left of 100 columns after the time and phase columns.
const STEP_WIDTH: usize = 100 - 34;

pub fn render_text(run: &DryRun) -> String {
    let mut out = String::new();
    header(&mut out, run, "", "gate");
    if run.timeline.is_empty() {
        if let Some(blocked) = &run.blocked {
            let _ = writeln!(out, "\nNothing can happen: {blocked}");
        }
        return out;
    }
    section(&mut out, "Keys now", &run.before);
    timeline(&mut out, run);
    section(&mut out, "Keys after", &run.after);
    if let Some(blocked) = &run.blocked {
        let _ = writeln!(out, "\nBlocked: {blocked}");
    }
    out
}

/// What is simulated (`what` names it before the plan), that nothing is written, the notes.
fn header(out: &mut String, run: &DryRun, what: &str, waits_for: &str) {
    let _ = writeln!(
        out,
        "Dry run of {what}{} (cluster {:?}) from {}",
        run.plan,
        run.cluster,
        crate::describe::time(run.starts_at)
    );
    let _ = writeln!(
        out,
        "Nothing is written. Times assume every {waits_for} passes as soon as it can;"
    );
    let _ = writeln!(out, "steps marked · change only keyrot's own record.");
    for note in &run.notes {
        let _ = writeln!(out, "Note: {note}");
    }
}

fn section(out: &mut String, title: &str, keys: &Keys) {
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(out, "  signing key          {}", keys.signing);
    let _ = writeln!(
        out,
        "  verification bundle  {}",
        list(&keys.verification_bundle)
    );
    for target in &keys.targets {
        let _ = writeln!(
            out,
            "  JWKS at {:<12} {}",
            target.target,
            list(&target.kids)
        );
    }
}

fn list(kids: &[String]) -> String {
    if kids.is_empty() {
        "(none)".into()
    } else {
        kids.join("\n                       ")
    }
}

/// Breaks `text` at spaces into lines of at most `width` characters (a longer word stays whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// `keyrot migrate-issuer --dry-run`, `keyrot switch-signer --dry-run`: the steps of the change
/// (`what`, "the issuer migration") a request sets going, each with what it would write.
pub fn render_request_text(run: &DryRun, what: &str) -> String {
    let mut out = String::new();
    header(&mut out, run, &format!("{what} of "), "check");
    timeline(&mut out, run);
    if let Some(blocked) = &run.blocked {
        let _ = writeln!(out, "\nBlocked: {blocked}");
    }
    out
}

/// The timeline, one step per line, with what a step writes below it.
fn timeline(out: &mut String, run: &DryRun) {
    let _ = writeln!(out, "\nTimeline");
    let _ = writeln!(out, "  {:<20}  {:<8}  STEP", "EARLIEST (UTC)", "PHASE");
    for step in &run.timeline {
        let phase = step.phase.map_or("-", |p| p.as_str());
        let line = match &step.what {
            StepKind::Action {
                description,
                changes,
                ..
            } => {
                format!(
                    "{}{}",
                    if *changes { "" } else { "· " },
                    shorten_kids(description)
                )
            }
            StepKind::Wait { gate, reason, .. } => {
                format!("wait [{gate}] {}", shorten_kids(reason))
            }
        };
        let mut lines = wrap(&line, STEP_WIDTH).into_iter();
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20}  {:<8}  {first}",
            step.at.format("%Y-%m-%d %H:%M:%S"),
            phase
        );
        for more in lines {
            let _ = writeln!(out, "{:34}{more}", "");
        }
        if let StepKind::Action {
            detail: Some(detail),
            ..
        } = &step.what
        {
            // As it will be written, unindented: a diff stays a diff to copy.
            out.push_str(detail);
            if !detail.ends_with('\n') {
                out.push('\n');
            }
        }
    }
}
