//! The kube adapter of HA coordination against `kube-cluster-standin`: the ring ConfigMap's
//! compare-and-swap, the Lease, the ring watch, the apiserver addresses, and how each fault
//! the stand-in injects reaches the caller as an [`ApiError`].

mod e2e;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keyrot::ha::api::{ApiError, ClusterApi, LeaseRecord};
use keyrot::ha::kube::KubeClusterApi;

const NAMESPACE: &str = "kube-system";

/// A running `kube-cluster-standin` and its scratch directory; killed when dropped.
struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    control: String,
    clients: BTreeMap<String, String>,
}

impl Cluster {
    fn start(args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(e2e::cluster_standin_binary())
            .arg("--tls-dir")
            .arg(dir.path().join("tls"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("cluster.log")).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut line = || lines.next().unwrap().unwrap();
        let url = line().strip_prefix("listening on ").unwrap().to_string();
        let control = line()
            .strip_prefix("control on http://")
            .unwrap()
            .to_string();
        let clients = (0..args.iter().filter(|a| **a == "--client-listener").count())
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
        Cluster {
            child,
            dir,
            url,
            control,
            clients,
        }
    }

    /// A kubeconfig for `server`, with a bearer token unless `token` is false.
    fn kubeconfig(&self, server: &str, token: bool) -> PathBuf {
        let user = if token { "token: any-token" } else { "{}" };
        let text = e2e::kubeconfig_text(server, &self.dir.path().join("tls/ca.crt"), user);
        let path = self.dir.path().join(format!(
            "kubeconfig-{}-{token}",
            server.replace([':', '/', '.'], "_")
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The adapter as a keyrot daemon connected to `server` builds it.
    fn api_at(&self, server: &str) -> KubeClusterApi {
        KubeClusterApi::new(
            &self.kubeconfig(server, true),
            NAMESPACE,
            "keyrot-ring",
            "keyrot",
        )
        .unwrap()
    }

    fn api(&self) -> KubeClusterApi {
        self.api_at(&self.url)
    }

    fn client(&self, name: &str) -> KubeClusterApi {
        self.api_at(&self.clients[name])
    }

    /// One control request (see the stand-in's documentation), over plain HTTP/1.1.
    fn control(&self, request: &str) {
        let mut tcp = TcpStream::connect(&self.control).unwrap();
        write!(
            tcp,
            "POST /{request} HTTP/1.1\r\nHost: control\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{request}: {answer}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn the_ring_is_created_read_and_replaced_only_at_the_version_read() {
    let cluster = Cluster::start(&[]);
    let api = cluster.api();
    assert_eq!(api.read_ring().unwrap(), None);

    let created = api.create_ring("{\"v\":1}").unwrap();
    let again = api.create_ring("{\"v\":1}").unwrap_err();
    assert!(
        matches!(&again, ApiError::Conflict(m) if m.contains("configmap kube-system/keyrot-ring")),
        "{again:?}"
    );
    let read = api.read_ring().unwrap().unwrap();
    assert_eq!(read.value, "{\"v\":1}");
    assert_eq!(read.resource_version, created);

    let replaced = api.replace_ring("{\"v\":2}", &created).unwrap();
    assert_ne!(replaced, created);
    let stale = api.replace_ring("{\"v\":3}", &created).unwrap_err();
    assert!(
        matches!(&stale, ApiError::Conflict(m) if m.contains("the object has been modified")),
        "{stale:?}"
    );
    let read = api.read_ring().unwrap().unwrap();
    assert_eq!(
        (read.value.as_str(), read.resource_version),
        ("{\"v\":2}", replaced)
    );
}

#[test]
fn a_conflict_storm_surfaces_as_conflicts_and_changes_nothing() {
    let cluster = Cluster::start(&[]);
    let api = cluster.api();
    let created = api.create_ring("a").unwrap();
    cluster.control("conflicts/2");
    assert!(matches!(
        api.replace_ring("b", &created),
        Err(ApiError::Conflict(_))
    ));
    let record = LeaseRecord::default();
    assert!(matches!(
        api.create_lease(&record),
        Err(ApiError::Conflict(_))
    ));
    assert_eq!(api.read_lease().unwrap(), None);
    assert_eq!(api.read_ring().unwrap().unwrap().resource_version, created);
    api.replace_ring("b", &created).unwrap();
}

#[test]
fn the_lease_round_trips_its_holder_times_and_transitions() {
    let cluster = Cluster::start(&[]);
    let api = cluster.api();
    assert_eq!(api.read_lease().unwrap(), None);

    let released = LeaseRecord {
        holder: None,
        lease_duration_seconds: 15,
        ..LeaseRecord::default()
    };
    let created = api.create_lease(&released).unwrap();
    let read = api.read_lease().unwrap().unwrap();
    assert_eq!(read.value, released);
    assert_eq!(read.resource_version, created);
    assert!(matches!(
        api.create_lease(&released),
        Err(ApiError::Conflict(_))
    ));

    let held = LeaseRecord {
        holder: Some("node-a".into()),
        lease_duration_seconds: 15,
        acquire_time: Some(at("2025-06-01T12:00:00.123456Z")),
        renew_time: Some(at("2025-06-01T12:00:05.5Z")),
        transitions: 1,
    };
    let taken = api.replace_lease(&held, &created).unwrap();
    let read = api.read_lease().unwrap().unwrap();
    assert_eq!(read.value, held);
    assert_eq!(read.resource_version, taken);
    // Another node that read the released lease loses the race.
    let lost = api
        .replace_lease(
            &LeaseRecord {
                holder: Some("node-b".into()),
                ..held.clone()
            },
            &created,
        )
        .unwrap_err();
    assert!(
        matches!(&lost, ApiError::Conflict(m) if m.contains("lease kube-system/keyrot")),
        "{lost:?}"
    );
    // An empty holder reads as released, as client-go writes a release.
    let emptied = LeaseRecord {
        holder: Some(String::new()),
        transitions: 2,
        ..held
    };
    api.replace_lease(&emptied, &taken).unwrap();
    assert_eq!(api.read_lease().unwrap().unwrap().value.holder, None);
}

#[test]
fn the_ring_watch_wakes_on_a_change_and_says_false_at_its_timeout() {
    let cluster = Cluster::start(&[]);
    let api = cluster.api();
    let created = api.create_ring("a").unwrap();

    let started = Instant::now();
    assert!(!api.watch_ring(&created, Duration::from_secs(1)).unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    let writer = cluster.api();
    let version = created.clone();
    let change = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        writer.replace_ring("b", &version).unwrap()
    });
    let started = Instant::now();
    assert!(api.watch_ring(&created, Duration::from_secs(20)).unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    let replaced = change.join().unwrap();
    // A version already passed: changed at once.
    assert!(api.watch_ring(&created, Duration::from_secs(20)).unwrap());
    // Nothing after the latest version.
    assert!(!api.watch_ring(&replaced, Duration::from_secs(1)).unwrap());
}

#[test]
fn a_watch_from_a_compacted_version_means_read_again() {
    let cluster = Cluster::start(&["--watch-history", "2"]);
    let api = cluster.api();
    let first = api.create_ring("0").unwrap();
    let mut version = first.clone();
    for i in 1..4 {
        version = api.replace_ring(&i.to_string(), &version).unwrap();
    }
    let started = Instant::now();
    assert!(api.watch_ring(&first, Duration::from_secs(20)).unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_partitioned_client_is_unavailable_at_once_while_another_works() {
    let cluster = Cluster::start(&["--client-listener", "node-a", "--client-listener", "node-b"]);
    let a = cluster.client("node-a");
    let b = cluster.client("node-b");
    let created = a.create_ring("a").unwrap();

    cluster.control("partition/node-a");
    let started = Instant::now();
    let cut = a.read_ring().unwrap_err();
    assert!(matches!(cut, ApiError::Unavailable(_)), "{cut:?}");
    let cut = a.watch_ring(&created, Duration::from_secs(20)).unwrap_err();
    assert!(matches!(cut, ApiError::Unavailable(_)), "{cut:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let replaced = b.replace_ring("b", &created).unwrap();

    cluster.control("heal/node-a");
    assert_eq!(a.read_ring().unwrap().unwrap().resource_version, replaced);

    cluster.control("down");
    for api in [&a, &b] {
        let down = api.read_lease().unwrap_err();
        assert!(matches!(down, ApiError::Unavailable(_)), "{down:?}");
    }
    cluster.control("up");
    assert_eq!(b.read_lease().unwrap(), None);
}

/// A server that accepts connections and never answers: only the adapter's deadline ends it.
#[test]
fn a_black_holed_api_is_unavailable_within_the_request_timeout() {
    let cluster = Cluster::start(&[]);
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = cluster.api_at(&format!("https://{}", hole.local_addr().unwrap()));
    let started = Instant::now();
    let error = api.read_ring().unwrap_err();
    assert!(
        matches!(&error, ApiError::Unavailable(m) if m.contains("configmap kube-system/keyrot-ring")),
        "{error:?}"
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
}

#[test]
fn a_client_without_credentials_is_refused() {
    let cluster = Cluster::start(&[]);
    let api = KubeClusterApi::new(
        &cluster.kubeconfig(&cluster.url, false),
        NAMESPACE,
        "keyrot-ring",
        "keyrot",
    )
    .unwrap();
    let error = api.read_ring().unwrap_err();
    assert!(
        matches!(&error, ApiError::Refused(m) if m.contains("401")),
        "{error:?}"
    );
}

#[test]
fn apiserver_addresses_are_the_ready_endpoints_sorted_and_deduplicated() {
    let cluster = Cluster::start(&[
        "--endpoint",
        "10.0.0.2",
        "--endpoint",
        "10.0.0.1",
        "--endpoint",
        "10.0.0.2",
        "--endpoint",
        "fd00::1",
        "--not-ready-endpoint",
        "10.0.0.3",
    ]);
    assert_eq!(
        cluster.api().apiserver_addresses().unwrap(),
        ["10.0.0.1", "10.0.0.2", "fd00::1"]
    );
}
