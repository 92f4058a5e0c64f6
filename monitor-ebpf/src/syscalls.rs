//! Syscall dispatch from the raw `sys_enter` and `sys_exit` tracepoints.
//!
//! One program for every syscall of every process, rather than a tracepoint per followed syscall:
//! per-syscall tracepoints make the kernel set up a perf record and copy the arguments for each
//! call before our program even runs, which unmonitored processes would pay on every open and
//! read. Here a syscall nobody follows costs one load from the class table; a followed one is
//! handed to its source module, which checks the scope first.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use vigil_common::sys_class;

use crate::{
    connect, exec,
    kernel::{sys_class, Ptr, SysRegs},
    open, privs, read,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn vigil_sys_enter(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: u64 = ctx.arg(1);
    let class = sys_class(nr);
    if class == sys_class::NONE {
        return 0;
    }
    let regs = SysRegs(ctx.arg::<u64>(0) as Ptr);
    let nr = nr as u32;
    match class {
        sys_class::OPENAT | sys_class::OPEN | sys_class::OPENAT2 | sys_class::CREAT => {
            open::on_enter(nr, class, regs)
        }
        sys_class::READ_FD0 | sys_class::READ_FD1 => read::on_enter(nr, class, regs),
        sys_class::CLOSE => read::on_close(regs),
        sys_class::CONNECT => connect::on_enter(nr, regs),
        sys_class::EXECVE => exec::on_execve_enter(nr),
        c if c > sys_class::PRIV_BASE => privs::on_enter(nr, regs),
        _ => {}
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn vigil_sys_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret); the number is in the registers.
    let regs = SysRegs(ctx.arg::<u64>(0) as Ptr);
    let nr = regs.nr();
    let class = sys_class(nr);
    // Only calls with work at exit go further.
    if class == sys_class::NONE || class == sys_class::CLOSE || class == sys_class::EXECVE {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    let nr = nr as u32;
    match class {
        sys_class::OPENAT | sys_class::OPEN | sys_class::OPENAT2 | sys_class::CREAT => {
            open::on_exit(nr, ret)
        }
        sys_class::READ_FD0 | sys_class::READ_FD1 => read::on_exit(nr, ret),
        sys_class::CONNECT => connect::on_exit(nr, ret),
        c if c > sys_class::PRIV_BASE => privs::on_exit(nr, (c - sys_class::PRIV_BASE) as u16, ret),
        _ => {}
    }
    0
}
