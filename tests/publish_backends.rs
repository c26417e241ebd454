//! Publishing to real storage servers on 127.0.0.1, started by scripts/test.sh: moto (S3),
//! azurite (Azure Blob) and fake-gcs-server (GCS). For each: both documents written and written
//! again idempotently, headers round-trip, the anonymous read-back passes verification, a
//! concurrent writer is detected and not overwritten, two publishers racing leave a consistent
//! pair or a reported conflict (a local directory too), and a stale object (JWKS or discovery
//! document) fails verification with a message that names the URL and the difference.

mod stores;

use std::sync::{Arc, Barrier};

use keyrot::adapters::publish::{Documents, ObjectOutcome, publish_target, render_documents};
use keyrot::documents::{DISCOVERY_CONTENT_TYPE, DISCOVERY_PATH, JWKS_PATH};
use keyrot::http::block_on;
use keyrot::plan::{Plan, Target, TargetKind};
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

        // A writer after keyrot's write: the read-back of the pair names the object.
        let mine = Document {
            body: br#"{"keys":[{"kid":"mine"}]}"#,
            ..doc.clone()
        };
        conditional::write(&store, &mine).await.unwrap();
        conditional::confirm(&store, &mine).await.unwrap();
        store
            .client
            .put(&jwks_key, theirs.to_vec().into())
            .await
            .unwrap();
        let err = conditional::confirm(&store, &mine).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: read back after publishing, it no longer holds what keyrot wrote: a second \
                 writer published to this target meanwhile",
                store.object_url(&jwks_key)
            )),
            "{message}"
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
    let store = setup.store();
    let objects = setup.target().kind.objects().unwrap();
    let keys = document_keys(&objects.prefix);
    // A few rounds: each costs a dozen requests to the server.
    two_publishers_leave_a_consistent_pair_or_report_the_conflict(setup.target(), 10, || {
        keys.clone().map(|key| {
            block_on(async { store.client.get(&key).await.unwrap().bytes().await.unwrap() })
                .to_vec()
        })
    });
}

/// Two publishers start together, each writing a pair of its own. Afterwards the target holds
/// one writer's JWKS and discovery document, or a writer reported the conflict; every object a
/// writer got written is in its report, also when it failed afterwards; and every failure is
/// one of the two conflicts, naming the object.
/// `rounds` races, each with a pair of its own per writer.
fn two_publishers_leave_a_consistent_pair_or_report_the_conflict(
    target: &Target,
    rounds: usize,
    served: impl Fn() -> [Vec<u8>; 2],
) {
    let conflict = |message: &str| {
        message.contains("another writer") || message.contains("a second writer published")
    };
    for round in 0..rounds {
        let pair = |writer: &str| Documents {
            jwks: format!(r#"{{"keys":[{{"kid":"{writer}-{round}"}}]}}"#),
            discovery: format!(r#"{{"issuer":"https://{writer}.example","round":{round}}}"#),
        };
        let pairs = [pair("a"), pair("b")];
        let barrier = Arc::new(Barrier::new(2));
        let reports: Vec<(Vec<ObjectOutcome>, Option<String>)> = std::thread::scope(|scope| {
            let racers: Vec<_> = pairs
                .iter()
                .map(|documents| {
                    let barrier = Arc::clone(&barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        match publish_target(target, documents) {
                            Ok(written) => (written, None),
                            Err(e) => (e.written, Some(e.error.to_string())),
                        }
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let [jwks, discovery] = served();
        let label = format!("round {round}: {reports:?}");
        let consistent = pairs
            .iter()
            .any(|p| p.jwks.as_bytes() == jwks && p.discovery.as_bytes() == discovery);
        assert!(
            consistent
                || reports
                    .iter()
                    .any(|(_, e)| e.as_deref().is_some_and(conflict)),
            "a torn pair that nobody reported: {label}"
        );
        for (_, error) in &reports {
            if let Some(error) = error {
                assert!(conflict(error), "{label}");
            }
        }
        // The writer whose document the target serves reported writing it.
        for (served, document, path) in [(&jwks, 0, JWKS_PATH), (&discovery, 1, DISCOVERY_PATH)] {
            let writer = pairs
                .iter()
                .position(|p| [&p.jwks, &p.discovery][document].as_bytes() == served.as_slice())
                .unwrap_or_else(|| panic!("{path} holds neither pair: {label}"));
            let reported = reports[writer].0.iter().any(|o| {
                o.url.ends_with(path) && matches!(o.written, Written::Created | Written::Replaced)
            });
            assert!(
                reported,
                "writer {writer}'s {path} write went unreported: {label}"
            );
        }
    }
}

#[test]
fn two_publishers_to_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let target = Target {
        name: "www".into(),
        kind: TargetKind::LocalDirectory { path: www.clone() },
        cache_max_age: chrono::TimeDelta::seconds(1),
        canary: None,
    };
    two_publishers_leave_a_consistent_pair_or_report_the_conflict(&target, 100, || {
        [JWKS_PATH, DISCOVERY_PATH].map(|path| std::fs::read(www.join(path)).unwrap())
    });
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
