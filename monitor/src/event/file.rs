//! Files and programs as the kernel knows them: the path walked from the opened object, its
//! inode, and (for programs) what the daemon makes of the file: its content hash and whether it
//! can be trusted to be what its path says.

use serde::{Deserialize, Serialize};

use super::{RawBytes, Trust};

/// A file the kernel opened or loaded, identified by what the kernel holds, not by the name the
/// caller used: `path` is walked from the `struct file` up to the root of the mount namespace
/// (symlinks, `..`, directory fds, bind mounts and `/proc/<pid>/root` resolved), `dev`/`ino`
/// name the inode whatever path reached it (hard links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The path as the host (the daemon's mount namespace root) sees it.
    pub path: RawBytes,
    /// The path as the process sees it, when its root differs (chroot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_path: Option<RawBytes>,
    /// The device of its file system, `major:minor`.
    pub dev: String,
    pub ino: u64,
    pub uid: u32,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Change time (nanoseconds since the epoch): with `dev` and `ino`, names one content.
    pub ctime_ns: i64,
    /// No link to the file is left (deleted, `O_TMPFILE`, memfd): `path` is its last name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The path is deeper or longer than the kernel walks: its outermost components are
    /// missing (it is shown starting with `…/`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The file lies outside the process's root directory (an fd from before a chroot, a
    /// chroot escape).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside_root: bool,
    /// The open that reported it created the file (the kernel's `FMODE_CREATED`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// A process's memory (`/proc/<pid>/mem` or a thread's), as the kernel knows it: by its
    /// file system and the kernel's own name for it, whatever path or mount reached it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub process_memory: bool,
}

impl FileIdentity {
    /// `(dev, ino)`: the inode, whatever its names.
    pub fn inode(&self) -> (&str, u64) {
        (&self.dev, self.ino)
    }

    /// A file as userspace sees it through `stat` (a process older than the daemon, a test).
    pub fn from_metadata(path: RawBytes, meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            path,
            root_path: None,
            dev: stat_dev(meta.dev()),
            ino: meta.ino(),
            uid: meta.uid(),
            mode: meta.mode(),
            ctime_ns: ctime_ns(meta),
            deleted: meta.nlink() == 0,
            truncated: false,
            outside_root: false,
            created: false,
            process_memory: false,
        }
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_block_device(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFBLK
    }
}

/// Change time of `meta` in nanoseconds since the epoch, as [`FileIdentity::ctime_ns`].
pub fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
}

/// `major:minor` of a kernel-encoded device number (`major << 20 | minor`).
pub fn kernel_dev(dev: u32) -> String {
    // Once per open, and a host has a handful of devices: the last one's text is kept
    // (formatting it was 1-2% of the enrich stage).
    thread_local! {
        static LAST: std::cell::RefCell<(u32, String)> = const {
            std::cell::RefCell::new((u32::MAX, String::new()))
        };
    }
    LAST.with_borrow_mut(|(last, text)| {
        if *last != dev || text.is_empty() {
            *text = format!("{}:{}", dev >> 20, dev & 0xfffff);
            *last = dev;
        }
        text.clone()
    })
}

/// A `stat` device number in the kernel's `super_block.s_dev` encoding, as the kernel programs
/// report files (the inverse of [`kernel_dev`]'s numbers).
pub fn kernel_dev_number(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xfffff)
}

/// `major:minor` of a userspace `st_dev`.
pub fn stat_dev(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// The program an exec loaded: the kernel's file and the daemon's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executable {
    #[serde(flatten)]
    pub file: FileIdentity,
    /// SHA-256 of the content, hex; `None` when it could not be read (see `trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The package that installed a file at this path, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    pub trust: Trust,
}

/// The program a process runs, carried on every one of its events (the exec event has the rest
/// of [`Executable`]): what rules use to tell programs apart instead of `comm`, which the
/// process chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessExe {
    /// The executable's canonical path.
    pub path: RawBytes,
    /// What the content is, whatever its name: the path a package installed this very content
    /// at (a copy of `/usr/bin/cat` renamed `/tmp/sudo` is `/usr/bin/cat`). `None` for content
    /// no package installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<RawBytes>,
    pub trust: Trust,
    /// Trusted to be what its path says: `packaged` (or, on a host without a package database,
    /// `root_owned`). Only such programs are exempted by name in rules.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
}

impl ProcessExe {
    /// The executable's base name when it is trusted (see [`ProcessExe::trusted`]).
    pub fn trusted_name(&self) -> Option<&[u8]> {
        self.trusted.then(|| {
            self.path
                .0
                .rsplit(|&c| c == b'/')
                .next()
                .unwrap_or(&self.path.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_devices_are_major_colon_minor_whatever_came_before() {
        for (dev, text) in [
            ((254 << 20) | 1, "254:1"),
            ((8 << 20) | 17, "8:17"),
            ((8 << 20) | 17, "8:17"),
            (u32::MAX, "4095:1048575"),
            (0, "0:0"),
            ((254 << 20) | 1, "254:1"),
        ] {
            assert_eq!(kernel_dev(dev), text);
            assert_eq!(
                kernel_dev_number(libc::makedev(dev >> 20, dev & 0xfffff)),
                dev
            );
        }
    }
}
