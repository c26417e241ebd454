//! HA control planes: one keyrot per control-plane node, coordinated through the Kubernetes API
//! (docs/ha.md). The ring's content and the lease rules are pure; the API is behind [`api`].

pub mod api;
pub mod kube;
pub mod ring;
pub mod simulation;
