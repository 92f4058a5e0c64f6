//! Files that must survive a power loss and that nobody but root may read: written whole to a
//! temporary file, fsync'd, renamed over the old one, and the directory fsync'd (without that
//! last step the rename itself can be lost).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Owner read and write only: spool segments, acknowledgements, keys, baselines.
pub const FILE_MODE: u32 = 0o600;
/// Owner only: the spool directory and its `acks/`.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and its parents) if needed and makes it owner-only, whatever the umask made
/// of it before (a DaemonSet's hostPath, an older Vigil's world-readable spool).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Makes an existing file owner-only.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
}

/// Opens `path` for appending, created owner-only.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    private_file(path)?;
    Ok(f)
}

/// fsync of a directory: makes the creation, removal or renaming of its entries durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that after a crash or power loss it holds either the old or
/// the new contents, never a mixture or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// True for "the disk (or the quota) is full".
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_are_owner_only_and_replace_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ack");
        write_atomic(&path, b"1\n").unwrap();
        write_atomic(&path, b"22\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"22\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        assert!(!dir.path().join("ack.tmp").exists());
    }

    #[test]
    fn private_dir_tightens_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&spool).unwrap();
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
    }
}
