//! process_access: a process in scope reached into another process. A ptrace(2) attach
//! (`PTRACE_ATTACH`, `PTRACE_SEIZE`) makes it a tracer, which can then run any code in its
//! tracee; `process_vm_readv`/`process_vm_writev` read or write another process's memory
//! directly. Work injected into a service outside the session runs outside it, where no
//! session's rule follows it: the attach is where it can still be seen.
//!
//! The target is named by the kernel where it can be: after an attach that succeeded, the
//! tracee is the newest entry of the tracer's `ptraced` list (the kernel links it at the head),
//! and its session is the one the lineage map holds for it. The id the caller passed is only a
//! number in its pid namespace, and the process behind it could have been another by the time
//! a daemon looked.

use vigil_common::{kind, process_access, sys_class, ProcessAccessRecord};

use crate::{
    emit::emit,
    kernel::{koff, read, read_ptr, Ptr, Regs},
    scope,
};

/// `sys_exit` of ptrace(request, pid, addr, data), process_vm_readv(pid, ...) and
/// process_vm_writev(pid, ...). A subprogram: the dispatcher's frame stays as it was.
#[inline(never)]
pub fn on_exit(class: u8, regs: impl Regs, ret: i64) {
    let (operation, target_pid) = match class {
        sys_class::PTRACE => match process_access::of_ptrace(regs.arg(0)) {
            Some(op) => (op, regs.arg(1) as u32),
            // Peeks, pokes and the rest need an attach first (reported), or a tracee that
            // asked for its parent (`PTRACE_TRACEME`), which is of the tracer's session.
            None => return,
        },
        sys_class::PROCESS_VM_READ => (process_access::PROCESS_VM_READV, regs.arg(0) as u32),
        _ => (process_access::PROCESS_VM_WRITEV, regs.arg(0) as u32),
    };
    let Some((task, _)) = scope::check_at(kind::PROCESS_ACCESS, regs) else {
        return;
    };
    let attached = ret == 0
        && (operation == process_access::PTRACE_ATTACH
            || operation == process_access::PTRACE_SEIZE);
    let tracee = if attached {
        newest_tracee(task, target_pid)
    } else {
        core::ptr::null()
    };
    let target_tgid = if tracee.is_null() {
        0
    } else {
        read::<u32>(tracee, koff!(task_tgid)).unwrap_or(0)
    };
    let target_sessionid = scope::session_id_of(target_tgid);
    // The id asked for is the caller's to count: one in a pid namespace of its own names
    // another process (or none) in the initial one, which is all the daemon can look up.
    let thread_pid = read_ptr(task, koff!(task_thread_pid));
    let flags = if read::<u32>(thread_pid, koff!(pid_level)).unwrap_or(1) != 0 {
        process_access::CALLER_PID_NS_NESTED
    } else {
        0
    };
    let ret = ret as i32;
    emit::<ProcessAccessRecord>(kind::PROCESS_ACCESS, task, |rec| unsafe {
        (*rec).operation = operation;
        (*rec).target_pid = target_pid;
        (*rec).target_tgid = target_tgid;
        (*rec).target_sessionid = target_sessionid;
        (*rec).ret = ret;
        (*rec).flags = flags;
    });
}

/// The task the current thread's last attach linked: the head of its `ptraced` list, when
/// that is the thread `asked` names (in the initial pid namespace, where the kernel's ids are
/// the caller's). Null otherwise: the list is empty (the tracee already gone), or the caller
/// counts ids in a namespace of its own; the target is then reported as unresolved.
#[inline(always)]
fn newest_tracee(task: Ptr, asked: u32) -> Ptr {
    // `struct list_head { next, prev }`: `next` is its first member.
    let head = (task as u64).wrapping_add(koff!(task_ptraced) as u64);
    let next = read_ptr(task, koff!(task_ptraced)) as u64;
    if next == 0 || next == head {
        return core::ptr::null();
    }
    let tracee = next.wrapping_sub(koff!(task_ptrace_entry) as u64) as Ptr;
    if read::<u32>(tracee, koff!(task_pid)) != Some(asked) {
        return core::ptr::null();
    }
    tracee
}
