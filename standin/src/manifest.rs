//! The issuer and key flags of a kubeadm-style static pod manifest, read as the kubelet would
//! run them.
//!
//! With `--issuer-flags-manifest`, the stand-in takes `--service-account-issuer`,
//! `--service-account-jwks-uri` and `--api-audiences` from the `kube-apiserver` container's
//! command list at start and at every restart (SIGHUP), as a kubelet restarts a static pod with
//! its manifest's command; with `--key-flags-from-manifest` also the key files or the signing
//! endpoint. This reader is independent of keyrot's flag editors, so the end-to-end tests check
//! what they wrote rather than reading it back with the same code.

use serde_yaml::Value;

/// The flags as the manifest gives them; absent ones are `None` (or empty lists).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssuerFlags {
    pub issuers: Vec<String>,
    pub jwks_uri: Option<String>,
    pub api_audiences: Option<Vec<String>>,
    pub key_files: Vec<String>,
    pub signing_key_file: Option<String>,
    pub signing_endpoint: Option<String>,
}

pub fn issuer_flags(manifest: &str) -> Result<IssuerFlags, String> {
    let document: Value = serde_yaml::from_str(manifest).map_err(|e| format!("not YAML: {e}"))?;
    let containers = document["spec"]["containers"]
        .as_sequence()
        .ok_or("no spec.containers list")?;
    let apiserver = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("kube-apiserver"))
        .ok_or("no kube-apiserver container")?;
    let command = apiserver["command"]
        .as_sequence()
        .ok_or("the kube-apiserver container has no command list")?;
    let mut flags = IssuerFlags::default();
    for item in command {
        let arg = item.as_str().ok_or("a command item is not a string")?;
        let Some((name, value)) = arg.split_once('=') else {
            continue;
        };
        match name {
            "--service-account-issuer" => flags.issuers.push(value.to_string()),
            "--service-account-jwks-uri" => flags.jwks_uri = Some(value.to_string()),
            "--api-audiences" => {
                flags.api_audiences = Some(value.split(',').map(str::to_string).collect())
            }
            "--service-account-key-file" => flags.key_files.push(value.to_string()),
            "--service-account-signing-key-file" => {
                flags.signing_key_file = Some(value.to_string())
            }
            "--service-account-signing-endpoint" => {
                flags.signing_endpoint = Some(value.to_string())
            }
            _ => {}
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_issuer_flags_in_order_and_ignores_the_others() {
        let manifest = "apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --service-account-issuer=https://new.example
    - --service-account-issuer=https://old.example
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-jwks-uri=https://new.example/openid/v1/jwks
    - --api-audiences=https://new.example,https://old.example
    name: kube-apiserver
";
        assert_eq!(
            issuer_flags(manifest).unwrap(),
            IssuerFlags {
                issuers: vec!["https://new.example".into(), "https://old.example".into()],
                jwks_uri: Some("https://new.example/openid/v1/jwks".into()),
                api_audiences: Some(vec![
                    "https://new.example".into(),
                    "https://old.example".into()
                ]),
                key_files: vec!["/etc/kubernetes/pki/sa.pub".into()],
                signing_key_file: None,
                signing_endpoint: None,
            }
        );
        assert_eq!(
            issuer_flags("spec: {containers: []}\n").unwrap_err(),
            "no kube-apiserver container"
        );
    }
}
