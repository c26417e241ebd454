//! JSON responses shaped like Kubernetes objects, and `Status` errors as kube-apiserver writes them.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::https::respond;

/// A Kubernetes object (or list) as the response body.
pub fn object(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", body.to_string())
}

/// A `metav1.Status` failure: what kube-apiserver answers instead of an object.
pub fn failure(
    code: StatusCode,
    reason: &str,
    message: impl Into<String>,
) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    object(code, &body)
}

pub fn not_found(message: impl Into<String>) -> Response<Full<Bytes>> {
    failure(StatusCode::NOT_FOUND, "NotFound", message)
}

pub fn bad_request(message: impl Into<String>) -> Response<Full<Bytes>> {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// 422: the object is well-formed JSON but a field is invalid.
pub fn invalid(message: impl Into<String>) -> Response<Full<Bytes>> {
    failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

pub fn internal(message: impl Into<String>) -> Response<Full<Bytes>> {
    failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
}

/// Parses a request body, or says why not (kube answers that with a 400).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("cannot decode the request body: {e}"))
}

/// A random version-4 UUID, the form of Kubernetes uids and token `jti`s.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

/// A UUID (version 8) derived from `name`: the same in every stand-in, as an object's uid is
/// the same in every apiserver of a cluster, which all read it from etcd.
pub fn uuid_from(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut b: [u8; 16] = digest[..16]
        .try_into()
        .expect("a SHA-256 digest has 32 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b)
}

fn format_uuid(b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// RFC 3339 in whole seconds with `Z`, as Kubernetes writes timestamps.
pub fn timestamp(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .expect("timestamps here are near the present")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_from_a_name_are_stable_and_differ_between_names() {
        let a = uuid_from("serviceaccount/ns/a");
        assert_eq!(a, uuid_from("serviceaccount/ns/a"));
        assert_ne!(a, uuid_from("serviceaccount/ns/b"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = uuid();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid());
    }

    #[test]
    fn timestamps_are_rfc3339_seconds_in_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
