//! The session model: a login session is identified by host, boot id and audit session id. The
//! tracker turns the event stream into `session_start` (who, from where, how they came in) and
//! `session_end` (when its last process exits, with what it did) events.

use std::collections::{HashMap, HashSet};

use crate::{
    decode::daemon_event,
    directory::LiveDirectory,
    event::{
        Ancestor, Event, EventBody, SessionCounts, SessionEndEvent, SessionEntry,
        SessionStartEvent, SshOrigin,
    },
    sshd_log::SshdAuthLog,
};

/// How the session was entered, from the processes above its first one.
pub fn entry_kind(ancestry: &[Ancestor], in_container: bool) -> SessionEntry {
    let has = |names: &[&str]| ancestry.iter().any(|a| names.contains(&a.name.as_str()));
    if has(&["sshd", "sshd-session"]) {
        SessionEntry::Ssh
    } else if has(&["cron", "crond", "anacron"]) {
        SessionEntry::Cron
    } else if in_container {
        SessionEntry::Container
    } else if has(&["login", "agetty", "getty"]) {
        SessionEntry::Console
    } else if has(&["su"]) {
        SessionEntry::Su
    } else if has(&["sudo"]) {
        SessionEntry::Sudo
    } else {
        SessionEntry::Other
    }
}

/// `SSH_CONNECTION` (client address, client port, server address, server port) from a process's
/// environment.
pub fn ssh_origin(pid: u32) -> Option<SshOrigin> {
    let environ = procfs::process::Process::new(pid as i32)
        .ok()?
        .environ()
        .ok()?;
    let value = environ.get(std::ffi::OsStr::new("SSH_CONNECTION"))?;
    let mut parts = value.to_str()?.split_whitespace();
    let source_address = parts.next()?.to_string();
    let source_port = parts.next()?.parse().ok()?;
    let _server = parts.next()?;
    let server_port = parts.next()?.parse().ok()?;
    // With `ExposeAuthInfo yes`, sshd names a file holding the key it accepted.
    let exposed = environ
        .get(std::ffi::OsStr::new("SSH_USER_AUTH"))
        .and_then(|path| std::fs::read_to_string(path).ok());
    let key_fingerprint = exposed
        .as_deref()
        .and_then(crate::sshd_log::fingerprint_from_user_auth);
    Some(SshOrigin {
        source_address,
        source_port,
        server_port,
        auth_method: key_fingerprint.as_ref().map(|_| "publickey".to_string()),
        key_fingerprint,
    })
}

/// The client of an SSH session, from the TCP connection its nearest sshd ancestor holds (so it
/// does not depend on a short-lived shell still being there to read its environment).
pub fn ssh_origin_from_socket(ancestry: &[Ancestor]) -> Option<SshOrigin> {
    use procfs::process::FDTarget;
    // The TCP tables are read only for a session with an sshd above it, and once: reading them
    // walks every socket on the host, which a session started by cron or a container's
    // entrypoint must not pay for (this runs in the enrich stage).
    let mut tcp: Option<Vec<procfs::net::TcpNetEntry>> = None;
    for a in ancestry.iter().rev().filter(|a| a.name.starts_with("sshd")) {
        let Ok(process) = procfs::process::Process::new(a.pid as i32) else {
            continue;
        };
        let Ok(fds) = process.fd() else { continue };
        let inodes: HashSet<u64> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect();
        if inodes.is_empty() {
            continue;
        }
        let tcp = tcp.get_or_insert_with(|| {
            procfs::net::tcp()
                .unwrap_or_default()
                .into_iter()
                .chain(procfs::net::tcp6().unwrap_or_default())
                .collect()
        });
        if let Some(conn) = tcp
            .iter()
            .find(|c| inodes.contains(&c.inode) && c.state == procfs::net::TcpState::Established)
        {
            let remote = conn.remote_address;
            let ip = match remote.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(std::net::IpAddr::V4)
                    .unwrap_or(std::net::IpAddr::V6(v6)),
                v4 => v4,
            };
            return Some(SshOrigin {
                source_address: ip.to_string(),
                source_port: remote.port(),
                server_port: conn.local_address.port(),
                auth_method: None,
                key_fingerprint: None,
            });
        }
    }
    None
}

/// A process of a session as /proc shows it when the session is first seen.
struct Member {
    ppid: u32,
    /// Effective or real uid 0 (from `status`: the owner of `/proc/<pid>` is root for every
    /// process that is not dumpable).
    root: bool,
    /// Effective uid 0 under another real uid: a set-uid-root program run by a user (`sudo`,
    /// `su`, a set-uid copy of a shell).
    setuid_root: bool,
}

/// Processes now in audit session `session` (read from /proc).
///
/// Run at the first event of every session, over every process of the host: each process's
/// `sessionid` is read through one reused path and buffer, and `procfs` opens only the
/// members. (`procfs::all_processes` opens and stats each process's directory first, two
/// system calls more per process; with a short session every few tens of milliseconds, as
/// automation over SSH makes, the scan was 3% of the daemon.)
fn live_members(session: u32) -> HashMap<u32, Member> {
    use std::{fmt::Write as _, io::Read as _};
    let mut members = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return members;
    };
    let mut path = String::with_capacity(32);
    let mut text = String::with_capacity(16);
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        path.clear();
        let _ = write!(path, "/proc/{pid}/sessionid");
        text.clear();
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
        if read.is_err() || text.trim().parse::<u32>().ok() != Some(session) {
            continue;
        }
        let Ok(status) = procfs::process::Process::new(pid as i32).and_then(|p| p.status()) else {
            continue; // gone meanwhile
        };
        members.insert(
            pid,
            Member {
                ppid: status.ppid as u32,
                root: status.euid == 0 || status.ruid == 0,
                setuid_root: status.euid == 0 && status.ruid != 0,
            },
        );
    }
    members
}

/// Whether root was gained inside the session before the daemon saw it (`sudo -i` started while
/// the daemon was not running): a process of the session runs set-uid root, or as root below
/// one of the session's that does not. Root processes with no unprivileged process of the
/// session above them are the login machinery (sshd's privileged half, PAM's helpers) or a
/// root login, which its login uid says.
fn gained_root_unseen(members: &HashMap<u32, Member>) -> bool {
    if members.values().any(|m| m.setuid_root) {
        return true;
    }
    members.iter().filter(|(_, m)| m.root).any(|(_, m)| {
        let mut at = m.ppid;
        // Bounded: a pid cycle is impossible in one snapshot of a tree, but /proc is read a
        // process at a time.
        for _ in 0..members.len() {
            match members.get(&at) {
                Some(up) if !up.root => return true,
                Some(up) => at = up.ppid,
                None => return false,
            }
        }
        false
    })
}

struct Session {
    live: HashSet<u32>,
    start_ns: i64,
    counts: SessionCounts,
}

/// Sessions of this host and boot by audit session id: one daemon lives within one boot, so the
/// id alone keys them here (the events it stamps carry the rest of the key).
pub struct SessionTracker {
    sessions: HashMap<u32, Session>,
    directory: LiveDirectory,
    auth_log: SshdAuthLog,
}

impl SessionTracker {
    pub fn new(directory: LiveDirectory, auth_log: SshdAuthLog) -> Self {
        SessionTracker {
            sessions: HashMap::new(),
            directory,
            auth_log,
        }
    }

    /// Where an SSH session came from and how it authenticated: the environment of its process
    /// (or the connection its sshd holds), completed from sshd's log.
    fn ssh(&mut self, pid: u32, ancestry: &[Ancestor]) -> Option<SshOrigin> {
        let mut origin = ssh_origin(pid).or_else(|| ssh_origin_from_socket(ancestry))?;
        if origin.key_fingerprint.is_none() {
            if let Some(accepted) = self
                .auth_log
                .accepted(&origin.source_address, origin.source_port)
            {
                origin.auth_method = Some(accepted.method);
                origin.key_fingerprint = accepted.key_fingerprint;
            }
        }
        Some(origin)
    }

    /// Called for every event, before it goes out: may emit a `session_start` before it.
    /// `ancestry` is the ancestry of the event's process.
    pub fn before(
        &mut self,
        event: &Event,
        ancestry: impl FnOnce() -> Vec<Ancestor>,
        out: &mut Vec<Event>,
    ) {
        let Some(sid) = event.process.sessionid else {
            return;
        };
        if matches!(event.body, EventBody::Loss(_)) || self.sessions.contains_key(&sid) {
            return;
        }
        let ancestry = ancestry();
        let members = live_members(sid);
        let root_when_seen = gained_root_unseen(&members);
        let mut live: HashSet<u32> = members.into_keys().collect();
        live.insert(event.process.pid);
        let p = &event.process;
        let ssh = self.ssh(p.pid, &ancestry);
        let identity = p
            .login_user
            .as_deref()
            .and_then(|u| self.directory.get(u))
            .map(|i| (*i).clone());
        let start = SessionStartEvent {
            session: sid,
            loginuid: p.loginuid.unwrap_or(u32::MAX),
            login_user: p.login_user.as_deref().map(str::to_string),
            entry: entry_kind(&ancestry, p.container_id.is_some()),
            ssh,
            identity,
            ancestry,
            root_when_seen,
        };
        self.sessions.insert(
            sid,
            Session {
                live,
                start_ns: event.time_ns,
                counts: SessionCounts::default(),
            },
        );
        out.push(stamped(event, EventBody::SessionStart(start)));
    }

    /// The session (of those followed) whose processes include `pid`, by the execs, forks and
    /// exits seen in it.
    pub fn session_of_process(&self, pid: u32) -> Option<u32> {
        self.sessions
            .iter()
            .find(|(_, s)| s.live.contains(&pid))
            .map(|(sid, _)| *sid)
    }

    /// Called for every event after it went out: counts it, follows the session's processes, and
    /// emits `session_end` when the last one exits.
    pub fn after(&mut self, event: &Event, out: &mut Vec<Event>) {
        let Some(sid) = event.process.sessionid else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.counts.count(event);
        match &event.body {
            EventBody::Exec(_) => {
                s.live.insert(event.process.pid);
            }
            EventBody::Fork(f) => {
                s.live.insert(f.child_pid);
            }
            EventBody::Exit(_) => {
                s.live.remove(&event.process.pid);
                if s.live.is_empty() {
                    let duration_ms = ((event.time_ns - s.start_ns).max(0) / 1_000_000) as u64;
                    let end = SessionEndEvent {
                        session: sid,
                        duration_ms,
                        counts: s.counts.clone(),
                    };
                    self.sessions.remove(&sid);
                    out.push(stamped(event, EventBody::SessionEnd(end)));
                }
            }
            _ => {}
        }
    }
}

/// A session event at the time of `at`, attributed to its process. That time is the event's
/// own, not a stand-in: `session_start` says when the session was first seen (its first event,
/// which it precedes in every timeline) and by which process, `session_end` when its last
/// process exited, and which one.
fn stamped(at: &Event, body: EventBody) -> Event {
    let mut e = daemon_event(at.process.clone(), body);
    e.mono_ns = at.mono_ns;
    e.time_ns = at.time_ns;
    e.time = at.time.clone();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(u32, u32, bool)]) -> HashMap<u32, Member> {
        list.iter()
            .map(|&(pid, ppid, root)| {
                let setuid_root = false;
                (
                    pid,
                    Member {
                        ppid,
                        root,
                        setuid_root,
                    },
                )
            })
            .collect()
    }

    /// The scan finds this process in its own session, with its parent, and not in another.
    #[test]
    fn the_scan_finds_the_sessions_processes() {
        let own: u32 = std::fs::read_to_string("/proc/self/sessionid")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let me = std::process::id();
        let found = live_members(own);
        let m = found.get(&me).expect("this process is in its own session");
        assert_eq!(m.ppid, std::os::unix::process::parent_id());
        assert!(!live_members(own.wrapping_add(1)).contains_key(&me));
    }

    #[test]
    fn root_below_an_unprivileged_process_of_the_session_is_root_gained_unseen() {
        // sshd's privileged half (root, its parent outside the session) → the user's sshd →
        // bash → sudo → a root shell, all before the daemon looked.
        let sudo_shell = members(&[
            (10, 1, true),
            (11, 10, false),
            (12, 11, false),
            (13, 12, true),
            (14, 13, true),
        ]);
        assert!(gained_root_unseen(&sudo_shell));
        // The same login without sudo: the root process is the login machinery.
        assert!(!gained_root_unseen(&members(&[
            (10, 1, true),
            (11, 10, false),
            (12, 11, false)
        ])));
        // A root login: root throughout, which its login uid already says.
        assert!(!gained_root_unseen(&members(&[
            (10, 1, true),
            (11, 10, true)
        ])));
        // sudo itself, its shell having exec'd it: set-uid root under the user's real uid.
        let mut sudo = members(&[(10, 1, true), (11, 10, true)]);
        sudo.get_mut(&11).unwrap().setuid_root = true;
        assert!(gained_root_unseen(&sudo));
        // A parent chain that loops (pids reused between reads) ends.
        assert!(!gained_root_unseen(&members(&[(5, 6, true), (6, 5, true)])));
    }

    fn chain(names: &[&str]) -> Vec<Ancestor> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Ancestor {
                pid: i as u32 + 1,
                name: (*n).into(),
            })
            .collect()
    }

    #[test]
    fn entry_kinds_from_ancestry() {
        assert_eq!(
            entry_kind(&chain(&["systemd", "sshd", "sshd", "bash"]), false),
            SessionEntry::Ssh
        );
        assert_eq!(
            entry_kind(&chain(&["systemd", "cron", "sh"]), false),
            SessionEntry::Cron
        );
        assert_eq!(
            entry_kind(&chain(&["systemd", "login", "bash"]), false),
            SessionEntry::Console
        );
        assert_eq!(
            entry_kind(&chain(&["containerd-shim", "sh"]), true),
            SessionEntry::Container
        );
        assert_eq!(
            entry_kind(&chain(&["systemd", "bash"]), false),
            SessionEntry::Other
        );
    }
}
