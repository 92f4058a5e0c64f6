//! Which login session an event belongs to, and where it happened.
//!
//! Audit session ids are the kernel's, numbered from 1 again at every boot, and every host
//! numbers its own: an id alone names nothing in a fleet's store or in a spool that outlived a
//! reboot. A session is (host, boot id, audit session id) — a [`SessionKey`] — and every event
//! carries the host and boot it was recorded on ([`Origin`]), so the key can be formed from any
//! single event, in the spool, in ClickHouse and in every lookup.

use std::{fmt, str::FromStr, sync::Arc, sync::OnceLock};

use serde::{Deserialize, Serialize};

/// The host and boot a process runs on. A fact of the running process rather than state of a
/// pipeline stage (it cannot change while the process lives), so it is worked out once and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: Arc<str>,
    pub boot_id: Arc<str>,
}

impl Origin {
    /// This process's host and boot: `VIGIL_NODE_NAME` or the hostname, and the kernel's boot id.
    pub fn this_process() -> &'static Origin {
        static ORIGIN: OnceLock<Origin> = OnceLock::new();
        ORIGIN.get_or_init(|| Origin {
            host: host_name().into(),
            boot_id: boot_id().into(),
        })
    }
}

/// This host's name as events carry it: `VIGIL_NODE_NAME` when set (a container's own hostname
/// is its pod's; the DaemonSet passes the node's name), the system's hostname otherwise.
pub fn host_name() -> String {
    if let Some(node) = std::env::var("VIGIL_NODE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return node.trim().to_string();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): audit session ids restart at each boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One login session: host, boot and the kernel's audit session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    pub host: Arc<str>,
    pub boot_id: Arc<str>,
    pub session: u32,
}

/// How many characters of a boot id a short session id shows (as git shows commits).
pub const BOOT_ID_SHORT: usize = 8;

/// The first characters of a boot id, for display; `-` when the boot is unknown (records
/// written before boot ids were kept).
pub fn short_boot(boot_id: &str) -> &str {
    match boot_id.get(..BOOT_ID_SHORT.min(boot_id.len())) {
        Some("") | None => "-",
        Some(s) => s,
    }
}

impl fmt::Display for SessionKey {
    /// `host/boot/session` with the boot id cut short: what `vigil session` takes back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.host,
            short_boot(&self.boot_id),
            self.session
        )
    }
}

/// A session as a person names it: `7`, `3f2a9c1b/7` or `web-1/3f2a9c1b/7` (with `--host` and
/// `--boot` as the other way to say the same). What it leaves out, the store fills in when only
/// one session fits (see `resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSelector {
    pub session: u32,
    pub host: Option<String>,
    /// A prefix of the boot id (`-` selects sessions whose boot is unknown).
    pub boot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("`{0}` is not a session: give its id (7), boot/id (3f2a9c1b/7) or host/boot/id")]
    Malformed(String),
    #[error("`{given}` names the {what} `{part}` but --{what} says `{flag}`")]
    Conflict {
        given: String,
        what: &'static str,
        part: String,
        flag: String,
    },
}

impl FromStr for SessionSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SelectorError::Malformed(s.escape_debug().to_string());
        let parts: Vec<&str> = s.split('/').collect();
        let (host, boot, id) = match parts.as_slice() {
            [id] => (None, None, *id),
            [boot, id] => (None, Some(*boot), *id),
            [host, boot, id] => (Some(*host), Some(*boot), *id),
            _ => return Err(malformed()),
        };
        let session = id.parse::<u32>().map_err(|_| malformed())?;
        let boot_ok = |b: &str| {
            b == "-" || (!b.is_empty() && b.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'))
        };
        if boot.is_some_and(|b| !boot_ok(b)) || host.is_some_and(str::is_empty) {
            return Err(malformed());
        }
        Ok(SessionSelector {
            session,
            host: host.map(str::to_string),
            boot: boot.map(|b| b.to_ascii_lowercase()),
        })
    }
}

impl SessionSelector {
    /// Adds `--host` and `--boot` to what the id itself says; they must not disagree.
    pub fn with_flags(
        mut self,
        given: &str,
        host: Option<String>,
        boot: Option<String>,
    ) -> Result<Self, SelectorError> {
        for (what, part, flag) in [
            ("host", &mut self.host, host),
            ("boot", &mut self.boot, boot.map(|b| b.to_ascii_lowercase())),
        ] {
            match (part.as_ref(), flag) {
                (Some(p), Some(f)) if *p != f => {
                    return Err(SelectorError::Conflict {
                        given: given.to_string(),
                        what,
                        part: p.clone(),
                        flag: f,
                    })
                }
                (None, Some(f)) => *part = Some(f),
                _ => {}
            }
        }
        Ok(self)
    }

    /// Whether `key` is a session this selector names.
    pub fn matches(&self, key: &SessionKey) -> bool {
        key.session == self.session
            && self.host.as_deref().is_none_or(|h| *key.host == *h)
            && self.boot.as_deref().is_none_or(|b| match b {
                "-" => key.boot_id.is_empty(),
                prefix => key.boot_id.starts_with(prefix),
            })
    }
}

impl fmt::Display for SessionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.host {
            write!(f, "{h}/")?;
        }
        match (&self.boot, &self.host) {
            (Some(b), _) => write!(f, "{b}/")?,
            (None, Some(_)) => write!(f, "*/")?,
            _ => {}
        }
        write!(f, "{}", self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, boot: &str, session: u32) -> SessionKey {
        SessionKey {
            host: host.into(),
            boot_id: boot.into(),
            session,
        }
    }

    #[test]
    fn a_key_prints_as_a_selector_that_names_it_again() {
        let k = key("web-1", "3f2a9c1b-77aa-4d2e-9f00-0123456789ab", 7);
        assert_eq!(k.to_string(), "web-1/3f2a9c1b/7");
        let sel: SessionSelector = k.to_string().parse().unwrap();
        assert!(sel.matches(&k));
        assert!(!sel.matches(&key("web-1", "0badf00d-0000", 7)));
        assert!(!sel.matches(&key("web-2", "3f2a9c1b-77aa", 7)));
        assert_eq!(key("h", "", 3).to_string(), "h/-/3");
        assert!("h/-/3"
            .parse::<SessionSelector>()
            .unwrap()
            .matches(&key("h", "", 3)));
    }

    #[test]
    fn short_forms_leave_the_rest_open() {
        let sel: SessionSelector = "7".parse().unwrap();
        assert!(sel.matches(&key("a", "b0", 7)) && sel.matches(&key("z", "", 7)));
        assert!(!sel.matches(&key("a", "b0", 8)));
        let sel: SessionSelector = "B0/7".parse().unwrap();
        assert!(sel.matches(&key("a", "b0aa", 7)) && !sel.matches(&key("a", "c0", 7)));
    }

    #[test]
    fn malformed_selectors_and_conflicting_flags_are_refused() {
        for bad in [
            "",
            "x",
            "7/",
            "/7",
            "zz/7",
            "a/b/c/7",
            "-1",
            "h//7",
            "\u{1b}[2J/7",
        ] {
            assert!(bad.parse::<SessionSelector>().is_err(), "{bad:?}");
        }
        let sel: SessionSelector = "web-1/ab/7".parse().unwrap();
        assert!(sel
            .clone()
            .with_flags("web-1/ab/7", Some("web-2".into()), None)
            .is_err());
        let sel = sel
            .with_flags("web-1/ab/7", Some("web-1".into()), None)
            .unwrap();
        assert_eq!(sel.host.as_deref(), Some("web-1"));
        let sel = "7"
            .parse::<SessionSelector>()
            .unwrap()
            .with_flags("7", None, Some("AB".into()))
            .unwrap();
        assert_eq!(sel.boot.as_deref(), Some("ab"));
    }
}
