//! Plan files end to end: the examples validate, each bad plan fails exactly as its `# expect:` says.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyrot::plan::{self, Flavour, Probe, Restart, TargetKind};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_plan_validates() {
    let examples = yaml_files(&repo_file("rotation-plans"));
    let names: Vec<_> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    for expected in [
        "hard-way.yaml",
        "k3s.yaml",
        "kind.yaml",
        "kubeadm.yaml",
        "sandbox.yaml",
    ] {
        assert!(
            names.contains(&expected),
            "rotation-plans/{expected} is missing"
        );
    }
    for example in &examples {
        if let Err(err) = plan::load(example) {
            panic!("{} does not validate:\n{err}", example.display());
        }
    }
}

#[test]
fn the_sandbox_keeps_everything_next_to_the_plan() {
    let path = repo_file("rotation-plans/sandbox.yaml");
    let plan = plan::load(&path).unwrap();
    let sandbox = repo_file("rotation-plans/sandbox");
    assert!(plan.test_plan);
    assert_eq!(plan.flavour, Flavour::Custom);
    assert_eq!(plan.probe, Probe::None);
    assert_eq!(plan.apiserver.restart, Restart::None);
    assert!(plan.controller_manager.is_none());
    for dir in [&plan.state_dir, &plan.private_key_dir] {
        assert!(
            dir.starts_with(&sandbox),
            "{} is outside the sandbox",
            dir.display()
        );
    }
    assert!(plan.apiserver.verification_bundle.starts_with(&sandbox));
    assert!(plan.apiserver.signing_key_file.starts_with(&sandbox));
    assert_eq!(plan.targets.len(), 1);
    let TargetKind::LocalDirectory { path } = &plan.targets[0].kind else {
        panic!("the sandbox publishes to a local directory");
    };
    assert!(path.starts_with(&sandbox));
    assert!(plan.timings.retire_after < chrono::TimeDelta::minutes(1));
    assert!(plan.timings.publish_settle >= plan.targets[0].cache_max_age);
}

#[test]
fn the_kubeadm_example_gets_its_paths_from_the_preset() {
    let plan = plan::load(&repo_file("rotation-plans/kubeadm.yaml")).unwrap();
    assert_eq!(
        plan.apiserver.signing_key_file,
        Path::new("/etc/kubernetes/pki/sa.key")
    );
    assert_eq!(
        plan.apiserver.verification_bundle,
        Path::new("/etc/kubernetes/pki/sa.pub")
    );
    let cm = plan.controller_manager.expect("kubeadm preset");
    assert_eq!(cm.private_key_file, plan.apiserver.signing_key_file);
    let schedule = plan.schedule.expect("a schedule");
    assert_eq!(schedule.expression(), "0 3 * * SUN");
    assert_eq!(schedule.timezone(), chrono_tz::Europe::Berlin);
}

/// The commented cloud targets of the kubeadm example, uncommented, must validate: they are the
/// example people copy.
#[test]
fn the_commented_cloud_targets_of_the_kubeadm_example_validate() {
    let path = repo_file("rotation-plans/kubeadm.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("#   ") {
            Some(rest) if rest.starts_with(' ') || rest.starts_with('-') => format!("  {rest}"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let plan = plan::parse(&path, &uncommented).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = plan.targets.iter().map(|t| t.kind.field_name()).collect();
    assert_eq!(
        kinds,
        [
            "localDirectory",
            "s3",
            "azure",
            "gcs",
            "gcpWorkloadIdentityProvider"
        ]
    );
    let TargetKind::S3 { bucket, objects } = &plan.targets[1].kind else {
        panic!("targets[1] is the S3 bucket");
    };
    assert_eq!(bucket.region, "eu-west-1");
    assert_eq!(bucket.endpoint, None);
    assert_eq!(objects.prefix, "");
    assert_eq!(objects.cache_control, "public, max-age=300");
    assert_eq!(objects.jwks_content_type, "application/jwk-set+json");
    assert_eq!(objects.public.url, None, "read back at the issuer URL");
    let TargetKind::Gcs { objects, .. } = &plan.targets[3].kind else {
        panic!("targets[3] is the GCS bucket");
    };
    assert_eq!(objects.prefix, "prod-eu1");
    assert_eq!(objects.jwks_content_type, "application/json");
    let TargetKind::GcpWorkloadIdentityProvider(provider) = &plan.targets[4].kind else {
        panic!("targets[4] is the GCP provider");
    };
    assert_eq!(provider.endpoint, plan::GCP_IAM_ENDPOINT);
}

/// The `# expect: ` lines a corpus file starts with.
fn expected_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map_while(|line| line.strip_prefix("# expect: "))
        .collect()
}

#[test]
fn every_bad_plan_fails_with_exactly_the_expected_problems() {
    let corpus = yaml_files(&repo_file("tests/data/bad-plans"));
    assert!(corpus.len() >= 15, "only {} bad plans", corpus.len());
    let mut failures = Vec::new();
    for file in &corpus {
        let name = file.file_name().unwrap().to_str().unwrap();
        let text = fs::read_to_string(file).unwrap();
        let expected = expected_lines(&text);
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        // Named by file name alone, so messages do not depend on where the repository is.
        let found = match plan::parse(Path::new(name), &text) {
            Ok(_) => vec!["(the plan validated)".to_string()],
            Err(err) => err.to_string().lines().map(str::to_string).collect(),
        };
        if found != expected {
            failures.push(format!(
                "{name}\n  expected: {expected:#?}\n  found:    {found:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_corpus_covers_the_problems_people_make() {
    let corpus = yaml_files(&repo_file("tests/data/bad-plans"));
    let all: String = corpus
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    for needle in [
        ": colour: unknown field",
        ": timings.retireAfer: unknown field",
        "invalid type",
        "is not a duration",
        "has 4 fields",
        "unknown time zone",
        "may retire keys sooner",
        "caches could still serve",
        "must use the https scheme",
        "may not include a query",
        "is also apiserver.verificationKeyFile",
        "is already the name of",
        "RSA key size 1024",
        "ES256 keys are always P-256",
        "flavour custom supplies no defaults",
        "where the kubelet runs every file",
        "is not an address",
        "is longer than 10 years",
    ] {
        assert!(all.contains(needle), "no bad plan expects {needle:?}");
    }
}

#[test]
fn validate_command_summarises_a_good_plan() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(["validate", "-c"])
        .arg(repo_file("rotation-plans/kubeadm.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("kubeadm.yaml is valid"), "{stdout}");
    assert!(
        stdout.contains("\"0 3 * * SUN\" in Europe/Berlin; next run "),
        "{stdout}"
    );
}

#[test]
fn validate_command_lists_every_problem_and_exits_1() {
    let file = repo_file("tests/data/bad-plans/many-problems.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(["validate", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = fs::read_to_string(&file).unwrap();
    let expected = expected_lines(&text);
    // Here the file is named as given on the command line.
    let prefix = format!("{}:", file.display());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (line, expected) in lines.iter().zip(&expected) {
        let expected = expected.strip_prefix("many-problems.yaml:").unwrap();
        assert_eq!(line.strip_prefix(&prefix), Some(expected));
    }
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with(&format!(": {} problems", expected.len()))
    );
}

#[test]
fn validate_command_reports_an_unreadable_plan() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(["validate", "-c", "no/such/plan.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("no/such/plan.yaml: cannot read the plan: "),
        "{stderr}"
    );
}

#[test]
fn an_issuer_migration_section_gets_its_defaults() {
    let text = "cluster: test
flavour: kubeadm
issuer: { url: \"https://kubernetes.default.svc.cluster.local\" }
targets: [{ name: web, localDirectory: /var/www/oidc }]
issuerMigration:
  newIssuer: https://oidc.example.com/test
  flags: { rke2Config: /etc/rancher/rke2/config.yaml }
";
    let plan = plan::parse(Path::new("/etc/keyrot/plan.yaml"), text).unwrap();
    let migration = plan.issuer_migration.expect("a migration");
    assert_eq!(migration.new_issuer.url, "https://oidc.example.com/test");
    assert_eq!(
        migration.new_issuer.jwks_uri,
        "https://oidc.example.com/test/openid/v1/jwks"
    );
    assert_eq!(migration.grace_period, chrono::TimeDelta::hours(24));
    assert!(!migration.drop_old_issuer);
    assert_eq!(
        migration.flags,
        plan::FlagSource::File {
            path: PathBuf::from("/etc/rancher/rke2/config.yaml"),
            file: keyrot::issuer::FlagFile::K3sConfig(keyrot::issuer::K3sDefaults::rke2(
                "cluster.local"
            )),
        }
    );
    let without = "cluster: test
flavour: kubeadm
issuer: { url: \"https://oidc.example.com/test\" }
targets: [{ name: web, localDirectory: /var/www/oidc }]
";
    let plan = plan::parse(Path::new("/etc/keyrot/plan.yaml"), without).unwrap();
    assert_eq!(plan.issuer_migration, None);
}

#[test]
fn canaries_get_each_clouds_endpoint_audience_and_the_documented_subject() {
    use keyrot::plan::{DEFAULT_CANARY_SUBJECT, RelyingParty};
    let provider = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/k8s";
    let text = format!(
        "cluster: test\nflavour: kubeadm\nissuer: {{ url: \"https://oidc.example.com/test\" }}\n\
         targets:\n\
         \x20 - name: s3\n    s3: {{ bucket: oidc, region: eu-west-1 }}\n\
         \x20   canary: {{ kind: aws-sts, roleArn: \"arn:aws:iam::123456789012:role/keyrot-canary\", region: eu-west-1 }}\n\
         \x20 - name: gcs\n    gcs: {{ bucket: oidc }}\n\
         \x20   canary: {{ kind: gcp-sts, provider: \"{provider}\", subject: canary }}\n\
         \x20 - name: azure\n    azure: {{ account: acct, container: oidc }}\n\
         \x20   canary: {{ kind: entra, tenant: contoso.onmicrosoft.com, clientId: 72f988bf-86f1-41af-91ab-2d7cd011db47, audience: api://custom }}\n"
    );
    let plan = plan::parse(Path::new("plan.yaml"), &text).unwrap();
    let canaries: Vec<_> = plan
        .targets
        .iter()
        .map(|t| t.canary.clone().unwrap())
        .collect();
    assert_eq!(
        canaries[0].relying_party,
        RelyingParty::AwsSts {
            role_arn: "arn:aws:iam::123456789012:role/keyrot-canary".into(),
            endpoint: "https://sts.eu-west-1.amazonaws.com".into(),
        }
    );
    assert_eq!(canaries[0].audience, "sts.amazonaws.com");
    assert_eq!(canaries[0].subject, DEFAULT_CANARY_SUBJECT);
    assert_eq!(
        canaries[1].relying_party,
        RelyingParty::GcpSts {
            provider: provider.into(),
            endpoint: "https://sts.googleapis.com".into(),
        }
    );
    assert_eq!(canaries[1].audience, format!("https:{provider}"));
    assert_eq!(canaries[1].subject, "canary");
    assert_eq!(canaries[2].relying_party.kind(), "entra");
    assert_eq!(canaries[2].audience, "api://custom");
}

#[test]
fn validate_command_names_the_signer_its_switch_and_the_next_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(["validate", "-c"])
        .arg(repo_file("rotation-plans/kubeadm-external-signer.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout
            .contains("`keyrot switch-signer` edits /etc/kubernetes/manifests/kube-apiserver.yaml"),
        "{stdout}"
    );
    assert!(stdout.contains("keepNextKey          true"), "{stdout}");
}
