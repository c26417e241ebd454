//! Reloads the signer's key set when a source file changes: inotify on the files' directories
//! (keyrot and people replace key files by rename), with a slow poll behind it in case an event
//! is lost or the directories cannot be watched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tracing::{error, warn};

use super::keyset::{Fingerprint, KeyFiles, KeySet, Sources};
use super::service::Shared;

/// How often the files are looked at without an event: a stat of each, nothing read unless one
/// changed. Rare, so an idle daemon hardly wakes.
const POLL: Duration = Duration::from_secs(10);
/// How often they are looked at when the directories cannot be watched.
const POLL_UNWATCHED: Duration = Duration::from_millis(250);

enum Wake {
    /// Something changed in a watched directory.
    Changed,
    Stop,
}

/// The watching thread; [`Watcher::stop`] ends it.
pub struct Watcher {
    wake: Sender<Wake>,
    thread: JoinHandle<()>,
}

impl Watcher {
    /// Watches `sources`, whose files made `seen`, and replaces the set in `shared` when they
    /// change.
    pub fn start(
        sources: Sources,
        seen: Fingerprint,
        shared: Arc<Shared>,
    ) -> std::io::Result<Watcher> {
        let (wake, woken) = mpsc::channel();
        let events = wake.clone();
        let thread = std::thread::Builder::new()
            .name("signer-watch".into())
            .spawn(move || {
                // Kept alive as long as the loop runs: dropping it ends the inotify watches.
                let (_watcher, poll) = match watch_directories(&sources, events) {
                    Ok(watcher) => (Some(watcher), POLL),
                    Err(e) => {
                        warn!(
                            "signer: cannot watch the key files' directories ({e}); looking at \
                             them every {}ms instead",
                            POLL_UNWATCHED.as_millis()
                        );
                        (None, POLL_UNWATCHED)
                    }
                };
                reload_on_change(&sources, seen, &shared, &woken, poll);
            })?;
        Ok(Watcher { wake, thread })
    }

    pub fn stop(self) {
        let _ = self.wake.send(Wake::Stop);
        let _ = self.thread.join();
    }
}

/// An inotify watch on the directory of every source file; each event wakes the loop.
fn watch_directories(
    sources: &Sources,
    wake: Sender<Wake>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = wake.send(Wake::Changed);
    })?;
    let directories: BTreeSet<PathBuf> = sources
        .files()
        .iter()
        .filter_map(|file| file.parent().map(Path::to_path_buf))
        .map(|dir| match dir.as_os_str().is_empty() {
            true => PathBuf::from("."),
            false => dir,
        })
        .collect();
    for directory in &directories {
        watcher.watch(directory, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Reloads the set whenever a source file changes. A bad set is logged once per distinct
/// problem and not served: the apiserver keeps verifying with the last good one.
fn reload_on_change(
    sources: &Sources,
    mut seen: Fingerprint,
    shared: &Shared,
    woken: &Receiver<Wake>,
    poll: Duration,
) {
    let mut last_problem = String::new();
    loop {
        match woken.recv_timeout(poll) {
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Wake::Changed) | Err(RecvTimeoutError::Timeout) => {}
        }
        // One look for a burst of events (a rename brings several).
        while let Ok(wake) = woken.try_recv() {
            if let Wake::Stop = wake {
                return;
            }
        }
        let now = sources.fingerprint();
        if now == seen {
            continue;
        }
        match KeyFiles::read(sources) {
            Ok(files) => {
                let previous = shared.current();
                let set = KeySet::stamp(files, Some(&previous), SystemTime::now());
                let changed = set.keys != previous.keys
                    || set.active_kid() != previous.active_kid()
                    || set.rotating != previous.rotating;
                if changed {
                    super::log_set(&set);
                }
                shared.replace(set);
                last_problem.clear();
                seen = now;
            }
            Err(e) => {
                let problem = e.to_string();
                if problem != last_problem {
                    error!("signer: key files not served, the previous key set stays: {problem}");
                    last_problem = problem;
                }
                // Not marked seen: a file half-way through a change is read again next time.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path) -> Sources {
        Sources {
            verification: vec![dir.join("pki/sa.pub")],
            signing_key: dir.join("pki/sa.key"),
            legacy_key: None,
            state_dir: dir.join("state"),
        }
    }

    #[test]
    fn a_file_replaced_in_a_watched_directory_wakes_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let (wake, woken) = mpsc::channel();
        let _watcher = watch_directories(&sources(dir.path()), wake).unwrap();
        std::fs::write(dir.path().join("pki/.sa.pub.tmp"), "x").unwrap();
        std::fs::rename(
            dir.path().join("pki/.sa.pub.tmp"),
            dir.path().join("pki/sa.pub"),
        )
        .unwrap();
        // Generous: an event arrives in microseconds, a loaded machine may take longer.
        let event = woken.recv_timeout(Duration::from_secs(20));
        assert!(matches!(event, Ok(Wake::Changed)));
    }

    #[test]
    fn a_directory_that_cannot_be_watched_is_reported_so_the_watcher_polls() {
        let dir = tempfile::tempdir().unwrap();
        let (wake, _woken) = mpsc::channel();
        // Neither pki/ nor state/ exists.
        assert!(watch_directories(&sources(dir.path()), wake).is_err());
    }
}
