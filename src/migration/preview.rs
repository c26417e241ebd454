//! What each step of `keyrot migrate-issuer --dry-run` and `keyrot plan` would write: the
//! documents, what each target would get, the flag changes as diffs. Writes nothing.

use super::record::ManualStep;
use super::{APPROVE, Migration, StepError, edit, failed, grace};
use crate::adapters::MigrationEffects;
use crate::decision::Action;
use crate::decision::migration::{FlagChange, MigrationAction};
use crate::issuer::{FlagEdit, FlagFile, MigrationStep, compute_edit};
use crate::plan::{FlagSource, Plan};
use crate::targets::public;

/// What each step of the migration would write, for the dry run's timeline (the steps and their
/// order are the decision core's, simulated by `dry_run::simulate_request`).
pub struct Details<'a> {
    migration: Migration<'a>,
    effects: &'a mut dyn MigrationEffects,
    /// The kids the cluster verifies with: what the documents for the new issuer list.
    kids: Vec<String>,
}

impl<'a> Details<'a> {
    pub fn new(
        plan: &'a Plan,
        effects: &'a mut dyn MigrationEffects,
        kids: Vec<String>,
    ) -> Result<Self, StepError> {
        Ok(Details {
            migration: Migration::new(plan)?,
            effects,
            kids,
        })
    }

    /// What `action` would write, if anything; or why it cannot be shown.
    pub fn of(&mut self, action: &Action) -> Result<Option<String>, StepError> {
        let migration = &self.migration;
        let text = match action {
            Action::Migrate(MigrationAction::Publish) => self
                .effects
                .preview_publish(&migration.for_new, &self.kids)
                .map_err(|e| failed(1, e.message))?,
            Action::Migrate(MigrationAction::CheckDocuments) => format!(
                "read {} anonymously and compare\n",
                public::join(
                    &migration.new_issuer().url,
                    crate::documents::DISCOVERY_PATH
                )
            ),
            Action::Migrate(MigrationAction::ChangeFlags { change, .. }) => {
                self.flag_change(*change)?
            }
            Action::Migrate(MigrationAction::AskPerson(step)) => self.manual_change(*step)?,
            Action::RestoreFlags { .. } | Action::AskPersonToRestore => {
                super::preview_rollback(migration.plan)?
            }
            _ => return Ok(None),
        };
        Ok(Some(text))
    }

    /// The diff of `change` to the flag file as it is now (the editors leave a change already
    /// made as it is), with kubeadm's hint.
    fn flag_change(&self, change: FlagChange) -> Result<String, StepError> {
        let migration = &self.migration;
        let FlagSource::File { path, file } = &migration.section.flags else {
            return Ok(String::new());
        };
        let number = if change == FlagChange::Drop { 5 } else { 3 };
        let mut steps = migration.steps_to_add();
        match change {
            FlagChange::Accept => steps.truncate(1),
            FlagChange::Add => {}
            FlagChange::Drop => steps.push(migration.drop_step()),
        }
        let mut edit =
            compute_edit(file, path, &steps[0]).map_err(|e| failed(number, e.to_string()))?;
        for step in &steps[1..] {
            edit = then(file, &edit, step, number)?;
        }
        let mut out = String::new();
        if change == FlagChange::Drop {
            out.push_str(&format!(
                "step 5: after {}, drop the old issuer\n",
                grace_text(migration)?
            ));
        }
        out.push_str(&edit.diff());
        if *file == FlagFile::KubeadmManifest {
            out.push_str(&crate::issuer::kubeadm::cluster_configuration_hint(
                &edit.flags_after,
            ));
        }
        if change == FlagChange::Accept {
            out.push_str(
                "step 3 then waits for `keyrot approve` once every apiserver accepts the new \
                 issuer (acceptFirst)\n",
            );
        }
        Ok(out)
    }

    /// The change a person is asked to make (`flags: manual`).
    fn manual_change(&self, step: ManualStep) -> Result<String, StepError> {
        let migration = &self.migration;
        let assumed = migration.assumed_flags();
        let mut steps = migration.steps_to_add();
        let (this, number) = match step {
            ManualStep::Drop => (migration.drop_step(), 5),
            ManualStep::Accept => (steps[0].clone(), 3),
            ManualStep::Add => (steps.last().expect("one step at least").clone(), 3),
            ManualStep::Rollback => return super::preview_rollback(migration.plan),
        };
        steps.retain(|s| s.tag() != this.tag());
        if step == ManualStep::Accept {
            steps.clear();
        }
        let change = edit::manual_change(&assumed, &steps, &this, number)?;
        let mut out = String::new();
        if step == ManualStep::Drop {
            out.push_str(&format!(
                "step 5: after {}, drop the old issuer\n",
                grace_text(migration)?
            ));
        }
        out.push_str(&change.render_then(APPROVE));
        Ok(out)
    }
}

/// The grace period and what decided it, for the preview.
fn grace_text(migration: &Migration) -> Result<String, StepError> {
    let grace = grace::for_section(migration.section).map_err(|e| failed(5, e.to_string()))?;
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
