//! The real [`ClusterApi`]: the ring ConfigMap, the Lease and the `kubernetes` EndpointSlices
//! through the `kube` crate and a kubeconfig, each call bounded in time.
//!
//! Every request has a deadline: a black-holed connection (a partitioned node) must turn into
//! `Unavailable` the caller can act on, never a hang. kube itself retries 429/503/504 with
//! backoff inside that deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use tokio_stream::StreamExt;

use super::api::{ApiError, ClusterApi, LeaseRecord, Versioned};
use crate::adapters::AdapterError;
use crate::http::chain;

/// The ring's key in the ConfigMap's data.
pub const RING_KEY: &str = "ring.json";
/// The label marking the objects keyrot owns.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "keyrot");
/// The deadline of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its own timeout a watch may take to end: connection and first bytes.
const WATCH_MARGIN: Duration = Duration::from_secs(10);
/// The longest watch kube-rs asks for (it rejects none, but apiservers cap watches near this).
const MAX_WATCH_SECONDS: u32 = 290;

pub struct KubeClusterApi {
    runtime: tokio::runtime::Runtime,
    config_maps: Api<ConfigMap>,
    leases: Api<Lease>,
    endpoint_slices: Api<EndpointSlice>,
    namespace: String,
    ring: String,
    lease: String,
}

impl KubeClusterApi {
    /// A client of the cluster `kubeconfig` names, for the ring ConfigMap `ring` and the Lease
    /// `lease` in `namespace`.
    pub fn new(
        kubeconfig: &Path,
        namespace: &str,
        ring: &str,
        lease: &str,
    ) -> Result<Self, AdapterError> {
        let (runtime, client) = crate::adapters::kube_client::connect(kubeconfig, "HA")?;
        Ok(KubeClusterApi {
            config_maps: Api::namespaced(client.clone(), namespace),
            leases: Api::namespaced(client.clone(), namespace),
            endpoint_slices: Api::namespaced(client, "default"),
            runtime,
            namespace: namespace.to_string(),
            ring: ring.to_string(),
            lease: lease.to_string(),
        })
    }

    fn ring_name(&self) -> String {
        format!("configmap {}/{}", self.namespace, self.ring)
    }

    fn lease_name(&self) -> String {
        format!("lease {}/{}", self.namespace, self.lease)
    }

    /// Runs `request` with a deadline, its errors sorted and prefixed with `what`.
    fn call<T>(
        &self,
        what: &str,
        deadline: Duration,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ApiError> {
        // The timer is made inside the runtime: tokio's timers need its context.
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(deadline, request).await });
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(sort(what, &e)),
            Err(_) => Err(ApiError::Unavailable(format!(
                "{what}: no answer within {}",
                humantime::format_duration(deadline)
            ))),
        }
    }

    fn ring_object(&self, text: &str, resource_version: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.ring.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: resource_version.map(str::to_string),
                labels: Some(managed_by()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(RING_KEY.to_string(), text.to_string())])),
            ..ConfigMap::default()
        }
    }

    fn lease_object(&self, record: &LeaseRecord, resource_version: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.lease.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: resource_version.map(str::to_string),
                labels: Some(managed_by()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: record.holder.clone().filter(|h| !h.is_empty()),
                lease_duration_seconds: Some(record.lease_duration_seconds),
                acquire_time: record.acquire_time.map(micro_time),
                renew_time: record.renew_time.map(micro_time),
                lease_transitions: Some(record.transitions),
                ..LeaseSpec::default()
            }),
        }
    }
}

impl ClusterApi for KubeClusterApi {
    fn read_ring(&self) -> Result<Option<Versioned<String>>, ApiError> {
        let what = self.ring_name();
        let Some(map) = self.call(&what, REQUEST_TIMEOUT, self.config_maps.get_opt(&self.ring))?
        else {
            return Ok(None);
        };
        let resource_version = resource_version(&what, &map.metadata)?;
        // A ConfigMap without the key is a ring not written yet: an empty text the caller
        // refuses to parse, rather than a missing object it would try to create.
        let value = map
            .data
            .and_then(|mut data| data.remove(RING_KEY))
            .unwrap_or_default();
        Ok(Some(Versioned {
            value,
            resource_version,
        }))
    }

    fn create_ring(&self, text: &str) -> Result<String, ApiError> {
        let what = self.ring_name();
        let object = self.ring_object(text, None);
        let created = self.call(
            &what,
            REQUEST_TIMEOUT,
            self.config_maps.create(&PostParams::default(), &object),
        )?;
        resource_version(&what, &created.metadata)
    }

    fn replace_ring(&self, text: &str, resource_version_read: &str) -> Result<String, ApiError> {
        let what = self.ring_name();
        let object = self.ring_object(text, Some(resource_version_read));
        let replaced = self.call(
            &what,
            REQUEST_TIMEOUT,
            self.config_maps
                .replace(&self.ring, &PostParams::default(), &object),
        )?;
        resource_version(&what, &replaced.metadata)
    }

    fn read_lease(&self) -> Result<Option<Versioned<LeaseRecord>>, ApiError> {
        let what = self.lease_name();
        let Some(lease) = self.call(&what, REQUEST_TIMEOUT, self.leases.get_opt(&self.lease))?
        else {
            return Ok(None);
        };
        let resource_version = resource_version(&what, &lease.metadata)?;
        let spec = lease.spec.unwrap_or_default();
        Ok(Some(Versioned {
            value: LeaseRecord {
                holder: spec.holder_identity.filter(|h| !h.is_empty()),
                lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
                acquire_time: spec.acquire_time.and_then(|t| date_time(&t)),
                renew_time: spec.renew_time.and_then(|t| date_time(&t)),
                transitions: spec.lease_transitions.unwrap_or_default(),
            },
            resource_version,
        }))
    }

    fn create_lease(&self, record: &LeaseRecord) -> Result<String, ApiError> {
        let what = self.lease_name();
        let object = self.lease_object(record, None);
        let created = self.call(
            &what,
            REQUEST_TIMEOUT,
            self.leases.create(&PostParams::default(), &object),
        )?;
        resource_version(&what, &created.metadata)
    }

    fn replace_lease(
        &self,
        record: &LeaseRecord,
        resource_version_read: &str,
    ) -> Result<String, ApiError> {
        let what = self.lease_name();
        let object = self.lease_object(record, Some(resource_version_read));
        let replaced = self.call(
            &what,
            REQUEST_TIMEOUT,
            self.leases
                .replace(&self.lease, &PostParams::default(), &object),
        )?;
        resource_version(&what, &replaced.metadata)
    }

    fn watch_ring(&self, resource_version: &str, timeout: Duration) -> Result<bool, ApiError> {
        let what = self.ring_name();
        let seconds = u32::try_from(timeout.as_secs_f64().ceil() as u64)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_WATCH_SECONDS);
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.ring))
            .timeout(seconds);
        let watching = async {
            let mut events = Box::pin(self.config_maps.watch(&params, resource_version).await?);
            while let Some(event) = events.next().await {
                match event? {
                    WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_) => {
                        return Ok(true);
                    }
                    WatchEvent::Bookmark(_) => {}
                    // The version is older than the apiserver keeps: changes may have been
                    // missed, so the caller must read again.
                    WatchEvent::Error(status) if status.code == 410 => return Ok(true),
                    WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
                }
            }
            Ok(false)
        };
        let deadline = Duration::from_secs(seconds.into()) + WATCH_MARGIN;
        self.call(&what, deadline, watching)
    }

    fn apiserver_addresses(&self) -> Result<Vec<String>, ApiError> {
        let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
        let slices = self.call(
            "endpointslices default/kubernetes",
            REQUEST_TIMEOUT,
            self.endpoint_slices.list(&params),
        )?;
        let addresses: BTreeSet<String> = slices
            .items
            .into_iter()
            .flat_map(|slice| slice.endpoints)
            // kube: a nil `ready` is to be read as ready.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses)
            .collect();
        Ok(addresses.into_iter().collect())
    }
}

/// Sorts a kube error by what the caller does next (see [`ApiError`]).
fn sort(what: &str, error: &kube::Error) -> ApiError {
    let message = format!("{what}: {}", chain(error));
    match error {
        kube::Error::Api(status) if status.code == 409 => ApiError::Conflict(message),
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            ApiError::Unavailable(message)
        }
        kube::Error::Api(_) => ApiError::Refused(message),
        // No answer: the connection was refused, reset or timed out, or the stream broke.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            ApiError::Unavailable(message)
        }
        _ => ApiError::Refused(message),
    }
}

fn resource_version(what: &str, metadata: &ObjectMeta) -> Result<String, ApiError> {
    metadata
        .resource_version
        .clone()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::Refused(format!("{what}: the answer has no resourceVersion")))
}

fn managed_by() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())])
}

/// A MicroTime; kube serialises it in microseconds, so finer precision is dropped here.
fn micro_time(time: DateTime<Utc>) -> MicroTime {
    let micros = time.timestamp_micros();
    MicroTime(Timestamp::from_microsecond(micros).expect("a chrono time is within jiff's range"))
}

fn date_time(time: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(time.0.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_times_round_trip_at_microsecond_precision() {
        let time = DateTime::parse_from_rfc3339("2025-06-01T12:34:56.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let back = date_time(&micro_time(time)).unwrap();
        assert_eq!(back.to_rfc3339(), "2025-06-01T12:34:56.123456+00:00");
    }

    #[test]
    fn errors_are_sorted_by_status() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..kube::core::Status::default()
            }))
        };
        assert!(matches!(sort("x", &status(409)), ApiError::Conflict(m) if m.starts_with("x: ")));
        assert!(matches!(sort("x", &status(429)), ApiError::Unavailable(_)));
        assert!(matches!(sort("x", &status(503)), ApiError::Unavailable(_)));
        assert!(matches!(sort("x", &status(403)), ApiError::Refused(_)));
        assert!(matches!(sort("x", &status(422)), ApiError::Refused(_)));
    }
}
