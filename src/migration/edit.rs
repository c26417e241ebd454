//! A migration's flag changes that need no effect: where the editors keep their backups, the
//! check of the file's current issuer, and with `flags: manual` the change a person makes.

use super::{StepError, failed};
use crate::issuer::{self, FlagFile, IssuerFlags, ManualChange, MigrationStep};
use crate::plan::Plan;

/// Where the editors keep the bytes a flag file had before each step of this migration: a
/// directory of its own under `<stateDir>/issuer-backups`, named after the two issuers, so a
/// rollback never finds the backups of an earlier migration.
pub fn backup_dir(plan: &Plan) -> std::path::PathBuf {
    use sha2::Digest;
    let new = plan
        .issuer_migration
        .as_ref()
        .map_or("", |m| m.new_issuer.url.as_str());
    let digest = sha2::Sha256::digest(format!("{}\n{new}", plan.issuer.url));
    let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    plan.state_dir.join("issuer-backups").join(id)
}

/// Before the flags change: the file must run the plan's issuer, first (or, after the add step,
/// right behind the new one). A plan naming another issuer would keep the real one accepted
/// forever and drop one the cluster never had.
pub fn check_current_issuer(
    path: &std::path::Path,
    file: &FlagFile,
    old_issuer: &str,
    new_issuer: &str,
) -> Result<(), StepError> {
    let unreadable = |e: String| failed(0, format!("{}: {e}", path.display()));
    let text = crate::fs_read::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let flags = file
        .read_flags(&text)
        .map_err(|e| unreadable(e.to_string()))?;
    let first = flags.issuers.first().map(String::as_str);
    let runs_old = first == Some(old_issuer)
        || (first == Some(new_issuer) && flags.issuers.iter().any(|i| i == old_issuer));
    if runs_old {
        return Ok(());
    }
    Err(failed(
        0,
        format!(
            "{} gives kube-apiserver --service-account-issuer {:?}, but the plan's issuer.url \
             is {old_issuer:?}: set issuer.url to the issuer the cluster uses",
            path.display(),
            flags.issuers
        ),
    ))
}

/// The flags a person is asked to change with `flags: manual`, and to what.
///
/// keyrot cannot read them, so it assumes kube-apiserver runs with only the plan's issuer and
/// neither `--service-account-jwks-uri` nor `--api-audiences`, then applies the steps it asked
/// for before this one.
pub fn manual_change(
    original: &IssuerFlags,
    done: &[MigrationStep],
    step: &MigrationStep,
    number: u8,
) -> Result<ManualChange, StepError> {
    let mut current = original.clone();
    for earlier in done {
        current =
            issuer::next_flags(&current, earlier).map_err(|e| failed(number, e.to_string()))?;
    }
    ManualChange::new(&current, step).map_err(|e| failed(number, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(old: &str, new: &str) -> Plan {
        let text = format!(
            "cluster: c\nflavour: kubeadm\nissuer: {{ url: \"{old}\" }}\n\
             targets: [{{ name: web, localDirectory: /var/www/oidc }}]\n\
             issuerMigration: {{ newIssuer: \"{new}\", flags: manual }}\n"
        );
        crate::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), &text).unwrap()
    }

    #[test]
    fn each_migration_keeps_its_backups_apart() {
        let first = backup_dir(&plan("https://a.example", "https://b.example"));
        let again = backup_dir(&plan("https://a.example", "https://b.example"));
        let next = backup_dir(&plan("https://b.example", "https://c.example"));
        assert_eq!(first, again);
        assert_ne!(first, next);
        assert_eq!(first.parent(), next.parent());
        assert!(
            first.starts_with("/var/lib/keyrot/issuer-backups"),
            "{first:?}"
        );
    }
}
