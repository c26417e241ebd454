//! When this node's kube-apiserver process started, read from /proc: it tells whether the
//! apiserver can have read key files that changed since.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};

use crate::fs_read;

/// The kernel's clock ticks in /proc/PID/stat: USER_HZ, 100 on every Linux architecture keyrot
/// is built for.
const TICKS_PER_SECOND: i64 = 100;

/// Why a process's start time is unknown.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("process {pid}: {error}")]
    Stat { pid: u32, error: io::Error },
    #[error("process {pid}: unreadable /proc stat")]
    Unparsable { pid: u32 },
    #[error("no {name} process on this node")]
    None { name: String },
    #[error("{count} {name} processes on this node: name one with --apiserver-process PID")]
    Several { name: String, count: usize },
}

/// Which process is kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiserverProcess {
    /// The one process whose program (argv\[0\], without its directory) has this name.
    Named(String),
    Pid(u32),
}

impl ApiserverProcess {
    /// A number is a PID, anything else a program name.
    pub fn parse(text: &str) -> ApiserverProcess {
        match text.parse() {
            Ok(pid) => ApiserverProcess::Pid(pid),
            Err(_) => ApiserverProcess::Named(text.to_string()),
        }
    }

    /// When the process started, or why that is unknown.
    pub fn started_at(&self) -> Result<DateTime<Utc>, ProcessError> {
        let pid = match self {
            ApiserverProcess::Pid(pid) => *pid,
            ApiserverProcess::Named(name) => find(name)?,
        };
        let proc = Path::new("/proc");
        let stat = fs_read::read_to_string(proc.join(pid.to_string()).join("stat"))
            .map_err(|error| ProcessError::Stat { pid, error })?;
        let boot_path = proc.join("stat");
        let boot = fs_read::read_to_string(&boot_path).map_err(|error| ProcessError::Read {
            path: boot_path.clone(),
            error,
        })?;
        start_time(&stat, &boot).ok_or(ProcessError::Unparsable { pid })
    }
}

/// The PID of the only process running `name`.
fn find(name: &str) -> Result<u32, ProcessError> {
    let entries = std::fs::read_dir("/proc").map_err(|error| ProcessError::Read {
        path: PathBuf::from("/proc"),
        error,
    })?;
    let found: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs_read::read(entry.path().join("cmdline")).ok()?;
            let program = cmdline.split(|b| *b == 0).next()?;
            let program = Path::new(std::str::from_utf8(program).ok()?).file_name()?;
            (program == name).then_some(pid)
        })
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err(ProcessError::None {
            name: name.to_string(),
        }),
        _ => Err(ProcessError::Several {
            name: name.to_string(),
            count: found.len(),
        }),
    }
}

/// The start time in `/proc/PID/stat` (field 22, ticks since boot) added to `btime` of
/// `/proc/stat` (boot, in seconds since the epoch).
fn start_time(pid_stat: &str, proc_stat: &str) -> Option<DateTime<Utc>> {
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after_name = &pid_stat[pid_stat.rfind(')')? + 1..];
    let ticks: i64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let boot = DateTime::from_timestamp(boot, 0)?;
    Some(boot + TimeDelta::milliseconds(ticks * 1000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_boot_time_plus_ticks() {
        let stat = "4242 (kube apiserver) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 \
                    12 0 12345 1000000 100";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
        assert_eq!(
            start_time(stat, boot).unwrap(),
            DateTime::from_timestamp(1_700_000_123, 450_000_000).unwrap()
        );
        assert_eq!(start_time("4242 (x) S", boot), None);
    }

    #[test]
    fn this_process_started_before_now() {
        let me = ApiserverProcess::Pid(std::process::id());
        assert!(me.started_at().unwrap() <= Utc::now());
        assert_eq!(ApiserverProcess::parse("17"), ApiserverProcess::Pid(17));
        assert_eq!(
            ApiserverProcess::parse("kube-apiserver"),
            ApiserverProcess::Named("kube-apiserver".into())
        );
    }
}
