//! The `issuerMigration` section: the new issuer, the flag editor, the grace period.

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::presets;
use super::raw::{OrManual, RawFlagFiles, RawIssuerMigration};
use super::values::{Context, format_duration};
use super::{FlagSource, Issuer, IssuerMigration};
use crate::documents::{default_jwks_uri, validate_issuer, validate_jwks_uri};
use crate::issuer::{FlagError, FlagFile, IssuerFlags, K3sDefaults, MigrationStep, next_flags};

/// `Some(None)` when the plan has no `issuerMigration`.
pub fn issuer_migration(
    cx: &mut Context,
    raw: Option<&RawIssuerMigration>,
    current: Option<&Issuer>,
    test_plan: bool,
) -> Option<Option<IssuerMigration>> {
    let Some(raw) = raw else { return Some(None) };
    let at = FieldPath::root().key("issuerMigration");
    let new_issuer = new_issuer(cx, &at, raw, current);
    let flags = flags(cx, &at.key("flags"), raw.flags.as_ref());
    let grace_at = at.key("gracePeriod");
    let mut grace_period = cx.duration(
        &grace_at,
        raw.grace_period.as_ref(),
        presets::MIN_ISSUER_GRACE,
    );
    if let Some(grace) = grace_period
        && grace < presets::MIN_ISSUER_GRACE
        && !test_plan
    {
        cx.error(
            &grace_at,
            format!(
                "{} is shorter than {}; only a plan with testPlan: true may drop the old issuer \
                 sooner",
                format_duration(grace),
                format_duration(presets::MIN_ISSUER_GRACE)
            ),
        );
        grace_period = None;
    }
    let lifetime_at = at.key("longestTokenLifetime");
    let longest_token_lifetime = match &raw.longest_token_lifetime {
        None => Some(None),
        Some(written) => match cx.duration(&lifetime_at, Some(written), TimeDelta::zero()) {
            Some(lifetime) if lifetime <= TimeDelta::zero() => {
                cx.error(&lifetime_at, "must be more than zero");
                None
            }
            other => other.map(Some),
        },
    };
    let public_ca_file = match &raw.public_ca_file {
        None => Some(None),
        Some(_) if !test_plan => {
            cx.error(
                &at.key("publicCaFile"),
                "only a plan with testPlan: true may trust an extra CA: clouds check the \
                 certificate against public roots",
            );
            None
        }
        Some(path) => cx.path(&at.key("publicCaFile"), path).map(Some),
    };
    Some(Some(IssuerMigration {
        new_issuer: new_issuer?,
        flags: flags?,
        grace_period: grace_period?,
        longest_token_lifetime: longest_token_lifetime?,
        accept_first: raw.accept_first.unwrap_or(false),
        drop_old_issuer: raw.drop_old_issuer.unwrap_or(false),
        public_ca_file: public_ca_file?,
    }))
}

fn new_issuer(
    cx: &mut Context,
    at: &FieldPath,
    raw: &RawIssuerMigration,
    current: Option<&Issuer>,
) -> Option<Issuer> {
    let url_at = at.key("newIssuer");
    let jwks_at = at.key("newJwksUri");
    let Some(url) = &raw.new_issuer else {
        cx.missing(
            &url_at,
            "the public https URL the cluster's tokens will name",
        );
        return None;
    };
    if let Err(err) = validate_issuer(url) {
        cx.error(&url_at, err.to_string());
        return None;
    }
    let jwks_uri = match &raw.new_jwks_uri {
        None => default_jwks_uri(url),
        Some(jwks_uri) => {
            if let Err(err) = validate_jwks_uri(jwks_uri) {
                cx.error(&jwks_at, err.to_string());
                return None;
            }
            jwks_uri.clone()
        }
    };
    let Some(current) = current else {
        // issuer.url has its own problem, reported already.
        return None;
    };
    if url == &current.url {
        cx.error(
            &url_at,
            format!("{url:?} is already issuer.url, the cluster's issuer: nothing to migrate"),
        );
        return None;
    }
    // The editors' own checks (characters that cannot travel through YAML, systemd units or the
    // comma-separated --api-audiences), made now rather than when the flags are about to change.
    let today = IssuerFlags {
        issuers: vec![current.url.clone()],
        jwks_uri: None,
        api_audiences: None,
    };
    let step = MigrationStep::AddNewIssuerFirst {
        new_issuer: url.clone(),
        new_jwks_uri: jwks_uri.clone(),
    };
    if let Err(err) = next_flags(&today, &step) {
        let about_jwks = match &err {
            FlagError::NewJwksUri(_) => true,
            FlagError::UnsafeCharacter { what, .. } => what.contains("jwks"),
            _ => false,
        };
        cx.error(if about_jwks { &jwks_at } else { &url_at }, err.to_string());
        return None;
    }
    Some(Issuer {
        url: url.clone(),
        jwks_uri,
    })
}

pub(super) fn flags(
    cx: &mut Context,
    at: &FieldPath,
    raw: Option<&OrManual<RawFlagFiles>>,
) -> Option<FlagSource> {
    let written = match raw {
        None => {
            cx.missing(
                at,
                "where kube-apiserver's flags live: kubeadmManifest, k3sConfig, rke2Config, \
                 systemdUnit, or manual",
            );
            return None;
        }
        Some(OrManual::Manual) => return Some(FlagSource::Manual),
        Some(OrManual::Some(written)) => written,
    };
    let domain = presets::CLUSTER_DOMAIN;
    let choices = [
        (
            "kubeadmManifest",
            &written.kubeadm_manifest,
            FlagFile::KubeadmManifest,
        ),
        (
            "k3sConfig",
            &written.k3s_config,
            FlagFile::K3sConfig(K3sDefaults::k3s(domain)),
        ),
        (
            "rke2Config",
            &written.rke2_config,
            FlagFile::K3sConfig(K3sDefaults::rke2(domain)),
        ),
        ("systemdUnit", &written.systemd_unit, FlagFile::SystemdUnit),
    ];
    let set: Vec<_> = choices
        .into_iter()
        .filter_map(|(name, path, file)| Some((name, path.as_ref()?, file)))
        .collect();
    match set.as_slice() {
        [(name, path, file)] => {
            let path = cx.path(&at.key(name), path)?;
            Some(FlagSource::File {
                path,
                file: file.clone(),
            })
        }
        [] => {
            cx.error(
                at,
                "set one of kubeadmManifest, k3sConfig, rke2Config or systemdUnit, or write \
                 flags: manual",
            );
            None
        }
        _ => {
            cx.error(
                at,
                "set only one of kubeadmManifest, k3sConfig, rke2Config and systemdUnit",
            );
            None
        }
    }
}
