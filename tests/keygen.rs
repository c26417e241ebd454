//! `keyrot keygen`: key files openssl accepts, with the modes, headers and kid promised.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{jwks_kids, keyrot, keyrot_ok, openssl, openssl_kid, read_string};

struct Pair {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    Pair {
        private: dir.path().join("sa.key"),
        public: dir.path().join("sa.pub"),
        _dir: dir,
    }
}

fn keygen(pair: &Pair, extra: &[&str]) -> common::Run {
    let mut args: Vec<String> = vec!["keygen".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "--private".into(),
        pair.private.display().to_string(),
        "--public".into(),
        pair.public.display().to_string(),
    ]);
    keyrot(args)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn first_line(path: &Path) -> String {
    read_string(path)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn openssl_text(args: &[&str], path: &Path) -> String {
    let mut args = args.to_vec();
    args.extend(["-in", path.to_str().unwrap(), "-noout", "-text"]);
    String::from_utf8(openssl(&args, b"")).unwrap()
}

/// Checks a freshly generated pair and returns its kid.
fn check_pair(pair: &Pair, run: &common::Run, private_header: &str) -> String {
    assert!(run.success, "{run:?}");
    let kid = run.stdout.trim_end_matches('\n');
    assert_eq!(run.stdout, format!("{kid}\n"), "one line: the kid");
    assert_eq!(kid.len(), 43, "base64url of 32 bytes, unpadded: {kid}");

    assert_eq!(mode(&pair.private), 0o600);
    assert_eq!(mode(&pair.public), 0o644);
    assert_eq!(
        first_line(&pair.private),
        format!("-----BEGIN {private_header}-----")
    );
    assert_eq!(first_line(&pair.public), "-----BEGIN PUBLIC KEY-----");

    // openssl reads both files and derives the same kid from each.
    assert_eq!(openssl_kid(&pair.private, false), kid);
    assert_eq!(openssl_kid(&pair.public, true), kid);
    // kube reads the public file (and the private one) as this very key.
    for file in [&pair.public, &pair.private] {
        let jwks = keyrot_ok(["jwks".into(), file.clone()]);
        assert_eq!(jwks_kids(&jwks.stdout), [kid]);
    }
    kid.to_string()
}

#[test]
fn rs256_2048_round_trips_through_openssl() {
    let pair = pair();
    let run = keygen(&pair, &["--alg", "RS256", "--bits", "2048"]);
    check_pair(&pair, &run, "RSA PRIVATE KEY");
    let text = openssl_text(&["rsa"], &pair.private);
    assert!(text.contains("Private-Key: (2048 bit"), "{text}");
    // openssl's consistency check of the private key.
    openssl(
        &[
            "rsa",
            "-check",
            "-noout",
            "-in",
            pair.private.to_str().unwrap(),
        ],
        b"",
    );
}

#[test]
fn rs256_defaults_to_2048_bits() {
    let pair = pair();
    let run = keygen(&pair, &["--alg", "RS256"]);
    check_pair(&pair, &run, "RSA PRIVATE KEY");
    let text = openssl_text(&["pkey", "-pubin"], &pair.public);
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
}

#[test]
fn es256_round_trips_through_openssl() {
    let pair = pair();
    let run = keygen(&pair, &["--alg", "ES256"]);
    check_pair(&pair, &run, "EC PRIVATE KEY");
    let text = openssl_text(&["pkey", "-pubin"], &pair.public);
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    openssl(
        &[
            "ec",
            "-check",
            "-noout",
            "-in",
            pair.private.to_str().unwrap(),
        ],
        b"",
    );
}

#[test]
fn two_keys_are_different() {
    let (a, b) = (pair(), pair());
    let kid_a = check_pair(&a, &keygen(&a, &["--alg", "ES256"]), "EC PRIVATE KEY");
    let kid_b = check_pair(&b, &keygen(&b, &["--alg", "ES256"]), "EC PRIVATE KEY");
    assert_ne!(kid_a, kid_b);
}

#[test]
fn small_rsa_keys_are_refused_and_nothing_is_written() {
    let pair = pair();
    let run = keygen(&pair, &["--alg", "RS256", "--bits", "1024"]);
    assert!(!run.success);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("RSA key size 1024 is not allowed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("2048"), "names the allowed sizes");
    assert!(!pair.private.exists() && !pair.public.exists());
}

#[test]
fn bits_with_es256_are_refused() {
    let pair = pair();
    let run = keygen(&pair, &["--alg", "ES256", "--bits", "2048"]);
    assert!(!run.success);
    assert!(run.stderr.contains("--bits"), "{}", run.stderr);
    assert!(!pair.private.exists() && !pair.public.exists());
}

#[test]
fn existing_files_are_refused_without_force_and_left_untouched() {
    for existing in ["private", "public"] {
        let pair = pair();
        let (taken, other) = if existing == "private" {
            (&pair.private, &pair.public)
        } else {
            (&pair.public, &pair.private)
        };
        fs::write(taken, b"precious bytes\n").unwrap();
        fs::set_permissions(taken, fs::Permissions::from_mode(0o640)).unwrap();
        let run = keygen(&pair, &["--alg", "ES256"]);
        assert!(!run.success, "{existing}: {run:?}");
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.contains(&taken.display().to_string()),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--force"), "{}", run.stderr);
        assert_eq!(fs::read(taken).unwrap(), b"precious bytes\n");
        assert_eq!(mode(taken), 0o640);
        assert!(!other.exists(), "{existing}: no half pair is left");
    }
}

#[test]
fn force_replaces_an_existing_pair() {
    let pair = pair();
    let old_kid = check_pair(&pair, &keygen(&pair, &["--alg", "ES256"]), "EC PRIVATE KEY");
    let old_private = fs::read(&pair.private).unwrap();

    let refused = keygen(&pair, &["--alg", "RS256"]);
    assert!(!refused.success);
    assert_eq!(fs::read(&pair.private).unwrap(), old_private);

    let run = keygen(&pair, &["--alg", "RS256", "--force"]);
    let new_kid = check_pair(&pair, &run, "RSA PRIVATE KEY");
    assert_ne!(new_kid, old_kid);
    assert_ne!(fs::read(&pair.private).unwrap(), old_private);
    // Nothing but the pair is left in the directory (no temp files).
    let mut names: Vec<_> = fs::read_dir(pair.private.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["sa.key", "sa.pub"]);
}
