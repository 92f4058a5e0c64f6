//! The routine files the kernel folds (`capture.fold.routine`), registered once at start.
//!
//! Each file is registered by device and inode with the change time it has now; the kernel
//! folds an open only when all three still agree (see `monitor-ebpf/src/fold.rs`). A rename or
//! hard link into a routine directory, a write, a chmod or a replacement changes the change
//! time or the inode, and such a file is sent as any other open. Files installed after the
//! daemon started are not routine until it restarts: their opens are sent, which is noise,
//! never a blind spot.
//!
//! Left out, and so always sent: files not owned by root or writable by group or others (or
//! in such a directory), the sensitive paths, and every file a rule's path condition could
//! name (`Expr::may_name_path`), so no rule loses an open it would have seen.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use vigil_common::{FoldFileCtime, FoldFileKey};

use crate::{
    detect::{baseline::PathPattern, rules::Rule},
    event::kernel_dev_number,
};

/// Directory levels walked under a routine directory (`/usr/lib/x86_64-linux-gnu/gconv`,
/// `/usr/share/locale/<lang>/LC_MESSAGES`).
pub const MAX_DEPTH: usize = 3;
/// Files registered at most: the kernel's `FOLD_ROUTINE` map size.
pub const MAX_FILES: usize = 16384;

/// What registration found: the files, and what it left out, for the start log.
#[derive(Debug, Default)]
pub struct RoutineFiles {
    pub files: Vec<(FoldFileKey, FoldFileCtime)>,
    /// Left out because a rule or the sensitive paths name them.
    pub named: usize,
    /// Left out because root does not own them or others may write them.
    pub unsafe_owner: usize,
    /// Beyond [`MAX_FILES`].
    pub over_limit: usize,
}

pub struct Registration<'a> {
    /// Where the host's root is seen (`identity.host_root`).
    pub host_root: &'a Path,
    pub sensitive_paths: &'a [String],
    pub rules: &'a [Rule],
}

impl Registration<'_> {
    pub fn register(&self, routine: &[PathBuf]) -> RoutineFiles {
        let mut out = RoutineFiles::default();
        for path in routine {
            self.visit(&path.to_string_lossy(), 0, &mut out);
        }
        out
    }

    fn visit(&self, path: &str, depth: usize, out: &mut RoutineFiles) {
        let on_host = self.host_root.join(path.trim_start_matches('/'));
        // Followed: `/lib` is a symlink to `/usr/lib` on merged-/usr systems, and the kernel
        // knows the file by its inode, whatever name reached it.
        let Ok(meta) = std::fs::metadata(&on_host) else {
            return;
        };
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            out.unsafe_owner += 1;
            return;
        }
        if meta.is_dir() {
            if depth >= MAX_DEPTH {
                return;
            }
            let Ok(entries) = std::fs::read_dir(&on_host) else {
                return;
            };
            for entry in entries.flatten() {
                let child = format!(
                    "{}/{}",
                    path.trim_end_matches('/'),
                    entry.file_name().to_string_lossy()
                );
                self.visit(&child, depth + 1, out);
            }
            return;
        }
        if !meta.is_file() {
            return;
        }
        if self.named(path) {
            out.named += 1;
            return;
        }
        if out.files.len() >= MAX_FILES {
            out.over_limit += 1;
            return;
        }
        out.files.push((
            FoldFileKey {
                ino: meta.ino(),
                dev: kernel_dev_number(meta.dev()),
                _pad: 0,
            },
            FoldFileCtime {
                ctime_sec: meta.ctime(),
                ctime_nsec: meta.ctime_nsec() as u32,
                _pad: 0,
            },
        ));
    }

    /// Whether the sensitive paths or a rule name `path`.
    fn named(&self, path: &str) -> bool {
        self.sensitive_paths
            .iter()
            .any(|p| PathPattern::parse(p).matches(path))
            || self.rules.iter().any(|r| r.when.may_name_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn rule(when: &str) -> Rule {
        let text = format!(
            "rules:\n  - id: r\n    title: t\n    technique: T1005\n    severity: high\n    risk: 10\n    when: '{when}'\n"
        );
        crate::detect::rules::parse_rules(&text, "test")
            .unwrap()
            .remove(0)
    }

    #[test]
    fn registers_files_by_inode_and_leaves_out_what_rules_or_owners_say() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(lib.join("gconv")).unwrap();
        std::fs::write(lib.join("libc.so.6"), "elf").unwrap();
        std::fs::write(lib.join("gconv/gconv-modules.cache"), "cache").unwrap();
        std::fs::write(lib.join("libwatched.so"), "elf").unwrap();
        std::fs::write(lib.join("open-to-all.so"), "elf").unwrap();
        std::fs::set_permissions(
            lib.join("open-to-all.so"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let rules = vec![rule(
            "type == \"open\" and path endswith \"/libwatched.so\"",
        )];
        let sensitive = vec!["/usr/lib/x86_64-linux-gnu/gconv/".to_string()];
        let found = Registration {
            host_root: root.path(),
            sensitive_paths: &sensitive,
            rules: &rules,
        }
        .register(&[PathBuf::from("/usr/lib/x86_64-linux-gnu")]);
        let libc = std::fs::metadata(lib.join("libc.so.6")).unwrap();
        assert_eq!(found.files.len(), 1, "{found:?}");
        assert_eq!(found.files[0].0.ino, libc.ino());
        assert_eq!(found.files[0].1.ctime_sec, libc.ctime());
        assert_eq!(
            found.named, 2,
            "the rule's file and the sensitive directory's"
        );
        assert_eq!(found.unsafe_owner, 1, "the file others may write");
    }

    #[test]
    fn kernel_device_numbers_match_the_kernels_encoding() {
        assert_eq!(kernel_dev_number(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(
            kernel_dev_number(libc::makedev(259, 70000)),
            (259 << 20) | 70000
        );
    }
}
