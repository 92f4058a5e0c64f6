//! bpf: a process in scope called bpf(2). Every eBPF program, map and link on the host is
//! reached through it, the monitor's own among them: an insider who is root can read or rewrite
//! Vigil's maps (the scope, the policy, what was folded), load a program that changes what
//! Vigil's hooks see, or detach them. The daemon's own checks find the effect; this names the
//! session that did it, at the call.
//!
//! Reported once per process and command, and every time for the commands that load or attach
//! code or reach an existing object by id or pinned path (`bpf_cmd::always_reported`): a tool
//! looping over map lookups sends one record, a walk over every map id sends one per map.

use vigil_common::{bpf_cmd, bpf_object, kind, BpfRecord};

use crate::{
    emit::emit,
    kernel::{current_tgid, koff, read, read_ptr, Ptr, Regs},
    maps::BPF_SEEN,
    scope,
};

/// `sys_exit` of bpf(cmd, attr, size). A subprogram: the dispatcher's frame stays as it was.
#[inline(never)]
pub fn on_exit(regs: impl Regs, ret: i64) {
    let cmd = regs.arg(0) as u32;
    let tgid = current_tgid();
    // Commands beyond the mask's width are reported every time.
    let bit = if cmd < 64 { 1u64 << cmd } else { 0 };
    let seen = BPF_SEEN.get_ptr_mut(tgid);
    let once = !bpf_cmd::always_reported(cmd) && bit != 0;
    if once && seen.is_some_and(|s| unsafe { *s } & bit != 0) {
        return;
    }
    let Some((task, _)) = scope::check_at(kind::BPF, regs) else {
        return;
    };
    if once {
        match seen {
            // SAFETY: the map's own value; two threads of a process may both report a first
            // call (two records, never none).
            Some(s) => unsafe { *s |= bit },
            None => {
                let _ = BPF_SEEN.insert(tgid, bit, 0);
            }
        }
    }
    let object = if ret >= 0 {
        bpf_cmd::returned_object(cmd)
    } else {
        bpf_object::NONE
    };
    let object_id = if object == bpf_object::NONE {
        0
    } else {
        object_id(regs, ret as u32, object)
    };
    let ret = ret as i32;
    emit::<BpfRecord>(kind::BPF, task, |rec| unsafe {
        (*rec).cmd = cmd;
        (*rec).ret = ret;
        (*rec).object_id = object_id;
        (*rec).object = if object_id == 0 {
            bpf_object::NONE
        } else {
            object
        };
    });
}

/// The id of the `object` behind `fd`, read from the kernel's object (`file->private_data`):
/// the caller's `attr` could have been rewritten by another thread since the kernel read it.
#[inline(always)]
fn object_id(regs: impl Regs, fd: u32, object: u32) -> u32 {
    let private: Ptr = read_ptr(regs.fd_file(fd), koff!(file_private_data));
    if private.is_null() {
        return 0;
    }
    let id = match object {
        bpf_object::MAP => read::<u32>(private, koff!(bpf_map_id)),
        bpf_object::PROGRAM => read::<u32>(
            read_ptr(private, koff!(bpf_prog_aux)),
            koff!(bpf_prog_aux_id),
        ),
        _ => read::<u32>(private, koff!(bpf_link_id)),
    };
    id.unwrap_or(0)
}

/// The process `tgid` ended: its entry goes (ids are reused).
#[inline(always)]
pub fn leave(tgid: u32) {
    let _ = BPF_SEEN.remove(tgid);
}
