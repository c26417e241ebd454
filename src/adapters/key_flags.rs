//! The switch between key files and keyrot's signer on the machine: the plan's flag file edited
//! in place (atomically, mode and owner kept), kubeadm's patches written or removed, and
//! kube-apiserver restarted the plan's way. The decision core chose the step.

use crate::adapters::restart::restart_one;
use crate::adapters::{AdapterError, KeyFlagEffects};
use crate::atomic_file::{self, Existing};
use crate::issuer::key_flags::{
    KUBEADM_PATCH_ADD, KUBEADM_PATCH_DROP, KeyFlags, KeyMode, edit_key_flags, key_file_args,
    kubeadm_patches,
};
use crate::plan::{Plan, SignerSwitch};

/// What a switch starts from.
struct Switch<'a> {
    switch: &'a SignerSwitch,
    text: String,
    flags: KeyFlags,
    /// The flag file's text after the switch.
    edited: String,
}

/// The real effects, for `plan`.
pub struct FlagFileSwitch<'a> {
    plan: &'a Plan,
}

impl<'a> FlagFileSwitch<'a> {
    pub fn new(plan: &'a Plan) -> Self {
        FlagFileSwitch { plan }
    }

    /// The plan's switch, its flag file's text now, the flags of `to` and the text with them.
    /// Computed before anything is written: a file the editor refuses changes nothing.
    fn switch(&self, to: KeyMode) -> Result<Switch<'_>, AdapterError> {
        let (Some(signer), Some(switch)) = (
            self.plan.signer.as_ref(),
            self.plan.signer.as_ref().and_then(|s| s.switch.as_ref()),
        ) else {
            return Err(AdapterError::permanent(
                "the plan has no signer.switch section",
            ));
        };
        let path = &switch.path;
        let text = crate::fs_read::read_to_string(path)
            .map_err(|e| AdapterError::io(&e, format!("{}: {e}", path.display())))?;
        let flags = self.flags(to, &signer.socket);
        let edited = edit_key_flags(&switch.file, &text, &flags)
            .map_err(|e| AdapterError::permanent(format!("{}: {e}", path.display())))?;
        Ok(Switch {
            switch,
            text,
            flags,
            edited,
        })
    }

    /// The flags of `to`, with the plan's key files and socket.
    fn flags(&self, to: KeyMode, socket: &std::path::Path) -> KeyFlags {
        let apiserver = &self.plan.apiserver;
        match to {
            KeyMode::Signer => KeyFlags::Signer {
                socket: socket.to_path_buf(),
            },
            KeyMode::KeyFiles => KeyFlags::KeyFiles {
                key_files: std::iter::once(&apiserver.verification_bundle)
                    .chain(&apiserver.extra_verification_files)
                    .cloned()
                    .collect(),
                signing_key_file: apiserver.signing_key_file.clone(),
            },
        }
    }
}

impl FlagFileSwitch<'_> {
    /// What switching to `to` writes: the flag file's diff and kubeadm's patches. Writes nothing.
    pub fn preview(&self, to: KeyMode) -> Result<String, AdapterError> {
        let Switch {
            switch,
            text,
            flags,
            edited,
        } = self.switch(to)?;
        let shown = switch.path.display();
        let mut out = crate::issuer::diff::unified(
            &format!("{shown} (now)"),
            &format!("{shown} (after the switch)"),
            &text,
            &edited,
            3,
        );
        if let (Some(dir), KeyFlags::Signer { socket }) = (&switch.kubeadm_patches, &flags) {
            for (name, contents) in patches_for(switch, &text, socket)? {
                out.push_str(&format!("{}:\n{contents}", dir.join(name).display()));
            }
        } else if let Some(dir) = &switch.kubeadm_patches {
            out.push_str(&format!(
                "{} and {} are removed from {}\n",
                KUBEADM_PATCH_DROP,
                KUBEADM_PATCH_ADD,
                dir.display()
            ));
        }
        if switch.restart != crate::plan::Restart::None {
            out.push_str(&format!(
                "then {}\n",
                crate::describe::restart_name(&switch.restart)
            ));
        }
        Ok(out)
    }
}

impl KeyFlagEffects for FlagFileSwitch<'_> {
    fn switch_key_flags(
        &mut self,
        to: KeyMode,
        say: &mut dyn FnMut(String),
    ) -> Result<(), AdapterError> {
        let Switch {
            switch,
            text,
            flags,
            edited,
        } = self.switch(to)?;
        let path = &switch.path;
        // The patches first: they act only at the next `kubeadm upgrade`, and a step stopped
        // before the edit below is done again.
        if let Some(dir) = &switch.kubeadm_patches {
            keep_kubeadm_patches(switch, dir, &text, &flags, say)?;
        }
        if edited != text {
            atomic_file::replace_keeping_metadata(path, edited.as_bytes(), 0o600)
                .map_err(AdapterError::write)?;
            say(format!(
                "{} gives kube-apiserver {}",
                path.display(),
                flags.args().join(" ")
            ));
        }
        if switch.restart != crate::plan::Restart::None {
            restart_one(&switch.restart, "switch-signer")?;
        }
        Ok(())
    }
}

/// Writes keyrot's two patches into kubeadm's patches directory for the signer (dropping the
/// key flags the manifest has now, or the plan's when it has none left), or removes them for
/// the key files.
fn keep_kubeadm_patches(
    switch: &SignerSwitch,
    dir: &std::path::Path,
    text: &str,
    flags: &KeyFlags,
    say: &mut dyn FnMut(String),
) -> Result<(), AdapterError> {
    match flags {
        KeyFlags::Signer { socket } => {
            let patches = patches_for(switch, text, socket)?;
            crate::safe_dir::create_dir_all(dir, 0o700)
                .map_err(|e| AdapterError::permanent(e.to_string()))?;
            for (name, contents) in patches {
                let path = dir.join(name);
                atomic_file::write(&path, contents.as_bytes(), 0o600, Existing::Replace)
                    .map_err(AdapterError::write)?;
                say(format!("kubeadm patch {} written", path.display()));
            }
        }
        KeyFlags::KeyFiles { .. } => {
            for name in [KUBEADM_PATCH_DROP, KUBEADM_PATCH_ADD] {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => say(format!("kubeadm patch {} removed", path.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(AdapterError::io(&e, format!("{}: {e}", path.display())));
                    }
                }
            }
        }
    }
    Ok(())
}

/// keyrot's kubeadm patches for the signer: they drop the key flags the manifest `text` has
/// now, or kubeadm's own when it has none left (switched already).
fn patches_for(
    switch: &SignerSwitch,
    text: &str,
    socket: &std::path::Path,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    let mut dropped = key_file_args(&switch.file, text)
        .map_err(|e| AdapterError::permanent(format!("{}: {e}", switch.path.display())))?;
    if dropped.is_empty() {
        dropped = KeyFlags::KeyFiles {
            key_files: vec!["/etc/kubernetes/pki/sa.pub".into()],
            signing_key_file: "/etc/kubernetes/pki/sa.key".into(),
        }
        .args();
    }
    Ok(kubeadm_patches(&dropped, socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_the_editor_refuses_gets_no_kubeadm_patches() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("kube-apiserver.yaml");
        // A flow-style command list: the editor leaves such a manifest to a person.
        let text = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    \
                    command: [kube-apiserver, --service-account-key-file=/etc/kubernetes/pki/sa.pub]\n";
        std::fs::write(&manifest, text).unwrap();
        let patches = dir.path().join("patches");
        let plan_text = format!(
            "cluster: c\nflavour: kubeadm\nissuer: {{ url: \"https://oidc.example.com/c\" }}\n\
             targets: [{{ name: web, localDirectory: /var/www/oidc }}]\n\
             apiserver: {{ restart: externalSigner }}\n\
             signer:\n  socket: /run/keyrot/signer.sock\n  switch:\n    \
             flags: {{ kubeadmManifest: {} }}\n    kubeadmPatches: {}\n",
            manifest.display(),
            patches.display()
        );
        let plan =
            crate::plan::parse(std::path::Path::new("/etc/keyrot/plan.yaml"), &plan_text).unwrap();
        let mut said = Vec::new();
        let error = FlagFileSwitch::new(&plan)
            .switch_key_flags(KeyMode::Signer, &mut |line| said.push(line))
            .unwrap_err();
        assert!(
            error.message.contains("kube-apiserver.yaml"),
            "{}",
            error.message
        );
        assert!(
            !patches.exists(),
            "patches written for a switch that did not happen"
        );
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
        assert!(said.is_empty(), "{said:?}");
    }
}
