//! Credentials at rest: AES-256-GCM (RustCrypto's `aes-gcm`) under one deployment key. A sealed
//! value is `v1:` + hex(nonce ‖ ciphertext ‖ tag), bound to its owner (the connection id) as
//! associated data, so a ciphertext copied onto another connection does not open. The key
//! comes from `TALLY_SECRET_KEY` (64 hex characters); on the embedded defaults it is generated
//! once into the data dir with mode 0600.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use std::path::Path;

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("a sealed secret is malformed or was sealed under another key or owner")]
    Unreadable,
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// Seals and opens secrets. Its `Debug` never shows the key.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// From 64 hex characters.
    pub fn from_hex(key: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(key.trim()).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        Ok(Self { cipher })
    }

    /// The key in `path`, generated (mode 0600) the first time.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let fail = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(hex_key) => Self::from_hex(&hex_key),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_private(path, hex::encode(key).as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                Self::from_hex(&hex::encode(key))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Encrypts `plain` for `owner`.
    pub fn seal(&self, owner: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain,
            aad: owner.as_bytes(),
        };
        // AES-GCM encryption of an in-memory buffer cannot fail for inputs under 64 GiB.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", hex::encode(out))
    }

    /// Decrypts a value sealed for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SecretError::Unreadable)?;
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: body,
            aad: owner.as_bytes(),
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::Unreadable)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_owner_and_key() {
        let a = SecretBox::from_hex(&"11".repeat(32)).expect("key");
        let b = SecretBox::from_hex(&"22".repeat(32)).expect("key");
        let sealed = a.seal("conn-1", b"hunter2");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2") && !sealed.contains(&hex::encode("hunter2")));
        assert_ne!(
            sealed,
            a.seal("conn-1", b"hunter2"),
            "a fresh nonce every time"
        );
        assert_eq!(a.open("conn-1", &sealed).expect("open"), b"hunter2");
        assert!(a.open("conn-2", &sealed).is_err(), "bound to its owner");
        assert!(b.open("conn-1", &sealed).is_err(), "bound to its key");
        assert!(a.open("conn-1", "v1:00").is_err());
        assert!(a.open("conn-1", "garbage").is_err());
        assert!(SecretBox::from_hex("abcd").is_err());
        assert!(format!("{a:?}") == "SecretBox(..)");
    }

    #[cfg(unix)]
    #[test]
    fn the_embedded_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let first = SecretBox::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("c", b"x");
        let again = SecretBox::load_or_create(&path).expect("load");
        assert_eq!(again.open("c", &sealed).expect("same key"), b"x");
    }
}
