//! priv: the set*id family, with the credentials before (kept at entry) and after the call.

use vigil_common::{counter, kind, priv_op, PrivRecord};

use crate::{
    emit::emit,
    kernel::{cred_ids, current_tid, write_cred_ids},
    maps::{count, Pending, PENDING},
    scope,
};

/// Entry of a set*id call: keeps the credentials before it and the ids it asks for.
#[inline(always)]
pub fn on_enter(nr: u32, args: [u64; 3]) {
    let Some((task, _)) = scope::check(kind::PRIV) else {
        return;
    };
    let pending = Pending {
        nr,
        _pad: 0,
        args: [args[0], args[1], args[2], 0],
        old: cred_ids(task),
    };
    if PENDING.insert(current_tid(), pending, 0).is_err() {
        count(kind::PRIV, counter::UNTRACKED);
    }
}

/// `op` is one of `priv_op`, from the syscall's class. A subprogram, and nothing copied to its
/// frame (the entry is read in place, the credentials written into the record): a program and
/// its call chain share 512 bytes of stack (see `kernel::Span`).
#[inline(never)]
pub fn on_exit(nr: u32, op: u16, ret: i64) {
    let tid = current_tid();
    let Some(pending) = PENDING.get_ptr(tid) else {
        return;
    };
    if unsafe { (*pending).nr } != nr {
        return;
    }
    if let Some((task, _)) = scope::check(kind::PRIV) {
        // One-argument calls leave the other two "unchanged" (-1), as the syscalls read them.
        let argc = match op {
            priv_op::SETREUID | priv_op::SETREGID => 2,
            priv_op::SETRESUID | priv_op::SETRESGID => 3,
            _ => 1,
        };
        let ret = ret as i32;
        emit::<PrivRecord>(kind::PRIV, task, |rec| unsafe {
            (*rec).op = op;
            (*rec)._pad = 0;
            (*rec).ret = ret;
            (*rec).requested = [u32::MAX; 3];
            (*rec).requested[0] = (*pending).args[0] as u32;
            if argc >= 2 {
                (*rec).requested[1] = (*pending).args[1] as u32;
            }
            if argc >= 3 {
                (*rec).requested[2] = (*pending).args[2] as u32;
            }
            (*rec)._pad2 = 0;
            (*rec).old = (*pending).old;
            write_cred_ids(task, core::ptr::addr_of_mut!((*rec).new));
        });
    }
    let _ = PENDING.remove(tid);
}
