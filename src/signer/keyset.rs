//! The key set the signer serves, read from the key files a file-mode kube-apiserver would read.
//!
//! The rotation writes the files (the bundle, the signing key file); the signer only reads them,
//! so a rotation in signer mode is the same sequence of file writes as in file mode, and the
//! files stay the one source of truth across a switch in either direction.
//!
//! Which keys are listed, and how:
//! - every key of the verification bundle and the extra verification files, in flag order
//!   (duplicates once), under kube's kid, with `exclude_from_oidc_discovery = false`: exactly
//!   the keys a file-mode apiserver puts in `/openid/v1/jwks`, which is also what keyrot
//!   publishes upstream and what its gates compare against;
//! - the controller manager's key (`--service-account-private-key-file`), when it is in none of
//!   those files, as verify-only (`exclude_from_oidc_discovery = true`): the legacy Secret tokens
//!   it signs keep verifying, it stays out of discovery, and the signer never signs with it.
//!
//! The active key is the signing key file's. It must be listed and not verify-only, otherwise
//! the set is refused and the previous one stays in use: every token it signed would fail.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::keys::reader::KeyFileError;
use crate::keys::{SigningKey, SigningKeyError, load_verification_keys};
use crate::plan::Plan;
use crate::state::StateStore;

/// The files the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// `--service-account-key-file` values in flag order: the bundle, then the extra files.
    pub verification: Vec<PathBuf>,
    /// `--service-account-signing-key-file`: the active key.
    pub signing_key: PathBuf,
    /// kube-controller-manager's `--service-account-private-key-file`, when the plan has one.
    pub legacy_key: Option<PathBuf>,
    /// keyrot's state directory: whether a rotation is in progress sets the refresh hint.
    pub state_dir: PathBuf,
}

impl Sources {
    pub fn of(plan: &Plan) -> Sources {
        let apiserver = &plan.apiserver;
        Sources {
            verification: std::iter::once(&apiserver.verification_bundle)
                .chain(&apiserver.extra_verification_files)
                .cloned()
                .collect(),
            signing_key: apiserver.signing_key_file.clone(),
            legacy_key: plan
                .controller_manager
                .as_ref()
                .map(|cm| cm.private_key_file.clone()),
            state_dir: plan.state_dir.clone(),
        }
    }

    /// Every file the set is made of: the key files and the state file (whether a rotation is
    /// in progress).
    pub fn files(&self) -> Vec<PathBuf> {
        let state = StateStore::new(&self.state_dir).state_path();
        self.verification
            .iter()
            .chain([&self.signing_key])
            .chain(&self.legacy_key)
            .chain([&state])
            .cloned()
            .collect()
    }

    /// What identifies the files' current versions: every write keyrot makes is a rename, which
    /// gives the path a new inode, and an edit in place changes the size or the mtime.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(
            self.files()
                .iter()
                .map(|path| {
                    std::fs::metadata(path).ok().map(|m| {
                        [
                            m.dev(),
                            m.ino(),
                            m.size(),
                            m.mtime() as u64,
                            m.mtime_nsec() as u64,
                        ]
                    })
                })
                .collect(),
        )
    }
}

/// See [`Sources::fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<[u64; 5]>>);

/// One key as FetchKeys lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub kid: String,
    /// PKIX DER, as `x509.ParsePKIXPublicKey` reads it.
    pub spki_der: Vec<u8>,
    /// `exclude_from_oidc_discovery`: verifies, never signs, not in discovery.
    pub verify_only: bool,
}

/// Why the key files do not make a key set the signer may serve.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error(transparent)]
    Verification(#[from] KeyFileError),
    #[error(transparent)]
    Signing(#[from] SigningKeyError),
    #[error("controller manager's key: {0}")]
    Legacy(SigningKeyError),
    #[error(
        "the signing key {kid} in {path} is not in the verification files: every token it \
         signed would be rejected, so the signer does not use it"
    )]
    ActiveNotListed { kid: String, path: PathBuf },
}

/// What the files hold now.
#[derive(Debug)]
pub struct KeyFiles {
    pub keys: Vec<ListedKey>,
    pub active: SigningKey,
    /// A rotation is in progress in keyrot's state (or the state cannot be read: the shorter
    /// hint is the safe side).
    pub rotating: bool,
}

impl KeyFiles {
    /// Reads every source with kube-apiserver's rules.
    pub fn read(sources: &Sources) -> Result<KeyFiles, KeySetError> {
        let loaded = load_verification_keys(&sources.verification)?;
        let mut keys: Vec<ListedKey> = Vec::new();
        for key in loaded.keys {
            if keys.iter().all(|k| k.kid != key.kid()) {
                keys.push(ListedKey {
                    kid: key.kid().to_string(),
                    spki_der: key.spki_der().to_vec(),
                    verify_only: false,
                });
            }
        }
        if let Some(path) = &sources.legacy_key
            && let Some(legacy) = read_legacy(path)?
            && keys.iter().all(|k| k.kid != legacy.kid())
        {
            keys.push(ListedKey {
                kid: legacy.kid().to_string(),
                spki_der: legacy.spki_der().to_vec(),
                verify_only: true,
            });
        }
        let active = SigningKey::from_pem_file(&sources.signing_key)?;
        let kid = active.public().kid();
        if !keys.iter().any(|k| k.kid == kid && !k.verify_only) {
            return Err(KeySetError::ActiveNotListed {
                kid: kid.to_string(),
                path: sources.signing_key.clone(),
            });
        }
        let rotating = StateStore::new(&sources.state_dir)
            .read()
            .map(|state| state.is_some_and(|s| s.rotation.as_ref().is_some_and(refreshes_often)))
            .unwrap_or(true);
        Ok(KeyFiles {
            keys,
            active,
            rotating,
        })
    }
}

/// Whether apiservers should fetch the set often while `rotation` is recorded: not while a next
/// key kept ready (`keepNextKey`, published and waiting for the schedule) stays as it is for
/// hours; nothing waits on an apiserver's refresh then.
fn refreshes_often(rotation: &crate::state::Rotation) -> bool {
    let ready = rotation.cause == crate::state::Cause::NextKey
        && rotation.phase == crate::phase::Phase::Publish
        && rotation.published_confirmed_at.is_some();
    !ready
}

/// A missing controller-manager key file means there is no legacy key to keep verifying.
fn read_legacy(path: &Path) -> Result<Option<crate::keys::VerificationKey>, KeySetError> {
    match SigningKey::from_pem_file(path) {
        Ok(key) => Ok(Some(key.public().clone())),
        Err(SigningKeyError::Read { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(KeySetError::Legacy(e)),
    }
}

/// The key set being served: the files' keys, the signing key with its header ready, and the
/// time the listed set last changed.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<ListedKey>,
    active: SigningKey,
    /// base64url (no padding) of `{"alg":..,"kid":..,"typ":"JWT"}` for the active key.
    header: String,
    pub rotating: bool,
    /// FetchKeys' `data_timestamp`: changes exactly when `keys` does, since kube-apiserver
    /// re-renders its discovery documents only when the timestamp, count, order or exclude flags
    /// differ.
    pub data_timestamp: SystemTime,
}

impl KeySet {
    /// The set `files` make, stamped `now` if its listing differs from `previous`'s, else with
    /// `previous`'s stamp. A new stamp is always later than the previous one, even with a clock
    /// that stepped back, so that every change reads as one.
    pub fn stamp(files: KeyFiles, previous: Option<&KeySet>, now: SystemTime) -> KeySet {
        let data_timestamp = match previous {
            Some(previous) if previous.keys == files.keys => previous.data_timestamp,
            Some(previous) if now <= previous.data_timestamp => {
                previous.data_timestamp + Duration::from_micros(1)
            }
            _ => now,
        };
        let public = files.active.public();
        let header = serde_json::json!({
            "alg": public.alg().as_str(),
            "kid": public.kid(),
            "typ": "JWT",
        });
        KeySet {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            keys: files.keys,
            active: files.active,
            rotating: files.rotating,
            data_timestamp,
        }
    }

    pub fn active_kid(&self) -> &str {
        self.active.public().kid()
    }

    /// Signs `claims` (the JWT's base64url payload segment) with the active key: the header and
    /// the signature, both base64url without padding.
    pub fn sign(&self, claims: &str) -> Result<(String, String), crate::keys::SignError> {
        let signing_input = format!("{}.{claims}", self.header);
        let signature = self.active.sign_jws(signing_input.as_bytes())?;
        Ok((self.header.clone(), URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GenerateSpec;

    #[test]
    fn a_next_key_kept_ready_asks_apiservers_for_the_long_refresh_hint() {
        use crate::decision::{Action, apply};
        use crate::phase::Phase;
        use crate::state::{Cause, State};
        let plan = crate::plan::parse(
            Path::new("/etc/keyrot/plan.yaml"),
            "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://oidc.example.com\" }\n\
             targets: [{ name: web, localDirectory: /srv/www }]\n",
        )
        .unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut state = State::default();
        let start = |cause| Action::StartRotation {
            id: "r1".into(),
            cause,
            old_kid: "old".into(),
            bundle: vec!["old".into()],
        };
        apply(&mut state, &plan, &start(Cause::NextKey), at);
        let rotation = state.rotation.as_mut().unwrap();
        rotation.phase = Phase::Publish;
        assert!(refreshes_often(rotation), "not published yet");
        rotation.published_confirmed_at = Some(at);
        assert!(!refreshes_often(rotation), "ready: waits for the schedule");
        rotation.cause = Cause::Manual;
        assert!(refreshes_often(rotation), "released: promotion comes next");
    }

    fn files(keys: &[&SigningKey], active: SigningKey) -> KeyFiles {
        KeyFiles {
            keys: keys
                .iter()
                .map(|k| ListedKey {
                    kid: k.public().kid().to_string(),
                    spki_der: k.public().spki_der().to_vec(),
                    verify_only: false,
                })
                .collect(),
            active,
            rotating: false,
        }
    }

    fn key() -> SigningKey {
        SigningKey::generate(GenerateSpec::P256).unwrap()
    }

    #[test]
    fn the_timestamp_changes_exactly_when_the_listed_set_does() {
        let (c, n) = (key(), key());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let first = KeySet::stamp(files(&[&c], key()), None, t0);
        assert_eq!(first.data_timestamp, t0);
        // The same keys read again later, with another signing key: same stamp.
        let same = KeySet::stamp(
            files(&[&c], key()),
            Some(&first),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(same.data_timestamp, t0);
        let staged = KeySet::stamp(
            files(&[&c, &n], key()),
            Some(&same),
            t0 + Duration::from_secs(9),
        );
        assert_eq!(staged.data_timestamp, t0 + Duration::from_secs(9));
        // A clock stepped back still yields a later stamp for a changed set.
        let retired = KeySet::stamp(files(&[&n], key()), Some(&staged), t0);
        assert!(retired.data_timestamp > staged.data_timestamp);
    }

    #[test]
    fn the_header_has_exactly_alg_kid_and_typ() {
        let active = key();
        let kid = active.public().kid().to_string();
        let mut listed = files(&[&active], key());
        listed.active = active;
        let set = KeySet::stamp(listed, None, SystemTime::now());
        let (header, signature) = set.sign("e30").unwrap();
        let json = URL_SAFE_NO_PAD.decode(header).unwrap();
        let expected = format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT"}}"#);
        assert_eq!(String::from_utf8(json).unwrap(), expected);
        // P-256 r||s, not DER.
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 64);
    }
}
