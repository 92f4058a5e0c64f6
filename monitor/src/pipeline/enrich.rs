//! Enrich stage: joins read volumes to the path of the open they belong to, and flushes the read
//! volume of files a process still held when it exited.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use vigil_common::OpenFileKey;

use super::{batch, PipelineStats};
use crate::{
    event::{Event, EventBody, FileReadEvent, Process, RawBytes, ReadVolumeReason},
    kernel::loader::OpenFiles,
};

/// How often the kernel's table is swept for processes that exited without us flushing them
/// (entries made for inherited or dup'd fds, or an exit event that was lost).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Paths of opens whose read volume may still be reported, by the open's `mono_ns`, bounded.
///
/// An open whose volume was reported (at close or exit) usually needs its path no more, but a
/// file inherited by several processes is reported once per process; so reported paths stay
/// while there is room and are the first forgotten. An open never reported yet (a file read for
/// hours) is forgotten only when the table holds nothing else, oldest first.
struct OpenPaths {
    pending: BTreeMap<u64, RawBytes>,
    reported: BTreeMap<u64, RawBytes>,
    capacity: usize,
}

impl OpenPaths {
    fn new(capacity: usize) -> Self {
        OpenPaths {
            pending: BTreeMap::new(),
            reported: BTreeMap::new(),
            capacity,
        }
    }

    fn insert(&mut self, open_mono_ns: u64, path: RawBytes) {
        self.reported.remove(&open_mono_ns);
        self.pending.insert(open_mono_ns, path);
        while self.pending.len() + self.reported.len() > self.capacity {
            if self.reported.pop_first().is_none() {
                self.pending.pop_first();
            }
        }
    }

    /// The path of the open at `open_mono_ns`, for a report of its read volume.
    fn reported(&mut self, open_mono_ns: u64) -> Option<RawBytes> {
        if let Some(path) = self.pending.remove(&open_mono_ns) {
            self.reported.insert(open_mono_ns, path.clone());
            return Some(path);
        }
        self.reported.get(&open_mono_ns).cloned()
    }
}

/// Whether reads from an open can ever be counted: not a write-only, `O_PATH` or directory
/// open (read(2) on those fails), whose path would only take room.
fn may_be_read(open: &crate::event::OpenEvent) -> bool {
    let flags = open.flags as i32;
    open.access != crate::event::Access::Write && flags & (libc::O_PATH | libc::O_DIRECTORY) == 0
}

/// Who and what the events' processes and files are: names of users, programs, watched files.
pub struct Identities {
    pub users: crate::identity::UserNames,
    pub programs: crate::program::Programs,
    pub watched: crate::watched::WatchedInodes,
}

pub struct Enricher {
    users: crate::identity::UserNames,
    watched: crate::watched::WatchedInodes,
    tree: crate::identity::ProcessTree,
    cgroups: crate::identity::Cgroups,
    sessions: crate::sessions::SessionTracker,
    pods: crate::identity::PodNames,
    programs: crate::program::Programs,
    paths: OpenPaths,
    /// fds each process opened (from open events), to flush at its exit without scanning the
    /// kernel's table.
    open_fds: crate::IdMap<u32, crate::IdSet<u32>>,
    /// Who each of those processes was at its last open (enriched): a read volume flushed
    /// without the process's own exit (swept, or at shutdown) is attributed to it, session
    /// and all, rather than to a stand-in known only by its pid.
    openers: crate::IdMap<u32, Process>,
    /// The kernel's open-file table, this stage's alone (None where no kernel is loaded).
    kernel_files: Option<OpenFiles>,
}

impl Enricher {
    pub fn new(
        sessions: crate::sessions::SessionTracker,
        pods: crate::identity::PodNames,
        identities: Identities,
        kernel_files: Option<OpenFiles>,
    ) -> Self {
        let Identities {
            users,
            programs,
            watched,
        } = identities;
        Enricher {
            programs,
            watched,
            kernel_files,
            users,
            tree: crate::identity::ProcessTree::from_proc(),
            cgroups: Default::default(),
            sessions,
            pods,
            paths: OpenPaths::new(64 * 1024),
            open_fds: Default::default(),
            openers: Default::default(),
        }
    }

    /// The kernel folds no open of a watched file: its list follows the watched inodes (the
    /// loader wrote the first list, from the same lookup, before the programs attached).
    fn sync_never_fold(&mut self) {
        let Some(kernel) = self.kernel_files.as_mut() else {
            return;
        };
        let failed = kernel.set_never_fold(self.watched.kernel_keys());
        tracing::debug!(
            files = self.watched.kernel_keys().len(),
            failed,
            "never-fold list set from the watched files"
        );
        if failed > 0 {
            tracing::warn!(
                failed,
                "the kernel's never-fold list is full: repeated opens of these watched files \
                 may be counted in one event instead of sent each"
            );
        }
    }
}

impl Enricher {
    /// Handles one event; appends it, and any events it causes, to `out` in order.
    pub fn process(&mut self, mut event: Event, out: &mut Vec<Event>) {
        let tgid = event.process.pid;
        let p = &mut event.process;
        p.user = self.users.name(p.uid);
        p.euser = self.users.name(p.euid);
        p.login_user = p.loginuid.and_then(|l| self.users.name(l));
        p.group = self.users.group(p.gid);
        if p.cgroup_id != 0 {
            let w = self.cgroups.workload(p.cgroup_id);
            p.container_id = w.container_id;
            if let Some(pod) = w.pod_uid.as_deref().and_then(|u| self.pods.get(u)) {
                p.pod_namespace = Some(pod.namespace);
                p.pod_name = Some(pod.name);
            }
            p.pod_uid = w.pod_uid;
        }
        let comm = &event.process.comm;
        self.tree.observe(tgid, event.process.ppid, || comm.lossy());
        event.process.exe = match &mut event.body {
            EventBody::Fork(f) => {
                self.tree.fork(tgid, f.child_pid);
                self.programs.fork(tgid, f.child_pid);
                self.programs.of(tgid)
            }
            EventBody::Exec(x) => {
                self.tree
                    .exec(tgid, event.process.ppid, &x.filename.lossy());
                x.ancestry = self.tree.ancestry(tgid);
                Some(match x.exe.as_mut() {
                    Some(exe) => self.programs.exec(tgid, exe),
                    None => self.programs.exec_unknown(tgid, &x.filename),
                })
            }
            _ => self.programs.of(tgid),
        };
        let tree = &mut self.tree;
        let ev = &event;
        self.sessions.before(
            ev,
            || match &ev.body {
                EventBody::Exec(x) => x.ancestry.clone(),
                _ => tree.ancestry(ev.process.pid),
            },
            out,
        );
        if let EventBody::Open(open) = &mut event.body {
            // A watched file reached under another name (a hard link) is known as itself; a
            // file in a watched directory reached through a bind mount, by that directory.
            if let Some(f) = open.file.as_ref() {
                let mut watched_name = self.watched.verified_name(&f.dev, f.ino, &open.path);
                // Another name of a file, or a file that is a mount's own root, not known: it
                // may be a watched file replaced (a new inode) since the last refresh.
                if watched_name.is_none()
                    && f.mode & libc::S_IFMT == libc::S_IFREG
                    && (open.links > 1 || open.dir_ino == 0)
                {
                    self.watched.refresh_files_soon();
                    watched_name = self.watched.verified_name(&f.dev, f.ino, &open.path);
                }
                if let Some(name) = watched_name {
                    if name != open.path {
                        open.path = name;
                    }
                } else if let Some(dir) = (open.dir_ino != 0)
                    .then(|| self.watched.directory(&f.dev, open.dir_ino))
                    .flatten()
                {
                    // The file's own name: the last component of the kernel's walk.
                    let own = f.path.0.rsplit(|&c| c == b'/').next().unwrap_or_default();
                    crate::watched::name_in(&mut open.path, dir, own);
                }
            }
        }
        if let EventBody::Link(link) = &mut event.body {
            if link.result.ok() {
                self.watched.name_link(link);
            }
        }
        match &mut event.body {
            // Paths are kept for the opens whose read volume the kernel follows: only those
            // come back as file_read reports.
            EventBody::Open(open) if open.result.ok() && !open.reads_untracked => {
                // Read-only opens also for the kernel's folds of their repeats (directories
                // included), which name the open they repeat.
                if may_be_read(open) || open.access == crate::event::Access::Read {
                    self.paths.insert(event.mono_ns, open.path.clone());
                }
                self.open_fds
                    .entry(tgid)
                    .or_default()
                    .insert(open.result.ret as u32);
                // Kept from the first open (one clone per process, not per open).
                self.openers
                    .entry(tgid)
                    .or_insert_with(|| event.process.clone());
            }
            // The kernel names an attach's target from its own link; any other target is
            // looked up by the id the caller passed, among the processes followed in sessions
            // (only where the caller counts ids as the daemon does).
            EventBody::ProcessAccess(access)
                if access.target_tgid.is_none() && !access.caller_pid_ns_nested =>
            {
                access.target_session = self.sessions.session_of_process(access.target_pid);
                access.target_in_session = access.target_session.is_some()
                    && access.target_session == event.process.sessionid;
            }
            EventBody::OpensFolded(folded) if folded.open_mono_ns != 0 => {
                folded.path = self.paths.reported(folded.open_mono_ns);
            }
            EventBody::FileRead(read) => {
                read.path = self.paths.reported(read.open_mono_ns);
                if let Some(fds) = self.open_fds.get_mut(&tgid) {
                    fds.remove(&read.fd);
                }
            }
            EventBody::Exit(_) => {
                self.tree.exit(tgid);
                self.programs.exit(tgid);
                let fds = self.open_fds.remove(&tgid).unwrap_or_default();
                let keys = fds.into_iter().map(|fd| OpenFileKey { tgid, fd });
                self.flush(keys, Some(&event), ReadVolumeReason::Exit, out);
                self.openers.remove(&tgid);
            }
            _ => {}
        }
        let mut after = Vec::new();
        self.sessions.after(&event, &mut after);
        out.push(event);
        out.append(&mut after);
    }

    /// Reports and forgets the read volume the kernel still holds under `keys`: at `exit`, the
    /// exiting process's own event (its time and process), otherwise now, by the daemon.
    fn flush(
        &mut self,
        keys: impl Iterator<Item = OpenFileKey>,
        exit: Option<&Event>,
        reason: ReadVolumeReason,
        out: &mut Vec<Event>,
    ) {
        let Some(kernel) = self.kernel_files.as_mut() else {
            return;
        };
        for key in keys {
            let Some(stats) = kernel.take(key) else {
                continue;
            };
            if stats.reads == 0 {
                continue; // never read: nothing to report, as at close
            }
            // Reads through a routine open the kernel folded, still open at exit: a routine
            // fold of reads alone (the opens went out with the process's other routine ones).
            let body = if stats.fold == vigil_common::fold::ROUTINE {
                EventBody::OpensFolded(crate::event::OpensFoldedEvent {
                    fold: crate::event::FoldKind::Routine,
                    path: None,
                    dev: None,
                    ino: None,
                    open_mono_ns: 0,
                    opens: 0,
                    reads: stats.reads,
                    bytes: stats.bytes,
                    first_mono_ns: 0,
                    last_mono_ns: 0,
                })
            } else {
                EventBody::FileRead(FileReadEvent {
                    fd: key.fd,
                    path: self.paths.reported(stats.open_ktime_ns),
                    bytes: stats.bytes,
                    reads: stats.reads,
                    open_mono_ns: stats.open_ktime_ns,
                    reason,
                })
            };
            let flushed = match exit {
                Some(at) if at.process.pid == key.tgid => Event { body, ..at.clone() },
                // Reported now, by the daemon, about the process that opened the file: as its
                // open event described it, or (its open event lost in the kernel, so never
                // seen here) by the one id the kernel's table keeps.
                _ => {
                    let process = self
                        .openers
                        .get(&key.tgid)
                        .cloned()
                        .unwrap_or_else(|| Process::known_by_pid(key.tgid));
                    crate::decode::daemon_event(process, body)
                }
            };
            out.push(flushed);
        }
    }

    /// Flushes what the kernel holds for processes that no longer exist.
    fn sweep(&mut self, out: &mut Vec<Event>) {
        self.tree.prune();
        if self.watched.refresh_if_due() {
            self.sync_never_fold();
        }
        let Some(keys) = self.kernel_files.as_ref().map(OpenFiles::keys) else {
            return;
        };
        let gone: Vec<OpenFileKey> = keys
            .into_iter()
            .filter(|k| !std::path::Path::new(&format!("/proc/{}", k.tgid)).exists())
            .collect();
        for key in &gone {
            self.open_fds.remove(&key.tgid);
        }
        let tgids: HashSet<u32> = gone.iter().map(|k| k.tgid).collect();
        self.flush(gone.into_iter(), None, ReadVolumeReason::Exit, out);
        for tgid in tgids {
            self.openers.remove(&tgid);
        }
    }

    /// At shutdown: every volume still counted goes out, so nothing read is unreported.
    pub fn flush_all(&mut self, out: &mut Vec<Event>) {
        let Some(keys) = self.kernel_files.as_ref().map(OpenFiles::keys) else {
            return;
        };
        self.flush(keys.into_iter(), None, ReadVolumeReason::Shutdown, out);
    }
}

/// How often terminal lines held for redaction are checked for age.
const HOLD_EVERY: Duration = Duration::from_millis(250);

/// Redacts what leaves the stage (see `crate::redact`): nothing after it sees a secret.
fn redacted(
    redactor: &crate::redact::Redactor,
    lines: &mut crate::redact::TtyLines,
    out: &mut Vec<Event>,
) -> Vec<Event> {
    for event in out.iter_mut() {
        redactor.redact_event(event);
    }
    if !out
        .iter()
        .any(|e| crate::redact::TtyLines::holds(redactor, e))
    {
        return std::mem::take(out);
    }
    let mut ready = Vec::with_capacity(out.len());
    for event in out.drain(..) {
        lines.push(redactor, event, &mut ready);
    }
    ready
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut rx: batch::Receiver,
    tx: batch::Sender,
    kernel_files: OpenFiles,
    stats: Arc<PipelineStats>,
    sessions: crate::sessions::SessionTracker,
    pods: crate::identity::PodNames,
    identities: Identities,
    redactor: crate::redact::Redactor,
) -> anyhow::Result<()> {
    let mut enricher = Enricher::new(sessions, pods, identities, Some(kernel_files));
    let mut lines = crate::redact::TtyLines::default();
    let mut out = Vec::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.tick().await;
    let mut hold = tokio::time::interval(HOLD_EVERY);
    loop {
        let expired = tokio::select! {
            received = rx.recv() => {
                let Some(events) = received else {
                    break;
                };
                // Room for the batch up front: `out` leaves the stage whole each time, and
                // growing it one event at a time moved every event several times over.
                out.reserve(events.len());
                enricher.users.refresh();
                for event in events {
                    enricher.process(event, &mut out);
                }
                Vec::new()
            }
            _ = sweep.tick() => {
                enricher.sweep(&mut out);
                Vec::new()
            }
            _ = hold.tick() => lines.expire(&redactor),
        };
        let mut ready = redacted(&redactor, &mut lines, &mut out);
        ready.extend(expired);
        stats.enriched.add(ready.len() as u64);
        batch::send_all(&tx, &mut ready, "detect").await?;
    }
    enricher.flush_all(&mut out);
    let mut ready = redacted(&redactor, &mut lines, &mut out);
    ready.extend(lines.drain(&redactor));
    batch::send_all(&tx, &mut ready, "detect").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> RawBytes {
        RawBytes(s.as_bytes().to_vec())
    }

    #[test]
    fn a_file_still_open_keeps_its_path_while_reported_ones_make_room() {
        let mut paths = OpenPaths::new(3);
        paths.insert(1, path("/var/log/long-read"));
        paths.insert(2, path("/etc/a"));
        assert_eq!(paths.reported(2), Some(path("/etc/a")));
        paths.insert(3, path("/etc/b"));
        assert_eq!(paths.reported(3), Some(path("/etc/b")));
        // Full: the reported ones go first, oldest first; the open one stays.
        paths.insert(4, path("/etc/c"));
        paths.insert(5, path("/etc/d"));
        assert_eq!(paths.reported(2), None);
        assert_eq!(paths.reported(3), None);
        assert_eq!(paths.reported(1), Some(path("/var/log/long-read")));
        // A second report of the same open (an inherited fd) still finds it.
        assert_eq!(paths.reported(1), Some(path("/var/log/long-read")));
    }

    #[test]
    fn with_nothing_reported_the_oldest_open_is_forgotten() {
        let mut paths = OpenPaths::new(2);
        paths.insert(1, path("/a"));
        paths.insert(2, path("/b"));
        paths.insert(3, path("/c"));
        assert_eq!(paths.reported(1), None);
        assert_eq!(paths.reported(2), Some(path("/b")));
        assert_eq!(paths.reported(3), Some(path("/c")));
    }
}
