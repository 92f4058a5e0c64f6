//! Read volume per opened file, aggregated in the kernel: the read family of syscalls adds to the
//! `OPEN_FILES` entry of their fd, and `close(2)` sends the total (the daemon flushes what is
//! left when a process exits).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use vigil_common::{kind, CredIds, OpenFileKey};

use crate::{
    kernel::{current_tgid, current_tid, sys_arg, sys_nr, sys_ret, syscall_nr},
    maps::{Pending, OPEN_FILES, PENDING},
    open::report_read_volume,
    scope,
};

/// Attached to sys_enter of read, pread64, readv, preadv, preadv2, sendfile64, copy_file_range
/// and splice.
#[tracepoint]
pub fn vigil_read_enter(ctx: TracePointContext) -> u32 {
    if scope::check(kind::FILE_READ).is_none() {
        return 0;
    }
    let nr = sys_nr(&ctx);
    // sendfile(out_fd, in_fd, ...) reads from its second argument; the others from the first.
    let fd = if nr == syscall_nr!(sendfile) {
        sys_arg(&ctx, 1)
    } else {
        sys_arg(&ctx, 0)
    } as u32;
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    if unsafe { OPEN_FILES.get(key) }.is_none() {
        return 0;
    }
    let pending = Pending {
        nr,
        _pad: 0,
        args: [fd as u64, 0, 0, 0],
        old: CredIds::default(),
    };
    let _ = PENDING.insert(current_tid(), pending, 0);
    0
}

#[tracepoint]
pub fn vigil_read_exit(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let Some(pending) = (unsafe { PENDING.get(tid) }) else {
        return 0;
    };
    if pending.nr != sys_nr(&ctx) {
        return 0;
    }
    let fd = pending.args[0] as u32;
    let _ = PENDING.remove(tid);
    let ret = sys_ret(&ctx);
    if ret <= 0 {
        return 0;
    }
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
    0
}

#[tracepoint]
pub fn vigil_close(ctx: TracePointContext) -> u32 {
    let Some((task, _)) = scope::check(kind::FILE_READ) else {
        return 0;
    };
    let fd = sys_arg(&ctx, 0) as u32;
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    let Some(stats) = (unsafe { OPEN_FILES.get(key) }) else {
        return 0;
    };
    let stats = *stats;
    let _ = OPEN_FILES.remove(key);
    report_read_volume(task, fd, stats);
    0
}
