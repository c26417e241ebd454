//! What a publication is made of and what it reports: the two documents, each object's outcome,
//! and why a target failed, with whether trying again can help. Shared by local publishing
//! (`publish`) and remote publishing (`publish_remote`), so neither imports the other's types.

use super::{FailureKind, dir_failure_kind, io_failure_kind, write_failure_kind};
use crate::gcp_provider::GcpError;
use crate::http::{BodyError, HttpError};
use crate::stores::OpenError;
use crate::stores::conditional::{WriteError, Written};
use crate::targets::local_dir::LocalDirError;

/// The two bodies, byte for byte as kube-apiserver serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documents {
    pub discovery: String,
    pub jwks: String,
}

/// What one object (or provider) got: where, and whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOutcome {
    pub url: String,
    pub written: Written,
}

/// Why publishing to a target stopped, and what it had written (or found unchanged) by then:
/// every write is reported, also when a later one fails. The error is boxed: a store's error is
/// large, and the success path should not carry its size.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PublishError {
    pub written: Vec<ObjectOutcome>,
    pub error: Box<TargetError>,
}

impl PublishError {
    pub(crate) fn after(written: Vec<ObjectOutcome>, error: impl Into<TargetError>) -> Self {
        PublishError {
            written,
            error: Box::new(error.into()),
        }
    }

    pub(crate) fn nothing_written(error: impl Into<TargetError>) -> Self {
        Self::after(Vec::new(), error)
    }
}

/// Why one target could not be published to; each names the file, URL or provider.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Local(#[from] LocalDirError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] WriteError),
    #[error(transparent)]
    Gcp(#[from] GcpError),
    /// Reading the pair back found documents that are not keyrot's (or could not read them).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    ReadBack(Vec<TargetError>),
}

impl TargetError {
    /// Transient: the target or the network did not answer well this time (5xx, 429, a timeout,
    /// a dropped connection), or a second writer got in between; the next attempt can succeed.
    /// Permanent: the target refuses keyrot or is not where the plan says (401, 403, 404 of the
    /// bucket or container, a bad URL, a missing credential, a target directory that is a symlink
    /// or not a directory); retrying changes nothing until a person fixes it.
    pub fn kind(&self) -> FailureKind {
        match self {
            TargetError::Local(e) => local_kind(e),
            TargetError::Open(_) => FailureKind::Permanent,
            TargetError::Store(e) => store_kind(e),
            TargetError::Gcp(e) => gcp_kind(e),
            TargetError::ReadBack(errors) => worst(errors.iter().map(TargetError::kind)),
        }
    }
}

/// Permanent if any is: one failure that needs a person holds the whole publication.
pub(crate) fn worst(kinds: impl IntoIterator<Item = FailureKind>) -> FailureKind {
    match kinds.into_iter().any(|k| k == FailureKind::Permanent) {
        true => FailureKind::Permanent,
        false => FailureKind::Transient,
    }
}

fn local_kind(error: &LocalDirError) -> FailureKind {
    match error {
        LocalDirError::Dir(e) => dir_failure_kind(e),
        LocalDirError::Write(e) => write_failure_kind(e),
        LocalDirError::Read { error, .. } => io_failure_kind(error.kind()),
        LocalDirError::NotRegular { .. }
        | LocalDirError::TooLarge { .. }
        | LocalDirError::Jwks { .. } => FailureKind::Permanent,
    }
}

fn store_kind(error: &WriteError) -> FailureKind {
    match error {
        WriteError::ConcurrentWriter { .. } | WriteError::Overwritten { .. } => {
            FailureKind::Transient
        }
        WriteError::Read { error, .. } | WriteError::Write { error, .. } => {
            object_store_kind(error)
        }
    }
}

/// object_store gives the answers that need a person variants of their own (401, 403, and 404
/// of the bucket or container: an absent object reads as absent, never as an error). What stays
/// `Generic` outlasted its retries: a 5xx or 429, a connection that failed or timed out; only a
/// request its HTTP client calls unknown (a URL it cannot use) is permanent there.
fn object_store_kind(error: &object_store::Error) -> FailureKind {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } | E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            FailureKind::Permanent
        }
        E::AlreadyExists { .. } | E::Precondition { .. } => FailureKind::Transient,
        E::Generic { .. } => match http_cause(error).map(object_store::client::HttpError::kind) {
            Some(object_store::client::HttpErrorKind::Unknown) => FailureKind::Permanent,
            _ => FailureKind::Transient,
        },
        _ => FailureKind::Permanent,
    }
}

/// The HTTP client's error among `error`'s causes, if a request failed below the HTTP answer.
fn http_cause(error: &object_store::Error) -> Option<&object_store::client::HttpError> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(http) = cause.downcast_ref::<object_store::client::HttpError>() {
            return Some(http);
        }
        source = cause.source();
    }
    None
}

fn gcp_kind(error: &GcpError) -> FailureKind {
    match error {
        GcpError::Credentials { .. } => FailureKind::Permanent,
        GcpError::Http(e) => http_kind(e),
        GcpError::Body(e) => body_kind(e),
        GcpError::Status { status, .. } => status_kind(*status),
        // An endpoint that answers something other than IAM's JSON is not the IAM API.
        GcpError::NotJson { .. } | GcpError::NotOperation { .. } => FailureKind::Permanent,
        GcpError::Unfinished { .. } | GcpError::NotStored { .. } => FailureKind::Transient,
        GcpError::OperationFailed { error, .. } => operation_kind(error),
    }
}

fn http_kind(error: &HttpError) -> FailureKind {
    match error {
        HttpError::Unanswered { .. } | HttpError::Overloaded { .. } => FailureKind::Transient,
        HttpError::CaFile { .. }
        | HttpError::NotPem { .. }
        | HttpError::Client { .. }
        | HttpError::Unsendable { .. } => FailureKind::Permanent,
    }
}

fn body_kind(error: &BodyError) -> FailureKind {
    match error {
        // The answer was cut off midway.
        BodyError::Read { .. } => FailureKind::Transient,
        BodyError::TooLarge { .. } => FailureKind::Permanent,
    }
}

/// 5xx, 429 and 408 are the server's passing trouble; every other refusal (401, 403, 404, a
/// redirect, a bad request) comes back the same until someone changes the plan or the target.
fn status_kind(status: reqwest::StatusCode) -> FailureKind {
    match status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        true => FailureKind::Transient,
        false => FailureKind::Permanent,
    }
}

/// A failed long-running operation carries a `google.rpc.Status`: DEADLINE_EXCEEDED (4),
/// RESOURCE_EXHAUSTED (8), ABORTED (10) and UNAVAILABLE (14) are the codes Google's retry
/// guidance calls retryable.
fn operation_kind(status: &serde_json::Value) -> FailureKind {
    match status.get("code").and_then(serde_json::Value::as_i64) {
        Some(4 | 8 | 10 | 14) => FailureKind::Transient,
        _ => FailureKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safe_dir::DirError;
    use reqwest::StatusCode;
    use std::path::PathBuf;

    fn gcp_answer(status: u16) -> TargetError {
        TargetError::Gcp(GcpError::Status {
            what: "PATCH https://iam.example/v1/p".into(),
            status: StatusCode::from_u16(status).unwrap(),
            body: String::new(),
        })
    }

    fn store_error(error: object_store::Error) -> TargetError {
        TargetError::Store(WriteError::Write {
            url: "s3://bucket/openid/v1/jwks".into(),
            error,
        })
    }

    fn cause() -> Box<dyn std::error::Error + Send + Sync> {
        "the server's words".into()
    }

    #[test]
    fn server_trouble_and_timeouts_are_retried() {
        for status in [500, 502, 503, 429, 408] {
            assert_eq!(
                gcp_answer(status).kind(),
                FailureKind::Transient,
                "{status}"
            );
        }
        let busy = TargetError::Gcp(GcpError::Http(HttpError::Overloaded {
            what: "GET u".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            attempts: 4,
        }));
        assert_eq!(busy.kind(), FailureKind::Transient);
        let timed_out = TargetError::Gcp(GcpError::Http(HttpError::Unanswered {
            what: "GET u".into(),
            detail: "operation timed out".into(),
            attempts: 4,
        }));
        assert_eq!(timed_out.kind(), FailureKind::Transient);
        let store_outage = store_error(object_store::Error::Generic {
            store: "S3",
            source: cause(),
        });
        assert_eq!(store_outage.kind(), FailureKind::Transient);
        let unfinished = TargetError::Gcp(GcpError::Unfinished {
            what: "PATCH u".into(),
            name: "op".into(),
        });
        assert_eq!(unfinished.kind(), FailureKind::Transient);
    }

    #[test]
    fn a_second_writer_is_retried() {
        let conflict = TargetError::Store(WriteError::ConcurrentWriter {
            url: "s3://b/k".into(),
            what: "changed",
        });
        assert_eq!(conflict.kind(), FailureKind::Transient);
        let overwritten =
            TargetError::ReadBack(vec![TargetError::Store(WriteError::Overwritten {
                url: "s3://b/k".into(),
            })]);
        assert_eq!(overwritten.kind(), FailureKind::Transient);
        let lagging = TargetError::Gcp(GcpError::NotStored {
            url: "u".into(),
            stored: "absent".into(),
        });
        assert_eq!(lagging.kind(), FailureKind::Transient);
    }

    #[test]
    fn refusals_and_wrong_places_wait_for_a_person() {
        for status in [401, 403, 404, 400, 301] {
            assert_eq!(
                gcp_answer(status).kind(),
                FailureKind::Permanent,
                "{status}"
            );
        }
        for error in [
            object_store::Error::PermissionDenied {
                path: "k".into(),
                source: cause(),
            },
            object_store::Error::Unauthenticated {
                path: "k".into(),
                source: cause(),
            },
            object_store::Error::NotFound {
                path: "k".into(),
                source: cause(),
            },
        ] {
            let shown = error.to_string();
            assert_eq!(store_error(error).kind(), FailureKind::Permanent, "{shown}");
        }
        let bad_url = TargetError::Gcp(GcpError::Http(HttpError::Unsendable {
            what: "GET u".into(),
            detail: "URL scheme is not allowed".into(),
            attempts: 1,
        }));
        assert_eq!(bad_url.kind(), FailureKind::Permanent);
        let unusable_request = store_error(object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                object_store::client::HttpErrorKind::Unknown,
                std::io::Error::other("builder error"),
            )),
        });
        assert_eq!(unusable_request.kind(), FailureKind::Permanent);
        let no_credential = TargetError::Gcp(GcpError::Credentials {
            provider: "p".into(),
            detail: "no such file".into(),
        });
        assert_eq!(no_credential.kind(), FailureKind::Permanent);
        let unbuilt = TargetError::Open(OpenError {
            detail: "unknown region".into(),
        });
        assert_eq!(unbuilt.kind(), FailureKind::Permanent);
        let symlinked = TargetError::Local(LocalDirError::Dir(DirError::NotPlainDirectory {
            path: PathBuf::from("/srv/www/.well-known"),
            found: "a symlink to /etc".into(),
        }));
        assert_eq!(symlinked.kind(), FailureKind::Permanent);
    }

    #[test]
    fn a_local_directory_follows_its_io_error() {
        let read = |kind| {
            TargetError::Local(LocalDirError::Read {
                path: PathBuf::from("/srv/www/openid/v1/jwks"),
                error: std::io::Error::from(kind),
            })
            .kind()
        };
        assert_eq!(read(std::io::ErrorKind::TimedOut), FailureKind::Transient);
        assert_eq!(
            read(std::io::ErrorKind::PermissionDenied),
            FailureKind::Permanent
        );
    }

    #[test]
    fn a_failed_operation_is_retried_only_for_retryable_codes() {
        let failed = |code: i64| {
            TargetError::Gcp(GcpError::OperationFailed {
                what: "PATCH u".into(),
                error: serde_json::json!({ "code": code, "message": "m" }),
            })
            .kind()
        };
        assert_eq!(failed(14), FailureKind::Transient);
        assert_eq!(failed(7), FailureKind::Permanent);
    }

    #[test]
    fn one_permanent_failure_makes_the_whole_permanent() {
        let mixed = TargetError::ReadBack(vec![
            TargetError::Store(WriteError::Overwritten { url: "a".into() }),
            gcp_answer(403),
        ]);
        assert_eq!(mixed.kind(), FailureKind::Permanent);
        assert!(mixed.to_string().contains("; "), "{mixed}");
    }
}
