//! One node's executor: read the ring and the Lease, observe this node's files and apiserver
//! (and, while leading, the targets), let the core decide, and carry out its one step: a Lease
//! write, a ring write by compare-and-swap, a change of this node's files or apiserver, or (the
//! leader) a publication. A conflict or a lost Lease only means: read again, decide again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::api::{ApiError, ClusterApi, Versioned};
use super::ring::{Ring, RingError};
use crate::adapters::key_files::{KeyFilesOnDisk, edit_bundle};
use crate::adapters::{AdapterError, FailureKind, KeyFiles, Prober, Restarter};
use crate::decision::ha::{
    self, ChangeError, Expected, HaDecision, HaObserved, HaStep, LocalView, NodeEffect, RingChange,
};
use crate::decision::lease::{self, LeaseSight, LeaseStep, LeaseTimings};
use crate::decision::{Blocked, Gate};
use crate::keys::VerificationKey;
use crate::keys::reader::parse_file;
use crate::observe::ObserveError;
use crate::plan::{Ha, Members, Plan};

/// How many times a restart is recorded on a fresh read of the ring before giving up.
const RECORD_ATTEMPTS: u32 = 5;

/// Why a step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("ConfigMap {name}: {error}")]
    Ring { name: String, error: RingError },
    #[error("cannot observe this node: {0}")]
    Observe(#[from] ObserveError),
    #[error("{what} failed: {error}")]
    Effect {
        what: &'static str,
        error: AdapterError,
    },
}

impl NodeError {
    /// Whether retrying can help before a person acts.
    pub fn kind(&self) -> FailureKind {
        match self {
            NodeError::Api(ApiError::Refused(_)) => FailureKind::Permanent,
            NodeError::Api(_) => FailureKind::Transient,
            NodeError::Ring { .. } | NodeError::Observe(_) => FailureKind::Permanent,
            NodeError::Effect { error, .. } => error.kind,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stepped {
    /// Something was done (or a race lost): step again at once. The line says what.
    Acted(String),
    /// Nothing to do before `wake_at`, a change of the ring, or (with `poll`) a short while.
    Waiting {
        wake_at: Option<DateTime<Utc>>,
        blocked: Vec<Blocked>,
        /// The ring's resourceVersion as read: watch for changes after it.
        ring_version: Option<String>,
        /// Look again after this long even if nothing changes (the Lease is held, or this
        /// node's apiserver is restarting).
        poll: Option<Duration>,
    },
}

/// The executor of one node; it keeps what it knows of the Lease between steps.
pub struct Node<'a> {
    plan: &'a Plan,
    ha: &'a Ha,
    api: &'a dyn ClusterApi,
    prober: &'a mut dyn Prober,
    restarter: &'a mut dyn Restarter,
    sight: LeaseSight,
    started: Instant,
    /// The last publication and when: the same one again before the backoff is a wait.
    last_publish: Option<(Vec<String>, Instant)>,
}

impl<'a> Node<'a> {
    pub fn new(
        plan: &'a Plan,
        ha: &'a Ha,
        api: &'a dyn ClusterApi,
        prober: &'a mut dyn Prober,
        restarter: &'a mut dyn Restarter,
    ) -> Self {
        Node {
            plan,
            ha,
            api,
            prober,
            restarter,
            sight: LeaseSight::default(),
            started: Instant::now(),
            last_publish: None,
        }
    }

    pub fn timings(ha: &Ha) -> LeaseTimings {
        LeaseTimings {
            lease_duration: ha.lease_duration,
            renew_deadline: ha.renew_deadline,
            retry_period: ha.retry_period,
        }
    }

    fn monotonic(&self) -> Duration {
        self.started.elapsed()
    }

    /// The fencing epoch while this node leads, judged now.
    fn leading(&self) -> Option<i32> {
        lease::leading(
            &self.ha.node_name,
            &self.sight,
            Self::timings(self.ha),
            self.monotonic(),
        )
    }

    /// Whether this node holds the Lease as it last read it.
    pub fn holds_lease(&self) -> bool {
        self.sight
            .record
            .as_ref()
            .is_some_and(|r| r.holder.as_deref() == Some(self.ha.node_name.as_str()))
    }

    /// Releases the Lease if this node holds it (at shutdown), so another node can lead at once.
    pub fn release_lease(&mut self) -> Result<(), ApiError> {
        if let Some(read) = self.api.read_lease()? {
            self.sight.saw(
                Some(read.value),
                Some(read.resource_version),
                self.monotonic(),
            );
        }
        if !self.holds_lease() {
            return Ok(());
        }
        let step = lease::next_step(
            &self.ha.node_name,
            false,
            0,
            &self.sight,
            Self::timings(self.ha),
            self.monotonic(),
            Utc::now(),
        );
        if let LeaseStep::Replace(record) = step {
            let version = self.sight.resource_version.clone().unwrap_or_default();
            self.api.replace_lease(&record, &version)?;
        }
        Ok(())
    }

    /// Reads, decides, takes one step.
    pub fn step(&mut self) -> Result<Stepped, NodeError> {
        let ring = self.read_ring()?;
        let lease = self.api.read_lease()?;
        let (record, version) = match lease {
            Some(Versioned {
                value,
                resource_version,
            }) => (Some(value), Some(resource_version)),
            None => (None, None),
        };
        self.sight.saw(record, version, self.monotonic());
        let leading = self.leading();
        let local = observe_local(self.plan, self.prober, leading.is_some())?;
        let expected = self.expected();
        let now = Utc::now();
        let observed = HaObserved {
            me: &self.ha.node_name,
            address: self.ha.address.as_deref(),
            ring: ring.as_ref().map(|(r, _)| r),
            expected: &expected,
            local: &local,
            leading,
        };
        let decision = ha::decide(self.plan, &observed, now);
        let floor = ring.as_ref().map_or(0, |(r, _)| r.leader_epoch);
        if let Some(line) = self.lease_step(decision.leader_work, floor)? {
            return Ok(Stepped::Acted(line));
        }
        let version = ring.as_ref().map(|(_, v)| v.clone());
        let Some(step) = decision.step.clone() else {
            let in_turn = ring
                .as_ref()
                .and_then(|(r, _)| r.turn.as_ref())
                .is_some_and(|t| t.node == self.ha.node_name);
            return Ok(self.waiting(decision, version, in_turn));
        };
        match step {
            HaStep::Ring(change) => self.write_ring(ring.as_ref(), change, leading),
            HaStep::Node(effect) => self.act(ring.as_ref(), effect),
            HaStep::Publish { kids } => self.publish(ring.as_ref(), kids),
        }
    }

    fn read_ring(&self) -> Result<Option<(Ring, String)>, NodeError> {
        let Some(read) = self.api.read_ring()? else {
            return Ok(None);
        };
        let ring = Ring::parse(&read.value).map_err(|error| NodeError::Ring {
            name: format!("{}/{}", self.ha.namespace, self.ha.ring),
            error,
        })?;
        Ok(Some((ring, read.resource_version)))
    }

    fn expected(&self) -> Expected {
        match &self.ha.members {
            Members::Named(names) => Expected::Named(names.clone()),
            Members::EndpointSlice => {
                Expected::Addresses(self.api.apiserver_addresses().map_err(|e| e.to_string()))
            }
        }
    }

    /// Takes, renews or releases the Lease when due; `Some` says what was done.
    fn lease_step(&mut self, want: bool, floor: i32) -> Result<Option<String>, NodeError> {
        let timings = Self::timings(self.ha);
        let now = self.monotonic();
        let me = self.ha.node_name.clone();
        let (record, create) =
            match lease::next_step(&me, want, floor, &self.sight, timings, now, Utc::now()) {
                LeaseStep::Wait { .. } => return Ok(None),
                LeaseStep::Create(record) => (record, true),
                LeaseStep::Replace(record) => (record, false),
            };
        let written = match (create, &self.sight.resource_version) {
            (true, _) => self.api.create_lease(&record),
            (false, Some(version)) => self.api.replace_lease(&record, version),
            (false, None) => return Ok(Some("read the Lease again".into())),
        };
        let was = self.holds_lease();
        match written {
            Ok(version) => {
                let holds = record.holder.is_some();
                self.sight.wrote(record, version, self.monotonic());
                Ok(Some(match (was, holds) {
                    (false, true) => "took the Lease: this node leads the rotation".into(),
                    // A renewal is not news: the step goes on with the decision.
                    (true, true) => return Ok(None),
                    (_, false) => "released the Lease: no leader work left".into(),
                }))
            }
            Err(ApiError::Conflict(_)) => {
                self.sight.lost();
                Ok(Some("the Lease changed meanwhile: reading it again".into()))
            }
            Err(e) => {
                self.sight.lost();
                Err(e.into())
            }
        }
    }

    /// `in_turn`: this node holds the restart turn, so it waits for its own apiserver to come
    /// back and looks every second (the other nodes wait for it).
    fn waiting(
        &self,
        decision: HaDecision,
        ring_version: Option<String>,
        in_turn: bool,
    ) -> Stepped {
        let restarting = in_turn
            && decision
                .blocked_by
                .iter()
                .any(|b| b.gate == Gate::ApiserverServesBundle);
        let poll = match (restarting, decision.leader_work || self.holds_lease()) {
            (true, _) => Some(Duration::from_secs(1)),
            (false, true) => Some(self.ha.retry_period),
            (false, false) => None,
        };
        Stepped::Waiting {
            wake_at: decision.wake_at,
            blocked: decision.blocked_by,
            ring_version,
            poll,
        }
    }

    fn write_ring(
        &mut self,
        ring: Option<&(Ring, String)>,
        change: RingChange,
        leading: Option<i32>,
    ) -> Result<Stepped, NodeError> {
        // The leader's writes are fenced twice: by its epoch in the ring, and by its own renew
        // deadline, judged again just before the write.
        let epoch = match change.is_leaders() {
            true => match self.leading() {
                Some(epoch) if Some(epoch) == leading => Some(epoch),
                _ => return Ok(Stepped::Acted("no longer leading: deciding again".into())),
            },
            false => None,
        };
        let name = change.name();
        match write_change(self.api, ring, &change, &self.ha.node_name, epoch) {
            Ok(()) => Ok(Stepped::Acted(describe_change(&change))),
            Err(WriteError::Api(ApiError::Conflict(_))) => Ok(Stepped::Acted(format!(
                "{name}: the ring changed meanwhile: reading it again"
            ))),
            Err(WriteError::Api(e)) => Err(e.into()),
            Err(WriteError::Refused(e)) => {
                Ok(Stepped::Acted(format!("{name}: {e}: deciding again")))
            }
        }
    }

    fn act(
        &mut self,
        ring: Option<&(Ring, String)>,
        effect: NodeEffect,
    ) -> Result<Stepped, NodeError> {
        let fail =
            |what: &'static str| move |error: AdapterError| NodeError::Effect { what, error };
        let mut files = KeyFilesOnDisk::new(self.plan);
        let line = match &effect {
            NodeEffect::GenerateKey { path, spec } => {
                files.generate(path, *spec).map_err(fail("generate-key"))?;
                format!("generated this node's new key at {}", path.display())
            }
            NodeEffect::WriteBundle { kids } => {
                let ring = ring_to_take_keys_from(ring).map_err(fail("write-bundle"))?;
                write_bundle(self.plan, ring, kids).map_err(fail("write-bundle"))?;
                format!(
                    "{} holds [{}]",
                    self.plan.apiserver.verification_bundle.display(),
                    kids.join(", ")
                )
            }
            NodeEffect::WriteSigningKey { kid } => {
                files
                    .write_signing_key(kid)
                    .map_err(fail("write-signing-key"))?;
                format!(
                    "{} holds this node's key {kid}",
                    self.plan.apiserver.signing_key_file.display()
                )
            }
            NodeEffect::Restart => {
                let tag = format!("keyrot-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
                let cm = self.plan.controller_manager.is_some();
                self.restarter.restart(&tag, cm).map_err(fail("restart"))?;
                // Recorded at once, on a fresh read after each conflict (other nodes write
                // their acknowledgements meanwhile); if it is lost all the same, the node
                // restarts once more, which is harmless.
                let record = change_with_retries(
                    self.api,
                    &RingChange::RecordRestart,
                    &self.ha.node_name,
                    RECORD_ATTEMPTS,
                );
                if let Err(e) = record {
                    tracing::warn!("the restart was not recorded in the ring: {e}");
                }
                "restarted this node's apiserver".to_string()
            }
            NodeEffect::DestroyPrivateKey { kid, path } => {
                files
                    .destroy_private_key(path)
                    .map_err(fail("destroy-private-key"))?;
                format!("destroyed this node's retired private key {kid}")
            }
        };
        Ok(Stepped::Acted(line))
    }

    fn publish(
        &mut self,
        ring: Option<&(Ring, String)>,
        kids: Vec<String>,
    ) -> Result<Stepped, NodeError> {
        if self.leading().is_none() {
            return Ok(Stepped::Acted("no longer leading: deciding again".into()));
        }
        let backoff = self.plan.timings.retry_backoff.to_std().unwrap_or_default();
        if let Some((last, at)) = &self.last_publish
            && *last == kids
            && at.elapsed() < backoff
        {
            return Ok(Stepped::Waiting {
                wake_at: None,
                blocked: vec![Blocked {
                    gate: Gate::TargetsServeKeys,
                    reason: format!(
                        "the targets were published [{}] but do not serve it yet",
                        kids.join(", ")
                    ),
                }],
                ring_version: ring.map(|(_, v)| v.clone()),
                poll: Some(backoff - at.elapsed()),
            });
        }
        let fail = |error: AdapterError| NodeError::Effect {
            what: "publish",
            error,
        };
        let ring = ring_to_take_keys_from(ring).map_err(fail)?;
        let keys = ring_keys(ring, &kids).map_err(fail)?;
        let documents =
            crate::adapters::publish::documents_for_keys(self.plan, &keys).map_err(fail)?;
        crate::adapters::publish::publish_documents(self.plan, &documents).map_err(fail)?;
        self.last_publish = Some((kids.clone(), Instant::now()));
        Ok(Stepped::Acted(format!(
            "published [{}] to every target",
            kids.join(", ")
        )))
    }
}

/// A ring write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The ring as read does not allow the change.
    #[error(transparent)]
    Refused(#[from] ChangeError),
}

/// `change` by `me` applied to the ring as read, stored by compare-and-swap.
pub fn write_change(
    api: &dyn ClusterApi,
    ring: Option<&(Ring, String)>,
    change: &RingChange,
    me: &str,
    epoch: Option<i32>,
) -> Result<(), WriteError> {
    let changed = ha::apply(ring.map(|(r, _)| r), change, me, epoch, Utc::now())?;
    let text = changed.render();
    match ring {
        None => api.create_ring(&text)?,
        Some((_, version)) => api.replace_ring(&text, version)?,
    };
    Ok(())
}

/// Reads the ring and applies `change` by `me`, again after each conflict (a person's request
/// among daemons' writes), up to `attempts` times.
pub fn change_with_retries(
    api: &dyn ClusterApi,
    change: &RingChange,
    me: &str,
    attempts: u32,
) -> Result<Ring, WriteError> {
    let mut last = None;
    for _ in 0..attempts.max(1) {
        let read = api.read_ring()?;
        let ring = match read {
            Some(read) => Some((
                Ring::parse(&read.value).map_err(|e| ChangeError(e.to_string()))?,
                read.resource_version,
            )),
            None => None,
        };
        match write_change(api, ring.as_ref(), change, me, None) {
            Ok(()) => {
                let now = Utc::now();
                return Ok(ha::apply(
                    ring.as_ref().map(|(r, _)| r),
                    change,
                    me,
                    None,
                    now,
                )?);
            }
            Err(WriteError::Api(ApiError::Conflict(e))) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(WriteError::Api(ApiError::Conflict(
        last.unwrap_or_default(),
    )))
}

/// One line for the log: what a ring change recorded.
pub fn describe_change(change: &RingChange) -> String {
    match change {
        RingChange::Create(_) => "created the ring and joined it".into(),
        RingChange::Join(_) => "joined the ring".into(),
        RingChange::Ack { serves, signs } => format!(
            "acknowledged: this node's apiserver serves [{}] and signs with {}",
            serves.join(", "),
            signs.as_deref().unwrap_or("(no token seen)")
        ),
        RingChange::AddNextKey(key) => format!("added this node's new key {} to the ring", key.kid),
        RingChange::TakeTurn => "took the restart turn".into(),
        RingChange::RecordRestart => "recorded the restart".into(),
        RingChange::ReleaseTurn { .. } => {
            "released the restart turn: this node's apiserver serves and signs as the ring wants"
                .into()
        }
        RingChange::StartRotation { id, cause } => format!("started rotation {id} ({cause})"),
        RingChange::EnterPhase(phase) => format!("the rotation enters {phase}"),
        RingChange::RecordPublished { kids } => {
            format!("every target serves [{}]", kids.join(", "))
        }
        RingChange::CompletePromotion => {
            "every node signs with its new key: the old keys retire".into()
        }
        RingChange::OpenRetire => {
            "the retiring keys' grace is over: they leave every bundle".into()
        }
        RingChange::CompleteRotation => "the rotation is complete".into(),
        RingChange::Request { by } => format!("rotation requested by {by}"),
        RingChange::RemoveNode { node, by } => format!("node {node} removed by {by}"),
    }
}

/// This node's files and apiserver, and the targets when `read_targets`.
pub fn observe_local(
    plan: &Plan,
    prober: &mut dyn Prober,
    read_targets: bool,
) -> Result<LocalView, ObserveError> {
    let files = crate::observe::observe_offline(plan)?;
    Ok(LocalView {
        public_keys: local_public_keys(plan)?,
        bundle: files.bundle,
        signing: files.signing,
        private_keys: files.private_keys,
        apiserver: prober.apiserver_kids(),
        token_kid: prober.token_kid(),
        targets: match read_targets {
            true => plan
                .targets
                .iter()
                .map(|t| crate::targets::read_served_view(&plan.issuer, t))
                .collect(),
            false => Vec::new(),
        },
    })
}

/// The SPKI PEM of every key this node's files and keyrot's private keys hold, by kid.
fn local_public_keys(plan: &Plan) -> Result<BTreeMap<String, String>, ObserveError> {
    let mut keys = BTreeMap::new();
    let mut add = |key: &VerificationKey| {
        keys.insert(key.kid().to_string(), key.to_spki_pem());
    };
    let bundle = &plan.apiserver.verification_bundle;
    if bundle.exists() {
        for key in crate::keys::reader::read_file(bundle)?.keys() {
            add(key);
        }
    }
    let signing = &plan.apiserver.signing_key_file;
    if signing.exists() {
        add(crate::keys::SigningKey::from_pem_file(signing)?.public());
    }
    let dir = &plan.private_key_dir;
    let listing =
        crate::keys::private_dir::list(dir).map_err(|error| ObserveError::PrivateKeyDir {
            path: dir.to_path_buf(),
            error,
        })?;
    for file in &listing.keys {
        add(file.key.public());
    }
    Ok(keys)
}

/// The ring a bundle or a publication takes its public keys from (the core asks for neither
/// without one).
fn ring_to_take_keys_from(ring: Option<&(Ring, String)>) -> Result<&Ring, AdapterError> {
    ring.map(|(ring, _)| ring)
        .ok_or_else(|| AdapterError::transient("there is no ring to take the public keys from"))
}

/// The ring's public keys `kids`, parsed.
fn ring_keys(ring: &Ring, kids: &[String]) -> Result<Vec<VerificationKey>, AdapterError> {
    kids.iter()
        .map(|kid| {
            let listed = ring
                .key(kid)
                .ok_or_else(|| AdapterError::permanent(format!("the ring lists no key {kid}")))?;
            let parsed = parse_file(Path::new("ring.json"), listed.public_key.as_bytes());
            parsed
                .keys()
                .find(|k| k.kid() == kid)
                .cloned()
                .ok_or_else(|| {
                    AdapterError::permanent(format!(
                        "the ring's public key for {kid} does not parse"
                    ))
                })
        })
        .collect()
}

/// The bundle made to hold exactly `kids` (ring order): blocks it keeps stay byte for byte,
/// keys it lacks come from the ring.
fn write_bundle(plan: &Plan, ring: &Ring, kids: &[String]) -> Result<(), AdapterError> {
    let path = &plan.apiserver.verification_bundle;
    let current = crate::fs_read::read(path)
        .map_err(|e| AdapterError::io(&e, format!("{}: {e}", path.display())))?;
    let present: Vec<String> = parse_file(path, &current)
        .keys()
        .map(|k| k.kid().to_string())
        .collect();
    let missing: Vec<String> = kids
        .iter()
        .filter(|k| !present.contains(k))
        .cloned()
        .collect();
    let added = ring_keys(ring, &missing)?;
    let edited = edit_bundle(path, &current, kids, &added)?;
    crate::atomic_file::replace_keeping_metadata(path, &edited, 0o644).map_err(AdapterError::write)
}
