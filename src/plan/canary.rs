//! A target's `canary` section checked: the relying party's kind and fields, the token's
//! audience and subject.

use super::destinations::endpoint;
use super::locate::FieldPath;
use super::raw::RawCanary;
use super::values::Context;
use super::{Canary, RelyingParty};

/// The canary's `sub` unless the plan names one: the form of a ServiceAccount token's subject,
/// for an account keyrot never creates, so a trust naming it admits no workload of the cluster.
pub const DEFAULT_CANARY_SUBJECT: &str = "system:serviceaccount:keyrot-system:keyrot-canary";

const AWS_STS_ENDPOINT: &str = "https://sts.amazonaws.com";
const GCP_STS_ENDPOINT: &str = "https://sts.googleapis.com";
const ENTRA_ENDPOINT: &str = "https://login.microsoftonline.com";

/// The audiences each cloud's documentation uses for Kubernetes tokens: the AWS pod identity
/// webhook's, Entra workload identity's, and a pool provider's default allowed audience.
const AWS_AUDIENCE: &str = "sts.amazonaws.com";
const ENTRA_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The fields only one kind uses, with that kind.
const KIND_FIELDS: [(&str, &str); 4] = [
    ("roleArn", "aws-sts"),
    ("region", "aws-sts"),
    ("provider", "gcp-sts"),
    ("tenant", "entra"),
];

pub fn canary(cx: &mut Context, at: &FieldPath, written: &RawCanary) -> Option<Canary> {
    let kind_at = at.key("kind");
    let Some(kind) = written.kind.as_deref() else {
        cx.missing(&kind_at, "the relying party: aws-sts, gcp-sts or entra");
        return None;
    };
    if !matches!(kind, "aws-sts" | "gcp-sts" | "entra") {
        cx.error(
            &kind_at,
            format!("{kind:?} is not a relying party keyrot knows: aws-sts, gcp-sts or entra"),
        );
        return None;
    }
    let mut misplaced = false;
    let set = [
        written.role_arn.is_some(),
        written.region.is_some(),
        written.provider.is_some(),
        written.tenant.is_some(),
    ];
    for ((field, owner), set) in KIND_FIELDS.iter().zip(set) {
        if set && *owner != kind {
            misplaced = true;
            cx.error(
                &at.key(field),
                format!("applies to kind {owner} only, not to {kind}"),
            );
        }
    }
    if written.client_id.is_some() && kind != "entra" {
        misplaced = true;
        cx.error(
            &at.key("clientId"),
            format!("applies to kind entra only, not to {kind}"),
        );
    }
    let endpoint = endpoint(cx, &at.key("endpoint"), written.endpoint.as_deref());
    // Every field is checked even after a problem, so that one run reports them all.
    let written_endpoint = endpoint.clone().flatten();
    let party = match kind {
        "aws-sts" => aws(cx, at, written, written_endpoint),
        "gcp-sts" => gcp(cx, at, written, written_endpoint),
        _ => entra(cx, at, written, written_endpoint),
    };
    let audience = match &written.audience {
        Some(text) => cx.text(&at.key("audience"), text),
        None => party.as_ref().map(|(_, default)| default.clone()),
    };
    let subject = match &written.subject {
        Some(text) => cx.text(&at.key("subject"), text),
        None => Some(DEFAULT_CANARY_SUBJECT.to_string()),
    };
    if misplaced {
        return None;
    }
    endpoint?;
    Some(Canary {
        relying_party: party?.0,
        audience: audience?,
        subject: subject?,
    })
}

fn aws(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawCanary,
    endpoint: Option<String>,
) -> Option<(RelyingParty, String)> {
    let arn_at = at.key("roleArn");
    let Some(role_arn) = written.role_arn.as_deref() else {
        cx.missing(
            &arn_at,
            "the role to assume, arn:aws:iam::ACCOUNT:role/NAME (a role that may do nothing)",
        );
        return None;
    };
    if !is_role_arn(role_arn) {
        cx.error(
            &arn_at,
            format!("{role_arn:?} is not a role's ARN: arn:aws:iam::ACCOUNT:role/NAME"),
        );
        return None;
    }
    let region = match written.region.as_deref() {
        Some(region) if is_region(region) => Some(region),
        Some(region) => {
            cx.error(
                &at.key("region"),
                format!("{region:?} is not a region name such as eu-west-1"),
            );
            return None;
        }
        None => None,
    };
    // The regional endpoint answers from the region the trust's OIDC provider is used in; the
    // global one when no region is named.
    let endpoint = endpoint.unwrap_or_else(|| match region {
        Some(region) => format!("https://sts.{region}.amazonaws.com"),
        None => AWS_STS_ENDPOINT.to_string(),
    });
    let party = RelyingParty::AwsSts {
        role_arn: role_arn.to_string(),
        endpoint,
    };
    Some((party, AWS_AUDIENCE.to_string()))
}

fn gcp(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawCanary,
    endpoint: Option<String>,
) -> Option<(RelyingParty, String)> {
    let provider_at = at.key("provider");
    let shape = "//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER";
    let Some(provider) = written.provider.as_deref() else {
        cx.missing(&provider_at, &format!("the pool provider, {shape}"));
        return None;
    };
    let parts: Vec<&str> = provider.split('/').collect();
    let shaped = matches!(
        parts.as_slice(),
        ["", "", "iam.googleapis.com", "projects", number, "locations", "global",
         "workloadIdentityPools", pool, "providers", id]
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
                && !pool.is_empty() && !id.is_empty()
    );
    if !shaped {
        cx.error(
            &provider_at,
            format!(
                "{provider:?} is not a pool provider's full name with the project's number: {shape}"
            ),
        );
        return None;
    }
    // A provider's default allowed audience is its name as an https URL.
    let audience = format!("https:{provider}");
    let party = RelyingParty::GcpSts {
        provider: provider.to_string(),
        endpoint: endpoint.unwrap_or_else(|| GCP_STS_ENDPOINT.to_string()),
    };
    Some((party, audience))
}

fn entra(
    cx: &mut Context,
    at: &FieldPath,
    written: &RawCanary,
    endpoint: Option<String>,
) -> Option<(RelyingParty, String)> {
    let tenant_at = at.key("tenant");
    let tenant = match written.tenant.as_deref() {
        None => {
            cx.missing(&tenant_at, "the directory (tenant) ID of the app");
            None
        }
        Some(t) if is_guid(t) || is_domain(t) => Some(t.to_string()),
        Some(t) => {
            cx.error(
                &tenant_at,
                format!("{t:?} is not a tenant ID (a GUID) or a tenant's domain name"),
            );
            None
        }
    };
    let client_at = at.key("clientId");
    let client_id = match written.client_id.as_deref() {
        None => {
            cx.missing(
                &client_at,
                "the application (client) ID of the app with the federated credential",
            );
            None
        }
        Some(c) if is_guid(c) => Some(c.to_string()),
        Some(c) => {
            cx.error(
                &client_at,
                format!("{c:?} is not an application (client) ID, a GUID"),
            );
            None
        }
    };
    let party = RelyingParty::Entra {
        tenant: tenant?,
        client_id: client_id?,
        endpoint: endpoint.unwrap_or_else(|| ENTRA_ENDPOINT.to_string()),
    };
    Some((party, ENTRA_AUDIENCE.to_string()))
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, the account twelve digits.
fn is_role_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty())
    )
}

fn is_region(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// 8-4-4-4-12 hexadecimal digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tenant's domain (`contoso.onmicrosoft.com`): it becomes a path segment of the token URL.
fn is_domain(text: &str) -> bool {
    text.contains('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_need_an_account_and_a_role_name() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/keyrot-canary"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/path/canary"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/canary"));
        assert!(!is_role_arn("arn:aws:iam::12345:role/canary"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
    }

    #[test]
    fn tenants_are_guids_or_domains() {
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(!is_domain("contoso/../x"));
    }
}
