//! The two issuer documents exactly as kube-apiserver serves them: the JWKS and the discovery
//! document, plus the issuer URL rules kube applies before serving either.

mod discovery;
mod go_json;
mod jwks;

pub use discovery::{
    DiscoveryDocument, IssuerError, default_jwks_uri, differences as discovery_differences,
    validate_issuer, validate_jwks_uri,
};
pub use jwks::render_jwks;

/// Content types kube-apiserver answers with (`pkg/routes/openidmetadata.go`).
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";
pub const DISCOVERY_CONTENT_TYPE: &str = "application/json";
/// Where the documents live under the issuer.
pub const DISCOVERY_PATH: &str = ".well-known/openid-configuration";
pub const JWKS_PATH: &str = "openid/v1/jwks";
