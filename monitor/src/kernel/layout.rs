//! Layouts the kernel programs need, found on the running kernel: struct member offsets from BTF,
//! tracepoint record offsets from tracefs, syscall numbers of this architecture.

use vigil_common::{KernelOffsets, SyscallNumbers, TracepointLayout};

use super::{btf::Btf, tracefs::Tracefs, PreflightError};

/// Offsets of every struct member the programs read.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, PreflightError> {
    let off = |strukt: &str, member: &str| {
        btf.member_offset(strukt, member)
            .map_err(PreflightError::BadBtf)
    };
    let loginuid = off("task_struct", "loginuid").map_err(|e| {
        PreflightError::Layout(format!(
            "{e}: the kernel lacks CONFIG_AUDIT/CONFIG_AUDITSYSCALL, so login sessions cannot be told apart"
        ))
    })?;
    Ok(KernelOffsets {
        task_pid: off("task_struct", "pid")?,
        task_tgid: off("task_struct", "tgid")?,
        task_real_parent: off("task_struct", "real_parent")?,
        task_loginuid: loginuid,
        task_sessionid: off("task_struct", "sessionid")?,
        task_cred: off("task_struct", "cred")?,
        task_mm: off("task_struct", "mm")?,
        task_fs: off("task_struct", "fs")?,
        task_signal: off("task_struct", "signal")?,
        task_exit_code: off("task_struct", "exit_code")?,
        cred_uid: off("cred", "uid")?,
        cred_euid: off("cred", "euid")?,
        cred_suid: off("cred", "suid")?,
        cred_fsuid: off("cred", "fsuid")?,
        cred_gid: off("cred", "gid")?,
        cred_egid: off("cred", "egid")?,
        cred_sgid: off("cred", "sgid")?,
        cred_fsgid: off("cred", "fsgid")?,
        mm_arg_start: off("mm_struct", "arg_start")?,
        mm_arg_end: off("mm_struct", "arg_end")?,
        fs_pwd: off("fs_struct", "pwd")?,
        path_mnt: off("path", "mnt")?,
        path_dentry: off("path", "dentry")?,
        dentry_parent: off("dentry", "d_parent")?,
        dentry_name: off("dentry", "d_name")?,
        qstr_name: off("qstr", "name")?,
        vfsmount_root: off("vfsmount", "mnt_root")?,
        mount_mnt: off("mount", "mnt")?,
        mount_parent: off("mount", "mnt_parent")?,
        mount_mountpoint: off("mount", "mnt_mountpoint")?,
        signal_tty: off("signal_struct", "tty")?,
        tty_name: off("tty_struct", "name")?,
    })
}

/// Record offsets of the tracepoints whose fields the programs read.
pub fn tracepoint_layout(tracefs: &Tracefs) -> Result<TracepointLayout, PreflightError> {
    let exec = tracefs.format("sched", "sched_process_exec")?;
    let field = |fields: &std::collections::HashMap<String, super::tracefs::Field>,
                 tp: &str,
                 name: &str| {
        fields
            .get(name)
            .map(|f| f.offset)
            .ok_or_else(|| PreflightError::MissingTracepoint {
                tracepoint: tp.into(),
                detail: format!("its record has no field `{name}`"),
            })
    };
    let exit = tracefs.format("sched", "sched_process_exit")?;
    // Syscall records share one layout; read it from one of them and check the others agree.
    let enter = tracefs.format("syscalls", "sys_enter_openat")?;
    let exit_rec = tracefs.format("syscalls", "sys_exit_openat")?;
    let layout = TracepointLayout {
        exec_filename: field(&exec, "sched/sched_process_exec", "filename")?,
        exec_pid: field(&exec, "sched/sched_process_exec", "pid")?,
        exec_old_pid: field(&exec, "sched/sched_process_exec", "old_pid")?,
        exit_pid: field(&exit, "sched/sched_process_exit", "pid")?,
        // Added in 6.x; without it the program falls back to "the leader exited".
        exit_group_dead: exit.get("group_dead").map(|f| f.offset).unwrap_or(u32::MAX),
        sys_nr: field(&enter, "syscalls/sys_enter_openat", "__syscall_nr")?,
        sys_args: field(&enter, "syscalls/sys_enter_openat", "dfd")?,
        sys_ret: field(&exit_rec, "syscalls/sys_exit_openat", "ret")?,
    };
    for (tp, first_arg) in [
        ("sys_enter_read", "fd"),
        ("sys_enter_connect", "fd"),
        ("sys_enter_setuid", "uid"),
    ] {
        let f = tracefs.format("syscalls", tp)?;
        let got = field(&f, tp, first_arg)?;
        if got != layout.sys_args {
            return Err(PreflightError::MissingTracepoint {
                tracepoint: format!("syscalls/{tp}"),
                detail: format!(
                    "first argument at offset {got}, expected {} like sys_enter_openat",
                    layout.sys_args
                ),
            });
        }
    }
    Ok(layout)
}

/// Syscall numbers of this architecture (the programs dispatch on `__syscall_nr`).
pub fn syscall_numbers() -> SyscallNumbers {
    #[cfg(target_arch = "x86_64")]
    let (open, creat) = (libc::SYS_open as u32, libc::SYS_creat as u32);
    // No open/creat on architectures that only have openat; u32::MAX matches nothing.
    #[cfg(not(target_arch = "x86_64"))]
    let (open, creat) = (u32::MAX, u32::MAX);
    SyscallNumbers {
        openat: libc::SYS_openat as u32,
        open,
        openat2: libc::SYS_openat2 as u32,
        creat,
        setuid: libc::SYS_setuid as u32,
        setreuid: libc::SYS_setreuid as u32,
        setresuid: libc::SYS_setresuid as u32,
        setfsuid: libc::SYS_setfsuid as u32,
        setgid: libc::SYS_setgid as u32,
        setregid: libc::SYS_setregid as u32,
        setresgid: libc::SYS_setresgid as u32,
        setfsgid: libc::SYS_setfsgid as u32,
        sendfile: libc::SYS_sendfile as u32,
        _pad: 0,
    }
}
