//! fork: a new process (not a thread), from the raw `sched_process_fork` tracepoint, whose
//! arguments are the parent and child `task_struct`s, so the child's tgid tells threads apart.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use vigil_common::{kind, ForkRecord};

use crate::{
    emit::emit,
    kernel::{koff, read, Ptr},
    scope,
};

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn vigil_fork(ctx: RawTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let child = child as Ptr;
    let child_pid = read::<u32>(child, koff!(task_pid)).unwrap_or(0);
    let child_tgid = read::<u32>(child, koff!(task_tgid)).unwrap_or(0);
    if child_pid == 0 || child_pid != child_tgid {
        return 0; // a thread
    }
    scope::inherit(child_tgid);
    // The parent forks in a killed or held session: it is signalled here; the child at its
    // first followed call (and by the daemon's sweep).
    crate::respond::enforce_session();
    let Some((task, _)) = scope::check(kind::FORK) else {
        return 0;
    };
    emit::<ForkRecord>(kind::FORK, task, |rec| unsafe {
        (*rec).child_pid = child_pid;
        (*rec).child_tgid = child_tgid;
    });
    0
}
