//! Words for people: what each action does, in the plan's own terms (paths, targets, commands).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::decision::Action;
use crate::decision::migration::MigrationAction;
use crate::plan::{Plan, Restart};

/// A time as people read it in keyrot's output: RFC 3339, whole seconds, `Z`.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `until TIME`, or `forever` for a time past the end of the calendar, which never comes.
pub fn until(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!("until {}", time(t)),
        None => "forever".to_string(),
    }
}

/// Kids are 43 characters; progress lines and timelines show enough of one to tell it apart.
const SHORT_KID: usize = 12;

/// Replaces each 43-character kid in `text` by its first characters and an ellipsis.
pub fn shorten_kids(text: &str) -> String {
    text.split_inclusive([' ', ',', '[', ']'])
        .map(|word| {
            let bare = word.trim_end_matches([' ', ',', '[', ']']);
            let is_kid = bare.len() == 43
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if is_kid {
                format!("{}…{}", &bare[..SHORT_KID], &word[bare.len()..])
            } else {
                word.to_string()
            }
        })
        .collect()
}

/// What an action does, in the plan's own terms; `None` for pure bookkeeping.
pub fn describe_action(plan: &Plan, action: &Action) -> Option<String> {
    let files = &plan.apiserver;
    Some(match action {
        Action::Adopt {
            keys,
            copy_signing_key_to,
        } => format!(
            "record the {} key(s) found in the files; copy the signing key to {}",
            keys.len(),
            copy_signing_key_to.display()
        ),
        Action::StartRotation { cause, .. } => {
            format!("start a rotation ({cause:?})").to_lowercase()
        }
        Action::Approve { phase } => format!("phase {phase} approved"),
        Action::ForceGate { gate } => {
            format!("gate {gate} FORCED OPEN by a person: keyrot did not see it pass")
        }
        Action::Abort => "abort: the new key is removed".into(),
        Action::Rollback => "roll back: the old key signs again".into(),
        Action::GenerateKey { path, spec } => format!(
            "generate a {} key at {} (0600)",
            spec_name(*spec),
            path.display()
        ),
        Action::WriteBundle { kids } => format!(
            "write {}: [{}]",
            files.verification_bundle.display(),
            kids.join(", ")
        ),
        Action::WriteSigningKey { kid } => {
            let mut paths = vec![files.signing_key_file.display().to_string()];
            if let Some(cm) = &plan.controller_manager
                && cm.private_key_file != files.signing_key_file
            {
                paths.push(cm.private_key_file.display().to_string());
            }
            format!("write {} with key {kid}", paths.join(" and "))
        }
        Action::Restart {
            controller_manager, ..
        } => {
            let mut text = format!("restart the apiserver: {}", restart_name(&files.restart));
            if let Some(cm) = plan
                .controller_manager
                .as_ref()
                .filter(|_| *controller_manager)
            {
                if cm.restart == files.restart {
                    text.push_str(" (which restarts kube-controller-manager too)");
                } else {
                    let how = restart_name(&cm.restart);
                    text.push_str(&format!(
                        "; restart kube-controller-manager (its key file changed): {how}"
                    ));
                }
            }
            text
        }
        Action::Publish { kids } => {
            let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
            format!(
                "publish the JWKS [{}] and the discovery document to {}",
                kids.join(", "),
                names.join(", ")
            )
        }
        Action::ConfirmPublished => "every target serves the new JWKS (read back)".into(),
        Action::EnterPhase { phase } => format!("gate passed: enter phase {phase}"),
        Action::DestroyPrivateKey { path, .. } => {
            format!("destroy the old private key {}", path.display())
        }
        Action::CompleteRotation => "rotation complete".into(),
        Action::StartSignerSwitch { to } => {
            format!(
                "switch kube-apiserver to take its keys from {}",
                to.as_str()
            )
        }
        Action::SwitchKeyFlags { to } => {
            let file = plan
                .signer
                .as_ref()
                .and_then(|s| s.switch.as_ref())
                .map_or("the flag file".to_string(), |s| {
                    s.path.display().to_string()
                });
            format!(
                "edit {file} so that kube-apiserver takes its keys from {}, restart it",
                to.as_str()
            )
        }
        Action::CompleteSignerSwitch => "switch checked: the apiserver serves the key files' keys \
                                         and signs with the signing key"
            .into(),
        Action::ReleaseNextKey => {
            "the next key signs as soon as it is ready (keyrot rotate)".into()
        }
        Action::StartMigration {
            old_issuer,
            new_issuer,
        } => format!("start the issuer migration from {old_issuer} to {new_issuer}"),
        Action::Migrate(step) => describe_migration_step(*step).into(),
        Action::StartMigrationRollback { .. } => "start the issuer migration's rollback".into(),
        Action::RestoreFlags { restart: true } => {
            "put kube-apiserver's flags back, restart it, check the old issuer".into()
        }
        Action::RestoreFlags { restart: false } => "put kube-apiserver's flags back".into(),
        Action::AskPersonToRestore => "ask a person to put kube-apiserver's flags back".into(),
        Action::CheckRestored => "check the apiserver issues as the old issuer again".into(),
        Action::ForgetMigration => "forget the issuer migration (nothing to undo)".into(),
        Action::RecordNewKey { .. } | Action::ConsumeTrigger { .. } | Action::GateFailed { .. } => {
            return None;
        }
    })
}

fn spec_name(spec: crate::keys::GenerateSpec) -> String {
    match spec {
        crate::keys::GenerateSpec::Rsa { bits } => format!("RS256 {bits}-bit"),
        crate::keys::GenerateSpec::P256 => "ES256 P-256".into(),
    }
}

/// A restart as people read it.
pub fn restart_name(restart: &Restart) -> String {
    match restart {
        Restart::StaticPod { manifest } => {
            format!("touch static pod manifest {}", manifest.display())
        }
        Restart::SystemdUnit { unit, .. } => format!("systemctl restart -- {unit}"),
        Restart::Command { argv, .. } => format!("run {}", argv.join(" ")),
        Restart::ExternalSigner => "none: keyrot's signer reloads the key set".into(),
        Restart::None => "none configured (nothing to restart)".into(),
    }
}

/// A canary exchange, as the dry run shows it: with whom, signed by which key, with which claims.
pub fn describe_canary(target: &str, canary: &crate::plan::Canary, kid: &str) -> String {
    use crate::plan::RelyingParty;
    let exchange = match &canary.relying_party {
        RelyingParty::AwsSts { role_arn, .. } => {
            format!("AWS STS AssumeRoleWithWebIdentity for {role_arn}")
        }
        RelyingParty::GcpSts { provider, .. } => format!("GCP STS token exchange for {provider}"),
        RelyingParty::Entra {
            tenant, client_id, ..
        } => format!("Entra ID client credentials for app {client_id} in {tenant}"),
    };
    format!(
        "{target}: a canary token signed by {kid} (sub {}, aud {}) must be accepted by {exchange}",
        canary.subject, canary.audience
    )
}

/// One step of the issuer migration, for the log and the dry run.
fn describe_migration_step(step: MigrationAction) -> &'static str {
    use crate::decision::migration::{FlagChange, Issues};
    use crate::migration::record::ManualStep;
    match step {
        MigrationAction::Publish => "step 1: publish the new issuer's documents to every target",
        MigrationAction::CheckDocuments => {
            "step 2: read the documents back anonymously at the new issuer URL"
        }
        MigrationAction::ChangeFlags {
            change: FlagChange::Accept,
            ..
        } => "step 3: accept the new issuer (the old one still issues), restart, check",
        MigrationAction::ChangeFlags {
            change: FlagChange::Add,
            ..
        } => "step 3: issue as the new issuer, the old one still accepted; restart",
        MigrationAction::ChangeFlags {
            change: FlagChange::Drop,
            ..
        } => "step 5: drop the old issuer, restart, check",
        MigrationAction::RecordAcceptedEverywhere => {
            "step 3: every apiserver accepts the new issuer (approved)"
        }
        MigrationAction::CheckApproved {
            issues: Issues::Old,
            ..
        } => "step 3: check the change a person made: the new issuer is accepted",
        MigrationAction::CheckApproved {
            step: ManualStep::Drop,
            ..
        } => "step 5: check the change a person made: the old issuer is dropped",
        MigrationAction::CheckApproved { .. } => {
            "step 3: check the change a person made: the new issuer issues"
        }
        MigrationAction::CheckCluster => {
            "step 4: check the apiserver's discovery document and a new token"
        }
        MigrationAction::AskPerson(ManualStep::Drop) => {
            "step 5: ask a person to drop the old issuer from the flags"
        }
        MigrationAction::AskPerson(_) => "step 3: ask a person to change the flags",
    }
}
