//! Uploading the JWKS into a GCP workload identity provider, against a stand-in of the IAM API
//! on 127.0.0.1 that checks method, path, updateMask and body, and answers with a long-running
//! operation that completes on the first poll.

mod stores;

use std::sync::{Arc, Mutex};

use keyrot::adapters::publish::{TargetsPublisher, publish_target, render_documents};
use keyrot::adapters::{FailureKind, Publisher};
use keyrot::decision::Probed;
use keyrot::stores::conditional::Written;
use keyrot::targets::read_served_view;
use serde_json::json;
use stores::stand_in::{self, Request, Response};

const PROVIDER: &str = "projects/1234/locations/global/workloadIdentityPools/pool/providers/prod";

/// The provider as the stand-in holds it, and every request it was sent.
#[derive(Default)]
struct Iam {
    jwks_json: Option<String>,
    requests: Vec<Request>,
}

fn handle(iam: &Mutex<Iam>, request: Request) -> Response {
    let mut iam = iam.lock().unwrap();
    iam.requests.push(request.clone());
    let provider_path = format!("/v1/{PROVIDER}");
    let operation = format!("{PROVIDER}/operations/op-1");
    match (request.method.as_str(), request.target.as_str()) {
        ("GET", path) if path == provider_path => {
            let mut body = json!({ "name": PROVIDER, "oidc": { "issuerUri": "https://issuer.example.com/test" } });
            if let Some(jwks) = &iam.jwks_json {
                body["oidc"]["jwksJson"] = json!(jwks);
            }
            Response::json(200, &body)
        }
        ("PATCH", target) if target == format!("{provider_path}?updateMask=oidc.jwksJson") => {
            let body: serde_json::Value = match serde_json::from_slice(&request.body) {
                Ok(body) => body,
                Err(e) => return Response::json(400, &json!({ "error": e.to_string() })),
            };
            let only_field = body.as_object().is_some_and(|o| o.len() == 1)
                && body["oidc"].as_object().is_some_and(|o| o.len() == 1);
            let Some(jwks) = body["oidc"]["jwksJson"].as_str().filter(|_| only_field) else {
                return Response::json(400, &json!({ "error": "body must be {oidc: {jwksJson}}" }));
            };
            if keyrot::targets::jwks_kids(jwks.as_bytes()).is_err() {
                return Response::json(400, &json!({ "error": "jwksJson is not a JWKS" }));
            }
            iam.jwks_json = Some(jwks.to_string());
            Response::json(200, &json!({ "name": operation, "done": false }))
        }
        ("GET", path) if path == format!("/v1/{operation}") => Response::json(
            200,
            &json!({ "name": operation, "done": true, "response": {} }),
        ),
        _ => Response::json(
            404,
            &json!({ "error": format!("no {} {}", request.method, request.target) }),
        ),
    }
}

fn plan_with_provider(dir: &std::path::Path, endpoint: &str) -> keyrot::plan::Plan {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let pem = |name: &str| std::fs::read_to_string(format!("tests/data/pem/{name}")).unwrap();
    std::fs::write(
        pki.join("sa.pub"),
        pem("rsa-spki-public.pem") + &pem("ec-p256-spki-public.pem"),
    )
    .unwrap();
    let credentials = stores::gcs_credentials(dir);
    let target = format!(
        "  - name: gcp\n    gcpWorkloadIdentityProvider:\n      name: {PROVIDER}\n      endpoint: \"{endpoint}\"\n      serviceAccountFile: {}\n    cacheMaxAge: 1s\n",
        credentials.display()
    );
    keyrot::plan::load(&stores::write_plan(dir, &target)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_jwks_is_patched_into_the_provider_and_read_back() {
    let iam = Arc::new(Mutex::new(Iam::default()));
    let served = Arc::clone(&iam);
    let endpoint = stand_in::serve(move |request| handle(&served, request));
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_with_provider(dir.path(), &endpoint);
    let target = &plan.targets[0];
    assert_eq!(
        read_served_view(&plan.issuer, target).kids,
        Probed::Seen(Vec::new()),
        "a provider without jwksJson serves no key of keyrot's"
    );

    let kids = keyrot::observe::observe_files(&plan).unwrap().bundle_kids();
    let documents = render_documents(&plan, &kids).unwrap();
    // Observing the files read the provider too; only the publication's requests count below.
    iam.lock().unwrap().requests.clear();
    let outcome = publish_target(target, &documents).unwrap();
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0].written, Written::Created);
    {
        let iam = iam.lock().unwrap();
        assert_eq!(iam.jwks_json.as_deref(), Some(documents.jwks.as_str()));
        let methods: Vec<(&str, &str)> = iam
            .requests
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str()))
            .collect();
        let provider = format!("/v1/{PROVIDER}");
        assert_eq!(
            methods,
            [
                ("GET", provider.as_str()),
                (
                    "PATCH",
                    format!("{provider}?updateMask=oidc.jwksJson").as_str()
                ),
                ("GET", format!("{provider}/operations/op-1").as_str()),
                ("GET", provider.as_str()),
            ],
            "read-back before, PATCH, operation poll, read-back after"
        );
        let patch = &iam.requests[1];
        assert_eq!(patch.header("content-type"), Some("application/json"));
        assert_eq!(
            patch.header("authorization"),
            None,
            "no OAuth for this test account"
        );
    }
    assert_eq!(
        read_served_view(&plan.issuer, target).kids,
        Probed::Seen(kids.clone())
    );

    let again = publish_target(target, &documents).unwrap();
    assert_eq!(again[0].written, Written::Unchanged);
    let patches = iam
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1, "an unchanged JWKS is not uploaded again");
}

#[test]
fn a_refused_update_names_the_request_and_the_answer() {
    let endpoint = stand_in::serve(|request| {
        if request.method == "PATCH" {
            return Response::json(
                403,
                &json!({ "error": { "message": "Permission 'iam.workloadIdentityPoolProviders.update' denied" } }),
            );
        }
        Response::json(200, &json!({ "name": PROVIDER, "oidc": {} }))
    });
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_with_provider(dir.path(), &endpoint);
    let kids = keyrot::observe::observe_files(&plan).unwrap().bundle_kids();
    let documents = render_documents(&plan, &kids).unwrap();
    let refused = publish_target(&plan.targets[0], &documents).unwrap_err();
    assert_eq!(refused.error.kind(), FailureKind::Permanent);
    let err = refused.to_string();
    assert!(
        err.starts_with(&format!(
            "PATCH {endpoint}/v1/{PROVIDER}?updateMask=oidc.jwksJson: answered 403"
        )),
        "{err}"
    );
    assert!(
        err.contains("iam.workloadIdentityPoolProviders.update"),
        "{err}"
    );
}

/// The publisher's failure follows the target's: a provider still holding another JWKS after the
/// update (another writer, or IAM catching up) is retried; a refused update waits for a person.
#[test]
fn the_publisher_retries_a_lagging_provider_and_stops_at_a_refusal() {
    let lagging = stand_in::serve(|request| {
        if request.method == "PATCH" {
            return Response::json(200, &json!({ "name": "op", "done": true }));
        }
        Response::json(
            200,
            &json!({ "name": PROVIDER, "oidc": { "jwksJson": r#"{"keys":[]}"# } }),
        )
    });
    let refusing = stand_in::serve(|request| match request.method.as_str() {
        "PATCH" => Response::json(403, &json!({ "error": { "message": "denied" } })),
        _ => Response::json(200, &json!({ "name": PROVIDER, "oidc": {} })),
    });
    for (endpoint, kind, says) in [
        (&lagging, FailureKind::Transient, "not the uploaded JWKS"),
        (&refusing, FailureKind::Permanent, "answered 403"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_with_provider(dir.path(), endpoint);
        let kids = keyrot::observe::observe_files(&plan).unwrap().bundle_kids();
        let err = TargetsPublisher::new(&plan).publish(&kids).unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.starts_with("target gcp: "), "{err}");
        assert!(err.message.contains(says), "{err}");
    }
}
