//! Signing keys: generation, the private PEM forms every Kubernetes version reads, and reading a
//! `--service-account-signing-key-file` with kube-apiserver's rules.
//!
//! Private material lives only inside `SigningKey`: the `rsa` and `p256` types wipe themselves on
//! drop, PEM text is returned as `Zeroizing<String>`, and `Debug` prints the kid, never the key.

use std::fmt;
use std::path::{Path, PathBuf};

use der::Decode;
use elliptic_curve::Generate;
use elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::pem_blocks::scan_pem_blocks;

use super::{Alg, Curve, VerificationKey, oids};
use crate::atomic_file::{self, Existing};

/// The algorithms and sizes keyrot generates. Smaller RSA keys are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerateSpec {
    Rsa { bits: usize },
    P256,
}

impl GenerateSpec {
    pub const RSA_BITS: [usize; 3] = [2048, 3072, 4096];

    /// From the user's words: `RS256` with a size (default 2048), or `ES256` without one.
    pub fn new(alg: Alg, bits: Option<usize>) -> Result<Self, KeyGenError> {
        match (alg, bits) {
            (Alg::RS256, None) => Ok(GenerateSpec::Rsa { bits: 2048 }),
            (Alg::RS256, Some(bits)) if Self::RSA_BITS.contains(&bits) => {
                Ok(GenerateSpec::Rsa { bits })
            }
            (Alg::RS256, Some(bits)) => Err(KeyGenError::RsaSize(bits)),
            (Alg::ES256, None) => Ok(GenerateSpec::P256),
            (Alg::ES256, Some(_)) => Err(KeyGenError::BitsWithEc),
            (other, _) => Err(KeyGenError::Unsupported(other)),
        }
    }

    pub fn alg(self) -> Alg {
        match self {
            GenerateSpec::Rsa { .. } => Alg::RS256,
            GenerateSpec::P256 => Alg::ES256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyGenError {
    #[error("RSA key size {0} is not allowed: use 2048, 3072 or 4096")]
    RsaSize(usize),
    #[error("--bits applies to RS256 only; ES256 keys are always P-256")]
    BitsWithEc,
    #[error("keyrot generates RS256 and ES256 keys, not {0}")]
    Unsupported(Alg),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error(transparent)]
    Write(#[from] atomic_file::WriteError),
}

/// Why a signing key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: data does not contain a valid RSA or ECDSA private key \
         (kube-apiserver refuses to start with this signing key file)"
    )]
    NoKey { path: PathBuf },
}

/// The signing primitive refused (for instance an RSA modulus too short for a SHA-256 digest).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign: {0}")]
pub struct SignError(String);

enum Secret {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

/// A private signing key and its public half.
pub struct SigningKey {
    secret: Secret,
    public: VerificationKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg())
            .field("kid", &self.public.kid())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate(spec: GenerateSpec) -> Result<Self, KeyGenError> {
        let secret = match spec {
            GenerateSpec::Rsa { bits } => Secret::Rsa(Box::new(
                rsa::PrivateKey::new(&mut rand::rng(), bits)
                    .map_err(|e| KeyGenError::Generate(e.to_string()))?,
            )),
            GenerateSpec::P256 => {
                Secret::P256(p256::SecretKey::generate_from_rng(&mut rand::rng()))
            }
        };
        Self::from_secret(secret).map_err(KeyGenError::Generate)
    }

    fn from_secret(secret: Secret) -> Result<Self, String> {
        let public = match &secret {
            Secret::Rsa(key) => {
                let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
                let parts =
                    pkcs1::RsaPrivateKeyRef::from_der(der.as_bytes()).map_err(|e| e.to_string())?;
                VerificationKey::from_rsa_parts(
                    parts.modulus.as_bytes(),
                    parts.public_exponent.as_bytes(),
                )
                .map_err(|e| e.to_string())?
            }
            // From the key itself: going through `to_bytes` would leave a copy of the scalar
            // behind that nothing wipes; `SecretKey` wipes its own on drop.
            Secret::P256(key) => ec_public(
                Curve::P256,
                key.public_key().to_sec1_point(false).as_bytes(),
            )?,
            Secret::P384(key) => ec_public(
                Curve::P384,
                key.public_key().to_sec1_point(false).as_bytes(),
            )?,
            Secret::P521(key) => ec_public(
                Curve::P521,
                key.public_key().to_sec1_point(false).as_bytes(),
            )?,
        };
        Ok(Self { secret, public })
    }

    pub fn public(&self) -> &VerificationKey {
        &self.public
    }

    /// Signs a JWS signing input (`BASE64URL(header) '.' BASE64URL(payload)`) with the key's
    /// algorithm, `self.public().alg()`: RS256 is RSASSA-PKCS1-v1_5 over SHA-256; ES256, ES384
    /// and ES512 are ECDSA over SHA-256/384/512, returned as the fixed-size `r || s` that JWS
    /// requires (RFC 7518 section 3.4), not DER.
    pub fn sign_jws(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        use p256::ecdsa::signature::Signer;
        let failed = |e: &dyn fmt::Display| SignError(e.to_string());
        match &self.secret {
            Secret::Rsa(key) => {
                let digest = Sha256::digest(signing_input);
                // With an RNG the private-key operation is blinded: its timing says nothing
                // about the key.
                let padding = rsa::Pkcs1v15Sign::new::<Sha256>();
                key.sign_with_rng(&mut rand::rng(), padding, &digest)
                    .map_err(|e| failed(&e))
            }
            Secret::P256(key) => p256::ecdsa::SigningKey::from(key)
                .try_sign(signing_input)
                .map(|s: p256::ecdsa::Signature| s.to_bytes().to_vec())
                .map_err(|e| failed(&e)),
            Secret::P384(key) => p384::ecdsa::SigningKey::from(key)
                .try_sign(signing_input)
                .map(|s: p384::ecdsa::Signature| s.to_bytes().to_vec())
                .map_err(|e| failed(&e)),
            Secret::P521(key) => p521::ecdsa::SigningKey::from(key)
                .try_sign(signing_input)
                .map(|s: p521::ecdsa::Signature| s.to_bytes().to_vec())
                .map_err(|e| failed(&e)),
        }
    }

    /// PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, LF line endings.
    pub fn to_private_pem(&self) -> Zeroizing<String> {
        let lf = der::pem::LineEnding::LF;
        let encoded = match &self.secret {
            Secret::Rsa(key) => key.to_pkcs1_pem(lf).map_err(|e| e.to_string()),
            Secret::P256(key) => key.to_sec1_pem(lf).map_err(|e| e.to_string()),
            Secret::P384(key) => key.to_sec1_pem(lf).map_err(|e| e.to_string()),
            Secret::P521(key) => key.to_sec1_pem(lf).map_err(|e| e.to_string()),
        };
        // Encoding a key this type already holds cannot fail short of a bug in the encoder.
        encoded.expect("a valid private key always encodes")
    }

    /// Writes the private key (0600) and its SPKI public key (0644), each atomically.
    ///
    /// With `Existing::Refuse` neither file is written if either exists.
    pub fn write_pair(
        &self,
        private: &Path,
        public: &Path,
        existing: Existing,
    ) -> Result<(), KeyGenError> {
        if existing == Existing::Refuse
            && let Some(taken) = [private, public].into_iter().find(|p| p.exists())
        {
            return Err(KeyGenError::Exists(taken.to_path_buf()));
        }
        let private_pem = self.to_private_pem();
        atomic_file::write_private_key(private, private_pem.as_bytes(), existing)?;
        if let Err(e) = atomic_file::write(
            public,
            self.public.to_spki_pem().as_bytes(),
            0o644,
            existing,
        ) {
            if existing == Existing::Refuse {
                // The private file is ours from a moment ago: do not leave half a pair behind.
                let _ = std::fs::remove_file(private);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads a signing key file as kube-apiserver does (`keyutil.ParsePrivateKeyPEM`): here the
    /// label matters; the first `EC PRIVATE KEY` (SEC1), `RSA PRIVATE KEY` (PKCS#1) or
    /// `PRIVATE KEY` (PKCS#8, RSA or ECDSA) block that parses wins; other blocks are skipped.
    pub fn from_pem_file(path: &Path) -> Result<Self, SigningKeyError> {
        let data = crate::fs_read::read(path)
            .map(Zeroizing::new)
            .map_err(|error| SigningKeyError::Read {
                path: path.to_path_buf(),
                error,
            })?;
        scan_pem_blocks(&data)
            .into_iter()
            .filter_map(|block| {
                let der = block.contents.ok().filter(|c| !c.encrypted)?.der;
                let secret = match block.label.as_str() {
                    "EC PRIVATE KEY" => sec1_secret(&der),
                    "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_der(&der)
                        .ok()
                        .map(|k| Secret::Rsa(Box::new(k))),
                    "PRIVATE KEY" => pkcs8_secret(&der),
                    _ => None,
                }?;
                Self::from_secret(secret).ok()
            })
            .next()
            .ok_or_else(|| SigningKeyError::NoKey {
                path: path.to_path_buf(),
            })
    }
}

fn ec_public(curve: Curve, point: &[u8]) -> Result<VerificationKey, String> {
    VerificationKey::from_ec_point(curve, point).map_err(|e| e.to_string())
}

fn sec1_secret(der: &[u8]) -> Option<Secret> {
    let curve_oid = sec1::EcPrivateKey::from_der(der)
        .ok()?
        .parameters?
        .named_curve()?;
    Some(match Curve::from_oid(&curve_oid)? {
        Curve::P256 => Secret::P256(p256::SecretKey::from_sec1_der(der).ok()?),
        Curve::P384 => Secret::P384(p384::SecretKey::from_sec1_der(der).ok()?),
        Curve::P521 => Secret::P521(p521::SecretKey::from_sec1_der(der).ok()?),
    })
}

fn pkcs8_secret(der: &[u8]) -> Option<Secret> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der).ok()?;
    match info.algorithm.oid {
        oids::RSA_ENCRYPTION => rsa::PrivateKey::from_pkcs8_der(der)
            .ok()
            .map(|k| Secret::Rsa(Box::new(k))),
        oids::EC_PUBLIC_KEY => Some(
            match Curve::from_oid(&info.algorithm.parameters_oid().ok()?)? {
                Curve::P256 => Secret::P256(p256::SecretKey::from_pkcs8_der(der).ok()?),
                Curve::P384 => Secret::P384(p384::SecretKey::from_pkcs8_der(der).ok()?),
                Curve::P521 => Secret::P521(p521::SecretKey::from_pkcs8_der(der).ok()?),
            },
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{self as ring_api, RsaPublicKeyComponents, UnparsedPublicKey};

    use super::*;
    use crate::keys::PublicParams;

    const INPUT: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIn0";

    fn fixture(name: &str) -> SigningKey {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pem")
            .join(name);
        SigningKey::from_pem_file(&path).unwrap()
    }

    /// Verifies with aws-lc, an implementation independent of the RustCrypto signers.
    fn verifies(key: &VerificationKey, message: &[u8], signature: &[u8]) -> bool {
        match (key.alg(), key.params()) {
            (Alg::RS256, PublicParams::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(&ring_api::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (alg, PublicParams::Ec { x, y, .. }) => {
                let verifier = match alg {
                    Alg::ES256 => &ring_api::ECDSA_P256_SHA256_FIXED,
                    Alg::ES384 => &ring_api::ECDSA_P384_SHA384_FIXED,
                    Alg::ES512 => &ring_api::ECDSA_P521_SHA512_FIXED,
                    Alg::RS256 => unreachable!("an EC key is never RS256"),
                };
                let point = [&[0x04][..], x, y].concat();
                UnparsedPublicKey::new(verifier, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (alg, params) => panic!("{alg} with {params:?}"),
        }
    }

    #[test]
    fn jws_signatures_verify_independently_for_every_kube_algorithm() {
        let cases = [
            ("rsa-pkcs1-private.pem", Alg::RS256, 256),
            ("ec-p256-sec1-private.pem", Alg::ES256, 64),
            ("ec-p384-sec1-private.pem", Alg::ES384, 96),
            ("ec-p521-sec1-private.pem", Alg::ES512, 132),
        ];
        for (file, alg, len) in cases {
            let key = fixture(file);
            assert_eq!(key.public().alg(), alg, "{file}");
            let signature = key.sign_jws(INPUT).unwrap();
            assert_eq!(signature.len(), len, "{file}: r || s or modulus length");
            assert!(verifies(key.public(), INPUT, &signature), "{file}");
            let mut tampered = INPUT.to_vec();
            tampered[0] ^= 1;
            assert!(!verifies(key.public(), &tampered, &signature), "{file}");
        }
    }

    #[test]
    fn a_signature_does_not_verify_under_another_key() {
        let signature = fixture("ec-p256-sec1-private.pem").sign_jws(INPUT).unwrap();
        let other = SigningKey::generate(GenerateSpec::P256).unwrap();
        assert!(!verifies(other.public(), INPUT, &signature));
    }
}
