//! The plan file as written: serde structs that mirror the YAML, with no checks beyond its shape.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::phase::Phase;

/// The whole file. Every field is optional here, even required ones: presets fill many of them,
/// and a missing field is reported by `validate` with its path and place, beside every other
/// problem, rather than by serde, which stops at the first.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of plan fields"
)]
pub struct RawPlan {
    pub cluster: Option<String>,
    pub flavour: Option<RawFlavour>,
    pub test_plan: Option<bool>,
    pub key: Option<RawKey>,
    pub private_key_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub apiserver: Option<RawApiserver>,
    pub controller_manager: Option<OrNone<RawControllerManager>>,
    pub probe: Option<OrNone<RawProbe>>,
    pub issuer: Option<RawIssuer>,
    pub targets: Option<Vec<RawTarget>>,
    pub schedule: Option<RawSchedule>,
    pub timings: Option<RawTimings>,
    pub approvals: Option<Vec<Phase>>,
    pub keep_retired: Option<u32>,
    pub keep_next_key: Option<bool>,
    pub metrics: Option<RawMetrics>,
    pub issuer_migration: Option<RawIssuerMigration>,
    pub signer: Option<RawSigner>,
    pub ha: Option<RawHa>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawFlavour {
    Kubeadm,
    K3s,
    Rke2,
    Systemd,
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with algorithm and bits"
)]
pub struct RawKey {
    pub algorithm: Option<String>,
    pub bits: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of apiserver fields"
)]
pub struct RawApiserver {
    pub verification_key_file: Option<PathBuf>,
    pub extra_verification_key_files: Option<Vec<PathBuf>>,
    pub signing_key_file: Option<PathBuf>,
    pub restart: Option<RestartField>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of controllerManager fields"
)]
pub struct RawControllerManager {
    pub private_key_file: Option<PathBuf>,
    pub restart: Option<RestartField>,
}

/// Exactly one of the three is meant to be set; `validate` says so when not.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with one of staticPod, systemdUnit or command"
)]
pub struct RawRestart {
    pub static_pod: Option<PathBuf>,
    pub systemd_unit: Option<String>,
    pub command: Option<Vec<String>>,
    /// How long a systemdUnit or command restart may take.
    pub timeout: Option<RawDuration>,
}

/// A restart as written: the word `none`, the word `externalSigner` (nothing restarts: keyrot's
/// own signer reloads its key set), or a mapping.
#[derive(Debug)]
pub enum RestartField {
    None,
    ExternalSigner,
    Some(RawRestart),
}

impl<'de> Deserialize<'de> for RestartField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordOrMapping;
        impl<'de> Visitor<'de> for WordOrMapping {
            type Value = RestartField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`none`, `externalSigner` or a mapping")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RestartField, E> {
                match text {
                    "none" => Ok(RestartField::None),
                    "externalSigner" => Ok(RestartField::ExternalSigner),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<RestartField, M::Error> {
                RawRestart::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RestartField::Some)
            }
        }
        deserializer.deserialize_any(WordOrMapping)
    }
}

/// The `ha` section: one keyrot per control-plane node, coordinated through the Kubernetes API.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of ha fields"
)]
pub struct RawHa {
    pub node_name: Option<String>,
    pub address: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub ring: Option<String>,
    pub lease: Option<String>,
    pub members: Option<RawMembers>,
    pub lease_duration: Option<RawDuration>,
    pub renew_deadline: Option<RawDuration>,
    pub retry_period: Option<RawDuration>,
}

/// `members:` as written: a list of node names, or a word (`endpointSlice`).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a list of node names, or endpointSlice")]
pub enum RawMembers {
    Names(Vec<String>),
    Word(String),
}

/// The `signer` section: keyrot serves kube-apiserver's external JWT signer on a unix socket.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of signer fields"
)]
pub struct RawSigner {
    pub socket: Option<PathBuf>,
    pub group: Option<String>,
    pub refresh_hint: Option<RawDuration>,
    pub rotation_refresh_hint: Option<RawDuration>,
    pub max_token_expiration: Option<RawDuration>,
    pub switch: Option<RawSignerSwitch>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of signer switch fields"
)]
pub struct RawSignerSwitch {
    pub flags: Option<OrManual<RawFlagFiles>>,
    pub kubeadm_patches: Option<PathBuf>,
    pub restart: Option<RestartField>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of probe fields"
)]
pub struct RawProbe {
    pub kubeconfig: Option<PathBuf>,
    pub service_account: Option<RawServiceAccount>,
    pub audience: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with namespace and name"
)]
pub struct RawServiceAccount {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with url and jwksUri"
)]
pub struct RawIssuer {
    pub url: Option<String>,
    pub jwks_uri: Option<String>,
}

/// One target: exactly one destination field (`validate` says so when not), the cache lifetime,
/// and for object stores how the objects are written and where verifiers read them.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of target fields"
)]
pub struct RawTarget {
    pub name: Option<String>,
    pub local_directory: Option<PathBuf>,
    pub s3: Option<RawS3>,
    pub azure: Option<RawAzure>,
    pub gcs: Option<RawGcs>,
    pub gcp_workload_identity_provider: Option<RawGcpProvider>,
    pub cache_max_age: Option<RawDuration>,
    pub cache_control: Option<String>,
    pub jwks_content_type: Option<String>,
    pub public_url: Option<String>,
    pub public_ca_file: Option<PathBuf>,
    pub canary: Option<RawCanary>,
}

/// A relying party that must accept a token signed by the new key before it signs: one `kind`,
/// the fields that kind uses (`validate` says which), and the token's audience and subject.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with kind and the relying party's fields"
)]
pub struct RawCanary {
    pub kind: Option<String>,
    pub role_arn: Option<String>,
    pub region: Option<String>,
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub endpoint: Option<String>,
    pub audience: Option<String>,
    pub subject: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with bucket, region, prefix and endpoint"
)]
pub struct RawS3 {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with account, container, prefix and endpoint"
)]
pub struct RawAzure {
    pub account: Option<String>,
    pub container: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with bucket, prefix, serviceAccountFile and endpoint"
)]
pub struct RawGcs {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub service_account_file: Option<PathBuf>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with name, serviceAccountFile and endpoint"
)]
pub struct RawGcpProvider {
    pub name: Option<String>,
    pub service_account_file: Option<PathBuf>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with cron and timeZone"
)]
pub struct RawSchedule {
    pub cron: Option<String>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of durations"
)]
pub struct RawTimings {
    pub publish_settle: Option<RawDuration>,
    pub retire_after: Option<RawDuration>,
    pub gate_timeout: Option<RawDuration>,
    pub retry_backoff: Option<RawDuration>,
    pub retry_backoff_max: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with listen"
)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of issuerMigration fields"
)]
pub struct RawIssuerMigration {
    pub new_issuer: Option<String>,
    pub new_jwks_uri: Option<String>,
    pub flags: Option<OrManual<RawFlagFiles>>,
    pub grace_period: Option<RawDuration>,
    pub longest_token_lifetime: Option<RawDuration>,
    pub accept_first: Option<bool>,
    pub drop_old_issuer: Option<bool>,
    pub public_ca_file: Option<PathBuf>,
}

/// Exactly one of the four is meant to be set; `validate` says so when not.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with one of kubeadmManifest, k3sConfig, rke2Config or systemdUnit"
)]
pub struct RawFlagFiles {
    pub kubeadm_manifest: Option<PathBuf>,
    pub k3s_config: Option<PathBuf>,
    pub rke2_config: Option<PathBuf>,
    pub systemd_unit: Option<PathBuf>,
}

/// A duration as written (`30s`, `10m`, `24h`); `validate` parses it so that a bad one is
/// reported with the others instead of stopping the whole parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationText;
        impl Visitor<'_> for DurationText {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                // A bare number is refused: "30" could mean seconds or minutes.
                f.write_str("a duration with a unit, such as 30s, 10m or 24h")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(text.to_string()))
            }
        }
        deserializer.deserialize_str(DurationText)
    }
}

/// The word `manual` (`flags: manual`: keyrot edits no file), or else a mapping.
#[derive(Debug)]
pub enum OrManual<T> {
    Manual,
    Some(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrManual<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ManualOrMapping<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ManualOrMapping<T> {
            type Value = OrManual<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`manual` or a mapping")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<OrManual<T>, E> {
                match text {
                    "manual" => Ok(OrManual::Manual),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<OrManual<T>, M::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OrManual::Some)
            }
        }
        deserializer.deserialize_any(ManualOrMapping(PhantomData))
    }
}

/// A section that can be switched off with the word `none` (`probe: none`), or else a mapping.
#[derive(Debug)]
pub enum OrNone<T> {
    None,
    Some(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrNone<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NoneOrMapping<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NoneOrMapping<T> {
            type Value = OrNone<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`none` or a mapping")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<OrNone<T>, E> {
                match text {
                    "none" => Ok(OrNone::None),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<OrNone<T>, M::Error> {
                // Hands the same map on, so unknown fields and field paths work as in any struct.
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OrNone::Some)
            }
        }
        deserializer.deserialize_any(NoneOrMapping(PhantomData))
    }
}
