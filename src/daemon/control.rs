//! The control socket `<stateDir>/keyrot.sock`: how `keyrot rotate|approve|abort|rollback`
//! and `keyrot migrate-issuer` reach a running daemon.
//!
//! The client writes one line naming the request (`rotate`, `approve`, `abort`, `rollback`,
//! `migrate-issuer` and its variants); for a trigger the daemon records it in its state, acts on
//! it, and answers one line: the outcome the decision core gave (`rotation started`,
//! `refused: ...`), or `queued: ...` when it could not act on the request yet. An issuer
//! migration request is carried out whole before the answer, which is its output: the exit
//! status on the first line (`exit 3`), then the lines the command would print.
//!
//! Who may ask: the socket is created only by the process that holds the state lock, bound inside
//! a fresh 0700 directory and set to 0600 before it is renamed into place, so it is never
//! reachable with a laxer mode; and every connection's peer is checked with `SO_PEERCRED`: only
//! root and the daemon's own uid are answered, others are refused and logged. At most
//! [`MAX_CLIENTS`] connections are served at once, each given [`REQUEST_WAIT`] to send its line.
//! A socket file nobody listens on (left by a killed daemon) reads as "no daemon": the client then
//! runs the request in the foreground, where the state lock decides.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use tracing::warn;

use crate::state::TriggerKind;

const SOCKET_FILE: &str = "keyrot.sock";
/// How long the daemon waits for the main loop to act on a request before answering `queued`:
/// the main loop acts between two steps, and one step (a restart) can take a while.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a client may take to send its line; a stuck client must not hold a thread forever.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// How long a refused client's request is waited for, so that closing does not reset the
/// connection under its answer.
const REFUSED_REQUEST_WAIT: Duration = Duration::from_millis(200);
/// Longer than [`REPLY_WAIT`], so the daemon's `queued` arrives before the client gives up.
const CLIENT_WAIT: Duration = Duration::from_secs(20);
/// Connections answered at once; more are told the daemon is busy. A person sends one request
/// at a time; this only stops a runaway client from making a thread per connection.
pub const MAX_CLIENTS: usize = 8;
/// A request is one short word; anything longer is not one.
const MAX_REQUEST: u64 = 64;
/// The most bytes a client reads of the daemon's answer: a few lines, or a migration's step log.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// `<state_dir>/keyrot.sock`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// A request from a client, and where its answer goes.
#[derive(Debug)]
pub struct Request {
    pub ask: Ask,
    pub reply: Sender<String>,
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Trigger {
        kind: TriggerKind,
        /// `approve --force`: pass the gate the rotation waits on.
        force: bool,
    },
    Migration(MigrationAsk),
}

/// A request to a change answered once it is carried out, not when the core takes it:
/// `keyrot migrate-issuer`, its `--rollback`, `keyrot approve` for a migration step, and
/// `keyrot switch-signer` (`--back`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationAsk {
    Run,
    Rollback,
    Approve,
    UseSigner,
    UseKeyFiles,
}

impl MigrationAsk {
    /// The request the state records for it.
    pub fn kind(self) -> TriggerKind {
        match self {
            MigrationAsk::Run => TriggerKind::MigrateIssuer,
            MigrationAsk::Rollback => TriggerKind::RollbackIssuerMigration,
            MigrationAsk::Approve => TriggerKind::Approve,
            MigrationAsk::UseSigner => TriggerKind::UseSigner,
            MigrationAsk::UseKeyFiles => TriggerKind::UseKeyFiles,
        }
    }
}

impl Ask {
    /// The line a client sends.
    pub fn word(self) -> &'static str {
        match self {
            Ask::Trigger { kind, force: false } => request_word(kind),
            Ask::Trigger { force: true, .. } => FORCE_APPROVE,
            Ask::Migration(MigrationAsk::Run) => "migrate-issuer",
            Ask::Migration(MigrationAsk::Rollback) => "migrate-issuer --rollback",
            Ask::Migration(MigrationAsk::Approve) => "migrate-issuer --approve",
            Ask::Migration(MigrationAsk::UseSigner) => "switch-signer",
            Ask::Migration(MigrationAsk::UseKeyFiles) => "switch-signer --back",
        }
    }
}

/// The word a client sends for each trigger.
pub fn request_word(kind: TriggerKind) -> &'static str {
    match kind {
        TriggerKind::Rotate => "rotate",
        TriggerKind::Approve => "approve",
        TriggerKind::Abort => "abort",
        TriggerKind::Rollback => "rollback",
        TriggerKind::MigrateIssuer => "migrate-issuer",
        TriggerKind::RollbackIssuerMigration => "migrate-issuer --rollback",
        TriggerKind::UseSigner => "switch-signer",
        TriggerKind::UseKeyFiles => "switch-signer --back",
    }
}

/// The word `keyrot approve --force` sends.
const FORCE_APPROVE: &str = "approve --force";

const ALL_ASKS: [Ask; 10] = [
    Ask::Trigger {
        kind: TriggerKind::Rotate,
        force: false,
    },
    Ask::Trigger {
        kind: TriggerKind::Approve,
        force: false,
    },
    Ask::Trigger {
        kind: TriggerKind::Abort,
        force: false,
    },
    Ask::Trigger {
        kind: TriggerKind::Rollback,
        force: false,
    },
    Ask::Trigger {
        kind: TriggerKind::Approve,
        force: true,
    },
    Ask::Migration(MigrationAsk::Run),
    Ask::Migration(MigrationAsk::Rollback),
    Ask::Migration(MigrationAsk::Approve),
    Ask::Migration(MigrationAsk::UseSigner),
    Ask::Migration(MigrationAsk::UseKeyFiles),
];

fn parse_request(line: &str) -> Option<Ask> {
    ALL_ASKS.into_iter().find(|ask| ask.word() == line.trim())
}

/// Sends `ask` to the daemon of `state_dir`. `Ok(None)` when no daemon listens (no socket, or a
/// stale one); otherwise the daemon's answer (one line for a trigger).
pub fn ask(state_dir: &Path, ask: Ask) -> io::Result<Option<String>> {
    let path = socket_path(state_dir);
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(named(e)),
    };
    // A migration step waits for restarts and checks as long as the plan allows: no timeout.
    let wait = match ask {
        Ask::Trigger { .. } => Some(CLIENT_WAIT),
        Ask::Migration(_) => None,
    };
    stream.set_read_timeout(wait).map_err(named)?;
    match writeln!(stream, "{}", ask.word()) {
        // A daemon that refuses (another uid, too many clients) answers and closes without
        // reading: its answer is still there to read.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.map_err(named)?,
    }
    let mut answer = String::new();
    // Answers are a few lines; the cap keeps a wrong peer from feeding us forever.
    (&stream)
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut answer)
        .map_err(named)?;
    if answer.is_empty() {
        return Err(named(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering (is it shutting down?)",
        )));
    }
    Ok(Some(answer.trim_end().to_string()))
}

/// Creates the socket (mode 0600), replacing a stale one. Call only while holding the state
/// lock: the lock guarantees no other daemon owns the file being replaced.
pub fn bind(state_dir: &Path) -> io::Result<UnixListener> {
    let path = socket_path(state_dir);
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&path).map_err(named)?,
        Ok(_) => {
            return Err(named(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; keyrot will not remove it",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    // Bound where only keyrot can reach it, made 0600, then moved into place: there is no moment
    // at which the socket exists with the mode the umask gave it.
    let private = tempfile::Builder::new()
        .prefix(".keyrot.sock.")
        .tempdir_in(state_dir)
        .map_err(named)?;
    let staged = private.path().join(SOCKET_FILE);
    let listener = UnixListener::bind(&staged).map_err(named)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(named)?;
    std::fs::rename(&staged, &path).map_err(named)?;
    Ok(listener)
}

/// Removes the socket file on shutdown, so clients fall back to the foreground at once.
pub fn unlink(state_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(state_dir));
}

/// Accepts clients for as long as the process lives, on a thread of its own; each request is
/// handed to the main loop through `events` (wrapped by `wrap`) and answered on its own thread.
pub fn serve<E: Send + 'static>(
    listener: UnixListener,
    events: Sender<E>,
    wrap: fn(Request) -> E,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let busy = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming().flatten() {
                if let Err(refusal) = allowed_peer(&stream) {
                    warn!("control socket: {refusal}");
                    refuse(&stream, &format!("refused: {refusal}"));
                    continue;
                }
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    refuse(
                        &stream,
                        &format!(
                            "error: the daemon is answering {MAX_CLIENTS} requests already; try \
                             again"
                        ),
                    );
                    continue;
                }
                let events = events.clone();
                let slot = Slot(busy.clone());
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        answer(stream, &events, wrap);
                        drop(slot);
                    });
            }
        })?;
    Ok(())
}

/// Answers a connection that is not served with `line`, then takes in the request it sent: a
/// unix socket closed with unread bytes resets the connection, and the client could then lose
/// the answer before reading it. Bounded in time and bytes, as this runs on the accepting thread.
fn refuse(stream: &UnixStream, line: &str) {
    let _ = stream.set_write_timeout(Some(REQUEST_WAIT));
    let _ = writeln!(&mut &*stream, "{line}");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(REFUSED_REQUEST_WAIT));
    let _ = io::copy(&mut stream.take(MAX_REQUEST), &mut io::sink());
}

/// One of the [`MAX_CLIENTS`] places, given back when the client's thread ends (or never starts).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Root and the daemon's own uid may send requests; the mode keeps others out, and this holds
/// even if the socket or its directory were made reachable.
fn allowed_peer(stream: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let own = rustix::process::geteuid();
    if peer.uid.is_root() || peer.uid == own {
        return Ok(());
    }
    Err(format!(
        "uid {} (pid {}) may not send requests: only root and uid {} may",
        peer.uid.as_raw(),
        peer.pid.as_raw_nonzero(),
        own.as_raw()
    ))
}

fn answer<E>(stream: UnixStream, events: &Sender<E>, wrap: fn(Request) -> E) {
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let reply = match (read, parse_request(&line)) {
        (Err(e), _) => format!("error: cannot read the request: {e}"),
        (Ok(_), None) => format!(
            "error: unknown request {:?}: send rotate, approve, abort, rollback or \
             migrate-issuer",
            line.trim()
        ),
        (Ok(_), Some(ask)) => {
            let (reply, outcome) = mpsc::channel();
            if events.send(wrap(Request { ask, reply })).is_err() {
                "error: the daemon is shutting down".to_string()
            } else if let Ask::Migration(_) = ask {
                // Answered when the migration's steps are done, however long they take.
                outcome
                    .recv()
                    .unwrap_or_else(|_| "error: the daemon is shutting down".to_string())
            } else {
                outcome.recv_timeout(REPLY_WAIT).unwrap_or_else(|_| {
                    "queued: the daemon is busy with a step and acts on the request after it; \
                     `keyrot status` shows the outcome"
                        .to_string()
                })
            }
        }
    };
    let _ = writeln!(&stream, "{reply}");
}

/// The exit code of `keyrot migrate-issuer` when a step waits (for time or for a person).
pub const MIGRATION_WAITING: u8 = 3;

/// The daemon's answer to a change request: `exit N` on the first line, then what the command
/// prints in the foreground; `done` is its last line when the change is done.
pub fn migration_answer(
    outcome: Result<crate::migration::Outcome, crate::migration::RequestError>,
    lines: Vec<String>,
    done: Option<&str>,
) -> String {
    let (code, last) = match outcome {
        Ok(crate::migration::Outcome::Done) => (0, done.map(str::to_string)),
        Ok(crate::migration::Outcome::Waiting(what)) => (MIGRATION_WAITING, Some(what)),
        Err(e) => (1, Some(format!("error: {e}"))),
    };
    let mut answer = format!("exit {code}");
    for line in lines.iter().chain(last.as_ref()) {
        answer.push('\n');
        answer.push_str(line.trim_end());
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn a_request_reaches_the_main_loop_and_its_answer_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path()).unwrap();
        let mode = std::fs::metadata(socket_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (events, requests) = mpsc::channel::<Request>();
        serve(listener, events, |r| r).unwrap();
        let main_loop = std::thread::spawn(move || {
            let request = requests.recv().unwrap();
            assert_eq!(
                request.ask,
                Ask::Trigger {
                    kind: TriggerKind::Approve,
                    force: false
                }
            );
            request.reply.send("phase promote approved".into()).unwrap();
            // A migration is answered with its whole output, however long it takes.
            let request = requests.recv().unwrap();
            assert_eq!(request.ask, Ask::Migration(MigrationAsk::Run));
            std::thread::sleep(REPLY_WAIT / 5);
            request
                .reply
                .send("exit 3\nstep 1: x\nstep 2: y".into())
                .unwrap();
        });
        let approve = Ask::Trigger {
            kind: TriggerKind::Approve,
            force: false,
        };
        let answer = ask(dir.path(), approve).unwrap();
        assert_eq!(answer.as_deref(), Some("phase promote approved"));
        let answer = ask(dir.path(), Ask::Migration(MigrationAsk::Run)).unwrap();
        assert_eq!(answer.as_deref(), Some("exit 3\nstep 1: x\nstep 2: y"));
        main_loop.join().unwrap();
    }

    fn serve_rotate_answers(dir: &Path) {
        let (events, requests) = mpsc::channel::<Request>();
        serve(bind(dir).unwrap(), events, |r| r).unwrap();
        std::thread::spawn(move || {
            for request in requests {
                let _ = request.reply.send("rotation started".into());
            }
        });
    }

    #[test]
    fn control_socket_refuses_a_peer_with_another_uid_and_its_answer_survives_the_hang_up() {
        let dir = tempfile::tempdir().unwrap();
        serve_rotate_answers(dir.path());
        // Made reachable on purpose, so that only the peer check stands in the way.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = socket_path(dir.path());
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        // The client reads only once the daemon has hung up: a daemon that closes with the
        // request unread resets the connection, and the answer is lost.
        let client = "import socket,sys,select\n\
            s=socket.socket(socket.AF_UNIX)\n\
            s.connect(sys.argv[1])\n\
            try: s.sendall(b'rotate\\n')\n\
            except BrokenPipeError: pass\n\
            p=select.poll()\n\
            p.register(s, select.POLLHUP)\n\
            p.poll(20000)\n\
            print(s.makefile().read(), end='')";
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", client, socket.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3 runs as nobody");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            answer.starts_with("refused: uid 65534 "),
            "{answer}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The owner is still answered.
        let rotate = Ask::Trigger {
            kind: TriggerKind::Rotate,
            force: false,
        };
        assert_eq!(
            ask(dir.path(), rotate).unwrap().as_deref(),
            Some("rotation started")
        );
    }

    #[test]
    fn idle_control_clients_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        serve_rotate_answers(dir.path());
        let socket = socket_path(dir.path());
        let idle: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect();
        // Each idle client holds its place until its read timeout; a new one is turned away.
        let mut extra = UnixStream::connect(&socket).unwrap();
        let mut answer = String::new();
        extra.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("try again"), "{answer}");
        drop(idle);
        let rotate = Ask::Trigger {
            kind: TriggerKind::Rotate,
            force: false,
        };
        let answered = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            ask(dir.path(), rotate).unwrap().as_deref() == Some("rotation started")
        });
        assert!(answered, "places are given back when clients go");
    }

    #[test]
    fn no_socket_or_a_stale_one_means_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let rotate = Ask::Trigger {
            kind: TriggerKind::Rotate,
            force: false,
        };
        assert_eq!(ask(dir.path(), rotate).unwrap(), None);
        drop(bind(dir.path()).unwrap());
        assert!(socket_path(dir.path()).exists(), "the stale file stays");
        assert_eq!(ask(dir.path(), rotate).unwrap(), None);
        // A new daemon replaces the stale socket.
        drop(bind(dir.path()).unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(socket_path(dir.path()), b"mine").unwrap();
        let err = bind(dir.path()).unwrap_err();
        assert!(err.to_string().contains("keyrot.sock"), "{err}");
        assert_eq!(std::fs::read(socket_path(dir.path())).unwrap(), b"mine");
    }

    #[test]
    fn request_words_round_trip_and_nothing_else_parses() {
        for ask in ALL_ASKS {
            assert_eq!(parse_request(&format!("{}\n", ask.word())), Some(ask));
        }
        assert_eq!(
            parse_request("approve --force\n"),
            Some(Ask::Trigger {
                kind: TriggerKind::Approve,
                force: true
            })
        );
        assert_eq!(parse_request("status\n"), None);
        assert_eq!(parse_request(""), None);
    }
}
