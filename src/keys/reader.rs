//! Reads verification key files with kube-apiserver's rules and says what it made of each block.
//!
//! Mirrors `keyutil.ParsePublicKeysPEM` (client-go `util/keyutil/key.go`): the PEM label is
//! ignored; each block is tried as an RSA private key (PKCS#1, then PKCS#8), a public key
//! (PKIX, then an X.509 certificate) and an EC private key (SEC1); anything else is skipped
//! silently; a file fails only when it yields no key at all. keyrot additionally records why each
//! skipped block was skipped, because silent skips are how clusters lose a key.

use std::fmt;
use std::path::{Path, PathBuf};

use der::Decode;
use elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use zeroize::Zeroizing;

use super::pem_blocks::{PemBlock, scan_pem_blocks};
use super::{Curve, VerificationKey, oids};

/// The encoding a key was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    RsaPkcs1Private,
    RsaPkcs8Private,
    SpkiPublic,
    Certificate,
    Sec1EcPrivate,
}

impl fmt::Display for KeyForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyForm::RsaPkcs1Private => "PKCS#1 RSA private key",
            KeyForm::RsaPkcs8Private => "PKCS#8 RSA private key",
            KeyForm::SpkiPublic => "SPKI public key",
            KeyForm::Certificate => "X.509 certificate",
            KeyForm::Sec1EcPrivate => "SEC1 EC private key",
        })
    }
}

/// Why kube-apiserver skips a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Go's PEM decoder does not even see it as a block.
    Malformed(String),
    Encrypted,
    Pkcs8EcPrivate,
    Ed25519,
    RsaPkcs1Public,
    EcParameters,
    UnsupportedAlgorithm(String),
    UnsupportedCurve(String),
    InvalidKey(String),
    NotAKey,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Malformed(why) => write!(f, "not a PEM block Go can decode: {why}"),
            Skip::Encrypted => f.write_str("encrypted PEM; kube-apiserver cannot decrypt it"),
            Skip::Pkcs8EcPrivate => f.write_str(
                "PKCS#8 EC private key; kube-apiserver reads EC private keys only as SEC1 \
                 (EC PRIVATE KEY) in verification files: convert with `openssl ec`",
            ),
            Skip::Ed25519 => f.write_str("Ed25519 key; kube-apiserver supports only RSA and ECDSA"),
            Skip::RsaPkcs1Public => f.write_str(
                "PKCS#1 RSA public key (RSA PUBLIC KEY); kube-apiserver reads only SPKI \
                 (PUBLIC KEY): convert with `openssl rsa -RSAPublicKey_in -pubout`",
            ),
            Skip::EcParameters => f.write_str("EC parameters, not a key (tolerated)"),
            Skip::UnsupportedAlgorithm(oid) => {
                write!(f, "public key algorithm {oid} is neither RSA nor ECDSA")
            }
            Skip::UnsupportedCurve(oid) => {
                write!(f, "ECDSA curve {oid} is not one of P-256, P-384, P-521")
            }
            Skip::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Skip::NotAKey => f.write_str("not a key or certificate kube-apiserver can read"),
        }
    }
}

/// What one PEM block yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockReport {
    pub line: usize,
    /// Where the block is in the file (see `PemBlock::span`).
    pub span: std::ops::Range<usize>,
    pub label: String,
    pub outcome: Result<(VerificationKey, KeyForm), Skip>,
}

/// Every block of one file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub blocks: Vec<BlockReport>,
}

impl FileReport {
    pub fn keys(&self) -> impl Iterator<Item = &VerificationKey> {
        self.blocks
            .iter()
            .filter_map(|b| b.outcome.as_ref().ok().map(|(k, _)| k))
    }

    /// One line per skipped block: `path:line: LABEL block skipped: why`. `EC PARAMETERS` blocks
    /// are expected next to SEC1 keys (`openssl ecparam -genkey` writes them) and not warned about.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.blocks.iter().filter_map(|b| match &b.outcome {
            Err(Skip::EcParameters) => None,
            Err(why) => Some(format!(
                "{}:{}: {} block skipped: {why}",
                self.path.display(),
                b.line,
                b.label
            )),
            Ok(_) => None,
        })
    }
}

/// A key file that cannot be used, as kube-apiserver would refuse it.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: data does not contain any valid RSA or ECDSA public keys \
         (kube-apiserver refuses to start with this file){detail}"
    )]
    NoKeys { path: PathBuf, detail: String },
}

/// The keys of several files in order (flag order, then file order), with warnings for skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKeys {
    pub keys: Vec<VerificationKey>,
    pub warnings: Vec<String>,
}

/// Reads `--service-account-key-file` values as kube-apiserver does.
pub fn load_verification_keys(paths: &[PathBuf]) -> Result<LoadedKeys, KeyFileError> {
    let mut loaded = LoadedKeys {
        keys: Vec::new(),
        warnings: Vec::new(),
    };
    for path in paths {
        let report = read_file(path)?;
        if report.keys().next().is_none() {
            return Err(no_keys_error(&report));
        }
        loaded.keys.extend(report.keys().cloned());
        loaded.warnings.extend(report.warnings());
    }
    Ok(loaded)
}

/// Reads one file and reports every block, without failing on a file that has no key.
pub fn read_file(path: &Path) -> Result<FileReport, KeyFileError> {
    let data = crate::fs_read::read(path)
        .map(Zeroizing::new)
        .map_err(|error| KeyFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(parse_file(path, &data))
}

/// Classifies every block of `data` (the contents of `path`).
pub fn parse_file(path: &Path, data: &[u8]) -> FileReport {
    let blocks = scan_pem_blocks(data)
        .into_iter()
        .map(
            |PemBlock {
                 line,
                 span,
                 label,
                 contents,
             }| BlockReport {
                line,
                span,
                label,
                outcome: match contents {
                    Err(why) => Err(Skip::Malformed(why)),
                    Ok(block) if block.encrypted => Err(Skip::Encrypted),
                    Ok(block) => classify_der(&block.der),
                },
            },
        )
        .collect();
    FileReport {
        path: path.to_path_buf(),
        blocks,
    }
}

fn no_keys_error(report: &FileReport) -> KeyFileError {
    let detail = if report.blocks.is_empty() {
        ": it holds no PEM block".to_string()
    } else {
        report
            .blocks
            .iter()
            .map(|b| match &b.outcome {
                Err(why) => format!("\n  line {}: {} block skipped: {why}", b.line, b.label),
                Ok(_) => String::new(),
            })
            .collect()
    };
    KeyFileError::NoKeys {
        path: report.path.clone(),
        detail,
    }
}

/// Tries the block as kube does, in kube's order.
fn classify_der(der: &[u8]) -> Result<(VerificationKey, KeyForm), Skip> {
    if rsa::PrivateKey::from_pkcs1_der(der).is_ok() {
        return rsa_private_parts(der).map(|k| (k, KeyForm::RsaPkcs1Private));
    }
    if let Ok(info) = pkcs8::PrivateKeyInfoRef::from_der(der) {
        return classify_pkcs8(der, &info);
    }
    if let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(der) {
        return public_from_spki(&spki).map(|k| (k, KeyForm::SpkiPublic));
    }
    if let Ok((rest, cert)) = x509_parser::parse_x509_certificate(der) {
        if !rest.is_empty() {
            return Err(Skip::InvalidKey(
                "trailing data after the certificate".into(),
            ));
        }
        let spki = spki::SubjectPublicKeyInfoRef::from_der(cert.tbs_certificate.subject_pki.raw)
            .map_err(|e| Skip::InvalidKey(format!("certificate public key: {e}")))?;
        return public_from_spki(&spki).map(|k| (k, KeyForm::Certificate));
    }
    if let Ok(sec1) = sec1::EcPrivateKey::from_der(der) {
        return public_from_sec1(&sec1).map(|k| (k, KeyForm::Sec1EcPrivate));
    }
    if pkcs1::RsaPublicKeyRef::from_der(der).is_ok() {
        return Err(Skip::RsaPkcs1Public);
    }
    if <der::asn1::ObjectIdentifier as Decode>::from_der(der).is_ok() {
        return Err(Skip::EcParameters);
    }
    Err(Skip::NotAKey)
}

fn classify_pkcs8(
    der: &[u8],
    info: &pkcs8::PrivateKeyInfoRef<'_>,
) -> Result<(VerificationKey, KeyForm), Skip> {
    match info.algorithm.oid {
        oids::RSA_ENCRYPTION => {
            rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| Skip::InvalidKey(e.to_string()))?;
            rsa_private_parts(info.private_key.as_bytes()).map(|k| (k, KeyForm::RsaPkcs8Private))
        }
        oids::EC_PUBLIC_KEY => Err(Skip::Pkcs8EcPrivate),
        oids::ED25519 => Err(Skip::Ed25519),
        other => Err(Skip::UnsupportedAlgorithm(other.to_string())),
    }
}

/// The public half of a PKCS#1 RSA private key already validated by the `rsa` crate.
fn rsa_private_parts(pkcs1_der: &[u8]) -> Result<VerificationKey, Skip> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(pkcs1_der)
        .map_err(|e| Skip::InvalidKey(e.to_string()))?;
    VerificationKey::from_rsa_parts(key.modulus.as_bytes(), key.public_exponent.as_bytes())
        .map_err(|e| Skip::InvalidKey(e.to_string()))
}

/// A verification key from DER SubjectPublicKeyInfo bytes (what an external signer's FetchKeys
/// lists), with Go's `ParsePKIXPublicKey` rules.
pub fn verification_key_from_spki_der(der: &[u8]) -> Result<VerificationKey, Skip> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|e| Skip::InvalidKey(e.to_string()))?;
    public_from_spki(&spki)
}

/// A verification key from a SubjectPublicKeyInfo, with Go's `ParsePKIXPublicKey` rules.
pub(super) fn public_from_spki(
    spki: &spki::SubjectPublicKeyInfoRef<'_>,
) -> Result<VerificationKey, Skip> {
    let invalid = |e: &dyn fmt::Display| Skip::InvalidKey(e.to_string());
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| invalid(&"unaligned key bits"))?;
    match spki.algorithm.oid {
        oids::RSA_ENCRYPTION => {
            // Go: "x509: RSA key missing NULL parameters".
            if spki.algorithm.parameters != Some(der::asn1::AnyRef::NULL) {
                return Err(invalid(&"RSA key missing NULL parameters"));
            }
            let key = pkcs1::RsaPublicKeyRef::from_der(bits).map_err(|e| invalid(&e))?;
            VerificationKey::from_rsa_parts(key.modulus.as_bytes(), key.public_exponent.as_bytes())
                .map_err(|e| invalid(&e))
        }
        oids::EC_PUBLIC_KEY => {
            let curve_oid = spki.algorithm.parameters_oid().map_err(|e| invalid(&e))?;
            let curve = Curve::from_oid(&curve_oid)
                .ok_or_else(|| Skip::UnsupportedCurve(curve_oid.to_string()))?;
            VerificationKey::from_ec_point(curve, bits).map_err(|e| invalid(&e))
        }
        oids::ED25519 => Err(Skip::Ed25519),
        other => Err(Skip::UnsupportedAlgorithm(other.to_string())),
    }
}

/// The public half of a SEC1 EC private key, computed from the scalar as Go does (the optional
/// embedded public key is ignored). The curve must be named in the structure.
fn public_from_sec1(sec1: &sec1::EcPrivateKey<'_>) -> Result<VerificationKey, Skip> {
    let curve_oid = sec1
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| Skip::InvalidKey("EC private key names no curve".into()))?;
    let curve =
        Curve::from_oid(&curve_oid).ok_or_else(|| Skip::UnsupportedCurve(curve_oid.to_string()))?;
    let point = ec_public_point(curve, sec1.private_key).ok_or_else(|| {
        Skip::InvalidKey(format!(
            "EC private scalar is not valid for {}",
            curve.jwk_name()
        ))
    })?;
    VerificationKey::from_ec_point(curve, &point).map_err(|e| Skip::InvalidKey(e.to_string()))
}

/// The uncompressed public point for a private scalar on `curve`.
pub(super) fn ec_public_point(curve: Curve, scalar: &[u8]) -> Option<Vec<u8>> {
    Some(match curve {
        Curve::P256 => p256::SecretKey::from_slice(scalar)
            .ok()?
            .public_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::SecretKey::from_slice(scalar)
            .ok()?
            .public_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        Curve::P521 => p521::SecretKey::from_slice(scalar)
            .ok()?
            .public_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
    })
}
