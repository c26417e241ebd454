//! Public key material as kube-apiserver sees it: algorithm, kid and the JWK parameters.
//!
//! A `VerificationKey` is built only from validated key parts and keeps the canonical DER
//! SubjectPublicKeyInfo, because Kubernetes derives the kid from `x509.MarshalPKIXPublicKey`
//! (a re-encoding), not from whatever bytes the file held (`pkg/serviceaccount/jwt.go`,
//! `keyIDFromPublicKey`).

mod pem_blocks;
pub mod private_dir;
pub mod reader;
pub mod signing;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::Encode;
use sha2::{Digest, Sha256};

pub use pem_blocks::{PemBlock, scan_pem_blocks};
pub use reader::{BlockReport, FileReport, KeyForm, LoadedKeys, Skip, load_verification_keys};
pub use signing::{GenerateSpec, KeyGenError, SignError, SigningKey, SigningKeyError};

/// A JWS algorithm kube-apiserver uses for a key (`algorithmFromPublicKey` in kube's
/// `openidmetadata.go`): RSA is always RS256, ECDSA by curve.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Alg {
    RS256,
    ES256,
    ES384,
    ES512,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The NIST curves kube-apiserver accepts for ECDSA service-account keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The JWK `crv` value.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Bytes per coordinate; go-jose pads x and y to this length.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The curve named by an X9.62/SEC 2 OID, if kube-apiserver accepts it.
    pub fn from_oid(oid: &der::asn1::ObjectIdentifier) -> Option<Curve> {
        [
            (oids::SECP256R1, Curve::P256),
            (oids::SECP384R1, Curve::P384),
            (oids::SECP521R1, Curve::P521),
        ]
        .into_iter()
        .find(|(known, _)| known == oid)
        .map(|(_, curve)| curve)
    }
}

/// Object identifiers keyrot recognises in key structures.
pub mod oids {
    use der::asn1::ObjectIdentifier as Oid;
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const SECP521R1: Oid = Oid::new_unwrap("1.3.132.0.35");
}

/// The public parameters a JWK carries, as unsigned big-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicParams {
    /// Modulus and exponent without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each exactly `curve.coordinate_len()` bytes.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A public key kube-apiserver would accept for verification, with its kid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationKey {
    kid: String,
    spki_der: Vec<u8>,
    params: PublicParams,
}

/// Why key parts could not become a verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPartsError {
    #[error("RSA modulus or exponent is zero")]
    RsaZero,
    #[error("EC point is compressed; kube-apiserver reads only uncompressed points")]
    CompressedPoint,
    #[error("EC point is not on curve {0}")]
    NotOnCurve(&'static str),
    #[error("cannot encode public key: {0}")]
    Encoding(String),
}

impl VerificationKey {
    /// An RSA public key from its modulus and exponent (big-endian, leading zeros allowed).
    pub fn from_rsa_parts(n: &[u8], e: &[u8]) -> Result<Self, KeyPartsError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if n.is_empty() || e.is_empty() {
            return Err(KeyPartsError::RsaZero);
        }
        let encoding = |err: der::Error| KeyPartsError::Encoding(err.to_string());
        let pkcs1 = pkcs1::RsaPublicKey {
            modulus: der::asn1::UintRef::new(n).map_err(encoding)?,
            public_exponent: der::asn1::UintRef::new(e).map_err(encoding)?,
        }
        .to_der()
        .map_err(encoding)?;
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: pkcs1::ALGORITHM_ID,
            subject_public_key: der::asn1::BitStringRef::from_bytes(&pkcs1).map_err(encoding)?,
        };
        let spki_der = spki.to_der().map_err(encoding)?;
        Ok(Self::with_spki(
            spki_der,
            PublicParams::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            },
        ))
    }

    /// An ECDSA public key from its SEC1 uncompressed point (`04 || x || y`).
    pub fn from_ec_point(curve: Curve, point: &[u8]) -> Result<Self, KeyPartsError> {
        if point.first() != Some(&0x04) {
            return Err(KeyPartsError::CompressedPoint);
        }
        let spki_der = match curve {
            Curve::P256 => ec_spki_der::<p256::NistP256>(point),
            Curve::P384 => ec_spki_der::<p384::NistP384>(point),
            Curve::P521 => ec_spki_der::<p521::NistP521>(point),
        }
        .ok_or(KeyPartsError::NotOnCurve(curve.jwk_name()))?;
        let len = curve.coordinate_len();
        if point.len() != 1 + 2 * len {
            return Err(KeyPartsError::NotOnCurve(curve.jwk_name()));
        }
        let params = PublicParams::Ec {
            curve,
            x: point[1..1 + len].to_vec(),
            y: point[1 + len..].to_vec(),
        };
        Ok(Self::with_spki(spki_der, params))
    }

    fn with_spki(spki_der: Vec<u8>, params: PublicParams) -> Self {
        Self {
            kid: kid_of_spki(&spki_der),
            spki_der,
            params,
        }
    }

    /// base64url (no padding) of SHA-256 over the DER SubjectPublicKeyInfo.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        match &self.params {
            PublicParams::Rsa { .. } => Alg::RS256,
            PublicParams::Ec { curve, .. } => match curve {
                Curve::P256 => Alg::ES256,
                Curve::P384 => Alg::ES384,
                Curve::P521 => Alg::ES512,
            },
        }
    }

    pub fn params(&self) -> &PublicParams {
        &self.params
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// A short human description: "RSA 2048", "ECDSA P-256".
    pub fn describe(&self) -> String {
        match &self.params {
            PublicParams::Rsa { n, .. } => format!("RSA {}", bit_length(n)),
            PublicParams::Ec { curve, .. } => format!("ECDSA {}", curve.jwk_name()),
        }
    }

    /// The SPKI `PUBLIC KEY` PEM block, LF line endings: the form verification bundles use.
    pub fn to_spki_pem(&self) -> String {
        let block = pem::Pem::new("PUBLIC KEY", self.spki_der.clone());
        pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }
}

/// kid = base64url(SHA-256(DER SPKI)), unpadded, as `keyIDFromPublicKey` computes it.
pub fn kid_of_spki(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

fn ec_spki_der<C>(point: &[u8]) -> Option<Vec<u8>>
where
    C: elliptic_curve::CurveArithmetic + elliptic_curve::point::PointCompression,
    elliptic_curve::PublicKey<C>: spki::EncodePublicKey,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    use spki::EncodePublicKey;
    let key = elliptic_curve::PublicKey::<C>::from_sec1_bytes(point).ok()?;
    Some(key.to_public_key_der().ok()?.into_vec())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        Some(&top) => big_endian.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_parts_strip_leading_zeros_so_the_kid_is_canonical() {
        let n = [0x00, 0xc3, 0x01, 0x02, 0x03];
        let with_zero = VerificationKey::from_rsa_parts(&n, &[0, 1, 0, 1]).unwrap();
        let without = VerificationKey::from_rsa_parts(&n[1..], &[1, 0, 1]).unwrap();
        assert_eq!(with_zero.kid(), without.kid());
        assert_eq!(with_zero.describe(), "RSA 32");
    }

    #[test]
    fn compressed_ec_points_are_refused() {
        let mut point = vec![0x02];
        point.extend([1u8; 32]);
        assert_eq!(
            VerificationKey::from_ec_point(Curve::P256, &point),
            Err(KeyPartsError::CompressedPoint)
        );
    }

    #[test]
    fn points_off_the_curve_are_refused() {
        let mut point = vec![0x04];
        point.extend([1u8; 64]);
        assert_eq!(
            VerificationKey::from_ec_point(Curve::P256, &point),
            Err(KeyPartsError::NotOnCurve("P-256"))
        );
    }
}
