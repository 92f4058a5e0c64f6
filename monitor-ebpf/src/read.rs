//! Read volume per opened file, aggregated in the kernel: the read family of syscalls adds to the
//! `OPEN_FILES` entry of their fd, and `close(2)` sends the total (the daemon flushes what is
//! left when a process exits).

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use vigil_common::{counter, kind, sys_class, FileReadStats, OpenFileKey};

use crate::{
    fold,
    kernel::{current_task, current_tgid, Ptr, Regs},
    maps::{count, FILE_ORIGIN, OPEN_FILES},
    open::report_read_volume,
    scope,
};

/// `sys_exit` of read, pread64, readv, preadv, preadv2, sendfile64, copy_file_range and splice.
/// The fd comes from the saved user registers, which the call leaves as they were.
///
/// The fd's entry is looked up before the scope: only a process in scope makes one (at its
/// open, or below), and it stays in scope until it exits, so a read of a followed file costs
/// one lookup, not two. True when the read was counted: the process is then known to be in
/// scope (the terminal check after it need not look it up again).
#[inline(always)]
pub fn on_exit(class: u8, regs: impl Regs, ret: i64) -> bool {
    if ret <= 0 || !scope::kind_enabled(kind::FILE_READ) {
        return false;
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
    let Some(stats) = OPEN_FILES.get_ptr_mut(key) else {
        // A folded open's fd, held in the fold entry (only a process in scope has one).
        if fold::count_read(fd, ret as u64) {
            return true;
        }
        if scope::check_at(kind::FILE_READ, regs).is_none() {
            return false;
        }
        // No entry for this fd: it may still lead to a file a monitored open created, reached
        // through dup2 or inheritance. Start counting for this fd under that open.
        let file = regs.fd_file(fd);
        if file.is_null() {
            return false;
        }
        let Some(open_ktime_ns) = (unsafe { FILE_ORIGIN.get(file as u64) }) else {
            return false;
        };
        let stats = FileReadStats {
            bytes: ret as u64,
            reads: 1,
            open_ktime_ns: *open_ktime_ns,
            ..FileReadStats::default()
        };
        if OPEN_FILES.insert(key, stats, 0).is_err() {
            count(kind::FILE_READ, counter::UNTRACKED);
        }
        return true;
    };
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
    true
}

/// `sys_exit` of close: the fd is gone, whatever the result (Linux releases it even on EINTR).
#[inline(always)]
pub fn on_close(regs: impl Regs) {
    retire(regs.arg(0) as u32);
}

/// `sys_exit` of dup2 and dup3: the target fd now refers to another file.
#[inline(always)]
pub fn on_dup_onto(ret: i64) {
    if ret >= 0 {
        retire(ret as u32);
    }
}

/// The fd no longer refers to the file it was counted for: report what was read and forget it.
/// Reads through whatever the fd refers to next start a fresh entry. No scope check: the entry
/// exists only for a process in scope (see [`on_exit`]); a close of any other fd is two lookups.
#[inline(always)]
fn retire(fd: u32) {
    if !scope::kind_enabled(kind::FILE_READ) {
        return;
    }
    if !retire_followed(current_task(), fd) {
        fold::release_fd(fd);
    }
}

/// Reports and removes the fd's `OPEN_FILES` entry of the current process; false when it has
/// none.
#[inline(always)]
pub fn retire_followed(task: Ptr, fd: u32) -> bool {
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    let Some(stats) = (unsafe { OPEN_FILES.get(key) }) else {
        return false;
    };
    // Reported from the entry itself, before it goes: no copy on the stack.
    report_read_volume(task, fd, stats);
    let _ = OPEN_FILES.remove(key);
    true
}
