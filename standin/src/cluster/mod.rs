//! A stand-in of a control plane's Kubernetes API for HA tests (binary `kube-cluster-standin`):
//! the objects keyrot coordinates through (ConfigMaps, Leases, the `kubernetes` EndpointSlice)
//! kept here with kube's semantics, everything else balanced over the nodes' apiserver
//! stand-ins, and faults a test injects (down, 409 storms, one client partitioned).

mod faults;
mod proxy;
mod routes;
pub mod serve;
mod store;
mod watch;

use std::collections::BTreeSet;

pub use faults::Faults;
use proxy::Proxy;
use store::Store;

/// What the stand-in serves besides its stored objects.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The node apiservers requests are balanced over (`https://HOST:PORT`).
    pub nodes: Vec<String>,
    /// The CA the nodes' certificates are signed by, PEM.
    pub node_ca_pem: Vec<u8>,
    /// The ready endpoints of `default/kubernetes`.
    pub endpoints: Vec<String>,
    /// Endpoints listed as not ready.
    pub not_ready_endpoints: Vec<String>,
    /// The names of the client listeners, which can be partitioned one by one.
    pub clients: BTreeSet<String>,
    /// How many changes are kept for watches; a watch from before them gets `410 Gone`.
    pub watch_history: usize,
}

pub struct Cluster {
    store: std::sync::Arc<Store>,
    pub faults: Faults,
    proxy: Proxy,
    config: Config,
}

impl Cluster {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Cluster {
            store: std::sync::Arc::new(Store::new(config.watch_history)),
            faults: Faults::default(),
            proxy: Proxy::new(config.nodes.clone(), &config.node_ca_pem)?,
            config,
        })
    }

    fn has_client(&self, name: &str) -> bool {
        self.config.clients.contains(name)
    }
}
