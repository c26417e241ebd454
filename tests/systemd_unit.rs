//! The shipped unit file: resource limits, the keys it hides, and that no hidden path can stop it.

use std::path::Path;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/keyrot.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of every `KEY=` line, space-separated values split.
fn values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn unit_limits_memory_and_tasks() {
    let unit = unit();
    assert_eq!(values(&unit, "MemoryMax"), ["256M"]);
    assert_eq!(values(&unit, "TasksMax"), ["64"]);
}

#[test]
fn unit_hides_the_ca_and_etcd_keys_next_to_sa_key_and_tolerates_missing_ones() {
    let hidden = values(&unit(), "InaccessiblePaths");
    for path in [
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.key",
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/pki/etcd",
    ] {
        assert!(hidden.contains(&format!("-{path}")), "{path} is not hidden");
    }
    for entry in &hidden {
        assert!(
            entry.starts_with("-/"),
            "{entry}: without '-', a missing path fails the unit"
        );
        // keyrot's own files stay reachable.
        assert!(
            !entry.ends_with("sa.key") && !entry.ends_with("sa.pub"),
            "{entry}"
        );
    }
}

#[test]
fn the_probe_kubeconfig_is_outside_what_protect_home_hides() {
    assert_eq!(values(&unit(), "ProtectHome"), ["yes"]);
    let hard_way = keyrot::plan::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("rotation-plans/hard-way.yaml"),
    )
    .unwrap();
    // The preset alone, without the example's probe section.
    let preset = keyrot::plan::parse(
        Path::new("/etc/keyrot/plan.yaml"),
        "cluster: x\nflavour: systemd\nissuer: { url: \"https://oidc.example.com/x\" }\n\
         targets: [{ name: web, localDirectory: /var/www/oidc }]\n",
    )
    .unwrap();
    for plan in [hard_way, preset] {
        let keyrot::plan::Probe::Kubeconfig { path, .. } = plan.probe else {
            panic!("the hard way probes");
        };
        assert!(
            !path.starts_with("/root") && !path.starts_with("/home"),
            "{}",
            path.display()
        );
    }
}
