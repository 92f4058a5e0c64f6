//! exec: successful execs (`sched:sched_process_exec`), and the credentials kept at
//! `sys_enter_execve(at)` to report execs that changed ids (setuid binaries, sudo, su).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use vigil_common::{
    counter, kind, path_flag, priv_op, stdio_kind, FileId, PathWalk, PrivRecord, EXEC_ARGV_MAX,
    EXEC_ARGV_TRUNCATED, EXEC_ARGV_UNAVAILABLE, EXEC_CWD_TRUNCATED, EXEC_CWD_UNAVAILABLE,
    EXEC_FILENAME_MAX, EXEC_FILENAME_TRUNCATED, EXEC_FIXED_SIZE, EXEC_PREFIX_SPAN, EXEC_TAIL_CAP,
    TTY_NAME_MAX,
};

use crate::{
    emit::{emit, send_prefix},
    kernel::{
        cred_ids, current_tid, fd_file, file_id, fill_header, koff, process_root, read, read_ptr,
        tp_layout, Ptr,
    },
    maps::{count, scratch, Pending, EXEC_SCRATCH, PENDING},
    scope,
    tail::{Copied, Tail},
};

/// `sys_enter` of execve and execveat: keeps the credentials, to tell at `sched_process_exec`
/// whether the exec changed them.
#[inline(always)]
pub fn on_execve_enter(nr: u32) {
    let Some((task, _)) = scope::check(kind::PRIV) else {
        return;
    };
    let pending = Pending {
        nr,
        _pad: 0,
        args: [0; 4],
        old: cred_ids(task),
    };
    if PENDING.insert(current_tid(), pending, 0).is_err() {
        count(kind::PRIV, counter::UNTRACKED);
    }
}

#[tracepoint]
pub fn vigil_exec(ctx: TracePointContext) -> u32 {
    let old_pid: u32 = unsafe { ctx.read_at::<i32>(tp_layout!(exec_old_pid)) }.unwrap_or(0) as u32;
    // A denied program (or a process of a killed session) is signalled first; its exec is
    // still recorded, and its exit shows the SIGKILL.
    crate::respond::on_exec();
    // What the old program folded, before the new one's record (its opens are the new one's).
    if let Some((task, _)) = scope::check(kind::OPENS_FOLDED) {
        crate::fold::flush(task, false);
    }
    emit_exec(&ctx, old_pid);
    // After the exec record: the daemon then knows the program that gained the ids (a trusted
    // sudo is told apart from a copy) when it sees the change.
    if let Some((task, _)) = scope::check(kind::PRIV) {
        exec_priv_change(task, old_pid);
    }
    0
}

#[inline(always)]
fn emit_exec(ctx: &TracePointContext, old_pid: u32) {
    let Some((task, policy)) = scope::check(kind::EXEC) else {
        return;
    };
    let Some(rec) = scratch(&EXEC_SCRATCH) else {
        return;
    };
    let mut flags = 0u32;
    let Some(mut tail) = Tail::<{ EXEC_PREFIX_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };

    // filename: __data_loc (offset in the low 16 bits) into the tracepoint record.
    let loc: u32 = unsafe { ctx.read_at::<u32>(tp_layout!(exec_filename)) }.unwrap_or(0);
    let filename = (ctx.as_ptr() as Ptr).wrapping_add((loc & 0xffff) as usize);
    let (filename_len, cut) = tail
        .kernel_str::<EXEC_FILENAME_MAX>(filename)
        .len_flagged(EXEC_FILENAME_TRUNCATED, 0);
    flags |= cut;

    // Controlling terminal: task->signal->tty->name.
    let signal = read_ptr(task, koff!(task_signal));
    let tty = read_ptr(signal, koff!(signal_tty));
    let tty_len = if tty.is_null() {
        0
    } else {
        match tail.kernel_str::<TTY_NAME_MAX>(tty.wrapping_add(koff!(tty_name))) {
            Copied::Whole(n) | Copied::Cut(n) => n,
            Copied::Failed => 0,
        }
    };

    let (cwd_len, cwd_cut, cwd_missing) = tail.cwd(task);
    if cwd_cut {
        flags |= EXEC_CWD_TRUNCATED;
    }
    if cwd_missing {
        flags |= EXEC_CWD_UNAVAILABLE;
    }

    // The file the kernel loaded: set in the new mm before this tracepoint fires.
    let mm = read_ptr(task, koff!(task_mm));
    let exe_file = read_ptr(mm, koff!(mm_exe_file));
    if policy.canonical_paths != 0 && !exe_file.is_null() {
        rec.exe = file_id(exe_file);
        rec.exe_path = tail.path(exe_file.wrapping_add(koff!(file_path)), process_root(task));
    } else {
        rec.exe = FileId::default();
        rec.exe_path = PathWalk::UNAVAILABLE;
    }

    // argv: the new image's argument area, NUL-separated, copied in one read.
    let arg_start = read::<u64>(mm, koff!(mm_arg_start)).unwrap_or(0);
    let arg_end = read::<u64>(mm, koff!(mm_arg_end)).unwrap_or(0);
    let total = if arg_end > arg_start && !mm.is_null() {
        arg_end - arg_start
    } else {
        0
    };
    let limit = if policy.max_argv_bytes < EXEC_ARGV_MAX {
        policy.max_argv_bytes
    } else {
        EXEC_ARGV_MAX
    };
    let mut want = if total > limit as u64 {
        flags |= EXEC_ARGV_TRUNCATED;
        limit
    } else {
        total as u32
    };
    let argv_start = tail.pos();
    if total == 0 || !tail.user_bytes::<EXEC_ARGV_MAX>(arg_start, want) {
        flags |= EXEC_ARGV_UNAVAILABLE;
        want = 0;
    }
    let argv_len = tail.pos().wrapping_sub(argv_start) & EXEC_ARGV_MAX;
    let _ = want;

    rec.old_pid = old_pid;
    rec.flags = flags;
    rec.filename_len = filename_len as u16;
    rec.tty_len = tty_len as u16;
    rec.cwd_len = cwd_len as u16;
    rec.argv_len = argv_len as u16;
    rec.argv_total = if total > u32::MAX as u64 {
        u32::MAX
    } else {
        total as u32
    };
    rec.stdio = [fd_kind(task, 0), fd_kind(task, 1), fd_kind(task, 2)];
    rec._pad = 0;

    // Masked, not compared: the verifier keeps a mask's bound through register copies.
    let used = tail.pos() as usize & (EXEC_TAIL_CAP - 1);
    let size = EXEC_FIXED_SIZE + used;
    fill_header(&mut rec.header, kind::EXEC, size as u32, task);
    if flags & (EXEC_ARGV_TRUNCATED | EXEC_FILENAME_TRUNCATED | EXEC_CWD_TRUNCATED) != 0
        || rec.exe_path.flags & path_flag::TRUNCATED != 0
    {
        count(kind::EXEC, counter::TRUNCATED);
    }
    send_prefix(rec, size, kind::EXEC);
}

/// What `fd` of `task` is, from its inode's file type.
#[inline(never)]
fn fd_kind(task: Ptr, fd: u32) -> u8 {
    let file = fd_file(task, fd);
    if file.is_null() {
        return stdio_kind::NONE;
    }
    let inode = read_ptr(file, koff!(file_inode));
    match read::<u16>(inode, koff!(inode_mode)).map(|m| m & 0o170000) {
        Some(0o010000) => stdio_kind::PIPE,
        Some(0o140000) => stdio_kind::SOCKET,
        Some(0o020000) => stdio_kind::TTY,
        Some(0o100000) => stdio_kind::FILE,
        Some(_) => stdio_kind::OTHER,
        None => stdio_kind::NONE,
    }
}

/// Reports an exec that changed the task's ids, comparing them with those kept at
/// `sys_enter_execve` by the thread that called exec.
#[inline(always)]
fn exec_priv_change(task: Ptr, old_pid: u32) {
    let Some(pending) = (unsafe { PENDING.get(old_pid) }) else {
        return;
    };
    let old = pending.old;
    let _ = PENDING.remove(old_pid);
    let new = cred_ids(task);
    if old == new {
        return;
    }
    emit::<PrivRecord>(kind::PRIV, task, |rec| unsafe {
        (*rec).op = priv_op::EXEC;
        (*rec)._pad = 0;
        (*rec).ret = 0;
        (*rec).requested = [u32::MAX; 3];
        (*rec)._pad2 = 0;
        (*rec).old = old;
        (*rec).new = new;
    });
}
