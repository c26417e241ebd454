//! The `metrics` section of a plan: the address `keyrot run` serves Prometheus metrics on.

use std::net::SocketAddr;

use super::Metrics;
use super::locate::FieldPath;
use super::presets;
use super::raw::RawMetrics;
use super::values::Context;

/// `Some(None)` when the plan has no `metrics` section: the endpoint is off unless asked for.
pub fn metrics(cx: &mut Context, raw: Option<&RawMetrics>) -> Option<Option<Metrics>> {
    let Some(raw) = raw else { return Some(None) };
    let at = FieldPath::root().key("metrics").key("listen");
    let written = raw.listen.as_deref().unwrap_or(presets::METRICS_LISTEN);
    // An IP address, not a host name: resolving a name could pick an interface nobody meant.
    let Ok(listen) = written.parse::<SocketAddr>() else {
        cx.error(
            &at,
            format!(
                "{written:?} is not an address: write IP:PORT, such as 127.0.0.1:9464 or \"[::1]:9464\""
            ),
        );
        return None;
    };
    if listen.port() == 0 {
        cx.error(
            &at,
            format!("{written:?} has port 0: name the port Prometheus scrapes"),
        );
        return None;
    }
    Some(Some(Metrics { listen }))
}
