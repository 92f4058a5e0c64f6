//! Read volume per opened file, aggregated in the kernel: the read family of syscalls adds to the
//! `OPEN_FILES` entry of their fd, and `close(2)` sends the total (the daemon flushes what is
//! left when a process exits).

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use vigil_common::{kind, sys_class, OpenFileKey};

use crate::{
    kernel::{current_tgid, SysRegs},
    maps::OPEN_FILES,
    open::report_read_volume,
    scope,
};

/// `sys_exit` of read, pread64, readv, preadv, preadv2, sendfile64, copy_file_range and splice.
/// The fd comes from the saved user registers, which the call leaves as they were.
#[inline(always)]
pub fn on_exit(class: u8, regs: SysRegs, ret: i64) {
    if ret <= 0 || scope::check(kind::FILE_READ).is_none() {
        return;
    }
    // sendfile(out_fd, in_fd, ...) reads from its second argument; the others from the first.
    let fd = if class == sys_class::READ_FD1 {
        regs.arg(1)
    } else {
        regs.arg(0)
    } as u32;
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    if let Some(stats) = OPEN_FILES.get_ptr_mut(key) {
        // Threads of one process may read the same fd at once.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                core::ptr::addr_of_mut!((*stats).bytes),
                ret as u64,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                core::ptr::addr_of_mut!((*stats).reads),
                1,
            );
        }
    }
}

/// `sys_exit` of close: the fd is gone, whatever the result (Linux releases it even on EINTR).
#[inline(always)]
pub fn on_close(regs: SysRegs) {
    let Some((task, _)) = scope::check(kind::FILE_READ) else {
        return;
    };
    let fd = regs.arg(0) as u32;
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    let Some(stats) = (unsafe { OPEN_FILES.get(key) }) else {
        return;
    };
    let stats = *stats;
    let _ = OPEN_FILES.remove(key);
    report_read_volume(task, fd, stats);
}
