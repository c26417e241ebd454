//! Watches: a chunked stream of `{"type": ..., "object": ...}` lines, one per change after the
//! client's resourceVersion, as kube-apiserver streams them. The stream ends after the first
//! batch of changes or at `timeoutSeconds`, both of which a client must handle anyway.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::serve::Body;
use super::store::{Key, Since, Store};

/// What a watch request asked for.
pub struct Watch {
    /// The revision after which changes are wanted; `None` (`""` or `"0"`): the current
    /// objects first, as synthetic ADDED events.
    pub from: Option<u64>,
    pub matching: Box<dyn Fn(&Key) -> bool + Send + Sync>,
    pub timeout: Duration,
}

/// Starts streaming the changes `watch` asks for.
pub fn stream(store: Arc<Store>, watch: Watch) -> Response<Body> {
    let (lines, body) = mpsc::channel(16);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + watch.timeout;
        // Subscribed before the first look, so no change between the look and the wait is missed.
        let mut revisions = store.subscribe();
        let from = match watch.from {
            Some(from) => from,
            None => {
                let (revision, current) = store.current(&watch.matching);
                if !current.is_empty() {
                    for object in current {
                        let _ = lines.send(event("ADDED", &object)).await;
                    }
                    return;
                }
                revision
            }
        };
        loop {
            match store.since(from, &watch.matching) {
                Since::Expired { oldest } => {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": format!("too old resource version: {from} ({oldest})"),
                    });
                    let _ = lines.send(event("ERROR", &status)).await;
                    return;
                }
                Since::Changes(changes) if !changes.is_empty() => {
                    for change in changes {
                        let _ = lines
                            .send(event(change.kind_of_change, &change.object))
                            .await;
                    }
                    return;
                }
                Since::Changes(_) => {}
            }
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
                () = lines.closed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Lines(body).boxed())
        .expect("a status, one valid header and a body make a valid response")
}

fn event(kind_of_change: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind_of_change, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The response body of a watch: each line as it is sent, until the sender is dropped.
struct Lines(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}
