//! The state file (`state.json`), its version check, and the directory's lock (`keyrot.lock`).
//!
//! Readers (the dry run, `keyrot status`) take no lock and create nothing: every save is an
//! atomic rename, so a reader sees either the previous file or the next one, never a torn one.
//! Writers hold an exclusive advisory lock for as long as they may save, so two keyrot processes
//! never interleave their read-decide-write cycles on one state directory.
//!
//! A file this build cannot read (corrupt, hand-edited wrongly, or from a newer keyrot) is an
//! error, never a reason to start again from defaults: the store refuses to overwrite it.

use std::fs::{File, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{STATE_VERSION, State};
use crate::atomic_file::{self, Existing};
use crate::safe_dir::{self, DirError, Trust};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "keyrot.lock";

/// Why the state could not be read, locked or saved. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, creating, locking or writing a file or directory failed.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    /// The file is not valid JSON, or not a valid state of a format this build reads.
    #[error(
        "{path}:{line}:{column}: {message}; keyrot will not overwrite it: repair it or move it away"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file parses but breaks a rule every state keyrot writes keeps.
    #[error(
        "{path}: {inconsistency}; keyrot will not act on it nor overwrite it: repair it or move it away"
    )]
    Inconsistent {
        path: PathBuf,
        inconsistency: super::Inconsistency,
    },
    /// The `version` field is missing or is not a format number.
    #[error("{path}: {problem}; keyrot will not overwrite it: repair it or move it away")]
    InvalidVersion { path: PathBuf, problem: String },
    /// The file is in a format newer than this build knows.
    #[error(
        "{path}: written by a newer keyrot (format {found}, this build reads up to {STATE_VERSION}); \
         keyrot will not overwrite it: run the newer keyrot"
    )]
    Newer { path: PathBuf, found: u64 },
    /// Another process holds the lock (only from [`StateStore::try_lock`]).
    #[error(
        "{path}: another keyrot{} holds the lock on {}; wait for it to finish or stop it",
        holder(*.pid),
        .dir.display()
    )]
    Locked {
        path: PathBuf,
        dir: PathBuf,
        /// The holder's PID as it recorded it in the lock file, when it did.
        pid: Option<u32>,
    },
    /// The state directory could not be created, or others could change it.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The lock file is not a plain file of keyrot's own.
    #[error(
        "{path} {problem}: keyrot opens its lock file only when it is a regular file it owns; \
         look at who put it there, then remove it"
    )]
    LockFile { path: PathBuf, problem: String },
    /// The state file could not be written.
    #[error(transparent)]
    Write(#[from] atomic_file::WriteError),
    /// The caller asked to save a state whose `version` this build does not write.
    #[error(
        "{path}: refusing to save state format {found}: this build writes format {STATE_VERSION}"
    )]
    SaveVersion { path: PathBuf, found: u32 },
}

impl StateError {
    /// The state file is there but keyrot will not act on it (corrupt, inconsistent, of
    /// another format) until a person repairs or moves it.
    pub fn is_refused_file(&self) -> bool {
        matches!(
            self,
            StateError::Corrupt { .. }
                | StateError::Inconsistent { .. }
                | StateError::InvalidVersion { .. }
                | StateError::Newer { .. }
        )
    }
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// keyrot's state directory: where `state.json` and `keyrot.lock` live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store for `dir`. Touches nothing on disk.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// `<dir>/keyrot.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Reads the state without locking and without creating anything; `Ok(None)` when there is
    /// no state file (or no directory) yet. For the dry run and `keyrot status`, which must work
    /// while a daemon holds the lock.
    pub fn read(&self) -> Result<Option<State>, StateError> {
        with_legacy_migration(&self.dir, read_state(&self.state_path())?)
    }

    /// Who holds the lock now, without taking it for longer than the check and without creating
    /// anything: for `keyrot status`, to tell a rotation a daemon carries on from one nothing does.
    pub fn holder(&self) -> Result<Holder, StateError> {
        use rustix::fs::{Mode, OFlags};
        let path = self.lock_path();
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = match rustix::fs::open(&path, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(Holder::Nobody),
            Err(e) => return Err(io_error(&path)(e.into())),
        };
        // A shared lock succeeds only while no writer holds the exclusive one; it is dropped at
        // once with the file.
        match file.try_lock_shared() {
            Ok(()) => Ok(Holder::Nobody),
            Err(TryLockError::WouldBlock) => Ok(Holder::Process {
                pid: recorded_pid(&file),
            }),
            Err(TryLockError::Error(e)) => Err(io_error(&path)(e)),
        }
    }

    /// Takes the exclusive lock, waiting for as long as another process holds it. Creates the
    /// directory (0700) and the lock file (0600) when missing.
    pub fn lock(&self) -> Result<StoreLock, StateError> {
        self.acquire(Wait::Block)
    }

    /// Takes the exclusive lock, or fails at once with [`StateError::Locked`] when another
    /// process holds it. Creates the directory (0700) and the lock file (0600) when missing.
    pub fn try_lock(&self) -> Result<StoreLock, StateError> {
        self.acquire(Wait::Fail)
    }

    fn acquire(&self, wait: Wait) -> Result<StoreLock, StateError> {
        // A state directory others can write lets them plant a symlink or a file where root
        // writes: refuse one that exists with a lax mode or owner, create a missing one 0700.
        safe_dir::check_trusted(&self.dir, Trust::NotWritableByOthers, "its state")?;
        safe_dir::create_dir_all(&self.dir, safe_dir::PRIVATE_DIR_MODE)?;
        let lock_path = self.lock_path();
        let file = open_lock_file(&lock_path)?;
        // std locks with flock(2) on Linux: the lock belongs to this open file description, so it
        // also excludes other handles in the same process, and the kernel drops it when the
        // process dies, so a crashed keyrot never leaves a stale lock behind.
        match wait {
            Wait::Block => file.lock().map_err(io_error(&lock_path))?,
            Wait::Fail => match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StateError::Locked {
                        pid: recorded_pid(&file),
                        path: lock_path,
                        dir: self.dir.clone(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
            },
        }
        record_pid(&file).map_err(io_error(&lock_path))?;
        Ok(StoreLock {
            file,
            state_path: self.state_path(),
        })
    }
}

/// Who holds a state directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Holder {
    /// No keyrot acts on this state directory now.
    Nobody,
    /// A keyrot process acts on it (its PID, when it recorded one).
    Process { pid: Option<u32> },
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    Block,
    Fail,
}

/// The exclusive lock on a state directory; the only way to save. Released on drop.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    state_path: PathBuf,
}

impl StoreLock {
    /// `<dir>/state.json`.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Reads the state; `Ok(None)` when there is no state file yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let dir = self.state_path.parent().unwrap_or(Path::new("."));
        with_legacy_migration(dir, read_state(&self.state_path)?)
    }

    /// Once `state` (as [`Self::load`] gave it) is saved, `issuer-migration.json` of a release
    /// before format 2 is no longer needed: saved first, then removed, so a crash in between
    /// only imports it again.
    pub fn retire_legacy_migration_file(&self, state: &State) -> Result<(), StateError> {
        let dir = self.state_path.parent().unwrap_or(Path::new("."));
        let legacy = dir.join(LEGACY_MIGRATION_FILE);
        if !legacy.exists() {
            return Ok(());
        }
        self.save(state)?;
        match std::fs::remove_file(&legacy) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&legacy)(e)),
        }
    }

    /// Replaces the state file atomically (mode 0600). Refuses when `state.version` is not
    /// [`STATE_VERSION`], and when the file on disk cannot be read by this build: it may be a
    /// newer keyrot's state or a damaged file a person has to look at, and must not be lost.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        if state.version != STATE_VERSION {
            return Err(StateError::SaveVersion {
                path: self.state_path.clone(),
                found: state.version,
            });
        }
        read_state(&self.state_path)?;
        let mut bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| io_error(&self.state_path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        atomic_file::write(&self.state_path, &bytes, 0o600, Existing::Replace)?;
        Ok(())
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Clear our PID while still holding the lock, so that a contender never names a process
        // that no longer holds it. Closing the file then releases the lock. A failure here only
        // leaves a stale hint behind, which the next holder overwrites.
        let _ = self.file.set_len(0);
    }
}

/// Opens (or creates, 0600) the lock file without following a symlink, without truncating it and
/// without blocking on a FIFO, and refuses anything but a regular file of keyrot's own with one
/// link: otherwise root would lock, and then truncate, a file someone else chose.
fn open_lock_file(path: &Path) -> Result<File, StateError> {
    use rustix::fs::{Mode, OFlags};
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => {
            return Err(StateError::LockFile {
                path: path.to_path_buf(),
                problem: "is a symlink".to_string(),
            });
        }
        Err(e) => return Err(io_error(path)(e.into())),
    };
    let meta = file.metadata().map_err(io_error(path))?;
    let problem = if !meta.file_type().is_file() {
        Some("is not a regular file".to_string())
    } else if meta.uid() != rustix::process::geteuid().as_raw() {
        Some(format!("is owned by uid {}", meta.uid()))
    } else if meta.nlink() != 1 {
        Some(format!("has {} hard links", meta.nlink()))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(StateError::LockFile {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(file),
    }
}

/// Writes this process's PID into the locked file, for contenders' error messages. Written in
/// place, not through `atomic_file`: replacing the file would give it a new inode, and a process
/// that opened the old one would then lock a different file than the next one to open the path.
fn record_pid(file: &File) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
}

/// The holder's PID, if it has recorded one; only a hint for the error message.
fn recorded_pid(file: &File) -> Option<u32> {
    let mut text = String::new();
    // A PID is a few digits; whatever else is in the file is not read.
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Where releases before state format 2 kept the issuer migration's record.
pub const LEGACY_MIGRATION_FILE: &str = "issuer-migration.json";

/// `state` with the record of `issuer-migration.json` when it holds none (a release before
/// format 2 kept it there); a state file that does not exist yet is the default then.
fn with_legacy_migration(dir: &Path, state: Option<State>) -> Result<Option<State>, StateError> {
    if state.as_ref().is_some_and(|s| s.issuer_migration.is_some()) {
        return Ok(state);
    }
    let path = dir.join(LEGACY_MIGRATION_FILE);
    let record = match crate::fs_read::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let mut state = state.unwrap_or_default();
    state.issuer_migration = Some(record);
    Ok(Some(state))
}

fn read_state(path: &Path) -> Result<Option<State>, StateError> {
    match crate::fs_read::read(path) {
        Ok(bytes) => parse_state(path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    // The version is checked on a loose parse first: a newer format may add fields, which the
    // strict parse below rejects, and its reader must be told about the version, not a field.
    let loose: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(path, &e))?;
    let invalid = |problem: String| StateError::InvalidVersion {
        path: path.to_path_buf(),
        problem,
    };
    let version = match loose.get("version") {
        None => return Err(invalid("no \"version\" field".into())),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid(format!("\"version\" is {v}, not a format number")))?,
    };
    if version == 0 {
        return Err(invalid("format version 0 does not exist".into()));
    }
    if version > u64::from(STATE_VERSION) {
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            found: version,
        });
    }
    // Format 2 added `issuer_migration` (optional): a format 1 file reads as it is and is saved
    // as format 2 from then on.
    let mut state: State = serde_json::from_slice(bytes).map_err(|e| corrupt(path, &e))?;
    state.version = STATE_VERSION;
    super::check(&state).map_err(|inconsistency| StateError::Inconsistent {
        path: path.to_path_buf(),
        inconsistency,
    })?;
    Ok(state)
}

fn corrupt(path: &Path, e: &serde_json::Error) -> StateError {
    // serde_json ends its messages with " at line L column C"; the position goes up front instead.
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    StateError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: message
            .strip_suffix(&suffix)
            .unwrap_or(&message)
            .to_string(),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> StateError + '_ {
    move |error| StateError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::keys::Alg;
    use crate::phase::Phase;
    use crate::state::{Cause, KeyRecord, Role, RoleChange, Rotation, Trigger, TriggerKind};

    fn sample_state() -> State {
        let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        State {
            keys: vec![KeyRecord {
                kid: "kid-old".into(),
                alg: Alg::RS256,
                role: Role::Active,
                private_key: Some("/keys/old.key".into()),
                history: vec![RoleChange {
                    role: Role::Active,
                    at: at(0),
                }],
            }],
            rotation: Some(Rotation {
                id: "r1".into(),
                started_at: at(10),
                cause: Cause::Manual,
                old_kid: "kid-old".into(),
                new_kid: None,
                phase: Phase::Generate,
                phase_started_at: at(10),
                rolled_back: false,
                new_key_may_sign: false,
                aborted: false,
                approved: vec![],
                forced: vec![],
                gates: vec![],
                attempts: 0,
                retry_at: None,
                last_error: Some("a \"quoted\" error\nover two lines".into()),
                apiserver_loaded: None,
                last_good: None,
                fallback: None,
                published: None,
                published_confirmed_at: None,
                last_effect_at: Some(at(11)),
                promoted_at: None,
            }),
            triggers: vec![Trigger {
                kind: TriggerKind::Rotate,
                requested_at: at(5),
                force: false,
            }],
            adopted_at: Some(at(0)),
            ..State::default()
        }
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        let lock = store.lock().unwrap();
        assert_eq!(lock.load().unwrap(), None);
        let state = sample_state();
        lock.save(&state).unwrap();
        assert_eq!(lock.load().unwrap(), Some(state.clone()));
        assert_eq!(store.read().unwrap(), Some(state));
        let text = fs::read_to_string(store.state_path()).unwrap();
        assert!(text.starts_with("{\n  \"version\": 2,\n"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn a_format_1_state_reads_and_is_saved_as_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        let lock = store.lock().unwrap();
        let state = sample_state();
        let mut v1: serde_json::Value = serde_json::to_value(&state).unwrap();
        v1["version"] = 1.into();
        fs::write(store.state_path(), serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
        let loaded = lock.load().unwrap().unwrap();
        assert_eq!(loaded, state, "read as this build's format");
        lock.save(&loaded).unwrap();
        let text = fs::read_to_string(store.state_path()).unwrap();
        assert!(text.starts_with("{\n  \"version\": 2,\n"), "{text}");
    }

    #[test]
    fn save_replaces_atomically_with_private_modes_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("a/b");
        let store = StateStore::new(&state_dir);
        let lock = store.lock().unwrap();
        assert_eq!(mode(&state_dir), 0o700);
        assert_eq!(mode(&store.lock_path()), 0o600);
        lock.save(&State::default()).unwrap();
        // A state file someone loosened is tightened by the next save.
        fs::set_permissions(store.state_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let state = sample_state();
        lock.save(&state).unwrap();
        assert_eq!(store.read().unwrap(), Some(state));
        assert_eq!(mode(&store.state_path()), 0o600);
        let expected: BTreeSet<String> = ["keyrot.lock", "state.json"].map(String::from).into();
        assert_eq!(names_in(&state_dir), expected);
    }

    #[test]
    fn read_only_access_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(StateStore::new(&missing).read().unwrap(), None);
        assert!(!missing.exists());

        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(StateStore::new(&empty).read().unwrap(), None);
        assert!(names_in(&empty).is_empty());
    }

    #[test]
    fn read_only_access_works_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let lock = store.try_lock().unwrap();
        lock.save(&sample_state()).unwrap();
        assert_eq!(store.read().unwrap(), Some(sample_state()));
        drop(lock);
    }

    #[test]
    fn second_try_lock_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let first = store.try_lock().unwrap();
        let err = store.try_lock().unwrap_err();
        match &err {
            StateError::Locked { path, dir: d, pid } => {
                assert_eq!(path, &store.lock_path());
                assert_eq!(d, dir.path());
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("another keyrot (pid {})", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        // The holder can still save, and once it lets go the lock is free again.
        first.save(&State::default()).unwrap();
        drop(first);
        let again = store.try_lock().unwrap();
        assert_eq!(again.load().unwrap(), Some(State::default()));
    }

    #[test]
    fn released_lock_file_names_no_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        drop(store.lock().unwrap());
        assert_eq!(fs::read(store.lock_path()).unwrap(), b"");
    }

    #[test]
    fn waiting_lock_is_acquired_once_the_holder_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let first = store.lock().unwrap();
        let (sender, receiver) = mpsc::channel();
        let waiter_store = store.clone();
        let waiter = thread::spawn(move || sender.send(waiter_store.lock()).unwrap());
        assert!(
            receiver.recv_timeout(Duration::from_millis(300)).is_err(),
            "second lock acquired while the first was held"
        );
        drop(first);
        let second = receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("waiting lock never acquired")
            .unwrap();
        waiter.join().unwrap();
        assert!(matches!(store.try_lock(), Err(StateError::Locked { .. })));
        drop(second);
        store.try_lock().unwrap();
    }

    /// Asserts that reading, locked loading and saving all refuse the file, leaving it as it was.
    fn assert_refused(store: &StateStore, bytes: &[u8], check: impl Fn(&StateError)) {
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.state_path(), bytes).unwrap();
        check(&store.read().unwrap_err());
        let lock = store.lock().unwrap();
        check(&lock.load().unwrap_err());
        check(&lock.save(&State::default()).unwrap_err());
        assert_eq!(fs::read(store.state_path()).unwrap(), bytes);
    }

    #[test]
    fn truncated_file_is_reported_with_position_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let path = store.state_path();
        assert_refused(&store, b"{\n  \"version\": 1,\n  \"keys\": [", |e| {
            let StateError::Corrupt { line, column, .. } = e else {
                panic!("expected Corrupt, got {e:?}");
            };
            assert_eq!((*line, *column), (3, 11));
            let text = e.to_string();
            let prefix = format!("{}:3:11: EOF while parsing a list;", path.display());
            assert!(text.starts_with(&prefix), "{text}");
            assert!(text.contains("keyrot will not overwrite it"), "{text}");
        });
    }

    #[test]
    fn truncated_saved_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.lock().unwrap().save(&sample_state()).unwrap();
        let full = fs::read(store.state_path()).unwrap();
        assert_refused(&store, &full[..full.len() / 2], |e| {
            assert!(
                matches!(e, StateError::Corrupt { line, .. } if *line > 1),
                "{e:?}"
            );
        });
    }

    #[test]
    fn unknown_field_in_the_current_format_is_refused_with_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut value = serde_json::to_value(State::default()).unwrap();
        value["surprise"] = true.into();
        let bytes = serde_json::to_vec_pretty(&value).unwrap();
        assert_refused(&store, &bytes, |e| {
            let StateError::Corrupt { message, line, .. } = e else {
                panic!("expected Corrupt, got {e:?}");
            };
            assert!(message.contains("unknown field `surprise`"), "{message}");
            assert!(*line > 1);
        });
    }

    #[test]
    fn newer_format_is_refused_before_its_fields_are_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let bytes = b"{\"version\": 3, \"field_from_the_future\": {}}";
        assert_refused(&store, bytes, |e| {
            assert!(
                matches!(e, StateError::Newer { found: 3, .. }),
                "expected Newer, got {e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("written by a newer keyrot (format 3, this build reads up to 2)"),
                "{text}"
            );
            assert!(text.starts_with(&store.state_path().display().to_string()));
        });
    }

    #[test]
    fn version_zero_missing_or_not_a_number_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut zero = serde_json::to_value(State::default()).unwrap();
        zero["version"] = 0.into();
        let mut missing = zero.clone();
        missing.as_object_mut().unwrap().remove("version");
        let mut text = zero.clone();
        text["version"] = "1".into();
        for (value, problem) in [
            (zero, "format version 0 does not exist"),
            (missing, "no \"version\" field"),
            (text, "\"version\" is \"1\", not a format number"),
        ] {
            let bytes = serde_json::to_vec(&value).unwrap();
            assert_refused(&store, &bytes, |e| match e {
                StateError::InvalidVersion { problem: p, path } => {
                    assert_eq!(p, problem);
                    assert_eq!(path, &store.state_path());
                }
                other => panic!("expected InvalidVersion, got {other:?}"),
            });
        }
    }

    #[test]
    fn save_refuses_a_state_of_another_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let lock = store.lock().unwrap();
        for version in [0, STATE_VERSION + 1] {
            let state = State {
                version,
                ..State::default()
            };
            let err = lock.save(&state).unwrap_err();
            assert!(
                matches!(err, StateError::SaveVersion { found, .. } if found == version),
                "{err:?}"
            );
        }
        assert!(!store.state_path().exists());
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // The state "directory" is a regular file: reading and locking both fail, naming it.
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, b"").unwrap();
        let store = StateStore::new(&not_a_dir);
        let err = store.read().unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&store.state_path().display().to_string())
        );
        let err = store.lock().unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&not_a_dir.display().to_string()),
            "{err}"
        );
    }
}
