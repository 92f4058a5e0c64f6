//! priv: the set*id family, with the credentials before (kept at entry) and after the call.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use vigil_common::{kind, priv_op, PrivRecord};

use crate::{
    emit::emit,
    kernel::{cred_ids, current_tid, sys_arg, sys_nr, sys_ret, syscall_nr},
    maps::{Pending, PENDING},
    scope,
};

#[tracepoint]
pub fn vigil_priv_enter(ctx: TracePointContext) -> u32 {
    let Some((task, _)) = scope::check(kind::PRIV) else {
        return 0;
    };
    let pending = Pending {
        nr: sys_nr(&ctx),
        _pad: 0,
        args: [sys_arg(&ctx, 0), sys_arg(&ctx, 1), sys_arg(&ctx, 2), 0],
        old: cred_ids(task),
    };
    let _ = PENDING.insert(current_tid(), pending, 0);
    0
}

#[tracepoint]
pub fn vigil_priv_exit(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let Some(pending) = (unsafe { PENDING.get(tid) }) else {
        return 0;
    };
    let nr = sys_nr(&ctx);
    if pending.nr != nr {
        return 0;
    }
    let pending = *pending;
    let _ = PENDING.remove(tid);
    let Some((task, _)) = scope::check(kind::PRIV) else {
        return 0;
    };
    let op = op_of(nr);
    // One-argument calls leave the other two "unchanged" (-1), as the syscalls read them.
    let argc = match op {
        priv_op::SETREUID | priv_op::SETREGID => 2,
        priv_op::SETRESUID | priv_op::SETRESGID => 3,
        _ => 1,
    };
    let mut requested = [u32::MAX; 3];
    requested[0] = pending.args[0] as u32;
    if argc >= 2 {
        requested[1] = pending.args[1] as u32;
    }
    if argc >= 3 {
        requested[2] = pending.args[2] as u32;
    }
    let ret = sys_ret(&ctx) as i32;
    let new = cred_ids(task);
    emit::<PrivRecord>(kind::PRIV, task, |rec| unsafe {
        (*rec).op = op;
        (*rec)._pad = 0;
        (*rec).ret = ret;
        (*rec).requested = requested;
        (*rec)._pad2 = 0;
        (*rec).old = pending.old;
        (*rec).new = new;
    });
    0
}

#[inline(always)]
fn op_of(nr: u32) -> u16 {
    if nr == syscall_nr!(setuid) {
        priv_op::SETUID
    } else if nr == syscall_nr!(setreuid) {
        priv_op::SETREUID
    } else if nr == syscall_nr!(setresuid) {
        priv_op::SETRESUID
    } else if nr == syscall_nr!(setfsuid) {
        priv_op::SETFSUID
    } else if nr == syscall_nr!(setgid) {
        priv_op::SETGID
    } else if nr == syscall_nr!(setregid) {
        priv_op::SETREGID
    } else if nr == syscall_nr!(setresgid) {
        priv_op::SETRESGID
    } else {
        priv_op::SETFSGID
    }
}
