//! The tamper-evident trail: a host key, signed checkpoints of the spool's hash chain, and
//! `vigil verify`, which checks a spool or ClickHouse against them.
//!
//! What it proves, and to whom: every record carries the chain of all records before it in its
//! epoch (see `crate::spool::frame`), and at start, at stop and every minute the daemon signs
//! the chain's value with its host key. Once a checkpoint has left the host (shipped to
//! ClickHouse, whose daemon user may only insert, or posted to a webhook), nobody can change,
//! remove or reorder a record before it without `vigil verify` saying where: not ClickHouse's
//! other writers (they lack the host's key), not root on the host (the checkpoint is already
//! out of reach). What root on the host *can* do is rewrite what has not left it yet — at most
//! the records since the last shipped checkpoint — or stop the daemon; the first shows as a
//! chain that disagrees with what was shipped, the second as a host whose heartbeats stop.

pub mod key;
pub mod verify;

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

pub use key::{HostKey, KeyError, PublicKey};

use crate::event::CheckpointEvent;

/// The bytes a checkpoint's signature covers: every field but the signature, with the host it
/// was written on and its time, so that a checkpoint cannot be replayed under another host,
/// moment or position.
pub fn checkpoint_message(host: &str, time_ns: i64, c: &CheckpointEvent) -> Vec<u8> {
    let counters = serde_json::to_string(&c.counters).unwrap_or_default();
    format!(
        "vigil-checkpoint-v1\nhost={host}\ntime_ns={time_ns}\nreason={}\nepoch={}\ncovers_seq={}\n\
         chain={}\nkey={}\nepoch_began={}\ncounters={counters}\n",
        c.reason,
        c.epoch,
        c.covers_seq
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        c.chain,
        c.key,
        c.epoch_began.as_deref().unwrap_or(""),
    )
    .into_bytes()
}

/// What signs the spool's checkpoints: the host key and the names it signs under.
pub struct Signer {
    pub key: HostKey,
    pub host: String,
}

impl Signer {
    /// Fills in `c.key` and `c.signature` for a checkpoint written at `time_ns`.
    pub fn sign(&self, time_ns: i64, c: &mut CheckpointEvent) {
        use base64::Engine as _;
        c.key = self.key.public().to_string();
        let message = checkpoint_message(&self.host, time_ns, c);
        c.signature = base64::engine::general_purpose::STANDARD.encode(self.key.sign(&message));
    }
}

/// Why a checkpoint's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("its key is not an Ed25519 key in Vigil's form ({0})")]
    BadKey(String),
    #[error("its signature is not 64 bytes of base64")]
    BadSignature,
    #[error("the signature does not match its contents")]
    Mismatch,
}

/// Checks `c`'s signature against the key it names (whether that key is the host's is the
/// caller's question).
pub fn check_signature(
    host: &str,
    time_ns: i64,
    c: &CheckpointEvent,
) -> Result<(), SignatureError> {
    use base64::Engine as _;
    let key = PublicKey::parse(&c.key).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&c.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(SignatureError::BadSignature)?;
    key.verify(&checkpoint_message(host, time_ns, c), &sig)
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

/// `integrity:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// The host key; null: `host-key.pem` beside the spool directory (not in it: a spool
    /// removed with its key would let a new key pass for the host's).
    pub key_file: Option<PathBuf>,
    /// How often the daemon signs a heartbeat checkpoint with its counters.
    pub checkpoint_interval_ms: u64,
    /// Public keys pinned by host name, for `vigil verify` (ClickHouse's `host_keys`, written
    /// by `vigil db register-key`, is the other source).
    pub trusted_keys: BTreeMap<String, String>,
    /// `vigil verify` reports a host silent when its last checkpoint is older than this.
    pub silent_after_ms: u64,
}

impl IntegrityConfig {
    pub fn key_path(&self, spool_dir: &std::path::Path) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| {
            let parent = spool_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            parent.join("host-key.pem")
        })
    }

    /// What is wrong with it, by key.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(100..=60_000).contains(&self.checkpoint_interval_ms) {
            out.push((
                "integrity.checkpoint_interval_ms".into(),
                format!(
                    "{} must be between 100 and 60000 (a checkpoint at least every minute)",
                    self.checkpoint_interval_ms
                ),
            ));
        }
        if self.silent_after_ms < 2 * self.checkpoint_interval_ms {
            out.push((
                "integrity.silent_after_ms".into(),
                format!(
                    "{} must be at least twice integrity.checkpoint_interval_ms",
                    self.silent_after_ms
                ),
            ));
        }
        for (host, key) in &self.trusted_keys {
            if let Err(e) = PublicKey::parse(key) {
                out.push((format!("integrity.trusted_keys.{host}"), e.to_string()));
            }
        }
        out
    }
}

/// Counters a heartbeat carries, by name.
pub type Counters = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CheckpointReason;

    fn checkpoint() -> CheckpointEvent {
        CheckpointEvent {
            reason: CheckpointReason::Heartbeat,
            epoch: "00".repeat(16),
            covers_seq: Some(41),
            chain: "ab".repeat(32),
            key: String::new(),
            signature: String::new(),
            epoch_began: None,
            counters: [("written".to_string(), 42)].into(),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let signer = Signer {
            key: HostKey::generate().unwrap(),
            host: "web-1".into(),
        };
        let mut c = checkpoint();
        signer.sign(1_000, &mut c);
        assert_eq!(check_signature("web-1", 1_000, &c), Ok(()));
        // Another host's name, another time, another position, other counters: all refused.
        assert_eq!(
            check_signature("web-2", 1_000, &c),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check_signature("web-1", 1_001, &c),
            Err(SignatureError::Mismatch)
        );
        let mut moved = c.clone();
        moved.covers_seq = Some(40);
        assert_eq!(
            check_signature("web-1", 1_000, &moved),
            Err(SignatureError::Mismatch)
        );
        let mut counted = c.clone();
        counted.counters.insert("written".into(), 1);
        assert_eq!(
            check_signature("web-1", 1_000, &counted),
            Err(SignatureError::Mismatch)
        );
        // Another key's signature under this key's name.
        let other = Signer {
            key: HostKey::generate().unwrap(),
            host: "web-1".into(),
        };
        let mut forged = checkpoint();
        other.sign(1_000, &mut forged);
        forged.key = c.key.clone();
        assert_eq!(
            check_signature("web-1", 1_000, &forged),
            Err(SignatureError::Mismatch)
        );
    }
}
