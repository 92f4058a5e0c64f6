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
    macros::{btf_tracepoint, fexit, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, TracePointContext},
};
use vigil_common::{counter, kind, sys_class, X86_64_SYSCALL_ENTRIES};

use crate::{
    bpf, compat, connect, exec, io_uring,
    kernel::{compat_sys_class, sys_class, tp_layout, BtfRegs, Exit, HookRegs, Ptr, Regs, SysRegs},
    link,
    maps::count,
    open, privs, process_access, read, socket, tty,
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
///
/// `inline(always)` reaches the function the macro wraps the body in: outlined, its frame
/// comes on top of the dispatcher's, past the 512-byte stack on the deepest chain.
#[raw_tracepoint(tracepoint = "sys_exit")]
#[inline(always)]
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
    let task = regs.task();
    let is_compat = regs.in_compat_syscall(task);
    let class = if is_compat { compat } else { native };
    on_exit(class, is_compat, regs, task, nr, ret)
}

/// One followed syscall's exit, its class and ABI known: from the tables on the `sys_exit`
/// hook, from the function an `fexit` program is attached to (constants there, so each of
/// those programs holds only its own class's handler).
#[inline(always)]
fn on_exit<R: HookRegs>(
    class: u8,
    is_compat: bool,
    regs: R,
    task: R::Task,
    nr: u64,
    ret: i64,
) -> i32 {
    if class == sys_class::NONE || class == sys_class::EXECVE {
        return 0;
    }
    // Outside every session (every service, on a host where no session process has unset its
    // login uid): decided from the login uid and two loads before anything else is read or
    // counted, since every followed syscall of every process comes this way. The handlers would
    // decide the same in `scope::check_at`; only what they do for any process, in a session or
    // not, still runs: an open's `loginuid` watch, io_uring's flag, the set*id bookkeeping.
    let regs = Exit::read(regs, is_compat, task);
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
        sys_class::FTRUNCATE | sys_class::TRUNCATE => {
            open::on_cut_exit(class == sys_class::FTRUNCATE, regs.arg(0), ret)
        }
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
        // socketcall's socket(2) goes to its own module from here, not through connect's
        // subprogram: a third frame on the chain would pass the kernel's 512-byte stack limit.
        sys_class::SOCKETCALL if regs.arg(0) == connect::SYS_SOCKET => {
            socket::on_exit(regs, ret, true)
        }
        sys_class::CONNECT | sys_class::SOCKETCALL => {
            connect::on_exit(regs, ret, class == sys_class::SOCKETCALL)
        }
        sys_class::SEND => connect::on_send_exit(regs, ret, regs.arg(0) as u32),
        sys_class::BPF => bpf::on_exit(regs, ret),
        sys_class::SOCKET => socket::on_exit(regs, ret, false),
        sys_class::PTRACE | sys_class::PROCESS_VM_READ | sys_class::PROCESS_VM_WRITE => {
            process_access::on_exit(class, regs, ret)
        }
        c if sys_class::is_link(c) => link::on_exit(c, regs, ret),
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

/// The exit of syscall entry function `I` of [`X86_64_SYSCALL_ENTRIES`], as an `fexit` program
/// sees it (`long __x64_sys_openat(const struct pt_regs *regs)`: the registers, then the
/// result). Where the kernel allows fexit the daemon attaches one of these to each entry
/// function instead of one program to `sys_exit`, so a syscall nobody follows runs no program
/// at all, and a followed one runs only its own class's handler: the class and ABI are
/// constants of the program, not table loads.
///
/// What changes for a process trying to get past it: the 32-bit ABI has its own entry
/// functions (hooked, from the i386 table); x32 calls, which share the native entry functions,
/// are followed here although the `sys_exit` tables (by number) do not know their numbers.
#[inline(always)]
fn entry_exit<const I: usize>(ctx: FExitContext) -> i32 {
    entry_exit_of::<I>(BtfRegs(ctx.arg::<u64>(0) as Ptr), ctx.arg(1))
}

/// [`entry_exit`] from the registers and the result (the twins of the fexit programs in the
/// `entry-check` object call it too).
#[inline(always)]
pub fn entry_exit_of<const I: usize>(regs: BtfRegs, ret: i64) -> i32 {
    let class = const { X86_64_SYSCALL_ENTRIES[I].class };
    let compat = const { X86_64_SYSCALL_ENTRIES[I].compat };
    on_exit(class, compat, regs, regs.task(), regs.nr(), ret)
}

/// One `fexit` program per entry of [`X86_64_SYSCALL_ENTRIES`] (a tracing program attaches to
/// one function; the daemon names the function at load). Each has a twin on `tp_btf/sys_exit`
/// in the `entry-check` object (src/entry_check.rs), which tests put through the verifier of
/// kernels that refuse fexit.
macro_rules! syscall_entry_programs {
    ($($index:literal $name:ident),* $(,)?) => {
        $(
            #[fexit]
            pub fn $name(ctx: FExitContext) -> i32 {
                entry_exit::<$index>(ctx)
            }
        )*
        const _: () = assert!(
            [$($index),*].len() == X86_64_SYSCALL_ENTRIES.len(),
            "one vigil_fexit_<i> program per syscall entry"
        );
    };
}

syscall_entry_programs!(
    0 vigil_fexit_0, 1 vigil_fexit_1, 2 vigil_fexit_2, 3 vigil_fexit_3, 4 vigil_fexit_4,
    5 vigil_fexit_5, 6 vigil_fexit_6, 7 vigil_fexit_7, 8 vigil_fexit_8, 9 vigil_fexit_9,
    10 vigil_fexit_10, 11 vigil_fexit_11, 12 vigil_fexit_12, 13 vigil_fexit_13, 14 vigil_fexit_14,
    15 vigil_fexit_15, 16 vigil_fexit_16, 17 vigil_fexit_17, 18 vigil_fexit_18, 19 vigil_fexit_19,
    20 vigil_fexit_20, 21 vigil_fexit_21, 22 vigil_fexit_22, 23 vigil_fexit_23, 24 vigil_fexit_24,
    25 vigil_fexit_25, 26 vigil_fexit_26, 27 vigil_fexit_27, 28 vigil_fexit_28, 29 vigil_fexit_29,
    30 vigil_fexit_30, 31 vigil_fexit_31, 32 vigil_fexit_32, 33 vigil_fexit_33, 34 vigil_fexit_34,
    35 vigil_fexit_35, 36 vigil_fexit_36, 37 vigil_fexit_37, 38 vigil_fexit_38, 39 vigil_fexit_39,
    40 vigil_fexit_40, 41 vigil_fexit_41, 42 vigil_fexit_42, 43 vigil_fexit_43, 44 vigil_fexit_44,
    45 vigil_fexit_45, 46 vigil_fexit_46, 47 vigil_fexit_47, 48 vigil_fexit_48, 49 vigil_fexit_49,
    50 vigil_fexit_50, 51 vigil_fexit_51, 52 vigil_fexit_52, 53 vigil_fexit_53, 54 vigil_fexit_54,
    55 vigil_fexit_55, 56 vigil_fexit_56, 57 vigil_fexit_57, 58 vigil_fexit_58, 59 vigil_fexit_59,
    60 vigil_fexit_60, 61 vigil_fexit_61, 62 vigil_fexit_62, 63 vigil_fexit_63, 64 vigil_fexit_64,
    65 vigil_fexit_65, 66 vigil_fexit_66, 67 vigil_fexit_67, 68 vigil_fexit_68, 69 vigil_fexit_69,
    70 vigil_fexit_70, 71 vigil_fexit_71, 72 vigil_fexit_72, 73 vigil_fexit_73, 74 vigil_fexit_74,
    75 vigil_fexit_75, 76 vigil_fexit_76, 77 vigil_fexit_77, 78 vigil_fexit_78, 79 vigil_fexit_79,
    80 vigil_fexit_80, 81 vigil_fexit_81, 82 vigil_fexit_82, 83 vigil_fexit_83, 84 vigil_fexit_84,
    85 vigil_fexit_85, 86 vigil_fexit_86, 87 vigil_fexit_87, 88 vigil_fexit_88, 89 vigil_fexit_89,
    90 vigil_fexit_90, 91 vigil_fexit_91, 92 vigil_fexit_92, 93 vigil_fexit_93, 94 vigil_fexit_94,
    95 vigil_fexit_95, 96 vigil_fexit_96, 97 vigil_fexit_97, 98 vigil_fexit_98, 99 vigil_fexit_99,
    100 vigil_fexit_100, 101 vigil_fexit_101, 102 vigil_fexit_102, 103 vigil_fexit_103, 104 vigil_fexit_104,
    105 vigil_fexit_105, 106 vigil_fexit_106, 107 vigil_fexit_107, 108 vigil_fexit_108, 109 vigil_fexit_109,
);
