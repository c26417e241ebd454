//! Shared test fixtures: a plan built in code and a harness that runs the decision core against
//! the in-memory cluster, the way the executor runs it against a real one.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod engine;

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use keyrot::decision::{Decision, KeyId, Observed, Probed, TargetView, action_name, apply, decide};
use keyrot::keys::{Alg, GenerateSpec};
use keyrot::plan::{
    Apiserver, Canary, Flavour, Issuer, Plan, Probe, RelyingParty, Restart, Target, TargetKind,
    Timings,
};
use keyrot::simulation::World;
use keyrot::state::{State, Trigger, TriggerKind};

pub const OLD: &str = "old-kid";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// A plan like a production one: one target, no schedule, no approvals.
pub fn plan() -> Plan {
    Plan {
        path: PathBuf::from("/etc/keyrot/plan.yaml"),
        cluster: "test".into(),
        flavour: Flavour::Custom,
        test_plan: false,
        key: GenerateSpec::Rsa { bits: 2048 },
        private_key_dir: PathBuf::from("/var/lib/keyrot/keys"),
        state_dir: PathBuf::from("/var/lib/keyrot"),
        apiserver: Apiserver {
            verification_bundle: PathBuf::from("/etc/kubernetes/pki/sa.pub"),
            extra_verification_files: Vec::new(),
            signing_key_file: PathBuf::from("/etc/kubernetes/pki/sa.key"),
            restart: Restart::None,
        },
        controller_manager: None,
        probe: Probe::None,
        issuer: Issuer {
            url: "https://issuer.example.com".into(),
            jwks_uri: "https://issuer.example.com/openid/v1/jwks".into(),
        },
        targets: vec![Target {
            name: "web".into(),
            kind: TargetKind::LocalDirectory {
                path: PathBuf::from("/srv/oidc"),
            },
            cache_max_age: TimeDelta::minutes(5),
            canary: None,
        }],
        schedule: None,
        timings: Timings {
            publish_settle: TimeDelta::minutes(10),
            retire_after: TimeDelta::hours(24),
            gate_timeout: TimeDelta::minutes(10),
            retry_backoff: TimeDelta::seconds(30),
            retry_backoff_max: TimeDelta::minutes(30),
        },
        approvals: BTreeSet::new(),
        keep_retired: 2,
        keep_next_key: false,
        metrics: None,
        issuer_migration: None,
        signer: None,
        ha: None,
    }
}

pub fn probed_plan() -> Plan {
    Plan {
        probe: Probe::Kubeconfig {
            path: PathBuf::from("/etc/kubernetes/admin.conf"),
            namespace: "keyrot-system".into(),
            service_account: "keyrot-probe".into(),
            audience: "keyrot-probe".into(),
        },
        ..plan()
    }
}

/// `plan()` whose target has an AWS STS canary.
pub fn canary_plan() -> Plan {
    let mut plan = plan();
    plan.targets[0].canary = Some(Canary {
        relying_party: RelyingParty::AwsSts {
            role_arn: "arn:aws:iam::123456789012:role/keyrot-canary".into(),
            endpoint: "https://sts.amazonaws.com".into(),
        },
        audience: "sts.amazonaws.com".into(),
        subject: keyrot::plan::DEFAULT_CANARY_SUBJECT.into(),
    });
    plan
}

/// A cluster signing with OLD, its JWKS never published anywhere yet.
pub fn fresh_world(plan: &Plan) -> World {
    let old = KeyId {
        kid: OLD.into(),
        alg: Alg::RS256,
    };
    let observed = Observed {
        bundle: Some(vec![old.clone()]),
        extra: Vec::new(),
        signing: Some(old),
        controller_manager_signing: None,
        private_keys: Vec::new(),
        unusable_private_keys: Vec::new(),
        apiserver: Probed::NotConfigured,
        token_kid: Probed::NotConfigured,
        targets: plan
            .targets
            .iter()
            .map(|t| TargetView {
                name: t.name.clone(),
                kids: Probed::Seen(Vec::new()),
                discovery: Probed::Seen(None),
            })
            .collect(),
        canaries: Vec::new(),
        migration: None,
        key_mode: None,
        key_sets: None,
    };
    World::from_observed(plan, &observed).unwrap()
}

/// The issuer the migration plans move from, and the one they move to.
pub const MIGRATION_OLD: &str = "https://old.example";
pub const MIGRATION_NEW: &str = "https://new.example";

/// A kubeadm plan migrating from [`MIGRATION_OLD`] to [`MIGRATION_NEW`] with a 48 h grace
/// period; `flags` is the section's `flags:` value, `extra` more lines of the section.
pub fn migration_plan(flags: &str, extra: &str) -> Plan {
    let text = format!(
        "cluster: c\nflavour: kubeadm\nissuer: {{ url: \"{MIGRATION_OLD}\" }}\n\
         targets: [{{ name: web, localDirectory: /var/www/oidc }}]\n\
         issuerMigration:\n  newIssuer: \"{MIGRATION_NEW}\"\n  flags: {flags}\n  gracePeriod: 48h\n\
         {extra}"
    );
    keyrot::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), &text).unwrap()
}

/// Runs the decision core against a `World` like the executor: decide, carry out, record.
pub struct Harness {
    pub plan: Plan,
    pub state: State,
    pub world: World,
    pub now: DateTime<Utc>,
    /// One line per action carried out: "phase action".
    pub log: Vec<String>,
}

impl Harness {
    pub fn new(plan: Plan) -> Self {
        let world = fresh_world(&plan);
        Harness {
            plan,
            state: State::default(),
            world,
            now: t0(),
            log: Vec::new(),
        }
    }

    /// One decision, carried out.
    pub fn step(&mut self) -> Decision {
        // As the session's observer: canaries are exchanged when the core waits for them.
        if let Some(kid) = keyrot::decision::canary_due(&self.plan, &self.state, self.now) {
            self.world.exchange_canaries(kid);
        }
        let decision = decide(&self.plan, &self.state, &self.world.observe(), self.now);
        for action in &decision.actions {
            self.world.perform(action).expect("effect");
            apply(&mut self.state, &self.plan, action, self.now);
            let phase = self
                .state
                .rotation
                .as_ref()
                .map_or("idle".to_string(), |r| r.phase.to_string());
            self.log.push(format!("{phase} {}", action_name(action)));
        }
        decision
    }

    /// Decides and acts until the core has nothing to do right now; returns that waiting decision.
    pub fn settle(&mut self) -> Decision {
        for _ in 0..200 {
            let decision = self.step();
            if decision.actions.is_empty() {
                return decision;
            }
        }
        panic!(
            "the decision core did not settle: {:?}",
            self.log.iter().rev().take(10).collect::<Vec<_>>()
        );
    }

    /// Settles, then jumps the clock to the wake-up time and settles again.
    pub fn sleep_until_woken(&mut self) -> Decision {
        let waiting = self.settle();
        self.now = waiting.wake_at.expect("something to wake up for");
        self.settle()
    }

    pub fn trigger(&mut self, kind: TriggerKind) {
        self.state.triggers.push(Trigger {
            kind,
            requested_at: self.now,
            force: false,
        });
    }

    pub fn advance(&mut self, by: TimeDelta) {
        self.now += by;
    }

    pub fn new_kid(&self) -> String {
        self.state
            .rotation
            .as_ref()
            .and_then(|r| r.new_kid.clone())
            .expect("a rotation with a new key")
    }

    pub fn bundle_kids(&self) -> Vec<String> {
        self.world.bundle.iter().map(|k| k.kid.clone()).collect()
    }

    pub fn target_kids(&self) -> Vec<String> {
        self.world.targets[0].1.clone()
    }
}
