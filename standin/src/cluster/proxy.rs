//! The load balancer in front of the nodes' apiservers: every request the cluster stand-in does
//! not answer itself goes to the next node, round robin, skipping a node that refuses the
//! connection as a load balancer's health check would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, request::Parts};
use http_body_util::Full;

use crate::apiserver::objects::failure;

/// The request headers a backend needs and the response headers a client reads.
const REQUEST_HEADERS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::CONTENT_TYPE,
    http::header::ACCEPT,
];
const RESPONSE_HEADERS: [http::HeaderName; 2] =
    [http::header::CONTENT_TYPE, http::header::CACHE_CONTROL];

pub struct Proxy {
    /// `https://HOST:PORT` of each node's apiserver.
    nodes: Vec<String>,
    next: AtomicUsize,
    client: reqwest::Client,
}

impl Proxy {
    /// A balancer over `nodes`, trusting `ca_pem` for their certificates.
    pub fn new(nodes: Vec<String>, ca_pem: &[u8]) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem)?])
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Proxy {
            nodes: nodes
                .into_iter()
                .map(|n| n.trim_end_matches('/').to_string())
                .collect(),
            next: AtomicUsize::new(0),
            client,
        })
    }

    /// The backend's answer to the request, or a 503 when every node refuses connections.
    pub async fn forward(&self, parts: &Parts, body: Bytes) -> Response<Full<Bytes>> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.nodes.len() {
            let node = &self.nodes[(first + i) % self.nodes.len()];
            let mut request = self
                .client
                .request(parts.method.clone(), format!("{node}{path}"))
                .body(body.clone());
            for name in &REQUEST_HEADERS {
                if let Some(value) = parts.headers.get(name) {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(response) => return relay(response).await,
                Err(e) if e.is_connect() => continue,
                Err(e) => {
                    return failure(
                        StatusCode::BAD_GATEWAY,
                        "InternalError",
                        format!("node {node}: {e}"),
                    );
                }
            }
        }
        failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no node apiserver accepts connections",
        )
    }
}

async fn relay(response: reqwest::Response) -> Response<Full<Bytes>> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                format!("reading the node's answer: {e}"),
            );
        }
    };
    let mut relayed = Response::builder().status(status);
    for name in &RESPONSE_HEADERS {
        if let Some(value) = headers.get(name) {
            relayed = relayed.header(name, value);
        }
    }
    relayed
        .body(Full::new(body))
        .expect("a backend's status and headers make a valid response")
}
