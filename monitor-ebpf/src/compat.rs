//! compat_syscall: a process in scope made a 32-bit syscall. A 64-bit program can reach the
//! ia32 ABI with `int 0x80`, where every number differs from the native one: a way around
//! monitors that follow the native numbers only. The dispatcher follows those calls as the native
//! ones (see `syscalls`); this says, once per process, that the process used that ABI at all,
//! which programs on the hosts Vigil watches do not.

use vigil_common::{kind, CompatSyscallRecord};

use crate::{
    emit::emit,
    kernel::{current_tgid, Regs},
    maps::COMPAT_SEEN,
    scope,
};

/// At the exit of a followed 32-bit syscall (`nr` in the 32-bit table, result `ret`): sent
/// unless this process has already sent one (or the table forgot it: then once more).
/// A subprogram: the dispatcher's frame stays as it was.
#[inline(never)]
pub fn on_syscall(regs: impl Regs, nr: u32, ret: i64) {
    let tgid = current_tgid();
    if unsafe { COMPAT_SEEN.get(tgid) }.is_some() {
        return;
    }
    let Some((task, _)) = scope::check_at(kind::COMPAT_SYSCALL, regs) else {
        return;
    };
    let _ = COMPAT_SEEN.insert(tgid, 1, 0);
    let ret = ret as i32;
    emit::<CompatSyscallRecord>(kind::COMPAT_SYSCALL, task, |rec| unsafe {
        (*rec).nr = nr;
        (*rec).ret = ret;
    });
}

/// The process `tgid` ended: its entry goes, so that a later process given the same id (ids
/// are reused) sends its own event instead of being taken for one that already did.
#[inline(always)]
pub fn leave(tgid: u32) {
    let _ = COMPAT_SEEN.remove(tgid);
}
