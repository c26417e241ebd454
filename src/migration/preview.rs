//! What `keyrot migrate-issuer --dry-run` and `keyrot plan` show: the documents, what each
//! target would get, the flag changes as diffs. Writes nothing.

use super::{APPROVE, Migration, StepError, edit, failed, grace, record};
use crate::adapters::MigrationEffects;
use crate::issuer::{FlagEdit, FlagFile, MigrationStep, compute_edit};
use crate::plan::{FlagSource, Plan};
use crate::targets::public;

/// What `--dry-run` prints: the documents, what each target would get, the flag changes.
pub fn dry_run(plan: &Plan, effects: &mut dyn MigrationEffects) -> Result<String, StepError> {
    let migration = Migration::new(plan)?;
    let recorded = super::record::read(&plan.state_dir)
        .map_err(|e| failed(0, e.to_string()))?
        .unwrap_or_else(|| {
            record::MigrationRecord::new(migration.old_issuer(), &migration.new_issuer().url)
        });
    let paths: Vec<_> = std::iter::once(&plan.apiserver.verification_bundle)
        .chain(&plan.apiserver.extra_verification_files)
        .cloned()
        .collect();
    let kids: Vec<String> = crate::keys::load_verification_keys(&paths)
        .map_err(|e| failed(0, e.to_string()))?
        .keys
        .iter()
        .map(|k| k.kid().to_string())
        .collect();
    if recorded.old_issuer_dropped_at.is_some() {
        return Ok(format!(
            "the migration is done ({}): set issuer.url to {} and remove issuerMigration\n",
            recorded.summary(),
            recorded.new_issuer
        ));
    }
    let mut out = String::new();
    if recorded.published_at.is_some() {
        out.push_str(&format!(
            "recorded so far: {}; the steps below that are done are skipped\n",
            recorded.summary()
        ));
    }
    let step_1 = effects
        .preview_publish(&migration.for_new, &kids)
        .map_err(|e| failed(1, e.message))?;
    out.push_str(&step_1);
    out.push_str(&format!(
        "step 2: read {} anonymously and compare\n",
        public::join(
            &migration.new_issuer().url,
            crate::documents::DISCOVERY_PATH
        )
    ));
    out.push_str("step 3: change kube-apiserver's flags, then restart it\n");
    match &migration.section.flags {
        FlagSource::File { path, file } => {
            edit::check_current_issuer(
                path,
                file,
                migration.old_issuer(),
                &migration.new_issuer().url,
            )?;
            let steps = migration.steps_to_add();
            let first =
                compute_edit(file, path, &steps[0]).map_err(|e| failed(3, e.to_string()))?;
            let mut edits = vec![first];
            for step in &steps[1..] {
                let next = then(file, edits.last().expect("one edit at least"), step, 3)?;
                edits.push(next);
            }
            for edit in &edits {
                out.push_str(&edit.diff());
                if *file == FlagFile::KubeadmManifest {
                    out.push_str(&crate::issuer::kubeadm::cluster_configuration_hint(
                        &edit.flags_after,
                    ));
                }
                if matches!(edit.step, MigrationStep::AcceptNewIssuer { .. }) {
                    out.push_str(
                        "step 3 then waits for `keyrot approve` once every apiserver accepts the \
                         new issuer (acceptFirst)\n",
                    );
                }
            }
            out.push_str("step 4: check the apiserver's discovery document and a new token\n");
            if migration.section.drop_old_issuer {
                let last = edits.last().expect("one edit at least");
                let drop_edit = then(file, last, &migration.drop_step(), 5)?;
                out.push_str(&format!(
                    "step 5: after {}, drop the old issuer\n{}",
                    grace_text(&migration)?,
                    drop_edit.diff()
                ));
                if *file == FlagFile::KubeadmManifest {
                    out.push_str(&crate::issuer::kubeadm::cluster_configuration_hint(
                        &drop_edit.flags_after,
                    ));
                }
            }
        }
        FlagSource::Manual => {
            let assumed = migration.assumed_flags();
            let steps = migration.steps_to_add();
            for (i, step) in steps.iter().enumerate() {
                let change = edit::manual_change(&assumed, &steps[..i], step, 3)?;
                out.push_str(&change.render_then(APPROVE));
            }
            out.push_str("step 4: check the apiserver's discovery document and a new token\n");
            if migration.section.drop_old_issuer {
                let change = edit::manual_change(&assumed, &steps, &migration.drop_step(), 5)?;
                out.push_str(&format!(
                    "step 5: after {}, drop the old issuer\n{}",
                    grace_text(&migration)?,
                    change.render_then(APPROVE)
                ));
            }
        }
    }
    if !migration.section.drop_old_issuer {
        out.push_str("step 5: none: the old issuer stays accepted (dropOldIssuer: false)\n");
    }
    Ok(out)
}

/// The grace period and what decided it, for the preview.
fn grace_text(migration: &Migration) -> Result<String, StepError> {
    let grace = grace::for_section(migration.section).map_err(|e| failed(5, e))?;
    Ok(format!(
        "{} ({})",
        crate::plan::format_duration(grace.period),
        grace.why
    ))
}

/// The edit `step` makes to the file as `before` leaves it.
fn then(
    file: &FlagFile,
    before: &FlagEdit,
    step: &MigrationStep,
    number: u8,
) -> Result<FlagEdit, StepError> {
    let next = file
        .edit_text(&before.after, step)
        .map_err(|e| failed(number, format!("{}: {e}", before.path.display())))?;
    Ok(FlagEdit {
        path: before.path.clone(),
        step: step.clone(),
        flags_before: before.flags_after.clone(),
        flags_after: next.flags_after,
        before: before.after.clone(),
        after: next.text,
    })
}
