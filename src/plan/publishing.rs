//! The publishing sections of a plan: the issuer and the targets its documents are published to.

use std::collections::HashMap;

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::presets;
use super::raw::{RawIssuer, RawTarget};
use super::values::{Context, format_duration};
use super::{Issuer, Target};
use super::{canary, destinations};
use crate::documents::{default_jwks_uri, validate_issuer, validate_jwks_uri};

pub fn issuer(cx: &mut Context, raw: Option<&RawIssuer>) -> Option<Issuer> {
    let at = FieldPath::root().key("issuer");
    let url_at = at.key("url");
    let Some(url) = raw.and_then(|r| r.url.as_ref()) else {
        cx.missing(&url_at, "the https URL that tokens name as their issuer");
        return None;
    };
    // Checked as kube-apiserver checks them: with anything else it does not serve the documents.
    if let Err(err) = validate_issuer(url) {
        cx.error(&url_at, err.to_string());
        return None;
    }
    let jwks_uri = match raw.and_then(|r| r.jwks_uri.as_ref()) {
        None => default_jwks_uri(url),
        Some(jwks_uri) => {
            if let Err(err) = validate_jwks_uri(jwks_uri) {
                cx.error(&at.key("jwksUri"), err.to_string());
                return None;
            }
            jwks_uri.clone()
        }
    };
    Some(Issuer {
        url: url.clone(),
        jwks_uri,
    })
}

/// Each target as checked, `None` where it has a problem, so that indexes stay those of the
/// file; `None` for the whole list when it is missing or empty.
pub fn targets(
    cx: &mut Context,
    raw: Option<&Vec<RawTarget>>,
    test_plan: bool,
) -> Option<Vec<Option<Target>>> {
    let at = FieldPath::root().key("targets");
    let Some(raw) = raw else {
        cx.missing(&at, "at least one place to publish the issuer documents");
        return None;
    };
    if raw.is_empty() {
        cx.error(
            &at,
            "at least one target is required to publish the issuer documents",
        );
        return None;
    }
    let mut first_with_name: HashMap<&str, usize> = HashMap::new();
    let mut targets = Vec::new();
    for (i, written) in raw.iter().enumerate() {
        let target_at = at.index(i);
        let checked = target(cx, &target_at, written, test_plan);
        let Some(name) = written.name.as_deref() else {
            targets.push(checked);
            continue;
        };
        match first_with_name.get(name) {
            Some(first) => {
                cx.error(
                    &target_at.key("name"),
                    format!(
                        "{name:?} is already the name of targets[{first}]; names must be unique"
                    ),
                );
                targets.push(None);
            }
            None => {
                first_with_name.insert(name, i);
                targets.push(checked);
            }
        }
    }
    Some(targets)
}

fn target(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawTarget,
    test_plan: bool,
) -> Option<Target> {
    let name = match &written.name {
        Some(name) => cx.text(&at.key("name"), name),
        None => {
            cx.missing(&at.key("name"), "a name for logs and status");
            None
        }
    };
    let cache_max_age = cache_max_age(cx, &at.key("cacheMaxAge"), written);
    let kind = destinations::kind(cx, at, written, test_plan, cache_max_age);
    let canary = match &written.canary {
        Some(raw) => Some(canary::canary(cx, &at.key("canary"), raw)?),
        None => None,
    };
    Some(Target {
        name: name?,
        kind: kind?,
        cache_max_age: cache_max_age?,
        canary,
    })
}

fn cache_max_age(cx: &mut Context, at: &FieldPath, written: &RawTarget) -> Option<TimeDelta> {
    let age = cx.duration(at, written.cache_max_age.as_ref(), presets::CACHE_MAX_AGE)?;
    if age.subsec_nanos() != 0 {
        cx.error(
            at,
            format!(
                "{} is not a whole number of seconds, which Cache-Control max-age counts in",
                format_duration(age)
            ),
        );
        return None;
    }
    Some(age)
}
