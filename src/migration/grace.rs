//! How long the old issuer stays accepted after the flag change: the plan's grace period,
//! lengthened to the longest lifetime a token issued before the change can have.
//!
//! A token names the issuer it was issued under until it expires, so dropping the old issuer
//! sooner breaks every client still holding one. Two things bound that lifetime: what the plan
//! says about the tokens requested in the cluster (`longestTokenLifetime`) and kube-apiserver's
//! `--service-account-max-token-expiration`, the cap on every TokenRequest. Projected tokens
//! that kube-apiserver extends to a year (`--service-account-extend-token-expiration`) are
//! replaced by the kubelet within about an hour, so they do not lengthen it.

use chrono::TimeDelta;

use crate::plan::{FlagSource, IssuerMigration, format_duration};

/// kube-apiserver's cap on the lifetime of the tokens it issues through TokenRequest.
pub const MAX_TOKEN_EXPIRATION: &str = "service-account-max-token-expiration";

/// The grace period and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grace {
    pub period: TimeDelta,
    pub why: String,
}

/// The longest of the plan's `gracePeriod`, its `longestTokenLifetime` and
/// `max_token_expiration` (the flag's value and the file it was read from).
pub fn grace(section: &IssuerMigration, max_token_expiration: Option<(TimeDelta, &str)>) -> Grace {
    let planned = section.grace_period;
    let mut grace = Grace {
        period: planned,
        why: format!("gracePeriod {}", format_duration(planned)),
    };
    let longer = |grace: &Grace, period: TimeDelta| period > grace.period;
    if let Some(lifetime) = section.longest_token_lifetime
        && longer(&grace, lifetime)
    {
        grace = Grace {
            period: lifetime,
            why: format!(
                "longestTokenLifetime {}, longer than gracePeriod {}",
                format_duration(lifetime),
                format_duration(planned)
            ),
        };
    }
    if let Some((cap, file)) = max_token_expiration
        && longer(&grace, cap)
    {
        grace = Grace {
            period: cap,
            why: format!(
                "--{MAX_TOKEN_EXPIRATION}={} in {file}: tokens may live that long, longer than \
                 gracePeriod {}",
                format_duration(cap),
                format_duration(planned)
            ),
        };
    }
    grace
}

/// Why the flag file cannot tell how long the old issuer's tokens live; the message names the
/// file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraceError {
    #[error("{path}: {error}")]
    Unreadable { path: String, error: String },
    #[error(
        "{path}: --{MAX_TOKEN_EXPIRATION}={value} is not a duration (kube-apiserver reads Go \
         durations, such as 720h or 1h30m); nothing was changed"
    )]
    NotADuration { path: String, value: String },
}

/// The grace period of the plan's migration, with `--service-account-max-token-expiration` read
/// from the flag file when keyrot edits one (the last value counts, as on a command line).
pub fn for_section(section: &IssuerMigration) -> Result<Grace, GraceError> {
    let FlagSource::File { path, file } = &section.flags else {
        return Ok(grace(section, None));
    };
    let shown = path.display().to_string();
    let unreadable = |error: String| GraceError::Unreadable {
        path: shown.clone(),
        error,
    };
    let text = crate::fs_read::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let values = file
        .values_of(&text, MAX_TOKEN_EXPIRATION)
        .map_err(|e| unreadable(e.to_string()))?;
    let Some(value) = values.last() else {
        return Ok(grace(section, None));
    };
    let cap = humantime::parse_duration(value)
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .ok_or_else(|| GraceError::NotADuration {
            path: shown.clone(),
            value: value.clone(),
        })?;
    Ok(grace(section, Some((cap, &shown))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::FlagFile;
    use crate::plan::Issuer;

    fn section(grace_period: TimeDelta, lifetime: Option<TimeDelta>) -> IssuerMigration {
        IssuerMigration {
            new_issuer: Issuer {
                url: "https://oidc.example.com/c".into(),
                jwks_uri: "https://oidc.example.com/c/openid/v1/jwks".into(),
            },
            flags: FlagSource::Manual,
            grace_period,
            longest_token_lifetime: lifetime,
            accept_first: false,
            drop_old_issuer: true,
            public_ca_file: None,
        }
    }

    #[test]
    fn the_planned_grace_period_holds_when_no_token_lives_longer() {
        let plan = section(TimeDelta::hours(48), Some(TimeDelta::hours(1)));
        let found = grace(&plan, Some((TimeDelta::hours(24), "m.yaml")));
        assert_eq!(found.period, TimeDelta::hours(48));
        assert_eq!(found.why, "gracePeriod 48h");
    }

    #[test]
    fn longer_lived_tokens_lengthen_it() {
        let plan = section(TimeDelta::hours(24), Some(TimeDelta::days(7)));
        let found = grace(&plan, None);
        assert_eq!(found.period, TimeDelta::days(7));
        assert_eq!(
            found.why,
            "longestTokenLifetime 168h, longer than gracePeriod 24h"
        );
        let capped = grace(&plan, Some((TimeDelta::days(30), "m.yaml")));
        assert_eq!(capped.period, TimeDelta::days(30));
        assert_eq!(
            capped.why,
            "--service-account-max-token-expiration=720h in m.yaml: tokens may live that long, \
             longer than gracePeriod 24h"
        );
    }

    fn kubeadm_plan(dir: &std::path::Path, command: &str) -> IssuerMigration {
        let path = dir.join("kube-apiserver.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    \
                 command:\n    - kube-apiserver\n{command}"
            ),
        )
        .unwrap();
        IssuerMigration {
            flags: FlagSource::File {
                path,
                file: FlagFile::KubeadmManifest,
            },
            ..section(TimeDelta::hours(24), None)
        }
    }

    #[test]
    fn the_max_token_expiration_flag_is_read_from_the_flag_file() {
        let dir = tempfile::tempdir().unwrap();
        let plan = kubeadm_plan(
            dir.path(),
            "    - --service-account-max-token-expiration=24h\n    \
             - --service-account-max-token-expiration=720h\n",
        );
        let found = for_section(&plan).unwrap();
        assert_eq!(found.period, TimeDelta::hours(720), "{found:?}");
        assert!(found.why.contains("kube-apiserver.yaml"), "{found:?}");

        let unset = kubeadm_plan(dir.path(), "    - --secure-port=6443\n");
        assert_eq!(for_section(&unset).unwrap().why, "gracePeriod 24h");

        let odd = kubeadm_plan(
            dir.path(),
            "    - --service-account-max-token-expiration=forever\n",
        );
        let error = for_section(&odd).unwrap_err();
        assert!(matches!(&error, GraceError::NotADuration { value, .. } if value == "forever"));
        assert!(
            error
                .to_string()
                .contains("--service-account-max-token-expiration=forever is not a duration"),
            "{error}"
        );
    }
}
