//! Files the daemon reloads when they change (rules files, the identity mapping, passwd and
//! group): one helper instead of a cache per module.
//!
//! A change is told by the file's stamp: modification time, but also change time (which a
//! process cannot set back: `touch -d` after an edit moves ctime forward), inode (a file
//! replaced by rename) and size. Checks are rate-limited, so callers may ask per event.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What is compared between checks. `None`: the file was missing or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        dev: m.dev(),
        len: m.len(),
    })
}

/// Watches a set of files, answering whether any changed since the last answer.
#[derive(Debug)]
pub struct FileWatch {
    paths: Vec<PathBuf>,
    stamps: Vec<Option<Stamp>>,
    every: Duration,
    checked: Instant,
}

impl FileWatch {
    /// Watches `paths` from their state now, looking again at most every `every`.
    pub fn new(paths: Vec<PathBuf>, every: Duration) -> FileWatch {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        FileWatch {
            paths,
            stamps,
            every,
            checked: Instant::now(),
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// True once for each change seen (when at least `every` passed since the last look).
    pub fn changed(&mut self) -> bool {
        if self.paths.is_empty() || self.checked.elapsed() < self.every {
            return false;
        }
        self.checked = Instant::now();
        let now: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        if now == self.stamps {
            return false;
        }
        self.stamps = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_seen_even_with_the_old_mtime_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        let old = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut watch = FileWatch::new(vec![path.clone()], Duration::ZERO);
        assert!(!watch.changed());
        // Same size, old mtime restored: only ctime tells.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "a: 2\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(old).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), old);
        assert!(watch.changed());
        assert!(!watch.changed(), "once per change");
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed(), "removal is a change");
    }

    #[test]
    fn checks_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "x").unwrap();
        let mut watch = FileWatch::new(vec![path.clone()], Duration::from_secs(3600));
        std::fs::write(&path, "xy").unwrap();
        assert!(!watch.changed(), "not looked at again yet");
    }
}
