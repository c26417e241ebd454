//! Shared helpers for the integration tests: fixture paths, the openssl oracle, running `keyrot`.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod daemon;
pub mod kube_plugin;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `tests/data/<rel>`.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A Kubernetes vector from `tests/data/kubernetes/`.
pub fn kube(name: &str) -> PathBuf {
    data("kubernetes").join(name)
}

/// A generated fixture from `tests/data/pem/`.
pub fn pem(name: &str) -> PathBuf {
    data("pem").join(name)
}

pub fn read_string(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The result of running `keyrot` once.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// Runs the `keyrot` binary built for these tests.
pub fn keyrot<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(args)
        .output()
        .expect("keyrot runs")
        .into()
}

/// Runs `keyrot` and insists that it succeeded.
pub fn keyrot_ok<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let run = keyrot(args);
    assert!(run.success, "keyrot failed: {run:?}");
    run
}

/// Runs openssl with `args`, feeding `stdin`; panics unless it succeeds.
pub fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed by these tests as an independent oracle");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The kid of a key file as openssl computes it: base64url (no padding) of SHA-256 over the DER
/// SubjectPublicKeyInfo. `public` says whether the file holds a public key or a private key.
pub fn openssl_kid(path: &Path, public: bool) -> String {
    let path = path.to_str().unwrap();
    let mut args = vec!["pkey", "-in", path, "-pubout", "-outform", "DER"];
    if public {
        args.insert(1, "-pubin");
    }
    let der = openssl(&args, b"");
    let digest = openssl(&["dgst", "-sha256", "-binary"], &der);
    let b64 = openssl(&["base64", "-A"], &digest);
    String::from_utf8(b64)
        .unwrap()
        .trim()
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// One row of `tests/data/pem/expected.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub file: String,
    pub block: usize,
    pub outcome: ExpectedOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedOutcome {
    Key {
        form: String,
        alg: String,
        kid: String,
    },
    Skip {
        reason: String,
    },
}

impl Expected {
    pub fn path(&self) -> PathBuf {
        pem(&self.file)
    }

    pub fn kid(&self) -> Option<&str> {
        match &self.outcome {
            ExpectedOutcome::Key { kid, .. } => Some(kid),
            ExpectedOutcome::Skip { .. } => None,
        }
    }
}

/// Every row of the openssl oracle, in order.
pub fn expected_rows() -> &'static [Expected] {
    static ROWS: OnceLock<Vec<Expected>> = OnceLock::new();
    ROWS.get_or_init(|| {
        read_string(&pem("expected.tsv"))
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let cols: Vec<&str> = line.split('\t').collect();
                assert_eq!(cols.len(), 6, "bad expected.tsv row: {line:?}");
                let outcome = match cols[2] {
                    "key" => ExpectedOutcome::Key {
                        form: cols[3].to_string(),
                        alg: cols[4].to_string(),
                        kid: cols[5].to_string(),
                    },
                    "skip" => ExpectedOutcome::Skip {
                        reason: cols[3].to_string(),
                    },
                    other => panic!("bad result {other:?} in expected.tsv"),
                };
                Expected {
                    file: cols[0].to_string(),
                    block: cols[1].parse().unwrap(),
                    outcome,
                }
            })
            .collect()
    })
}

/// The oracle's rows for one fixture file, in block order.
pub fn rows_of(file: &str) -> Vec<&'static Expected> {
    let rows: Vec<_> = expected_rows().iter().filter(|r| r.file == file).collect();
    assert!(!rows.is_empty(), "{file} is not in expected.tsv");
    rows
}

/// The kids kube-apiserver reads from one fixture file, in order, per the oracle.
pub fn kids_of(file: &str) -> Vec<String> {
    rows_of(file)
        .into_iter()
        .filter_map(|r| r.kid().map(str::to_string))
        .collect()
}

/// Fixture files in oracle order, without repeats.
pub fn fixture_files() -> Vec<&'static str> {
    let mut files: Vec<&str> = Vec::new();
    for row in expected_rows() {
        if !files.contains(&row.file.as_str()) {
            files.push(&row.file);
        }
    }
    files
}

/// What `keyrot inspect` and the warnings must say for each skip reason of the oracle.
pub fn skip_message(reason: &str) -> &'static str {
    match reason {
        "rsa-pkcs1-public" => "PKCS#1 RSA public key",
        "pkcs8-ec-private" => "PKCS#8 EC private key",
        "ed25519" => "Ed25519",
        "encrypted" => "encrypted",
        "ec-parameters" => "EC parameters",
        "not-a-key" => "not a key",
        other => panic!("unknown skip reason {other:?} in expected.tsv"),
    }
}

/// The kids of a JWKS body, in order.
pub fn jwks_kids(jwks: &str) -> Vec<String> {
    jwks_keys(jwks)
        .iter()
        .map(|k| k["kid"].as_str().expect("kid is a string").to_string())
        .collect()
}

/// The keys of a JWKS body.
pub fn jwks_keys(jwks: &str) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(jwks).expect("JWKS is JSON");
    doc["keys"].as_array().expect("JWKS has keys").clone()
}

/// A sandbox-like plan at `dir/plan.yaml`: key files under pki/, state/ and keys/, one local
/// target www/ with a one-second max-age, nothing restarted or probed; `timings` is the body of
/// the plan's `timings` mapping (e.g. `publishSettle: 1s, retireAfter: 1s, ...`).
pub fn sandbox_plan(dir: &Path, timings: &str) -> PathBuf {
    let plan = dir.join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "cluster: test\nflavour: custom\ntestPlan: true\nkey: {{ algorithm: ES256 }}\n\
             stateDir: state\nprivateKeyDir: keys\n\
             apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  restart: none\n\
             probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
             targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n\
             timings: {{ {timings} }}\n"
        ),
    )
    .unwrap();
    plan
}
