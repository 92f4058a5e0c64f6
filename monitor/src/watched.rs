//! Watched names of inodes (enrich stage): the files the sensitive-path list names, by device
//! and inode, so that the same file reached under another name is still known as itself.
//!
//! The kernel's walk of an opened file resolves symlinks, `..`, directory fds and bind mounts,
//! but a hard link is a second name of equal standing: `ln /etc/shadow /var/tmp/notes` and
//! reading `/var/tmp/notes` opens `/etc/shadow`'s inode under a path no list names. Keeping the
//! inodes of the watched files turns that open back into `/etc/shadow`.
//!
//! The list is made by looking at the files (through `identity.host_root`, the host's root even
//! when the daemon runs in a container), bounded per pattern, and made again every
//! [`REFRESH_EVERY`]: a file replaced by rename (how `passwd` writes `/etc/shadow`) has a new
//! inode. Between refreshes, an open of a file with other names (or of a file that is a mount's
//! own root) not known by inode looks the files named whole up again (at most every
//! [`QUICK_EVERY`]), and a known inode opened under another name is checked to still be the
//! watched file's (its old number may have gone to another file). Left: a hard link made to a
//! watched file before it was replaced reads the old content under the link's own name.
//!
//! The directories the rules name (`/etc/pam.d/`, `/etc/cron.d/`, the directory of
//! `/etc/ld.so.preload`, …) are kept by inode too. The kernel's walk of a file follows the
//! mount it was opened through, so a file made through a bind mount of such a directory (or of
//! a directory above it: `mount --bind /etc /tmp/x`) would carry the bind mount's path. The
//! kernel also reports the inode of the directory the file is in, and a file in a watched
//! directory is named by that directory.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vigil_common::FoldFileKey;

use crate::{
    detect::baseline::PathPattern,
    event::{stat_dev, ChangedInode, LinkEvent, RawBytes},
};

/// How often the inodes are looked up again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Files taken per pattern (a directory pattern such as `/root/` may hold many).
const MAX_PER_PATTERN: usize = 2048;
/// Directory depth walked under a directory pattern.
const MAX_DEPTH: usize = 4;
/// Directories the rules name watched at once (with their subdirectories).
const MAX_DIRECTORIES: usize = 4096;
/// How often the files named whole may be looked up again between refreshes (see
/// [`WatchedInodes::refresh_files_soon`]): a few dozen `stat` calls.
const QUICK_EVERY: Duration = Duration::from_millis(10);

/// What the detection rules name by path (see `Expr::named_paths`), watched beside the
/// sensitive paths: the files by inode like them (but not kept out of the kernel's folds, which
/// already leave out any file a rule names), the directories by inode as well.
#[derive(Debug, Default, Clone)]
pub struct NamedByRules {
    pub files: Vec<String>,
    /// Watched themselves, not their subdirectories (the directory of a file named whole).
    pub directories: Vec<String>,
    /// `startswith` prefixes: the directory they end in (`/etc/pam.d/`), or the directory they
    /// are in and its subdirectories they begin (`/etc/sudoers` → `/etc` and `/etc/sudoers.d`),
    /// with their subdirectories down to [`MAX_DEPTH`].
    pub prefixes: Vec<String>,
}

impl NamedByRules {
    pub fn of<'a>(rules: impl IntoIterator<Item = &'a crate::detect::expr::Expr>) -> Self {
        let mut named = NamedByRules::default();
        for when in rules {
            when.named_paths(
                &mut named.files,
                &mut named.directories,
                &mut named.prefixes,
            );
        }
        named
    }
}

/// A watched file's or directory's name on its device.
struct Named {
    dev: String,
    name: RawBytes,
}

/// Watched names by inode, then device: looked up on every open without building a key.
type ByInode = HashMap<u64, Vec<Named>>;

/// The name of inode `(dev, ino)` in `map`.
fn named<'a>(map: &'a ByInode, dev: &str, ino: u64) -> Option<&'a RawBytes> {
    map.get(&ino)?
        .iter()
        .find(|w| w.dev == dev)
        .map(|w| &w.name)
}

/// Names the inode `meta` describes `name`, in place of the name it had on that device.
fn set_name(map: &mut ByInode, meta: &std::fs::Metadata, name: RawBytes) {
    let dev = stat_dev(meta.dev());
    let same = map.entry(meta.ino()).or_default();
    same.retain(|w| w.dev != dev);
    same.push(Named { dev, name });
}

/// Names `path` `dir/name`, unless it is that already (most opens in a watched directory are
/// named by it: compared without building the name).
pub fn name_in(path: &mut RawBytes, dir: &RawBytes, name: &[u8]) {
    let p = &path.0;
    let already = p.len() == dir.0.len() + 1 + name.len()
        && p.starts_with(&dir.0)
        && p[dir.0.len()] == b'/'
        && p.ends_with(name);
    if !already {
        let mut named = Vec::with_capacity(dir.0.len() + 1 + name.len());
        named.extend_from_slice(&dir.0);
        named.push(b'/');
        named.extend_from_slice(name);
        *path = RawBytes(named);
    }
}

/// A refresh's walk of the directories the rules name.
struct DirWalk {
    canonical_root: Option<PathBuf>,
    taken: usize,
    names: ByInode,
}

pub struct WatchedInodes {
    patterns: Vec<String>,
    named: NamedByRules,
    host_root: PathBuf,
    names: ByInode,
    /// The watched directories, the same way.
    directory_names: ByInode,
    /// The same files as the kernel numbers them, for its never-fold list.
    kernel_keys: HashSet<FoldFileKey>,
    refreshed: Option<Instant>,
    /// When the files named whole were last looked up between refreshes.
    quick: Option<Instant>,
}

impl WatchedInodes {
    pub fn new(patterns: Vec<String>, named: NamedByRules, host_root: PathBuf) -> WatchedInodes {
        let mut w = WatchedInodes {
            patterns,
            named,
            host_root,
            names: HashMap::new(),
            directory_names: HashMap::new(),
            kernel_keys: HashSet::new(),
            refreshed: None,
            quick: None,
        };
        w.refresh();
        w
    }

    /// The watched name of inode `(dev, ino)`, if it is a watched file.
    pub fn name(&self, dev: &str, ino: u64) -> Option<&RawBytes> {
        named(&self.names, dev, ino)
    }

    /// The watched name of inode `(dev, ino)` opened at `path`, checked when the two differ:
    /// the watched path must still have that inode. Otherwise the file was replaced (`passwd`
    /// renames a new `/etc/shadow` over the old) and its old number may have gone to another
    /// file, which is not the watched one: the stale entry is forgotten. One `stat`, for the
    /// opens of a watched inode under another name.
    pub fn verified_name(&mut self, dev: &str, ino: u64, path: &RawBytes) -> Option<RawBytes> {
        let name = self.name(dev, ino)?.clone();
        if name == *path {
            return Some(name);
        }
        let on_host = self.host_root.join(name.lossy().trim_start_matches('/'));
        match std::fs::symlink_metadata(on_host) {
            Ok(meta) if meta.ino() == ino && stat_dev(meta.dev()) == dev => Some(name),
            _ => {
                if let Some(same) = self.names.get_mut(&ino) {
                    same.retain(|w| w.dev != dev);
                }
                None
            }
        }
    }

    /// The watched name of directory inode `(dev, ino)`, if it is a watched directory.
    pub fn directory(&self, dev: &str, ino: u64) -> Option<&RawBytes> {
        named(&self.directory_names, dev, ino)
    }

    /// Names a `link` event's new name by the directory the kernel changed, when that is a
    /// watched one: its watched name and the name's last component, whatever path the caller
    /// passed (a bind mount of it, a symlinked directory, `..`, a directory fd).
    ///
    /// A rename between two directories changes both, and which one got the name is not in
    /// what the kernel sent. When one of them is watched, the name is reported in it: a rename
    /// out of a watched directory changed it too (a cron job or a PAM service taken away), and
    /// the path passed, which the daemon can only look up after the call, could have been
    /// repointed by then to make a rename into it look like one out of it. Only between two
    /// watched directories does the path's answer pick.
    pub fn name_link(&self, link: &mut LinkEvent) {
        // The watched directories among those the call changed.
        let watched: Vec<(&ChangedInode, &RawBytes)> = link
            .changed
            .iter()
            .filter(|c| c.directory)
            .filter_map(|d| self.directory(&d.dev, d.ino).map(|name| (d, name)))
            .collect();
        let Some(&first) = watched.first() else {
            return;
        };
        // Between two watched ones, the path's answer picks: it is looked up now, and whoever
        // passed it can have changed where it leads since, so it never picks one that is not.
        let (changed_dir, dir) = match watched.as_slice() {
            [_] => first,
            _ => self
                .directory_at(&link.path)
                .and_then(|(dev, ino)| {
                    watched
                        .iter()
                        .find(|(d, _)| d.dev == dev && d.ino == ino)
                        .copied()
                })
                .unwrap_or(first),
        };
        let passed = link
            .path
            .0
            .rsplit(|&c| c == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        // A name removed is not in the directory any more (and the file may be there under
        // another name, which was not removed).
        let held = match link.operation {
            crate::event::LinkOp::Unlink => None,
            _ => self.entry_of(dir, &changed_dir.dev, &link.changed, passed),
        };
        let name = held.unwrap_or_else(|| passed.to_vec());
        if !name.is_empty() {
            name_in(&mut link.path, dir, &name);
        }
        // A directory given the name (a whole `/etc/pam.d` swapped for one made elsewhere, or a
        // symlink to one, which PAM follows) is named as one, `/etc/pam.d/`, so that the rules
        // on what lies under it apply to it.
        if link.operation != crate::event::LinkOp::Unlink && !link.path.0.ends_with(b"/") {
            let on_host = self
                .host_root
                .join(link.path.lossy().trim_start_matches('/'));
            if std::fs::metadata(on_host).is_ok_and(|m| m.is_dir()) {
                link.path.0.push(b'/');
            }
        }
    }

    /// The name watched directory `dir` holds a file the call changed under, read from the
    /// directory by inode: the name passed was read from the caller's memory after the call,
    /// and another of its threads can rewrite it in between (`/etc/harmless` for the
    /// `/etc/ld.so.preload` the kernel made). The name passed when the file has it there (a
    /// file with two names in one directory), else the first the directory lists; `None` when
    /// the directory holds none of them now (a rename out of it, or moved on since: that
    /// rename is an event of its own).
    fn entry_of(
        &self,
        dir: &RawBytes,
        dev: &str,
        changed: &[ChangedInode],
        passed: &[u8],
    ) -> Option<Vec<u8>> {
        use std::os::unix::{ffi::OsStringExt, fs::DirEntryExt};
        let files: Vec<u64> = changed
            .iter()
            .filter(|c| !c.directory && c.dev == dev)
            .map(|c| c.ino)
            .collect();
        if files.is_empty() {
            return None;
        }
        let on_host = self.host_root.join(dir.lossy().trim_start_matches('/'));
        let mut first = None;
        for entry in std::fs::read_dir(on_host).ok()?.flatten() {
            if files.contains(&entry.ino()) {
                let name = entry.file_name().into_vec();
                if name == passed {
                    return Some(name);
                }
                first.get_or_insert(name);
            }
        }
        first
    }

    /// The device and inode of the directory `path` (absolute, on the host) is in, as the
    /// daemon finds it now (symlinks followed, as the kernel followed them).
    fn directory_at(&self, path: &RawBytes) -> Option<(String, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.0.strip_prefix(b"/")?;
        let parent = Path::new(std::ffi::OsStr::from_bytes(bytes)).parent()?;
        let meta = std::fs::metadata(self.host_root.join(parent)).ok()?;
        Some((stat_dev(meta.dev()), meta.ino()))
    }

    pub fn len(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The watched files by the kernel's device number and inode.
    pub fn kernel_keys(&self) -> &HashSet<FoldFileKey> {
        &self.kernel_keys
    }

    /// Looks up again, now, the inodes of the watched paths that name one file (`/etc/shadow`,
    /// a file a rule names): at most every [`QUICK_EVERY`]. For an open that may be one of
    /// them under another name (a file with more than one link, a file that is a mount's root)
    /// and is not known by inode: `passwd` or `useradd` replace `/etc/shadow` by rename, and a
    /// hard link to the new file (or a bind mount of it) made before the next full refresh
    /// would otherwise go by its own name.
    pub fn refresh_files_soon(&mut self) {
        if self.quick.is_some_and(|t| t.elapsed() < QUICK_EVERY) {
            return;
        }
        self.quick = Some(Instant::now());
        // (An entry left under an inode the file no longer has is forgotten when it is met
        // under another name: `verified_name`.)
        let files = self
            .patterns
            .iter()
            .filter(|p| !p.ends_with('/') && !p.starts_with('*'))
            .chain(&self.named.files);
        for path in files {
            let on_host = self.host_root.join(path.trim_start_matches('/'));
            if let Ok(meta) = std::fs::symlink_metadata(&on_host) {
                if meta.is_file() {
                    set_name(&mut self.names, &meta, RawBytes::from(path.as_str()));
                }
            }
        }
    }

    /// Looks the files up again when [`REFRESH_EVERY`] has passed; true when it did.
    pub fn refresh_if_due(&mut self) -> bool {
        if self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            self.refresh();
            return true;
        }
        false
    }

    pub fn refresh(&mut self) {
        let mut names = HashMap::new();
        let mut keys = HashSet::new();
        for pattern in &self.patterns {
            let roots: Vec<String> = match PathPattern::parse(pattern) {
                PathPattern::Prefix(p) => vec![p.to_string()],
                // `*/.ssh/`: in every home directory.
                PathPattern::Fragment(f) => homes(&self.host_root)
                    .into_iter()
                    .map(|h| format!("{h}{f}"))
                    .collect(),
            };
            let mut taken = 0;
            for root in roots {
                self.collect(&root, 0, &mut taken, &mut names, &mut keys);
            }
        }
        // A file a rule names, when no sensitive path took it already.
        let mut rule_keys = HashSet::new();
        let mut taken = 0;
        for file in &self.named.files {
            if !names
                .values()
                .flatten()
                .any(|w: &Named| w.name.0 == file.as_bytes())
            {
                self.collect(file, MAX_DEPTH, &mut taken, &mut names, &mut rule_keys);
            }
        }
        let mut dirs = DirWalk {
            // Once per refresh: what a directory's canonical path must be under.
            canonical_root: std::fs::canonicalize(&self.host_root).ok(),
            taken: 0,
            names: ByInode::new(),
        };
        for dir in &self.named.directories {
            self.collect_dir(dir, MAX_DEPTH, &mut dirs);
        }
        for prefix in &self.named.prefixes {
            let Some((dir, stem)) = prefix.rsplit_once('/') else {
                continue;
            };
            if stem.is_empty() {
                self.collect_dir(dir, 0, &mut dirs);
                continue;
            }
            self.collect_dir(dir, MAX_DEPTH, &mut dirs);
            let on_host = self.host_root.join(dir.trim_start_matches('/'));
            let Ok(entries) = std::fs::read_dir(&on_host) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(name) = name.to_str().filter(|n| n.starts_with(stem)) {
                    let child = format!("{dir}/{name}");
                    self.collect_dir(&child, 0, &mut dirs);
                }
            }
        }
        self.names = names;
        self.directory_names = dirs.names;
        self.kernel_keys = keys;
        self.refreshed = Some(Instant::now());
    }

    /// Watches directory `path` by inode, and its subdirectories below `depth` (at most
    /// [`MAX_DEPTH`]; pass [`MAX_DEPTH`] for the directory alone).
    fn collect_dir(&self, path: &str, depth: usize, dirs: &mut DirWalk) {
        if dirs.taken >= MAX_DIRECTORIES {
            return;
        }
        // Not through a symlink, as files are not: the kernel's walk names the directory a
        // symlink points to by its own path (`/lib/systemd/system` is `/usr/lib/...` on a
        // merged-/usr host), and that name must not be replaced by the link's.
        let on_host = self.host_root.join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(&on_host) else {
            return;
        };
        let canonical = dirs
            .canonical_root
            .as_ref()
            .map(|root| root.join(path.trim_start_matches('/')));
        if !meta.is_dir() || std::fs::canonicalize(&on_host).ok() != canonical {
            return;
        }
        dirs.taken += 1;
        // The first path that reached it keeps it.
        if named(&dirs.names, &stat_dev(meta.dev()), meta.ino()).is_none() {
            set_name(&mut dirs.names, &meta, RawBytes::from(path));
        }
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&on_host) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = format!("{path}/{}", entry.file_name().to_string_lossy());
                self.collect_dir(&child, depth + 1, dirs);
            }
        }
    }

    fn collect(
        &self,
        path: &str,
        depth: usize,
        taken: &mut usize,
        names: &mut ByInode,
        keys: &mut HashSet<FoldFileKey>,
    ) {
        if *taken >= MAX_PER_PATTERN {
            return;
        }
        let on_host = self.host_root.join(path.trim_start_matches('/'));
        // Not followed: a symlink in a watched directory names another file, which the kernel's
        // walk reports under its own path.
        let Ok(meta) = std::fs::symlink_metadata(&on_host) else {
            return;
        };
        if meta.is_file() {
            *taken += 1;
            keys.insert(FoldFileKey {
                ino: meta.ino(),
                dev: crate::event::kernel_dev_number(meta.dev()),
                _pad: 0,
            });
            // One name per file: the last path that reached it.
            set_name(names, &meta, RawBytes::from(path.trim_end_matches('/')));
        } else if meta.is_dir() && depth < MAX_DEPTH {
            let Ok(entries) = std::fs::read_dir(&on_host) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let child = format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy());
                self.collect(&child, depth + 1, taken, names, keys);
            }
        }
    }
}

/// Home directories on the host (`/root` and those in its passwd), as host paths.
fn homes(host_root: &Path) -> Vec<String> {
    let mut out = vec!["/root".to_string()];
    if let Ok(passwd) = std::fs::read_to_string(host_root.join("etc/passwd")) {
        for line in passwd.lines() {
            if let Some(home) = line.split(':').nth(5) {
                if home.starts_with('/') && home != "/" && !out.iter().any(|h| h == home) {
                    out.push(home.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watched directory is known by its inode, wherever it is reached; a symlink to one is
    /// not watched itself, and directories outside the list are not known.
    #[test]
    fn watched_directories_are_known_by_inode() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc/pam.d")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/other")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/pam.d/sub")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/sudoers.d")).unwrap();
        std::os::unix::fs::symlink("pam.d", root.path().join("etc/pam-link")).unwrap();
        std::fs::write(root.path().join("etc/ld.so.preload"), "").unwrap();
        std::fs::hard_link(
            root.path().join("etc/ld.so.preload"),
            root.path().join("etc/preload-link"),
        )
        .unwrap();
        let watched = WatchedInodes::new(
            Vec::new(),
            NamedByRules {
                files: vec!["/etc/ld.so.preload".into()],
                directories: vec![
                    "/etc/pam-link".into(),
                    "/etc/gone".into(),
                    "/etc/pam-link/sub".into(),
                ],
                prefixes: vec!["/etc/pam.d/".into(), "/etc/sudo".into()],
            },
            root.path().to_path_buf(),
        );
        let id = |p: &str| {
            let m = std::fs::metadata(root.path().join(p)).unwrap();
            (stat_dev(m.dev()), m.ino())
        };
        let (dev, ino) = id("etc/pam.d");
        assert_eq!(
            watched.directory(&dev, ino),
            Some(&RawBytes::from("/etc/pam.d"))
        );
        assert_eq!(watched.directory("0:0", ino), None, "another device");
        let (dev, ino) = id("etc/pam.d/sub");
        assert_eq!(
            watched.directory(&dev, ino),
            Some(&RawBytes::from("/etc/pam.d/sub")),
            "below a prefix that ends in a directory"
        );
        let (dev, ino) = id("etc/sudoers.d");
        assert_eq!(
            watched.directory(&dev, ino),
            Some(&RawBytes::from("/etc/sudoers.d")),
            "a directory the prefix begins"
        );
        let (dev, ino) = id("etc");
        assert_eq!(watched.directory(&dev, ino), Some(&RawBytes::from("/etc")));
        let (dev, ino) = id("etc/other");
        assert_eq!(watched.directory(&dev, ino), None);
        // Named through a symlinked directory: not the kernel's name for it.
        let (dev, ino) = id("etc/pam.d");
        assert_eq!(
            watched.directory(&dev, ino),
            Some(&RawBytes::from("/etc/pam.d"))
        );
        // A file a rule names, by inode, under a hard link too; not kept from the kernel's folds.
        let (dev, ino) = id("etc/preload-link");
        assert_eq!(
            watched.name(&dev, ino),
            Some(&RawBytes::from("/etc/ld.so.preload"))
        );
        assert!(watched.kernel_keys().is_empty());
    }

    /// A watched file replaced by rename (as `passwd` does) is known again by its new inode
    /// as soon as a file with other names is opened, not at the next full refresh.
    #[test]
    fn a_replaced_watched_file_is_looked_up_again_on_demand() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/shadow"), "old").unwrap();
        let mut watched = WatchedInodes::new(
            vec!["/etc/shadow".into()],
            NamedByRules {
                files: vec!["/etc/ld.so.preload".into()],
                ..Default::default()
            },
            root.path().to_path_buf(),
        );
        let id = |p: &str| {
            let m = std::fs::metadata(root.path().join(p)).unwrap();
            (stat_dev(m.dev()), m.ino())
        };
        let (_, old) = id("etc/shadow");
        std::fs::write(root.path().join("etc/shadow+"), "new").unwrap();
        std::fs::rename(
            root.path().join("etc/shadow+"),
            root.path().join("etc/shadow"),
        )
        .unwrap();
        std::fs::write(root.path().join("etc/ld.so.preload"), "").unwrap();
        let (dev, ino) = id("etc/shadow");
        assert_eq!(watched.name(&dev, ino), None, "not yet looked up");
        // The old number, if the kernel gives it to another file, is not the watched file.
        assert_eq!(
            watched.verified_name(&dev, old, &RawBytes::from("/var/tmp/x")),
            None
        );
        assert_eq!(watched.name(&dev, old), None, "forgotten");
        watched.refresh_files_soon();
        assert_eq!(
            watched.name(&dev, ino),
            Some(&RawBytes::from("/etc/shadow"))
        );
        let (dev, ino) = id("etc/ld.so.preload");
        assert_eq!(
            watched.name(&dev, ino),
            Some(&RawBytes::from("/etc/ld.so.preload"))
        );
    }

    /// A hard link to a watched file is known by the watched name; a file outside the list is
    /// not.
    #[test]
    fn a_hard_link_to_a_watched_file_has_its_name() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
        std::fs::write(root.path().join("etc/shadow"), "root:x").unwrap();
        std::fs::write(root.path().join("etc/ssh/ssh_host_ed25519_key"), "key").unwrap();
        std::fs::write(root.path().join("etc/motd"), "hi").unwrap();
        std::fs::hard_link(root.path().join("etc/shadow"), root.path().join("notes")).unwrap();
        let watched = WatchedInodes::new(
            vec!["/etc/shadow".into(), "/etc/ssh/".into()],
            NamedByRules::default(),
            root.path().to_path_buf(),
        );
        let id = |p: &str| {
            let m = std::fs::metadata(root.path().join(p)).unwrap();
            (stat_dev(m.dev()), m.ino())
        };
        let (dev, ino) = id("notes");
        assert_eq!(
            watched.name(&dev, ino),
            Some(&RawBytes::from("/etc/shadow"))
        );
        let (dev, ino) = id("etc/ssh/ssh_host_ed25519_key");
        assert_eq!(
            watched.name(&dev, ino),
            Some(&RawBytes::from("/etc/ssh/ssh_host_ed25519_key"))
        );
        let (dev, ino) = id("etc/motd");
        assert_eq!(watched.name(&dev, ino), None);
    }

    /// Inode `p` under `root`, as a `link` event names it.
    fn changed(root: &Path, p: &str, directory: bool) -> ChangedInode {
        let m = std::fs::metadata(root.join(p)).unwrap();
        ChangedInode {
            dev: stat_dev(m.dev()),
            ino: m.ino(),
            directory,
        }
    }

    /// What `watched` names the new name `path` of a rename that changed `changed`.
    fn named_link(watched: &WatchedInodes, path: &str, changed: Vec<ChangedInode>) -> String {
        use crate::event::{LinkOp, SyscallResult};
        let mut link = LinkEvent {
            operation: LinkOp::Rename,
            path: RawBytes::from(path),
            requested_path: RawBytes::from(path),
            source: RawBytes::from("/tmp/elsewhere/job"),
            changed,
            changed_cut: false,
            unverified: false,
            path_truncated: false,
            flags: 0,
            result: SyscallResult::from_ret(0),
        };
        watched.name_link(&mut link);
        link.path.lossy()
    }

    /// A `link` event's new name goes by the watched directory the kernel changed: the only
    /// one changed; of two (a rename between directories), the one the path passed leads to,
    /// else a watched one; never a directory that is not watched.
    #[test]
    fn a_new_name_is_named_by_the_watched_directory_the_kernel_changed() {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["etc/cron.d", "tmp/elsewhere", "tmp/view"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let watched = WatchedInodes::new(
            Vec::new(),
            NamedByRules {
                prefixes: vec!["/etc/cron".into()],
                ..NamedByRules::default()
            },
            root.path().to_path_buf(),
        );
        let dir = |p: &str| changed(root.path(), p, true);
        let named = |path: &str, changed: Vec<ChangedInode>| named_link(&watched, path, changed);
        // A bind mount's path (the view is not cron.d to the daemon's eyes): the one directory
        // changed names it.
        assert_eq!(
            named("/tmp/view/job", vec![dir("etc/cron.d")]),
            "/etc/cron.d/job"
        );
        // Between two, one watched: reported in the watched one, wherever the path passed leads
        // now (back to the source's directory, or nowhere).
        assert_eq!(
            named(
                "/tmp/elsewhere/job",
                vec![dir("tmp/elsewhere"), dir("etc/cron.d")]
            ),
            "/etc/cron.d/job"
        );
        assert_eq!(
            named("/gone/job", vec![dir("etc/cron.d"), dir("tmp/elsewhere")]),
            "/etc/cron.d/job"
        );
        // Between two watched ones: the one the path leads to.
        assert_eq!(
            named("/etc/job", vec![dir("etc/cron.d"), dir("etc")]),
            "/etc/job"
        );
        assert_eq!(
            named("/etc/cron.d/job", vec![dir("etc"), dir("etc/cron.d")]),
            "/etc/cron.d/job"
        );
        // No watched directory changed: the path passed stays.
        assert_eq!(
            named("/tmp/view/job", vec![dir("tmp/view")]),
            "/tmp/view/job"
        );
        // A trailing slash names the last component still.
        assert_eq!(
            named("/tmp/view/job/", vec![dir("etc/cron.d")]),
            "/etc/cron.d/job"
        );
        // A directory given its name in a watched one is named as a directory: what a rule on
        // `/etc/cron.d/` reads when the whole directory is swapped.
        assert_eq!(
            named(
                "/tmp/elsewhere/cron.d",
                vec![dir("tmp/elsewhere"), dir("etc")]
            ),
            "/etc/cron.d/"
        );
        // A symlink to a directory, the same.
        std::os::unix::fs::symlink("cron.d", root.path().join("etc/cron-link")).unwrap();
        assert_eq!(
            named("/tmp/view/cron-link", vec![dir("etc")]),
            "/etc/cron-link/"
        );
    }

    /// The name a watched directory holds the changed file under is read from the directory:
    /// a name rewritten in the caller's memory after the call does not stand.
    #[test]
    fn a_new_name_is_the_one_the_directory_holds_the_file_under() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/ld.so.preload"), "/x.so").unwrap();
        std::fs::write(root.path().join("etc/a"), "").unwrap();
        std::fs::hard_link(root.path().join("etc/a"), root.path().join("etc/b")).unwrap();
        let watched = WatchedInodes::new(
            Vec::new(),
            NamedByRules {
                files: vec!["/etc/ld.so.preload".into()],
                directories: vec!["/etc".into()],
                ..NamedByRules::default()
            },
            root.path().to_path_buf(),
        );
        let named = |path: &str, file: &str| {
            let changed = vec![
                changed(root.path(), "etc", true),
                changed(root.path(), file, false),
            ];
            named_link(&watched, path, changed)
        };
        assert_eq!(
            named("/etc/harmless", "etc/ld.so.preload"),
            "/etc/ld.so.preload"
        );
        // Unreadable after the call: the directory still names it.
        assert_eq!(named("", "etc/ld.so.preload"), "/etc/ld.so.preload");
        // Two names in one directory: the one passed, when it is one of them.
        assert_eq!(named("/etc/b", "etc/a"), "/etc/b");
        let either = named("/etc/zzz", "etc/a");
        assert!(either == "/etc/a" || either == "/etc/b", "{either}");
    }
}
