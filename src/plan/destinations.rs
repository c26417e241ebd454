//! Where one target publishes: exactly one destination (local directory, S3, Azure, GCS or a GCP
//! workload identity provider), each checked field by field, and the object settings of stores.

use chrono::TimeDelta;

use super::locate::FieldPath;
use super::raw::{RawAzure, RawGcpProvider, RawGcs, RawS3, RawTarget};
use super::values::{Context, format_duration};
use super::{AzureContainer, GcpProvider, GcsBucket, Objects, PublicRead, S3Bucket, TargetKind};
use crate::documents::JWKS_CONTENT_TYPE;

/// The IAM API that holds workload identity providers.
pub const GCP_IAM_ENDPOINT: &str = "https://iam.googleapis.com";

/// Fields that only object stores have: their headers and where verifiers read them.
const OBJECT_FIELDS: [&str; 4] = [
    "cacheControl",
    "jwksContentType",
    "publicUrl",
    "publicCaFile",
];

/// The checked destination of a target. `max_age` is its checked cacheMaxAge (`None` if bad).
pub fn kind(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawTarget,
    test_plan: bool,
    max_age: Option<TimeDelta>,
) -> Option<TargetKind> {
    let present: Vec<&str> = [
        ("localDirectory", written.local_directory.is_some()),
        ("s3", written.s3.is_some()),
        ("azure", written.azure.is_some()),
        ("gcs", written.gcs.is_some()),
        (
            "gcpWorkloadIdentityProvider",
            written.gcp_workload_identity_provider.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match present.as_slice() {
        [] => {
            cx.error(
                at,
                "no destination: set one of localDirectory, s3, azure, gcs or gcpWorkloadIdentityProvider",
            );
            return None;
        }
        [_] => {}
        [first, second, ..] => {
            cx.error(
                &at.key(second),
                format!("{first} is already this target's destination; write another target for {second}"),
            );
            return None;
        }
    }
    let store = written.s3.is_some() || written.azure.is_some() || written.gcs.is_some();
    if !store {
        let mut misplaced = false;
        for (field, set) in OBJECT_FIELDS.iter().zip([
            written.cache_control.is_some(),
            written.jwks_content_type.is_some(),
            written.public_url.is_some(),
            written.public_ca_file.is_some(),
        ]) {
            if set {
                misplaced = true;
                cx.error(
                    &at.key(field),
                    format!(
                        "applies to s3, azure and gcs targets only, not to {}",
                        present[0]
                    ),
                );
            }
        }
        if misplaced {
            return None;
        }
    }
    if let Some(dir) = &written.local_directory {
        return cx
            .path(&at.key("localDirectory"), dir)
            .map(|path| TargetKind::LocalDirectory { path });
    }
    if let Some(provider) = &written.gcp_workload_identity_provider {
        return gcp_provider(cx, &at.key("gcpWorkloadIdentityProvider"), provider)
            .map(TargetKind::GcpWorkloadIdentityProvider);
    }
    if let Some(s3) = &written.s3 {
        let s3_at = at.key("s3");
        let bucket = s3_bucket(cx, &s3_at, s3);
        let objects = objects(
            cx,
            at,
            written,
            &s3_at,
            s3.prefix.as_deref(),
            test_plan,
            max_age,
        );
        return Some(TargetKind::S3 {
            bucket: bucket?,
            objects: objects?,
        });
    }
    if let Some(azure) = &written.azure {
        let azure_at = at.key("azure");
        let container = azure_container(cx, &azure_at, azure);
        let objects = objects(
            cx,
            at,
            written,
            &azure_at,
            azure.prefix.as_deref(),
            test_plan,
            max_age,
        );
        return Some(TargetKind::Azure {
            container: container?,
            objects: objects?,
        });
    }
    let gcs = written.gcs.as_ref().expect("one destination is set");
    let gcs_at = at.key("gcs");
    let bucket = gcs_bucket(cx, &gcs_at, gcs);
    let objects = objects(
        cx,
        at,
        written,
        &gcs_at,
        gcs.prefix.as_deref(),
        test_plan,
        max_age,
    );
    Some(TargetKind::Gcs {
        bucket: bucket?,
        objects: objects?,
    })
}

fn required(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&String>,
    why: &str,
) -> Option<String> {
    match written {
        Some(text) => cx.text(at, text),
        None => {
            cx.missing(at, why);
            None
        }
    }
}

fn s3_bucket(cx: &mut Context, at: &FieldPath, written: &RawS3) -> Option<S3Bucket> {
    let bucket = required(
        cx,
        &at.key("bucket"),
        written.bucket.as_ref(),
        "the bucket's name",
    );
    let region = required(
        cx,
        &at.key("region"),
        written.region.as_ref(),
        "the bucket's region, such as eu-west-1",
    );
    let endpoint = endpoint(cx, &at.key("endpoint"), written.endpoint.as_deref());
    Some(S3Bucket {
        bucket: bucket?,
        region: region?,
        endpoint: endpoint?,
    })
}

fn azure_container(cx: &mut Context, at: &FieldPath, written: &RawAzure) -> Option<AzureContainer> {
    let account = required(
        cx,
        &at.key("account"),
        written.account.as_ref(),
        "the storage account's name",
    );
    let container = required(
        cx,
        &at.key("container"),
        written.container.as_ref(),
        "the container's name ($web for the static website)",
    );
    let endpoint = endpoint(cx, &at.key("endpoint"), written.endpoint.as_deref());
    Some(AzureContainer {
        account: account?,
        container: container?,
        endpoint: endpoint?,
    })
}

fn gcs_bucket(cx: &mut Context, at: &FieldPath, written: &RawGcs) -> Option<GcsBucket> {
    let bucket = required(
        cx,
        &at.key("bucket"),
        written.bucket.as_ref(),
        "the bucket's name",
    );
    let service_account_file = match &written.service_account_file {
        Some(path) => Some(cx.path(&at.key("serviceAccountFile"), path)?),
        None => None,
    };
    let endpoint = endpoint(cx, &at.key("endpoint"), written.endpoint.as_deref());
    Some(GcsBucket {
        bucket: bucket?,
        service_account_file,
        endpoint: endpoint?,
    })
}

fn gcp_provider(cx: &mut Context, at: &FieldPath, written: &RawGcpProvider) -> Option<GcpProvider> {
    let name_at = at.key("name");
    let name = required(
        cx,
        &name_at,
        written.name.as_ref(),
        "the provider's resource name, projects/PROJECT/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
    )
    .and_then(|name| {
        let parts: Vec<&str> = name.split('/').collect();
        let shaped = matches!(
            parts.as_slice(),
            ["projects", project, "locations", location, "workloadIdentityPools", pool, "providers", provider]
                if [project, location, pool, provider].iter().all(|p| !p.is_empty())
        );
        if !shaped {
            cx.error(
                &name_at,
                format!(
                    "{name:?} is not a provider's resource name: \
                     projects/PROJECT/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"
                ),
            );
            return None;
        }
        Some(name)
    });
    let service_account_file = match &written.service_account_file {
        Some(path) => Some(cx.path(&at.key("serviceAccountFile"), path)?),
        None => None,
    };
    let endpoint = endpoint(cx, &at.key("endpoint"), written.endpoint.as_deref())?
        .unwrap_or_else(|| GCP_IAM_ENDPOINT.to_string());
    Some(GcpProvider {
        name: name?,
        service_account_file,
        endpoint,
    })
}

/// The object settings shared by S3, Azure and GCS targets.
fn objects(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawTarget,
    store_at: &FieldPath,
    prefix: Option<&str>,
    test_plan: bool,
    max_age: Option<TimeDelta>,
) -> Option<Objects> {
    let prefix = object_prefix(cx, &store_at.key("prefix"), prefix);
    let cache_control = max_age.and_then(|max_age| {
        cache_control(
            cx,
            &at.key("cacheControl"),
            written.cache_control.as_deref(),
            max_age,
        )
    });
    let jwks_content_type = jwks_content_type(
        cx,
        &at.key("jwksContentType"),
        written.jwks_content_type.as_deref(),
    );
    let url = public_url(
        cx,
        &at.key("publicUrl"),
        written.public_url.as_deref(),
        test_plan,
    );
    let ca_file = match &written.public_ca_file {
        None => Some(None),
        Some(_) if !test_plan => {
            cx.error(
                &at.key("publicCaFile"),
                "only a plan with testPlan: true may trust an extra CA: clouds check the \
                 certificate against public roots",
            );
            None
        }
        Some(path) => cx.path(&at.key("publicCaFile"), path).map(Some),
    };
    Some(Objects {
        prefix: prefix?,
        cache_control: cache_control?,
        jwks_content_type: jwks_content_type?,
        public: PublicRead {
            url: url?,
            ca_file: ca_file?,
        },
    })
}

/// `a/b`: no slash at either end, no empty, `.` or `..` segment. Empty means the bucket's root.
fn object_prefix(cx: &mut Context, at: &FieldPath, written: Option<&str>) -> Option<String> {
    let prefix = written.unwrap_or_default();
    if prefix.is_empty() {
        return Some(String::new());
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        cx.error(
            at,
            format!("{prefix:?}: write the prefix without a slash at either end"),
        );
        return None;
    }
    if prefix
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        cx.error(
            at,
            format!(
                "{prefix:?} has an empty, `.` or `..` segment; object keys take them literally"
            ),
        );
        return None;
    }
    Some(prefix.to_string())
}

/// The written header, or `public, max-age=<cacheMaxAge>`; a written one may not let caches keep
/// the documents longer than cacheMaxAge, which publishSettle is checked against.
fn cache_control(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&str>,
    max_age: TimeDelta,
) -> Option<String> {
    let seconds = max_age.num_seconds();
    let Some(text) = written else {
        return Some(format!("public, max-age={seconds}"));
    };
    let mut limited = false;
    for directive in text.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            limited = true;
        }
        let Some(value) = directive
            .strip_prefix("max-age=")
            .or_else(|| directive.strip_prefix("s-maxage="))
        else {
            continue;
        };
        let Ok(value) = value.trim_matches('"').parse::<i64>() else {
            cx.error(
                at,
                format!("{text:?}: {directive:?} is not a number of seconds"),
            );
            return None;
        };
        if value > seconds {
            cx.error(
                at,
                format!(
                    "{text:?} lets caches keep the documents {value}s, longer than cacheMaxAge {}: \
                     lower it, or raise cacheMaxAge (and timings.publishSettle with it)",
                    format_duration(max_age)
                ),
            );
            return None;
        }
        limited = true;
    }
    if !limited {
        cx.error(
            at,
            format!(
                "{text:?} names no max-age: caches would choose their own (GCS keeps public \
                 objects an hour); add max-age={seconds}"
            ),
        );
        return None;
    }
    Some(text.to_string())
}

fn jwks_content_type(cx: &mut Context, at: &FieldPath, written: Option<&str>) -> Option<String> {
    match written {
        None => Some(JWKS_CONTENT_TYPE.to_string()),
        Some(t @ ("application/jwk-set+json" | "application/json")) => Some(t.to_string()),
        Some(other) => {
            cx.error(
                at,
                format!(
                    "{other:?}: use application/jwk-set+json (what kube-apiserver serves) or \
                     application/json; verifiers expect JSON"
                ),
            );
            None
        }
    }
}

/// `Some(None)` when not written. http is for test servers on this machine only.
fn public_url(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&str>,
    test_plan: bool,
) -> Option<Option<String>> {
    let Some(text) = written else {
        return Some(None);
    };
    let url = parse_url(cx, at, text)?;
    if url.scheme() == "http" && !(is_loopback(&url) && test_plan) {
        cx.error(
            at,
            format!(
                "{text:?}: http is allowed only for a loopback test server in a plan with \
                 testPlan: true; clouds fetch the documents over https"
            ),
        );
        return None;
    }
    Some(Some(text.to_string()))
}

/// `Some(None)` when not written. http only on this machine: credentials and documents would
/// otherwise cross the network unprotected.
pub(super) fn endpoint(
    cx: &mut Context,
    at: &FieldPath,
    written: Option<&str>,
) -> Option<Option<String>> {
    let Some(text) = written else {
        return Some(None);
    };
    let url = parse_url(cx, at, text)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        cx.error(
            at,
            format!(
                "{text:?}: http is allowed only for a loopback address (a test server); use https"
            ),
        );
        return None;
    }
    Some(Some(text.trim_end_matches('/').to_string()))
}

/// An http or https URL without query or fragment.
fn parse_url(cx: &mut Context, at: &FieldPath, text: &str) -> Option<url::Url> {
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            cx.error(at, format!("{text:?} is not a URL: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "https" | "http") {
        cx.error(at, format!("{text:?} must use the https scheme"));
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        cx.error(at, format!("{text:?} may not include a query or fragment"));
        return None;
    }
    Some(url)
}

/// 127.0.0.0/8, ::1 or localhost: a server on this machine.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
