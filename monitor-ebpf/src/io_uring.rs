//! io_uring: a ring set up by a process in scope. What goes through a ring (opens, reads,
//! connects, sends) passes none of the syscall tracepoints the other sources follow, so the
//! setup itself is reported: the way around them is seen, and rules can act on it.

use aya_ebpf::helpers::bpf_probe_read_user;
use vigil_common::{kind, IoUringRecord};

use crate::{emit::emit, kernel::Regs, scope};

/// Offset of `flags` in `struct io_uring_params` (after `sq_entries` and `cq_entries`: uapi).
const PARAMS_FLAGS: usize = 8;

/// `sys_exit` of io_uring_setup(entries, params): reported whether it succeeded or not.
#[inline(always)]
pub fn on_exit(regs: impl Regs, ret: i64) {
    let Some((task, _)) = scope::check_at(kind::IO_URING, regs) else {
        return;
    };
    let params = regs.arg(1) as *const u8;
    let flags: u32 =
        unsafe { bpf_probe_read_user(params.wrapping_add(PARAMS_FLAGS) as *const u32) }
            .unwrap_or(0);
    emit::<IoUringRecord>(kind::IO_URING, task, |rec| unsafe {
        (*rec).entries = regs.arg(0) as u32;
        (*rec).flags = flags;
        (*rec).ret = ret as i32;
        (*rec)._pad = 0;
    });
}
