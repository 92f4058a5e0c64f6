//! Appending strings to a record's tail at bounded offsets.
//!
//! The verifier must prove every write stays inside the scratch record, so each write lands at
//! `pos & MASK` and copies at most a constant number of bytes; the record types reserve
//! `MASK + 1 + max write` bytes of tail. The mask is a constant of the type, not a field: after
//! a call to a subprogram that takes the tail (`path`), the verifier no longer knows what the
//! caller's stack holds, but an immediate mask still bounds every offset.

use aya_ebpf::helpers::generated;
use core::ffi::c_void;
use vigil_common::{path_flag, PathWalk, AT_FDCWD, COMPONENT_MAX, PATH_BYTES_MAX, PATH_DEPTH_MAX};

use crate::{
    kernel::{koff, read_ptr, Ptr},
    maps::TAIL_CURSOR,
};

pub struct Tail<const MASK: u32> {
    base: *mut u8,
    /// The write position, kept in map memory (`TAIL_CURSOR`) rather than on the stack: the
    /// verifier does not follow values in map memory, so the states of a path walk that took
    /// different branches (a mount crossed, a component copied) look alike and are pruned
    /// instead of multiplying with every component. Every use is masked, so nothing depends on
    /// the verifier knowing it.
    pos: *mut u32,
}

pub enum Copied {
    /// Bytes written, NUL included.
    Whole(u32),
    /// The string filled the buffer: it may have been cut.
    Cut(u32),
    Failed,
}

impl Copied {
    /// The bytes written, and the record flag that says how it went: `cut` for a string that
    /// may have been cut, `failed` for one that could not be read (`F::default()`, no flag, for
    /// a whole one).
    #[inline(always)]
    pub fn len_flagged<F: Default>(self, cut: F, failed: F) -> (u32, F) {
        match self {
            Copied::Whole(n) => (n, F::default()),
            Copied::Cut(n) => (n, cut),
            Copied::Failed => (0, failed),
        }
    }
}

impl<const MASK: u32> Tail<MASK> {
    #[inline(always)]
    pub fn new(base: *mut u8) -> Option<Self> {
        let pos = TAIL_CURSOR.get_ptr_mut(0)?;
        unsafe { *pos = 0 };
        Some(Tail { base, pos })
    }

    /// Bytes written so far.
    #[inline(always)]
    pub fn pos(&self) -> u32 {
        unsafe { core::ptr::read_volatile(self.pos) }
    }

    #[inline(always)]
    fn add(&mut self, n: u32) {
        unsafe { core::ptr::write_volatile(self.pos, self.pos().wrapping_add(n)) };
    }

    #[inline(always)]
    fn dst(&self) -> *mut c_void {
        self.base.wrapping_add((self.pos() & MASK) as usize) as *mut c_void
    }

    #[inline(always)]
    fn advance(&mut self, ret: i64, max: u32) -> Copied {
        if ret <= 0 {
            return Copied::Failed;
        }
        let n = (ret as u32) & 0xffff;
        self.add(n);
        if n >= max {
            Copied::Cut(n)
        } else {
            Copied::Whole(n)
        }
    }

    /// Appends a NUL-terminated string from kernel memory, at most `MAX` bytes with the NUL.
    #[inline(always)]
    pub fn kernel_str<const MAX: u32>(&mut self, src: Ptr) -> Copied {
        let ret =
            unsafe { generated::bpf_probe_read_kernel_str(self.dst(), MAX, src as *const c_void) };
        self.advance(ret, MAX)
    }

    /// Appends a NUL-terminated string from user memory, at most `MAX` bytes with the NUL.
    #[inline(always)]
    pub fn user_str<const MAX: u32>(&mut self, src: u64) -> Copied {
        let ret =
            unsafe { generated::bpf_probe_read_user_str(self.dst(), MAX, src as *const c_void) };
        self.advance(ret, MAX)
    }

    /// Appends `len` raw bytes of user memory (`len` at most `LIMIT`, a power of two minus one).
    #[inline(always)]
    pub fn user_bytes<const LIMIT: u32>(&mut self, src: u64, len: u32) -> bool {
        let len = len & LIMIT;
        if len == 0 {
            return true;
        }
        let ret = unsafe { generated::bpf_probe_read_user(self.dst(), len, src as *const c_void) };
        if ret == 0 {
            self.add(len);
            true
        } else {
            false
        }
    }

    /// Appends the task's working directory (see [`Tail::path`]). Returns (bytes written, cut
    /// short, unavailable).
    #[inline(always)]
    pub fn cwd(&mut self, task: Ptr) -> (u32, bool, bool) {
        let fs = read_ptr(task, koff!(task_fs));
        if fs.is_null() {
            return (0, false, true);
        }
        let walk = self.path(fs.wrapping_add(koff!(fs_pwd)), core::ptr::null());
        (
            walk.len as u32,
            walk.flags & path_flag::TRUNCATED != 0,
            walk.flags & path_flag::UNAVAILABLE != 0,
        )
    }

    /// Appends the base of a relative name passed with directory fd `dfd`: the task's working
    /// directory for `AT_FDCWD`, else the directory `dfd` refers to (what tar, rsync, find and
    /// `dir_fd` use). Returns (bytes written, cut short); nothing for an fd that is not open.
    #[inline(always)]
    pub fn base(&mut self, task: Ptr, regs: impl crate::kernel::Regs, dfd: i32) -> (u32, bool) {
        if dfd == AT_FDCWD {
            let (n, cut, _) = self.cwd(task);
            return (n, cut);
        }
        let dir = regs.fd_file(dfd as u32);
        if dir.is_null() {
            return (0, false);
        }
        let walk = self.path(dir.wrapping_add(koff!(file_path)), core::ptr::null());
        (walk.len as u32, walk.flags & path_flag::TRUNCATED != 0)
    }

    /// Appends the path of the object `path` (a kernel `struct path`: mount and dentry) as
    /// NUL-terminated components, innermost first (the daemon reverses them), walking dentry
    /// parents and, at the root of each mount, on from where it is mounted, up to the root of the
    /// mount namespace. `root`, when not null, is the process's root (`fs->root`): the walk notes
    /// how many bytes lie below it.
    ///
    /// This is `d_path` done by hand: tracepoint programs may not call `bpf_d_path`, and names
    /// the caller chose (symlinks, `..`, a directory fd, a bind mount) have been resolved by the
    /// kernel into this mount and dentry already.
    #[inline(never)]
    pub fn path(&mut self, path: Ptr, root: Ptr) -> PathWalk {
        let start = self.pos();
        let mut walk = PathWalk {
            len: 0,
            root_at: 0,
            flags: 0,
            _pad: 0,
        };
        let mut vfsmnt = read_ptr(path, koff!(path_mnt));
        let mut dentry = read_ptr(path, koff!(path_dentry));
        if vfsmnt.is_null() || dentry.is_null() {
            walk.flags = path_flag::UNAVAILABLE;
            return walk;
        }
        let (root_mnt, root_dentry) = if root.is_null() {
            (core::ptr::null(), core::ptr::null())
        } else {
            (
                read_ptr(root, koff!(path_mnt)),
                read_ptr(root, koff!(path_dentry)),
            )
        };
        // Only a chrooted process can have files outside its root: for the others the walk
        // ends at the namespace's root, or (pipes, sockets, memfds) on a mount of their own.
        let chrooted = !root.is_null() && {
            let root_mount = root_mnt.wrapping_sub(koff!(mount_mnt));
            root_dentry != read_ptr(root_mnt, koff!(vfsmount_root))
                || read_ptr(root_mount, koff!(mount_parent)) != root_mount
        };
        let mut root_seen = !chrooted;
        // `struct vfsmount` is embedded in `struct mount`: step back to the container.
        let mut mnt = vfsmnt.wrapping_sub(koff!(mount_mnt));
        let mut cut = true;
        for _ in 0..PATH_DEPTH_MAX {
            if !root_seen && dentry == root_dentry && vfsmnt == root_mnt {
                root_seen = true;
                walk.root_at = self.pos().wrapping_sub(start) as u16;
            }
            let mnt_root = read_ptr(vfsmnt, koff!(vfsmount_root));
            if dentry == mnt_root {
                // At the root of a mount: continue from where it is mounted, unless it is the
                // namespace's root mount.
                let parent = read_ptr(mnt, koff!(mount_parent));
                if parent == mnt || parent.is_null() {
                    cut = false;
                    break;
                }
                dentry = read_ptr(mnt, koff!(mount_mountpoint));
                mnt = parent;
                vfsmnt = mnt.wrapping_add(koff!(mount_mnt));
                continue;
            }
            let parent = read_ptr(dentry, koff!(dentry_parent));
            if parent == dentry || parent.is_null() {
                cut = false;
                break;
            }
            if self.pos().wrapping_sub(start) >= PATH_BYTES_MAX {
                break;
            }
            let name = read_ptr(dentry, koff!(dentry_name) + koff!(qstr_name));
            match self.kernel_str::<COMPONENT_MAX>(name) {
                Copied::Whole(_) | Copied::Cut(_) => {}
                Copied::Failed => break,
            }
            dentry = parent;
        }
        walk.len = self.pos().wrapping_sub(start) as u16;
        if !chrooted {
            walk.root_at = walk.len;
        }
        if cut {
            walk.flags |= path_flag::TRUNCATED;
        }
        if !root_seen {
            walk.flags |= if cut {
                path_flag::TRUNCATED
            } else {
                path_flag::OUTSIDE_ROOT
            };
        }
        walk
    }
}
