//! The HTTP client for what keyrot fetches itself (the public documents, the IAM API): timeouts,
//! TLS roots, no redirects, and retries of transient failures with backoff.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// AWS STS gives up on a JWKS fetch after about 5 s; a slower answer is a problem worth seeing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per request: the first and three retries, 250 ms, 500 ms and 1 s apart. Longer
/// outages are the decision core's business: its gate polls again and times out.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// How a client may reach its server beyond the defaults (https, the platform's roots).
#[derive(Debug, Clone, Default)]
pub struct Reach<'a> {
    /// Plain http, for loopback test servers only (the plan checks that).
    pub allow_http: bool,
    /// Trust only these root certificates (PEM), for test servers only (the plan checks that).
    pub ca_file: Option<&'a Path>,
}

/// Why a request got no usable answer, or why the client could not be built. Each names the
/// request (`GET https://...`) or the file; answers the caller does not want (a 404, a wrong
/// Content-Type) are the caller's to report.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{}: {error}", path.display())]
    CaFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not PEM certificates: {detail}", path.display())]
    NotPem { path: PathBuf, detail: String },
    #[error("cannot set up the HTTP client: {detail}")]
    Client { detail: String },
    /// No answer after every attempt: the connection failed or was cut, or the server was slow.
    #[error("{what}: {detail}{}", after(*attempts))]
    Unanswered {
        what: String,
        detail: String,
        attempts: u32,
    },
    /// The request could not be sent at all: a URL the client refuses, plain http where https is
    /// required.
    #[error("{what}: {detail}{}", after(*attempts))]
    Unsendable {
        what: String,
        detail: String,
        attempts: u32,
    },
    /// Still a 5xx or 429 after every attempt.
    #[error("{what}: answered {status}{}", after(*attempts))]
    Overloaded {
        what: String,
        status: reqwest::StatusCode,
        attempts: u32,
    },
}

/// " (after N attempts)" once a request was retried, so a message says the failure lasted.
fn after(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

pub fn client(reach: &Reach<'_>) -> Result<reqwest::Client, HttpError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // A redirect means the document is not where the plan says; verifiers may not follow it.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!reach.allow_http);
    if let Some(path) = reach.ca_file {
        let pem = crate::fs_read::read(path).map_err(|error| HttpError::CaFile {
            path: path.to_path_buf(),
            error,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpError::NotPem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| HttpError::Client { detail: chain(&e) })
}

/// Sends the request `make` builds, again after a connection failure, a timeout, 429 or a 5xx,
/// up to four attempts in all. The last answer or error is returned, with the attempt count.
pub async fn send(
    what: &str,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, HttpError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let outcome = make().send().await;
        let transient = match &outcome {
            Ok(response) => {
                let status = response.status();
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Err(e) => unanswered(e),
        };
        if !transient || attempt == ATTEMPTS {
            let what = what.to_string();
            return match outcome {
                Ok(response) if transient => Err(HttpError::Overloaded {
                    what,
                    status: response.status(),
                    attempts: attempt,
                }),
                Ok(response) => Ok(response),
                Err(e) if transient => Err(HttpError::Unanswered {
                    what,
                    detail: chain(&e),
                    attempts: attempt,
                }),
                Err(e) => Err(HttpError::Unsendable {
                    what,
                    detail: chain(&e),
                    attempts: attempt,
                }),
            };
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// The request went out but no answer came: worth another attempt.
fn unanswered(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request()
}

/// The most bytes keyrot reads from one HTTP answer: discovery documents, JWKS and API answers
/// are kilobytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{what}: {detail}")]
    Read { what: String, detail: String },
    #[error("{what}: the answer is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { what: String },
}

/// The body of `response`, read chunk by chunk and refused past [`MAX_BODY_BYTES`], so that an
/// endless or huge answer cannot exhaust memory.
pub async fn body(what: &str, mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| BodyError::Read {
        what: what.to_string(),
        detail: chain(&e),
    })? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge {
                what: what.to_string(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes: reqwest's own Display says little ("error sending request").
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Query parameters that carry credentials (an Azure SAS signature, presigned S3 URLs): their
/// values are cut from any text that may quote a request URL, such as a store's error.
const SECRET_PARAMS: [&str; 4] = [
    "sig=",
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
];

/// `text` with the values of credential-bearing query parameters replaced by `REDACTED`.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let bytes = text.as_bytes();
        let at_param = (i > 0 && matches!(bytes[i - 1], b'?' | b'&'))
            .then(|| SECRET_PARAMS.iter().find(|p| lower[i..].starts_with(*p)))
            .flatten();
        match at_param {
            Some(param) => {
                out.push_str(&text[i..i + param.len()]);
                out.push_str("REDACTED");
                i += param.len();
                while i < text.len() && !matches!(bytes[i], b'&' | b' ' | b'"' | b')' | b'\n') {
                    i += 1;
                }
            }
            None => {
                let c = text[i..].chars().next().expect("inside the text");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Runs async work from keyrot's synchronous code on a runtime of its own.
pub fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_cut_from_messages() {
        let text = "PUT https://a.blob.core.windows.net/c/k?sv=2022&sig=abc%2Fdef&se=1 failed";
        assert_eq!(
            redact(text),
            "PUT https://a.blob.core.windows.net/c/k?sv=2022&sig=REDACTED&se=1 failed"
        );
        assert_eq!(
            redact("u?X-Amz-Signature=0123 (x)"),
            "u?X-Amz-Signature=REDACTED (x)"
        );
        assert_eq!(redact("no query: design=1"), "no query: design=1");
    }
}
