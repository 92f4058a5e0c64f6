//! open: `open`, `openat`, `openat2`, `creat` and `open_by_handle_at`, reported at syscall exit
//! with the result; and `pidfd_getfd`, which gives a process another's open file, as an open of
//! that file.

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_user};
use vigil_common::{
    counter, kind, open_syscall, path_flag, sys_class, FileId, FileReadRecord, FileReadStats,
    OpenFileKey, OpenRecord, PathWalk, AT_FDCWD, AUDIT_UNSET, OPEN_BASE_IS_DFD, OPEN_CWD_TRUNCATED,
    OPEN_FIXED_SIZE, OPEN_PATH_MAX, OPEN_PATH_TRUNCATED, OPEN_PATH_UNAVAILABLE,
    OPEN_READS_UNTRACKED, OPEN_TAIL_CAP, OPEN_TAIL_SPAN,
};

use crate::{
    emit::{emit, send_prefix},
    fold,
    kernel::{current_tgid, file_id, fill_header, koff, process_root, Ptr, Regs},
    maps::{count, scratch, FILE_ORIGIN, OPEN_FILES, OPEN_SCRATCH},
    scope,
    tail::Tail,
};

/// `sys_exit` of open, openat, openat2 and creat (of a process `outside_every_session`: only
/// the `loginuid` watch, which any process's open may trip). Everything is read now: the
/// arguments from the saved user registers (unchanged by the call), the path from user memory,
/// which the kernel has just faulted in (reading it at entry can see an empty path).
#[inline(always)]
pub fn on_exit(class: u8, regs: impl Regs, ret: i64, outside_every_session: bool) {
    let args = open_args(class, regs);
    if ret >= 0 {
        scope::watch_loginuid_open(args[3] as u32, ret as u32);
    }
    if outside_every_session {
        return;
    }
    let Some((task, policy)) = scope::check_at(kind::OPEN, regs) else {
        return;
    };
    // The file actually opened, whatever the path the call named. Whether the open is folded
    // is decided on it first: a folded open (a loader's library, a loop over one file) costs
    // no copy of its path, its base directory or its file's path.
    let opened = if ret >= 0 && policy.canonical_paths != 0 {
        regs.fd_file(ret as u32)
    } else {
        core::ptr::null()
    };
    // One time for the record and, when it may repeat, the fold slot it starts.
    let now = unsafe { bpf_ktime_get_ns() };
    let id = if opened.is_null() {
        FileId::default()
    } else {
        let id = file_id(opened);
        // The record still goes out: the open of the denied file is the evidence.
        let enforced = crate::respond::on_open(task, opened);
        if policy.fold_opens != 0 && !enforced {
            let reads_followed = scope::kind_enabled(kind::FILE_READ);
            let fd = if reads_followed {
                ret as u32
            } else {
                fold::NO_FD
            };
            let flags_fd = args[3] as u32 as u64 | (fd as u64) << 32;
            let verdict = fold::decide(opened, &id, flags_fd, policy.fold_repeat_window_ms, now);
            if verdict != fold::SEND {
                if verdict & fold::HELD != 0 {
                    // Its reads are counted in the fold entry: an entry still here for the
                    // same fd (closed without `close(2)`) must not take them.
                    crate::read::retire_followed(task, fd);
                } else if reads_followed {
                    let (how, origin) = if verdict == fold::ROUTINE {
                        (vigil_common::fold::ROUTINE, 0)
                    } else {
                        (vigil_common::fold::REPEAT, verdict)
                    };
                    track_folded(task, fd, how, origin);
                }
                return;
            }
        }
        id
    };
    let Some(rec) = scratch(&OPEN_SCRATCH) else {
        return;
    };
    let mut flags = 0u16;
    let Some(mut tail) = Tail::<{ OPEN_TAIL_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };
    // open_by_handle_at and pidfd_getfd name no path: the file opened is all there is.
    let path_len = if matches!(
        class,
        sys_class::OPEN_BY_HANDLE | sys_class::FD_FROM_PROCESS
    ) {
        0
    } else {
        let (n, how) = tail
            .user_str::<OPEN_PATH_MAX>(args[2])
            .len_flagged(OPEN_PATH_TRUNCATED, OPEN_PATH_UNAVAILABLE);
        flags |= how;
        n
    };
    let dfd = args[1] as u32 as i32;
    // A relative path: add its base (the cwd, or the directory `dfd` refers to: what tar,
    // rsync, find and `dir_fd` use) so the daemon can show the absolute path asked for.
    let mut cwd_len = 0;
    if path_len > 1 && policy.resolve_relative_opens != 0 {
        let first: u8 = unsafe { *rec.tail.as_ptr() };
        if first != b'/' {
            if dfd != AT_FDCWD {
                flags |= OPEN_BASE_IS_DFD;
            }
            let (n, cut) = tail.base(task, regs, dfd);
            cwd_len = n;
            if cut {
                flags |= OPEN_CWD_TRUNCATED;
            }
        }
    }
    rec.file = id;
    let (memory_tgid, memory_sessionid) =
        if !opened.is_null() && crate::kernel::is_process_memory(opened) {
            rec.file.flags |= vigil_common::file_flag::PROCESS_MEMORY;
            crate::kernel::memory_owner(opened)
        } else {
            (0, AUDIT_UNSET)
        };
    rec.memory_tgid = memory_tgid;
    rec.memory_sessionid = memory_sessionid;
    rec.dir_ino = if opened.is_null() {
        0
    } else {
        crate::kernel::parent_dir_ino(opened)
    };
    rec.file_path = if opened.is_null() {
        PathWalk::UNAVAILABLE
    } else {
        tail.path(opened.wrapping_add(koff!(file_path)), process_root(task))
    };
    rec.open_flags = args[3] as u32;
    rec.mode = (args[3] >> 32) as u32;
    rec.dfd = dfd;
    rec.ret = ret as i32;
    rec.syscall = args[0] as u16;
    rec.path_len = path_len as u16;
    rec.cwd_len = cwd_len as u16;
    rec.flags = flags;
    let size = seal(rec, tail.pos(), task);
    rec.header.ktime_ns = now;
    let ktime = rec.header.ktime_ns;
    // Following starts before the record goes out, so the record can say when the table had no
    // room. Such a file is counted once, here: it gets no origin either, so its reads do not
    // try (and count) again.
    let followed = ret >= 0
        && scope::kind_enabled(kind::FILE_READ)
        && track_read_volume(task, ret as u32, ktime);
    if ret >= 0 && !followed {
        rec.flags |= OPEN_READS_UNTRACKED;
    }
    send_prefix(rec, size, kind::OPEN);
    if followed {
        let file = if opened.is_null() {
            regs.fd_file(ret as u32)
        } else {
            opened
        };
        if !file.is_null() {
            let _ = FILE_ORIGIN.insert(file as u64, ktime, 0);
        }
    }
}

/// `sys_exit` of ftruncate(fd, len) and truncate(path, len): a file cut to a length is what an
/// open with `O_TRUNC` does to it (a log emptied), and it goes out as an open record of that
/// call (`O_WRONLY|O_TRUNC`), which every rule on truncated files reads. ftruncate's file is
/// the fd's, walked as an open's; truncate's is the path passed, made absolute (nothing was
/// opened: the kernel holds no file to name). Nothing of it is folded or followed for reads.
/// A subprogram, apart from [`on_exit`]: that body is inlined into the dispatcher, whose frame
/// has no room left; and it takes scalars only (`arg0`, the fd or the path), as a structure
/// passed would be a copy on that frame.
#[inline(never)]
pub fn on_cut_exit(by_fd: bool, arg0: u64, ret: i64) {
    let Some((task, policy)) = scope::check(kind::OPEN) else {
        return;
    };
    let Some(rec) = scratch(&OPEN_SCRATCH) else {
        return;
    };
    let Some(mut tail) = Tail::<{ OPEN_TAIL_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };
    let file = if by_fd && ret >= 0 {
        crate::kernel::fd_file(task, arg0 as u32)
    } else {
        core::ptr::null()
    };
    // Into the record at once: little stays live across the path walks below.
    rec.flags = OPEN_READS_UNTRACKED;
    rec.path_len = 0;
    rec.cwd_len = 0;
    if !by_fd {
        let (n, how) = tail
            .user_str::<OPEN_PATH_MAX>(arg0)
            .len_flagged(OPEN_PATH_TRUNCATED, OPEN_PATH_UNAVAILABLE);
        rec.path_len = n as u16;
        rec.flags |= how;
        let first: u8 = rec.tail[0];
        if rec.path_len > 1 && first != b'/' && policy.resolve_relative_opens != 0 {
            let (n, cut, _) = tail.cwd(task);
            rec.cwd_len = n as u16;
            if cut {
                rec.flags |= OPEN_CWD_TRUNCATED;
            }
        }
    }
    rec.file = file_id(file);
    rec.memory_tgid = 0;
    rec.memory_sessionid = AUDIT_UNSET;
    rec.dir_ino = if file.is_null() {
        0
    } else {
        crate::kernel::parent_dir_ino(file)
    };
    rec.file_path = if file.is_null() {
        PathWalk::UNAVAILABLE
    } else {
        tail.path(file.wrapping_add(koff!(file_path)), process_root(task))
    };
    // O_WRONLY | O_TRUNC.
    rec.open_flags = 0o1001;
    rec.mode = 0;
    rec.dfd = if by_fd { arg0 as i32 } else { AT_FDCWD };
    rec.ret = ret as i32;
    rec.syscall = if by_fd {
        open_syscall::FTRUNCATE
    } else {
        open_syscall::TRUNCATE
    };
    let size = seal(rec, tail.pos(), task);
    send_prefix(rec, size, kind::OPEN);
}

/// Closes an open record built in scratch, its tail written up to `tail_pos`: its header, and
/// the count of one whose path or base was cut. Returns the size to send (masked, not
/// compared: the verifier keeps a mask's bound through register copies).
#[inline(always)]
fn seal(rec: &mut OpenRecord, tail_pos: u32, task: Ptr) -> usize {
    let size = OPEN_FIXED_SIZE + (tail_pos as usize & (OPEN_TAIL_CAP - 1));
    fill_header(&mut rec.header, kind::OPEN, size as u32, task);
    if rec.flags & (OPEN_PATH_TRUNCATED | OPEN_CWD_TRUNCATED) != 0
        || rec.file_path.flags & path_flag::TRUNCATED != 0
    {
        count(kind::OPEN, counter::TRUNCATED);
    }
    size
}

/// Starts counting the bytes read from a newly opened fd; false when the table is full (counted
/// as untracked). An entry still there for the same fd (closed without `close(2)`: `dup2` over
/// it, `close_range`) is reported first, not overwritten.
#[inline(always)]
fn track_read_volume(task: Ptr, fd: u32, open_ktime_ns: u64) -> bool {
    // A folded open's fd of the same number still held (closed without `close(2)`) is let go:
    // reads of this fd are this open's.
    fold::release_fd(fd);
    follow_fd(task, fd, open_ktime_ns, 0)
}

/// Counts the reads of a folded open's fd into its fold (see `fold::absorb_reads`). No origin
/// is kept for its `struct file`: reads through another fd of it are not followed (a routine
/// file, unchanged since the daemon registered it; or a repeat of a file whose sent open
/// already has its own).
#[inline(never)]
fn track_folded(task: Ptr, fd: u32, how: u32, origin_ktime_ns: u64) {
    follow_fd(task, fd, origin_ktime_ns, how);
}

/// The fd's entry in `OPEN_FILES`, for the open at `open_ktime_ns` (folded as `fold`, or 0).
#[inline(always)]
fn follow_fd(task: Ptr, fd: u32, open_ktime_ns: u64, fold: u32) -> bool {
    const BPF_NOEXIST: u64 = 1;
    const EEXIST: i32 = 17;
    let key = OpenFileKey {
        tgid: current_tgid(),
        fd,
    };
    let stats = FileReadStats {
        open_ktime_ns,
        fold,
        ..FileReadStats::default()
    };
    // Almost always the fd has no entry: one insert. An entry still there is reported, then
    // replaced.
    let inserted = match OPEN_FILES.insert(key, stats, BPF_NOEXIST) {
        Err(e) if e == -EEXIST => {
            if let Some(stale) = unsafe { OPEN_FILES.get(key) } {
                report_read_volume(task, fd, stale);
            }
            OPEN_FILES.insert(key, stats, 0)
        }
        other => other,
    };
    if inserted.is_err() {
        count(kind::FILE_READ, counter::UNTRACKED);
        return false;
    }
    true
}

/// Sends the read volume of a file; files never read (mmapped libraries, writes) send nothing.
/// A folded open's reads go into its fold while that still counts. Not inlined: it is reached
/// from the open, close and dup paths of the one `sys_exit` program.
///
/// `stats` is the table's entry itself (read in place, not copied: every byte of a frame on the
/// open path counts against the 512-byte stack, see `kernel::Span`).
#[inline(never)]
pub fn report_read_volume(task: Ptr, fd: u32, stats: &FileReadStats) {
    if stats.reads == 0 || stats.fold != 0 && fold::absorb_reads(stats) {
        return;
    }
    emit::<FileReadRecord>(kind::FILE_READ, task, |rec| unsafe {
        (*rec).fd = fd;
        (*rec)._pad = 0;
        (*rec).stats = *stats;
    });
}

/// `O_PATH` of include/uapi/asm-generic/fcntl.h.
const O_PATH: u64 = 0o10000000;

/// The call's arguments normalised to (syscall, dfd, path, flags | mode << 32).
#[inline(always)]
fn open_args(class: u8, regs: impl Regs) -> [u64; 4] {
    match class {
        sys_class::OPENAT => [
            open_syscall::OPENAT as u64,
            regs.arg(0),
            regs.arg(1),
            regs.arg(2) | (regs.arg(3) << 32),
        ],
        sys_class::OPEN => [
            open_syscall::OPEN as u64,
            AT_FDCWD as u32 as u64,
            regs.arg(0),
            regs.arg(1) | (regs.arg(2) << 32),
        ],
        sys_class::OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; } in user memory.
            let how = regs.arg(2) as *const u64;
            let flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            [
                open_syscall::OPENAT2 as u64,
                regs.arg(0),
                regs.arg(1),
                (flags & 0xffff_ffff) | (mode << 32),
            ]
        }
        sys_class::OPEN_BY_HANDLE => [
            // open_by_handle_at(mount_fd, handle, flags): no path, no mode (it cannot create).
            open_syscall::OPEN_BY_HANDLE_AT as u64,
            regs.arg(0),
            0,
            regs.arg(2) & 0xffff_ffff,
        ],
        sys_class::FD_FROM_PROCESS => [
            // pidfd_getfd(pidfd, targetfd, flags).
            // Never folded (as `O_PATH`): a copied fd is always worth its record. The daemon
            // takes its access from the file (`FileId::flags`, from `f_mode`).
            open_syscall::PIDFD_GETFD as u64,
            regs.arg(0),
            0,
            O_PATH,
        ],
        _ => [
            // creat(path, mode) == open(path, O_CREAT|O_WRONLY|O_TRUNC, mode)
            open_syscall::CREAT as u64,
            AT_FDCWD as u32 as u64,
            regs.arg(0),
            0o1101 | (regs.arg(1) << 32),
        ],
    }
}
