//! Messages to systemd (`sd_notify`): ready, status line, watchdog pings, reloading, stopping.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every message is a no-op, and without
//! `WATCHDOG_USEC` there are no pings, so an idle daemon never wakes for them.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Half the watchdog interval, as systemd recommends: one late ping is not yet fatal.
    ping_every: Option<Duration>,
    last_ping: Instant,
    last_status: String,
    /// A send failure is logged once, not at every message.
    warned: bool,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must name this process when set).
    pub fn from_env() -> Self {
        Notifier {
            ping_every: sd_notify::watchdog_enabled().map(|interval| interval / 2),
            last_ping: Instant::now(),
            last_status: String::new(),
            warned: false,
        }
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.ping_every.map(|half| half * 2)
    }

    pub fn ready(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    /// Sends `STATUS=` when the line differs from the last one sent.
    pub fn status(&mut self, line: &str) {
        if line != self.last_status {
            self.send(&[NotifyState::Status(line)]);
            self.last_status = line.to_string();
        }
    }

    /// `RELOADING=1` with the monotonic time systemd's reload protocol asks for; `ready` ends it.
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// When the next watchdog ping is due; `None` without a watchdog.
    pub fn next_ping(&self) -> Option<Instant> {
        self.ping_every
            .and_then(|every| self.last_ping.checked_add(every))
    }

    /// Pings the watchdog if a ping is due.
    pub fn ping_if_due(&mut self) {
        if self.next_ping().is_some_and(|due| due <= Instant::now()) {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Instant::now();
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states)
            && !self.warned
        {
            tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
            self.warned = true;
        }
    }
}
