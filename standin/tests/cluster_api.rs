//! The cluster stand-in driven by the `kube` crate, as keyrot's HA coordination drives it.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY_A, Workdir, standin_args};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio_stream::StreamExt;

/// A running `kube-cluster-standin`; killed when dropped.
struct ClusterStandin {
    child: Child,
    url: String,
    control: String,
    clients: BTreeMap<String, String>,
}

impl ClusterStandin {
    fn start(work: &Workdir, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-cluster-standin"))
            .arg("--tls-dir")
            .arg(work.tls_dir())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(work.path("cluster.log")).unwrap())
            .spawn()
            .unwrap();
        let clients = extra.iter().filter(|a| **a == "--client-listener").count();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut line = || lines.next().unwrap().unwrap();
        let url = line().strip_prefix("listening on ").unwrap().to_string();
        let control = line().strip_prefix("control on ").unwrap().to_string();
        let clients = (0..clients)
            .map(|_| {
                let line = line();
                let (name, url) = line
                    .strip_prefix("client ")
                    .unwrap()
                    .split_once(" on ")
                    .unwrap();
                (name.to_string(), url.to_string())
            })
            .collect();
        ClusterStandin {
            child,
            url,
            control,
            clients,
        }
    }

    async fn control(&self, request: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/{request}", self.control))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{request}");
    }

    async fn counts(&self) -> BTreeMap<String, u64> {
        reqwest::get(format!("{}/counts", self.control))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for ClusterStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kube client of `server`, trusting the test CA, with a bearer token.
async fn client(work: &Workdir, server: &str) -> Client {
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: keyrot
  user:
    token: any-token
contexts:
- name: cluster
  context:
    cluster: cluster
    user: keyrot
current-context: cluster
",
        ca = work.tls_dir().join("ca.crt").display()
    );
    let path = work.path(&format!("kubeconfig-{}", server.replace([':', '/'], "_")));
    std::fs::write(&path, kubeconfig).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.read_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, text: &str, resource_version: Option<&str>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: resource_version.map(String::from),
            labels: Some([("app.kubernetes.io/managed-by".into(), "keyrot".into())].into()),
            ..Default::default()
        },
        data: Some([("ring.json".into(), text.into())].into()),
        ..Default::default()
    }
}

fn rv<K: kube::Resource>(object: &K) -> String {
    object.meta().resource_version.clone().unwrap()
}

fn api_status(error: &kube::Error) -> Option<(u16, &str)> {
    match error {
        kube::Error::Api(status) => Some((status.code, status.reason.as_str())),
        _ => None,
    }
}

#[tokio::test]
async fn config_maps_are_created_replaced_and_conflict_like_kube() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &[]);
    let maps: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.url).await, "kube-system");

    assert!(maps.get_opt("keyrot-ring").await.unwrap().is_none());
    let pp = PostParams::default();
    let created = maps
        .create(&pp, &config_map("keyrot-ring", "v1", None))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("kube-system"));
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let again = maps
        .create(&pp, &config_map("keyrot-ring", "v1", None))
        .await
        .unwrap_err();
    assert_eq!(api_status(&again), Some((409, "AlreadyExists")));

    let replaced = maps
        .replace(
            "keyrot-ring",
            &pp,
            &config_map("keyrot-ring", "v2", Some(&rv(&created))),
        )
        .await
        .unwrap();
    assert!(rv(&replaced).parse::<u64>().unwrap() > rv(&created).parse::<u64>().unwrap());
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    let stale = maps
        .replace(
            "keyrot-ring",
            &pp,
            &config_map("keyrot-ring", "v3", Some(&rv(&created))),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(&stale), Some((409, "Conflict")));
    let kube::Error::Api(status) = &stale else {
        unreachable!()
    };
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on configmaps \"keyrot-ring\": the object has been \
         modified; please apply your changes to the latest version and try again"
    );
    let read = maps.get("keyrot-ring").await.unwrap();
    assert_eq!(read.data.as_ref().unwrap()["ring.json"], "v2");
    assert_eq!(rv(&read), rv(&replaced));
    assert_eq!(
        maps.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    maps.delete("keyrot-ring", &DeleteParams::default())
        .await
        .unwrap();
    assert!(maps.get_opt("keyrot-ring").await.unwrap().is_none());
}

#[tokio::test]
async fn leases_are_created_replaced_and_conflict_with_one_revision_counter() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &[]);
    let client = client(&work, &cluster.url).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let maps: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    let pp = PostParams::default();
    let lease = |holder: &str, transitions: i32, resource_version: Option<String>| Lease {
        metadata: ObjectMeta {
            name: Some("keyrot".into()),
            resource_version,
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    };

    let created = leases.create(&pp, &lease("node-a", 0, None)).await.unwrap();
    let map = maps
        .create(&pp, &config_map("ring", "x", None))
        .await
        .unwrap();
    // One counter for every kind, as etcd's revision.
    assert_eq!(
        rv(&map).parse::<u64>().unwrap(),
        rv(&created).parse::<u64>().unwrap() + 1
    );
    let again = leases
        .create(&pp, &lease("node-b", 0, None))
        .await
        .unwrap_err();
    assert_eq!(api_status(&again), Some((409, "AlreadyExists")));

    let taken = leases
        .replace("keyrot", &pp, &lease("node-b", 1, Some(rv(&created))))
        .await
        .unwrap();
    let spec = taken.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("node-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    let lost = leases
        .replace("keyrot", &pp, &lease("node-c", 1, Some(rv(&created))))
        .await
        .unwrap_err();
    assert_eq!(api_status(&lost), Some((409, "Conflict")));
    let kube::Error::Api(status) = &lost else {
        unreachable!()
    };
    assert!(
        status
            .message
            .contains("leases.coordination.k8s.io \"keyrot\"")
    );
}

#[tokio::test]
async fn a_watch_wakes_on_a_change_and_ends_at_its_timeout_without_one() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &[]);
    let maps: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.url).await, "kube-system");
    let pp = PostParams::default();
    let created = maps
        .create(&pp, &config_map("ring", "a", None))
        .await
        .unwrap();
    maps.create(&pp, &config_map("other", "a", None))
        .await
        .unwrap();

    // Nothing changes the ring: the stream ends at the timeout, empty (the other map's
    // creation is after the ring's version but not selected).
    let params = WatchParams::default()
        .fields("metadata.name=ring")
        .timeout(1);
    let started = Instant::now();
    let mut quiet = Box::pin(maps.watch(&params, &rv(&created)).await.unwrap());
    assert!(quiet.next().await.is_none());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // A change while watching wakes the watch with the new object.
    let params = WatchParams::default()
        .fields("metadata.name=ring")
        .timeout(10);
    let mut woken = Box::pin(maps.watch(&params, &rv(&created)).await.unwrap());
    let writer = maps.clone();
    let version = rv(&created);
    let change = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer
            .replace(
                "ring",
                &PostParams::default(),
                &config_map("ring", "b", Some(&version)),
            )
            .await
            .unwrap()
    });
    let started = Instant::now();
    match woken.next().await.unwrap().unwrap() {
        WatchEvent::Modified(map) => assert_eq!(map.data.unwrap()["ring.json"], "b"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let replaced = change.await.unwrap();

    // A watch from a version already passed gets the change at once.
    let mut late = Box::pin(maps.watch(&params, &rv(&created)).await.unwrap());
    assert!(matches!(
        late.next().await,
        Some(Ok(WatchEvent::Modified(_)))
    ));
    // Deletion is a change too.
    maps.delete("ring", &DeleteParams::default()).await.unwrap();
    let mut gone = Box::pin(maps.watch(&params, &rv(&replaced)).await.unwrap());
    assert!(matches!(
        gone.next().await,
        Some(Ok(WatchEvent::Deleted(_)))
    ));
}

#[tokio::test]
async fn a_watch_from_before_the_kept_history_is_told_410_gone() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &["--watch-history", "2"]);
    let maps: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.url).await, "ns");
    let pp = PostParams::default();
    let created = maps
        .create(&pp, &config_map("ring", "0", None))
        .await
        .unwrap();
    for i in 1..4 {
        maps.replace("ring", &pp, &config_map("ring", &i.to_string(), None))
            .await
            .unwrap();
    }
    let params = WatchParams::default()
        .fields("metadata.name=ring")
        .timeout(5);
    let mut stream = Box::pin(maps.watch(&params, &rv(&created)).await.unwrap());
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_conflict_storm_refuses_exactly_the_next_n_writes_and_calls_are_counted() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &[]);
    let maps: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.url).await, "ns");
    let pp = PostParams::default();
    let created = maps
        .create(&pp, &config_map("ring", "a", None))
        .await
        .unwrap();

    cluster.control("conflicts/2").await;
    let storm = maps
        .create(&pp, &config_map("second", "a", None))
        .await
        .unwrap_err();
    assert_eq!(api_status(&storm), Some((409, "Conflict")));
    let storm = maps
        .replace("ring", &pp, &config_map("ring", "b", Some(&rv(&created))))
        .await
        .unwrap_err();
    assert_eq!(api_status(&storm), Some((409, "Conflict")));
    // Nothing changed: the version read before the storm still replaces.
    let map = maps.get("ring").await.unwrap();
    assert_eq!(rv(&map), rv(&created));
    maps.replace("ring", &pp, &config_map("ring", "b", Some(&rv(&created))))
        .await
        .unwrap();
    assert!(maps.get_opt("second").await.unwrap().is_none());

    let counts = cluster.counts().await;
    assert_eq!(counts["create configmaps"], 2);
    assert_eq!(counts["update configmaps"], 2);
    assert_eq!(counts["get configmaps"], 2);
}

#[tokio::test]
async fn down_fails_every_request_until_up() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(&work, &["--client-listener", "node-a"]);
    let main: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.url).await, "ns");
    let node_a: Api<ConfigMap> =
        Api::namespaced(client(&work, &cluster.clients["node-a"]).await, "ns");
    assert!(main.get_opt("ring").await.unwrap().is_none());

    cluster.control("down").await;
    for api in [&main, &node_a] {
        let error = api.get_opt("ring").await.unwrap_err();
        assert!(api_status(&error).is_none(), "{error:?}");
    }
    cluster.control("up").await;
    assert!(main.get_opt("ring").await.unwrap().is_none());
    assert!(node_a.get_opt("ring").await.unwrap().is_none());
}

#[tokio::test]
async fn a_partition_cuts_one_client_listener_and_its_watch_while_another_works() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(
        &work,
        &["--client-listener", "node-a", "--client-listener", "node-b"],
    );
    let a: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.clients["node-a"]).await, "ns");
    let b: Api<ConfigMap> = Api::namespaced(client(&work, &cluster.clients["node-b"]).await, "ns");
    let pp = PostParams::default();
    let created = a.create(&pp, &config_map("ring", "a", None)).await.unwrap();

    let params = WatchParams::default()
        .fields("metadata.name=ring")
        .timeout(30);
    let mut watching = Box::pin(a.watch(&params, &rv(&created)).await.unwrap());
    let started = Instant::now();
    cluster.control("partition/node-a").await;
    // The in-flight watch is cut: an error or the end of the stream, at once, and no event.
    assert!(!matches!(watching.next().await, Some(Ok(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
    let cut = a.get_opt("ring").await.unwrap_err();
    assert!(api_status(&cut).is_none(), "{cut:?}");

    // The other client still reads and writes, and so does the cut one once healed.
    let replaced = b
        .replace("ring", &pp, &config_map("ring", "b", Some(&rv(&created))))
        .await
        .unwrap();
    cluster.control("heal/node-a").await;
    assert_eq!(rv(&a.get("ring").await.unwrap()), rv(&replaced));
}

#[tokio::test]
async fn the_kubernetes_endpoint_slice_lists_the_endpoints() {
    let work = Workdir::new();
    let cluster = ClusterStandin::start(
        &work,
        &[
            "--endpoint",
            "10.0.0.2",
            "--endpoint",
            "10.0.0.1",
            "--not-ready-endpoint",
            "10.0.0.3",
        ],
    );
    let slices: Api<EndpointSlice> = Api::namespaced(client(&work, &cluster.url).await, "default");
    let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    let list = slices.list(&params).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let slice = &list.items[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(6443));
    let endpoints: Vec<(String, Option<bool>)> = slice
        .endpoints
        .iter()
        .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("10.0.0.2".to_string(), Some(true)),
            ("10.0.0.1".to_string(), Some(true)),
            ("10.0.0.3".to_string(), Some(false)),
        ]
    );
    let other = ListParams::default().labels("kubernetes.io/service-name=other");
    assert!(slices.list(&other).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn other_requests_are_balanced_over_the_nodes_skipping_a_node_that_is_down() {
    let work = Workdir::new();
    work.write_signing_key(KEY_A);
    work.write_bundle(&[KEY_A]);
    let issuer = "https://issuer.test";
    let node1 = common::start_standin(&work, &standin_args(&work, &[issuer])).unwrap();
    let node2 = common::Process::start(
        env!("CARGO_BIN_EXE_kube-apiserver-standin"),
        &standin_args(&work, &[issuer]),
        work.path("standin2.log"),
    )
    .unwrap();
    let cluster = ClusterStandin::start(&work, &["--node", &node1.url(), "--node", &node2.url()]);
    let client = client(&work, &cluster.url).await;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["sts.test".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<TokenReview> = Api::all(client.clone());
    for _ in 0..2 {
        let minted = accounts
            .create_token_request("default", &PostParams::default(), &request)
            .await
            .unwrap();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(minted.status.unwrap().token),
                audiences: Some(vec!["sts.test".into()]),
            },
            ..Default::default()
        };
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        assert_eq!(reviewed.status.unwrap().authenticated, Some(true));
    }
    let jwks = client
        .request_text(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(jwks.contains("\"keys\""));

    // Each node keeps its own ServiceAccounts: the one created through the balancer is found
    // by one node and not the other, so consecutive reads went to both.
    let probe = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &probe)
        .await
        .unwrap();
    let mut found = Vec::new();
    for _ in 0..2 {
        found.push(accounts.get_opt("probe").await.unwrap().is_some());
    }
    found.sort();
    assert_eq!(found, [false, true]);

    // With one node refusing connections the other answers everything; with none, 503.
    drop(node1);
    for _ in 0..3 {
        accounts
            .create_token_request("default", &PostParams::default(), &request)
            .await
            .unwrap();
    }
    drop(node2);
    // Asked directly: kube's client retries a 503 with backoff for a long while.
    let refused = common::https_client(&work)
        .post(format!(
            "{}/api/v1/namespaces/default/serviceaccounts/default/token",
            cluster.url
        ))
        .bearer_auth("any-token")
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let status: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(status["reason"], "ServiceUnavailable");

    let counts = cluster.counts().await;
    assert_eq!(counts["create serviceaccounts/token"], 6);
    assert_eq!(counts["create tokenreviews"], 2);
}
