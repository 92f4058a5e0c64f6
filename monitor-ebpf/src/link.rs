//! link: a process in scope gave a file a name or took one away. rename(2) (renameat,
//! renameat2 and its exchange), a hard link (link, linkat: also how an `O_TMPFILE` file gets
//! its first name), a symlink (symlink, symlinkat), and unlink(2), unlinkat(2) and rmdir(2). A
//! file written in `/tmp` and renamed into `/etc/cron.d` opens nothing there: the rules on
//! written files see the name arrive here, and the rules on removed logs see it go.
//!
//! Which directory got the name is said by the kernel, not by the path passed. The path is the
//! caller's words (a symlinked directory, a bind mount, `..`, a directory fd), and another
//! thread may rewrite it before anyone reads it back. Each of these calls sets the change time
//! of the directories it changes and of the file it moves, links or replaces, and the kernel's
//! `timestamp` tracepoints (6.13 and later) name each of those inodes as it is changed. The
//! thread's inodes are kept from there until the call's exit, which sends them with the names
//! passed; the daemon names the file by the directory the kernel changed.
//!
//! What is left: a call whose change-time update loses a race with another task's on the same
//! inode (the multigrain `cmpxchg` failing) leaves that inode unnamed; an attempt that fails to
//! get past this way is reported like any other.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use vigil_common::{
    kind, link_call, sys_class, LinkTouched, AT_FDCWD, LINK_BASE_IS_DFD, LINK_BASE_TRUNCATED,
    LINK_FIXED_SIZE, LINK_FROM_TRUNCATED, LINK_TOUCHED_MAX, LINK_TO_TRUNCATED, LINK_TO_UNAVAILABLE,
    LINK_UNTOUCHED, OPEN_PATH_MAX, OPEN_TAIL_CAP, OPEN_TAIL_SPAN,
};

use crate::{
    emit::send_prefix,
    kernel::{compat_sys_class, fill_header, inode_id, HookRegs, Ptr, Regs, SysRegs},
    maps::{scratch, LINK_SCRATCH, LINK_TOUCHED},
    scope,
    tail::Tail,
};

/// `ctime_ns_xchg(struct inode *, u32 old, u32 new, u32 cur)`: a multigrain file system's
/// (ext4, xfs, btrfs, tmpfs) inode given a new change time.
#[btf_tracepoint(function = "ctime_ns_xchg")]
pub fn vigil_ctime_xchg(ctx: BtfTracePointContext) -> i32 {
    on_ctime(ctx.arg::<u64>(0) as Ptr)
}

/// `ctime_xchg_skip(struct inode *, struct timespec64 *)`: the same, when the inode already had
/// that time (two changes in one clock tick).
#[btf_tracepoint(function = "ctime_xchg_skip")]
pub fn vigil_ctime_skip(ctx: BtfTracePointContext) -> i32 {
    on_ctime(ctx.arg::<u64>(0) as Ptr)
}

/// `inode_set_ctime_to_ts(struct inode *, struct timespec64 *)`: any other file system's, and
/// the directories tmpfs stamps with the time of the file moved.
#[btf_tracepoint(function = "inode_set_ctime_to_ts")]
pub fn vigil_ctime_set(ctx: BtfTracePointContext) -> i32 {
    on_ctime(ctx.arg::<u64>(0) as Ptr)
}

/// An inode's change time set by the current thread: kept when the thread is in one of the
/// calls this module follows. Every write of every process may come here (at most once per
/// clock tick and file): a process outside every session returns after two loads, any other
/// after reading the syscall number from its saved registers.
#[inline(always)]
fn on_ctime(inode: Ptr) -> i32 {
    if !scope::may_be_in_scope() {
        return 0;
    }
    let regs = SysRegs(unsafe {
        generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) as Ptr
    });
    let nr = regs.nr();
    let native = crate::kernel::sys_class(nr);
    let compat = compat_sys_class(nr);
    if !sys_class::is_link(native) && !sys_class::is_link(compat) {
        return 0;
    }
    // The two tables share numbers (5 is open in one, fstat in the other): the ABI decides.
    let class = if regs.in_compat_syscall(()) {
        compat
    } else {
        native
    };
    if !sys_class::is_link(class) {
        return 0;
    }
    keep(bpf_get_current_pid_tgid() as u32, inode);
    0
}

/// Adds `inode` to thread `tid`'s inodes, once each. A subprogram: the ctime programs stay
/// small, and the loop is verified once.
#[inline(never)]
fn keep(tid: u32, inode: Ptr) {
    let touched = match LINK_TOUCHED.get_ptr_mut(tid) {
        Some(t) => t,
        None => {
            if LINK_TOUCHED.insert(tid, LinkTouched::default(), 0).is_err() {
                // Counted; the event goes out `unverified`, with the names passed.
                crate::maps::count(kind::LINK, vigil_common::counter::UNTRACKED);
                return;
            }
            match LINK_TOUCHED.get_ptr_mut(tid) {
                Some(t) => t,
                None => return,
            }
        }
    };
    let touched = unsafe { &mut *touched };
    let id = inode_id(inode);
    let n = touched.count as usize;
    for i in 0..LINK_TOUCHED_MAX {
        if i >= n {
            break;
        }
        if touched.inodes[i].ino == id.ino && touched.inodes[i].dev == id.dev {
            return;
        }
    }
    if n < LINK_TOUCHED_MAX {
        touched.inodes[n] = id;
    }
    touched.count = touched.count.saturating_add(1);
}

/// Moves thread `tid`'s kept inodes into `out` (zero when it has none). A subprogram: the copy
/// is not on the frame the exit's path walk is called from.
#[inline(never)]
fn take_touched(tid: u32, out: &mut LinkTouched) {
    match unsafe { LINK_TOUCHED.get(tid) } {
        Some(t) => {
            *out = *t;
            let _ = LINK_TOUCHED.remove(tid);
        }
        None => out.count = 0,
    }
}

/// `sys_exit` of the calls that name a file: the inodes the kernel changed during the call,
/// and the names passed (read now: the kernel has just faulted them in). A subprogram: the
/// dispatcher's frame stays as it was.
#[inline(never)]
pub fn on_exit(class: u8, regs: impl Regs, ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(rec) = scratch(&LINK_SCRATCH) else {
        let _ = LINK_TOUCHED.remove(tid);
        return;
    };
    // Taken whatever the scope: the ctime programs keep any thread's that may be in one.
    take_touched(tid, &mut rec.touched);
    let Some((task, policy)) = scope::check_at(kind::LINK, regs) else {
        return;
    };
    let arg = |n: usize| regs.arg(n);
    // (old dfd, old name, new dfd, new name, flags), by argument layout.
    let (old_dfd, from, new_dfd, to, call_flags) = match class {
        sys_class::RENAME | sys_class::LINK => (AT_FDCWD, arg(0), AT_FDCWD, arg(1), 0),
        sys_class::RENAMEAT => (arg(0) as i32, arg(1), arg(2) as i32, arg(3), 0),
        sys_class::RENAMEAT2 | sys_class::LINKAT => {
            (arg(0) as i32, arg(1), arg(2) as i32, arg(3), arg(4) as u32)
        }
        sys_class::SYMLINK => (AT_FDCWD, arg(0), AT_FDCWD, arg(1), 0),
        sys_class::SYMLINKAT => (AT_FDCWD, arg(0), arg(1) as i32, arg(2), 0),
        // The name removed goes where a new name would; there is no source (a null pointer
        // reads as nothing).
        sys_class::UNLINK => (AT_FDCWD, 0, AT_FDCWD, arg(0), 0),
        _ => (AT_FDCWD, 0, arg(0) as i32, arg(1), arg(2) as u32),
    };
    // Into the record at once: little stays live across the path walk below (the frame is on
    // the dispatcher's, under the 512-byte stack).
    rec.call = link_call::of_class(class);
    rec.call_flags = call_flags;
    rec.old_dfd = old_dfd;
    rec.new_dfd = new_dfd;
    rec.ret = ret as i32;
    rec._pad = 0;
    rec.flags = if rec.touched.count == 0 {
        LINK_UNTOUCHED
    } else {
        0
    };
    let Some(mut tail) = Tail::<{ OPEN_TAIL_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };
    // No source (an unlink's) is no flag.
    let (from_len, how) = tail
        .user_str::<OPEN_PATH_MAX>(from)
        .len_flagged(LINK_FROM_TRUNCATED, 0);
    rec.from_len = from_len as u16;
    rec.flags |= how;
    let (to_len, how) = tail
        .user_str::<OPEN_PATH_MAX>(to)
        .len_flagged(LINK_TO_TRUNCATED, LINK_TO_UNAVAILABLE);
    rec.flags |= how;
    rec.to_len = to_len as u16;
    rec.base_len = 0;
    // A relative new name: its base, as an open's (the cwd, or the directory `new_dfd` is).
    let first: u8 = rec.tail[rec.from_len as usize & (OPEN_TAIL_CAP - 1)];
    if to_len > 1 && first != b'/' && policy.resolve_relative_opens != 0 {
        if new_dfd != AT_FDCWD {
            rec.flags |= LINK_BASE_IS_DFD;
        }
        let (n, cut) = tail.base(task, regs, new_dfd);
        rec.base_len = n as u16;
        if cut {
            rec.flags |= LINK_BASE_TRUNCATED;
        }
    }
    // Masked, not compared: the verifier keeps a mask's bound through register copies.
    let used = tail.pos() as usize & (OPEN_TAIL_CAP - 1);
    let size = LINK_FIXED_SIZE + used;
    fill_header(&mut rec.header, kind::LINK, size as u32, task);
    if rec.flags & (LINK_TO_TRUNCATED | LINK_BASE_TRUNCATED | LINK_FROM_TRUNCATED) != 0 {
        crate::maps::count(kind::LINK, vigil_common::counter::TRUNCATED);
    }
    send_prefix(rec, size, kind::LINK);
}
