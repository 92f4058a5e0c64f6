//! Appending strings to a record's tail at bounded offsets.
//!
//! The verifier must prove every write stays inside the scratch record, so each write lands at
//! `pos & mask` and copies at most a constant number of bytes; the record types reserve
//! `mask + 1 + max write` bytes of tail.

use aya_ebpf::helpers::generated;
use core::ffi::c_void;
use vigil_common::{COMPONENT_MAX, CWD_BYTES_MAX, CWD_DEPTH_MAX};

use crate::kernel::{koff, read_ptr, Ptr};

pub struct Tail {
    base: *mut u8,
    mask: u32,
    pub pos: u32,
}

pub enum Copied {
    /// Bytes written, NUL included.
    Whole(u32),
    /// The string filled the buffer: it may have been cut.
    Cut(u32),
    Failed,
}

impl Tail {
    pub fn new(base: *mut u8, mask: u32) -> Self {
        Tail { base, mask, pos: 0 }
    }

    #[inline(always)]
    fn dst(&self) -> *mut c_void {
        self.base.wrapping_add((self.pos & self.mask) as usize) as *mut c_void
    }

    #[inline(always)]
    fn advance(&mut self, ret: i64, max: u32) -> Copied {
        if ret <= 0 {
            return Copied::Failed;
        }
        let n = (ret as u32) & 0xffff;
        self.pos += n;
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
            self.pos += len;
            true
        } else {
            false
        }
    }

    /// Appends the task's working directory as NUL-terminated components, innermost first (the
    /// daemon reverses them). Returns (bytes written, cut short, unavailable).
    #[inline(always)]
    pub fn cwd(&mut self, task: Ptr) -> (u32, bool, bool) {
        let start = self.pos;
        let fs = read_ptr(task, koff!(task_fs));
        if fs.is_null() {
            return (0, false, true);
        }
        let pwd = fs.wrapping_add(koff!(fs_pwd));
        let mut vfsmnt = read_ptr(pwd, koff!(path_mnt));
        let mut dentry = read_ptr(pwd, koff!(path_dentry));
        if vfsmnt.is_null() || dentry.is_null() {
            return (0, false, true);
        }
        // `struct vfsmount` is embedded in `struct mount`: step back to the container.
        let mut mnt = vfsmnt.wrapping_sub(koff!(mount_mnt));
        let mut cut = true;
        for _ in 0..CWD_DEPTH_MAX {
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
            if self.pos - start >= CWD_BYTES_MAX {
                break;
            }
            let name = read_ptr(dentry, koff!(dentry_name) + koff!(qstr_name));
            match self.kernel_str::<COMPONENT_MAX>(name) {
                Copied::Whole(_) | Copied::Cut(_) => {}
                Copied::Failed => break,
            }
            dentry = parent;
        }
        (self.pos - start, cut, false)
    }
}
