//! Key generation: keyrot's RSA-2048, RSA-4096 and P-256 keygen, next to `openssl genrsa`.
//!
//! The library rows time `SigningKey::generate` alone. The process rows time whole commands,
//! `keyrot keygen` (generate and write both files) and `openssl genrsa`, so those two compare
//! like with like. RSA generation time varies a lot from key to key (prime search), hence
//! median, min and max.

mod common;

use std::process::Command;

use common::{Table, have_openssl, iterations, measuring};
use keyrot::keys::{GenerateSpec, SigningKey};

const KEYROT: &str = env!("CARGO_BIN_EXE_keyrot");

fn main() {
    let mut table = Table::default();
    let generate = |spec| SigningKey::generate(spec).expect("keygen");

    table.time("SigningKey::generate RSA-2048", iterations(25), || {
        generate(GenerateSpec::Rsa { bits: 2048 })
    });
    if measuring() {
        table.time("SigningKey::generate RSA-4096", 15, || {
            generate(GenerateSpec::Rsa { bits: 4096 })
        });
    }
    table.time("SigningKey::generate P-256", iterations(200), || {
        generate(GenerateSpec::P256)
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let keygen = |bits: &'static str| {
        let private = dir.path().join("sa.key");
        let public = dir.path().join("sa.pub");
        move || {
            let mut cmd = Command::new(KEYROT);
            cmd.args([
                "keygen",
                "--alg",
                "RS256",
                "--bits",
                bits,
                "--force",
                "--private",
            ])
            .arg(&private)
            .arg("--public")
            .arg(&public);
            cmd
        }
    };
    table.time_process(
        "keyrot keygen --alg RS256 --bits 2048",
        iterations(25),
        keygen("2048"),
    );
    if measuring() {
        table.time_process("keyrot keygen --alg RS256 --bits 4096", 15, keygen("4096"));
    }

    // The comparison adds nothing to a smoke check.
    if measuring() && have_openssl() {
        let genrsa = |bits: &'static str| {
            move || {
                let mut cmd = Command::new("openssl");
                cmd.args(["genrsa", bits]);
                cmd
            }
        };
        table.time_process("openssl genrsa 2048", 25, genrsa("2048"));
        table.time_process("openssl genrsa 4096", 15, genrsa("4096"));
    } else if measuring() {
        table.note("openssl not found: the `openssl genrsa` comparison was skipped.");
    }

    table.print("Key generation (one key per run)");
}
