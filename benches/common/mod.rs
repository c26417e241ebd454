//! Shared bench plumbing: timing loops, median/min/max, the results table and smoke mode.
//!
//! The benches use plain `std::time::Instant`. `cargo bench` passes `--bench`; without it (as
//! under `cargo test --all-targets`) each bench runs as a quick smoke check: one iteration of
//! every case at small sizes, with no figures printed.

// Each bench uses a different part of this module.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this is a measuring run (`cargo bench`) or a smoke check (`cargo test`).
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// `full` iterations when measuring, one in smoke mode.
pub fn iterations(full: usize) -> usize {
    if measuring() { full } else { 1 }
}

/// One row of results: a case name and the duration of each iteration.
pub struct Row {
    pub case: String,
    pub times: Vec<Duration>,
}

impl Row {
    fn sorted(&self) -> Vec<Duration> {
        let mut sorted = self.times.clone();
        sorted.sort();
        sorted
    }

    pub fn median(&self) -> Duration {
        let sorted = self.sorted();
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2
        }
    }
}

/// Collects rows and prints them as a table.
#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    /// Times `iterations` calls of `f`, each on its own, and records them under `case`.
    pub fn time<T>(&mut self, case: &str, iterations: usize, mut f: impl FnMut() -> T) {
        let times = (0..iterations)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect();
        self.push(Row {
            case: case.to_string(),
            times,
        });
    }

    /// Times `iterations` runs of a whole process; its stdout and stderr are discarded and a
    /// failed run aborts the bench.
    pub fn time_process(
        &mut self,
        case: &str,
        iterations: usize,
        mut command: impl FnMut() -> Command,
    ) {
        self.time(case, iterations, || {
            let mut cmd = command();
            let status = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
            assert!(status.success(), "{cmd:?} failed: {status}");
        });
    }

    pub fn push(&mut self, row: Row) {
        if measuring() {
            eprintln!("  done: {}", row.case);
        }
        self.rows.push(row);
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self, title: &str) {
        if !measuring() {
            println!(
                "{title}: smoke check passed ({} cases); run `cargo bench` for figures",
                self.rows.len()
            );
            return;
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.case.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!("\n{title}\n");
        println!(
            "| {:<width$} | {:>5} | {:>10} | {:>10} | {:>10} |",
            "case", "runs", "median", "min", "max"
        );
        println!(
            "|{}|------:|-----------:|-----------:|-----------:|",
            "-".repeat(width + 2)
        );
        for row in &self.rows {
            let sorted = row.sorted();
            println!(
                "| {:<width$} | {:>5} | {:>10} | {:>10} | {:>10} |",
                row.case,
                row.times.len(),
                show(row.median()),
                show(sorted[0]),
                show(sorted[sorted.len() - 1]),
            );
        }
        for note in &self.notes {
            println!("\n{note}");
        }
    }
}

/// A duration with three significant figures in a fitting unit.
pub fn show(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

/// Whether `openssl` can be run.
pub fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
