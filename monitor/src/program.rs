//! Program identity (enrich stage): what a process runs, decided from the file the kernel loaded
//! rather than from names the user chose (`comm`, argv[0], the file's name).
//!
//! For each executable (one verdict per device, inode and change time, cached) the daemon reads
//! the content through `/proc/<pid>/exe` (the very file the process runs, even renamed or
//! deleted), checks that it is still the inode the kernel reported, hashes it (SHA-256, and MD5
//! to compare with the package manager's record), and looks at who could have put it there: the
//! file's owner and mode and every directory above it. A copy or a rename of a program is found
//! by its content; a file put over a packaged program (or bind-mounted over it) by the package
//! manager's record of that path.
//!
//! Limits, said where a reader looks: the change time is the kernel's (root can only move it by
//! moving the clock); a root user can also edit the package database itself, which this check
//! trusts; content the package manager does not know is `root_owned` at best.

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::event::{ctime_ns, stat_dev, Executable, FileIdentity, ProcessExe, RawBytes, Trust};

/// Programs larger than this are not hashed (`unverified`): hashing runs on the enrich thread.
const MAX_HASHED_BYTES: u64 = 256 * 1024 * 1024;
/// Verdicts kept; beyond it the cache starts over (a verdict is cheap to make again).
const MAX_VERDICTS: usize = 16 * 1024;

/// What a package installed at a path.
#[derive(Debug, Clone)]
struct Installed {
    package: Arc<str>,
    md5: [u8; 16],
}

/// The package manager's record of the executables it installed (dpkg's `*.md5sums`): by path,
/// and by content, so that a copy is recognised wherever it lies.
#[derive(Debug, Default)]
pub struct PackageIndex {
    by_path: HashMap<Vec<u8>, Installed>,
    by_md5: HashMap<[u8; 16], Vec<u8>>,
    merged_usr: bool,
}

/// Whether a path dpkg lists is an executable worth indexing: under a `bin`, `sbin` or `libexec`
/// directory, or a name without a dot under `/usr/lib` (helpers such as `sshd-session`).
/// Libraries, documentation and data are left out, which keeps the index a few thousand entries.
fn is_program_path(path: &[u8]) -> bool {
    let s = String::from_utf8_lossy(path);
    let dir_is = |d: &str| s.contains(&format!("/{d}/")) || s.starts_with(&format!("{d}/"));
    if dir_is("bin") || dir_is("sbin") || dir_is("libexec") {
        return true;
    }
    s.starts_with("usr/lib/") && !s.rsplit('/').next().unwrap_or("").contains('.')
}

impl PackageIndex {
    /// Reads dpkg's database under `info_dir`; an absent directory gives an empty index (a
    /// host without dpkg), a malformed line is skipped. `merged_usr`: `/bin` and friends are
    /// links into `/usr`, so the kernel names `bin/cat` `/usr/bin/cat`.
    pub fn dpkg(info_dir: &Path, merged_usr: bool) -> PackageIndex {
        let mut index = PackageIndex {
            merged_usr,
            ..Default::default()
        };
        let Ok(entries) = std::fs::read_dir(info_dir) else {
            return index;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(package) = name.strip_suffix(".md5sums") else {
                continue;
            };
            // `libc-bin:amd64` is package `libc-bin`.
            let package: Arc<str> = package.split(':').next().unwrap_or(package).into();
            let Ok(text) = std::fs::read(entry.path()) else {
                continue;
            };
            for line in text.split(|&c| c == b'\n') {
                let Some((digest, path)) = parse_md5sums_line(line) else {
                    continue;
                };
                if !is_program_path(path) {
                    continue;
                }
                index.add(package.clone(), digest, path);
            }
        }
        index
    }

    fn add(&mut self, package: Arc<str>, md5: [u8; 16], path: &[u8]) {
        let mut absolute = b"/".to_vec();
        absolute.extend_from_slice(path);
        // Merged /usr: `bin/cat` installed by dpkg is `/usr/bin/cat` to the kernel, whose walk
        // never goes through the `/bin` symlink.
        let merged = [&b"bin/"[..], b"sbin/", b"lib/", b"lib64/"];
        if self.merged_usr && merged.iter().any(|m| path.starts_with(m)) {
            let mut usr = b"/usr/".to_vec();
            usr.extend_from_slice(path);
            absolute = usr;
        }
        self.by_md5.entry(md5).or_insert_with(|| absolute.clone());
        self.by_path.insert(absolute, Installed { package, md5 });
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }
}

/// `<32 hex digits>  <path>` (two spaces; dpkg writes paths without the leading `/`).
fn parse_md5sums_line(line: &[u8]) -> Option<([u8; 16], &[u8])> {
    let hex_part = line.get(..32)?;
    let path = line.get(32..)?.strip_prefix(b"  ")?;
    let mut digest = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut digest).ok()?;
    (!path.is_empty()).then_some((digest, path))
}

/// The daemon's verdict on one content at one path.
#[derive(Debug, Clone)]
struct Verdict {
    sha256: Option<String>,
    package: Option<Arc<str>>,
    program: Option<RawBytes>,
    trust: Trust,
}

/// What the enrich stage knows of the programs processes run.
pub struct Programs {
    packages: PackageIndex,
    /// Where the host's file system is seen from the daemon (`identity.host_root`: the daemon
    /// may run in a container of its own).
    host_root: PathBuf,
    verdicts: HashMap<(String, u64, i64, Vec<u8>), Verdict>,
    /// The program of each process, from its exec (inherited at fork), or read from
    /// `/proc/<pid>/exe` for processes older than the daemon. `None`: could not be known.
    running: HashMap<u32, Option<Arc<ProcessExe>>>,
}

impl Programs {
    pub fn new(packages: PackageIndex, host_root: PathBuf) -> Programs {
        Programs {
            packages,
            host_root,
            verdicts: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// The host's own programs, its file system seen at `host_root` (`/` on a plain host).
    pub fn for_host(host_root: PathBuf) -> Programs {
        let merged_usr = std::fs::symlink_metadata(host_root.join("bin"))
            .is_ok_and(|m| m.file_type().is_symlink());
        let packages = PackageIndex::dpkg(&host_root.join("var/lib/dpkg/info"), merged_usr);
        tracing::info!(
            packaged_programs = packages.len(),
            "program identities from the package database"
        );
        Programs::new(packages, host_root)
    }

    /// An exec loaded `exe`: fills in the daemon's verdict and returns what the process runs now.
    pub fn exec(&mut self, pid: u32, exe: &mut Executable) -> Arc<ProcessExe> {
        let v = self.verdict(pid, &exe.file);
        exe.sha256 = v.sha256;
        exe.package = v.package.map(|p| p.to_string());
        exe.trust = v.trust;
        let running = Arc::new(self.process_exe(exe.file.path.clone(), v.program, v.trust));
        self.running.insert(pid, Some(running.clone()));
        running
    }

    /// An exec whose executable the kernel could not name (nothing to check): unverified.
    pub fn exec_unknown(&mut self, pid: u32, filename: &RawBytes) -> Arc<ProcessExe> {
        let running = Arc::new(self.process_exe(filename.clone(), None, Trust::Unverified));
        self.running.insert(pid, Some(running.clone()));
        running
    }

    pub fn fork(&mut self, parent: u32, child: u32) {
        let inherited = self.of(parent);
        self.running.insert(child, inherited);
    }

    pub fn exit(&mut self, pid: u32) {
        self.running.remove(&pid);
    }

    /// What process `pid` runs.
    pub fn of(&mut self, pid: u32) -> Option<Arc<ProcessExe>> {
        if let Some(known) = self.running.get(&pid) {
            return known.clone();
        }
        let found = self.read_proc(pid);
        self.running.insert(pid, found.clone());
        found
    }

    fn process_exe(&self, path: RawBytes, program: Option<RawBytes>, trust: Trust) -> ProcessExe {
        // Without a package database nothing can be `packaged`; root-only placement is then the
        // best there is, and is what exempts a program by name (said in the README).
        let trusted =
            trust == Trust::Packaged || (trust == Trust::RootOwned && self.packages.is_empty());
        ProcessExe {
            path,
            program,
            trust,
            trusted,
        }
    }

    /// A process the daemon saw no exec of (it predates the daemon): its executable through
    /// procfs.
    fn read_proc(&mut self, pid: u32) -> Option<Arc<ProcessExe>> {
        let link = format!("/proc/{pid}/exe");
        let target = std::fs::read_link(&link).ok()?;
        let meta = std::fs::metadata(&link).ok()?;
        let mut path = target.into_os_string().into_encoded_bytes();
        let deleted = path.ends_with(b" (deleted)");
        if deleted {
            path.truncate(path.len() - b" (deleted)".len());
        }
        let mut file = FileIdentity::from_metadata(RawBytes(path), &meta);
        file.deleted |= deleted;
        let v = self.verdict(pid, &file);
        Some(Arc::new(self.process_exe(file.path, v.program, v.trust)))
    }

    fn verdict(&mut self, pid: u32, file: &FileIdentity) -> Verdict {
        let key = (
            file.dev.clone(),
            file.ino,
            file.ctime_ns,
            file.path.0.clone(),
        );
        if let Some(v) = self.verdicts.get(&key) {
            return v.clone();
        }
        let v = self.judge(pid, file);
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, v.clone());
        v
    }

    fn judge(&self, pid: u32, file: &FileIdentity) -> Verdict {
        let digests = self.digests(pid, file);
        let (sha256, md5) = match &digests {
            Some((sha, md5)) => (Some(sha.clone()), Some(*md5)),
            None => (None, None),
        };
        let installed = self.packages.by_path.get(&file.path.0);
        // The package's own file at its own path is itself (pkill and pgrep share one content);
        // a copy elsewhere is the path the package installed that content at.
        let program = match (installed, md5) {
            (Some(i), Some(d)) if i.md5 == d => Some(file.path.clone()),
            _ => md5
                .and_then(|d| self.packages.by_md5.get(&d))
                .map(|p| RawBytes(p.clone())),
        };
        let trust = if file.deleted {
            Trust::Deleted
        } else if md5.is_none() || file.truncated {
            Trust::Unverified
        } else if !root_only(file.uid, file.mode) || !self.root_only_directories(&file.path) {
            Trust::Writable
        } else {
            match installed {
                Some(i) if Some(i.md5) == md5 => Trust::Packaged,
                Some(_) => Trust::PackageMismatch,
                None => Trust::RootOwned,
            }
        };
        Verdict {
            sha256,
            package: installed.map(|i| i.package.clone()),
            program,
            trust,
        }
    }

    /// SHA-256 (hex) and MD5 of the content, read from the process's own executable when it is
    /// still the inode the kernel reported, else from its path under the same condition.
    fn digests(&self, pid: u32, file: &FileIdentity) -> Option<(String, [u8; 16])> {
        let candidates = [
            PathBuf::from(format!("/proc/{pid}/exe")),
            self.host_path(&file.path),
        ];
        for candidate in candidates {
            let Ok(mut f) = File::open(&candidate) else {
                continue;
            };
            let Ok(meta) = f.metadata() else {
                continue;
            };
            let same = stat_dev(meta.dev()) == file.dev
                && meta.ino() == file.ino
                && ctime_ns(&meta) == file.ctime_ns;
            if !same || meta.len() > MAX_HASHED_BYTES {
                continue;
            }
            return hash(&mut f);
        }
        None
    }

    fn host_path(&self, path: &RawBytes) -> PathBuf {
        let relative = path.0.strip_prefix(b"/").unwrap_or(&path.0);
        self.host_root.join(std::ffi::OsStr::from_bytes(relative))
    }

    /// Every directory above `path` is root's and writable by nobody else.
    fn root_only_directories(&self, path: &RawBytes) -> bool {
        let mut dir = self.host_path(path);
        while dir.pop() && dir != self.host_root {
            match std::fs::metadata(&dir) {
                Ok(m) if root_only(m.uid(), m.mode()) => {}
                _ => return false,
            }
        }
        true
    }
}

/// Owned by root and writable by neither group nor others.
fn root_only(uid: u32, mode: u32) -> bool {
    uid == 0 && mode & 0o022 == 0
}

fn hash(f: &mut File) -> Option<(String, [u8; 16])> {
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Some((hex::encode(sha.finalize()), md5.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sums_lines_and_program_paths() {
        let (d, p) =
            parse_md5sums_line(b"7a4179e324c784b99e98fedee05260f7  bin/cat").expect("a line");
        assert_eq!(p, b"bin/cat");
        assert_eq!(hex::encode(d), "7a4179e324c784b99e98fedee05260f7");
        assert!(parse_md5sums_line(b"zz  bin/cat").is_none());
        assert!(parse_md5sums_line(b"7a4179e324c784b99e98fedee05260f7 bin/cat").is_none());
        assert!(is_program_path(b"usr/bin/sudo"));
        assert!(is_program_path(b"usr/lib/openssh/sshd-session"));
        assert!(!is_program_path(b"usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!is_program_path(b"usr/share/doc/sudo/copyright"));
    }

    /// A real host's programs: `/usr/bin/cat` is packaged; a copy of it elsewhere is known by
    /// its content and is not; a copy in a directory anyone can write is `writable`.
    #[test]
    fn a_copy_of_a_packaged_program_is_known_by_content_and_not_trusted() {
        let merged = std::fs::symlink_metadata("/bin").is_ok_and(|m| m.file_type().is_symlink());
        let packages = PackageIndex::dpkg(Path::new("/var/lib/dpkg/info"), merged);
        if packages.is_empty() {
            eprintln!("skipped: no dpkg database on this host");
            return;
        }
        let mut programs = Programs::new(packages, PathBuf::from("/"));
        let id = |p: &Path| {
            let m = std::fs::metadata(p).expect("stat");
            FileIdentity::from_metadata(RawBytes(p.as_os_str().as_encoded_bytes().to_vec()), &m)
        };
        let me = std::process::id();
        let cat = programs.verdict(me, &id(Path::new("/usr/bin/cat")));
        assert_eq!(cat.trust, Trust::Packaged);
        assert_eq!(cat.package.as_deref(), Some("coreutils"));
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("sudo");
        std::fs::copy("/usr/bin/cat", &copy).expect("copy");
        let v = programs.verdict(me, &id(&copy));
        assert_eq!(
            v.program.as_ref().map(|p| p.as_bytes()),
            Some(&b"/usr/bin/cat"[..])
        );
        assert_ne!(v.trust, Trust::Packaged);
        assert_eq!(v.sha256, cat.sha256);
        let exe = programs.process_exe(
            RawBytes(copy.as_os_str().as_encoded_bytes().to_vec()),
            v.program,
            v.trust,
        );
        assert_eq!(exe.trusted_name(), None);
    }
}
