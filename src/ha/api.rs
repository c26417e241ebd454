//! The Kubernetes API as HA coordination uses it: the ring ConfigMap, the leader Lease and the
//! apiservers the `kubernetes` EndpointSlice lists. Narrow and blocking, like every adapter.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// An object's content with the resourceVersion it was read at (the compare-and-swap token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub resource_version: String,
}

/// A `coordination.k8s.io/v1` Lease's spec, as client-go's leader election reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `holderIdentity`: the node name of the leader; `None` (or empty) when released.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// `acquireTime` (a MicroTime).
    pub acquire_time: Option<DateTime<Utc>>,
    /// `renewTime` (a MicroTime).
    pub renew_time: Option<DateTime<Utc>>,
    /// `leaseTransitions`: how many times the holder changed; keyrot's fencing epoch.
    pub transitions: i32,
}

/// Why a request to the Kubernetes API failed, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 409: the object changed since it was read (replace), or exists already (create).
    /// Re-read and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No answer, a timeout, 429 or a 5xx: the API is (for now) unreachable. Retry later; never
    /// act on what was read before.
    #[error("the Kubernetes API is unavailable: {0}")]
    Unavailable(String),
    /// Any other refusal (401, 403, 404 of the namespace, 422): a person must look (RBAC, names).
    #[error("the Kubernetes API refused the request: {0}")]
    Refused(String),
}

/// The coordination objects of one plan: its namespace, ring ConfigMap and Lease.
pub trait ClusterApi: Send + Sync {
    /// The ring ConfigMap's `ring.json`, or `None` when the ConfigMap does not exist.
    fn read_ring(&self) -> Result<Option<Versioned<String>>, ApiError>;
    /// Creates the ring ConfigMap holding `text` as `ring.json`; `Conflict` if it exists.
    /// Returns the new resourceVersion.
    fn create_ring(&self, text: &str) -> Result<String, ApiError>;
    /// Replaces `ring.json` if the ConfigMap is still at `resource_version` (`Conflict`
    /// otherwise). Returns the new resourceVersion.
    fn replace_ring(&self, text: &str, resource_version: &str) -> Result<String, ApiError>;
    /// The Lease, or `None` when it does not exist.
    fn read_lease(&self) -> Result<Option<Versioned<LeaseRecord>>, ApiError>;
    /// Creates the Lease; `Conflict` if it exists. Returns the new resourceVersion.
    fn create_lease(&self, record: &LeaseRecord) -> Result<String, ApiError>;
    /// Replaces the Lease's spec if it is still at `resource_version` (`Conflict` otherwise).
    fn replace_lease(
        &self,
        record: &LeaseRecord,
        resource_version: &str,
    ) -> Result<String, ApiError>;
    /// Watches the ring ConfigMap from `resource_version`: returns `Ok(true)` as soon as it
    /// changed (or was created or deleted) after that version, `Ok(false)` when `timeout` passed
    /// with no change.
    fn watch_ring(&self, resource_version: &str, timeout: Duration) -> Result<bool, ApiError>;
    /// The addresses of the apiservers in `default/kubernetes`'s EndpointSlices (ready ones),
    /// sorted and deduplicated.
    fn apiserver_addresses(&self) -> Result<Vec<String>, ApiError>;
}
