//! Running a session in the foreground: progress lines, and sleeping until the next gate can
//! pass. `keyrot run` drives the same session from the daemon's loop.

use super::out::outln;

use chrono::Utc;
use keyrot::decision::{Action, Blocked};
use keyrot::describe::{describe_action, shorten_kids};
use keyrot::executor::StepReport;
use keyrot::plan::Plan;
pub use keyrot::session::Rest;
use keyrot::session::Session;

/// Opens the session, saying what interrupted writes left behind.
pub fn open(plan: Plan) -> anyhow::Result<Session> {
    let (session, leftovers) = Session::open(plan)?;
    for path in leftovers.removed {
        outln!(
            "{}  -        removed {}, left by a write that an interrupted keyrot never finished",
            Utc::now().format("%H:%M:%S"),
            path.display()
        );
    }
    for (dir, e) in leftovers.not_cleaned {
        eprintln!(
            "warning: cannot remove stale temp files in {}: {e}",
            dir.display()
        );
    }
    Ok(session)
}

/// Acts and sleeps through timed waits until the rotation completes, waits for a person, or
/// waits on something no timer changes; says which (see [`Session::run_to_rest`]).
pub fn run_to_rest(session: &mut Session) -> anyhow::Result<Rest> {
    let mut on_wait = |b: &Blocked| {
        let reason = shorten_kids(&b.reason);
        outln!(
            "{}  waiting  [{}] {reason}",
            Utc::now().format("%H:%M:%S"),
            b.gate
        );
    };
    Ok(session.run_to_rest(&mut print_progress, &mut on_wait)?)
}

/// Records the keys the files hold when keyrot has none recorded yet, and nothing else: no
/// request is consumed and no rotation starts, even one that is due.
pub fn adopt_only(session: &mut Session) -> anyhow::Result<()> {
    let adopted = std::cell::Cell::new(false);
    let mut report = |plan: &Plan, report: &StepReport| {
        if let StepReport::Acted {
            action: Action::Adopt { .. },
            ..
        } = report
        {
            adopted.set(true);
        }
        print_progress(plan, report);
    };
    session.run(&mut || adopted.get(), &mut report)?;
    Ok(())
}

fn print_progress(plan: &Plan, progress: &StepReport) {
    match progress {
        StepReport::Acted { at, phase, action } => {
            let shown = action.is_effect()
                || matches!(action, Action::EnterPhase { .. } | Action::CompleteRotation);
            if let (true, Some(text)) = (shown, describe_action(plan, action)) {
                let text = shorten_kids(&text);
                outln!(
                    "{}  {:<8} {text}",
                    at.format("%H:%M:%S"),
                    phase.map_or("-", |p| p.as_str())
                );
            }
            if let Action::ConsumeTrigger { kind, outcome } = action {
                outln!("{}  {:<8} {kind:?}: {outcome}", at.format("%H:%M:%S"), "-");
            }
            // A timed-out gate is a failed attempt: say so, and why the files change next.
            if let Action::GateFailed {
                gate,
                reason,
                retry_at,
                fall_back,
            } = action
            {
                let fallback = if *fall_back {
                    "; until then the apiserver gets its last good key files back"
                } else {
                    ""
                };
                eprintln!(
                    "{}  {:<8} FAILED gate {gate} (closed for longer than gateTimeout): {}; \
                     retry at {}{fallback}",
                    at.format("%H:%M:%S"),
                    phase.map_or("-", |p| p.as_str()),
                    shorten_kids(reason),
                    keyrot::describe::time(*retry_at)
                );
            }
        }
        StepReport::Said { line, .. } => outln!("{line}"),
        StepReport::Failed {
            at,
            phase,
            action,
            error,
        } => {
            eprintln!(
                "{}  {:<8} FAILED {}: {error}",
                at.format("%H:%M:%S"),
                phase.map_or("-", |p| p.as_str()),
                keyrot::decision::action_name(action)
            );
        }
    }
}
