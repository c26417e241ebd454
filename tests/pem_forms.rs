//! Every PEM form of tests/data/pem read as the openssl oracle (expected.tsv) says kube reads it.

mod common;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    Expected, ExpectedOutcome, expected_rows, fixture_files, jwks_keys, jwks_kids, keyrot,
    keyrot_ok, kids_of, openssl, pem, read_string, rows_of, skip_message,
};
use keyrot::documents::render_jwks;
use keyrot::keys::reader::read_file;
use keyrot::keys::{KeyForm, Skip, load_verification_keys};

fn form_tag(form: KeyForm) -> &'static str {
    match form {
        KeyForm::RsaPkcs1Private => "pkcs1-private",
        KeyForm::RsaPkcs8Private => "pkcs8-private",
        KeyForm::SpkiPublic => "spki",
        KeyForm::Certificate => "certificate",
        KeyForm::Sec1EcPrivate => "sec1-private",
    }
}

/// How `keyrot inspect` names each form.
fn form_text(tag: &str) -> &'static str {
    match tag {
        "pkcs1-private" => "(PKCS#1 RSA private key)",
        "pkcs8-private" => "(PKCS#8 RSA private key)",
        "spki" => "(SPKI public key)",
        "certificate" => "(X.509 certificate)",
        "sec1-private" => "(SEC1 EC private key)",
        other => panic!("unknown form {other:?}"),
    }
}

fn skip_tag(skip: &Skip) -> String {
    match skip {
        Skip::RsaPkcs1Public => "rsa-pkcs1-public".into(),
        Skip::Pkcs8EcPrivate => "pkcs8-ec-private".into(),
        Skip::Ed25519 => "ed25519".into(),
        Skip::Encrypted => "encrypted".into(),
        Skip::EcParameters => "ec-parameters".into(),
        Skip::NotAKey => "not-a-key".into(),
        other => format!("unexpected: {other:?}"),
    }
}

fn has_key(file: &str) -> bool {
    !kids_of(file).is_empty()
}

#[test]
fn the_oracle_covers_every_form_the_project_promises() {
    let rows = expected_rows();
    let forms: Vec<&str> = rows
        .iter()
        .filter_map(|r| match &r.outcome {
            ExpectedOutcome::Key { form, .. } => Some(form.as_str()),
            ExpectedOutcome::Skip { .. } => None,
        })
        .collect();
    for form in [
        "pkcs1-private",
        "pkcs8-private",
        "spki",
        "certificate",
        "sec1-private",
    ] {
        assert!(forms.contains(&form), "no {form} fixture");
    }
    for alg in ["RS256", "ES256", "ES384", "ES512"] {
        assert!(
            rows.iter()
                .any(|r| matches!(&r.outcome, ExpectedOutcome::Key { alg: a, .. } if a == alg)),
            "no {alg} fixture"
        );
    }
    for reason in [
        "rsa-pkcs1-public",
        "pkcs8-ec-private",
        "ed25519",
        "encrypted",
        "ec-parameters",
    ] {
        assert!(
            rows.iter().any(|r| r.outcome
                == ExpectedOutcome::Skip {
                    reason: reason.into()
                }),
            "no {reason} fixture"
        );
    }
    // Every fixture file on disk is described by the oracle.
    let mut on_disk: Vec<String> = std::fs::read_dir(common::data("pem"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pem"))
        .collect();
    on_disk.sort();
    let mut described: Vec<String> = fixture_files().into_iter().map(String::from).collect();
    described.sort();
    assert_eq!(on_disk, described);
}

#[test]
fn library_reads_every_block_as_the_oracle_says() {
    for file in fixture_files() {
        let report = read_file(&pem(file)).unwrap();
        let rows = rows_of(file);
        assert_eq!(report.blocks.len(), rows.len(), "{file}: {report:#?}");
        for (block, row) in report.blocks.iter().zip(rows) {
            let at = format!("{file} block {}", row.block);
            match (&block.outcome, &row.outcome) {
                (Ok((key, form)), ExpectedOutcome::Key { form: f, alg, kid }) => {
                    assert_eq!(key.kid(), kid, "{at}");
                    assert_eq!(key.alg().as_str(), alg, "{at}");
                    assert_eq!(form_tag(*form), f, "{at}");
                }
                (Err(skip), ExpectedOutcome::Skip { reason }) => {
                    assert_eq!(&skip_tag(skip), reason, "{at}");
                }
                (got, want) => panic!("{at}: got {got:?}, want {want:?}"),
            }
        }
    }
}

/// The `line N LABEL ...` rows of `keyrot inspect` output for one file.
fn inspect_block_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("line "))
        .collect()
}

#[test]
fn inspect_reports_every_block_with_its_kid_or_its_skip_reason() {
    for file in fixture_files() {
        let run = keyrot(["inspect".into(), pem(file)]);
        assert_eq!(run.success, has_key(file), "{file}: {run:?}");
        let lines = inspect_block_lines(&run.stdout);
        let rows = rows_of(file);
        assert_eq!(lines.len(), rows.len(), "{file}: {}", run.stdout);
        for (line, row) in lines.iter().zip(rows) {
            match &row.outcome {
                ExpectedOutcome::Key { form, alg, kid } => {
                    assert!(line.contains(&format!("kid {kid}")), "{file}: {line}");
                    assert!(line.contains(&format!(" {alg} ")), "{file}: {line}");
                    assert!(line.contains(form_text(form)), "{file}: {line}");
                    assert!(!line.contains("skipped"), "{file}: {line}");
                }
                ExpectedOutcome::Skip { reason } => {
                    assert!(line.contains("skipped: "), "{file}: {line}");
                    assert!(line.contains(skip_message(reason)), "{file}: {line}");
                    assert!(!line.contains("kid "), "{file}: {line}");
                }
            }
        }
        let keys = kids_of(file).len();
        if keys == 0 {
            assert!(run.stdout.contains("no key"), "{file}: {}", run.stdout);
        } else {
            assert!(
                run.stdout.contains(&format!("=> {keys} key(s)")),
                "{file}: {}",
                run.stdout
            );
        }
    }
}

#[test]
fn inspect_shows_the_misleading_label_it_ignored() {
    let run = keyrot_ok(["inspect".into(), pem("rsa-spki-labelled-foo.pem")]);
    let lines = inspect_block_lines(&run.stdout);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("FOO"), "{}", lines[0]);
    assert!(lines[0].contains(&kids_of("rsa-spki-public.pem")[0]));
}

#[test]
fn jwks_of_each_file_has_the_oracle_kids_and_algs() {
    for file in fixture_files() {
        let run = keyrot(["jwks".into(), pem(file)]);
        if !has_key(file) {
            assert!(!run.success, "{file}: {run:?}");
            assert_eq!(run.stdout, "", "{file}");
            assert!(run.stderr.contains(file), "{file}: {}", run.stderr);
            assert!(
                run.stderr
                    .contains("does not contain any valid RSA or ECDSA public keys"),
                "{file}: {}",
                run.stderr
            );
            continue;
        }
        assert!(run.success, "{file}: {run:?}");
        let keys = jwks_keys(&run.stdout);
        let rows: Vec<&Expected> = rows_of(file)
            .into_iter()
            .filter(|r| r.kid().is_some())
            .collect();
        assert_eq!(keys.len(), rows.len(), "{file}: {}", run.stdout);
        for (jwk, row) in keys.iter().zip(rows) {
            let ExpectedOutcome::Key { alg, kid, .. } = &row.outcome else {
                unreachable!()
            };
            assert_eq!(jwk["kid"], kid.as_str(), "{file}");
            assert_eq!(jwk["alg"], alg.as_str(), "{file}");
            assert_eq!(jwk["use"], "sig", "{file}");
            let (kty, crv) = match alg.as_str() {
                "RS256" => ("RSA", None),
                "ES256" => ("EC", Some("P-256")),
                "ES384" => ("EC", Some("P-384")),
                "ES512" => ("EC", Some("P-521")),
                other => panic!("{other}"),
            };
            assert_eq!(jwk["kty"], kty, "{file}");
            assert_eq!(jwk["crv"].as_str(), crv, "{file}");
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none(), "{file} publishes {private}");
            }
        }
    }
}

/// The DER SubjectPublicKeyInfo of a fixture, as openssl writes it.
fn openssl_spki_der(file: &str, public: bool) -> Vec<u8> {
    let path = pem(file);
    let mut args = vec!["pkey", "-in", path.to_str().unwrap(), "-pubout"];
    if public {
        args.insert(1, "-pubin");
    }
    args.extend(["-outform", "DER"]);
    openssl(&args, b"")
}

fn b64(value: &serde_json::Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(value.as_str().expect("a base64url string"))
        .expect("valid base64url")
}

#[test]
fn ec_jwk_coordinates_are_the_point_openssl_encodes() {
    for (file, len) in [
        ("ec-p256-spki-public.pem", 32),
        ("ec-p384-spki-public.pem", 48),
        ("ec-p521-spki-public.pem", 66),
    ] {
        // A named-curve SPKI ends with its BIT STRING: the uncompressed point 04 || x || y.
        let spki = openssl_spki_der(file, true);
        let point = &spki[spki.len() - (1 + 2 * len)..];
        assert_eq!(point[0], 0x04, "{file}");
        for source in [
            file.to_string(),
            file.replace("spki-public", "sec1-private"),
        ] {
            let run = keyrot_ok(["jwks".into(), pem(&source)]);
            let jwk = &jwks_keys(&run.stdout)[0];
            assert_eq!(b64(&jwk["x"]), &point[1..1 + len], "{source} x");
            assert_eq!(b64(&jwk["y"]), &point[1 + len..], "{source} y");
        }
    }
}

#[test]
fn rsa_jwk_modulus_and_exponent_are_what_openssl_reads() {
    let path = pem("rsa-spki-public.pem");
    let modulus = openssl(
        &[
            "rsa",
            "-pubin",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-modulus",
        ],
        b"",
    );
    let hex = String::from_utf8(modulus).unwrap();
    let hex = hex.trim().strip_prefix("Modulus=").unwrap().to_lowercase();
    for file in [
        "rsa-spki-public.pem",
        "rsa-pkcs1-private.pem",
        "rsa-pkcs8-private.pem",
    ] {
        let run = keyrot_ok(["jwks".into(), pem(file)]);
        let jwk = &jwks_keys(&run.stdout)[0];
        let n: String = b64(&jwk["n"]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(n, hex, "{file}");
        assert_eq!(b64(&jwk["e"]), [1, 0, 1], "{file}");
        assert_eq!(
            n.len(),
            512,
            "{file}: 2048-bit modulus without a leading zero"
        );
    }
}

/// A temporary file holding `good` and then `skipped`, and the line `skipped` starts on.
fn good_then(dir: &tempfile::TempDir, good: &str, skipped: &str) -> (PathBuf, usize) {
    let good_text = read_string(&pem(good));
    let skipped_text = read_string(&pem(skipped));
    let path = dir.path().join(format!("with-{skipped}"));
    std::fs::write(&path, format!("{good_text}{skipped_text}")).unwrap();
    (path, good_text.lines().count() + 1)
}

#[test]
fn jwks_warns_about_each_skipped_form_next_to_a_good_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "ec-p256-spki-public.pem";
    let good_kid = kids_of(good)[0].clone();
    for row in expected_rows() {
        let ExpectedOutcome::Skip { reason } = &row.outcome else {
            continue;
        };
        if row.file.starts_with("mixed") || has_key(&row.file) {
            continue; // Single-block files of skipped forms only.
        }
        let (path, line) = good_then(&dir, good, &row.file);
        let run = keyrot_ok(["jwks".into(), path.clone()]);
        assert_eq!(jwks_kids(&run.stdout), [good_kid.as_str()], "{}", row.file);
        let warnings: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(warnings.len(), 1, "{}: {}", row.file, run.stderr);
        let warning = warnings[0];
        assert!(
            warning.starts_with(&format!("warning: {}:{line}: ", path.display())),
            "{warning}"
        );
        assert!(warning.contains("skipped"), "{warning}");
        assert!(warning.contains(skip_message(reason)), "{warning}");
    }
}

#[test]
fn ec_parameters_next_to_their_key_are_not_warned_about() {
    let run = keyrot_ok(["jwks".into(), pem("ec-p256-ecparam-genkey.pem")]);
    assert_eq!(run.stderr, "");
    assert_eq!(
        jwks_kids(&run.stdout),
        kids_of("ec-p256-ecparam-genkey.pem")
    );
}

#[test]
fn mixed_file_warns_once_per_skipped_block_except_ec_parameters() {
    let run = keyrot_ok(["jwks".into(), pem("mixed.pem")]);
    let want: Vec<&str> = rows_of("mixed.pem")
        .into_iter()
        .filter_map(|r| match &r.outcome {
            ExpectedOutcome::Skip { reason } if reason != "ec-parameters" => {
                Some(skip_message(reason))
            }
            _ => None,
        })
        .collect();
    let warnings: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warnings.len(), want.len(), "{}", run.stderr);
    for (warning, message) in warnings.iter().zip(want) {
        assert!(warning.contains(message), "{warning}");
    }
}

#[test]
fn several_files_give_file_order_then_block_order_with_duplicates() {
    let files = [
        "mixed.pem",
        "rsa-certificate.pem",
        "ec-p521-spki-public.pem",
        "mixed-crlf.pem",
        "rsa-certificate.pem",
    ];
    let want: Vec<String> = files.iter().flat_map(|f| kids_of(f)).collect();
    // The mixed file holds the same RSA key twice; with the repeats there are duplicates.
    let distinct: std::collections::BTreeSet<&String> = want.iter().collect();
    assert!(distinct.len() < want.len());

    let mut args: Vec<PathBuf> = vec!["jwks".into()];
    args.extend(files.iter().map(|f| pem(f)));
    let run = keyrot_ok(args);
    assert_eq!(jwks_kids(&run.stdout), want);

    let paths: Vec<PathBuf> = files.iter().map(|f| pem(f)).collect();
    let loaded = load_verification_keys(&paths).unwrap();
    let kids: Vec<&str> = loaded.keys.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, want);
    assert_eq!(render_jwks(&loaded.keys) + "\n", run.stdout);
}

#[test]
fn crlf_line_endings_change_nothing() {
    let lf = keyrot_ok(["jwks".into(), pem("mixed.pem")]);
    let crlf = keyrot_ok(["jwks".into(), pem("mixed-crlf.pem")]);
    assert_eq!(lf.stdout, crlf.stdout);
    assert!(read_string(&pem("mixed-crlf.pem")).contains("-----\r\n"));
}

#[test]
fn the_same_key_in_every_form_has_one_kid() {
    let rsa_forms = [
        "rsa-pkcs1-private.pem",
        "rsa-pkcs8-private.pem",
        "rsa-spki-public.pem",
        "rsa-spki-labelled-foo.pem",
        "rsa-pkcs1-private-labelled-public-key.pem",
    ];
    let kids: Vec<String> = rsa_forms.iter().flat_map(|f| kids_of(f)).collect();
    assert_eq!(kids.len(), rsa_forms.len());
    let mut args: Vec<PathBuf> = vec!["jwks".into()];
    args.extend(rsa_forms.iter().map(|f| pem(f)));
    let run = keyrot_ok(args);
    let got = jwks_kids(&run.stdout);
    assert_eq!(got, kids);
    assert!(got.iter().all(|k| *k == got[0]));
}

/// Go's base64 decoder ignores line breaks anywhere in a PEM body (`encoding/pem` hands it the
/// body with only spaces and tabs removed), so kube-apiserver reads a key whose body holds a
/// blank line. keyrot used to skip such a block as malformed, dropping a key kube serves.
#[test]
fn blank_line_inside_a_pem_body_does_not_hide_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "rsa-spki-public.pem",
        "ec-p384-sec1-private.pem",
        "rsa-certificate.pem",
        "mixed-crlf.pem",
    ] {
        let text = read_string(&pem(file));
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let mut with_blanks = String::new();
        for line in text.split_inclusive('\n') {
            if line.starts_with("-----END") {
                with_blanks.push_str(eol); // Just before END.
            }
            with_blanks.push_str(line);
            if line.starts_with("-----BEGIN") {
                with_blanks.push_str(eol); // Just after BEGIN.
            } else if line.len() > 60 && !line.contains(' ') {
                with_blanks.push_str(eol); // After each full body line.
            }
        }
        assert!(with_blanks.contains(&format!("{eol}{eol}-----END")));
        let path = dir.path().join(file);
        std::fs::write(&path, &with_blanks).unwrap();
        let run = keyrot_ok(["jwks".into(), path.clone()]);
        assert_eq!(jwks_kids(&run.stdout), kids_of(file), "{file}");
        let report = read_file(&path).unwrap();
        assert_eq!(report.blocks.len(), rows_of(file).len(), "{file}");
    }
}

/// Go's `pem.Decode` takes the `Key: value` lines right after BEGIN as headers, whether or not
/// a blank line follows them, and decodes the rest as the body.
#[test]
fn header_lines_before_a_pem_body_do_not_hide_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = "ec-p256-spki-public.pem";
    let text = read_string(&pem(file));
    let (begin, body) = text.split_once('\n').unwrap();
    for headers in ["Comment: exported by hand\n", "Comment: a\nOther: b\n\n"] {
        let path = dir.path().join("with-headers.pem");
        std::fs::write(&path, format!("{begin}\n{headers}{body}")).unwrap();
        let run = keyrot_ok(["jwks".into(), path]);
        assert_eq!(jwks_kids(&run.stdout), kids_of(file), "{headers:?}");
    }
}
