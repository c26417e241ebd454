//! The new values of kube-apiserver's issuer flags for a migration step: pure, no I/O.
//!
//! kube-apiserver issues tokens with the FIRST `--service-account-issuer` and accepts tokens from
//! ALL of them, so a migration puts the new issuer first and keeps the old one after it until
//! every token it issued has expired; only then is the old one dropped.
//!
//! On a control plane with several apiservers the nodes change one at a time, and a token issued
//! by an updated apiserver (new issuer) would be rejected by one not updated yet. The accept step
//! comes first there: the new issuer is appended, the old one stays first and keeps issuing, and
//! once every apiserver accepts the new issuer the add step moves it to the front. A migration
//! that accepted first ends with exactly the flags of one that did not.
//!
//! `--api-audiences` is the other half. When the flag is absent kube-apiserver derives the
//! accepted audiences from the issuers, and tokens issued before the change carry the old issuer
//! as their audience. Upstream's advice for changing the issuer (kubernetes PR 93258) is to set
//! `--api-audiences` explicitly to both the old and the new issuer first, so in-cluster clients
//! holding tokens for the old audience keep working whatever default a given kube-apiserver
//! release derives. keyrot therefore writes the flag explicitly, as the union of the issuers,
//! when it was absent; when the operator set it, keyrot adds the new issuer and keeps the rest.
//! The accept step adds the new issuer as an audience at the end, the add step moves it in front.

use super::{IssuerFlags, MigrationStep};
use crate::documents::{IssuerError, validate_issuer, validate_jwks_uri};

/// Why a migration step cannot be computed from the current flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("new issuer: {0}")]
    NewIssuer(IssuerError),
    #[error("new jwks_uri: {0}")]
    NewJwksUri(IssuerError),
    #[error(
        "{what} {value:?} contains {found:?}; flag values keyrot writes may not contain \
         whitespace, quotes, backslashes, commas or control characters"
    )]
    UnsafeCharacter {
        what: &'static str,
        value: String,
        found: char,
    },
    #[error("the old issuer to drop is empty")]
    EmptyOldIssuer,
    #[error("no --service-account-issuer is set, so there is no current issuer to migrate from")]
    NoIssuer,
    #[error(
        "new issuer {0:?} is the issuer the cluster already uses (its only \
         --service-account-issuer); nothing to migrate"
    )]
    SameAsCurrent(String),
    #[error(
        "new issuer {issuer:?} is already the first --service-account-issuer, but \
         --service-account-jwks-uri or --api-audiences differ from what this step writes \
         ({found}); someone changed the flags by hand: check them before going on"
    )]
    AlreadyFirst { issuer: String, found: String },
    #[error(
        "new issuer {issuer:?} is already the first --service-account-issuer, the one new \
         tokens are issued with, so the migration is past the step that only accepts it; but \
         --api-audiences does not list it ({found}); someone changed the flags by hand: check \
         them before going on"
    )]
    AlreadyIssuing { issuer: String, found: String },
    #[error(
        "cannot drop {0:?}: it is the first --service-account-issuer, the one new tokens are \
         issued with; the new issuer must be first before the old one is dropped"
    )]
    DropFirst(String),
}

/// The flags after `step`, or why the step does not apply to `current`.
///
/// Applying a step to its own result gives the same flags back, so an editor run twice changes
/// nothing the second time.
pub fn next_flags(current: &IssuerFlags, step: &MigrationStep) -> Result<IssuerFlags, FlagError> {
    match step {
        MigrationStep::AcceptNewIssuer { new_issuer } => accept_new_issuer(current, new_issuer),
        MigrationStep::AddNewIssuerFirst {
            new_issuer,
            new_jwks_uri,
        } => add_new_issuer_first(current, new_issuer, new_jwks_uri),
        MigrationStep::DropOldIssuer { old_issuer } => drop_old_issuer(current, old_issuer),
    }
}

fn add_new_issuer_first(
    current: &IssuerFlags,
    new_issuer: &str,
    new_jwks_uri: &str,
) -> Result<IssuerFlags, FlagError> {
    check_new_issuer(current, new_issuer)?;
    validate_jwks_uri(new_jwks_uri).map_err(FlagError::NewJwksUri)?;
    check_characters("new jwks_uri", new_jwks_uri)?;

    // New first, then every issuer accepted today in its order, each once.
    let issuers =
        each_once(std::iter::once(new_issuer).chain(current.issuers.iter().map(String::as_str)));
    let api_audiences = match &current.api_audiences {
        // The default was the issuers: write them out so the old issuer stays an audience.
        None => issuers.clone(),
        // The operator's list: the new issuer in front, everything else kept.
        Some(audiences) => {
            let mut list = vec![new_issuer.to_string()];
            list.extend(audiences.iter().filter(|a| *a != new_issuer).cloned());
            list
        }
    };
    let next = IssuerFlags {
        issuers,
        jwks_uri: Some(new_jwks_uri.to_string()),
        api_audiences: Some(api_audiences),
    };
    unless_issuing_already(current, next, new_issuer, || FlagError::AlreadyFirst {
        issuer: new_issuer.to_string(),
        found: describe_others(current),
    })
}

fn accept_new_issuer(current: &IssuerFlags, new_issuer: &str) -> Result<IssuerFlags, FlagError> {
    check_new_issuer(current, new_issuer)?;

    // Every issuer accepted today in its order, each once, then the new one: the first still
    // issues tokens. Listing each once, as the add step does, lets the add step that follows
    // end with exactly the flags it gives without this step.
    let issuers = each_once(
        current
            .issuers
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(new_issuer)),
    );
    let api_audiences = match &current.api_audiences {
        // The default was the issuers: write them out so the old issuer stays an audience.
        None => issuers.clone(),
        // The operator's list: kept as it is, the new issuer added at the end when missing.
        Some(audiences) => appended_if_missing(audiences, new_issuer),
    };
    // `--service-account-jwks-uri` only shapes the discovery document, which follows the first
    // issuer: it changes with the add step, when the new issuer becomes first.
    let next = IssuerFlags {
        issuers,
        jwks_uri: current.jwks_uri.clone(),
        api_audiences: Some(api_audiences),
    };
    unless_issuing_already(current, next, new_issuer, || FlagError::AlreadyIssuing {
        issuer: new_issuer.to_string(),
        found: describe_audiences(current),
    })
}

/// The new issuer as every step writes it, and a current issuer to migrate from.
fn check_new_issuer(current: &IssuerFlags, new_issuer: &str) -> Result<(), FlagError> {
    validate_issuer(new_issuer).map_err(FlagError::NewIssuer)?;
    check_characters("new issuer", new_issuer)?;
    if current.issuers.is_empty() {
        return Err(FlagError::NoIssuer);
    }
    Ok(())
}

/// `next`, unless the new issuer already issues tokens and `next` still differs from `current`:
/// then the flags are past the step but not as the step leaves them (`changed_by_hand`), or the
/// new issuer is the cluster's only one.
fn unless_issuing_already(
    current: &IssuerFlags,
    next: IssuerFlags,
    new_issuer: &str,
    changed_by_hand: impl FnOnce() -> FlagError,
) -> Result<IssuerFlags, FlagError> {
    if next == *current {
        // This step (or, for the accept step, the add step after it) was applied already.
        return Ok(next);
    }
    if current.issuers.first().map(String::as_str) == Some(new_issuer) {
        if current.issuers.len() == 1 {
            return Err(FlagError::SameAsCurrent(new_issuer.to_string()));
        }
        return Err(changed_by_hand());
    }
    Ok(next)
}

fn drop_old_issuer(current: &IssuerFlags, old_issuer: &str) -> Result<IssuerFlags, FlagError> {
    if old_issuer.is_empty() {
        return Err(FlagError::EmptyOldIssuer);
    }
    let Some(first) = current.issuers.first() else {
        return Err(FlagError::NoIssuer);
    };
    if first == old_issuer {
        return Err(FlagError::DropFirst(old_issuer.to_string()));
    }
    let issuers: Vec<String> = current
        .issuers
        .iter()
        .filter(|i| *i != old_issuer)
        .cloned()
        .collect();
    // Audiences that list exactly the issuers are the ones the add step wrote in place of the
    // default: they follow the issuers. Any other list is the operator's (or the distribution's)
    // and keeps the old issuer accepted as an audience.
    let api_audiences = match &current.api_audiences {
        Some(audiences) if same_values(audiences, &current.issuers) => Some(
            audiences
                .iter()
                .filter(|a| *a != old_issuer)
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    };
    Ok(IssuerFlags {
        issuers,
        jwks_uri: current.jwks_uri.clone(),
        api_audiences,
    })
}

/// The values keyrot writes travel through YAML, systemd command lines and the comma-separated
/// `--api-audiences`: refusing these characters keeps every format free of quoting rules.
fn check_characters(what: &'static str, value: &str) -> Result<(), FlagError> {
    match value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ','))
    {
        Some(found) => Err(FlagError::UnsafeCharacter {
            what,
            value: value.to_string(),
            found,
        }),
        None => Ok(()),
    }
}

/// The values in their order, each kept at its first place.
fn each_once<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut list: Vec<String> = Vec::new();
    for value in values {
        if !list.iter().any(|v| v == value) {
            list.push(value.to_string());
        }
    }
    list
}

/// `list` as it is, with `value` at the end when it is not in it yet.
fn appended_if_missing(list: &[String], value: &str) -> Vec<String> {
    let mut list = list.to_vec();
    if !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
    list
}

fn same_values(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

fn describe_others(flags: &IssuerFlags) -> String {
    let jwks = flags.jwks_uri.as_deref().unwrap_or("(not set)");
    format!(
        "--service-account-jwks-uri={jwks}, {}",
        describe_audiences(flags)
    )
}

fn describe_audiences(flags: &IssuerFlags) -> String {
    let audiences = match &flags.api_audiences {
        Some(list) => list.join(","),
        None => "(not set)".to_string(),
    };
    format!("--api-audiences={audiences}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "https://kubernetes.default.svc.cluster.local";
    const NEW: &str = "https://oidc.example.com/prod";
    const NEW_JWKS: &str = "https://oidc.example.com/prod/openid/v1/jwks";

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn flags(issuers: &[&str], jwks: Option<&str>, audiences: Option<&[&str]>) -> IssuerFlags {
        IssuerFlags {
            issuers: strings(issuers),
            jwks_uri: jwks.map(str::to_string),
            api_audiences: audiences.map(strings),
        }
    }

    fn add() -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: NEW.into(),
            new_jwks_uri: NEW_JWKS.into(),
        }
    }

    fn drop_old() -> MigrationStep {
        MigrationStep::DropOldIssuer {
            old_issuer: OLD.into(),
        }
    }

    fn accept() -> MigrationStep {
        MigrationStep::AcceptNewIssuer {
            new_issuer: NEW.into(),
        }
    }

    #[test]
    fn absent_audiences_become_the_issuers_new_first() {
        let next = next_flags(&flags(&[OLD], None, None), &add()).unwrap();
        assert_eq!(next, flags(&[NEW, OLD], Some(NEW_JWKS), Some(&[NEW, OLD])));
    }

    #[test]
    fn present_audiences_get_the_new_issuer_in_front_and_keep_the_rest() {
        let current = flags(&[OLD], None, Some(&[OLD, "k3s"]));
        let next = next_flags(&current, &add()).unwrap();
        assert_eq!(
            next,
            flags(&[NEW, OLD], Some(NEW_JWKS), Some(&[NEW, OLD, "k3s"]))
        );
    }

    #[test]
    fn other_accepted_issuers_are_kept_in_order_without_duplicates() {
        let current = flags(
            &[OLD, "https://older.example", NEW],
            Some("https://x/jwks"),
            None,
        );
        let next = next_flags(&current, &add()).unwrap();
        assert_eq!(
            next.issuers,
            strings(&[NEW, OLD, "https://older.example"]),
            "the new issuer moves to the front once; the others keep their order"
        );
        assert_eq!(next.jwks_uri.as_deref(), Some(NEW_JWKS));
    }

    #[test]
    fn each_step_applied_to_its_own_result_changes_nothing() {
        let starts = [
            flags(&[OLD], None, None),
            flags(&[OLD], Some("https://old/jwks"), Some(&[OLD, "k3s"])),
            flags(&[OLD, "https://b.example"], None, Some(&["api"])),
        ];
        for start in starts {
            let added = next_flags(&start, &add()).unwrap();
            assert_eq!(next_flags(&added, &add()).unwrap(), added);
            let dropped = next_flags(&added, &drop_old()).unwrap();
            assert_eq!(next_flags(&dropped, &drop_old()).unwrap(), dropped);
            // Once done, the add step has nothing left to do either.
            assert_eq!(next_flags(&dropped, &add()).unwrap(), dropped);
        }
    }

    #[test]
    fn dropping_removes_the_old_issuer_and_the_audience_keyrot_wrote() {
        let added = flags(&[NEW, OLD], Some(NEW_JWKS), Some(&[NEW, OLD]));
        let next = next_flags(&added, &drop_old()).unwrap();
        assert_eq!(next, flags(&[NEW], Some(NEW_JWKS), Some(&[NEW])));
    }

    #[test]
    fn dropping_keeps_the_old_issuer_in_an_operators_audience_list() {
        let added = flags(&[NEW, OLD], Some(NEW_JWKS), Some(&[NEW, OLD, "k3s"]));
        let next = next_flags(&added, &drop_old()).unwrap();
        assert_eq!(
            next,
            flags(&[NEW], Some(NEW_JWKS), Some(&[NEW, OLD, "k3s"]))
        );
    }

    #[test]
    fn wrong_new_issuers_are_refused() {
        let current = flags(&[OLD], None, None);
        let step = |issuer: &str| MigrationStep::AddNewIssuerFirst {
            new_issuer: issuer.into(),
            new_jwks_uri: NEW_JWKS.into(),
        };
        let err = next_flags(&current, &step("http://oidc.example.com")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new issuer: issuer URL \"http://oidc.example.com\" must use the https scheme"
        );
        let err = next_flags(&current, &step("https://oidc.example.com/?a=1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new issuer: issuer URL \"https://oidc.example.com/?a=1\" may not include a query"
        );
        let err = next_flags(&current, &step("https://oidc.example.com/#x")).unwrap_err();
        assert!(matches!(
            err,
            FlagError::NewIssuer(IssuerError::Fragment(_))
        ));
        let err = next_flags(&current, &step("https://oidc.example.com/a,b")).unwrap_err();
        assert!(matches!(err, FlagError::UnsafeCharacter { found: ',', .. }));
        let err = next_flags(&current, &step(OLD)).unwrap_err();
        assert_eq!(err, FlagError::SameAsCurrent(OLD.into()));
        let no_jwks = MigrationStep::AddNewIssuerFirst {
            new_issuer: NEW.into(),
            new_jwks_uri: "http://oidc.example.com/jwks".into(),
        };
        assert!(matches!(
            next_flags(&current, &no_jwks),
            Err(FlagError::NewJwksUri(IssuerError::NotHttps { .. }))
        ));
    }

    #[test]
    fn a_new_issuer_already_first_with_other_flags_is_refused() {
        let by_hand = flags(&[NEW, OLD], None, None);
        let err = next_flags(&by_hand, &add()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new issuer \"https://oidc.example.com/prod\" is already the first \
             --service-account-issuer, but --service-account-jwks-uri or --api-audiences \
             differ from what this step writes (--service-account-jwks-uri=(not set), \
             --api-audiences=(not set)); someone changed the flags by hand: check them before \
             going on"
        );
    }

    #[test]
    fn the_issuer_tokens_are_issued_with_cannot_be_dropped() {
        let err = next_flags(&flags(&[OLD], None, None), &drop_old()).unwrap_err();
        assert_eq!(err, FlagError::DropFirst(OLD.into()));
        assert_eq!(
            next_flags(&flags(&[], None, None), &add()).unwrap_err(),
            FlagError::NoIssuer
        );
    }

    #[test]
    fn accepting_appends_the_new_issuer_and_the_old_one_keeps_issuing() {
        let next = next_flags(&flags(&[OLD], None, None), &accept()).unwrap();
        assert_eq!(
            next,
            flags(&[OLD, NEW], None, Some(&[OLD, NEW])),
            "absent audiences are written out as the issuers, old first"
        );

        let current = flags(&[OLD], Some("https://old/jwks"), Some(&[OLD, "k3s"]));
        let next = next_flags(&current, &accept()).unwrap();
        assert_eq!(
            next,
            flags(
                &[OLD, NEW],
                Some("https://old/jwks"),
                Some(&[OLD, "k3s", NEW])
            ),
            "the jwks_uri stays; the operator's audiences get the new issuer at the end"
        );
    }

    #[test]
    fn accepting_keeps_the_issuers_in_order_and_adds_nothing_already_there() {
        let current = flags(
            &[OLD, NEW, "https://older.example"],
            None,
            Some(&[NEW, "api"]),
        );
        assert_eq!(
            next_flags(&current, &accept()).unwrap(),
            current,
            "the new issuer is accepted and an audience already"
        );

        let current = flags(&[OLD, "https://older.example", OLD], None, None);
        let next = next_flags(&current, &accept()).unwrap();
        assert_eq!(
            next,
            flags(
                &[OLD, "https://older.example", NEW],
                None,
                Some(&[OLD, "https://older.example", NEW])
            ),
            "each issuer once, as the add step writes them"
        );
    }

    #[test]
    fn accepting_twice_or_after_the_later_steps_changes_nothing() {
        for start in representative_starts() {
            let accepted = next_flags(&start, &accept()).unwrap();
            assert_eq!(next_flags(&accepted, &accept()).unwrap(), accepted);
            let added = next_flags(&accepted, &add()).unwrap();
            assert_eq!(next_flags(&added, &accept()).unwrap(), added);
            let dropped = next_flags(&added, &drop_old()).unwrap();
            assert_eq!(next_flags(&dropped, &accept()).unwrap(), dropped);
        }
    }

    /// Flags a migration starts from: audiences absent, the operator's or the distribution's,
    /// other issuers, the new one accepted already, a jwks_uri set or not.
    fn representative_starts() -> Vec<IssuerFlags> {
        vec![
            flags(&[OLD], None, None),
            flags(&[OLD], Some("https://old/jwks"), None),
            flags(&[OLD], None, Some(&[OLD, "k3s"])),
            flags(&[OLD], Some("https://old/jwks"), Some(&["api"])),
            flags(&[OLD, "https://b.example"], None, None),
            flags(&[OLD, "https://b.example"], None, Some(&["api", OLD])),
            flags(&[OLD, NEW], Some("https://old/jwks"), None),
            flags(&[OLD, NEW], None, Some(&[OLD, NEW, "api"])),
            flags(&[OLD, "https://b.example", OLD], None, None),
            flags(&[OLD], None, Some(&[NEW, "api", "api"])),
        ]
    }

    #[test]
    fn a_migration_that_accepted_first_ends_with_the_flags_of_one_that_did_not() {
        for start in representative_starts() {
            let accepted = next_flags(&start, &accept()).unwrap();
            let added_after_accept = next_flags(&accepted, &add()).unwrap();
            let added = next_flags(&start, &add()).unwrap();
            assert_eq!(
                added_after_accept, added,
                "add after accept, from {start:?}"
            );
            assert_eq!(
                next_flags(&added_after_accept, &drop_old()).unwrap(),
                next_flags(&added, &drop_old()).unwrap(),
                "drop after accept and add, from {start:?}"
            );
        }
    }

    #[test]
    fn accepting_refuses_what_adding_refuses_and_a_migration_past_it() {
        let current = flags(&[OLD], None, None);
        let step = |issuer: &str| MigrationStep::AcceptNewIssuer {
            new_issuer: issuer.into(),
        };
        let err = next_flags(&current, &step("http://oidc.example.com")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new issuer: issuer URL \"http://oidc.example.com\" must use the https scheme"
        );
        assert!(matches!(
            next_flags(&current, &step("https://oidc.example.com/?a=1")),
            Err(FlagError::NewIssuer(IssuerError::Query(_)))
        ));
        assert!(matches!(
            next_flags(&current, &step("https://oidc.example.com/#x")),
            Err(FlagError::NewIssuer(IssuerError::Fragment(_)))
        ));
        assert!(matches!(
            next_flags(&current, &step("https://oidc.example.com/a b")),
            Err(FlagError::UnsafeCharacter { found: ' ', .. })
        ));
        assert_eq!(
            next_flags(&current, &step(OLD)).unwrap_err(),
            FlagError::SameAsCurrent(OLD.into())
        );
        assert_eq!(
            next_flags(&flags(&[], None, None), &accept()).unwrap_err(),
            FlagError::NoIssuer
        );

        let by_hand = flags(&[NEW, OLD], Some(NEW_JWKS), Some(&[OLD]));
        let err = next_flags(&by_hand, &accept()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new issuer \"https://oidc.example.com/prod\" is already the first \
             --service-account-issuer, the one new tokens are issued with, so the migration is \
             past the step that only accepts it; but --api-audiences does not list it \
             (--api-audiences=https://kubernetes.default.svc.cluster.local); someone changed the \
             flags by hand: check them before going on"
        );
        assert!(matches!(
            next_flags(&flags(&[NEW, OLD], None, None), &accept()),
            Err(FlagError::AlreadyIssuing { .. })
        ));
    }
}
