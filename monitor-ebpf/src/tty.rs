//! Terminal I/O of monitored sessions, for replay: what their processes write to a terminal (what
//! it showed) and, by configuration, what they read from one while it echoes (what was typed).
//!
//! A terminal is recognised by the device behind the fd (pty slaves, major 136-143; virtual
//! consoles and serial lines, major 4), not by the session's controlling tty, so output to a
//! terminal reached through any fd counts. Input read while ECHO is off (password prompts, and
//! shells in raw mode, which echo what they accept themselves, so it is in the output) is never
//! copied.

use aya_ebpf::helpers::{bpf_probe_read_user, generated};
use core::ffi::c_void;
use vigil_common::{
    counter, kind, sys_class, Policy, AUDIT_UNSET, TTY_DATA_CAP, TTY_FIXED_SIZE, TTY_OVER_BUDGET,
    TTY_TRUNCATED, TTY_UNREADABLE,
};

use crate::{
    emit::send_prefix,
    kernel::{fill_header, koff, read, read_ptr, Ptr, Regs},
    maps::{count, scratch, TTY_BUDGET, TTY_SCRATCH},
    scope,
};

/// `ECHO` in `c_lflag`.
const ECHO: u32 = 0o10;

struct Terminal {
    dev: u32,
    tty: Ptr,
}

/// The terminal behind `fd`, when it is one.
#[inline(always)]
fn terminal(regs: impl Regs, fd: u32) -> Option<Terminal> {
    let file = regs.fd_file(fd);
    if file.is_null() {
        return None;
    }
    let inode = read_ptr(file, koff!(file_inode));
    let dev = read::<u32>(inode, koff!(inode_rdev))?;
    let major = dev >> 20;
    if major != 4 && !(136..=143).contains(&major) {
        return None;
    }
    let private = read_ptr(file, koff!(file_private_data));
    let tty = read_ptr(private, koff!(tty_file_private_tty));
    Some(Terminal { dev, tty })
}

/// `sys_exit` of read (input), write and writev (output). One call site for the record, and a
/// subprogram of its own: inlined into each dispatcher arm it made the verifier's walk of the
/// dispatcher explode.
///
/// `in_scope`: the process is known to be in scope (its read was just counted for a followed
/// fd), so only the policy is checked, not the session map.
#[inline(never)]
pub fn on_exit(class: u8, regs: impl Regs, ret: i64, in_scope: bool) {
    if ret <= 0 {
        return;
    }
    let kind = if class == sys_class::READ_TTY {
        kind::TTY_IN
    } else {
        kind::TTY_OUT
    };
    let checked = if in_scope {
        scope::check_kind(kind)
    } else {
        scope::check_at(kind, regs)
    };
    let Some((task, policy)) = checked else {
        return;
    };
    let fd = regs.arg(0) as u32;
    let Some(term) = terminal(regs, fd) else {
        return;
    };
    let mut buf = regs.arg(1);
    let mut len = ret as u64;
    if class == sys_class::READ_TTY {
        let lflag = read::<u32>(term.tty, koff!(tty_termios) + 12).unwrap_or(0);
        if lflag & ECHO == 0 {
            return;
        }
    } else if class == sys_class::WRITEV {
        // The first iovec's bytes; what the others carried is counted, not copied.
        let first: [u64; 2] =
            unsafe { bpf_probe_read_user(buf as *const [u64; 2]) }.unwrap_or([0; 2]);
        buf = first[0];
        if first[1] < len {
            len = first[1];
        }
    } else if class == sys_class::WRITEV_COMPAT {
        // The same, of a 32-bit writev: a `compat_iovec` is two u32s.
        let first: [u32; 2] =
            unsafe { bpf_probe_read_user(buf as *const [u32; 2]) }.unwrap_or([0; 2]);
        buf = first[0] as u64;
        if (first[1] as u64) < len {
            len = first[1] as u64;
        }
    }
    send(kind, task, policy, &term, fd, buf, len, ret as u64);
}

/// Takes `want` bytes from the session's budget; false when it is spent.
#[inline(always)]
fn take_budget(task: Ptr, policy: &Policy, want: u64) -> bool {
    let session = read::<u32>(task, koff!(task_sessionid)).unwrap_or(AUDIT_UNSET);
    let budget = policy.tty_session_budget_kib as u64 * 1024;
    match TTY_BUDGET.get_ptr_mut(session) {
        Some(used) => unsafe {
            if *used + want > budget {
                return false;
            }
            *used += want;
            true
        },
        None => want <= budget && TTY_BUDGET.insert(session, want, 0).is_ok(),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send(
    kind: u16,
    task: Ptr,
    policy: &Policy,
    term: &Terminal,
    fd: u32,
    buf: u64,
    available: u64,
    total: u64,
) {
    let Some(rec) = scratch(&TTY_SCRATCH) else {
        return;
    };
    let mut flags = 0u16;
    let cap = policy.max_tty_bytes as u64;
    let mut len = if available > cap { cap } else { available };
    if len < total {
        flags |= TTY_TRUNCATED;
    }
    if len > 0 && !take_budget(task, policy, len) {
        flags |= TTY_OVER_BUDGET;
        len = 0;
    }
    // Masked, not compared: the verifier keeps a mask's bound.
    let mut n = (len as u32) & (TTY_DATA_CAP as u32 - 1);
    if n > 0 {
        let ret = unsafe {
            generated::bpf_probe_read_user(
                rec.data.as_mut_ptr() as *mut c_void,
                n,
                buf as *const c_void,
            )
        };
        if ret != 0 {
            flags |= TTY_UNREADABLE;
            n = 0;
        }
    }
    rec.total = if total > u32::MAX as u64 {
        u32::MAX
    } else {
        total as u32
    };
    rec.len = n;
    rec.fd = fd;
    rec.dev = term.dev;
    rec.flags = flags;
    let winsize = read::<[u16; 2]>(term.tty, koff!(tty_winsize)).unwrap_or([0; 2]);
    rec.rows = winsize[0];
    rec.cols = winsize[1];
    rec._pad = 0;
    // struct ktermios begins c_iflag, c_oflag, c_cflag, c_lflag.
    let termios = read::<[u32; 4]>(term.tty, koff!(tty_termios)).unwrap_or([0; 4]);
    rec.oflag = termios[1];
    rec.lflag = termios[3];
    let size = TTY_FIXED_SIZE + (n as usize & (TTY_DATA_CAP - 1));
    fill_header(&mut rec.header, kind, size as u32, task);
    if flags != 0 {
        count(kind, counter::TRUNCATED);
    }
    send_prefix(rec, size, kind);
}
