//! exit: the last thread of a process exits (`sched:sched_process_exit`).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use vigil_common::{kind, ExitRecord};

use crate::{
    emit::emit,
    kernel::{current_task, current_tid, koff, read, tp_layout},
    maps::PENDING,
    scope,
};

/// Marks "this kernel's record has no `group_dead` field".
const NO_FIELD: usize = u32::MAX as usize;

#[tracepoint]
pub fn vigil_exit(ctx: TracePointContext) -> u32 {
    // Every exiting thread drops what it kept at a syscall entry (it may die inside the call).
    let _ = PENDING.remove(current_tid());
    let group_dead_off = tp_layout!(exit_group_dead);
    let process_ends = if group_dead_off == NO_FIELD {
        // Older kernels: report when the thread-group leader exits.
        let pid_tgid = bpf_get_current_pid_tgid();
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    } else {
        unsafe { ctx.read_at::<u8>(group_dead_off) }.unwrap_or(0) != 0
    };
    if !process_ends {
        return 0;
    }
    // What the process folded goes out before its end, and its fold entry goes, whatever the
    // policy emits of exits (only a process in scope has one).
    crate::fold::flush(current_task(), true);
    if let Some((task, _)) = scope::check(kind::EXIT) {
        let exit_code = read::<u32>(task, koff!(task_exit_code)).unwrap_or(0);
        emit::<ExitRecord>(kind::EXIT, task, |rec| unsafe {
            (*rec).exit_code = exit_code;
            (*rec)._pad = 0;
        });
    }
    // After the record, which names the session the process was in.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    scope::leave(tgid);
    crate::compat::leave(tgid);
    crate::bpf::leave(tgid);
    0
}
