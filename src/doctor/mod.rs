//! `keyrot doctor`: the read-only health check of one node's keys, apiservers and targets.
//!
//! `gather` reads the world (key files, flag file, apiservers, targets) into `Observations`;
//! `diagnose` turns them into findings, each with what to do, without any I/O; `verdict` gives
//! the exit code scripts act on.

mod findings;
pub mod gather;
mod observations;
mod process;

pub use findings::{Check, Finding, Status, Verdict, diagnose, verdict};
pub use observations::{
    ApiserverSeen, BundleSeen, FlagsSeen, KeyFileSeen, Observations, Read, TargetSeen,
};
pub use process::ApiserverProcess;
