//! What each cluster flavour supplies when a plan leaves a field out, and keyrot's own defaults.

use std::path::PathBuf;

use chrono::TimeDelta;

use super::{ControllerManager, Flavour, Restart, Timings};

pub const STATE_DIR: &str = "/var/lib/keyrot";
/// The private key directory when not given: this, under the state directory.
pub const PRIVATE_KEY_SUBDIR: &str = "keys";
/// The probe's kubeconfig for every flavour: an identity with only the probe's RBAC
/// (`docs/probe-rbac.yaml`), not the cluster-admin `admin.conf`, and outside `/root`, which the
/// unit's `ProtectHome=yes` hides.
pub const PROBE_KUBECONFIG: &str = "/etc/keyrot/probe.kubeconfig";
pub const PROBE_NAMESPACE: &str = "keyrot-system";
pub const PROBE_SERVICE_ACCOUNT: &str = "keyrot-probe";
pub const PROBE_AUDIENCE: &str = "keyrot-probe";
pub const KEEP_RETIRED: u32 = 5;
/// More would only grow the state file; a retired key has no use beyond its history.
pub const KEEP_RETIRED_MAX: u32 = 100;
pub const CACHE_MAX_AGE: TimeDelta = TimeDelta::minutes(5);
/// A key must stay verifiable this long after it stopped signing, unless the plan is a test:
/// tokens copied out of pods stay in use until they expire, and 24 h is the common floor.
pub const MIN_RETIRE_AFTER: TimeDelta = TimeDelta::hours(24);
/// Tokens minted before an issuer change carry the old issuer until they expire: it stays
/// accepted at least this long unless the plan is a test.
pub const MIN_ISSUER_GRACE: TimeDelta = TimeDelta::hours(24);
/// k3s and RKE2 derive their default issuer from the cluster domain; keyrot assumes kube's default.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Where `metrics: {}` serves: this host only, on the port registered for keyrot's neighbours
/// in the Prometheus exporter list's free range.
pub const METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How long a systemd unit or command restart may take before keyrot kills it: below the unit's
/// `WatchdogSec=2min`, since the acting thread does not ping while it waits.
pub const RESTART_TIMEOUT: TimeDelta = TimeDelta::seconds(90);

pub const TIMINGS: Timings = Timings {
    publish_settle: TimeDelta::minutes(10),
    retire_after: TimeDelta::hours(24),
    gate_timeout: TimeDelta::minutes(10),
    retry_backoff: TimeDelta::seconds(30),
    retry_backoff_max: TimeDelta::minutes(30),
};

/// Defaults of one flavour. `None` means the plan must say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub verification_key_file: Option<PathBuf>,
    pub signing_key_file: Option<PathBuf>,
    pub apiserver_restart: Option<Restart>,
    /// Only where kube-controller-manager is a process of its own with its own restart.
    pub controller_manager: Option<ControllerManager>,
    pub kubeconfig: Option<PathBuf>,
    /// Directories where the node acts on every file it finds; keyrot must never write there.
    pub watched_dirs: Vec<WatchedDir>,
}

/// A directory whose files the node runs or applies as they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDir {
    pub path: PathBuf,
    /// Finishes "…, where {what}".
    pub what: &'static str,
}

pub const STATIC_PODS: &str = "the kubelet runs every file as a static pod";
const AUTO_DEPLOY: &str = "every file is applied to the cluster";

pub fn preset(flavour: Flavour) -> Preset {
    match flavour {
        Flavour::Kubeadm => Preset {
            verification_key_file: Some("/etc/kubernetes/pki/sa.pub".into()),
            signing_key_file: Some("/etc/kubernetes/pki/sa.key".into()),
            apiserver_restart: Some(static_pod("/etc/kubernetes/manifests/kube-apiserver.yaml")),
            // kubeadm gives kube-controller-manager the same sa.key as the apiserver's signing key.
            controller_manager: Some(ControllerManager {
                private_key_file: "/etc/kubernetes/pki/sa.key".into(),
                restart: static_pod("/etc/kubernetes/manifests/kube-controller-manager.yaml"),
            }),
            kubeconfig: Some(PROBE_KUBECONFIG.into()),
            watched_dirs: vec![watched("/etc/kubernetes/manifests", STATIC_PODS)],
        },
        Flavour::K3s => rancher("k3s", "k3s.service"),
        Flavour::Rke2 => rancher("rke2", "rke2-server.service"),
        // The layout of "Kubernetes the hard way" (current edition): certificate and key made
        // for service accounts, both components as systemd units.
        Flavour::Systemd => Preset {
            verification_key_file: Some("/var/lib/kubernetes/service-accounts.crt".into()),
            signing_key_file: Some("/var/lib/kubernetes/service-accounts.key".into()),
            apiserver_restart: Some(systemd_unit("kube-apiserver.service")),
            controller_manager: Some(ControllerManager {
                private_key_file: "/var/lib/kubernetes/service-accounts.key".into(),
                restart: systemd_unit("kube-controller-manager.service"),
            }),
            kubeconfig: Some(PROBE_KUBECONFIG.into()),
            watched_dirs: Vec::new(),
        },
        Flavour::Custom => Preset {
            verification_key_file: None,
            signing_key_file: None,
            apiserver_restart: None,
            controller_manager: None,
            kubeconfig: None,
            watched_dirs: Vec::new(),
        },
    }
}

/// k3s and RKE2 share a layout under their data directory. The apiserver and the controller
/// manager live in the one server process, so restarting its unit restarts both, and they share
/// the signing key: no separate controller manager entry.
fn rancher(name: &str, unit: &str) -> Preset {
    let data = format!("/var/lib/rancher/{name}");
    Preset {
        verification_key_file: Some(format!("{data}/server/tls/service.key").into()),
        signing_key_file: Some(format!("{data}/server/tls/service.current.key").into()),
        apiserver_restart: Some(systemd_unit(unit)),
        controller_manager: None,
        kubeconfig: Some(PROBE_KUBECONFIG.into()),
        watched_dirs: vec![
            watched(&format!("{data}/agent/pod-manifests"), STATIC_PODS),
            watched(&format!("{data}/server/manifests"), AUTO_DEPLOY),
        ],
    }
}

fn static_pod(manifest: &str) -> Restart {
    Restart::StaticPod {
        manifest: manifest.into(),
    }
}

fn systemd_unit(unit: &str) -> Restart {
    Restart::SystemdUnit {
        unit: unit.into(),
        timeout: RESTART_TIMEOUT.to_std().expect("a positive constant"),
    }
}

fn watched(path: &str, what: &'static str) -> WatchedDir {
    WatchedDir {
        path: path.into(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn kubeadm_shares_sa_key_between_apiserver_and_controller_manager() {
        let p = preset(Flavour::Kubeadm);
        assert_eq!(
            p.signing_key_file.as_deref(),
            Some(Path::new("/etc/kubernetes/pki/sa.key"))
        );
        assert_eq!(
            p.verification_key_file.as_deref(),
            Some(Path::new("/etc/kubernetes/pki/sa.pub"))
        );
        let cm = p
            .controller_manager
            .expect("kubeadm runs kube-controller-manager as a static pod");
        assert_eq!(Some(cm.private_key_file), p.signing_key_file);
        assert_eq!(
            cm.restart,
            static_pod("/etc/kubernetes/manifests/kube-controller-manager.yaml")
        );
        assert_eq!(
            p.watched_dirs[0].path,
            Path::new("/etc/kubernetes/manifests")
        );
    }

    #[test]
    fn k3s_and_rke2_restart_their_server_unit_only() {
        let k3s = preset(Flavour::K3s);
        assert_eq!(
            k3s.signing_key_file.as_deref(),
            Some(Path::new(
                "/var/lib/rancher/k3s/server/tls/service.current.key"
            ))
        );
        assert_eq!(
            k3s.verification_key_file.as_deref(),
            Some(Path::new("/var/lib/rancher/k3s/server/tls/service.key"))
        );
        assert_eq!(k3s.apiserver_restart, Some(systemd_unit("k3s.service")));
        assert_eq!(k3s.controller_manager, None);
        assert_eq!(k3s.kubeconfig.as_deref(), Some(Path::new(PROBE_KUBECONFIG)));

        let rke2 = preset(Flavour::Rke2);
        assert_eq!(
            rke2.apiserver_restart,
            Some(systemd_unit("rke2-server.service"))
        );
        assert_eq!(
            rke2.kubeconfig.as_deref(),
            Some(Path::new(PROBE_KUBECONFIG))
        );
        assert!(
            rke2.watched_dirs
                .iter()
                .any(|d| d.path == Path::new("/var/lib/rancher/rke2/agent/pod-manifests"))
        );
    }

    #[test]
    fn systemd_follows_the_hard_way_layout() {
        let p = preset(Flavour::Systemd);
        assert_eq!(
            p.apiserver_restart,
            Some(systemd_unit("kube-apiserver.service"))
        );
        let cm = p.controller_manager.expect("a unit of its own");
        assert_eq!(Some(cm.private_key_file), p.signing_key_file);
        assert!(p.watched_dirs.is_empty());
    }

    #[test]
    fn custom_supplies_nothing() {
        assert_eq!(
            preset(Flavour::Custom),
            Preset {
                verification_key_file: None,
                signing_key_file: None,
                apiserver_restart: None,
                controller_manager: None,
                kubeconfig: None,
                watched_dirs: Vec::new(),
            }
        );
    }

    #[test]
    fn default_timings_allow_the_default_cache_age() {
        assert!(TIMINGS.publish_settle >= CACHE_MAX_AGE);
        assert!(TIMINGS.retire_after >= MIN_RETIRE_AFTER);
    }
}
