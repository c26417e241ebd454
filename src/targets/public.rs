//! The read-back of an object-store target from outside: anonymous GETs of the discovery document
//! and of the JWKS, checked the way a cloud verifier would see them.

use super::JwksError;
use crate::documents::{DISCOVERY_CONTENT_TYPE, DISCOVERY_PATH, JWKS_PATH};
use crate::http::{self, BodyError, HttpError, Reach};
use crate::plan::{Issuer, Objects, PublicRead, is_loopback};

/// Why a verifier would not get the documents; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum PublicError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(
        "GET {url}: answered {status}{}; verifiers read it anonymously and need 200",
        location.as_deref().map(|l| format!(", redirecting to {l}")).unwrap_or_default()
    )]
    Status {
        url: String,
        status: reqwest::StatusCode,
        location: Option<String>,
    },
    #[error("{url}: Content-Type is {served:?}, expected {expected:?}")]
    ContentType {
        url: String,
        served: String,
        expected: String,
    },
    #[error("{url}: not a discovery document: {detail}")]
    NotDiscovery { url: String, detail: String },
    #[error(
        "{url}: issuer is {found:?}, expected {expected:?} (verifiers compare it with the \
         tokens' iss byte for byte)"
    )]
    Issuer {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{url}: jwks_uri is {found:?}, expected {expected:?}")]
    JwksUri {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{url}: {error}")]
    Jwks { url: String, error: JwksError },
}

/// What a verifier finds: both URLs read, the kids of the JWKS in order, and the discovery
/// document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublicView {
    pub discovery_url: String,
    pub jwks_url: String,
    pub kids: Vec<String>,
    /// The discovery document's bytes as served, for comparison with keyrot's.
    #[serde(skip)]
    pub discovery: Vec<u8>,
}

/// `{base}/.well-known/openid-configuration`, `base` being the target's public URL or the
/// issuer; the document's issuer and jwks_uri must be the plan's, byte for byte. The JWKS is then
/// read at the jwks_uri the document names (with a public URL: at `{publicUrl}/openid/v1/jwks`,
/// this target's own copy) and must carry the configured content type.
pub async fn read(issuer: &Issuer, objects: &Objects) -> Result<PublicView, PublicError> {
    read_public(issuer, &objects.public, &objects.jwks_content_type).await
}

/// `read` for any place the documents are served from: `public` says where and which roots to
/// trust, `jwks_content_type` what the JWKS must be served as.
pub async fn read_public(
    issuer: &Issuer,
    public: &PublicRead,
    jwks_content_type: &str,
) -> Result<PublicView, PublicError> {
    let base = public.url.as_deref().unwrap_or(&issuer.url);
    let discovery_url = join(base, DISCOVERY_PATH);
    let allow_http = public.url.as_deref().is_some_and(|url| {
        url.starts_with("http:") && url::Url::parse(url).is_ok_and(|u| is_loopback(&u))
    });
    let client = http::client(&Reach {
        allow_http,
        ca_file: public.ca_file.as_deref(),
    })?;

    let discovery = get(&client, &discovery_url, DISCOVERY_CONTENT_TYPE).await?;
    let document: Discovery =
        serde_json::from_slice(&discovery).map_err(|e| PublicError::NotDiscovery {
            url: discovery_url.clone(),
            detail: e.to_string(),
        })?;
    if document.issuer != issuer.url {
        return Err(PublicError::Issuer {
            url: discovery_url,
            found: document.issuer,
            expected: issuer.url.clone(),
        });
    }
    if document.jwks_uri != issuer.jwks_uri {
        return Err(PublicError::JwksUri {
            url: discovery_url,
            found: document.jwks_uri,
            expected: issuer.jwks_uri.clone(),
        });
    }
    let jwks_url = match &public.url {
        Some(url) => join(url, JWKS_PATH),
        None => document.jwks_uri,
    };
    let body = get(&client, &jwks_url, jwks_content_type).await?;
    let kids = super::jwks_kids(&body).map_err(|error| PublicError::Jwks {
        url: jwks_url.clone(),
        error,
    })?;
    Ok(PublicView {
        discovery_url,
        jwks_url,
        kids,
        discovery,
    })
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The body of an anonymous GET that answered 200 with `content_type` (parameters ignored).
async fn get(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
) -> Result<Vec<u8>, PublicError> {
    let response = http::send(&format!("GET {url}"), || client.get(url)).await?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        return Err(PublicError::Status {
            url: url.to_string(),
            status,
            location,
        });
    }
    let served = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .unwrap_or("")
        .to_string();
    let media_type = served.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(content_type) {
        return Err(PublicError::ContentType {
            url: url.to_string(),
            served,
            expected: content_type.to_string(),
        });
    }
    Ok(http::body(&format!("GET {url}"), response).await?)
}

/// `base` and `path` joined by exactly one slash, as the default jwks_uri is.
pub fn join(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_uses_one_slash() {
        assert_eq!(
            join("https://a.example/x/", DISCOVERY_PATH),
            "https://a.example/x/.well-known/openid-configuration"
        );
        assert_eq!(
            join("https://a.example", JWKS_PATH),
            "https://a.example/openid/v1/jwks"
        );
    }
}
