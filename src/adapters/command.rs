//! Runs a restart command so that it cannot take keyrot down with it: a clean environment, a time
//! limit, and output read up to a cap.
//!
//! keyrot's environment holds cloud credentials (the publishers read them from there); a restart
//! command needs none of them, so it gets only [`CLEAN_PATH`] and `LANG=C`. The command runs in a
//! process group of its own, so a timeout kills whatever it started too. Its output is read on
//! two threads, each keeping at most [`OUTPUT_CAP`] bytes and discarding the rest, so the child
//! never blocks on a full pipe and a chatty one cannot fill keyrot's memory.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use wait_timeout::ChildExt;

/// The only search path a restart command gets.
pub const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What is kept of each of standard output and standard error.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How long to wait, once the command has exited, for its output pipes to close: something it
/// left running in the background may hold them open, and that must not hold keyrot.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("empty restart command")]
    Empty,
    #[error("cannot run {command}: {error}")]
    Spawn { command: String, error: io::Error },
    #[error("waiting for {command}: {error}")]
    Wait { command: String, error: io::Error },
    #[error(
        "{command} timed out: still running after {}, killed it{}",
        humantime::format_duration(*timeout),
        said(output)
    )]
    TimedOut {
        command: String,
        timeout: Duration,
        output: String,
    },
    #[error("{command} failed ({status}){}", said(output))]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
}

fn said(output: &str) -> String {
    match output.trim() {
        "" => String::new(),
        text => format!(": {text}"),
    }
}

/// Runs `argv` to completion or until `timeout`, and fails unless it exits 0. The error carries
/// its standard error (or, when that is empty, its standard output), cut at [`OUTPUT_CAP`].
pub fn run(argv: &[String], timeout: Duration) -> Result<(), RunError> {
    let (program, args) = argv.split_first().ok_or(RunError::Empty)?;
    let command = argv.join(" ");
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", CLEAN_PATH)
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| RunError::Spawn {
            command: command.clone(),
            error,
        })?;
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    let waited = child.wait_timeout(timeout);
    let status = match waited {
        Ok(Some(status)) => Some(status),
        Ok(None) => None,
        Err(error) => {
            kill(&mut child);
            return Err(RunError::Wait { command, error });
        }
    };
    let Some(status) = status else {
        kill(&mut child);
        return Err(RunError::TimedOut {
            command,
            timeout,
            output: output(&stdout, &stderr),
        });
    };
    if status.success() {
        return Ok(());
    }
    Err(RunError::Failed {
        command,
        status,
        output: output(&stdout, &stderr),
    })
}

/// Kills the command's whole process group (it leads it: `process_group(0)`) and reaps it. The
/// child is not reaped yet, so its pid, and with it the group id, cannot have been reused.
fn kill(child: &mut Child) {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();
}

/// Reads `pipe` to its end on a thread, keeping the first [`OUTPUT_CAP`] bytes.
fn capture(pipe: Option<impl Read + Send + 'static>) -> Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        // Without a reader thread the pipe closes when the closure drops: the command then gets
        // EPIPE, never a block.
        let _ = std::thread::Builder::new()
            .name("restart-output".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let _ = (&mut pipe).take(OUTPUT_CAP as u64).read_to_end(&mut kept);
                let _ = sender.send(kept);
                // Drain the rest so the command never blocks writing.
                let _ = io::copy(&mut pipe, &mut io::sink());
            });
    }
    receiver
}

/// Standard error, or standard output when the command wrote nothing there.
fn output(stdout: &Receiver<Vec<u8>>, stderr: &Receiver<Vec<u8>>) -> String {
    let take = |r: &Receiver<Vec<u8>>| r.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
    let err = take(stderr);
    let kept = if err.iter().all(u8::is_ascii_whitespace) {
        take(stdout)
    } else {
        err
    };
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if kept.len() >= OUTPUT_CAP {
        text.push_str(" [output cut at 64 KiB]");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn restart_command_sees_only_path_and_lang() {
        // cargo runs tests with CARGO_* set: none of keyrot's variables may reach the command.
        let inherited: Vec<String> = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| name != "PATH" && name != "LANG")
            .collect();
        assert!(!inherited.is_empty());
        let err = run(&sh("env >&2; exit 1"), Duration::from_secs(60)).unwrap_err();
        let RunError::Failed { output, .. } = &err else {
            panic!("{err}");
        };
        let names: Vec<&str> = output
            .lines()
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .filter(|name| *name != "PWD" && *name != "SHLVL" && *name != "_")
            .collect();
        assert_eq!(names.len(), 2, "{output}");
        assert!(output.contains(&format!("PATH={CLEAN_PATH}")), "{output}");
        assert!(output.contains("LANG=C"), "{output}");
    }

    #[test]
    fn restart_command_that_hangs_times_out() {
        let started = Instant::now();
        // The grandchild holds the pipes open too: the whole group goes.
        let err = run(
            &sh("sleep 600 & echo waiting >&2; wait"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("timed out"), "{message}");
        assert!(message.contains("waiting"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(300), "never hangs");
    }

    #[test]
    fn restart_command_output_is_capped_and_never_blocks_it() {
        // Four times the cap on standard error, then a normal exit.
        let err = run(
            &sh("head -c 262144 /dev/zero | tr '\\0' x >&2; exit 3"),
            Duration::from_secs(120),
        )
        .unwrap_err();
        let RunError::Failed { status, output, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(status.code(), Some(3));
        assert!(output.len() < OUTPUT_CAP + 100, "{}", output.len());
        assert!(output.ends_with("[output cut at 64 KiB]"));
    }

    #[test]
    fn a_background_child_holding_the_pipes_does_not_hold_keyrot() {
        // Exits 0 at once, leaving a short sleeper that holds both output pipes.
        run(&sh("sleep 2 & exit 0"), Duration::from_secs(60)).unwrap();
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert!(matches!(
            run(&[], Duration::from_secs(1)),
            Err(RunError::Empty)
        ));
    }
}
