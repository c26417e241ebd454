//! A client of the signer socket that behaves like kube-apiserver's external-JWT plugin
//! (`pkg/serviceaccount/externaljwt/plugin/{plugin,keycache}.go`), in package v1 or v1alpha1:
//! it refuses every response kube refuses, keeps the last good key set, verifies tokens against
//! it, and fetches again on an unknown kid. Keys are parsed and signatures verified with
//! x509-parser and aws-lc, not with keyrot's own key code.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyrot::signer::client::channel;
use keyrot::signer::proto::{v1, v1alpha1};
use tonic::transport::Channel;

/// Which package the client dials, as kube-apiserver 1.34+ (v1) or 1.32-1.33 (v1alpha1) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    V1,
    V1alpha1,
}

pub const PACKAGES: [Package; 2] = [Package::V1, Package::V1alpha1];

/// One key as the plugin keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: String,
    pub spki: Vec<u8>,
    pub exclude: bool,
}

/// A FetchKeys answer that passed kube's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub data_timestamp: SystemTime,
    pub refresh_hint: Duration,
}

impl KeySet {
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }
}

pub struct Plugin {
    package: Package,
    channel: Channel,
    runtime: tokio::runtime::Runtime,
    /// The last good set: kept when a fetch fails ("Stale set of keys will be supported").
    pub cache: Option<KeySet>,
    pub fetches: usize,
}

/// The four algorithms kube-apiserver accepts from a signer.
const ALGS: [&str; 4] = ["RS256", "ES256", "ES384", "ES512"];

impl Plugin {
    /// Connects and makes the initial fill, as kube-apiserver does at start.
    pub fn start(socket: &Path, package: Package) -> Result<Plugin, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = {
            let _entered = runtime.enter();
            channel(socket)
        };
        let mut plugin = Plugin {
            package,
            channel,
            runtime,
            cache: None,
            fetches: 0,
        };
        plugin.fetch_keys()?;
        Ok(plugin)
    }

    /// FetchKeys, checked as `keycache.go` checks it; on success the set replaces the cache.
    pub fn fetch_keys(&mut self) -> Result<KeySet, String> {
        self.fetches += 1;
        let channel = self.channel.clone();
        let (keys, timestamp, hint) = match self.package {
            Package::V1 => {
                let mut c = v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                let r = self
                    .runtime
                    .block_on(c.fetch_keys(v1::FetchKeysRequest {}))
                    .map_err(|s| format!("FetchKeys: {s}"))?
                    .into_inner();
                let keys = r
                    .keys
                    .into_iter()
                    .map(|k| (k.key_id, k.key, k.exclude_from_oidc_discovery))
                    .collect::<Vec<_>>();
                (keys, r.data_timestamp, r.refresh_hint_seconds)
            }
            Package::V1alpha1 => {
                let mut c =
                    v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                let r = self
                    .runtime
                    .block_on(c.fetch_keys(v1alpha1::FetchKeysRequest {}))
                    .map_err(|s| format!("FetchKeys: {s}"))?
                    .into_inner();
                let keys = r
                    .keys
                    .into_iter()
                    .map(|k| (k.key_id, k.key, k.exclude_from_oidc_discovery))
                    .collect::<Vec<_>>();
                (keys, r.data_timestamp, r.refresh_hint_seconds)
            }
        };
        if hint <= 0 {
            return Err(format!("refresh hint {hint} <= 0"));
        }
        if keys.is_empty() {
            return Err("no keys".into());
        }
        let timestamp = timestamp.ok_or("no data_timestamp")?;
        let data_timestamp =
            SystemTime::try_from(timestamp).map_err(|e| format!("invalid data_timestamp: {e}"))?;
        let mut checked = Vec::new();
        for (kid, spki, exclude) in keys {
            if kid.is_empty() || kid.len() > 1024 {
                return Err(format!("kid of length {}", kid.len()));
            }
            if spki.is_empty() {
                return Err(format!("key {kid} is empty"));
            }
            parse_pkix(&spki).map_err(|e| format!("key {kid} is not PKIX: {e}"))?;
            checked.push(Key { kid, spki, exclude });
        }
        let set = KeySet {
            keys: checked,
            data_timestamp,
            refresh_hint: Duration::from_secs(hint as u64),
        };
        self.cache = Some(set.clone());
        Ok(set)
    }

    pub fn max_token_expiration(&self) -> Result<i64, String> {
        let channel = self.channel.clone();
        let seconds = match self.package {
            Package::V1 => {
                let mut c = v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                self.runtime
                    .block_on(c.metadata(v1::MetadataRequest {}))
                    .map_err(|s| format!("Metadata: {s}"))?
                    .into_inner()
                    .max_token_expiration_seconds
            }
            Package::V1alpha1 => {
                let mut c =
                    v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                self.runtime
                    .block_on(c.metadata(v1alpha1::MetadataRequest {}))
                    .map_err(|s| format!("Metadata: {s}"))?
                    .into_inner()
                    .max_token_expiration_seconds
            }
        };
        Ok(seconds)
    }

    /// Sign, with kube's response checks; returns the assembled token.
    pub fn mint(&self, claims: &serde_json::Value) -> Result<String, String> {
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let channel = self.channel.clone();
        let (header, signature) = match self.package {
            Package::V1 => {
                let mut c = v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                let r = self
                    .runtime
                    .block_on(c.sign(v1::SignJwtRequest {
                        claims: payload.clone(),
                    }))
                    .map_err(|s| format!("Sign: {s}"))?
                    .into_inner();
                (r.header, r.signature)
            }
            Package::V1alpha1 => {
                let mut c =
                    v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
                let r = self
                    .runtime
                    .block_on(c.sign(v1alpha1::SignJwtRequest {
                        claims: payload.clone(),
                    }))
                    .map_err(|s| format!("Sign: {s}"))?
                    .into_inner();
                (r.header, r.signature)
            }
        };
        let (_, kid) = strict_header(&header)?;
        if let Some(set) = &self.cache
            && set.keys.iter().any(|k| k.kid == kid && k.exclude)
        {
            return Err(format!(
                "signed with {kid}, which is excluded from discovery"
            ));
        }
        if signature.is_empty() {
            return Err("empty signature".into());
        }
        Ok(format!("{header}.{payload}.{signature}"))
    }

    /// Verifies a token against the cached set; an unknown kid makes one FetchKeys first, as
    /// `GetPublicKeys` does. Returns the kid that verified it.
    pub fn verify(&mut self, token: &str) -> Result<String, String> {
        let (header, _) = token.split_once('.').ok_or("not a JWT")?;
        let (_, kid) = strict_header(header)?;
        let known = |set: &Option<KeySet>| {
            set.as_ref()
                .and_then(|s| s.keys.iter().find(|k| k.kid == kid).cloned())
        };
        let key = match known(&self.cache) {
            Some(key) => key,
            None => {
                self.fetch_keys()?;
                known(&self.cache).ok_or(format!("kid {kid} unknown after a FetchKeys"))?
            }
        };
        verify_signature(token, &key.spki)?;
        Ok(kid)
    }
}

/// The header as kube decodes it: base64url without padding, JSON with exactly alg, kid and typ
/// (`DisallowUnknownFields`), typ "JWT", kid 1..=1024 characters, alg one of four. Returns
/// (alg, kid).
pub fn strict_header(header: &str) -> Result<(String, String), String> {
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| format!("header is not base64url without padding: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("header is not JSON: {e}"))?;
    let object = value.as_object().ok_or("header is not an object")?;
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort();
    if names != ["alg", "kid", "typ"] {
        return Err(format!(
            "header members {names:?}, not exactly alg, kid, typ"
        ));
    }
    let field = |name: &str| object[name].as_str().map(str::to_string);
    let (alg, kid, typ) = (field("alg"), field("kid"), field("typ"));
    let (Some(alg), Some(kid), Some(typ)) = (alg, kid, typ) else {
        return Err("header members are not strings".into());
    };
    if typ != "JWT" {
        return Err(format!("typ {typ:?}"));
    }
    if kid.is_empty() || kid.len() > 1024 {
        return Err(format!("kid of length {}", kid.len()));
    }
    if !ALGS.contains(&alg.as_str()) {
        return Err(format!("alg {alg:?}"));
    }
    Ok((alg, kid))
}

enum Pkix {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { point: Vec<u8> },
}

fn parse_pkix(spki: &[u8]) -> Result<Pkix, String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (rest, parsed) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    match parsed.parsed().map_err(|e| e.to_string())? {
        // DER integers carry a leading zero when the top bit is set; aws-lc wants the magnitude.
        PublicKey::RSA(rsa) => Ok(Pkix::Rsa {
            n: strip_zeros(rsa.modulus),
            e: strip_zeros(rsa.exponent),
        }),
        PublicKey::EC(point) => Ok(Pkix::Ec {
            point: point.data().to_vec(),
        }),
        _ => Err("neither RSA nor ECDSA".into()),
    }
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// Checks a token's signature with aws-lc against a PKIX key.
pub fn verify_signature(token: &str, spki: &[u8]) -> Result<(), String> {
    use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
    let (signing_input, signature) = token.rsplit_once('.').ok_or("not a JWT")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("signature is not base64url: {e}"))?;
    let (alg, _) = strict_header(token.split('.').next().unwrap())?;
    let message = signing_input.as_bytes();
    let ok = match (alg.as_str(), parse_pkix(spki)?) {
        ("RS256", Pkix::Rsa { n, e }) => RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, &signature)
            .is_ok(),
        (alg, Pkix::Ec { point }) => {
            let verifier = match alg {
                "ES256" => &sig::ECDSA_P256_SHA256_FIXED,
                "ES384" => &sig::ECDSA_P384_SHA384_FIXED,
                "ES512" => &sig::ECDSA_P521_SHA512_FIXED,
                other => return Err(format!("alg {other} with an EC key")),
            };
            UnparsedPublicKey::new(verifier, &point)
                .verify(message, &signature)
                .is_ok()
        }
        (alg, _) => return Err(format!("alg {alg} does not match the key")),
    };
    ok.then_some(()).ok_or("signature does not verify".into())
}
