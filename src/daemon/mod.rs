//! `keyrot run`: the loop (`service`) and what it talks through: the control socket that
//! carries manual triggers, systemd notifications, signals, and the Prometheus metrics.

pub mod control;
pub mod errors;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod refused_state;
pub mod service;
pub mod signals;
pub mod status_line;
