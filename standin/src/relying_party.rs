//! The clouds' token exchange endpoints (AWS STS `AssumeRoleWithWebIdentity`, GCP STS `v1/token`,
//! Entra ID's client-credentials grant with a federated assertion) on plain http on loopback:
//! each checks the request's shape as the cloud documents it, verifies the token with [`Sts`]
//! against what the issuer publishes, checks `sub` against the trust's subject, and answers with
//! (fake) credentials or a refusal worded as that cloud words it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::https::respond;
use crate::sts::{Sts, StsError};

/// Which cloud, and what its trust names.
#[derive(Debug, Clone)]
pub enum Cloud {
    Aws { role_arn: String },
    Gcp { provider: String },
    Entra { tenant: String, client_id: String },
}

struct Shared {
    cloud: Cloud,
    sts: Sts,
    subject: String,
    exchanges: AtomicUsize,
    accepted: AtomicUsize,
}

/// A running endpoint; dropping it stops it.
pub struct RelyingPartyServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl RelyingPartyServer {
    /// Serves `cloud` on 127.0.0.1; tokens are verified by `sts` and must carry `subject`.
    pub async fn start(cloud: Cloud, sts: Sts, subject: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cloud,
            sts,
            subject: subject.to_string(),
            exchanges: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, the plan's `endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Exchange requests received, whatever their outcome.
    pub fn exchanges(&self) -> usize {
        self.shared.exchanges.load(Ordering::SeqCst)
    }

    /// Exchanges answered with credentials.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The verifier, to prime or forget its JWKS cache.
    pub fn sts(&self) -> &Sts {
        &self.shared.sts
    }
}

impl Drop for RelyingPartyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| answer(shared.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    shared.exchanges.fetch_add(1, Ordering::SeqCst);
    let request = Request::from_parts(parts, body);
    let response = match &shared.cloud {
        Cloud::Aws { role_arn } => aws(&shared, role_arn, &request).await,
        Cloud::Gcp { provider } => gcp(&shared, provider, &request).await,
        Cloud::Entra { tenant, client_id } => entra(&shared, tenant, client_id, &request).await,
    };
    if response.status().is_success() {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
    }
    Ok(response)
}

fn form(request: &Request<Bytes>) -> Option<Vec<(String, String)>> {
    let content_type = request.headers().get(http::header::CONTENT_TYPE)?;
    (content_type == "application/x-www-form-urlencoded").then(|| {
        url::form_urlencoded::parse(request.body())
            .into_owned()
            .collect()
    })
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Verifies as the cloud does, then the trust's subject condition.
async fn verify(shared: &Shared, token: &str) -> Result<(), Refusal> {
    let verified = shared.sts.verify(token).await.map_err(Refusal::Token)?;
    match verified.subject.as_deref() {
        Some(subject) if subject == shared.subject => Ok(()),
        other => Err(Refusal::Subject(other.unwrap_or_default().to_string())),
    }
}

enum Refusal {
    Token(StsError),
    Subject(String),
}

async fn aws(shared: &Shared, role_arn: &str, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let error = |status: StatusCode, code: &str, message: &str| {
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    \
             <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
             <RequestId>00000000-0000-0000-0000-000000000000</RequestId>\n</ErrorResponse>\n",
            escape_xml(message)
        );
        respond(status, "text/xml", xml)
    };
    let bad = StatusCode::BAD_REQUEST;
    if request.method() != http::Method::POST || request.uri().path() != "/" {
        return error(
            StatusCode::NOT_FOUND,
            "InvalidAction",
            "Could not find operation",
        );
    }
    let Some(pairs) = form(request) else {
        return error(bad, "InvalidAction", "Could not find operation");
    };
    if field(&pairs, "Action") != Some("AssumeRoleWithWebIdentity") {
        return error(bad, "InvalidAction", "Could not find operation");
    }
    if field(&pairs, "Version") != Some("2011-06-15") {
        return error(bad, "InvalidAction", "Could not find operation for version");
    }
    let session_ok = field(&pairs, "RoleSessionName").is_some_and(|n| {
        (2..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    });
    let (Some(arn), Some(token), true) = (
        field(&pairs, "RoleArn"),
        field(&pairs, "WebIdentityToken"),
        session_ok,
    ) else {
        return error(bad, "ValidationError", "1 validation error detected");
    };
    let denied = "Not authorized to perform sts:AssumeRoleWithWebIdentity";
    if arn != role_arn {
        return error(StatusCode::FORBIDDEN, "AccessDenied", denied);
    }
    match verify(shared, token).await {
        Ok(()) => respond(
            StatusCode::OK,
            "text/xml",
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
             <AssumeRoleWithWebIdentityResult>\n    <Credentials>\n      \
             <AccessKeyId>ASIAFAKECANARY</AccessKeyId>\n      <SecretAccessKey>fake-secret</SecretAccessKey>\n      \
             <SessionToken>fake-session</SessionToken>\n    </Credentials>\n  \
             </AssumeRoleWithWebIdentityResult>\n</AssumeRoleWithWebIdentityResponse>\n",
        ),
        Err(Refusal::Subject(_)) => error(StatusCode::FORBIDDEN, "AccessDenied", denied),
        Err(Refusal::Token(StsError::Expired { .. })) => {
            error(bad, "ExpiredTokenException", "Token expired")
        }
        Err(Refusal::Token(StsError::WrongAudience { .. })) => {
            error(bad, "InvalidIdentityToken", "Incorrect token audience")
        }
        Err(Refusal::Token(
            StsError::UnknownKid(_) | StsError::Fetch { .. } | StsError::Jwks { .. },
        )) => error(
            bad,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider,  please reference \
             AssumeRoleWithWebIdentity documentation for requirements",
        ),
        Err(Refusal::Token(other)) => error(bad, "InvalidIdentityToken", &other.to_string()),
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    let body = json!({ "error": error, "error_description": description });
    respond(status, "application/json", body.to_string())
}

fn access_token() -> Response<Full<Bytes>> {
    let body = json!({
        "access_token": "fake-access-token",
        "token_type": "Bearer",
        "expires_in": 3599,
    });
    respond(StatusCode::OK, "application/json", body.to_string())
}

async fn gcp(shared: &Shared, provider: &str, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let bad = StatusCode::BAD_REQUEST;
    if request.method() != http::Method::POST || request.uri().path() != "/v1/token" {
        return oauth_error(StatusCode::NOT_FOUND, "invalid_request", "Not found");
    }
    if request.headers().contains_key(http::header::AUTHORIZATION) {
        return oauth_error(
            bad,
            "invalid_request",
            "Authorization header is not allowed",
        );
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(request.body()) else {
        return oauth_error(bad, "invalid_request", "Invalid JSON payload received.");
    };
    let get = |name: &str| body.get(name).and_then(|v| v.as_str());
    if get("grantType") != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return oauth_error(
            bad,
            "unsupported_grant_type",
            "Invalid value for grant_type",
        );
    }
    if get("requestedTokenType") != Some("urn:ietf:params:oauth:token-type:access_token") {
        return oauth_error(bad, "invalid_request", "Invalid requested_token_type");
    }
    if get("subjectTokenType") != Some("urn:ietf:params:oauth:token-type:jwt") {
        return oauth_error(bad, "invalid_request", "Invalid subject_token_type");
    }
    if get("scope").is_none_or(str::is_empty) {
        return oauth_error(bad, "invalid_scope", "Scope(s) must be provided.");
    }
    if get("audience") != Some(provider) {
        return oauth_error(
            bad,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    let Some(token) = get("subjectToken") else {
        return oauth_error(bad, "invalid_request", "subject_token is required");
    };
    match verify(shared, token).await {
        Ok(()) => access_token(),
        Err(Refusal::Subject(_)) => oauth_error(
            bad,
            "unauthorized_client",
            "The given credential is rejected by the attribute condition.",
        ),
        Err(Refusal::Token(StsError::WrongAudience { found, .. })) => oauth_error(
            bad,
            "invalid_grant",
            &format!(
                "The audience in ID Token [{}] does not match the expected audience {}.",
                found.join(", "),
                shared.sts.audience()
            ),
        ),
        Err(Refusal::Token(error)) => oauth_error(bad, "invalid_grant", &error.to_string()),
    }
}

async fn entra(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
    request: &Request<Bytes>,
) -> Response<Full<Bytes>> {
    let bad = StatusCode::BAD_REQUEST;
    let path = format!("/{tenant}/oauth2/v2.0/token");
    if request.method() != http::Method::POST || request.uri().path() != path {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "AADSTS900561: The endpoint only accepts POST requests.",
        );
    }
    let Some(pairs) = form(request) else {
        return oauth_error(
            bad,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if field(&pairs, "grant_type") != Some("client_credentials") {
        return oauth_error(
            bad,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if field(&pairs, "client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            bad,
            "invalid_request",
            "AADSTS50027: Invalid client_assertion_type.",
        );
    }
    if !field(&pairs, "scope").is_some_and(|s| s.ends_with("/.default")) {
        return oauth_error(
            bad,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    if field(&pairs, "client_id") != Some(client_id) {
        return oauth_error(
            bad,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
        );
    }
    let Some(assertion) = field(&pairs, "client_assertion") else {
        return oauth_error(
            bad,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_assertion'.",
        );
    };
    let no_record = |subject: &str| {
        format!(
            "AADSTS70021: No matching federated identity record found for presented assertion. \
             Assertion Issuer: '{}'. Assertion Subject: '{subject}'. Assertion Audience: '{}'.",
            shared.sts.issuer(),
            shared.sts.audience()
        )
    };
    match verify(shared, assertion).await {
        Ok(()) => access_token(),
        Err(Refusal::Subject(subject)) => oauth_error(bad, "invalid_client", &no_record(&subject)),
        Err(Refusal::Token(StsError::WrongAudience { .. })) => {
            oauth_error(bad, "invalid_client", &no_record(&shared.subject))
        }
        Err(Refusal::Token(StsError::UnknownKid(kid))) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!(
                "AADSTS700027: Client assertion failed signature validation. (Reason - The key was not found., Thumbprint of key used by client: '{kid}')"
            ),
        ),
        Err(Refusal::Token(error)) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("AADSTS700024: Client assertion is not valid: {error}"),
        ),
    }
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}
