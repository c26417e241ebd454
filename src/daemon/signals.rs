//! SIGHUP, SIGTERM and SIGINT as events for the main loop, delivered by a thread of their own.

use std::sync::mpsc::Sender;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: read the plan again.
    Reload,
    /// SIGTERM or SIGINT: finish the current step and exit.
    Shutdown,
}

/// From now on these signals no longer act on the process at once: each becomes an event.
pub fn forward<E: Send + 'static>(events: Sender<E>, wrap: fn(Signal) -> E) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for number in signals.forever() {
                let signal = match number {
                    SIGHUP => Signal::Reload,
                    _ => Signal::Shutdown,
                };
                if events.send(wrap(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
