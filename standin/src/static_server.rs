//! A directory served over HTTPS, standing in for the public host of the issuer documents.
//!
//! keyrot's local-directory target writes `.well-known/openid-configuration` and
//! `openid/v1/jwks` under a directory; this serves `DIR/PATH` at `https://ADDR/PATH`, with the
//! content types kube-apiserver uses for the two documents. For an issuer with a path
//! (`https://127.0.0.1:PORT/tenant`), publish into `DIR/tenant`. Files are read per request,
//! so a rewrite shows at once, and nothing is cached.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use keyrot::documents::{DISCOVERY_CONTENT_TYPE, DISCOVERY_PATH, JWKS_CONTENT_TYPE, JWKS_PATH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::https::{self, plain, respond};
use crate::tls::{TestPki, TlsError};

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct StaticServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl StaticServer {
    /// Serves `dir` on `listen` with the test PKI kept in `tls_dir`.
    pub async fn start(dir: &Path, listen: SocketAddr, tls_dir: &Path) -> Result<Self, StartError> {
        let tls = TestPki::ensure(tls_dir)?.server_config()?;
        let listen_error = |source| StartError::Listen {
            address: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let dir = dir.to_path_buf();
        let handler: https::Handler = Arc::new(move |request| handle(&dir, &request));
        let task = tokio::spawn(https::serve(listener, tls, handler));
        Ok(Self { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one request from the files under `dir`.
pub fn handle(dir: &Path, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    let path = request.uri().path();
    let Some(file) = file_for(dir, path) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    match std::fs::read(&file) {
        Ok(body) if request.method() == Method::HEAD => {
            let mut response = respond(StatusCode::OK, content_type(path), Bytes::new());
            response.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(body.len()),
            );
            response
        }
        Ok(body) => respond(StatusCode::OK, content_type(path), body),
        Err(_) => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The file a URL path names, or None for paths that could leave `dir` or name a directory.
fn file_for(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let segments: Vec<&str> = url_path.trim_start_matches('/').split('/').collect();
    let unsafe_segment = |s: &&str| s.is_empty() || *s == "." || *s == ".." || s.contains('\\');
    if segments.iter().any(unsafe_segment) {
        return None;
    }
    let file = segments.iter().fold(dir.to_path_buf(), |p, s| p.join(s));
    file.is_file().then_some(file)
}

fn content_type(url_path: &str) -> &'static str {
    if url_path.ends_with(JWKS_PATH) {
        JWKS_CONTENT_TYPE
    } else if url_path.ends_with(DISCOVERY_PATH) || url_path.ends_with(".json") {
        DISCOVERY_CONTENT_TYPE
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<Bytes> {
        Request::get(path).body(Bytes::new()).unwrap()
    }

    #[test]
    fn serves_the_two_documents_with_kubes_content_types() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t/.well-known")).unwrap();
        std::fs::create_dir_all(dir.path().join("t/openid/v1")).unwrap();
        std::fs::write(dir.path().join("t/.well-known/openid-configuration"), "{}").unwrap();
        std::fs::write(dir.path().join("t/openid/v1/jwks"), "{\"keys\":[]}").unwrap();

        let discovery = handle(dir.path(), &get("/t/.well-known/openid-configuration"));
        assert_eq!(discovery.status(), StatusCode::OK);
        assert_eq!(discovery.headers()["content-type"], "application/json");
        let jwks = handle(dir.path(), &get("/t/openid/v1/jwks"));
        assert_eq!(jwks.status(), StatusCode::OK);
        assert_eq!(jwks.headers()["content-type"], "application/jwk-set+json");
    }

    #[test]
    fn refuses_paths_outside_the_directory_and_directories() {
        let root = tempfile::tempdir().unwrap();
        let served = root.path().join("served");
        std::fs::create_dir_all(served.join("sub")).unwrap();
        std::fs::write(root.path().join("secret"), "x").unwrap();
        for path in [
            "/../secret",
            "/sub/../../secret",
            "/sub",
            "/",
            "/sub//x",
            "/missing",
        ] {
            let response = handle(&served, &get(path));
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let post = Request::post("/x").body(Bytes::new()).unwrap();
        assert_eq!(
            handle(&served, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
