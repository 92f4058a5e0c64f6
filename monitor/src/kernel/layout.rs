//! Layouts the kernel programs need, found on the running kernel: struct member offsets from BTF,
//! tracepoint record offsets from tracefs, syscall numbers of this architecture.

use std::collections::HashMap;

use vigil_common::{
    priv_op, sys_class, KernelOffsets, SyscallAbi, TracepointLayout, FILE_SPAN, INODE_SPAN,
    SYSCALL_TABLE_SIZE,
};

use super::{
    btf::Btf,
    tracefs::{Field, Tracefs},
    PreflightError,
};

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
    // The inode's change time moved twice: `i_ctime_sec`/`i_ctime_nsec` (6.11+), `__i_ctime`
    // (6.6-6.10) and `i_ctime` before, both a `struct timespec64 { tv_sec; tv_nsec }`.
    let (ctime_sec, ctime_nsec) = match (off("inode", "i_ctime_sec"), off("inode", "i_ctime_nsec"))
    {
        (Ok(sec), Ok(nsec)) => (sec, nsec),
        _ => {
            let ts = off("inode", "__i_ctime").or_else(|_| off("inode", "i_ctime"))?;
            (ts, ts + 8)
        }
    };
    let mut offsets = KernelOffsets {
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
        cred_cap_effective: off("cred", "cap_effective")?,
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
        task_files: off("task_struct", "files")?,
        files_fdt: off("files_struct", "fdt")?,
        fdtable_max_fds: off("fdtable", "max_fds")?,
        fdtable_fd: off("fdtable", "fd")?,
        file_inode: off("file", "f_inode")?,
        file_f_mode: off("file", "f_mode")?,
        file_private_data: off("file", "private_data")?,
        inode_rdev: off("inode", "i_rdev")?,
        inode_mode: off("inode", "i_mode")?,
        tty_file_private_tty: off("tty_file_private", "tty")?,
        tty_termios: off("tty_struct", "termios")?,
        tty_winsize: off("tty_struct", "winsize")?,
        fs_root: off("fs_struct", "root")?,
        mm_exe_file: off("mm_struct", "exe_file")?,
        file_path: off("file", "f_path")?,
        inode_ino: off("inode", "i_ino")?,
        inode_sb: off("inode", "i_sb")?,
        sb_dev: off("super_block", "s_dev")?,
        sb_magic: off("super_block", "s_magic")?,
        // Only with CONFIG_MEMCG: without it a memory file's owner is left unresolved.
        mm_owner: off("mm_struct", "owner").unwrap_or(0),
        inode_uid: off("inode", "i_uid")?,
        inode_nlink: off("inode", "i_nlink")?,
        inode_ctime_sec: ctime_sec,
        inode_ctime_nsec: ctime_nsec,
        binprm_file: off("linux_binprm", "file")?,
        socket_sk: off("socket", "sk")?,
        unix_sock_peer: off("unix_sock", "peer")?,
        unix_sock_path: off("unix_sock", "path")?,
        dentry_inode: off("dentry", "d_inode")?,
        bpf_map_id: off("bpf_map", "id")?,
        bpf_prog_aux: off("bpf_prog", "aux")?,
        bpf_prog_aux_id: off("bpf_prog_aux", "id")?,
        bpf_link_id: off("bpf_link", "id")?,
        // `struct sock` begins with its `sock_common`.
        sock_family: off("sock", "__sk_common")? + off("sock_common", "skc_family")?,
        sock_type: off("sock", "sk_type")?,
        sock_protocol: off("sock", "sk_protocol")?,
        task_ptraced: off("task_struct", "ptraced")?,
        task_ptrace_entry: off("task_struct", "ptrace_entry")?,
        task_thread_pid: off("task_struct", "thread_pid")?,
        pid_level: off("pid", "level")?,
        inode_span: 0,
        file_span: 0,
    };
    let fits = |span: usize, members: &[(u32, usize)]| {
        members
            .iter()
            .all(|&(offset, size)| offset as usize + size <= span) as u32
    };
    // (offset, bytes read): what `inode_id` and `file_id` in monitor-ebpf/src/kernel.rs read.
    offsets.inode_span = fits(
        INODE_SPAN,
        &[
            (offsets.inode_sb, 8),
            (offsets.inode_ino, 8),
            (offsets.inode_ctime_sec, 8),
            (offsets.inode_ctime_nsec, 4),
            (offsets.inode_uid, 4),
            (offsets.inode_nlink, 4),
            (offsets.inode_mode, 2),
        ],
    );
    offsets.file_span = fits(
        FILE_SPAN,
        &[(offsets.file_inode, 8), (offsets.file_f_mode, 4)],
    );
    Ok(offsets)
}

/// Record offsets of the tracepoints whose fields the programs read.
pub fn tracepoint_layout(tracefs: &Tracefs) -> Result<TracepointLayout, PreflightError> {
    let field = |fields: &HashMap<String, Field>, tp: &str, name: &str| {
        fields
            .get(name)
            .map(|f| f.offset)
            .ok_or_else(|| PreflightError::MissingTracepoint {
                tracepoint: tp.into(),
                detail: format!("its record has no field `{name}`"),
            })
    };
    let exec = tracefs.format("sched", "sched_process_exec")?;
    let exit = tracefs.format("sched", "sched_process_exit")?;
    // Syscall entry records share one layout; take it from one and check the others agree.
    let setuid = tracefs.format("syscalls", "sys_enter_setuid")?;
    let sys_nr = field(&setuid, "syscalls/sys_enter_setuid", "__syscall_nr")?;
    let sys_args = field(&setuid, "syscalls/sys_enter_setuid", "uid")?;
    for (tp, first) in [
        ("sys_enter_execve", "filename"),
        ("sys_enter_setresuid", "ruid"),
    ] {
        let f = tracefs.format("syscalls", tp)?;
        let (nr, arg) = (field(&f, tp, "__syscall_nr")?, field(&f, tp, first)?);
        if (nr, arg) != (sys_nr, sys_args) {
            return Err(PreflightError::MissingTracepoint {
                tracepoint: format!("syscalls/{tp}"),
                detail: format!(
                    "record layout differs from sys_enter_setuid ({nr}/{arg} vs {sys_nr}/{sys_args})"
                ),
            });
        }
    }
    Ok(TracepointLayout {
        exec_filename: field(&exec, "sched/sched_process_exec", "filename")?,
        exec_pid: field(&exec, "sched/sched_process_exec", "pid")?,
        exec_old_pid: field(&exec, "sched/sched_process_exec", "old_pid")?,
        exit_pid: field(&exit, "sched/sched_process_exit", "pid")?,
        // Added in 6.x; without it the program falls back to "the leader exited".
        exit_group_dead: exit.get("group_dead").map(|f| f.offset).unwrap_or(u32::MAX),
        sys_nr,
        sys_args,
        _pad: 0,
    })
}

/// The syscalls Vigil follows, by name and number on this architecture, with their dispatcher
/// class (a test checks each name's number against the kernel headers).
fn followed_syscalls() -> Vec<(&'static str, i64, u8)> {
    use sys_class::*;
    let mut table = vec![
        ("openat", libc::SYS_openat, OPENAT),
        ("openat2", libc::SYS_openat2, OPENAT2),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            OPEN_BY_HANDLE,
        ),
        ("pidfd_getfd", libc::SYS_pidfd_getfd, FD_FROM_PROCESS),
        ("read", libc::SYS_read, READ_TTY),
        ("write", libc::SYS_write, WRITE),
        ("writev", libc::SYS_writev, WRITEV),
        ("pread64", libc::SYS_pread64, READ_FD0),
        ("readv", libc::SYS_readv, READ_FD0),
        ("preadv", libc::SYS_preadv, READ_FD0),
        ("preadv2", libc::SYS_preadv2, READ_FD0),
        ("copy_file_range", libc::SYS_copy_file_range, READ_FD0),
        ("splice", libc::SYS_splice, READ_FD0),
        ("sendfile", libc::SYS_sendfile, READ_FD1),
        ("close", libc::SYS_close, CLOSE),
        ("dup3", libc::SYS_dup3, DUP_ONTO),
        ("connect", libc::SYS_connect, CONNECT),
        ("sendto", libc::SYS_sendto, SEND),
        ("sendmsg", libc::SYS_sendmsg, SEND),
        ("sendmmsg", libc::SYS_sendmmsg, SEND),
        ("bpf", libc::SYS_bpf, BPF),
        ("socket", libc::SYS_socket, SOCKET),
        ("ptrace", libc::SYS_ptrace, PTRACE),
        (
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            PROCESS_VM_READ,
        ),
        (
            "process_vm_writev",
            libc::SYS_process_vm_writev,
            PROCESS_VM_WRITE,
        ),
        ("rename", libc::SYS_rename, RENAME),
        ("renameat", libc::SYS_renameat, RENAMEAT),
        ("renameat2", libc::SYS_renameat2, RENAMEAT2),
        ("link", libc::SYS_link, LINK),
        ("linkat", libc::SYS_linkat, LINKAT),
        ("symlink", libc::SYS_symlink, SYMLINK),
        ("symlinkat", libc::SYS_symlinkat, SYMLINKAT),
        ("unlink", libc::SYS_unlink, UNLINK),
        ("rmdir", libc::SYS_rmdir, UNLINK),
        ("unlinkat", libc::SYS_unlinkat, UNLINKAT),
        ("ftruncate", libc::SYS_ftruncate, FTRUNCATE),
        ("truncate", libc::SYS_truncate, TRUNCATE),
        ("io_uring_setup", libc::SYS_io_uring_setup, IO_URING_SETUP),
        ("execve", libc::SYS_execve, EXECVE),
        ("execveat", libc::SYS_execveat, EXECVE),
        (
            "setuid",
            libc::SYS_setuid,
            PRIV_BASE + priv_op::SETUID as u8,
        ),
        (
            "setreuid",
            libc::SYS_setreuid,
            PRIV_BASE + priv_op::SETREUID as u8,
        ),
        (
            "setresuid",
            libc::SYS_setresuid,
            PRIV_BASE + priv_op::SETRESUID as u8,
        ),
        (
            "setfsuid",
            libc::SYS_setfsuid,
            PRIV_BASE + priv_op::SETFSUID as u8,
        ),
        (
            "setgid",
            libc::SYS_setgid,
            PRIV_BASE + priv_op::SETGID as u8,
        ),
        (
            "setregid",
            libc::SYS_setregid,
            PRIV_BASE + priv_op::SETREGID as u8,
        ),
        (
            "setresgid",
            libc::SYS_setresgid,
            PRIV_BASE + priv_op::SETRESGID as u8,
        ),
        (
            "setfsgid",
            libc::SYS_setfsgid,
            PRIV_BASE + priv_op::SETFSGID as u8,
        ),
    ];
    // Only architectures with the legacy calls have them.
    #[cfg(target_arch = "x86_64")]
    table.extend([
        ("open", libc::SYS_open, OPEN),
        ("creat", libc::SYS_creat, CREAT),
        ("dup2", libc::SYS_dup2, DUP_ONTO),
    ]);
    table
}

/// The 32-bit syscalls Vigil follows (x86_64's ia32 emulation, which any 64-bit process can
/// call with `int 0x80`), by their own numbers, with their class. Written here because the libc
/// crate has only the native numbers; a test checks each against the kernel headers'
/// `asm/unistd_32.h`. The numbers are the kernel's `syscall_32.tbl` and never change.
///
/// execve and execveat are absent: `sched_process_exec` records every exec, whatever the ABI.
/// The set*id family is seen but not decoded ([`sys_class::PRIV_UNDECODED`]): the entry
/// tracepoints that keep the credentials before the call do not fire for 32-bit calls (ftrace
/// ignores them), so a session's 32-bit set*id is counted as an untracked `priv` event, and
/// the ids it set show in every later event's header.
#[cfg(target_arch = "x86_64")]
fn followed_compat_syscalls() -> Vec<(&'static str, i64, u8)> {
    use sys_class::*;
    vec![
        ("read", 3, READ_TTY),
        ("write", 4, WRITE),
        ("open", 5, OPEN),
        ("close", 6, CLOSE),
        ("creat", 8, CREAT),
        ("dup2", 63, DUP_ONTO),
        ("socketcall", 102, SOCKETCALL),
        ("readv", 145, READ_FD0),
        ("writev", 146, WRITEV_COMPAT),
        ("pread64", 180, READ_FD0),
        ("sendfile", 187, READ_FD1),
        ("sendfile64", 239, READ_FD1),
        ("openat", 295, OPENAT),
        ("splice", 313, READ_FD0),
        ("dup3", 330, DUP_ONTO),
        ("preadv", 333, READ_FD0),
        ("open_by_handle_at", 342, OPEN_BY_HANDLE),
        ("connect", 362, CONNECT),
        ("sendmmsg", 345, SEND),
        ("sendto", 369, SEND),
        ("sendmsg", 370, SEND),
        ("bpf", 357, BPF),
        ("socket", 359, SOCKET),
        ("ptrace", 26, PTRACE),
        ("process_vm_readv", 347, PROCESS_VM_READ),
        ("process_vm_writev", 348, PROCESS_VM_WRITE),
        ("rename", 38, RENAME),
        ("renameat", 302, RENAMEAT),
        ("renameat2", 353, RENAMEAT2),
        ("link", 9, LINK),
        ("linkat", 303, LINKAT),
        ("symlink", 83, SYMLINK),
        ("symlinkat", 304, SYMLINKAT),
        ("unlink", 10, UNLINK),
        ("rmdir", 40, UNLINK),
        ("unlinkat", 301, UNLINKAT),
        ("ftruncate", 93, FTRUNCATE),
        ("truncate", 92, TRUNCATE),
        ("ftruncate64", 194, FTRUNCATE),
        ("truncate64", 193, TRUNCATE),
        ("copy_file_range", 377, READ_FD0),
        ("preadv2", 378, READ_FD0),
        ("io_uring_setup", 425, IO_URING_SETUP),
        ("openat2", 437, OPENAT2),
        ("pidfd_getfd", 438, FD_FROM_PROCESS),
        ("setuid", 23, PRIV_UNDECODED),
        ("setgid", 46, PRIV_UNDECODED),
        ("setreuid", 70, PRIV_UNDECODED),
        ("setregid", 71, PRIV_UNDECODED),
        ("setfsuid", 138, PRIV_UNDECODED),
        ("setfsgid", 139, PRIV_UNDECODED),
        ("setresuid", 164, PRIV_UNDECODED),
        ("setresgid", 170, PRIV_UNDECODED),
        ("setreuid32", 203, PRIV_UNDECODED),
        ("setregid32", 204, PRIV_UNDECODED),
        ("setresuid32", 208, PRIV_UNDECODED),
        ("setresgid32", 210, PRIV_UNDECODED),
        ("setuid32", 213, PRIV_UNDECODED),
        ("setgid32", 214, PRIV_UNDECODED),
        ("setfsuid32", 215, PRIV_UNDECODED),
        ("setfsgid32", 216, PRIV_UNDECODED),
    ]
}

/// The kernel's name of 32-bit syscall `nr`, when it is one the kernel programs follow (the
/// only ones a `compat_syscall` event can name).
#[cfg(target_arch = "x86_64")]
pub fn compat_syscall_name(nr: u32) -> Option<&'static str> {
    followed_compat_syscalls()
        .into_iter()
        .find(|(_, n, _)| *n == nr as i64)
        .map(|(name, _, _)| name)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn compat_syscall_name(_nr: u32) -> Option<&'static str> {
    None
}

/// Where the syscall arguments live in `struct pt_regs` (BTF names), per architecture.
#[cfg(target_arch = "x86_64")]
const ARG_REGS: [&str; 6] = ["di", "si", "dx", "r10", "r8", "r9"];
/// The same for 32-bit syscalls (the i386 convention).
#[cfg(target_arch = "x86_64")]
const COMPAT_ARG_REGS: [&str; 6] = ["bx", "cx", "dx", "si", "di", "bp"];
#[cfg(target_arch = "x86_64")]
const NR_REG: &str = "orig_ax";

/// The syscall ABI table the dispatcher uses: register offsets from BTF, classes by number.
#[cfg(target_arch = "x86_64")]
pub fn syscall_abi(btf: &Btf) -> Result<SyscallAbi, PreflightError> {
    let mut abi = SyscallAbi::empty();
    for (slot, reg) in abi.arg_offsets.iter_mut().zip(ARG_REGS) {
        *slot = btf.member_offset("pt_regs", reg)?;
    }
    for (slot, reg) in abi.compat_arg_offsets.iter_mut().zip(COMPAT_ARG_REGS) {
        *slot = btf.member_offset("pt_regs", reg)?;
    }
    abi.nr_offset = btf.member_offset("pt_regs", NR_REG)?;
    // thread_info is the first member of task_struct on x86_64 (THREAD_INFO_IN_TASK), but
    // where BTF says.
    abi.task_ti_status = btf.member_offset("task_struct", "thread_info")?
        + btf.member_offset("thread_info", "status")?;
    fill_classes(
        &mut abi.classes,
        followed_syscalls()
            .into_iter()
            .map(|(_, nr, class)| (nr, class)),
    )?;
    fill_classes(
        &mut abi.compat_classes,
        followed_compat_syscalls()
            .into_iter()
            .map(|(_, nr, class)| (nr, class)),
    )?;
    Ok(abi)
}

#[cfg(target_arch = "x86_64")]
fn fill_classes(
    table: &mut [u8; SYSCALL_TABLE_SIZE],
    syscalls: impl IntoIterator<Item = (i64, u8)>,
) -> Result<(), PreflightError> {
    for (nr, class) in syscalls {
        let slot = usize::try_from(nr)
            .ok()
            .and_then(|n| table.get_mut(n))
            .ok_or_else(|| {
                PreflightError::Layout(format!(
                    "syscall number {nr} is beyond the {SYSCALL_TABLE_SIZE}-entry class table"
                ))
            })?;
        *slot = class;
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn syscall_abi(_btf: &Btf) -> Result<SyscallAbi, PreflightError> {
    Err(PreflightError::Layout(
        "syscall argument registers are only mapped for x86_64 so far".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_followed_syscall_fits_the_table_once() {
        let table = followed_syscalls();
        let mut seen = std::collections::HashSet::new();
        for (_, nr, class) in &table {
            assert!((*nr as usize) < SYSCALL_TABLE_SIZE, "{nr}");
            assert_ne!(*class, sys_class::NONE);
            assert!(seen.insert(*nr), "syscall {nr} listed twice");
        }
    }

    /// Every 32-bit number is the kernel's own (its uapi header, which Debian's linux-libc-dev
    /// installs), once, and each native followed call that has a 32-bit twin is followed there
    /// too, but for execve (recorded at `sched_process_exec`) and the set*id family.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_followed_compat_syscall_is_the_kernels_number() {
        let numbers = kernel_numbers("unistd_32.h");
        let mut seen = std::collections::HashSet::new();
        for (name, nr, class) in followed_compat_syscalls() {
            assert_eq!(numbers.get(name), Some(&nr), "{name}");
            assert!(
                (nr as usize) < SYSCALL_TABLE_SIZE && seen.insert(nr),
                "{name}"
            );
            assert_ne!(class, sys_class::NONE);
        }
        let compat: std::collections::HashSet<u8> = followed_compat_syscalls()
            .into_iter()
            .map(|(_, _, class)| class)
            .collect();
        for (_, _, class) in followed_syscalls() {
            let twin = match class {
                sys_class::WRITEV => sys_class::WRITEV_COMPAT,
                c if c > sys_class::PRIV_BASE => sys_class::PRIV_UNDECODED,
                c => c,
            };
            assert!(
                class == sys_class::EXECVE || compat.contains(&twin),
                "class {class} has no 32-bit twin"
            );
        }
    }

    /// Syscall numbers by name from the kernel's uapi header `asm/<header>` (Debian's
    /// linux-libc-dev installs them).
    #[cfg(target_arch = "x86_64")]
    fn kernel_numbers(header: &str) -> std::collections::HashMap<String, i64> {
        let path = format!("/usr/include/x86_64-linux-gnu/asm/{header}");
        let text = std::fs::read_to_string(&path).expect("the kernel's uapi headers");
        text.lines()
            .filter_map(|l| l.strip_prefix("#define __NR_"))
            .filter_map(|l| {
                let (name, nr) = l.split_once(' ')?;
                Some((name.to_string(), nr.trim().parse().ok()?))
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_followed_native_syscall_is_the_kernels_number() {
        let numbers = kernel_numbers("unistd_64.h");
        for (name, nr, _) in followed_syscalls() {
            assert_eq!(numbers.get(name), Some(&nr), "{name}");
        }
    }

    /// The fexit programs follow exactly what the `sys_exit` tables follow: one entry function
    /// per followed syscall and ABI, of the same class, and none else (execve and execveat
    /// need none: `sched_process_exec` records every exec).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_syscall_entry_functions_are_the_followed_syscalls() {
        use std::collections::BTreeSet;
        let entries = |compat: bool| -> BTreeSet<(&str, u8)> {
            let listed: Vec<(&str, u8)> = vigil_common::X86_64_SYSCALL_ENTRIES
                .iter()
                .filter(|e| e.compat == compat)
                .map(|e| (e.syscall, e.class))
                .collect();
            let set: BTreeSet<_> = listed.iter().copied().collect();
            assert_eq!(set.len(), listed.len(), "an entry listed twice");
            set
        };
        let native: BTreeSet<(&str, u8)> = followed_syscalls()
            .into_iter()
            .filter(|(_, _, class)| *class != sys_class::EXECVE)
            .map(|(name, _, class)| (name, class))
            .collect();
        assert_eq!(entries(false), native);
        let compat: BTreeSet<(&str, u8)> = followed_compat_syscalls()
            .into_iter()
            .map(|(name, _, class)| (name, class))
            .collect();
        assert_eq!(entries(true), compat);
        let functions: BTreeSet<&str> = vigil_common::X86_64_SYSCALL_ENTRIES
            .iter()
            .map(|e| e.function)
            .collect();
        assert_eq!(functions.len(), vigil_common::X86_64_SYSCALL_ENTRIES.len());
    }

    /// Every entry function is one of this kernel's syscall entries (in its BTF, taking the
    /// registers), the ABI its name says. A 32-bit syscall with a compat entry point is entered
    /// there and not through its `__ia32_sys_` twin, which exists too: where this kernel has a
    /// `__ia32_compat_sys_<name>`, the table must name it, but for the calls whose i386 entry
    /// is another function by the kernel's `syscall_32.tbl` (listed here).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_syscall_entry_function_is_this_kernels() {
        // syscall_32.tbl: `239 sendfile64 sys_sendfile64` (its compat twin serves other
        // architectures' compat tables); `347 process_vm_readv sys_process_vm_readv` and its
        // writev (the compat versions went in 5.10; what is left of them is the weak
        // not-implemented stub).
        const NOT_THE_COMPAT_ENTRY: [&str; 3] =
            ["sendfile64", "process_vm_readv", "process_vm_writev"];
        let btf = Btf::from_kernel().expect("the kernel's BTF");
        for entry in vigil_common::X86_64_SYSCALL_ENTRIES {
            assert_eq!(
                btf.function_signature(entry.function).as_deref(),
                Some("long int (const struct pt_regs *)"),
                "{entry:?}"
            );
            let prefix = if entry.compat {
                "__ia32_"
            } else {
                "__x64_sys_"
            };
            assert!(entry.function.starts_with(prefix), "{entry:?}");
            let compat_entry = format!("__ia32_compat_sys_{}", entry.syscall);
            if entry.compat
                && btf.has_function(&compat_entry)
                && !NOT_THE_COMPAT_ENTRY.contains(&entry.syscall)
            {
                assert_eq!(entry.function, compat_entry, "{entry:?}");
            }
        }
    }

    /// On this machine kind's kernel every member a file's identity needs lies in the spans the
    /// programs copy at once (the one-copy path is what runs and is measured here), and each
    /// member the programs take out of a span ends inside it.
    #[test]
    fn the_file_identity_members_fit_the_spans_on_this_kernel() {
        let btf = Btf::from_kernel().expect("the kernel's BTF");
        let o = kernel_offsets(&btf).expect("offsets");
        assert_eq!((o.inode_span, o.file_span), (1, 1), "{o:?}");
        assert!(o.inode_ctime_nsec as usize + 4 <= INODE_SPAN);
        assert!(o.file_f_mode as usize + 4 <= FILE_SPAN);
    }
}
