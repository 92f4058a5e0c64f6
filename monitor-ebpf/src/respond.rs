//! respond: the responses the kernel enforces itself, so that they hold between the daemon's
//! decisions and whatever a process does next.
//!
//! - A denied executable (`DENY_EXEC`, by the device and inode the kernel loaded: a rename, a
//!   link, a bind mount or another path to the same file changes nothing) gets SIGKILL at
//!   `sched_process_exec`, after the new image is in place and before its first instruction
//!   runs: the signal is delivered on the way back to user space.
//! - A killed or held session (`SESSION_VERDICTS`, by the session the `SCOPE` lineage gives,
//!   so a process that wrote its loginuid or called setsid is still in it) gets SIGKILL or
//!   SIGSTOP in every process at its next exec, fork or followed syscall: a fork racing the
//!   daemon's sweep, or a process someone continued, is caught there.
//! - A session denied the network has its `connect` refused by the cgroup `connect4`/`connect6`
//!   programs (the caller sees `EPERM`; the syscall exit program records the attempt).
//!
//! `RESPOND_ACTIVE` says whether any of it is in force, so that without responses every hook pays
//! one array load. Processes running a protected executable (`PROTECTED_EXES`: init, sshd, the
//! daemon) and the daemon's own process are never signalled.

use aya_ebpf::{
    helpers::bpf_send_signal,
    macros::{cgroup_sock_addr, lsm, map},
    maps::{Array, HashMap},
    programs::{LsmContext, SockAddrContext},
};
use vigil_common::{counter, kind, respond, ExeKey};

use crate::{
    kernel::{current_task, current_tgid, koff, read_or_zero, read_ptr, Ptr},
    maps::{count, IGNORED_TGIDS},
    scope,
};

/// [`respond`]`::ACTIVE_*` bits, written by the daemon.
#[map]
pub static RESPOND_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// [`respond`] verdict bits by audit session id.
#[map]
pub static SESSION_VERDICTS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Executables that may not run, by the file the kernel loaded.
#[map]
pub static DENY_EXEC: HashMap<ExeKey, u32> = HashMap::with_max_entries(4096, 0);

/// The dynamic loaders (`ld-linux*.so`): run as a program (`ld.so /path/to/denied`), they load
/// a denied file without exec'ing it, so their opens of denied files are checked.
#[map]
pub static LOADER_EXES: HashMap<ExeKey, u8> = HashMap::with_max_entries(16, 0);

/// Executables no response touches.
#[map]
pub static PROTECTED_EXES: HashMap<ExeKey, u8> = HashMap::with_max_entries(256, 0);

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

#[inline(always)]
fn active() -> u32 {
    RESPOND_ACTIVE.get(0).copied().unwrap_or(0)
}

/// The executable `task` runs: `task->mm->exe_file`'s device and inode.
#[inline(always)]
fn exe_key(task: Ptr) -> ExeKey {
    let mm = read_ptr(task, koff!(task_mm));
    file_key(read_ptr(mm, koff!(mm_exe_file)))
}

/// A `struct file`'s device and inode.
#[inline(always)]
fn file_key(file: Ptr) -> ExeKey {
    let inode = read_ptr(file, koff!(file_inode));
    let sb = read_ptr(inode, koff!(inode_sb));
    ExeKey {
        ino: read_or_zero(inode, koff!(inode_ino)),
        dev: read_or_zero(sb, koff!(sb_dev)),
        _pad: 0,
    }
}

#[inline(always)]
fn protected(task: Ptr, tgid: u32) -> bool {
    unsafe { IGNORED_TGIDS.get(tgid) }.is_some()
        || unsafe { PROTECTED_EXES.get(exe_key(task)) }.is_some()
}

/// At `sched_process_exec`: kills a denied executable before it runs, then applies its
/// session's verdict. Returns whether the process was killed.
#[inline(never)]
pub fn on_exec() -> bool {
    let active = active();
    if active == 0 {
        return false;
    }
    let task = current_task();
    let tgid = current_tgid();
    if active & respond::ACTIVE_DENY_EXEC != 0 {
        let key = exe_key(task);
        if unsafe { DENY_EXEC.get(key) }.is_some() && !protected(task, tgid) {
            unsafe { bpf_send_signal(SIGKILL) };
            count(kind::EXEC, counter::ENFORCED);
            return true;
        }
    }
    enforce_session()
}

/// At a successful open by a process in scope: a dynamic loader opening a denied executable
/// (`/lib64/ld-linux-x86-64.so.2 ./denied`) is killed before it maps it. Returns whether it was.
/// The guard is inlined (one load on every monitored open when nothing is denied); the check is
/// not.
#[inline(always)]
pub fn on_open(task: Ptr, opened: Ptr) -> bool {
    active() & respond::ACTIVE_DENY_EXEC != 0 && !opened.is_null() && deny_loader_open(task, opened)
}

#[inline(never)]
fn deny_loader_open(task: Ptr, opened: Ptr) -> bool {
    let key = file_key(opened);
    if unsafe { DENY_EXEC.get(key) }.is_none() {
        return false;
    }
    if unsafe { LOADER_EXES.get(exe_key(task)) }.is_none() || protected(task, current_tgid()) {
        return false;
    }
    unsafe { bpf_send_signal(SIGKILL) };
    count(kind::EXEC, counter::ENFORCED);
    true
}

/// Signals the current process when its session is killed or held (counted as `exit`
/// enforced: the process ends or stops). Returns whether it signalled. The guard is inlined
/// (one load on every followed syscall when no session is acted on); the rest is a call, which
/// keeps the verifier's walk of the large exit program from multiplying by its paths.
#[inline(always)]
pub fn enforce_session() -> bool {
    active() & respond::ACTIVE_SESSIONS != 0 && signal_session()
}

#[inline(never)]
fn signal_session() -> bool {
    let tgid = current_tgid();
    let Some(entry) = scope::session_of(tgid) else {
        return false;
    };
    let Some(verdict) = (unsafe { SESSION_VERDICTS.get(entry.sessionid) }).copied() else {
        return false;
    };
    let signal = if verdict & respond::KILL != 0 {
        SIGKILL
    } else if verdict & respond::HOLD != 0 {
        SIGSTOP
    } else {
        return false;
    };
    if protected(current_task(), tgid) {
        return false;
    }
    unsafe { bpf_send_signal(signal) };
    count(kind::EXIT, counter::ENFORCED);
    true
}

/// Where the kernel allows the BPF LSM (`lsm=…,bpf`): a denied executable's exec fails with
/// `EPERM` before the old image is replaced. The daemon loads this only when the kernel lists
/// the BPF LSM; elsewhere (as on the kernels this project is tested on) the tracepoint kill
/// above does the work.
#[lsm(hook = "bprm_check_security")]
pub fn vigil_bprm_check(ctx: LsmContext) -> i32 {
    const EPERM: i32 = 1;
    if active() & respond::ACTIVE_DENY_EXEC == 0 {
        return 0;
    }
    // int bprm_check_security(struct linux_binprm *bprm)
    let bprm: u64 = ctx.arg(0);
    let key = file_key(read_ptr(bprm as Ptr, koff!(binprm_file)));
    if unsafe { DENY_EXEC.get(key) }.is_some() && unsafe { PROTECTED_EXES.get(key) }.is_none() {
        count(kind::EXEC, counter::ENFORCED);
        return -EPERM;
    }
    0
}

/// 1 lets the connection proceed, 0 refuses it with `EPERM`.
#[inline(always)]
fn connect_verdict() -> i32 {
    if active() & respond::ACTIVE_SESSIONS == 0 {
        return 1;
    }
    let Some(entry) = scope::session_of(current_tgid()) else {
        return 1;
    };
    match unsafe { SESSION_VERDICTS.get(entry.sessionid) } {
        Some(v) if v & respond::DENY_CONNECT != 0 => {
            count(kind::CONNECT, counter::ENFORCED);
            0
        }
        _ => 1,
    }
}

/// Also where the capture learns each connect's destination as the kernel copied it (see
/// `connect::note_destination`): these hooks are attached whether or not a response is in force.
#[cgroup_sock_addr(connect4)]
pub fn vigil_connect4(ctx: SockAddrContext) -> i32 {
    crate::connect::note_destination::<false>(&ctx);
    connect_verdict()
}

#[cgroup_sock_addr(connect6)]
pub fn vigil_connect6(ctx: SockAddrContext) -> i32 {
    crate::connect::note_destination::<true>(&ctx);
    connect_verdict()
}

/// A UDP datagram sent to an address with no connect(2): reported here (see
/// `connect::on_datagram`), and refused for a session denied the network, as its connects are.
#[cgroup_sock_addr(sendmsg4)]
pub fn vigil_sendmsg4(ctx: SockAddrContext) -> i32 {
    let verdict = connect_verdict();
    crate::connect::on_datagram::<false>(&ctx, verdict != 0);
    verdict
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vigil_sendmsg6(ctx: SockAddrContext) -> i32 {
    let verdict = connect_verdict();
    crate::connect::on_datagram::<true>(&ctx, verdict != 0);
    verdict
}

/// The datagram hooks' floor, for `cargo xtask bench overhead`: an empty program on the same
/// hook (never attached by the daemon). What a datagram of any process pays before
/// [`vigil_sendmsg4`] does anything: the kernel's locking and running of the hook.
#[cgroup_sock_addr(sendmsg4)]
pub fn vigil_floor_sendmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vigil_floor_sendmsg6(_ctx: SockAddrContext) -> i32 {
    1
}
