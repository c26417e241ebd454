//! A minimal HTTP/1.1 server for `GET /metrics`, on a few threads of its own.
//!
//! One request per connection, answered and closed. [`WORKERS`] threads accept on the one
//! listener, so a client that stalls holds one of them, never the scrapes; each request has
//! [`REQUEST_WAIT`] in all to arrive and as long again to be written, so a stalled worker comes
//! back. The endpoint has no authentication: an address beyond loopback is logged as a warning.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::warn;

use super::metrics::{CONTENT_TYPE, Snapshot, render};

/// Threads serving scrapes: Prometheus scrapes one at a time, so a few cover stalled clients.
pub const WORKERS: usize = 4;
/// The whole request (line and headers) must arrive within this; the answer is written within it.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Request line and headers; a scrape sends a few hundred bytes.
const MAX_REQUEST: u64 = 16 * 1024;

/// Binds `address` (errors name it) and serves the snapshot from a thread.
pub fn serve(address: SocketAddr, snapshot: Arc<Mutex<Snapshot>>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("metrics.listen {address}: cannot listen: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!(
            "metrics.listen {bound} is not a loopback address: anyone who reaches it reads the \
             metrics, without authentication"
        );
    }
    for _ in 0..WORKERS {
        let listener = listener.try_clone()?;
        let snapshot = snapshot.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = respond(stream, &snapshot);
                }
            })?;
    }
    Ok(bound)
}

fn respond(stream: TcpStream, snapshot: &Mutex<Snapshot>) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_WAIT;
    stream.set_write_timeout(Some(REQUEST_WAIT))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut request_line = String::new();
    read_line_by(&mut reader, &stream, deadline, &mut request_line)?;
    // Read the headers to their end, so closing does not reset a connection with unread data.
    let mut header = String::new();
    while read_line_by(&mut reader, &stream, deadline, &mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let snapshot = snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            ("200 OK", CONTENT_TYPE, render(&snapshot, Utc::now()))
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "keyrot serves only /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// One line, with the read timeout shrunk to what is left until `deadline`: a client sending a
/// byte at a time cannot hold a worker longer than that.
fn read_line_by(
    reader: &mut impl BufRead,
    stream: &TcpStream,
    deadline: Instant,
    line: &mut String,
) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request not received in time",
        ));
    }
    stream.set_read_timeout(Some(left))?;
    reader.read_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let address = serve("127.0.0.1:0".parse().unwrap(), snapshot).unwrap();
        let ok = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\r\n\r\n# HELP keyrot_build_info"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let missing = get(address, "GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(address, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[test]
    fn metrics_scrape_is_served_while_another_client_stalls() {
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let address = serve("127.0.0.1:0".parse().unwrap(), snapshot).unwrap();
        // Fewer stalled clients than workers, each sending half a request and waiting.
        let stalled: Vec<TcpStream> = (0..WORKERS - 1)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                stream
            })
            .collect();
        let (done, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(get(address, "GET /metrics HTTP/1.1\r\n\r\n"));
        });
        // A serial server answers only after every stalled client's timeout; this one at once.
        // The bound is generous: it is shorter than the stalled clients' timeouts put together.
        let ok = answered
            .recv_timeout(REQUEST_WAIT * (WORKERS as u32 - 1) - Duration::from_secs(1))
            .expect("the scrape is answered while the others stall");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        drop(stalled);
    }

    #[test]
    fn an_address_in_use_is_reported_with_the_field() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let err = serve(address, Arc::new(Mutex::new(Snapshot::default()))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("metrics.listen {address}: cannot listen")),
            "{err}"
        );
    }
}
