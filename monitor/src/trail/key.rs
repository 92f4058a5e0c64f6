//! The host key: an Ed25519 key made at the daemon's first start, kept owner-only beside the
//! spool, whose public half an administrator registers (`vigil db register-key`) or pins in
//! `integrity.trusted_keys`. Stored as PKCS#8 PEM, so that standard tools read it.

use std::{fmt, os::unix::fs::PermissionsExt, path::Path, path::PathBuf};

use base64::Engine as _;
use ed25519_dalek::{
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
    Signer as _, SigningKey, VerifyingKey,
};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("host key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host key {path} is not an Ed25519 private key in PKCS#8 PEM: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("no randomness for a new host key: {0}")]
    Random(String),
    #[error("{0:?} is not a public key in the form ed25519:<base64 of 32 bytes>")]
    BadPublic(String),
}

/// A host's signing key.
pub struct HostKey {
    signing: SigningKey,
}

/// A host's public key, written `ed25519:<base64>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl HostKey {
    pub fn generate() -> Result<HostKey, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(HostKey {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// The key at `path`, made (owner-only) when there is none. A key file others can read is
    /// tightened, with a warning: anyone who read it could sign as this host.
    pub fn load_or_create(path: &Path) -> Result<(HostKey, bool), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the host key was readable by others; made owner-only (whoever read it \
                         can sign as this host: replace it and register the new one)"
                    );
                    crate::durable::private_file(path).map_err(io)?;
                }
                let signing =
                    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Malformed {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    })?;
                Ok((HostKey { signing }, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = HostKey::generate()?;
                let pem = key.signing.to_pkcs8_pem(Default::default()).map_err(|e| {
                    KeyError::Malformed {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    }
                })?;
                // A missing directory is made owner-only; an existing one is left as it is (it
                // may be shared: the key file itself is what must be private).
                if let Some(dir) = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty() && !d.exists())
                {
                    crate::durable::private_dir(dir).map_err(io)?;
                }
                crate::durable::write_atomic(path, pem.as_bytes()).map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key at `path`, which must exist (for tools: only the daemon makes keys).
    pub fn load_existing(path: &Path) -> Result<HostKey, KeyError> {
        if !path.exists() {
            return Err(KeyError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no host key yet: the daemon makes it at its first start",
                ),
            });
        }
        HostKey::load_or_create(path).map(|(key, _)| key)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::BadPublic(text.to_string());
        let b64 = text.trim().strip_prefix("ed25519:").ok_or_else(bad)?;
        let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }

    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_owner_only_and_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host.pem");
        let (made, created) = HostKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, created) = HostKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(made.public(), loaded.public());
        let text = made.public().to_string();
        assert_eq!(PublicKey::parse(&text).unwrap(), made.public());
        assert!(PublicKey::parse("ed25519:AAAA").is_err());
        assert!(PublicKey::parse(&text.replace("ed25519:", "rsa:")).is_err());
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = HostKey::load_or_create(&path).err().unwrap();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}
