//! Who and what: host user names for numeric ids, and the process tree that gives every exec its
//! ancestry.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use crate::event::Ancestor;

/// How often `/etc/passwd` is checked for changes.
const PASSWD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Names of uids, cached, forgotten whenever `/etc/passwd` changes (NSS lookups, so LDAP and
/// sssd users resolve too).
pub struct UserNames {
    names: HashMap<u32, Option<String>>,
    passwd_mtime: Option<SystemTime>,
    checked: Instant,
}

impl Default for UserNames {
    fn default() -> Self {
        UserNames {
            names: HashMap::new(),
            passwd_mtime: passwd_mtime(),
            checked: Instant::now(),
        }
    }
}

fn passwd_mtime() -> Option<SystemTime> {
    std::fs::metadata("/etc/passwd")
        .and_then(|m| m.modified())
        .ok()
}

impl UserNames {
    pub fn name(&mut self, uid: u32) -> Option<String> {
        if self.checked.elapsed() >= PASSWD_CHECK_EVERY {
            self.checked = Instant::now();
            let now = passwd_mtime();
            if now != self.passwd_mtime {
                self.passwd_mtime = now;
                self.names.clear();
            }
        }
        self.names
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }
}

#[derive(Debug, Clone)]
struct Node {
    /// The parent at fork (kept when the kernel reparents an orphan: attribution follows who
    /// started it, not who adopted it).
    ppid: u32,
    name: String,
    exited: Option<Instant>,
}

/// Processes known from fork, exec and exit events, seeded from /proc at start.
#[derive(Default)]
pub struct ProcessTree {
    nodes: HashMap<u32, Node>,
}

/// Exited processes stay this long, so that orphans keep their ancestry.
const KEEP_EXITED: Duration = Duration::from_secs(600);
/// Deepest ancestry walked (a cycle from pid reuse cannot loop forever).
const MAX_DEPTH: usize = 64;

fn basename(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

impl ProcessTree {
    /// The processes running now (procfs), so that ones started before the daemon are known.
    pub fn from_proc() -> ProcessTree {
        let mut tree = ProcessTree::default();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Ok(stat) = p.stat() {
                    tree.nodes.insert(
                        stat.pid as u32,
                        Node {
                            ppid: stat.ppid as u32,
                            name: stat.comm,
                            exited: None,
                        },
                    );
                }
            }
        }
        tree
    }

    /// A process the tree has not seen: ask /proc (it may have started between the scan and
    /// its first event).
    fn lookup(&mut self, pid: u32) -> Option<&Node> {
        match self.nodes.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let stat = procfs::process::Process::new(pid as i32)
                    .ok()?
                    .stat()
                    .ok()?;
                Some(e.insert(Node {
                    ppid: stat.ppid as u32,
                    name: stat.comm,
                    exited: None,
                }))
            }
        }
    }

    pub fn fork(&mut self, parent: u32, child: u32) {
        let name = self
            .lookup(parent)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        self.nodes.insert(
            child,
            Node {
                ppid: parent,
                name,
                exited: None,
            },
        );
    }

    /// `ppid` is the kernel's view, used when the fork was not seen.
    pub fn exec(&mut self, pid: u32, ppid: u32, filename: &str) {
        let name = basename(filename);
        self.nodes
            .entry(pid)
            .and_modify(|n| {
                n.name = name.clone();
                n.exited = None;
            })
            .or_insert(Node {
                ppid,
                name,
                exited: None,
            });
    }

    pub fn exit(&mut self, pid: u32) {
        if let Some(n) = self.nodes.get_mut(&pid) {
            n.exited = Some(Instant::now());
        }
    }

    /// Forgets processes that exited long ago.
    pub fn prune(&mut self) {
        self.nodes
            .retain(|_, n| n.exited.is_none_or(|t| t.elapsed() < KEEP_EXITED));
    }

    /// `pid` and the processes above it, from the top.
    pub fn ancestry(&mut self, pid: u32) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        let mut current = pid;
        while chain.len() < MAX_DEPTH {
            let Some(node) = self.lookup(current) else {
                break;
            };
            chain.push(Ancestor {
                pid: current,
                name: node.name.clone(),
            });
            let parent = node.ppid;
            if parent == 0 || parent == current {
                break;
            }
            current = parent;
        }
        chain.reverse();
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(chain: &[Ancestor]) -> Vec<&str> {
        chain.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn ancestry_follows_forks_and_execs_and_survives_the_parents_exit() {
        let mut t = ProcessTree::default();
        t.exec(100, 1, "/usr/sbin/sshd");
        t.nodes.insert(
            1,
            Node {
                ppid: 0,
                name: "init".into(),
                exited: None,
            },
        );
        t.fork(100, 200);
        t.exec(200, 100, "/bin/bash");
        t.fork(200, 300);
        t.exec(300, 200, "/usr/bin/sudo");
        t.fork(300, 400);
        t.exec(400, 300, "/bin/bash");
        t.fork(400, 500);
        t.exec(500, 400, "/usr/bin/cat");
        assert_eq!(
            names(&t.ancestry(500)),
            ["init", "sshd", "bash", "sudo", "bash", "cat"]
        );
        // The shell exits; its orphan keeps its ancestry.
        t.exit(400);
        t.prune();
        assert_eq!(
            names(&t.ancestry(500)),
            ["init", "sshd", "bash", "sudo", "bash", "cat"]
        );
    }

    #[test]
    fn unknown_processes_are_read_from_proc_and_cycles_end() {
        let mut t = ProcessTree::default();
        let me = std::process::id();
        let chain = t.ancestry(me);
        assert_eq!(chain.last().map(|a| a.pid), Some(me));
        // pid reuse can make a cycle: the walk still ends.
        t.nodes.insert(
            7,
            Node {
                ppid: 8,
                name: "a".into(),
                exited: None,
            },
        );
        t.nodes.insert(
            8,
            Node {
                ppid: 7,
                name: "b".into(),
                exited: None,
            },
        );
        assert_eq!(t.ancestry(7).len(), MAX_DEPTH);
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(UserNames::default().name(0).as_deref(), Some("root"));
    }
}
