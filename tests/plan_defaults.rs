//! How presets and defaults fill a plan, and how written fields override them.

use std::path::Path;
use std::time::Duration;

use chrono::TimeDelta;
use keyrot::decision::Phase;
use keyrot::keys::GenerateSpec;
use keyrot::plan::{self, ControllerManager, Flavour, Plan, Probe, Restart};

/// A plan with only the fields no flavour supplies, plus `extra`.
fn plan_with(flavour: &str, extra: &str) -> Plan {
    plan_from(&format!(
        "cluster: c\nflavour: {flavour}\nissuer: {{ url: \"https://oidc.example.com/c\" }}\n\
         targets: [{{ name: web, localDirectory: /srv/www }}]\n{extra}"
    ))
}

fn plan_from(text: &str) -> Plan {
    match plan::parse(Path::new("/etc/keyrot/plan.yaml"), text) {
        Ok(plan) => plan,
        Err(err) => panic!("{err}\n--- in ---\n{text}"),
    }
}

#[test]
fn keyrot_defaults_apply_to_every_flavour() {
    let plan = plan_with("kubeadm", "");
    assert_eq!(plan.key, GenerateSpec::Rsa { bits: 2048 });
    assert_eq!(plan.state_dir, Path::new("/var/lib/keyrot"));
    assert_eq!(plan.private_key_dir, Path::new("/var/lib/keyrot/keys"));
    assert_eq!(
        plan.issuer.jwks_uri,
        "https://oidc.example.com/c/openid/v1/jwks"
    );
    assert_eq!(plan.targets[0].cache_max_age, TimeDelta::minutes(5));
    assert!(plan.schedule.is_none());
    assert_eq!(plan.timings.publish_settle, TimeDelta::minutes(10));
    assert_eq!(plan.timings.retire_after, TimeDelta::hours(24));
    assert_eq!(plan.timings.gate_timeout, TimeDelta::minutes(10));
    assert_eq!(plan.timings.retry_backoff, TimeDelta::seconds(30));
    assert_eq!(plan.timings.retry_backoff_max, TimeDelta::minutes(30));
    assert!(plan.approvals.is_empty());
    assert_eq!(plan.keep_retired, 5);
    assert!(!plan.test_plan);
    assert_eq!(
        plan.probe,
        Probe::Kubeconfig {
            path: "/etc/keyrot/probe.kubeconfig".into(),
            namespace: "keyrot-system".into(),
            service_account: "keyrot-probe".into(),
            audience: "keyrot-probe".into(),
        }
    );
}

#[test]
fn written_fields_override_the_preset_one_by_one() {
    let plan = plan_with(
        "kubeadm",
        "apiserver:\n  signingKeyFile: /etc/kubernetes/pki/sa-signing.key\n\
         controllerManager:\n  restart: none\n",
    );
    // Overridden...
    assert_eq!(
        plan.apiserver.signing_key_file,
        Path::new("/etc/kubernetes/pki/sa-signing.key")
    );
    // ...while the rest of the section keeps the preset.
    assert_eq!(
        plan.apiserver.verification_bundle,
        Path::new("/etc/kubernetes/pki/sa.pub")
    );
    assert_eq!(
        plan.apiserver.restart,
        Restart::StaticPod {
            manifest: "/etc/kubernetes/manifests/kube-apiserver.yaml".into()
        }
    );
    assert_eq!(
        plan.controller_manager,
        Some(ControllerManager {
            private_key_file: "/etc/kubernetes/pki/sa.key".into(),
            restart: Restart::None,
        })
    );
}

#[test]
fn sections_can_be_switched_off_with_none() {
    let plan = plan_with("kubeadm", "controllerManager: none\nprobe: none\n");
    assert_eq!(plan.controller_manager, None);
    assert_eq!(plan.probe, Probe::None);
}

#[test]
fn a_controller_manager_added_to_k3s_needs_its_own_fields() {
    assert_eq!(plan_with("k3s", "").controller_manager, None);
    let plan = plan_with(
        "k3s",
        "controllerManager:\n  privateKeyFile: /etc/kcm/sa.key\n  restart: { command: [pkill, -HUP, kcm] }\n",
    );
    assert_eq!(
        plan.controller_manager,
        Some(ControllerManager {
            private_key_file: "/etc/kcm/sa.key".into(),
            restart: Restart::Command {
                argv: vec!["pkill".into(), "-HUP".into(), "kcm".into()],
                timeout: Duration::from_secs(90),
            },
        })
    );
    let err = plan::parse(
        Path::new("p.yaml"),
        "cluster: c\nflavour: k3s\nissuer: { url: \"https://a.example\" }\n\
         targets: [{ name: w, localDirectory: /w }]\ncontrollerManager: { privateKeyFile: /k }\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:5:1: controllerManager.restart: required: flavour k3s has no default for it"
    );
}

#[test]
fn relative_paths_resolve_against_the_plan_directory() {
    let plan = plan_with(
        "custom",
        "stateDir: state\napiserver:\n  verificationKeyFile: ../pki/sa.pub\n  signingKeyFile: ./pki/sa.key\n\
         \x20 restart: { systemdUnit: kube-apiserver.service }\nprobe: { kubeconfig: admin.conf }\n",
    );
    assert_eq!(plan.state_dir, Path::new("/etc/keyrot/state"));
    assert_eq!(plan.private_key_dir, Path::new("/etc/keyrot/state/keys"));
    assert_eq!(
        plan.apiserver.verification_bundle,
        Path::new("/etc/pki/sa.pub")
    );
    assert_eq!(
        plan.apiserver.signing_key_file,
        Path::new("/etc/keyrot/pki/sa.key")
    );
    assert!(
        matches!(plan.probe, Probe::Kubeconfig { ref path, .. } if path == Path::new("/etc/keyrot/admin.conf"))
    );
    assert_eq!(plan.flavour, Flavour::Custom);
}

#[test]
fn every_written_value_reaches_the_plan() {
    let plan = plan_from(
        "cluster: c\nflavour: rke2\ntestPlan: true\nkey: { algorithm: ES256 }\nprivateKeyDir: /secure/keys\n\
         issuer: { url: \"https://oidc.example.com/c\", jwksUri: \"https://keys.example.com/c.json\" }\n\
         targets: [{ name: a, localDirectory: /a, cacheMaxAge: 30s }, { name: b, localDirectory: /b, cacheMaxAge: 2m }]\n\
         schedule: { cron: \"15 4 * * 1-5\", timeZone: America/New_York }\n\
         timings: { publishSettle: 2m, retireAfter: 1h, gateTimeout: 90s, retryBackoff: 1s, retryBackoffMax: 1m }\n\
         approvals: [retire, promote, promote]\nkeepRetired: 0\n",
    );
    assert!(plan.test_plan);
    assert_eq!(plan.key, GenerateSpec::P256);
    assert_eq!(plan.private_key_dir, Path::new("/secure/keys"));
    assert_eq!(plan.issuer.jwks_uri, "https://keys.example.com/c.json");
    assert_eq!(plan.targets.len(), 2);
    assert_eq!(plan.targets[1].cache_max_age, TimeDelta::minutes(2));
    let schedule = plan.schedule.unwrap();
    assert_eq!(schedule.expression(), "15 4 * * 1-5");
    assert_eq!(schedule.timezone(), chrono_tz::America::New_York);
    assert_eq!(plan.timings.retire_after, TimeDelta::hours(1));
    assert_eq!(plan.timings.gate_timeout, TimeDelta::seconds(90));
    assert_eq!(
        plan.approvals.into_iter().collect::<Vec<_>>(),
        [Phase::Promote, Phase::Retire]
    );
    assert_eq!(plan.keep_retired, 0);
    assert_eq!(
        plan.apiserver.restart,
        Restart::SystemdUnit {
            unit: "rke2-server.service".into(),
            timeout: Duration::from_secs(90),
        }
    );
}

#[test]
fn parse_and_load_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.yaml");
    let text = "cluster: c\nflavour: k3s\nissuer: { url: \"https://a.example\" }\n\
                targets: [{ name: w, localDirectory: www }]\n";
    std::fs::write(&path, text).unwrap();
    let loaded = plan::load(&path).unwrap();
    let parsed = plan::parse(&path, text).unwrap();
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.targets, parsed.targets);
    assert_eq!(
        loaded.targets[0].kind,
        keyrot::plan::TargetKind::LocalDirectory {
            path: dir.path().join("www")
        }
    );
}

#[test]
fn metrics_are_off_unless_asked_for_and_listen_on_localhost_by_default() {
    assert_eq!(plan_with("kubeadm", "").metrics, None);
    let default = plan_with("kubeadm", "metrics: {}\n").metrics.unwrap();
    assert_eq!(default.listen.to_string(), "127.0.0.1:9464");
    let v6 = plan_with("kubeadm", "metrics: { listen: \"[::1]:9100\" }\n")
        .metrics
        .unwrap();
    assert_eq!(v6.listen.to_string(), "[::1]:9100");
    let err = plan::parse(
        Path::new("p.yaml"),
        "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://oidc.example.com/c\" }\n\
         targets: [{ name: web, localDirectory: /srv/www }]\nmetrics: { listen: 127.0.0.1:0 }\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:5:20: metrics.listen: \"127.0.0.1:0\" has port 0: name the port Prometheus scrapes"
    );
}
