//! A validated rotation plan: typed values only. YAML parsing lives in `raw` and `decode`, the checks
//! that turn raw values into these types in `validate`, cluster defaults in `presets`.

mod canary;
mod checks;
mod components;
mod decode;
mod destinations;
mod ha;
mod locate;
mod metrics;
mod migration;
mod presets;
mod publishing;
mod raw;
mod report;
mod schedule;
mod signer;
mod validate;
mod values;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;

use crate::keys::GenerateSpec;
use crate::phase::Phase;

pub use canary::DEFAULT_CANARY_SUBJECT;
pub use destinations::{GCP_IAM_ENDPOINT, is_loopback};
pub use locate::{FieldPath, Position};
pub use presets::CLUSTER_DOMAIN;
pub use report::{PlanError, Problem};
pub use schedule::{Schedule, ScheduleError};
pub use validate::{load, parse};
pub use values::{flavour_name, format_duration};

/// Everything keyrot needs to rotate one cluster's service-account key.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file; relative paths in it were resolved against its directory.
    pub path: PathBuf,
    /// A name for people: logs, status, metrics.
    pub cluster: String,
    pub flavour: Flavour,
    /// Test plans may use waits shorter than production minimums (the sandbox).
    pub test_plan: bool,
    /// What new keys are.
    pub key: GenerateSpec,
    /// Where keyrot keeps the private keys it generates (0700, files 0600).
    pub private_key_dir: PathBuf,
    /// Where keyrot keeps its state file and lock.
    pub state_dir: PathBuf,
    pub apiserver: Apiserver,
    pub controller_manager: Option<ControllerManager>,
    pub probe: Probe,
    pub issuer: Issuer,
    /// Where the issuer documents are published; at least one.
    pub targets: Vec<Target>,
    /// When rotations start on their own; `None` means only on a manual trigger.
    pub schedule: Option<Schedule>,
    pub timings: Timings,
    /// Phases that wait for `keyrot approve` before they begin.
    pub approvals: BTreeSet<Phase>,
    /// How many retired keys the key ring remembers.
    pub keep_retired: usize,
    /// Keep the next key staged and published between rotations (Vault's model): a rotation
    /// then promotes a key whose caches settled long ago, without the `publishSettle` wait.
    pub keep_next_key: bool,
    /// Where `keyrot run` serves Prometheus metrics; `None`: no metrics endpoint.
    pub metrics: Option<Metrics>,
    /// A move to a new, public issuer (docs/issuer-migration.md); `None`: no migration planned.
    pub issuer_migration: Option<IssuerMigration>,
    /// kube-apiserver's external JWT signer, served by `keyrot run` (docs/external-signer.md);
    /// `None`: the apiserver signs with its key files.
    pub signer: Option<Signer>,
    /// An HA control plane: this node's part and how the nodes coordinate (docs/ha.md);
    /// `None`: a single control-plane node.
    pub ha: Option<Ha>,
}

/// The `ha` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// This node's name in the ring and the Lease (Kubernetes' node name, by default the host
    /// name).
    pub node_name: String,
    /// The address this node's apiserver advertises (as the `kubernetes` EndpointSlice lists it).
    pub address: Option<String>,
    /// The cluster's API, where the ring and the Lease live (any apiserver of the cluster: they
    /// share etcd).
    pub kubeconfig: PathBuf,
    pub namespace: String,
    /// The ring ConfigMap's name.
    pub ring: String,
    /// The Lease's name.
    pub lease: String,
    pub members: Members,
    pub lease_duration: std::time::Duration,
    pub renew_deadline: std::time::Duration,
    pub retry_period: std::time::Duration,
}

/// Which nodes every rotation waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// These node names.
    Named(BTreeSet<String>),
    /// Every apiserver the `kubernetes` EndpointSlice lists must belong to a member.
    EndpointSlice,
}

/// The `signer` section: where and how `keyrot run` serves the ExternalJWTSigner service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The unix socket kube-apiserver's `--service-account-signing-endpoint` names.
    pub socket: PathBuf,
    /// A group whose members may connect too (socket 0660); `None`: 0600, root and keyrot only.
    pub group: Option<SignerGroup>,
    /// `refresh_hint_seconds` while no rotation is in progress.
    pub refresh_hint: Duration,
    /// `refresh_hint_seconds` while a rotation is in progress: apiservers pick up a changed key
    /// set within this long.
    pub rotation_refresh_hint: Duration,
    /// `max_token_expiration_seconds`: the longest token lifetime the cluster then issues.
    pub max_token_expiration: Duration,
    /// How `keyrot switch-signer` moves kube-apiserver between its key files and the signer;
    /// `None`: the flags are changed by hand.
    pub switch: Option<SignerSwitch>,
}

/// The flag file `keyrot switch-signer` edits, and what makes kube-apiserver read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerSwitch {
    pub path: PathBuf,
    pub file: crate::issuer::FlagFile,
    /// kubeadm's `--patches` directory, where keyrot keeps the change for `kubeadm upgrade`.
    pub kubeadm_patches: Option<PathBuf>,
    /// After the edit; `Restart::None` when the edit itself restarts it (a static pod manifest).
    pub restart: Restart,
}

/// A group as the plan names it, with the id it had when the plan was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerGroup {
    pub name: String,
    pub gid: u32,
}

/// The `issuerMigration` section: where the cluster's issuer moves, and how its flags change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerMigration {
    /// The new issuer and the jwks_uri its discovery document names.
    pub new_issuer: Issuer,
    pub flags: FlagSource,
    /// The least time between the flag change and dropping the old issuer.
    pub grace_period: TimeDelta,
    /// The longest lifetime of the tokens requested in the cluster, when the plan names it: the
    /// old issuer stays accepted at least this long.
    pub longest_token_lifetime: Option<TimeDelta>,
    /// Several apiservers: every one accepts the new issuer (`keyrot approve` says so) before
    /// any issues tokens with it.
    pub accept_first: bool,
    /// Whether the old issuer is dropped from the flags once the grace period is over.
    pub drop_old_issuer: bool,
    /// Extra root certificates (PEM) for reading the new issuer's documents: test plans only.
    pub public_ca_file: Option<PathBuf>,
}

/// Where kube-apiserver's issuer flags live, and so which editor changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagSource {
    File {
        path: PathBuf,
        file: crate::issuer::FlagFile,
    },
    /// keyrot edits no file: it prints the change for a person to make.
    Manual,
}

/// The daemon's Prometheus endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// The address `GET /metrics` is served on.
    pub listen: SocketAddr,
}

/// Cluster presets that supply default paths and the restart method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Kubeadm,
    K3s,
    Rke2,
    /// kube-apiserver run as a systemd unit (hand-built clusters).
    Systemd,
    Custom,
}

/// kube-apiserver's key files and how to make it re-read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apiserver {
    /// The `--service-account-key-file` keyrot manages (appends, removes keys).
    pub verification_bundle: PathBuf,
    /// Further `--service-account-key-file` values: read, never written.
    pub extra_verification_files: Vec<PathBuf>,
    /// `--service-account-signing-key-file`.
    pub signing_key_file: PathBuf,
    pub restart: Restart,
}

/// kube-controller-manager's `--service-account-private-key-file` (signs legacy Secret tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerManager {
    pub private_key_file: PathBuf,
    pub restart: Restart,
}

/// How a component is restarted so it reads its key files again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Touch the static pod manifest (the kubelet restarts the pod when its content changes).
    StaticPod {
        manifest: PathBuf,
    },
    /// `systemctl restart -- UNIT`, given up (and killed) after `timeout`.
    SystemdUnit {
        unit: String,
        timeout: Duration,
    },
    /// Run `argv` with a clean environment, given up (and killed) after `timeout`.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// Nothing restarts: kube-apiserver takes its keys from keyrot's signer (the plan's `signer`
    /// section), which reloads the key files; done once the signer serves them.
    ExternalSigner,
    None,
}

/// How keyrot checks the apiserver's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    None,
    Kubeconfig {
        path: PathBuf,
        /// The ServiceAccount keyrot requests probe tokens for.
        namespace: String,
        service_account: String,
        audience: String,
    },
}

/// The issuer URL and the jwks_uri its discovery document names, both validated as kube does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub url: String,
    pub jwks_uri: String,
}

/// One place the issuer documents are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Unique within the plan; used in logs and status.
    pub name: String,
    pub kind: TargetKind,
    /// The `max-age` of the Cache-Control the documents are served with.
    pub cache_max_age: TimeDelta,
    /// A relying party that must accept the new key before it signs; `None`: none is asked.
    pub canary: Option<Canary>,
}

/// The canary token keyrot signs with a rotation's new key and exchanges at a relying party
/// before promotion: proof that the party verifies the new key now, not a guess about its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub relying_party: RelyingParty,
    /// The token's `aud`: what the relying party's trust (role, provider, federated credential)
    /// expects.
    pub audience: String,
    /// The token's `sub`: a subject the trust names, and no workload of the cluster has.
    pub subject: String,
}

/// Where the canary token is exchanged; each endpoint is the API's base URL without a slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelyingParty {
    /// AWS STS `AssumeRoleWithWebIdentity` for `role_arn`.
    AwsSts { role_arn: String, endpoint: String },
    /// GCP STS token exchange; `provider` is the pool provider's full resource name,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`.
    GcpSts { provider: String, endpoint: String },
    /// Entra ID client credentials with the token as the client assertion of `client_id`.
    Entra {
        tenant: String,
        client_id: String,
        endpoint: String,
    },
}

impl RelyingParty {
    /// The plan's word for it, as in `canary.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            RelyingParty::AwsSts { .. } => "aws-sts",
            RelyingParty::GcpSts { .. } => "gcp-sts",
            RelyingParty::Entra { .. } => "entra",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A directory a web server serves at the issuer URL.
    LocalDirectory { path: PathBuf },
    /// An S3 bucket (or an S3-compatible store); credentials from the AWS chain, never the plan.
    S3 { bucket: S3Bucket, objects: Objects },
    /// An Azure Blob container; access key, SAS or managed/workload identity from the environment.
    Azure {
        container: AzureContainer,
        objects: Objects,
    },
    /// A Google Cloud Storage bucket; a service-account file, ADC or the metadata server.
    Gcs { bucket: GcsBucket, objects: Objects },
    /// A GCP Workload Identity Federation provider whose `oidc.jwksJson` keyrot uploads.
    GcpWorkloadIdentityProvider(GcpProvider),
}

impl TargetKind {
    /// How an object-store target writes its objects and is read back; `None` for the others.
    pub fn objects(&self) -> Option<&Objects> {
        match self {
            TargetKind::S3 { objects, .. }
            | TargetKind::Azure { objects, .. }
            | TargetKind::Gcs { objects, .. } => Some(objects),
            TargetKind::LocalDirectory { .. } | TargetKind::GcpWorkloadIdentityProvider(_) => None,
        }
    }

    /// The plan's word for the kind, as in the target's field name.
    pub fn field_name(&self) -> &'static str {
        match self {
            TargetKind::LocalDirectory { .. } => "localDirectory",
            TargetKind::S3 { .. } => "s3",
            TargetKind::Azure { .. } => "azure",
            TargetKind::Gcs { .. } => "gcs",
            TargetKind::GcpWorkloadIdentityProvider(_) => "gcpWorkloadIdentityProvider",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Bucket {
    pub bucket: String,
    pub region: String,
    /// An S3-compatible endpoint instead of AWS's (`http` only on a loopback address).
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureContainer {
    pub account: String,
    pub container: String,
    /// The blob service URL instead of `https://ACCOUNT.blob.core.windows.net`.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsBucket {
    pub bucket: String,
    /// A service-account key file; without it, application default credentials or the metadata
    /// server.
    pub service_account_file: Option<PathBuf>,
    /// The storage API's base URL instead of `https://storage.googleapis.com`.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpProvider {
    /// `projects/P/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub name: String,
    pub service_account_file: Option<PathBuf>,
    /// The IAM API's base URL, `https://iam.googleapis.com` unless written.
    pub endpoint: String,
}

/// How an object-store target's two objects are written, and where verifiers read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objects {
    /// Key prefix without leading or trailing slash; empty for the bucket's root.
    pub prefix: String,
    /// The Cache-Control both objects carry; its max-age never exceeds the target's cacheMaxAge.
    pub cache_control: String,
    /// The JWKS object's Content-Type (the discovery document's is always application/json).
    pub jwks_content_type: String,
    pub public: PublicRead,
}

/// Where a cloud verifier reads a target's objects, anonymously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicRead {
    /// The URL this target's objects are served under. `None`: the issuer URL, with the JWKS at
    /// the `jwks_uri` the discovery document names, exactly as a cloud reads them.
    pub url: Option<String>,
    /// Extra root certificates (PEM) for the public URL: test servers only (test plans).
    pub ca_file: Option<PathBuf>,
}

/// How long each phase waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Minimum time between a confirmed publication and promotion (>= every target's max-age).
    pub publish_settle: TimeDelta,
    /// Minimum time between promotion and retiring the old key (>= 24 h unless a test plan).
    pub retire_after: TimeDelta,
    /// How long a gate may stay closed before the attempt counts as failed.
    pub gate_timeout: TimeDelta,
    /// First retry delay after a failure; doubles per attempt up to `retry_backoff_max`.
    pub retry_backoff: TimeDelta,
    pub retry_backoff_max: TimeDelta,
}
