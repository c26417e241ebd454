//! The shipped unit file: resource limits, the keys it hides, that no hidden path can stop it,
//! and what systemd itself makes of it (`systemd-analyze`, which scripts/test.sh installs).

use std::path::Path;
use std::process::{Command, Output};

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

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}: install the systemd package (scripts/test.sh does)")
        })
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    // verify also checks that ExecStart= names an executable: the binary under test stands in
    // for /usr/bin/keyrot, where the package puts it.
    let unit = unit();
    let exec = "ExecStart=/usr/bin/keyrot ";
    assert_eq!(unit.lines().filter(|l| l.starts_with(exec)).count(), 1);
    let here = unit.replace(
        exec,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_keyrot")),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyrot.service");
    std::fs::write(&path, here).unwrap();

    let run = systemd_analyze(&["verify", &path.display().to_string()]);
    // It exits 0 after warnings such as an unknown key: they count too.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success() && said.is_empty(), "{said}");
}

#[test]
fn exposure_is_the_one_the_readme_states() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/keyrot.service");
    let run = systemd_analyze(&["security", "--offline=yes", &path.display().to_string()]);
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let marker = "Overall exposure level for keyrot.service: ";
    let score = said
        .lines()
        .find_map(|l| l.split(marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in {said}"));
    let exposure: f64 = score.parse().unwrap();
    // 0 is a fully sandboxed service, 10 an unsandboxed one: a change that loosens the sandbox
    // this far is a mistake, and any change shows as a README that no longer matches.
    assert!(exposure < 4.0, "exposure {exposure}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("rates its exposure **{score}**")),
        "README.md does not state the exposure {score}"
    );
}
