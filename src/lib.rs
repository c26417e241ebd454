//! keyrot: rotates the Kubernetes service-account signing key and publishes the issuer documents.

pub mod adapters;
pub mod atomic_file;
pub mod daemon;
pub mod decision;
pub mod describe;
pub mod doctor;
pub mod documents;
pub mod dry_run;
pub mod escape;
pub mod executor;
pub mod fs_read;
pub mod gcp_provider;
pub mod http;
pub mod issuer;
pub mod keys;
pub mod migration;
pub mod observe;
pub mod phase;
pub mod plan;
pub mod safe_dir;
pub mod session;
pub mod simulation;
pub mod state;
pub mod status;
pub mod stores;
pub mod targets;
