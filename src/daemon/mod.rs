//! The parts of `keyrot run` that do not need the executor: the control socket that carries
//! manual triggers, systemd notifications, signals, and the Prometheus metrics.

pub mod control;
pub mod errors;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod signals;
pub mod status_line;
