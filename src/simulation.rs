//! An in-memory cluster that carries out the decision core's actions: the dry run's stand-in for
//! the world, and the test bed for the decision core's invariants.
//!
//! It models what keyrot depends on: key files, an apiserver that loads them only when restarted,
//! kube-controller-manager's key file, keyrot's private keys, the publication targets, and for
//! an issuer migration the apiserver's issuers and the documents published for the new one.

use std::path::{Path, PathBuf};

use crate::adapters::{
    AdapterError, ExpectedIssuer, KeyFiles, KeyFlagEffects, MigrationEffects, Publisher, Restarter,
};
use crate::decision::{
    Action, CanaryResult, CanaryView, KeyId, KeyModeView, MigrationView, Observed, Probed,
    TargetView,
};
use crate::documents::DiscoveryDocument;
use crate::issuer::MigrationStep;
use crate::issuer::key_flags::KeyMode;
use crate::keys::GenerateSpec;
use crate::migration::grace::{Grace, grace};
use crate::plan::{Issuer, Plan, Probe};

/// An action the simulated cluster cannot carry out, as the real adapters would refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulationError {
    #[error("no public key known for {kid}")]
    NoPublicKey { kid: String },
    #[error("no private key for {kid}")]
    NoPrivateKey { kid: String },
}

/// A cluster as keyrot would observe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub bundle: Vec<KeyId>,
    pub extra: Vec<KeyId>,
    pub signing: KeyId,
    pub controller_manager_signing: Option<KeyId>,
    pub private_keys: Vec<(KeyId, PathBuf)>,
    /// What the running apiserver loaded at its last restart: verification kids and signing kid.
    pub apiserver_bundle: Vec<String>,
    pub apiserver_signing: String,
    /// Each target: its name, the kids of its JWKS and its discovery document (`None`: none yet).
    pub targets: Vec<(String, Vec<String>, Option<String>)>,
    /// The plan's issuer, which the discovery documents name.
    pub issuer: Issuer,
    /// False while the apiserver is not answering (it crashed on the files it was restarted with).
    pub apiserver_up: bool,
    /// Whether the plan probes the apiserver (otherwise probes report NotConfigured).
    pub probed: bool,
    /// The relying party of each target with a canary.
    pub relying_parties: Vec<RelyingParty>,
    /// What each relying party said to the last canary, as an observation carries it.
    pub canaries: Vec<CanaryView>,
    /// The apiserver's `--service-account-issuer` values, the first one issuing.
    pub issuers: Vec<String>,
    /// The issuers before the migration's first flag edit, while its backup is kept.
    pub issuers_backup: Option<Vec<String>>,
    /// The issuer URL and kids of the documents published for a new issuer, read back from
    /// its public URL.
    pub new_issuer_documents: Option<(String, Vec<String>)>,
    /// The plan's migration grace, when the plan has a migration.
    pub migration_grace: Option<Grace>,
    /// Why the real flag file does not run the plan's issuer, as observed at the start.
    pub flags_problem: Option<String>,
    /// Where the flag file has kube-apiserver take its keys from, when the plan can switch it.
    pub key_mode: Option<KeyMode>,
    generated: u32,
}

/// A cloud that verifies the canary token against the JWKS it cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub target: String,
    /// The kids of the JWKS it cached; `None`: it fetches the target's JWKS for every token.
    pub cached: Option<Vec<String>>,
    /// Its refusal of every token (a trust that names another subject, say), if it refuses.
    pub refusal: Option<String>,
}

impl World {
    /// The world an observation describes, assuming the apiserver runs with the current files.
    pub fn from_observed(plan: &Plan, observed: &Observed) -> Option<World> {
        let bundle = observed.bundle.clone()?;
        let signing = observed.signing.clone()?;
        let extra = observed.extra.clone();
        let apiserver_bundle = bundle.iter().chain(&extra).map(|k| k.kid.clone()).collect();
        Some(World {
            apiserver_signing: signing.kid.clone(),
            apiserver_bundle,
            bundle,
            extra,
            controller_manager_signing: plan.controller_manager.as_ref().map(|_| signing.clone()),
            signing,
            private_keys: observed.private_keys.clone(),
            targets: observed
                .targets
                .iter()
                .map(|t| {
                    let kids = match &t.kids {
                        Probed::Seen(kids) => kids.clone(),
                        _ => Vec::new(),
                    };
                    let discovery = match &t.discovery {
                        Probed::Seen(Some(body)) => {
                            Some(String::from_utf8_lossy(body).into_owned())
                        }
                        _ => None,
                    };
                    (t.name.clone(), kids, discovery)
                })
                .collect(),
            issuer: plan.issuer.clone(),
            apiserver_up: true,
            probed: !matches!(plan.probe, Probe::None),
            relying_parties: plan
                .targets
                .iter()
                .filter(|t| t.canary.is_some())
                .map(|t| RelyingParty {
                    target: t.name.clone(),
                    cached: None,
                    refusal: None,
                })
                .collect(),
            canaries: observed.canaries.clone(),
            issuers: vec![plan.issuer.url.clone()],
            issuers_backup: None,
            new_issuer_documents: None,
            migration_grace: plan.issuer_migration.as_ref().map(|section| {
                let observed = observed
                    .migration
                    .as_ref()
                    .and_then(|m| m.grace.clone().ok());
                observed.unwrap_or_else(|| grace(section, None))
            }),
            flags_problem: observed
                .migration
                .as_ref()
                .and_then(|m| m.issuer_problem.clone()),
            key_mode: observed
                .key_mode
                .as_ref()
                .map(|v| v.flags.clone().unwrap_or(KeyMode::KeyFiles)),
            generated: 0,
        })
    }

    /// Exchanges a canary token signed by `kid` with every relying party, as the session's
    /// observer does when `decision::canary_due` says so; the next observation carries the results.
    pub fn exchange_canaries(&mut self, kid: &str) {
        self.canaries = self
            .relying_parties
            .iter()
            .map(|party| {
                let served = self
                    .targets
                    .iter()
                    .find(|(name, ..)| *name == party.target)
                    .map(|(_, kids, _)| kids.clone())
                    .unwrap_or_default();
                let known = party.cached.as_ref().unwrap_or(&served);
                let result = match &party.refusal {
                    Some(error) => CanaryResult::Refused {
                        kid: kid.to_string(),
                        error: error.clone(),
                    },
                    None if known.iter().any(|k| k == kid) => CanaryResult::Accepted {
                        kid: kid.to_string(),
                    },
                    None => CanaryResult::Refused {
                        kid: kid.to_string(),
                        error: format!("no key with kid {kid} in the JWKS it holds"),
                    },
                };
                CanaryView {
                    target: party.target.clone(),
                    result,
                }
            })
            .collect();
    }

    pub fn observe(&self) -> Observed {
        fn probe<T>(world: &World, value: T) -> Probed<T> {
            match (world.probed, world.apiserver_up) {
                (false, _) => Probed::NotConfigured,
                (true, false) => Probed::Failed("connection refused".into()),
                (true, true) => Probed::Seen(value),
            }
        }
        Observed {
            bundle: Some(self.bundle.clone()),
            extra: self.extra.clone(),
            signing: Some(self.signing.clone()),
            controller_manager_signing: self.controller_manager_signing.clone(),
            private_keys: self.private_keys.clone(),
            unusable_private_keys: Vec::new(),
            apiserver: probe(self, self.apiserver_bundle.clone()),
            token_kid: probe(self, self.apiserver_signing.clone()),
            targets: self
                .targets
                .iter()
                .map(|(name, kids, discovery)| TargetView {
                    name: name.clone(),
                    kids: Probed::Seen(kids.clone()),
                    discovery: Probed::Seen(discovery.clone().map(String::into_bytes)),
                })
                .collect(),
            canaries: self.canaries.clone(),
            key_mode: self.key_mode.map(|mode| KeyModeView {
                flags: Ok(mode),
                signer_serves: Ok(()),
            }),
            key_sets: None,
            migration: self.migration_grace.as_ref().map(|grace| MigrationView {
                issuer_problem: self.flags_problem.clone().or_else(|| self.issuer_problem()),
                grace: Ok(grace.clone()),
                original_backup: self.issuers_backup.is_some(),
            }),
        }
    }

    /// Why the apiserver's issuers are not the plan's issuer first (or, once the new issuer
    /// issues, right behind it), as `migration::check_current_issuer` judges a flag file.
    fn issuer_problem(&self) -> Option<String> {
        let old = &self.issuer.url;
        let runs_old = match self.issuers.first() {
            Some(first) if first == old => true,
            Some(_) => self.issuers.len() > 1 && self.issuers.contains(old),
            None => false,
        };
        (!runs_old).then(|| {
            format!(
                "the apiserver runs --service-account-issuer {:?}, but the plan's issuer.url \
                 is {old:?}",
                self.issuers
            )
        })
    }

    /// The apiserver's issuers after `step`.
    fn edit_issuers(&mut self, step: &MigrationStep) {
        self.issuers_backup
            .get_or_insert_with(|| self.issuers.clone());
        let issuers = &mut self.issuers;
        match step {
            MigrationStep::AcceptNewIssuer { new_issuer } => {
                if !issuers.contains(new_issuer) {
                    issuers.push(new_issuer.clone());
                }
            }
            MigrationStep::AddNewIssuerFirst { new_issuer, .. } => {
                issuers.retain(|i| i != new_issuer);
                issuers.insert(0, new_issuer.clone());
            }
            MigrationStep::DropOldIssuer { old_issuer } => issuers.retain(|i| i != old_issuer),
        }
    }

    /// Carries out an effect. State-only actions change nothing here.
    pub fn perform(&mut self, action: &Action) -> Result<(), SimulationError> {
        match action {
            Action::GenerateKey { path, spec } => {
                self.generated += 1;
                // The real kid is unknown until the key exists; a readable placeholder stands in.
                let key = KeyId {
                    kid: format!("<new key {}>", self.generated),
                    alg: spec.alg(),
                };
                self.private_keys.retain(|(_, p)| p != path);
                self.private_keys.push((key, path.clone()));
            }
            Action::Adopt {
                keys,
                copy_signing_key_to,
            } => {
                if let Some(active) = keys.iter().find(|k| k.kid == self.signing.kid) {
                    let key = KeyId {
                        kid: active.kid.clone(),
                        alg: active.alg,
                    };
                    self.private_keys.push((key, copy_signing_key_to.clone()));
                }
            }
            Action::WriteBundle { kids } => {
                self.bundle = kids
                    .iter()
                    .map(|kid| self.key(kid))
                    .collect::<Result<_, _>>()?;
            }
            Action::WriteSigningKey { kid } => {
                let key = self
                    .private_keys
                    .iter()
                    .find(|(k, _)| &k.kid == kid)
                    .map(|(k, _)| k.clone());
                let key = key.ok_or_else(|| SimulationError::NoPrivateKey { kid: kid.clone() })?;
                if self.controller_manager_signing.is_some() {
                    self.controller_manager_signing = Some(key.clone());
                }
                self.signing = key;
            }
            Action::Restart { .. } => {
                self.apiserver_bundle = self
                    .bundle
                    .iter()
                    .chain(&self.extra)
                    .map(|k| k.kid.clone())
                    .collect();
                self.apiserver_signing = self.signing.kid.clone();
                self.apiserver_up = true;
            }
            Action::Publish { kids } => {
                let algs = kids
                    .iter()
                    .map(|kid| self.key(kid).map(|k| k.alg))
                    .collect::<Result<Vec<_>, _>>()?;
                let issuer = &self.issuer;
                let discovery =
                    DiscoveryDocument::for_algs(&issuer.url, &issuer.jwks_uri, algs).render();
                for (_, served, served_discovery) in &mut self.targets {
                    *served = kids.clone();
                    *served_discovery = Some(discovery.clone());
                }
            }
            Action::DestroyPrivateKey { path, .. } => self.private_keys.retain(|(_, p)| p != path),
            Action::SwitchKeyFlags { to } => self.key_mode = Some(*to),
            _ => {}
        }
        Ok(())
    }

    fn key(&self, kid: &str) -> Result<KeyId, SimulationError> {
        self.bundle
            .iter()
            .chain(&self.extra)
            .chain(self.private_keys.iter().map(|(k, _)| k))
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or_else(|| SimulationError::NoPublicKey {
                kid: kid.to_string(),
            })
    }
}

/// A `World` shared by the in-memory adapters, so one simulated cluster sits behind all of them.
#[derive(Debug, Clone)]
pub struct SharedWorld(pub std::rc::Rc<std::cell::RefCell<World>>);

impl SharedWorld {
    pub fn new(world: World) -> Self {
        SharedWorld(std::rc::Rc::new(std::cell::RefCell::new(world)))
    }

    fn perform(&self, action: Action) -> Result<(), AdapterError> {
        self.0
            .borrow_mut()
            .perform(&action)
            .map_err(|e| AdapterError::transient(e.to_string()))
    }
}

impl KeyFiles for SharedWorld {
    fn generate(&mut self, path: &Path, spec: GenerateSpec) -> Result<(), AdapterError> {
        self.perform(Action::GenerateKey {
            path: path.to_path_buf(),
            spec,
        })
    }

    fn copy_signing_key(&mut self, to: &Path) -> Result<(), AdapterError> {
        self.perform(Action::Adopt {
            keys: Vec::new(),
            copy_signing_key_to: to.to_path_buf(),
        })
    }

    fn write_bundle(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        self.perform(Action::WriteBundle {
            kids: kids.to_vec(),
        })
    }

    fn write_signing_key(&mut self, kid: &str) -> Result<(), AdapterError> {
        self.perform(Action::WriteSigningKey {
            kid: kid.to_string(),
        })
    }

    fn destroy_private_key(&mut self, path: &Path) -> Result<(), AdapterError> {
        self.perform(Action::DestroyPrivateKey {
            kid: String::new(),
            path: path.to_path_buf(),
        })
    }
}

impl Restarter for SharedWorld {
    fn restart(&mut self, _tag: &str, controller_manager: bool) -> Result<(), AdapterError> {
        self.perform(Action::Restart {
            bundle: Vec::new(),
            signing: None,
            controller_manager,
        })
    }
}

impl Publisher for SharedWorld {
    fn publish(&mut self, kids: &[String]) -> Result<(), AdapterError> {
        self.perform(Action::Publish {
            kids: kids.to_vec(),
        })
    }
}

impl MigrationEffects for SharedWorld {
    fn publish(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let documents = (for_new.issuer.url.clone(), kids.to_vec());
        self.0.borrow_mut().new_issuer_documents = Some(documents);
        say(format!("step 1: published for {}", for_new.issuer.url));
        Ok(())
    }

    fn preview_publish(&mut self, for_new: &Plan, kids: &[String]) -> Result<String, AdapterError> {
        Ok(format!(
            "publish for {}: [{}]\n",
            for_new.issuer.url,
            kids.join(", ")
        ))
    }

    fn check_documents(
        &mut self,
        for_new: &Plan,
        kids: &[String],
        _public_ca_file: Option<&Path>,
    ) -> Result<(), AdapterError> {
        let expected = (for_new.issuer.url.clone(), kids.to_vec());
        match &self.0.borrow().new_issuer_documents {
            Some(served) if *served == expected => Ok(()),
            served => Err(AdapterError::transient(format!(
                "{} serves {served:?}",
                for_new.issuer.url
            ))),
        }
    }

    fn change_flags(
        &mut self,
        step: &MigrationStep,
        _backups: &Path,
        _number: u8,
        _say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        self.0.borrow_mut().edit_issuers(step);
        Ok(())
    }

    fn restart(&mut self, _tag: &str) -> Result<(), AdapterError> {
        Ok(())
    }

    fn restore_flags(
        &mut self,
        _path: &Path,
        _steps: &[MigrationStep],
        _backups: &Path,
        _say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let mut world = self.0.borrow_mut();
        if let Some(original) = world.issuers_backup.take() {
            world.issuers = original;
        }
        Ok(())
    }

    fn check_cluster(&mut self, expected: ExpectedIssuer) -> Result<(), AdapterError> {
        let world = self.0.borrow();
        match world.issuers.first() {
            Some(first) if first == expected.issuer => Ok(()),
            first => Err(AdapterError::transient(format!(
                "the apiserver issues as {first:?}, not {}",
                expected.issuer
            ))),
        }
    }
}

impl KeyFlagEffects for SharedWorld {
    fn switch_key_flags(
        &mut self,
        to: KeyMode,
        _say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        self.0.borrow_mut().key_mode = Some(to);
        Ok(())
    }
}
