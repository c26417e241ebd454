//! Which request goes to which endpoint of the stand-in.
//!
//! The API endpoints want a bearer token, any token: authentication is not what is under test,
//! but a client that forgets its credentials should notice. `/readyz` and the two OIDC documents
//! are served to anyone.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::Apiserver;
use super::objects::{bad_request, failure, invalid, not_found, object, parse_body};
use super::service_accounts::AlreadyExists;
use crate::https::{plain, respond};
use keyrot::documents::{DISCOVERY_CONTENT_TYPE, JWKS_CONTENT_TYPE};

impl Apiserver {
    /// Answers one request.
    pub fn handle(&self, request: Request<Bytes>) -> Response<Full<Bytes>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs() as i64;
        self.handle_at(request, now)
    }

    fn handle_at(&self, request: Request<Bytes>, now: i64) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let is_api = matches!(segments.first(), Some(&"api" | &"apis"));
        if is_api && !has_bearer_token(&request) {
            return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        let body = request.body();
        match (request.method(), segments.as_slice()) {
            (&Method::GET, ["readyz"]) => plain(StatusCode::OK, "ok"),
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::GET, ["openid", "v1", "jwks"]) => self.jwks(),
            (&Method::GET, [".well-known", "openid-configuration"]) => self.discovery(),
            (
                &Method::POST,
                [
                    "api",
                    "v1",
                    "namespaces",
                    ns,
                    "serviceaccounts",
                    name,
                    "token",
                ],
            ) => self.token_request(ns, name, body, now),
            (&Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
                self.token_review(body, now)
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "serviceaccounts"]) => {
                object(StatusCode::OK, &self.accounts.list(ns, now))
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "serviceaccounts", name]) => {
                match self.accounts.get(ns, name, now) {
                    Some(account) => object(StatusCode::OK, &account),
                    None => not_found(format!("serviceaccounts {name:?} not found")),
                }
            }
            (&Method::POST, ["api", "v1", "namespaces", ns, "serviceaccounts"]) => {
                self.create_service_account(ns, body, now)
            }
            _ => not_found("the server could not find the requested resource"),
        }
    }

    fn jwks(&self) -> Response<Full<Bytes>> {
        match self.documents_now() {
            Some(documents) => {
                let mut response = respond(StatusCode::OK, JWKS_CONTENT_TYPE, documents.jwks);
                // pkg/routes/openidmetadata.go: caches may keep the JWKS for an hour.
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, max-age=3600"),
                );
                response
            }
            None => not_found("the server could not find the requested resource"),
        }
    }

    fn discovery(&self) -> Response<Full<Bytes>> {
        match self.documents_now() {
            Some(documents) => {
                let mut response =
                    respond(StatusCode::OK, DISCOVERY_CONTENT_TYPE, documents.discovery);
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, max-age=3600"),
                );
                response
            }
            None => not_found("the server could not find the requested resource"),
        }
    }

    /// `GET /metrics`: the external signer's gauge, in Prometheus' text format, when there is
    /// one (kube registers the externaljwt metrics only with a signing endpoint).
    fn metrics(&self) -> Response<Full<Bytes>> {
        let body = match self.signer_data_timestamp() {
            Some(seconds) => format!(
                "# HELP apiserver_externaljwt_fetch_keys_data_timestamp Unix Timestamp in seconds \
                 of the last successful FetchKeys data_timestamp value returned by the external \
                 signer\n# TYPE apiserver_externaljwt_fetch_keys_data_timestamp gauge\n\
                 apiserver_externaljwt_fetch_keys_data_timestamp {seconds}\n"
            ),
            None => String::new(),
        };
        respond(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    fn create_service_account(
        &self,
        namespace: &str,
        body: &[u8],
        now: i64,
    ) -> Response<Full<Bytes>> {
        let account: serde_json::Value = match parse_body(body) {
            Ok(account) => account,
            Err(why) => return bad_request(why),
        };
        let Some(name) = account["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
        else {
            return invalid(
                "ServiceAccount \"\" is invalid: metadata.name: Required value: name or \
                 generateName is required",
            );
        };
        match self.accounts.create(namespace, name, now) {
            Ok(created) => object(StatusCode::CREATED, &created),
            Err(AlreadyExists) => failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("serviceaccounts {name:?} already exists"),
            ),
        }
    }
}

fn has_bearer_token(request: &Request<Bytes>) -> bool {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty())
}
