//! What is wrong, from what `keyrot doctor` saw: a pure function, one finding per check and
//! subject, each problem with what to do about it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::observations::{ApiserverSeen, BundleSeen, FlagsSeen, KeyFileSeen, Observations};
use crate::documents::{validate_issuer, validate_jwks_uri};
use crate::issuer::IssuerFlags;
use crate::plan::Issuer;
use crate::targets::verify::differs;

/// The checks, named as in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The key files can be read and yield keys.
    KeyFiles,
    /// No PEM block is skipped by kube-apiserver.
    SkippedBlocks,
    SigningKeyInBundle,
    ControllerManagerKey,
    /// `--service-account-issuer` and `--service-account-jwks-uri` in the flag file.
    IssuerFlags,
    /// The apiserver serves the kids of the files, in order.
    ApiserverKeys,
    /// The apiserver's own discovery document names the plan's issuer.
    ApiserverIssuer,
    /// A target serves the kids of the files, and the discovery document, anonymously.
    TargetKeys,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::KeyFiles => "key-files",
            Check::SkippedBlocks => "skipped-blocks",
            Check::SigningKeyInBundle => "signing-key-in-bundle",
            Check::ControllerManagerKey => "controller-manager-key",
            Check::IssuerFlags => "issuer-flags",
            Check::ApiserverKeys => "apiserver-keys",
            Check::ApiserverIssuer => "apiserver-issuer",
            Check::TargetKeys => "target-keys",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Problem,
    /// The thing could not be read or reached, so nothing about it is known.
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    pub status: Status,
    /// The file, apiserver or target the finding is about.
    pub subject: String,
    pub detail: String,
    /// What to do; present for every finding that is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The outcome for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Healthy,
    Problems,
    /// Nothing could be read or reached: the node's health is unknown.
    CannotCheck,
}

impl Verdict {
    /// 0 healthy, 1 problems found, 2 cannot check.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Problems => 1,
            Verdict::CannotCheck => 2,
        }
    }
}

pub fn verdict(findings: &[Finding]) -> Verdict {
    if findings.iter().all(|f| f.status == Status::Unreachable) {
        Verdict::CannotCheck
    } else if findings.iter().all(|f| f.status == Status::Ok) {
        Verdict::Healthy
    } else {
        Verdict::Problems
    }
}

pub fn diagnose(seen: &Observations) -> Vec<Finding> {
    let mut out = Vec::new();
    let signing = seen.signing.as_ref();
    let bundle = seen.bundle.as_ref();
    let bundle_kids = bundle.and_then(|b| b.kids.as_ref().ok());
    let signing_kid = signing.and_then(|s| s.kid.as_ref().ok());
    for file in [signing, seen.controller_manager.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Err(why) = &file.kid {
            out.push(unreadable_key(&file.path.display().to_string(), why));
        }
    }
    if let Some(bundle) = bundle {
        bundle_findings(bundle, &mut out);
    }
    if let (Some(signing), Some(kid), Some(kids)) = (signing, signing_kid, bundle_kids) {
        out.push(signing_in_bundle(signing, kid, kids, bundle.expect("kids")));
    }
    if let (Some(cm), Some(kid)) = (&seen.controller_manager, signing_kid)
        && let Ok(cm_kid) = &cm.kid
    {
        out.push(controller_manager(cm, cm_kid, kid, signing.expect("kid")));
    }
    if let Some(flags) = &seen.flags {
        out.push(issuer_flags(flags, seen.issuer.as_ref()));
    }
    for apiserver in &seen.apiservers {
        apiserver_findings(apiserver, bundle, seen.issuer.as_ref(), &mut out);
    }
    for target in &seen.targets {
        out.push(match (&target.kids, bundle_kids) {
            (Err(why), _) => Finding {
                check: Check::TargetKeys,
                status: Status::Problem,
                subject: target.name.clone(),
                detail: format!("cannot be read as a cloud verifier reads it: {why}"),
                fix: Some(
                    "a cloud that cannot read the documents rejects every token: make the \
                     documents readable there without credentials, then `keyrot publish -c PLAN`"
                        .into(),
                ),
            },
            (Ok(kids), None) => ok(
                Check::TargetKeys,
                &target.name,
                format!("{} serves [{}]", target.at, kids.join(", ")),
            ),
            (Ok(kids), Some(want)) => match differs(kids, want) {
                None => ok(
                    Check::TargetKeys,
                    &target.name,
                    format!("{} serves the files' kids [{}]", target.at, kids.join(", ")),
                ),
                Some(difference) => Finding {
                    check: Check::TargetKeys,
                    status: Status::Problem,
                    subject: target.name.clone(),
                    detail: format!(
                        "{} serves [{}], the key files give [{}]: {difference}",
                        target.at,
                        kids.join(", "),
                        want.join(", ")
                    ),
                    fix: Some(
                        "publish the current documents with `keyrot publish -c PLAN` (a rotation \
                         in progress publishes by itself: see `keyrot status`); a cloud rejects a \
                         token whose kid is missing (\"kid not found\")"
                            .into(),
                    ),
                },
            },
        });
    }
    out
}

fn ok(check: Check, subject: &str, detail: String) -> Finding {
    Finding {
        check,
        status: Status::Ok,
        subject: subject.to_string(),
        detail,
        fix: None,
    }
}

fn problem(check: Check, subject: &str, detail: String, fix: String) -> Finding {
    Finding {
        check,
        status: Status::Problem,
        subject: subject.to_string(),
        detail,
        fix: Some(fix),
    }
}

fn unreadable_key(subject: &str, why: &str) -> Finding {
    Finding {
        check: Check::KeyFiles,
        status: Status::Unreachable,
        subject: subject.to_string(),
        detail: why.to_string(),
        fix: Some(
            "check the path against kube-apiserver's flags, and run keyrot doctor as root (the \
             private keys are readable by root only)"
                .into(),
        ),
    }
}

fn bundle_findings(bundle: &BundleSeen, out: &mut Vec<Finding>) {
    let subject = paths(bundle);
    if let Err(why) = &bundle.kids {
        out.push(unreadable_key(&subject, why));
    }
    for skipped in &bundle.skipped {
        out.push(problem(
            Check::SkippedBlocks,
            &subject,
            skipped.clone(),
            "kube-apiserver neither verifies nor publishes this block: convert it (README, \
             \"skipped\" lines) or remove it"
                .into(),
        ));
    }
}

fn paths(bundle: &BundleSeen) -> String {
    let names: Vec<String> = bundle
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    names.join(" ")
}

fn signing_in_bundle(
    signing: &KeyFileSeen,
    kid: &str,
    kids: &[String],
    bundle: &BundleSeen,
) -> Finding {
    let subject = signing.path.display().to_string();
    if kids.iter().any(|k| k == kid) {
        return ok(
            Check::SigningKeyInBundle,
            &subject,
            format!("the signing key {kid} is among the verification keys"),
        );
    }
    let target = bundle
        .paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    problem(
        Check::SigningKeyInBundle,
        &subject,
        format!(
            "the signing key {kid} is not among the verification keys [{}]: the cluster signs \
             tokens that it then rejects itself",
            kids.join(", ")
        ),
        format!(
            "append its public key to the verification file (`openssl pkey -in {subject} -pubout \
             >> {target}`), restart kube-apiserver, then publish (`keyrot publish -c PLAN`)"
        ),
    )
}

fn controller_manager(cm: &KeyFileSeen, cm_kid: &str, kid: &str, signing: &KeyFileSeen) -> Finding {
    let subject = cm.path.display().to_string();
    if cm_kid == kid {
        return ok(
            Check::ControllerManagerKey,
            &subject,
            format!("kube-controller-manager's key is the signing key {kid}"),
        );
    }
    problem(
        Check::ControllerManagerKey,
        &subject,
        format!(
            "kube-controller-manager signs legacy tokens with {cm_kid}, kube-apiserver with \
             {kid} ({})",
            signing.path.display()
        ),
        format!(
            "make {subject} the same key as {} and restart kube-controller-manager (a keyrot \
             promotion writes both)",
            signing.path.display()
        ),
    )
}

fn issuer_flags(seen: &FlagsSeen, issuer: Option<&Issuer>) -> Finding {
    let subject = seen.path.display().to_string();
    let flags = match &seen.flags {
        Ok(flags) => flags,
        Err(why) => {
            return Finding {
                check: Check::IssuerFlags,
                status: Status::Unreachable,
                subject,
                detail: why.clone(),
                fix: Some(
                    "name the file kube-apiserver's flags live in with --flags-file and \
                     --flags-format"
                        .into(),
                ),
            };
        }
    };
    match flag_problem(flags, issuer) {
        None => ok(Check::IssuerFlags, &subject, describe_flags(flags)),
        Some((detail, fix)) => problem(Check::IssuerFlags, &subject, detail, fix),
    }
}

fn describe_flags(flags: &IssuerFlags) -> String {
    let jwks = flags.jwks_uri.as_deref().unwrap_or("(not set)");
    format!(
        "--service-account-issuer {}, --service-account-jwks-uri {jwks}",
        flags.issuers.join(", ")
    )
}

/// The first thing wrong with the issuer flags, and the fix.
fn flag_problem(flags: &IssuerFlags, issuer: Option<&Issuer>) -> Option<(String, String)> {
    const NOT_SERVED: &str = "kube-apiserver serves neither /openid/v1/jwks nor the discovery \
                              document, so no cloud can verify the cluster's tokens";
    let migrate = "set it to an https URL clouds can reach; `keyrot migrate-issuer` moves the \
                   issuer without breaking the tokens in use";
    let Some(first) = flags.issuers.first() else {
        return Some((
            format!("--service-account-issuer is not set: {NOT_SERVED}"),
            migrate.into(),
        ));
    };
    if let Err(e) = validate_issuer(first) {
        return Some((
            format!("--service-account-issuer: {e}: {NOT_SERVED}"),
            migrate.into(),
        ));
    }
    if let Some(jwks) = &flags.jwks_uri
        && let Err(e) = validate_jwks_uri(jwks)
    {
        return Some((
            format!("--service-account-jwks-uri: {e}: {NOT_SERVED}"),
            "set --service-account-jwks-uri to the https URL the JWKS is published at".into(),
        ));
    }
    let issuer = issuer?;
    if *first != issuer.url {
        return Some((
            format!(
                "kube-apiserver issues tokens as {first:?}, the plan's issuer is {:?}",
                issuer.url
            ),
            "correct the plan's issuer.url, or move the cluster to the plan's issuer with \
             `keyrot migrate-issuer`"
                .into(),
        ));
    }
    match &flags.jwks_uri {
        Some(jwks) if *jwks != issuer.jwks_uri => Some((
            format!(
                "--service-account-jwks-uri is {jwks:?}, the plan's jwksUri is {:?}",
                issuer.jwks_uri
            ),
            "make the flag and the plan's issuer.jwksUri the same URL".into(),
        )),
        _ => None,
    }
}

fn apiserver_findings(
    seen: &ApiserverSeen,
    bundle: Option<&BundleSeen>,
    issuer: Option<&Issuer>,
    out: &mut Vec<Finding>,
) {
    let subject = &seen.name;
    let served = match &seen.jwks {
        Ok(served) => served,
        Err(why) => {
            out.push(Finding {
                check: Check::ApiserverKeys,
                status: Status::Unreachable,
                subject: subject.clone(),
                detail: format!("GET /openid/v1/jwks: {why}"),
                fix: Some(
                    "check that kube-apiserver runs and the kubeconfig reaches this node's own \
                     apiserver; it serves /openid/v1/jwks only while --service-account-issuer \
                     and --service-account-jwks-uri are https"
                        .into(),
                ),
            });
            return;
        }
    };
    match bundle.and_then(|b| Some((b, b.kids.as_ref().ok()?))) {
        None => out.push(ok(
            Check::ApiserverKeys,
            subject,
            format!("serves [{}]", served.join(", ")),
        )),
        Some((bundle, kids)) => out.push(match differs(served, kids) {
            None => ok(
                Check::ApiserverKeys,
                subject,
                format!("serves the files' kids [{}], in order", served.join(", ")),
            ),
            Some(difference) => {
                let (why, fix) = stale_reason(bundle.changed_at, &seen.started_at);
                problem(
                    Check::ApiserverKeys,
                    subject,
                    format!(
                        "serves [{}], the key files give [{}]: {difference}; {why}",
                        served.join(", "),
                        kids.join(", ")
                    ),
                    fix,
                )
            }
        }),
    }
    match (&seen.discovery, issuer) {
        (Err(why), _) => out.push(Finding {
            check: Check::ApiserverIssuer,
            status: Status::Unreachable,
            subject: subject.clone(),
            detail: format!("GET /.well-known/openid-configuration: {why}"),
            fix: Some("check kube-apiserver's --service-account-issuer flag".into()),
        }),
        (Ok(served), Some(issuer)) if served.issuer != issuer.url => out.push(problem(
            Check::ApiserverIssuer,
            subject,
            format!(
                "its discovery document names the issuer {:?}, the plan {:?}",
                served.issuer, issuer.url
            ),
            "restart kube-apiserver if its --service-account-issuer was changed, or correct the \
             plan's issuer.url"
                .into(),
        )),
        (Ok(served), _) => out.push(ok(
            Check::ApiserverIssuer,
            subject,
            format!("issuer {}", served.issuer),
        )),
    }
}

/// Why an apiserver serves other kids than the files give, from when it started.
fn stale_reason(
    changed_at: Option<DateTime<Utc>>,
    started_at: &Result<DateTime<Utc>, String>,
) -> (String, String) {
    let restart = "restart kube-apiserver on this node (it reads its key files only when it \
                   starts)";
    match (changed_at, started_at) {
        (Some(changed), Ok(started)) if *started < changed => (
            format!(
                "kube-apiserver was not restarted since the key files changed (started {}, \
                 files changed {})",
                started.to_rfc3339(),
                changed.to_rfc3339()
            ),
            restart.into(),
        ),
        (_, Ok(started)) => (
            format!(
                "kube-apiserver started at {}, after the key files last changed: it runs with \
                 other --service-account-key-file values, or the kubeconfig reaches another \
                 node",
                started.to_rfc3339()
            ),
            "compare kube-apiserver's --service-account-key-file flags with the plan, and point \
             the kubeconfig at this node's own apiserver"
                .into(),
        ),
        (changed, Err(why)) => (
            format!(
                "either kube-apiserver was not restarted since the key files changed{}, or it \
                 runs with other --service-account-key-file values ({why})",
                changed
                    .map(|c| format!(" (at {})", c.to_rfc3339()))
                    .unwrap_or_default()
            ),
            format!(
                "{restart}; if it still differs, compare its --service-account-key-file flags \
                 with the plan"
            ),
        ),
    }
}
