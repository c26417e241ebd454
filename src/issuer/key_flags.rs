//! Where kube-apiserver takes its service-account keys from, as its flags say: the key files
//! (`--service-account-key-file`, `--service-account-signing-key-file`) or an external signer
//! (`--service-account-signing-endpoint`); kube-apiserver refuses both at once. The edit from one
//! to the other for kubeadm manifests and systemd units, and the kubeadm patches that keep it
//! across `kubeadm upgrade`.
//!
//! k3s and RKE2 pass both key flags to kube-apiserver themselves, and `kube-apiserver-arg` can
//! only override a flag, not remove it (k3s-io/k3s#617): they cannot be switched from their
//! config file.

use std::path::{Path, PathBuf};

use super::{FlagFile, TextError, kubeadm, systemd};

pub const KEY_FILE: &str = "service-account-key-file";
pub const SIGNING_KEY_FILE: &str = "service-account-signing-key-file";
pub const SIGNING_ENDPOINT: &str = "service-account-signing-endpoint";

/// Why k3s and RKE2 are not switched.
pub const K3S_CANNOT_SWITCH: &str = "k3s and RKE2 pass --service-account-key-file and \
     --service-account-signing-key-file to kube-apiserver themselves, and kube-apiserver-arg \
     cannot remove them, while kube-apiserver refuses them beside \
     --service-account-signing-endpoint: switch with kubeadmManifest or systemdUnit only";

/// Where kube-apiserver takes its keys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMode {
    KeyFiles,
    Signer,
}

impl KeyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::KeyFiles => "key files",
            KeyMode::Signer => "the external signer",
        }
    }
}

/// The flags of one mode, with their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFlags {
    KeyFiles {
        /// `--service-account-key-file`, in order.
        key_files: Vec<PathBuf>,
        signing_key_file: PathBuf,
    },
    Signer {
        socket: PathBuf,
    },
}

impl KeyFlags {
    pub fn mode(&self) -> KeyMode {
        match self {
            KeyFlags::KeyFiles { .. } => KeyMode::KeyFiles,
            KeyFlags::Signer { .. } => KeyMode::Signer,
        }
    }

    /// The arguments, `--name=value`.
    pub fn args(&self) -> Vec<String> {
        let arg = |name: &str, path: &Path| format!("--{name}={}", path.display());
        match self {
            KeyFlags::KeyFiles {
                key_files,
                signing_key_file,
            } => key_files
                .iter()
                .map(|file| arg(KEY_FILE, file))
                .chain([arg(SIGNING_KEY_FILE, signing_key_file)])
                .collect(),
            KeyFlags::Signer { socket } => vec![arg(SIGNING_ENDPOINT, socket)],
        }
    }

    /// The flags of the other mode, which these replace.
    fn replaces(&self) -> &'static [&'static str] {
        match self {
            KeyFlags::KeyFiles { .. } => &[SIGNING_ENDPOINT],
            KeyFlags::Signer { .. } => &[KEY_FILE, SIGNING_KEY_FILE],
        }
    }
}

/// Where the flag file has kube-apiserver take its keys from: the signer when it sets the
/// endpoint, the key files otherwise.
pub fn key_mode(file: &FlagFile, text: &str) -> Result<KeyMode, TextError> {
    match file.values_of(text, SIGNING_ENDPOINT)?.is_empty() {
        true => Ok(KeyMode::KeyFiles),
        false => Ok(KeyMode::Signer),
    }
}

/// The flag file's text with kube-apiserver taking its keys as `to` says; the text is unchanged
/// when it does already. Checked by reading the result back.
pub fn edit_key_flags(file: &FlagFile, text: &str, to: &KeyFlags) -> Result<String, TextError> {
    let args = to.args();
    let edited = match file {
        FlagFile::KubeadmManifest => kubeadm::edit_args(text, to.replaces(), &args)?,
        FlagFile::SystemdUnit => systemd::edit_args(text, to.replaces(), &args)?,
        FlagFile::K3sConfig(_) => return Err(TextError::Unsupported(K3S_CANNOT_SWITCH.into())),
    };
    let leftover: Vec<String> = to
        .replaces()
        .iter()
        .filter(|name| file.values_of(&edited, name).is_ok_and(|v| !v.is_empty()))
        .map(|name| format!("--{name}"))
        .collect();
    let given = |name: &str| file.values_of(&edited, name).unwrap_or_default();
    let now: Vec<String> = match to {
        KeyFlags::KeyFiles { .. } => given(KEY_FILE)
            .into_iter()
            .map(|v| format!("--{KEY_FILE}={v}"))
            .chain(
                given(SIGNING_KEY_FILE)
                    .into_iter()
                    .map(|v| format!("--{SIGNING_KEY_FILE}={v}")),
            )
            .collect(),
        KeyFlags::Signer { .. } => given(SIGNING_ENDPOINT)
            .into_iter()
            .map(|v| format!("--{SIGNING_ENDPOINT}={v}"))
            .collect(),
    };
    if !leftover.is_empty() || now != args {
        return Err(TextError::Unsupported(format!(
            "the edited file would give kube-apiserver {now:?} and still {leftover:?} instead of \
             {args:?}; edit it by hand"
        )));
    }
    Ok(edited)
}

/// The kubeadm patches that make `kubeadm upgrade --patches DIR` (and `init`, `join`) write the
/// signer's flags into the manifest it regenerates: drop the two key flags kubeadm adds (their
/// values as the manifest has them now, `key_args`), then append the endpoint. kubeadm applies
/// the files of a patches directory in name order (cmd/kubeadm/app/util/patches).
pub fn kubeadm_patches(key_args: &[String], socket: &Path) -> Vec<(&'static str, String)> {
    let drops: String = key_args
        .iter()
        .map(|arg| format!("    - {arg}\n"))
        .collect();
    let strategic = format!(
        "# Written by keyrot (switch-signer): kube-apiserver takes its service-account keys\n\
         # from keyrot's external signer; the key flags kubeadm adds are refused beside it.\n\
         spec:\n  containers:\n  - name: kube-apiserver\n    \
         $deleteFromPrimitiveList/command:\n{drops}"
    );
    let endpoint = format!("--{SIGNING_ENDPOINT}={}", socket.display());
    let json = format!(
        "[{{\"op\": \"add\", \"path\": \"/spec/containers/0/command/-\", \"value\": {}}}]\n",
        serde_json::Value::String(endpoint)
    );
    vec![(KUBEADM_PATCH_DROP, strategic), (KUBEADM_PATCH_ADD, json)]
}

/// The names of keyrot's two kubeadm patch files: target `kube-apiserver`, a suffix that sorts
/// them, and the patch type.
pub const KUBEADM_PATCH_DROP: &str = "kube-apiserver0keyrot-signer+strategic.yaml";
pub const KUBEADM_PATCH_ADD: &str = "kube-apiserver1keyrot-signer+json.json";

/// The key-file arguments the manifest gives kube-apiserver now, `--name=value` in order.
pub fn key_file_args(file: &FlagFile, text: &str) -> Result<Vec<String>, TextError> {
    let mut args = Vec::new();
    for name in [KEY_FILE, SIGNING_KEY_FILE] {
        args.extend(
            file.values_of(text, name)?
                .into_iter()
                .map(|value| format!("--{name}={value}")),
        );
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = include_str!("../../tests/data/issuer/kubeadm-kube-apiserver.yaml");

    fn signer() -> KeyFlags {
        KeyFlags::Signer {
            socket: PathBuf::from("/run/keyrot/signer.sock"),
        }
    }

    fn files() -> KeyFlags {
        KeyFlags::KeyFiles {
            key_files: vec![PathBuf::from("/etc/kubernetes/pki/sa.pub")],
            signing_key_file: PathBuf::from("/etc/kubernetes/pki/sa.key"),
        }
    }

    #[test]
    fn a_kubeadm_manifest_switches_to_the_signer_and_back_to_the_same_bytes() {
        let file = FlagFile::KubeadmManifest;
        assert_eq!(key_mode(&file, MANIFEST).unwrap(), KeyMode::KeyFiles);
        let to_signer = edit_key_flags(&file, MANIFEST, &signer()).unwrap();
        assert_eq!(key_mode(&file, &to_signer).unwrap(), KeyMode::Signer);
        assert!(!to_signer.contains("--service-account-key-file"));
        assert!(!to_signer.contains("--service-account-signing-key-file"));
        assert!(
            to_signer
                .contains("    - --service-account-signing-endpoint=/run/keyrot/signer.sock\n"),
            "{to_signer}"
        );
        // Done already: nothing changes.
        assert_eq!(
            edit_key_flags(&file, &to_signer, &signer()).unwrap(),
            to_signer
        );
        let back = edit_key_flags(&file, &to_signer, &files()).unwrap();
        assert_eq!(
            back, MANIFEST,
            "the key flags come back where the endpoint was"
        );
    }

    #[test]
    fn a_systemd_unit_switches_and_keeps_its_continuation_lines() {
        let unit = "[Unit]\nDescription=kube-apiserver\n\n[Service]\n\
                    ExecStart=/usr/local/bin/kube-apiserver \\\n  \
                    --service-account-issuer=https://kubernetes.default.svc \\\n  \
                    --service-account-key-file=/var/lib/kubernetes/sa.pub \\\n  \
                    --service-account-signing-key-file=/var/lib/kubernetes/sa.key\n\
                    Restart=on-failure\n";
        let file = FlagFile::SystemdUnit;
        let to_signer = edit_key_flags(&file, unit, &signer()).unwrap();
        assert_eq!(
            to_signer,
            "[Unit]\nDescription=kube-apiserver\n\n[Service]\n\
             ExecStart=/usr/local/bin/kube-apiserver \\\n  \
             --service-account-issuer=https://kubernetes.default.svc \\\n  \
             --service-account-signing-endpoint=/run/keyrot/signer.sock\n\
             Restart=on-failure\n"
        );
        let back = KeyFlags::KeyFiles {
            key_files: vec![PathBuf::from("/var/lib/kubernetes/sa.pub")],
            signing_key_file: PathBuf::from("/var/lib/kubernetes/sa.key"),
        };
        assert_eq!(edit_key_flags(&file, &to_signer, &back).unwrap(), unit);
    }

    #[test]
    fn k3s_and_rke2_configs_are_refused_with_the_reason() {
        let file = FlagFile::K3sConfig(super::super::K3sDefaults::k3s("cluster.local"));
        let error = edit_key_flags(&file, "write-kubeconfig-mode: \"0600\"\n", &signer())
            .unwrap_err()
            .to_string();
        assert!(error.contains("kube-apiserver-arg"), "{error}");
    }

    #[test]
    fn the_kubeadm_patches_drop_the_key_flags_and_append_the_endpoint() {
        let args = key_file_args(&FlagFile::KubeadmManifest, MANIFEST).unwrap();
        assert_eq!(
            args,
            [
                "--service-account-key-file=/etc/kubernetes/pki/sa.pub",
                "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key"
            ]
        );
        let patches = kubeadm_patches(&args, Path::new("/run/keyrot/signer.sock"));
        let names: Vec<&str> = patches.iter().map(|(name, _)| *name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            names, sorted,
            "kubeadm applies them in name order: drop first"
        );
        let strategic: serde_yaml::Value = serde_yaml::from_str(&patches[0].1).unwrap();
        let container = &strategic["spec"]["containers"][0];
        assert_eq!(container["name"], "kube-apiserver");
        assert_eq!(
            container["$deleteFromPrimitiveList/command"],
            serde_yaml::to_value(&args).unwrap()
        );
        let json: serde_json::Value = serde_json::from_str(&patches[1].1).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "op": "add",
                "path": "/spec/containers/0/command/-",
                "value": "--service-account-signing-endpoint=/run/keyrot/signer.sock"
            }])
        );
    }
}
