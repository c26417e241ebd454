//! The `kube` crate, as keyrot uses it, talking to the stand-in through a kubeconfig.

mod common;

use common::{KEY_A, Workdir, fixture_key, standin_args};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const ISSUER: &str = "https://issuer.test";

async fn client(work: &Workdir, server: &str) -> Client {
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: probe
  user:
    token: any-token
contexts:
- name: standin
  context:
    cluster: standin
    user: probe
current-context: standin
",
        ca = work.tls_dir().join("ca.crt").display()
    );
    std::fs::write(work.path("kubeconfig"), kubeconfig).unwrap();
    let kubeconfig = Kubeconfig::read_from(work.path("kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn kube_creates_the_probe_account_requests_a_token_and_reviews_it() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let client = client(&work, &standin.url()).await;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "keyrot-system");
    assert!(accounts.get_opt("keyrot-probe").await.unwrap().is_none());
    let probe = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("keyrot-probe".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = accounts
        .create(&PostParams::default(), &probe)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("keyrot-system"));
    let again = accounts.create(&PostParams::default(), &probe).await;
    assert!(
        matches!(&again, Err(kube::Error::Api(status)) if status.code == 409),
        "{again:?}"
    );
    assert!(accounts.get_opt("keyrot-probe").await.unwrap().is_some());

    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["sts.test".into()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let minted = accounts
        .create_token_request("keyrot-probe", &PostParams::default(), &request)
        .await
        .unwrap();
    let status = minted.status.unwrap();
    assert!(!status.expiration_timestamp.0.to_string().is_empty());
    let (header, _) = common::decode(&status.token);
    assert_eq!(header["kid"], fixture_key(KEY_A).public().kid());

    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |token: String| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(vec!["sts.test".into()]),
        },
        ..Default::default()
    };
    let accepted = reviews
        .create(&PostParams::default(), &review(status.token.clone()))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(accepted.authenticated, Some(true));
    assert_eq!(
        accepted.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:keyrot-system:keyrot-probe")
    );
    let rejected = reviews
        .create(
            &PostParams::default(),
            &review(common::tamper_signature(&status.token)),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(rejected.authenticated, Some(true));
    assert!(rejected.error.unwrap().contains("signature"));

    let jwks = client
        .request_text(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let keys = keyrot::keys::load_verification_keys(&[work.path("sa.pub")])
        .unwrap()
        .keys;
    assert_eq!(jwks, keyrot::documents::render_jwks(&keys));
}

/// What keyrot sees while an apiserver restarts: a transport error, not an API error.
#[tokio::test]
async fn kube_sees_a_refused_connection_as_a_service_error() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let standin = common::start_standin(&work, &standin_args(&work, &[ISSUER])).unwrap();
    let client = client(&work, &standin.url()).await;
    drop(standin);

    let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
    let error = accounts.get_opt("default").await.unwrap_err();
    assert!(matches!(error, kube::Error::Service(_)), "{error:?}");
}
