//! The cluster stand-in's listeners: the API over HTTPS (the main one and one per client), and
//! the plain-HTTP control listener tests inject faults through.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Cluster;
use crate::https::plain;

/// A response body: a whole document, or a watch's stream of events.
pub type Body = BoxBody<Bytes, Infallible>;

/// A response whose body is known in full.
pub fn whole(response: Response<Full<Bytes>>) -> Response<Body> {
    response.map(BodyExt::boxed)
}

/// Serves the API on `listener` (`name`: a client listener, `None`: the main one), forever.
/// While the listener is cut, new connections are closed at once and open ones are dropped.
pub async fn serve_api(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    name: Option<String>,
    cluster: Arc<Cluster>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        let Some(tcp) = accept(&listener).await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        if cluster.faults.is_cut(name.as_deref()) {
            continue;
        }
        let acceptor = acceptor.clone();
        let cluster = cluster.clone();
        let name = name.clone();
        connections.spawn(async move {
            let service = {
                let cluster = cluster.clone();
                let name = name.clone();
                service_fn(move |request: Request<Incoming>| {
                    let cluster = cluster.clone();
                    let name = name.clone();
                    async move { Ok::<_, Infallible>(cluster.handle(request, name.as_deref()).await) }
                })
            };
            let serving = async {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            };
            // Dropping the connection closes the socket: no answer, as on a dead network path.
            tokio::select! {
                () = serving => {}
                () = cluster.faults.cut(name.as_deref()) => {}
            }
        });
    }
}

/// Serves the control protocol on plain HTTP, forever.
pub async fn serve_control(listener: TcpListener, cluster: Arc<Cluster>) {
    let mut connections = JoinSet::new();
    loop {
        let Some(tcp) = accept(&listener).await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let cluster = cluster.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = control(&cluster, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(whole(answer)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// One control request; see the binary's documentation for the protocol.
fn control(cluster: &Cluster, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let faults = &cluster.faults;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["down"]) => faults.set_down(true),
        (&Method::POST, ["up"]) => faults.set_down(false),
        (&Method::POST, ["conflicts", n]) => match n.parse() {
            Ok(n) => faults.add_conflicts(n),
            Err(_) => return plain(StatusCode::BAD_REQUEST, "not a count\n"),
        },
        (&Method::POST, ["partition", name]) if cluster.has_client(name) => faults.partition(name),
        (&Method::POST, ["heal", name]) if cluster.has_client(name) => faults.heal(name),
        (&Method::POST, ["partition-when-leading", name]) if cluster.has_client(name) => {
            faults.partition_when_leading(name)
        }
        (&Method::POST, ["partition" | "heal" | "partition-when-leading", name]) => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("no client listener {name}\n"),
            );
        }
        (&Method::GET, ["counts"]) => {
            let counts = serde_json::to_string(&faults.counts()).expect("a map of numbers");
            return crate::https::respond(StatusCode::OK, "application/json", counts);
        }
        _ => return plain(StatusCode::NOT_FOUND, "no such control request\n"),
    }
    plain(StatusCode::OK, "ok\n")
}

async fn accept(listener: &TcpListener) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((tcp, _)) => Some(tcp),
        Err(e) => {
            // Out of file descriptors, say: pause instead of spinning on the error.
            eprintln!("accept failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            None
        }
    }
}
