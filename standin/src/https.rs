//! Serves a synchronous request handler over HTTPS (HTTP/1.1) until the serving future is dropped.
//!
//! Dropping the future closes the listener and aborts every open connection, which is how the
//! apiserver stand-in goes down for a simulated restart.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// A request with its whole body read; every fixture's requests are small JSON documents.
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// Accepts connections on `listener` and answers each request with `handler`, forever.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, handler: Handler) {
    let acceptor = TlsAcceptor::from(tls);
    // Owning the connection tasks here means dropping this future aborts them all.
    let mut connections = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, say: pause instead of spinning on the error.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        connections.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request| answer(handler.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    handler: Handler,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let response = match body.collect().await {
        Ok(body) => handler(Request::from_parts(parts, body.to_bytes())),
        Err(e) => plain(
            http::StatusCode::BAD_REQUEST,
            format!("cannot read body: {e}"),
        ),
    };
    Ok(response)
}

/// A `text/plain` response.
pub fn plain(status: http::StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", text.into())
}

/// A response with a body and its content type.
pub fn respond(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("a status, one valid header and a body make a valid response")
}
