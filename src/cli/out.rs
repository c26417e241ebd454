//! Standard output that a closed pipe cannot break: printing stops quietly, the work goes on.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`keyrot jwks | head`), and a
//! panic in `keyrot rotate` would stop a rotation between two steps. Here a broken pipe ends the
//! printing only; any other write error is reported once on stderr, and printing stops as well.
//! Control characters from files and servers are escaped on the way (`keyrot::escape`).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use keyrot::escape::printable;

/// Set once a write failed: nothing more is printed.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout and flushes, so a failure shows at the write that caused it.
pub fn write(args: fmt::Arguments<'_>) {
    if STOPPED.load(Ordering::Relaxed) {
        return;
    }
    let text = args.to_string();
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(printable(&text).as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        STOPPED.store(true, Ordering::Relaxed);
        if err.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("warning: cannot write to standard output ({err}): nothing more is printed");
        }
    }
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

/// `println!` through [`write`].
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {out, outln};
