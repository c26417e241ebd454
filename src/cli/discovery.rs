//! `keyrot discovery`: the body kube-apiserver serves at `/.well-known/openid-configuration`.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::documents::{DiscoveryDocument, default_jwks_uri};
use keyrot::keys::load_verification_keys;

/// Print the OIDC discovery document kube-apiserver would serve for this issuer and these
/// verification key files.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The issuer (`--service-account-issuer`): https, no query, no fragment. Kept byte for byte.
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// The JWKS URL (`--service-account-jwks-uri`) [default: ISSUER/openid/v1/jwks].
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// Verification key files, in flag order; their algorithms fill
    /// id_token_signing_alg_values_supported.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = load_verification_keys(&args.files)?;
    super::print_warnings(&loaded.warnings);
    let jwks_uri = args
        .jwks_uri
        .unwrap_or_else(|| default_jwks_uri(&args.issuer));
    let doc = DiscoveryDocument::new(&args.issuer, &jwks_uri, &loaded.keys)?;
    outln!("{}", doc.render());
    Ok(ExitCode::SUCCESS)
}
