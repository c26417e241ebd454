//! HA control planes: one keyrot per control-plane node, coordinated through the Kubernetes API
//! (docs/ha.md). The ring's content and the lease rules are pure; the API is behind [`api`].

pub mod api;
pub mod daemon;
pub mod kube;
pub mod node;
pub mod ring;
pub mod simulation;
pub mod status;
pub mod timeline;
