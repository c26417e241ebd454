//! `keyrot jwks`: the body kube-apiserver serves at `/openid/v1/jwks` for given key files.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use keyrot::documents::render_jwks;
use keyrot::keys::load_verification_keys;

/// Print the JWKS kube-apiserver would serve with these files as its
/// `--service-account-key-file` values, in this order.
///
/// Blocks kube-apiserver skips are reported on stderr. A file without any usable key is an
/// error, as kube-apiserver refuses to start with it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key files (public keys, private keys or certificates, PEM), in flag order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = load_verification_keys(&args.files)?;
    super::print_warnings(&loaded.warnings);
    outln!("{}", render_jwks(&loaded.keys));
    Ok(ExitCode::SUCCESS)
}
