//! Publishing to real storage servers on 127.0.0.1, started by scripts/test.sh: moto (S3),
//! azurite (Azure Blob) and fake-gcs-server (GCS). For each: both documents written and written
//! again idempotently, headers round-trip, the anonymous read-back passes verification, a
//! concurrent writer is detected and not overwritten, and a stale object (JWKS or discovery
//! document) fails verification with a message that names the URL and the difference.

mod stores;

use keyrot::adapters::publish::{Documents, publish_target, render_documents};
use keyrot::documents::{DISCOVERY_CONTENT_TYPE, JWKS_PATH};
use keyrot::http::block_on;
use keyrot::plan::{Plan, Target};
use keyrot::stores::conditional::{self, Current, Document, WriteError, Written};
use keyrot::stores::{Store, document_keys};
use keyrot::targets::verify::{Expected, check};
use keyrot::targets::{jwks_kids, read_served_view};
use object_store::{Attribute, ObjectStoreExt};
use stores::Servers;

enum Backend {
    S3,
    Azure,
    Gcs,
}

struct Setup {
    _dir: tempfile::TempDir,
    plan: Plan,
    /// Two keys in the bundle, RSA then EC.
    kids: Vec<String>,
}

impl Setup {
    fn target(&self) -> &Target {
        &self.plan.targets[0]
    }

    fn store(&self) -> Store {
        keyrot::stores::open(&self.target().kind).unwrap().unwrap()
    }

    fn documents(&self, kids: &[String]) -> Documents {
        render_documents(&self.plan, kids).unwrap()
    }
}

fn setup(servers: &Servers, backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let pem = |name: &str| std::fs::read_to_string(format!("tests/data/pem/{name}")).unwrap();
    let bundle = pem("rsa-spki-public.pem") + &pem("ec-p256-spki-public.pem");
    std::fs::write(pki.join("sa.pub"), bundle).unwrap();

    let prefix = stores::unique("backend");
    let targets = match backend {
        Backend::S3 => {
            // The front needs the target's store, and the target names the front: two steps.
            let bare =
                stores::write_plan(dir.path(), &stores::s3_target(servers, "s3", &prefix, None));
            let plan = keyrot::plan::load(&bare).unwrap();
            let front = stores::s3_front(&plan.targets[0]);
            stores::s3_target(servers, "s3", &prefix, Some(&front))
        }
        Backend::Azure => {
            let container = "keyrot-backend";
            stores::azure_container(servers, container);
            stores::azure_target(servers, "azure", container, &prefix)
        }
        Backend::Gcs => {
            let bucket = "keyrot-backend";
            stores::gcs_bucket(servers, bucket);
            let credentials = stores::gcs_credentials(dir.path());
            stores::gcs_target(servers, "gcs", bucket, &prefix, &credentials)
        }
    };
    let path = stores::write_plan(dir.path(), &targets);
    let plan = keyrot::plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let kids = keyrot::observe::observe_files(&plan).unwrap().bundle_kids();
    assert_eq!(kids.len(), 2);
    Setup {
        _dir: dir,
        plan,
        kids,
    }
}

/// Publishes twice: the first run creates both objects, the second changes nothing.
fn publishes_idempotently(setup: &Setup) {
    let documents = setup.documents(&setup.kids);
    let first = publish_target(setup.target(), &documents).unwrap();
    let written: Vec<Written> = first.iter().map(|o| o.written).collect();
    assert_eq!(written, [Written::Created, Written::Created], "{first:?}");
    assert!(first[0].url.ends_with(JWKS_PATH), "JWKS first: {first:?}");
    let again = publish_target(setup.target(), &documents).unwrap();
    let written: Vec<Written> = again.iter().map(|o| o.written).collect();
    assert_eq!(written, [Written::Unchanged, Written::Unchanged]);
}

/// The store keeps Content-Type and Cache-Control, and serves them to anonymous readers.
fn headers_round_trip(setup: &Setup) {
    let objects = setup.target().kind.objects().unwrap();
    let store = setup.store();
    let [jwks_key, discovery_key] = document_keys(&objects.prefix);
    for (key, content_type) in [
        (&jwks_key, objects.jwks_content_type.as_str()),
        (&discovery_key, DISCOVERY_CONTENT_TYPE),
    ] {
        let found = block_on(store.client.get(key)).unwrap();
        let attribute = |a| found.attributes.get(&a).map(|v| v.as_ref().to_string());
        assert_eq!(
            attribute(Attribute::ContentType).as_deref(),
            Some(content_type)
        );
        assert_eq!(
            attribute(Attribute::CacheControl).as_deref(),
            Some(objects.cache_control.as_str())
        );
    }
    assert_eq!(objects.cache_control, "public, max-age=1");

    let public = objects.public.url.as_deref().unwrap();
    let url = format!("{public}/{JWKS_PATH}");
    let response = block_on(reqwest::get(&url)).unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("content-type"), objects.jwks_content_type);
    assert_eq!(header("cache-control"), objects.cache_control);
}

/// What a verifier reads passes: issuer, jwks_uri, content types and exactly the kids.
fn read_back_passes(setup: &Setup) {
    let target = setup.target();
    assert_eq!(
        read_served_view(&setup.plan.issuer, target).kids,
        keyrot::decision::Probed::Seen(setup.kids.clone())
    );
    let verdict = check(
        &setup.plan.issuer,
        target,
        &[Expected {
            source: "the key files give",
            kids: setup.kids.clone(),
        }],
        &setup.documents(&setup.kids).discovery,
    );
    assert_eq!(verdict.problems, Vec::<String>::new());
    assert!(verdict.read_at.ends_with(JWKS_PATH), "{}", verdict.read_at);
}

/// Another writer between keyrot's read and its write: reported, and its object kept.
fn concurrent_writer_is_detected(setup: &Setup) {
    let objects = setup.target().kind.objects().unwrap();
    let store = setup.store();
    let [jwks_key, _] = document_keys(&objects.prefix);
    let documents = setup.documents(&setup.kids[..1]);
    let doc = Document {
        key: &jwks_key,
        body: documents.jwks.as_bytes(),
        content_type: &objects.jwks_content_type,
        cache_control: &objects.cache_control,
    };
    let theirs = br#"{"keys":[]}"#;
    block_on(async {
        let read = conditional::current(&store, &doc).await.unwrap();
        assert!(matches!(read, Current::Present { same: false, .. }));
        store
            .client
            .put(&jwks_key, theirs.to_vec().into())
            .await
            .unwrap();
        let err = conditional::put(&store, &doc, &read).await.unwrap_err();
        assert!(matches!(
            err,
            WriteError::ConcurrentWriter {
                what: "changed",
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.contains(&store.object_url(&jwks_key)), "{message}");
        assert!(message.contains("another writer changed it"), "{message}");
        let kept = store
            .client
            .get(&jwks_key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            kept.as_ref(),
            theirs,
            "the other writer's object was overwritten"
        );

        // The first write of an object that someone else creates meanwhile.
        let fresh = object_store::path::Path::from(format!("{}/race", objects.prefix));
        let doc = Document { key: &fresh, ..doc };
        let read = conditional::current(&store, &doc).await.unwrap();
        assert_eq!(read, Current::Absent);
        store
            .client
            .put(&fresh, theirs.to_vec().into())
            .await
            .unwrap();
        let err = conditional::put(&store, &doc, &read).await.unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::ConcurrentWriter {
                    what: "created",
                    ..
                }
            ),
            "{err}"
        );
    });
}

/// A JWKS without the new key, and a discovery document with another issuer, fail verification.
fn stale_objects_fail_verification(setup: &Setup) {
    let target = setup.target();
    let expected = [Expected {
        source: "the key files give",
        kids: setup.kids.clone(),
    }];
    let discovery = setup.documents(&setup.kids).discovery;
    publish_target(target, &setup.documents(&setup.kids[..1])).unwrap();
    let verdict = check(&setup.plan.issuer, target, &expected, &discovery);
    assert_eq!(verdict.served.as_deref(), Some(&setup.kids[..1]));
    assert_eq!(verdict.problems.len(), 2, "{:?}", verdict.problems);
    let problem = &verdict.problems[0];
    assert!(problem.starts_with(&verdict.read_at), "{problem}");
    assert!(
        problem.ends_with(&format!("missing {}", setup.kids[1])),
        "{problem}"
    );
    // The RSA-only document lacks the EC key's algorithm.
    assert!(
        verdict.problems[1].ends_with(
            "openid-configuration differs from the discovery document for the key files' keys: \
             id_token_signing_alg_values_supported is [\"RS256\"], expected [\"ES256\",\"RS256\"]"
        ),
        "{}",
        verdict.problems[1]
    );

    // The issuer with a trailing slash: tokens' iss would no longer match.
    let objects = target.kind.objects().unwrap();
    let [_, discovery_key] = document_keys(&objects.prefix);
    let issuer = &setup.plan.issuer.url;
    let wrong = setup
        .documents(&setup.kids)
        .discovery
        .replace(&format!("\"{issuer}\""), &format!("\"{issuer}/\""));
    let store = setup.store();
    let doc = Document {
        key: &discovery_key,
        body: wrong.as_bytes(),
        content_type: DISCOVERY_CONTENT_TYPE,
        cache_control: &objects.cache_control,
    };
    block_on(conditional::write(&store, &doc)).unwrap();
    let verdict = check(&setup.plan.issuer, target, &expected, &discovery);
    assert_eq!(verdict.served, None);
    let problem = verdict.problems.join("\n");
    assert!(
        problem.contains(".well-known/openid-configuration: issuer is"),
        "{problem}"
    );
    assert!(
        problem.contains(&format!("{issuer}/\", expected")),
        "{problem}"
    );
}

fn exercise(backend: Backend) {
    let servers = stores::servers();
    let setup = setup(&servers, backend);
    publishes_idempotently(&setup);
    headers_round_trip(&setup);
    read_back_passes(&setup);
    concurrent_writer_is_detected(&setup);
    stale_objects_fail_verification(&setup);
}

#[test]
fn s3_on_moto() {
    exercise(Backend::S3);
}

#[test]
fn azure_blob_on_azurite() {
    exercise(Backend::Azure);
}

#[test]
fn gcs_on_fake_gcs_server() {
    exercise(Backend::Gcs);
}

/// moto serves the JWKS to anonymous readers through the bucket policy alone, as S3 does; only
/// its discovery document needs the front (see `stores::s3_front`).
#[test]
fn s3_bucket_policy_lets_anyone_read_the_jwks() {
    let servers = stores::servers();
    let setup = setup(&servers, Backend::S3);
    publish_target(setup.target(), &setup.documents(&setup.kids)).unwrap();
    let objects = setup.target().kind.objects().unwrap();
    let url = format!(
        "{}/{}/{}/{JWKS_PATH}",
        servers.s3_endpoint, servers.s3_bucket, objects.prefix
    );
    // One runtime for the answer and its body: the connection belongs to it.
    let (status, content_type, body) = block_on(async {
        let response = reqwest::get(&url).await.unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        (
            response.status(),
            content_type,
            response.bytes().await.unwrap(),
        )
    });
    assert_eq!(status, 200, "{url}");
    assert_eq!(content_type, objects.jwks_content_type);
    assert_eq!(jwks_kids(&body).unwrap(), setup.kids);
}
