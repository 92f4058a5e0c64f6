//! In-kernel scoping: decides whether the current task's events are emitted at all.
//!
//! A process enters scope when it is first seen with an audit login uid (a login session), and
//! from then on it and every process it forks stay in scope, attributed to that session, through
//! the `SCOPE` map: writing `4294967295` (or another user) to `/proc/self/loginuid`, `setsid` or
//! a new PAM session does not take a process or its children out. Their headers carry both the
//! session they belong to and their audit ids now, so the daemon sees the attempt.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use vigil_common::{counter, kind, kind_bit, scope, Policy, ScopeEntry, AUDIT_UNSET};

use crate::{
    kernel::{current_task, koff, loginuid, sessionid, Ptr},
    maps::{count, IGNORED_TGIDS, LOGINUID_OPENED, POLICY, SCOPE},
};

/// The session process `tgid` belongs to, when it is in scope by lineage.
#[inline(always)]
pub fn session_of(tgid: u32) -> Option<ScopeEntry> {
    unsafe { SCOPE.get(tgid) }.copied()
}

/// The audit session process `tgid` belongs to by lineage, [`AUDIT_UNSET`] for none (or no
/// process, 0): how a target another process reached into is reported.
#[inline(always)]
pub fn session_id_of(tgid: u32) -> u32 {
    if tgid == 0 {
        return AUDIT_UNSET;
    }
    session_of(tgid).map_or(AUDIT_UNSET, |s| s.sessionid)
}

/// The session of the current process: the one it was first seen in, or the audit session it
/// is in now (recorded, so that it stays). `None` outside every session.
///
/// A process can be in scope without a login uid only after one of its lineage unset its own
/// (`/proc/self/loginuid`, writable by the task itself only): until a process in a session has
/// opened a `loginuid` file for writing (or any process another task's), or any process set up
/// an io_uring ring (which could write one), the many processes without a login uid (every
/// service) are out of scope without a `SCOPE` lookup.
#[inline(always)]
fn enter(task: Ptr, tgid: u32) -> Option<ScopeEntry> {
    enter_as(task, tgid, loginuid(task))
}

/// [`enter`], with the task's login uid already read (`login`).
#[inline(always)]
fn enter_as(task: Ptr, tgid: u32, login: u32) -> Option<ScopeEntry> {
    if without_session(login) {
        return None;
    }
    if let Some(entry) = session_of(tgid) {
        return Some(entry);
    }
    // The daemon's own processes never enter: one lookup when a process would, instead of one
    // on every event of every process in a session.
    if login == AUDIT_UNSET || unsafe { IGNORED_TGIDS.get(tgid) }.is_some() {
        return None;
    }
    let entry = ScopeEntry {
        loginuid: login,
        sessionid: sessionid(task),
    };
    if SCOPE.insert(tgid, entry, 0).is_err() {
        count(kind::FORK, counter::UNTRACKED);
    }
    Some(entry)
}

/// The current task and the policy, when `kind` events of the current task are to be emitted.
/// Otherwise counts the event as filtered and returns `None`.
#[inline(always)]
pub fn check(kind: u16) -> Option<(Ptr, &'static Policy)> {
    check_as(kind, || loginuid(current_task()))
}

/// Whether `kind` events are emitted at all (the policy's kinds), with no scope check: for work
/// on an entry only a process in scope makes (an fd's read volume), and such a process stays in
/// scope until it exits. Nothing is counted as filtered.
#[inline(always)]
pub fn kind_enabled(kind: u16) -> bool {
    POLICY.get(0).is_some_and(|p| p.kinds & kind_bit(kind) != 0)
}

/// [`check`] for a process known to be in scope (by an entry only such a process makes): the
/// policy alone, no session lookup.
#[inline(always)]
pub fn check_kind(kind: u16) -> Option<(Ptr, &'static Policy)> {
    let policy = POLICY.get(0)?;
    if policy.kinds & kind_bit(kind) == 0 {
        count(kind, counter::FILTERED);
        return None;
    }
    Some((current_task(), policy))
}

/// [`check`] for a syscall exit: the login uid read the way its program reads registers (one
/// load in the typed program, a helper call in the raw one).
#[inline(always)]
pub fn check_at(kind: u16, regs: impl crate::kernel::Regs) -> Option<(Ptr, &'static Policy)> {
    check_as(kind, || regs.loginuid())
}

#[inline(always)]
fn check_as(kind: u16, login: impl FnOnce() -> u32) -> Option<(Ptr, &'static Policy)> {
    let policy = POLICY.get(0)?;
    if policy.kinds & kind_bit(kind) == 0 {
        count(kind, counter::FILTERED);
        return None;
    }
    let task = current_task();
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let in_scope = match policy.scope {
        scope::ALL => unsafe { IGNORED_TGIDS.get(tgid) }.is_none(),
        scope::LOGIN_SESSIONS => enter_as(task, tgid, login()).is_some(),
        _ => false,
    };
    if !in_scope {
        count(kind, counter::FILTERED);
        return None;
    }
    Some((task, policy))
}

/// Whether the current process may be in scope, decided without a `SCOPE` lookup and without
/// counting: for a hook that only keeps what a later check of the same call reads (a connect's
/// destination, taken at its exit once [`check_at`] has decided).
#[inline(always)]
pub fn may_be_in_scope() -> bool {
    let Some(policy) = POLICY.get(0) else {
        return false;
    };
    match policy.scope {
        scope::ALL => true,
        scope::LOGIN_SESSIONS => !without_session(crate::kernel::current_loginuid_typed()),
        _ => false,
    }
}

/// A process forked `child_tgid`: it inherits the parent's session, whatever its audit ids.
#[inline(always)]
pub fn inherit(child_tgid: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(entry) = enter(current_task(), tgid) {
        if SCOPE.insert(child_tgid, entry, 0).is_err() {
            count(kind::FORK, counter::UNTRACKED);
        }
    }
}

/// Process `tgid` is gone.
#[inline(always)]
pub fn leave(tgid: u32) {
    let _ = SCOPE.remove(tgid);
}

/// Whether the current process, of login uid `login`, is outside every session, decided
/// without a `SCOPE` lookup: the policy scopes to login sessions and [`without_session`] holds.
/// Checks of the current task's other events then need not run: nothing of it is emitted or
/// counted.
#[inline(always)]
pub fn outside_every_session(login: u32) -> bool {
    let Some(policy) = POLICY.get(0) else {
        return false;
    };
    policy.scope == scope::LOGIN_SESSIONS && without_session(login)
}

/// A process of login uid `login` is in no session, with no `SCOPE` lookup needed: it has no
/// login uid, and no process could have left a session by unsetting its own.
#[inline(always)]
fn without_session(login: u32) -> bool {
    login == AUDIT_UNSET && !loginuid_written()
}

#[inline(always)]
fn loginuid_written() -> bool {
    LOGINUID_OPENED.get(0).is_none_or(|v| *v != 0)
}

/// Some process may now change its login uid: scope checks look every process up from now on.
#[inline(always)]
pub fn note_loginuid_written() {
    if let Some(v) = LOGINUID_OPENED.get_ptr_mut(0) {
        unsafe { *v = 1 };
    }
}

/// `sys_exit` of an open by any process, in scope or not (the fd of a `loginuid` file can be
/// handed to the task it belongs to): a `loginuid` file opened for writing sets the flag, unless
/// a process outside every session opened its own. Only a process in a session can leave one
/// in it without a login uid (by unsetting its own, or having another's file handed to it); one
/// outside every session writing its own login uid (PAM starting a login on every SSH or cron
/// session) only enters a session, so logins do not put every service on the slow path.
///
/// What that leaves: a process outside every session that writes its own login uid and keeps
/// the file open could later unset it through that file unseen, leaving the session it entered
/// (its children stay, by lineage). It was outside every session to begin with, which a
/// process in a session only gets by the ways out the rules report (`session-escape-*`);
/// closing it would mean following every close or write of every process.
#[inline(always)]
pub fn watch_loginuid_open(flags: u32, fd: u32) {
    const O_ACCMODE: u32 = 0o3;
    if flags & O_ACCMODE == 0 || loginuid_written() {
        return;
    }
    // The task is asked for only now: every read-only open of every service returns above.
    let task = current_task();
    let file = crate::kernel::fd_file(task, fd);
    if file.is_null() {
        return;
    }
    let dentry = crate::kernel::read_ptr(file, koff!(file_path) + koff!(path_dentry));
    let name = crate::kernel::read_ptr(dentry, koff!(dentry_name) + koff!(qstr_name));
    if crate::kernel::read::<[u8; 9]>(name, 0) != Some(*b"loginuid\0") {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if own_proc_dir(dentry as u64) == 0 || enter(task, tgid).is_some() {
        note_loginuid_written();
    }
}

/// 1 when `dentry` lies in the current thread's own `/proc` directory (`/proc/<tid>/`, or
/// `/proc/<tgid>/task/<tid>/`; `self` and `thread-self` resolve to those), 0 otherwise or when
/// it cannot be read. A subprogram: the digit loop stays out of the exit program's body.
#[inline(never)]
fn own_proc_dir(dentry: u64) -> u32 {
    let parent = crate::kernel::read_ptr(dentry as Ptr, koff!(dentry_parent));
    let name = crate::kernel::read_ptr(parent, koff!(dentry_name) + koff!(qstr_name));
    let Some(digits) = crate::kernel::read::<[u8; 12]>(name, 0) else {
        return 0;
    };
    let mut id: u64 = 0;
    let mut len = 0;
    for &c in digits.iter().take(11) {
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return 0;
        }
        id = id * 10 + (c - b'0') as u64;
        len += 1;
    }
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    (len > 0 && id == tid) as u32
}
