//! SSH authentication facts from sshd's own log: the line sshd writes when a login succeeds,
//! `Accepted publickey for alice from 192.0.2.7 port 50022 ssh2: ED25519 SHA256:…`, gives the
//! method and the key's fingerprint for a client address and port — which the session knows from
//! the connection. The log files are followed from where they were last read, at the moment a
//! session asks (sshd writes the line before the session's first process starts).

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

use regex::Regex;

/// How sshd authenticated one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub user: String,
    pub method: String,
    /// `SHA256:…` of the key, for key-based methods.
    pub key_fingerprint: Option<String>,
}

/// On start, at most this much of each log's tail is read (sessions older than the daemon).
const INITIAL_TAIL: u64 = 1 << 20;
/// Logins remembered (oldest forgotten first).
const REMEMBERED: usize = 4096;
/// Longest read in one catch-up, so a huge log cannot stall the enrich stage.
const MAX_CATCH_UP: u64 = 8 << 20;

struct Followed {
    path: PathBuf,
    inode: u64,
    offset: u64,
    /// A line not yet terminated at the last read.
    partial: Vec<u8>,
}

pub struct SshdAuthLog {
    files: Vec<Followed>,
    by_peer: HashMap<(String, u16), Accepted>,
    order: VecDeque<(String, u16)>,
    line: Regex,
}

impl SshdAuthLog {
    pub fn new(paths: &[PathBuf]) -> Self {
        let files = paths
            .iter()
            .map(|p| {
                let (inode, len) = std::fs::metadata(p)
                    .map(|m| (m.ino(), m.len()))
                    .unwrap_or((0, 0));
                Followed {
                    path: p.clone(),
                    inode,
                    offset: len.saturating_sub(INITIAL_TAIL),
                    partial: Vec::new(),
                }
            })
            .collect();
        SshdAuthLog {
            files,
            by_peer: HashMap::new(),
            order: VecDeque::new(),
            // The format has been stable across OpenSSH releases; the fingerprint part is
            // present for publickey and hostbased.
            line: Regex::new(
                r"Accepted (\S+) for (\S+) from (\S+) port (\d+) ssh2(?:: (\S+) (SHA256:[A-Za-z0-9+/=]+))?",
            )
            .expect("constant regex"),
        }
    }

    /// The login accepted from `address`:`port`, reading what the logs gained since last time.
    pub fn accepted(&mut self, address: &str, port: u16) -> Option<Accepted> {
        self.catch_up();
        self.by_peer.get(&(address.to_string(), port)).cloned()
    }

    fn catch_up(&mut self) {
        let mut lines = Vec::new();
        for f in &mut self.files {
            let Ok(meta) = std::fs::metadata(&f.path) else {
                continue;
            };
            // Rotated or truncated: start the new file from its beginning.
            if meta.ino() != f.inode || meta.len() < f.offset {
                f.inode = meta.ino();
                f.offset = 0;
                f.partial.clear();
            }
            if meta.len() == f.offset {
                continue;
            }
            let Ok(mut file) = File::open(&f.path) else {
                continue;
            };
            if file.seek(SeekFrom::Start(f.offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            let Ok(n) = file.take(MAX_CATCH_UP).read_to_end(&mut buf) else {
                continue;
            };
            f.offset += n as u64;
            f.partial.extend_from_slice(&buf);
            if let Some(end) = f.partial.iter().rposition(|&b| b == b'\n') {
                let complete: Vec<u8> = f.partial.drain(..=end).collect();
                lines.push(complete);
            }
        }
        for chunk in lines {
            for line in String::from_utf8_lossy(&chunk).lines() {
                self.parse(line);
            }
        }
    }

    fn parse(&mut self, line: &str) {
        let Some(c) = self.line.captures(line) else {
            return;
        };
        let (Some(method), Some(user), Some(addr), Some(port)) =
            (c.get(1), c.get(2), c.get(3), c.get(4))
        else {
            return;
        };
        let Ok(port) = port.as_str().parse::<u16>() else {
            return;
        };
        let key = (addr.as_str().to_string(), port);
        if !self.by_peer.contains_key(&key) {
            self.order.push_back(key.clone());
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.by_peer.remove(&old);
                }
            }
        }
        self.by_peer.insert(
            key,
            Accepted {
                user: user.as_str().to_string(),
                method: method.as_str().to_string(),
                key_fingerprint: c.get(6).map(|m| m.as_str().to_string()),
            },
        );
    }
}

/// The fingerprint (`SHA256:` + unpadded base64 of the key blob's SHA-256, as ssh-keygen -l
/// prints it) of the public key sshd exposes in the file named by `SSH_USER_AUTH`
/// (`ExposeAuthInfo yes`): lines like `publickey ssh-ed25519 AAAA…`.
pub fn fingerprint_from_user_auth(text: &str) -> Option<String> {
    use base64::Engine;
    use sha2::Digest;
    let line = text.lines().find(|l| l.starts_with("publickey "))?;
    let blob = line.split_whitespace().nth(2)?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .ok()?;
    let digest = sha2::Sha256::digest(&blob);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_the_log_and_finds_logins_by_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut log = SshdAuthLog::new(std::slice::from_ref(&path));
        assert_eq!(log.accepted("192.0.2.7", 50022), None);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "Nov 25 10:00:00 host sshd[123]: Accepted publickey for alice from 192.0.2.7 port 50022 ssh2: ED25519 SHA256:abcDEF+/0123").unwrap();
        write!(
            f,
            "Nov 25 10:00:01 host sshd[124]: Accepted password for bob from 2001:db8::1 port 4"
        )
        .unwrap();
        let a = log.accepted("192.0.2.7", 50022).unwrap();
        assert_eq!(a.user, "alice");
        assert_eq!(a.method, "publickey");
        assert_eq!(a.key_fingerprint.as_deref(), Some("SHA256:abcDEF+/0123"));
        // The unterminated line is not taken until it is complete.
        assert_eq!(log.accepted("2001:db8::1", 4), None);
        writeln!(f, "4 ssh2").unwrap();
        let b = log.accepted("2001:db8::1", 44).unwrap();
        assert_eq!((b.method.as_str(), b.key_fingerprint), ("password", None));
        // Rotation: a new file under the same name is read from its start.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(
            &path,
            "sshd[9]: Accepted publickey for carol from 10.0.0.9 port 1 ssh2: RSA SHA256:xyz\n",
        )
        .unwrap();
        assert_eq!(log.accepted("10.0.0.9", 1).unwrap().user, "carol");
    }

    #[test]
    fn fingerprint_of_an_exposed_key_matches_ssh_keygen() {
        // ssh-keygen -lf on this key prints SHA256:xszA70znKwfakoCNhaII4WB+4CnzMaVX+8fjtL2v0Wg
        let auth = "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEiiYwHF3MVM890tD4NMPXSx2x03dQAfjdxCiPLfI/g\n";
        assert_eq!(
            fingerprint_from_user_auth(auth).as_deref(),
            Some("SHA256:xszA70znKwfakoCNhaII4WB+4CnzMaVX+8fjtL2v0Wg")
        );
        assert_eq!(fingerprint_from_user_auth("password\n"), None);
    }
}
