//! The test PKI: a CA and a leaf for 127.0.0.1 it signs, shared through a directory.
//!
//! rustls refuses a self-signed CA certificate presented as a server's own certificate
//! (`CaUsedAsEndEntity`), so servers present a leaf signed by a CA, as kubeadm's apiserver does,
//! and clients trust `ca.crt`. Several processes may share one directory and start at once: the
//! key material is one bundle file published with a hard link, which fails if another process
//! published first; every process then serves the bundle that won.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate clients trust, in the TLS directory.
pub const CA_FILE: &str = "ca.crt";
/// Leaf certificate, CA certificate and leaf private key, in that order.
const BUNDLE_FILE: &str = "server.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate the test certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a bundle of two certificates and a key: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificates and key a test server presents.
#[derive(Debug)]
pub struct TestPki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TestPki {
    /// Loads the PKI kept in `dir`, generating it first if the directory has none, and makes sure
    /// `dir/ca.crt` holds its CA certificate.
    pub fn ensure(dir: &Path) -> Result<Self, TlsError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let bundle = dir.join(BUNDLE_FILE);
        if !bundle.exists() {
            publish_new_bundle(&bundle)?;
        }
        let pki = read_bundle(&bundle)?;
        write_replacing(&dir.join(CA_FILE), pki.ca_pem.as_bytes())?;
        Ok(pki)
    }

    /// The CA certificate, PEM: what a client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server configuration presenting the leaf, speaking HTTP/1.1 only (as kube's client does).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates a CA and a leaf and links the bundle into place unless another process did first.
fn publish_new_bundle(bundle: &Path) -> Result<(), TlsError> {
    let text = generate_bundle()?;
    let tmp = bundle.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(io_at(&tmp))?;
    let linked = std::fs::hard_link(&tmp, bundle);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_at(bundle)(e)),
        _ => Ok(()),
    }
}

fn generate_bundle() -> Result<String, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "keyrot test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;

    let leaf_key = KeyPair::generate()?;
    // rcgen turns "127.0.0.1" into an IP SAN and "localhost" into a DNS SAN.
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, &ca_key))?;

    Ok(format!(
        "{}{}{}",
        leaf_cert.pem(),
        ca_cert.pem(),
        leaf_key.serialize_pem()
    ))
}

fn read_bundle(bundle: &Path) -> Result<TestPki, TlsError> {
    let text = std::fs::read(bundle).map_err(io_at(bundle))?;
    let invalid = |reason: String| TlsError::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let [_, ca] = chain.as_slice() else {
        return Err(invalid(format!("{} certificates", chain.len())));
    };
    let ca_pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", ca.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok(TestPki { ca_pem, chain, key })
}

/// Replaces `path` by renaming a complete temporary file over it, so readers never see half.
fn write_replacing(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    if std::fs::read(path).is_ok_and(|existing| existing == contents) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_ensure_reuses_the_published_pki() {
        let dir = tempfile::tempdir().unwrap();
        let first = TestPki::ensure(dir.path()).unwrap();
        let second = TestPki::ensure(dir.path()).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.chain, second.chain);
        let on_disk = std::fs::read_to_string(dir.path().join(CA_FILE)).unwrap();
        assert_eq!(on_disk, first.ca_pem());
        first.server_config().unwrap();
    }

    #[test]
    fn the_leaf_is_not_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::ensure(dir.path()).unwrap();
        assert_eq!(pki.chain.len(), 2);
        assert_ne!(pki.chain[0], pki.chain[1]);
    }
}
