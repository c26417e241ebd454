//! JWKS rendering: `render_jwks` over 1,000 keys, and `keyrot jwks` over 100 key files as a process.
//!
//! The keys are generated once, before timing: mostly P-256 with a few RSA-2048 keys mixed in,
//! since a JWKS's size is dominated by its RSA moduli.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Table, iterations, measuring};
use keyrot::documents::render_jwks;
use keyrot::keys::{Alg, GenerateSpec, SigningKey, VerificationKey};

const KEYROT: &str = env!("CARGO_BIN_EXE_keyrot");

/// `count` public keys; every `rsa_every`-th one is RSA-2048, the rest P-256.
fn keys(count: usize, rsa_every: usize) -> Vec<VerificationKey> {
    (0..count)
        .map(|i| {
            let spec = if i % rsa_every == rsa_every - 1 {
                GenerateSpec::Rsa { bits: 2048 }
            } else {
                GenerateSpec::P256
            };
            SigningKey::generate(spec).expect("keygen").public().clone()
        })
        .collect()
}

fn main() {
    let mut table = Table::default();
    let (key_count, file_count) = if measuring() { (1000, 100) } else { (10, 3) };

    // 1,000 keys, 5 of them RSA.
    let many = keys(key_count, 200.min(key_count));
    let rendered = render_jwks(&many);
    table.time(
        &format!("render_jwks, {key_count} keys"),
        iterations(50),
        || render_jwks(&many),
    );
    table.note(format!(
        "render_jwks: {key_count} keys ({} RSA-2048, the rest P-256) render to {} bytes.",
        many.iter().filter(|k| k.alg() == Alg::RS256).count(),
        rendered.len()
    ));

    // 100 files of one SPKI public key each, 5 of them RSA.
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = keys(file_count, 20.min(file_count))
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let path = dir.path().join(format!("key-{i:03}.pub"));
            std::fs::write(&path, key.to_spki_pem()).expect("write key file");
            path
        })
        .collect();
    let jwks = |files: &[PathBuf]| {
        let files = files.to_vec();
        move || {
            let mut cmd = Command::new(KEYROT);
            cmd.arg("jwks").args(&files);
            cmd
        }
    };
    table.time_process(
        "keyrot jwks, 1 key file (process)",
        iterations(50),
        jwks(&files[..1]),
    );
    table.time_process(
        &format!("keyrot jwks, {file_count} key files (process)"),
        iterations(50),
        jwks(&files),
    );

    table.print("JWKS rendering");
}
