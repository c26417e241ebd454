//! Which request the cluster stand-in answers itself and how; the rest goes to the nodes.
//!
//! Like the apiserver stand-in, `/api` and `/apis` want a bearer token, any token.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Cluster;
use super::serve::{Body, whole};
use super::store::{Key, Kind, WriteError};
use super::watch::{self, Watch};
use crate::apiserver::objects::{bad_request, failure, invalid, not_found, object, parse_body};

/// What kube-rs asks for when a watch sets no timeout.
const DEFAULT_WATCH_SECONDS: u64 = 290;

impl Cluster {
    /// Answers one API request that came in on `listener` (`None`: the main one).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        listener: Option<&str>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return whole(bad_request(format!("cannot read body: {e}"))),
        };
        let path = parts.uri.path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        self.faults.count(call(&parts.method, &segments, watching));
        let is_api = matches!(segments.first(), Some(&"api" | &"apis"));
        if is_api && !has_bearer_token(&parts) {
            return whole(failure(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
            ));
        }
        let stored = match segments.as_slice() {
            ["api", "v1", "namespaces", ns, "configmaps", rest @ ..] => {
                Some((Kind::ConfigMap, *ns, rest))
            }
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                rest @ ..,
            ] => Some((Kind::Lease, *ns, rest)),
            _ => None,
        };
        match (stored, segments.as_slice()) {
            (Some((kind, ns, rest)), _) => {
                let answer = self.stored(kind, ns, rest, &parts, &query, &body);
                let took_lease = kind == Kind::Lease
                    && answer.status().is_success()
                    && matches!(parts.method, Method::POST | Method::PUT)
                    && parse_body::<Value>(&body).is_ok_and(|lease| {
                        lease["spec"]["holderIdentity"]
                            .as_str()
                            .is_some_and(|holder| !holder.is_empty())
                    });
                if took_lease && let Some(listener) = listener {
                    self.faults.lease_written_by(listener);
                }
                answer
            }
            (
                None,
                [
                    "apis",
                    "discovery.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "endpointslices",
                ],
            ) if parts.method == Method::GET => {
                whole(object(StatusCode::OK, &self.endpoint_slices(ns, &query)))
            }
            _ => whole(self.proxy.forward(&parts, body).await),
        }
    }

    /// A request on ConfigMaps or Leases: `rest` is empty for the collection, else the name.
    fn stored(
        &self,
        kind: Kind,
        namespace: &str,
        rest: &[&str],
        parts: &Parts,
        query: &HashMap<String, String>,
        body: &[u8],
    ) -> Response<Body> {
        let key = |name: &str| Key {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let is_write = matches!(parts.method, Method::POST | Method::PUT);
        let answer = match (&parts.method, rest) {
            (&Method::GET, []) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                return self.watch(kind, namespace, query);
            }
            (&Method::GET, []) => {
                let (revision, items) = self
                    .store
                    .current(|k| k.kind == kind && k.namespace == namespace);
                object(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", kind.name()),
                        "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": revision.to_string()},
                        "items": items,
                    }),
                )
            }
            (&Method::GET, [name]) => match self.store.get(&key(name)) {
                Some(found) => object(StatusCode::OK, &found),
                None => written(kind, name, Err(WriteError::NotFound)),
            },
            (_, [] | [_]) if is_write => {
                let parsed: Value = match parse_body(body) {
                    Ok(parsed) => parsed,
                    Err(why) => return whole(bad_request(why)),
                };
                let name = match rest {
                    [name] => name.to_string(),
                    _ => parsed["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                };
                let result = if self.faults.take_conflict() {
                    Err(WriteError::Conflict)
                } else if rest.is_empty() && parts.method == Method::POST {
                    self.store
                        .create(kind, namespace, parsed)
                        .map(|o| (StatusCode::CREATED, o))
                } else if !rest.is_empty() && parts.method == Method::PUT {
                    self.store
                        .replace(key(&name), parsed)
                        .map(|o| (StatusCode::OK, o))
                } else {
                    return whole(method_not_allowed(&parts.method));
                };
                written(kind, &name, result)
            }
            (&Method::DELETE, [name]) => written(
                kind,
                name,
                self.store.delete(key(name)).map(|o| (StatusCode::OK, o)),
            ),
            _ => method_not_allowed(&parts.method),
        };
        whole(answer)
    }

    fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        query: &HashMap<String, String>,
    ) -> Response<Body> {
        let from = match query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => None,
            Some(rv) => match rv.parse() {
                Ok(rv) => Some(rv),
                Err(_) => return whole(bad_request(format!("invalid resource version {rv:?}"))),
            },
        };
        let name = match query.get("fieldSelector").map(String::as_str) {
            None | Some("") => None,
            Some(selector) => match selector
                .strip_prefix("metadata.name==")
                .or_else(|| selector.strip_prefix("metadata.name="))
            {
                Some(name) => Some(name.to_string()),
                None => {
                    return whole(bad_request(format!(
                        "the stand-in selects by metadata.name only, not {selector:?}"
                    )));
                }
            },
        };
        if query.get("labelSelector").is_some_and(|s| !s.is_empty()) {
            return whole(bad_request("the stand-in's watches take no label selector"));
        }
        let seconds = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_WATCH_SECONDS);
        let namespace = namespace.to_string();
        let matching = move |key: &Key| {
            key.kind == kind
                && key.namespace == namespace
                && name.as_ref().is_none_or(|name| *name == key.name)
        };
        watch::stream(
            self.store.clone(),
            Watch {
                from,
                matching: Box::new(matching),
                timeout: Duration::from_secs(seconds),
            },
        )
    }

    /// `default/kubernetes`'s EndpointSlices: one per address family, port 6443.
    fn endpoint_slices(&self, namespace: &str, query: &HashMap<String, String>) -> Value {
        let selected = query
            .get("labelSelector")
            .is_none_or(|s| s.is_empty() || s == "kubernetes.io/service-name=kubernetes");
        let mut items = Vec::new();
        if namespace == "default" && selected {
            for (family, suffix) in [("IPv4", ""), ("IPv6", "-v6")] {
                let endpoints: Vec<Value> = self
                    .config
                    .endpoints
                    .iter()
                    .map(|a| (a, true))
                    .chain(self.config.not_ready_endpoints.iter().map(|a| (a, false)))
                    .filter(|(a, _)| a.contains(':') == (family == "IPv6"))
                    .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}}))
                    .collect();
                if endpoints.is_empty() {
                    continue;
                }
                let name = format!("kubernetes{suffix}");
                items.push(json!({
                    "metadata": {
                        "name": name,
                        "namespace": "default",
                        "uid": crate::apiserver::objects::uuid_from(&format!("endpointslice/{name}")),
                        "resourceVersion": "1",
                        "labels": {
                            "kubernetes.io/service-name": "kubernetes",
                            "endpointslice.kubernetes.io/managed-by":
                                "endpointslicemirroring-controller.k8s.io",
                        },
                    },
                    "addressType": family,
                    "endpoints": endpoints,
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                }));
            }
        }
        json!({
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": self.store.revision().to_string()},
            "items": items,
        })
    }
}

/// The answer to a read or write of `name`: the object, or kube's Status for the refusal.
fn written(
    kind: Kind,
    name: &str,
    result: Result<(StatusCode, Value), WriteError>,
) -> http::Response<http_body_util::Full<Bytes>> {
    let resource = kind.qualified();
    match result {
        Ok((status, stored)) => object(status, &stored),
        Err(WriteError::NotFound) => not_found(format!("{resource} \"{name}\" not found")),
        Err(WriteError::AlreadyExists) => failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        ),
        Err(WriteError::Conflict) => failure(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        ),
        Err(WriteError::Invalid(why)) => invalid(why),
        Err(WriteError::BadRequest(why)) => bad_request(why),
    }
}

fn method_not_allowed(method: &Method) -> http::Response<http_body_util::Full<Bytes>> {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource: {method}"),
    )
}

/// The call as counted: kube's audit verb and the resource (with its subresource), e.g.
/// `update configmaps`, `watch configmaps`, `create serviceaccounts/token`; else the path.
fn call(method: &Method, segments: &[&str], watching: bool) -> String {
    let resource_path = match segments {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return format!("{method} /{}", segments.join("/")),
    };
    let (resource, named) = match resource_path {
        ["namespaces", _, resource, rest @ ..] => (*resource, rest),
        [resource, rest @ ..] => (*resource, rest),
        [] => return format!("{method} /{}", segments.join("/")),
    };
    let verb = match (method, named.is_empty()) {
        (&Method::GET, true) if watching => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => method.as_str(),
    };
    match named {
        [_, subresource, ..] => format!("{verb} {resource}/{subresource}"),
        _ => format!("{verb} {resource}"),
    }
}

fn has_bearer_token(parts: &Parts) -> bool {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_verb_and_resource() {
        fn count(method: Method, path: &str, watching: bool) -> String {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            call(&method, &segments, watching)
        }
        assert_eq!(
            count(Method::GET, "/api/v1/namespaces/ns/configmaps", true),
            "watch configmaps"
        );
        assert_eq!(
            count(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                false
            ),
            "update leases"
        );
        assert_eq!(
            count(
                Method::POST,
                "/api/v1/namespaces/ns/serviceaccounts/sa/token",
                false
            ),
            "create serviceaccounts/token"
        );
        assert_eq!(
            count(
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                false
            ),
            "create tokenreviews"
        );
        assert_eq!(
            count(Method::GET, "/openid/v1/jwks", false),
            "GET /openid/v1/jwks"
        );
    }
}
