//! The storage servers for the publishing tests: their endpoints (exported by scripts/test.sh),
//! fixtures that create the Azure container and the GCS bucket, a sandbox-like plan with key
//! files, and stand-ins the tests run themselves.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod stand_in;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyrot::http::block_on;
use keyrot::plan::{Plan, Target, TargetKind};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

/// Where scripts/storage-servers.sh started the servers.
pub struct Servers {
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub azure_endpoint: String,
    pub gcs_endpoint: String,
    pub gcs_public: String,
}

/// The servers, or a failure that says how to get them: these tests never pass without them.
pub fn servers() -> Servers {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the publishing tests need the storage servers that \
                 scripts/test.sh installs and starts; run them through scripts/test.sh \
                 (e.g. `scripts/test.sh --test publish_backends`)"
            )
        })
    };
    Servers {
        s3_endpoint: var("KEYROT_TEST_S3_ENDPOINT"),
        s3_bucket: var("KEYROT_TEST_S3_BUCKET"),
        azure_endpoint: var("KEYROT_TEST_AZURE_ENDPOINT"),
        gcs_endpoint: var("KEYROT_TEST_GCS_ENDPOINT"),
        gcs_public: var("KEYROT_TEST_GCS_PUBLIC"),
    }
}

/// A key prefix no other test (nor an earlier run against the same servers) uses.
pub fn unique(name: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!("{name}-{}-{nanos}-{n}", std::process::id())
}

/// Azurite's account and its published, well-known key (not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates a container whose blobs anyone may read (access level `blob`), with a request signed
/// by SharedKey: object_store cannot create containers.
pub fn azure_container(servers: &Servers, name: &str) {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let canonical_headers =
        format!("x-ms-blob-public-access:blob\nx-ms-date:{date}\nx-ms-version:{version}\n");
    // Path-style (emulator) URLs name the account in the path too.
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container");
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\n{canonical_headers}{resource}");
    let key = STANDARD.decode(AZURITE_KEY).unwrap();
    let signature = STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let url = format!(
        "{}/{AZURITE_ACCOUNT}/{name}?restype=container",
        servers.azure_endpoint
    );
    let status = block_on(async {
        reqwest::Client::new()
            .put(&url)
            .header("x-ms-blob-public-access", "blob")
            .header("x-ms-date", &date)
            .header("x-ms-version", version)
            .header("Content-Length", "0")
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            )
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(
        status.is_success() || status == reqwest::StatusCode::CONFLICT,
        "creating container {name}: {status}"
    );
}

/// Creates a bucket on fake-gcs-server (which needs no credentials); its objects are public.
pub fn gcs_bucket(servers: &Servers, name: &str) {
    let url = format!("{}/storage/v1/b?project=keyrot-test", servers.gcs_public);
    let status = block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "name": name }).to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(
        status.is_success() || status == reqwest::StatusCode::CONFLICT,
        "creating bucket {name}: {status}"
    );
}

/// A service-account file that tells object_store to send no OAuth token (fake-gcs-server
/// checks none); holds no key.
pub fn gcs_credentials(dir: &Path) -> PathBuf {
    let path = dir.join("gcs-service-account.json");
    let body = serde_json::json!({
        "type": "service_account",
        "disable_oauth": true,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    });
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A CloudFront-like front for a private S3 bucket: answers anonymous GETs by reading the object
/// with signed requests (as an origin access control does). moto answers every unsigned GET of
/// a `.well-known/openid-configuration` path itself, so the discovery document on moto can be
/// read from outside only this way. Returns the front's URL for the bucket's root.
pub fn s3_front(target: &Target) -> String {
    let store = keyrot::stores::open(&target.kind)
        .expect("an S3 target")
        .expect("the S3 client");
    stand_in::serve(move |request| {
        let key = request.target.trim_start_matches('/').to_string();
        let found = block_on(async {
            let found = store.client.get(&key.as_str().into()).await?;
            let attributes = found.attributes.clone();
            Ok::<_, object_store::Error>((attributes, found.bytes().await?))
        });
        match found {
            Ok((attributes, body)) => {
                let headers = attributes
                    .iter()
                    .filter_map(|(attribute, value)| {
                        let name = match attribute {
                            object_store::Attribute::ContentType => "Content-Type",
                            object_store::Attribute::CacheControl => "Cache-Control",
                            _ => return None,
                        };
                        Some((name.to_string(), value.as_ref().to_string()))
                    })
                    .collect();
                stand_in::Response {
                    status: 200,
                    headers,
                    body: body.to_vec(),
                }
            }
            Err(e) => stand_in::Response {
                status: 404,
                headers: Vec::new(),
                body: e.to_string().into_bytes(),
            },
        }
    })
}

/// A sandbox-like test plan in `dir`: key files under pki/ (created by the caller), waits of a
/// second, and `targets` (YAML list items, indented by two spaces) as its targets.
pub fn write_plan(dir: &Path, targets: &str) -> PathBuf {
    let plan = dir.join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "cluster: test\nflavour: custom\ntestPlan: true\nkey: {{ algorithm: ES256 }}\n\
             stateDir: state\nprivateKeyDir: keys\n\
             apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  restart: none\n\
             probe: none\nissuer:\n  url: https://issuer.example.com/test\n\
             targets:\n{targets}\
             timings: {{ publishSettle: 1s, retireAfter: 1s, gateTimeout: 30s, retryBackoff: 1s, retryBackoffMax: 2s }}\n"
        ),
    )
    .unwrap();
    plan
}

/// The target YAML for each backend, under a fresh prefix, and its public URL.
pub fn s3_target(servers: &Servers, name: &str, prefix: &str, public_url: Option<&str>) -> String {
    let public = public_url.map_or(String::new(), |u| format!("    publicUrl: {u}/{prefix}\n"));
    format!(
        "  - name: {name}\n    s3: {{ bucket: {}, region: us-east-1, prefix: {prefix}, endpoint: \"{}\" }}\n    cacheMaxAge: 1s\n{public}",
        servers.s3_bucket, servers.s3_endpoint
    )
}

pub fn azure_target(servers: &Servers, name: &str, container: &str, prefix: &str) -> String {
    let endpoint = format!("{}/{AZURITE_ACCOUNT}", servers.azure_endpoint);
    format!(
        "  - name: {name}\n    azure: {{ account: {AZURITE_ACCOUNT}, container: {container}, prefix: {prefix}, endpoint: \"{endpoint}\" }}\n    cacheMaxAge: 1s\n    publicUrl: {endpoint}/{container}/{prefix}\n"
    )
}

pub fn gcs_target(
    servers: &Servers,
    name: &str,
    bucket: &str,
    prefix: &str,
    credentials: &Path,
) -> String {
    format!(
        "  - name: {name}\n    gcs: {{ bucket: {bucket}, prefix: {prefix}, endpoint: \"{}\", serviceAccountFile: {} }}\n    cacheMaxAge: 1s\n    jwksContentType: application/json\n    publicUrl: {}/{bucket}/{prefix}\n",
        servers.gcs_endpoint,
        credentials.display(),
        servers.gcs_public
    )
}

/// The plan's target named `name`.
pub fn target<'a>(plan: &'a Plan, name: &str) -> &'a Target {
    plan.targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

/// True for the kinds this module runs servers for.
pub fn is_object_store(target: &Target) -> bool {
    matches!(
        target.kind,
        TargetKind::S3 { .. } | TargetKind::Azure { .. } | TargetKind::Gcs { .. }
    )
}
