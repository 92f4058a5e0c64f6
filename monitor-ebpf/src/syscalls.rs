//! Syscall dispatch: the raw `sys_exit` tracepoint for everything followed, and per-syscall entry
//! tracepoints for the few calls that need the state before the call.
//!
//! Most work happens at exit, when the result is known; the arguments are read from the saved
//! user registers then (x86_64 handlers take `const struct pt_regs *`). Entry only keeps the
//! credentials of calls that may change them.
//!
//! Exits go through one raw-tracepoint program rather than a tracepoint per syscall: per-syscall
//! tracepoints make the kernel set up a perf record and copy the arguments for each call before
//! our program even runs, which unmonitored processes would pay on every open and read. Here a
//! syscall nobody follows costs one register read and a load from each class table (native and
//! 32-bit); a followed one of a process outside every session costs the thread's ABI, the login
//! uid and two loads more (and is not counted as filtered: counting it would cost every service
//! a map update per syscall); any other is handed to its source module, which checks the scope
//! first.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use vigil_common::{counter, kind, sys_class};

use crate::{
    compat, connect, exec, io_uring,
    kernel::{compat_sys_class, sys_class, tp_layout, BtfRegs, Exit, HookRegs, Ptr, SysRegs},
    maps::count,
    open, privs, read, tty,
};

/// Entry of execve, execveat and the set*id family only (per-syscall tracepoints: the kernel
/// runs this program for those calls alone, and every other syscall pays a bitmap test). It keeps
/// the credentials before the call, which are gone by its exit.
#[tracepoint]
pub fn vigil_creds(ctx: TracePointContext) -> u32 {
    let nr = unsafe { ctx.read_at::<i32>(tp_layout!(sys_nr)) }.unwrap_or(-1) as u32;
    let class = sys_class(nr as u64);
    if class == sys_class::EXECVE {
        exec::on_execve_enter(nr);
    } else if class > sys_class::PRIV_BASE {
        let arg =
            |n: usize| unsafe { ctx.read_at::<u64>(tp_layout!(sys_args) + 8 * n) }.unwrap_or(0);
        privs::on_enter(nr, [arg(0), arg(1), arg(2)]);
    }
    0
}

/// `sys_exit` as a BTF-typed tracepoint, where the kernel has BTF (every kernel this daemon
/// runs on): the registers are a typed pointer, read with plain checked loads. The daemon falls
/// back to [`vigil_raw_exit`] when this one cannot be loaded.
#[btf_tracepoint(function = "sys_exit")]
pub fn vigil_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    sys_exit(BtfRegs(ctx.arg::<u64>(0) as Ptr), ctx.arg(1))
}

/// `sys_exit` as a raw tracepoint: the registers read with `bpf_probe_read_kernel`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn vigil_raw_exit(ctx: RawTracePointContext) -> i32 {
    sys_exit(SysRegs(ctx.arg::<u64>(0) as Ptr), ctx.arg(1))
}

/// Either program's body. The number is in the registers, and so are the arguments, as the
/// process passed them (syscalls do not write them back).
///
/// A 64-bit process can also make 32-bit syscalls (`int 0x80`, where the kernel has ia32
/// emulation): other numbers (5 is open there, fstat here) and other registers. Both tables are
/// looked at first; the thread's ABI is read only for a number either follows, and picks the
/// class and, through [`Exit`], the registers every handler reads.
#[inline(always)]
fn sys_exit(regs: impl HookRegs, ret: i64) -> i32 {
    let nr = regs.nr();
    let native = sys_class(nr);
    let compat = compat_sys_class(nr);
    if native == sys_class::NONE && compat == sys_class::NONE {
        return 0;
    }
    let is_compat = regs.in_compat_syscall();
    let class = if is_compat { compat } else { native };
    if class == sys_class::NONE || class == sys_class::EXECVE {
        return 0;
    }
    // Outside every session (every service, on a host where no session process has unset its
    // login uid): decided from the login uid and two loads before anything else is read or
    // counted, since every followed syscall of every process comes this way. The handlers would
    // decide the same in `scope::check_at`; only what they do for any process, in a session or
    // not, still runs: an open's `loginuid` watch, io_uring's flag, the set*id bookkeeping.
    let regs = Exit::read(regs, is_compat);
    let outside = crate::scope::outside_every_session(regs.login);
    if outside && !of_any_process(class) {
        return 0;
    }
    // A process of a killed or held session is signalled at any followed call (one load when
    // no response is in force).
    crate::respond::enforce_session();
    if is_compat {
        compat::on_syscall(regs, nr as u32, ret);
    }
    match class {
        sys_class::OPENAT
        | sys_class::OPEN
        | sys_class::OPENAT2
        | sys_class::CREAT
        | sys_class::OPEN_BY_HANDLE
        | sys_class::FD_FROM_PROCESS => open::on_exit(class, regs, ret, outside),
        sys_class::READ_FD0 | sys_class::READ_FD1 => {
            read::on_exit(class, regs, ret);
        }
        sys_class::READ_TTY | sys_class::WRITE | sys_class::WRITEV | sys_class::WRITEV_COMPAT => {
            // A read counted for a followed fd: the process is known to be in scope.
            let in_scope =
                class == sys_class::READ_TTY && read::on_exit(sys_class::READ_FD0, regs, ret);
            tty::on_exit(class, regs, ret, in_scope);
        }
        sys_class::CLOSE => read::on_close(regs),
        sys_class::DUP_ONTO => read::on_dup_onto(ret),
        sys_class::CONNECT | sys_class::SOCKETCALL => {
            connect::on_exit(regs, ret, class == sys_class::SOCKETCALL)
        }
        sys_class::IO_URING_SETUP => {
            // A ring's writes pass no tracepoint: one of them could unset a login uid.
            if ret >= 0 {
                crate::scope::note_loginuid_written();
            }
            io_uring::on_exit(regs, ret)
        }
        sys_class::PRIV_UNDECODED => {
            if crate::scope::check_at(kind::PRIV, regs).is_some() {
                count(kind::PRIV, counter::UNTRACKED);
            }
        }
        c if c > sys_class::PRIV_BASE => {
            privs::on_exit(nr as u32, (c - sys_class::PRIV_BASE) as u16, ret)
        }
        _ => {}
    }
    0
}

/// Classes whose exit does something for a process outside every session too.
#[inline(always)]
fn of_any_process(class: u8) -> bool {
    matches!(
        class,
        sys_class::OPENAT
            | sys_class::OPEN
            | sys_class::OPENAT2
            | sys_class::CREAT
            | sys_class::OPEN_BY_HANDLE
            | sys_class::FD_FROM_PROCESS
            | sys_class::IO_URING_SETUP
    ) || class > sys_class::PRIV_BASE
}

/// The mechanism's floor, for `cargo xtask bench overhead`: an empty program on the same hook
/// as [`vigil_raw_exit`]. Never attached by the daemon; what it costs every syscall of every
/// process is what any raw `sys_exit` program costs before it does anything.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn vigil_raw_floor(_ctx: RawTracePointContext) -> i32 {
    0
}

/// [`vigil_raw_floor`] on the typed hook, the floor of [`vigil_sys_exit`].
#[btf_tracepoint(function = "sys_exit")]
pub fn vigil_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}
