//! `keyrot publish` and `keyrot verify` end to end, on a plan publishing to Azure Blob (azurite)
//! and GCS (fake-gcs-server), both started by scripts/test.sh, and on a local directory.

mod common;
mod stores;

use common::{keyrot, keyrot_ok};

#[test]
fn publish_is_idempotent_and_verify_reports_every_difference() {
    let servers = stores::servers();
    let dir = tempfile::tempdir().unwrap();
    let prefix = stores::unique("cli");
    stores::azure_container(&servers, "keyrot-cli");
    stores::gcs_bucket(&servers, "keyrot-cli");
    let credentials = stores::gcs_credentials(dir.path());
    let targets = stores::azure_target(&servers, "azure", "keyrot-cli", &prefix)
        + &stores::gcs_target(&servers, "gcs", "keyrot-cli", &prefix, &credentials);
    let plan_path = stores::write_plan(dir.path(), &targets);
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);

    let dry = keyrot_ok(["publish", "-c", plan, "--dry-run"]).stdout;
    assert_eq!(dry.matches(": would create\n").count(), 4, "{dry}");
    let verify = keyrot(["verify", "-c", plan]);
    assert!(!verify.success, "nothing is published yet: {verify:?}");
    assert!(verify.stdout.contains("answered 404"), "{}", verify.stdout);

    let first = keyrot_ok(["publish", "-c", plan]).stdout;
    assert_eq!(first.matches(": created\n").count(), 4, "{first}");
    let again = keyrot_ok(["publish", "-c", plan]).stdout;
    assert_eq!(again.matches(": unchanged\n").count(), 4, "{again}");

    let verify = keyrot_ok(["verify", "-c", plan]).stdout;
    assert_eq!(verify.matches("): ok: ").count(), 2, "{verify}");
    let json = keyrot_ok(["verify", "-c", plan, "--output", "json"]).stdout;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["ok"], true);
    let kid = json["expected"][0]["kids"][0].as_str().unwrap().to_string();
    assert_eq!(json["targets"][1]["served"][0], kid.as_str());

    // A second key in the bundle that no target serves yet.
    let extra_private = dir.path().join("extra.key");
    let extra_public = dir.path().join("extra.pub");
    let keygen = keyrot_ok([
        "keygen",
        "--alg",
        "ES256",
        "--private",
        extra_private.to_str().unwrap(),
        "--public",
        extra_public.to_str().unwrap(),
    ]);
    let extra_kid = keygen.stdout.trim().to_string();
    let bundle = dir.path().join("pki/sa.pub");
    let joined = std::fs::read_to_string(&bundle).unwrap()
        + &std::fs::read_to_string(&extra_public).unwrap();
    std::fs::write(&bundle, joined).unwrap();
    let verify = keyrot(["verify", "-c", plan]);
    assert_eq!(verify.code, Some(1), "{verify:?}");
    assert_eq!(
        verify.stdout.matches("): DIFFERS: ").count(),
        2,
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains(&format!(
            "the key files give [{kid}, {extra_kid}]: missing {extra_kid}"
        )),
        "{}",
        verify.stdout
    );
}

#[test]
fn verify_names_what_differs_in_a_stale_discovery_document_beside_a_right_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = common::sandbox_plan(dir.path(), "");
    let plan = plan_path.to_str().unwrap();
    keyrot_ok(["init", "-c", plan]);
    keyrot_ok(["publish", "-c", plan]);
    let discovery_path = dir.path().join("www/.well-known/openid-configuration");
    let es256_only = std::fs::read(&discovery_path).unwrap();

    // An RSA key joins the ES256 bundle: the discovery document now lists both algorithms.
    let private = dir.path().join("rsa.key");
    let public = dir.path().join("rsa.pub");
    let (private, public) = (private.to_str().unwrap(), public.to_str().unwrap());
    keyrot_ok([
        "keygen",
        "--alg",
        "RS256",
        "--private",
        private,
        "--public",
        public,
    ]);
    let bundle = dir.path().join("pki/sa.pub");
    let joined =
        std::fs::read_to_string(&bundle).unwrap() + &std::fs::read_to_string(public).unwrap();
    std::fs::write(&bundle, joined).unwrap();
    let published = keyrot_ok(["publish", "-c", plan]).stdout;
    assert_eq!(published.matches(": replaced\n").count(), 2, "{published}");
    assert!(keyrot(["verify", "-c", plan]).success);

    // Another writer puts the ES256-only document back; the JWKS still lists both keys.
    std::fs::write(&discovery_path, &es256_only).unwrap();
    let verify = keyrot(["verify", "-c", plan]);
    assert_eq!(verify.code, Some(1), "{verify:?}");
    assert!(
        verify.stdout.contains(&format!(
            "{} differs from the discovery document for the key files' keys: \
             id_token_signing_alg_values_supported is [\"ES256\"], expected [\"ES256\",\"RS256\"]",
            discovery_path.display()
        )),
        "{}",
        verify.stdout
    );
    assert_eq!(
        verify.stdout.matches("): DIFFERS: ").count(),
        1,
        "{}",
        verify.stdout
    );
    assert!(
        !verify.stdout.contains("missing"),
        "the kids are right: {}",
        verify.stdout
    );
}
