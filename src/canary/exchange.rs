//! One canary token exchanged at a relying party, each request shaped as the cloud's API
//! documents it; the credentials it answers with are wiped at once, never parsed, logged or kept.

use zeroize::Zeroizing;

use crate::http::{self, Reach};
use crate::plan::{RelyingParty, is_loopback};

/// The scopes asked for. GCP's token endpoint requires one for an external credential; Entra's
/// client-credentials grant takes a resource's `/.default`. The canary's trust grants nothing, so
/// the token obtained can do nothing there either.
const GCP_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const ENTRA_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The session name CloudTrail shows for a canary (`[\w+=,.@-]{2,64}`).
const AWS_SESSION_NAME: &str = "keyrot-canary";

/// Why a relying party did not exchange the token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("cannot set up the HTTP client: {0}")]
    Client(http::HttpError),
    /// No answer (after the retries of transient failures).
    #[error("{0}")]
    Unreachable(String),
    /// The cloud said no, in its own words (`code: message`).
    #[error("{party} answered {status}: {text}")]
    Refused {
        party: &'static str,
        status: u16,
        text: String,
    },
    /// A success status whose body is not the cloud's answer (a proxy, a captive portal).
    #[error("{party} answered {status} without credentials")]
    NoCredentials { party: &'static str, status: u16 },
    #[error(transparent)]
    Body(#[from] http::BodyError),
}

/// Exchanges `token` at `party`. `Ok` means the party verified the token and issued credentials.
pub async fn exchange(party: &RelyingParty, token: &str) -> Result<(), ExchangeError> {
    let (endpoint, url) = match party {
        RelyingParty::AwsSts { endpoint, .. } => (endpoint, format!("{endpoint}/")),
        RelyingParty::GcpSts { endpoint, .. } => (endpoint, format!("{endpoint}/v1/token")),
        RelyingParty::Entra {
            endpoint, tenant, ..
        } => (endpoint, format!("{endpoint}/{tenant}/oauth2/v2.0/token")),
    };
    let allow_http =
        endpoint.starts_with("http:") && url::Url::parse(endpoint).is_ok_and(|u| is_loopback(&u));
    let client = http::client(&Reach {
        allow_http,
        ca_file: None,
    })
    .map_err(ExchangeError::Client)?;
    let (content_type, body) = request_body(party, token);
    let what = format!("POST {url}");
    let response = http::send(&what, || {
        client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_vec())
    })
    .await
    .map_err(|e| ExchangeError::Unreachable(scrub(&e.to_string(), token)))?;
    let status = response.status();
    let answer = Zeroizing::new(http::body(&what, response).await?);
    let name = party_name(party);
    if !status.is_success() {
        let text = refusal_text(party, &answer);
        return Err(ExchangeError::Refused {
            party: name,
            status: status.as_u16(),
            text: scrub(&text, token),
        });
    }
    // The credentials are only looked for, never copied out; `answer` is wiped on return.
    let marker: &[u8] = match party {
        RelyingParty::AwsSts { .. } => b"<AssumeRoleWithWebIdentityResult",
        RelyingParty::GcpSts { .. } | RelyingParty::Entra { .. } => b"\"access_token\"",
    };
    if !answer.windows(marker.len()).any(|w| w == marker) {
        return Err(ExchangeError::NoCredentials {
            party: name,
            status: status.as_u16(),
        });
    }
    Ok(())
}

fn party_name(party: &RelyingParty) -> &'static str {
    match party {
        RelyingParty::AwsSts { .. } => "AWS STS",
        RelyingParty::GcpSts { .. } => "GCP STS",
        RelyingParty::Entra { .. } => "Entra ID",
    }
}

/// The request's Content-Type and body; the body holds the token, so it is wiped when dropped.
fn request_body(party: &RelyingParty, token: &str) -> (&'static str, Zeroizing<Vec<u8>>) {
    const FORM: &str = "application/x-www-form-urlencoded";
    let form = |pairs: &[(&str, &str)]| {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            serializer.append_pair(name, value);
        }
        Zeroizing::new(serializer.finish().into_bytes())
    };
    match party {
        // The STS query API (API reference, AssumeRoleWithWebIdentity: the parameters RoleArn,
        // RoleSessionName and WebIdentityToken, with Action and Version=2011-06-15, as a GET
        // query or a POST form). The call is unsigned: the token is the only credential. POST
        // keeps the token out of any URL a proxy or a log might record.
        RelyingParty::AwsSts { role_arn, .. } => (
            FORM,
            form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", role_arn),
                ("RoleSessionName", AWS_SESSION_NAME),
                // The shortest session STS grants: the credentials are discarded anyway.
                ("DurationSeconds", "900"),
                ("WebIdentityToken", token),
            ]),
        ),
        // `POST https://sts.googleapis.com/v1/token` (IAM reference, sts/rest/v1/TopLevel/token):
        // the body's JSON representation is grantType, audience, scope, requestedTokenType,
        // subjectToken and subjectTokenType; no Authorization header may be sent.
        RelyingParty::GcpSts { provider, .. } => {
            let body = serde_json::json!({
                "grantType": "urn:ietf:params:oauth:grant-type:token-exchange",
                "audience": provider,
                "scope": GCP_SCOPE,
                "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token",
                "subjectToken": token,
                "subjectTokenType": "urn:ietf:params:oauth:token-type:jwt",
            });
            (
                "application/json",
                Zeroizing::new(body.to_string().into_bytes()),
            )
        }
        // The client credentials grant with a federated credential (Microsoft identity platform,
        // v2-oauth2-client-creds-grant-flow, "access token request with a federated
        // credential"): a form POST to /{tenant}/oauth2/v2.0/token with client_id, scope,
        // grant_type=client_credentials, client_assertion_type jwt-bearer and client_assertion.
        RelyingParty::Entra { client_id, .. } => (
            FORM,
            form(&[
                ("client_id", client_id),
                ("scope", ENTRA_SCOPE),
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", token),
            ]),
        ),
    }
}

/// The cloud's own words for a refusal: STS's XML `<Error><Code>` and `<Message>`; the OAuth
/// `error` and `error_description` of GCP and Entra (whose description carries the AADSTS code).
/// An answer in another shape is quoted, cut short.
pub fn refusal_text(party: &RelyingParty, answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let parsed = match party {
        RelyingParty::AwsSts { .. } => {
            let code = xml_element(&text, "Code");
            let message = xml_element(&text, "Message");
            match (code, message) {
                (Some(code), Some(message)) => Some(format!("{code}: {message}")),
                (Some(code), None) => Some(code),
                (None, Some(message)) => Some(message),
                (None, None) => None,
            }
        }
        RelyingParty::GcpSts { .. } | RelyingParty::Entra { .. } => {
            serde_json::from_slice::<serde_json::Value>(answer)
                .ok()
                .and_then(|v| {
                    let error = v.get("error")?.as_str()?.to_string();
                    Some(match v.get("error_description").and_then(|d| d.as_str()) {
                        Some(description) => format!("{error}: {description}"),
                        None => error,
                    })
                })
        }
    };
    parsed.unwrap_or_else(|| {
        let quoted: String = text.chars().take(300).collect();
        format!("{:?}", quoted.trim())
    })
}

/// The text of the first `<name>` element, entities decoded.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(
        text[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_string(),
    )
}

/// `text` without the token, should a cloud or a proxy quote it, and without signed URL
/// parameters.
fn scrub(text: &str, token: &str) -> String {
    http::redact(&text.replace(token, "REDACTED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> RelyingParty {
        RelyingParty::AwsSts {
            role_arn: "arn:aws:iam::123456789012:role/canary".into(),
            endpoint: "https://sts.amazonaws.com".into(),
        }
    }

    #[test]
    fn sts_errors_are_quoted_with_their_code() {
        let xml = br#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>
    <Message>Couldn&apos;t retrieve verification key from your identity provider</Message>
  </Error><RequestId>1</RequestId></ErrorResponse>"#;
        assert_eq!(
            refusal_text(&aws(), xml),
            "InvalidIdentityToken: Couldn't retrieve verification key from your identity provider"
        );
        assert_eq!(
            refusal_text(&aws(), b"<html>oops</html>"),
            "\"<html>oops</html>\""
        );
    }

    #[test]
    fn oauth_errors_are_quoted_with_their_description() {
        let gcp = RelyingParty::GcpSts {
            provider: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k".into(),
            endpoint: "https://sts.googleapis.com".into(),
        };
        let body = br#"{"error":"invalid_grant","error_description":"The audience in ID Token does not match."}"#;
        assert_eq!(
            refusal_text(&gcp, body),
            "invalid_grant: The audience in ID Token does not match."
        );
    }

    #[test]
    fn the_token_never_reaches_a_message() {
        assert_eq!(
            scrub("echo: abc.def.ghi!", "abc.def.ghi"),
            "echo: REDACTED!"
        );
    }

    #[test]
    fn the_sts_form_carries_the_documented_parameters() {
        let (content_type, body) = request_body(&aws(), "t.o.k");
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fcanary\
             &RoleSessionName=keyrot-canary&DurationSeconds=900&WebIdentityToken=t.o.k"
        );
    }
}
