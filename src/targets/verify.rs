//! `keyrot verify`'s comparison: what each target serves, read as a verifier reads it, against
//! the kids the cluster's key files give and the kids keyrot's state last published, and its
//! discovery document against the one keyrot renders for the key files.

use std::sync::Arc;

use serde::Serialize;

use super::{ServedDiscovery, read_served};
use crate::documents::discovery_differences;
use crate::plan::{Issuer, Target};

/// One target's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub kind: &'static str,
    /// Where the JWKS was read (a URL, a file, a provider).
    pub read_at: String,
    /// The kids served, in order; `None` when they could not be read.
    pub served: Option<Vec<String>>,
    /// Every difference, each naming where and what; empty when the target is right.
    pub problems: Vec<String>,
}

/// A set of kids a target should serve, and where that expectation comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub source: &'static str,
    pub kids: Vec<String>,
}

/// Compares what `target` serves with each of `expected` and, where the target holds one, its
/// discovery document with `discovery` (keyrot's, for the key files' keys).
pub fn check(
    issuer: &Issuer,
    target: &Target,
    expected: &[Expected],
    discovery: &str,
) -> TargetCheck {
    let served = read_served(issuer, target);
    let mut problems = Vec::new();
    match &served.kids {
        Err(why) => problems.push(why.to_string()),
        Ok(kids) => {
            for want in expected {
                if let Some(difference) = differs(kids, &want.kids) {
                    problems.push(format!(
                        "{} lists [{}], {} [{}]: {difference}",
                        served.at,
                        kids.join(", "),
                        want.source,
                        want.kids.join(", ")
                    ));
                }
            }
        }
    }
    if let Some(ServedDiscovery { at, body }) = &served.discovery {
        match body {
            // An unreadable object store fails both reads with one error, already listed.
            Err(why) if served.kids.as_ref().is_err_and(|w| Arc::ptr_eq(w, why)) => {}
            Err(why) => problems.push(why.to_string()),
            Ok(None) => problems.push(format!("{at}: no discovery document")),
            Ok(Some(body)) => {
                if let Some(what) = discovery_differences(discovery, body) {
                    problems.push(format!(
                        "{at} differs from the discovery document for the key files' keys: {what}"
                    ));
                }
            }
        }
    }
    TargetCheck {
        name: target.name.clone(),
        kind: target.kind.field_name(),
        read_at: served.at,
        served: served.kids.ok(),
        problems,
    }
}

/// What is missing and what is extra; the order too, since the JWKS lists keys in bundle order.
pub fn differs(served: &[String], expected: &[String]) -> Option<String> {
    if served == expected {
        return None;
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|k| !served.contains(k))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = served
        .iter()
        .filter(|k| !expected.contains(k))
        .map(String::as_str)
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("not expected {}", extra.join(", ")));
    }
    if parts.is_empty() {
        parts.push("same keys in another order".to_string());
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn differences_name_missing_extra_and_order() {
        assert_eq!(differs(&kids(&["a", "b"]), &kids(&["a", "b"])), None);
        assert_eq!(
            differs(&kids(&["a"]), &kids(&["a", "b"])).unwrap(),
            "missing b"
        );
        assert_eq!(
            differs(&kids(&["a", "c"]), &kids(&["a", "b"])).unwrap(),
            "missing b; not expected c"
        );
        assert_eq!(
            differs(&kids(&["b", "a"]), &kids(&["a", "b"])).unwrap(),
            "same keys in another order"
        );
    }
}
