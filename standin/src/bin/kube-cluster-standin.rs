//! `kube-cluster-standin`: the Kubernetes API of a three-node control plane, for HA tests.
//!
//! Stdout, once every listener accepts connections, one line each:
//!
//! ```text
//! listening on https://ADDR          the API, as a client's kubeconfig names it
//! control on http://ADDR             the fault-injection listener
//! client NAME on https://ADDR        one per --client-listener, in flag order
//! ```
//!
//! The control listener (plain HTTP) takes `POST /down` and `POST /up` (every API connection
//! closed, on every listener, until up), `POST /conflicts/N` (the next N writes of ConfigMaps
//! and Leases answer 409 Conflict), `POST /partition/NAME` and `POST /heal/NAME` (one client
//! listener's connections closed, in-flight watches included, until healed),
//! `POST /partition-when-leading/NAME` (the same, the moment that listener's client next writes
//! itself into a Lease: a leader cut off mid-phase), and `GET /counts` (the API calls so far,
//! `{"VERB RESOURCE": N}`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use standin::cluster::serve::{serve_api, serve_control};
use standin::cluster::{Cluster, Config};
use standin::tls::{CA_FILE, TestPki};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A stand-in of a control plane's Kubernetes API for keyrot's HA tests"
)]
struct Args {
    /// Address of the main API listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the plain-HTTP control listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// One more API listener, on a free port of the main listener's IP, that can be partitioned
    /// alone (repeatable): one per client under test.
    #[arg(long = "client-listener")]
    clients: Vec<String>,
    /// A node's apiserver, `https://HOST:PORT`, to balance other requests over (repeatable).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// The CA of the nodes' certificates [default: the TLS directory's].
    #[arg(long)]
    node_ca: Option<PathBuf>,
    /// A ready endpoint of `default/kubernetes` (repeatable).
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// An endpoint of `default/kubernetes` listed as not ready (repeatable).
    #[arg(long = "not-ready-endpoint")]
    not_ready_endpoints: Vec<String>,
    /// How many changes are kept for watches; a watch from before them gets 410 Gone.
    #[arg(long, default_value_t = 1000)]
    watch_history: usize,
    /// Directory holding the test CA (`ca.crt`) and server certificate; created if needed.
    #[arg(long)]
    tls_dir: PathBuf,
    /// File to write this process's id to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-cluster-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let pki = TestPki::ensure(&args.tls_dir)?;
    let tls = pki.server_config()?;
    let node_ca = args
        .node_ca
        .clone()
        .unwrap_or_else(|| args.tls_dir.join(CA_FILE));
    let node_ca_pem =
        std::fs::read(&node_ca).with_context(|| format!("cannot read {}", node_ca.display()))?;
    let clients: BTreeSet<String> = args.clients.iter().cloned().collect();
    anyhow::ensure!(
        clients.len() == args.clients.len(),
        "a --client-listener name is given twice"
    );
    let cluster = Arc::new(Cluster::new(Config {
        nodes: args.nodes.clone(),
        node_ca_pem,
        endpoints: args.endpoints.clone(),
        not_ready_endpoints: args.not_ready_endpoints.clone(),
        clients,
        watch_history: args.watch_history,
    })?);

    // Every listener is bound before anything is announced, so a test may connect to any.
    let main = bind(args.listen).await?;
    let control = bind(args.control).await?;
    let mut client_listeners = Vec::new();
    for name in &args.clients {
        client_listeners.push((name.clone(), bind((args.listen.ip(), 0).into()).await?));
    }
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
    }
    println!("listening on https://{}", main.local_addr()?);
    println!("control on http://{}", control.local_addr()?);
    for (name, listener) in &client_listeners {
        println!("client {name} on https://{}", listener.local_addr()?);
    }

    let mut serving = tokio::task::JoinSet::new();
    serving.spawn(serve_api(main, tls.clone(), None, cluster.clone()));
    serving.spawn(serve_control(control, cluster.clone()));
    for (name, listener) in client_listeners {
        serving.spawn(serve_api(
            listener,
            tls.clone(),
            Some(name),
            cluster.clone(),
        ));
    }
    // The servers loop forever; one ending means it panicked.
    serving.join_next().await;
    anyhow::bail!("a listener stopped serving")
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}
