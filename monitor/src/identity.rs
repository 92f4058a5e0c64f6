//! Who and what: host user names for numeric ids, and the process tree that gives every exec its
//! ancestry.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::event::Ancestor;

/// How often `/etc/passwd` and `/etc/group` are checked for changes.
const PASSWD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Names of uids and gids, cached, forgotten whenever `passwd` or `group` changes. On the host,
/// NSS lookups (so LDAP and sssd users resolve too); in a container, the host's `/etc` mounted
/// somewhere (`identity.host_etc`) is read directly, since the container's NSS knows only the
/// image's users.
pub struct UserNames {
    users: crate::IdMap<u32, Option<Arc<str>>>,
    groups: crate::IdMap<u32, Option<Arc<str>>>,
    watch: crate::watch::FileWatch,
    host_etc: Option<PathBuf>,
}

impl Default for UserNames {
    fn default() -> Self {
        UserNames::new(None)
    }
}

/// The `name` (first field) of the line of `file` whose third field is `id` (`passwd` and
/// `group` share that shape). Hand-written: the two files' format is three fields deep here.
fn name_in(file: &Path, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let found: u32 = fields.next()?.parse().ok()?;
        (found == id && !name.is_empty()).then(|| name.to_string())
    })
}

impl UserNames {
    pub fn new(host_etc: Option<PathBuf>) -> Self {
        let etc = host_etc.as_deref().unwrap_or(Path::new("/etc"));
        UserNames {
            users: Default::default(),
            groups: Default::default(),
            watch: crate::watch::FileWatch::new(
                vec![etc.join("passwd"), etc.join("group")],
                PASSWD_CHECK_EVERY,
            ),
            host_etc,
        }
    }

    /// Forgets the names once the user or group database changed (looked at most once per
    /// [`PASSWD_CHECK_EVERY`]). Asked by the caller at its own pace, not on every lookup: the
    /// enrich stage names four ids per event, and a clock read for each cost more than the
    /// lookups.
    pub fn refresh(&mut self) {
        if self.watch.changed() {
            self.users.clear();
            self.groups.clear();
        }
    }

    pub fn name(&mut self, uid: u32) -> Option<Arc<str>> {
        let etc = self.host_etc.as_deref();
        named(&mut self.users, uid, || match etc {
            Some(etc) => name_in(&etc.join("passwd"), uid),
            None => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name),
        })
    }

    pub fn group(&mut self, gid: u32) -> Option<Arc<str>> {
        let etc = self.host_etc.as_deref();
        named(&mut self.groups, gid, || match etc {
            Some(etc) => name_in(&etc.join("group"), gid),
            None => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name),
        })
    }
}

/// The name of `id` from `cache`, looked up once (`lookup`) when it is not there yet.
fn named(
    cache: &mut crate::IdMap<u32, Option<Arc<str>>>,
    id: u32,
    lookup: impl FnOnce() -> Option<String>,
) -> Option<Arc<str>> {
    cache
        .entry(id)
        .or_insert_with(|| lookup().map(Arc::from))
        .clone()
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
    nodes: crate::IdMap<u32, Node>,
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

    /// Learns a process from one of its events when the tree does not know it: short-lived
    /// processes whose fork was not captured (their parent was not monitored) may be gone from
    /// /proc by the time their events are enriched, but each event names its parent.
    pub fn observe(&mut self, pid: u32, ppid: u32, comm: impl FnOnce() -> String) {
        if !self.nodes.contains_key(&pid) && self.lookup(pid).is_none() {
            self.nodes.insert(
                pid,
                Node {
                    ppid,
                    name: comm(),
                    exited: None,
                },
            );
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
    fn a_process_gone_from_proc_is_placed_under_the_parent_its_event_names() {
        let mut t = ProcessTree::default();
        t.nodes.insert(
            1,
            Node {
                ppid: 0,
                name: "init".into(),
                exited: None,
            },
        );
        // No such pid in /proc (above pid_max).
        let gone = 4_000_000_001;
        t.observe(gone, 1, || "cron".into());
        assert_eq!(names(&t.ancestry(gone)), ["init", "cron"]);
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
        // A host's /etc mounted elsewhere, as in a container.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1500:1500::/home/alice:/bin/bash\nbroken line\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nops:x:1500:alice\n").unwrap();
        let mut host = UserNames::new(Some(dir.path().to_path_buf()));
        assert_eq!(host.name(1500).as_deref(), Some("alice"));
        assert_eq!(host.group(1500).as_deref(), Some("ops"));
        assert_eq!(host.name(4242), None);
    }
}

/// What a cgroup path says about containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Container id (the 64-hex id that docker, containerd, cri-o and podman put in their scope or
/// directory names) and Kubernetes pod UID (`pod<uid>` in kubepods slices, `_` or `-` separated)
/// in a cgroup path.
pub fn parse_cgroup_path(path: &str) -> Workload {
    static CONTAINER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static POD: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let container = CONTAINER.get_or_init(|| {
        regex::Regex::new(r"(?:^|[^0-9a-f])([0-9a-f]{64})(?:[^0-9a-f]|$)").expect("valid regex")
    });
    let pod = POD.get_or_init(|| {
        regex::Regex::new(
            r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})",
        )
        .expect("valid regex")
    });
    Workload {
        container_id: container
            .captures_iter(path)
            .last()
            .map(|c| c[1].to_string()),
        pod_uid: pod.captures(path).map(|c| c[1].replace('_', "-")),
    }
}

/// Maps cgroup ids (the cgroup v2 directory inode the kernel reports) to their paths, by walking
/// the cgroup2 hierarchy; walks again, at most once a second, when an id is not known.
pub struct Cgroups {
    root: Option<std::path::PathBuf>,
    by_id: crate::IdMap<u64, Workload>,
    walked: Option<Instant>,
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups {
            root: cgroup2_root(),
            by_id: Default::default(),
            walked: None,
        }
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    mounts
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
}

/// Directories walked at most (a bound for hosts with very many cgroups).
const MAX_CGROUPS: usize = 200_000;

impl Cgroups {
    pub fn workload(&mut self, cgroup_id: u64) -> Workload {
        if let Some(w) = self.by_id.get(&cgroup_id) {
            return w.clone();
        }
        if self
            .walked
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.walk();
        }
        self.by_id.get(&cgroup_id).cloned().unwrap_or_default()
    }

    fn walk(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        self.walked = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            seen += 1;
            if seen > MAX_CGROUPS {
                tracing::warn!("more than {MAX_CGROUPS} cgroups; container ids may be missing");
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir
                .strip_prefix(&root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.by_id
                .entry(meta.ino())
                .or_insert_with(|| parse_cgroup_path(&relative));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod cgroup_tests {
    use super::*;

    #[test]
    fn container_and_pod_ids_from_runtime_paths() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let k8s = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-{id}.scope"
        );
        assert_eq!(
            parse_cgroup_path(&k8s),
            Workload {
                container_id: Some(id.into()),
                pod_uid: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
            }
        );
        let cgroupfs = format!("kubepods/burstable/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427/{id}");
        assert_eq!(
            parse_cgroup_path(&cgroupfs).pod_uid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        assert_eq!(
            parse_cgroup_path(&format!("system.slice/docker-{id}.scope"))
                .container_id
                .as_deref(),
            Some(id)
        );
        assert_eq!(
            parse_cgroup_path("user.slice/user-1000.slice/session-3.scope"),
            Workload::default()
        );
        // 65 hex digits is not an id.
        assert_eq!(
            parse_cgroup_path(&format!("docker-{id}f.scope")).container_id,
            None
        );
    }
}

/// A pod's name and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// Names of the pods on this node by UID, from the kubelet's pod log directories
/// (`/var/log/pods/<namespace>_<name>_<uid>`): every pod the kubelet runs has one, it needs no
/// API access, and it names exactly the node-local pods. Names and namespaces are DNS labels, so
/// they hold no `_`. Read again, at most once a second, when a UID is not known.
pub struct PodNames {
    dir: std::path::PathBuf,
    by_uid: HashMap<String, PodName>,
    scanned: Option<Instant>,
    /// The API server, for pods the log directory does not name.
    api: Option<crate::kube_api::PodApiLookup>,
}

impl PodNames {
    pub fn new(dir: std::path::PathBuf) -> Self {
        PodNames {
            dir,
            by_uid: HashMap::new(),
            scanned: None,
            api: None,
        }
    }

    pub fn with_api(mut self, api: Option<crate::kube_api::PodApiLookup>) -> Self {
        self.api = api;
        self
    }

    pub fn get(&mut self, pod_uid: &str) -> Option<PodName> {
        if let Some(p) = self.by_uid.get(pod_uid) {
            return Some(p.clone());
        }
        if self
            .scanned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.scan();
        }
        if let Some(p) = self.by_uid.get(pod_uid) {
            return Some(p.clone());
        }
        // Kept here too, so the pod's later events take the fast path above.
        let named = self.api.as_ref()?.get(pod_uid)?;
        self.by_uid.insert(pod_uid.to_string(), named.clone());
        Some(named)
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        self.by_uid.clear();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let mut parts = name.splitn(3, '_');
            if let (Some(ns), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next()) {
                if !ns.is_empty() && !pod.is_empty() && !uid.is_empty() {
                    self.by_uid.insert(
                        uid.to_string(),
                        PodName {
                            namespace: ns.to_string(),
                            name: pod.to_string(),
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod pod_tests {
    use super::*;

    #[test]
    fn pod_names_come_from_the_kubelet_log_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kube-system_coredns-5d78c9869d-abcde_0f3c")).unwrap();
        std::fs::create_dir(dir.path().join("not-a-pod")).unwrap();
        let mut pods = PodNames::new(dir.path().to_path_buf());
        assert_eq!(
            pods.get("0f3c"),
            Some(PodName {
                namespace: "kube-system".into(),
                name: "coredns-5d78c9869d-abcde".into()
            })
        );
        assert_eq!(pods.get("nope"), None);
    }
}
