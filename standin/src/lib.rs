//! Test fixtures for keyrot's end-to-end tests; never part of the shipped daemon.
//!
//! - [`apiserver`]: a kube-apiserver stand-in (binary `kube-apiserver-standin`) faithful to
//!   kube where keyrot depends on it: key files read with kube's rules at each (re)start, the
//!   OIDC documents, TokenRequest, TokenReview and enough of ServiceAccounts for a probe.
//! - [`cluster`]: a control plane's Kubernetes API for HA tests (binary `kube-cluster-standin`):
//!   ConfigMaps, Leases and watches kept here, other requests balanced over apiserver stand-ins,
//!   and faults a test injects.
//! - [`sts`]: a verifier that behaves like a cloud STS: discovery, JWKS, kid, signature, claims.
//! - [`relying_party`]: the clouds' token exchange endpoints, verifying with [`sts`].
//! - [`static_server`]: a directory served over HTTPS (binary `oidc-static-server`), standing in
//!   for the public host of the issuer documents.
//! - [`manifest`]: the issuer flags of a kubeadm-style manifest, for restarts with new flags.
//! - [`tls`]: the test CA and server certificate they share.

pub mod apiserver;
pub mod cluster;
pub mod https;
pub mod jws;
pub mod manifest;
pub mod relying_party;
pub mod static_server;
pub mod sts;
pub mod tls;
