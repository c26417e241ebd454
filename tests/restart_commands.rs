//! Restart commands run by the real binary: what they inherit from keyrot.

mod common;

use std::process::Command;

use common::Run;

#[test]
fn restart_command_does_not_see_cloud_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("restart.env");
    let argv =
        serde_json::to_string(&["sh", "-c", &format!("env >> '{}'", seen.display())]).unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "cluster: test\nflavour: custom\ntestPlan: true\nkey: {{ algorithm: ES256 }}\n\
             stateDir: state\nprivateKeyDir: keys\n\
             apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n\
             \x20 restart: {{ command: {argv}, timeout: 1m }}\n\
             probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
             targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n\
             timings: {{ publishSettle: 1s, retireAfter: 1s, gateTimeout: 10s, retryBackoff: 1s, retryBackoffMax: 2s }}\n"
        ),
    )
    .unwrap();
    let keyrot = |args: &[&str]| -> Run {
        Command::new(env!("CARGO_BIN_EXE_keyrot"))
            .args(args)
            .args(["-c", plan.to_str().unwrap()])
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-for-the-publishers")
            .env(
                "AZURE_STORAGE_ACCOUNT_KEY",
                "azure-secret-for-the-publishers",
            )
            .env("GOOGLE_APPLICATION_CREDENTIALS", "/gcp/secret.json")
            .output()
            .expect("keyrot runs")
            .into()
    };
    let init = keyrot(&["init"]);
    assert!(init.success, "{init:?}");
    let rotate = keyrot(&["rotate"]);
    assert!(rotate.success, "{rotate:?}");
    let env = std::fs::read_to_string(&seen).expect("the restart command ran");
    for secret in ["AWS_", "AZURE_", "GOOGLE_", "secret"] {
        assert!(
            !env.contains(secret),
            "{secret} reached the command:\n{env}"
        );
    }
    assert!(env.contains("LANG=C"), "{env}");
}
