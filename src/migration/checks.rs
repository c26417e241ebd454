//! What a migration checks before it goes on: the published documents, read as a cloud reads
//! them, and what the apiserver serves and issues.

use std::time::{Duration, Instant};

use super::{Migration, StepError, failed};
use crate::adapters::probe::KubeProber;
use crate::documents::JWKS_CONTENT_TYPE;
use crate::http::block_on;
use crate::plan::{Plan, Probe, PublicRead};
use crate::targets::{public, read_served};

/// What the apiserver must serve and issue.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The first `--service-account-issuer`: the discovery document's `issuer` and a new
    /// token's `iss`.
    pub issuer: &'a str,
    /// The discovery document's `jwks_uri`, when keyrot knows it. Without
    /// `--service-account-jwks-uri` kube-apiserver names its own address, which keyrot does not.
    pub jwks_uri: Option<&'a str>,
}

/// Step 2: every target holds the current kids (as `keyrot verify` reads it), and the documents
/// read anonymously at the new issuer URL, as a cloud reads them, name the new issuer, the new
/// jwks_uri and the current kids.
pub fn documents(migration: &Migration) -> Result<(), String> {
    let issuer = migration.new_issuer();
    for target in &migration.plan.targets {
        let served = read_served(issuer, target);
        match served.kids {
            Ok(kids) if kids == migration.kids => {}
            Ok(kids) => {
                return Err(format!(
                    "target {}: {} lists [{}], the key files [{}]",
                    target.name,
                    served.at,
                    kids.join(", "),
                    migration.kids.join(", ")
                ));
            }
            Err(why) => return Err(format!("target {}: {why}", target.name)),
        }
    }
    // An object-store target names the JWKS content type its objects carry; otherwise the web
    // server serving a directory is expected to send kube-apiserver's.
    let jwks_content_type = migration
        .plan
        .targets
        .iter()
        .find_map(|t| t.kind.objects())
        .map_or(JWKS_CONTENT_TYPE, |o| o.jwks_content_type.as_str());
    let reach = PublicRead {
        url: None,
        ca_file: migration.section.public_ca_file.clone(),
    };
    let view = block_on(public::read_public(issuer, &reach, jwks_content_type))
        .map_err(|e| e.to_string())?;
    if view.kids != migration.kids {
        return Err(format!(
            "{} lists [{}], the key files [{}]",
            view.jwks_url,
            view.kids.join(", "),
            migration.kids.join(", ")
        ));
    }
    Ok(())
}

fn prober(plan: &Plan, step: u8) -> Result<KubeProber, StepError> {
    match &plan.probe {
        Probe::None => Err(failed(
            step,
            "the plan has no probe (probe: none): keyrot cannot check the apiserver",
        )),
        Probe::Kubeconfig {
            path,
            namespace,
            service_account,
            audience,
        } => KubeProber::new(path, namespace, service_account, audience)
            .map_err(|e| failed(step, e.to_string())),
    }
}

/// Asks until `timings.gateTimeout` (the apiserver may be restarting) for the discovery
/// document naming what is expected, then for a token carrying the expected issuer.
pub fn cluster(plan: &Plan, expected: Expected, step: u8) -> Result<(), StepError> {
    let mut prober = prober(plan, step)?;
    let timeout = plan.timings.gate_timeout.to_std().unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + timeout;
    loop {
        let why = match prober.discovery() {
            Ok(d) if d.issuer != expected.issuer => format!(
                "the apiserver's discovery document names issuer {:?}, expected {:?}",
                d.issuer, expected.issuer
            ),
            Ok(d) if expected.jwks_uri.is_some_and(|uri| d.jwks_uri != uri) => format!(
                "the apiserver's discovery document names jwks_uri {:?}, expected {:?}",
                d.jwks_uri,
                expected.jwks_uri.unwrap_or_default()
            ),
            Ok(_) => match prober.token_issuer() {
                Ok(iss) if iss == expected.issuer => return Ok(()),
                Ok(iss) => format!(
                    "a new token carries iss {iss:?}, expected {:?}",
                    expected.issuer
                ),
                Err(e) => format!("TokenRequest: {e}"),
            },
            Err(e) => format!("GET /.well-known/openid-configuration: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(failed(
                step,
                format!(
                    "{why} (still so after {})",
                    crate::plan::format_duration(plan.timings.gate_timeout)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
