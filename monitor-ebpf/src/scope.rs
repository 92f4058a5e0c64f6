//! In-kernel scoping: decides whether the current task's events are emitted at all.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use vigil_common::{counter, kind_bit, scope, Policy, AUDIT_UNSET};

use crate::{
    kernel::{current_task, loginuid, Ptr},
    maps::{count, IGNORED_TGIDS, POLICY},
};

/// The current task and the policy, when `kind` events of the current task are to be emitted.
/// Otherwise counts the event as filtered and returns `None`.
#[inline(always)]
pub fn check(kind: u16) -> Option<(Ptr, &'static Policy)> {
    let policy = POLICY.get(0)?;
    if policy.kinds & kind_bit(kind) == 0 {
        count(kind, counter::FILTERED);
        return None;
    }
    let task = current_task();
    let in_scope = match policy.scope {
        scope::ALL => true,
        scope::LOGIN_SESSIONS => loginuid(task) != AUDIT_UNSET,
        _ => false,
    };
    if !in_scope {
        count(kind, counter::FILTERED);
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if unsafe { IGNORED_TGIDS.get(tgid) }.is_some() {
        count(kind, counter::FILTERED);
        return None;
    }
    Some((task, policy))
}
