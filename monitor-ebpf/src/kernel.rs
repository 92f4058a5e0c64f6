//! Reading the current task through member offsets the daemon found in BTF.

use crate::maps::{SPAN_MAX, SPAN_SCRATCH};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_get_current_uid_gid, bpf_ktime_get_ns, generated,
};
use core::ffi::c_void;
use vigil_common::{
    sys_class, CredIds, EventHeader, FileId, KernelOffsets, ScopeEntry, SyscallAbi,
    TracepointLayout, AUDIT_UNSET, FILE_SPAN, INODE_SPAN, SCHEMA_VERSION, SYSCALL_TABLE_SIZE,
};

// Load-time globals, set by the daemon with `EbpfLoader::set_global` (read-only, so the verifier
// sees constants). Zero here only to give them storage.
#[no_mangle]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = zeroed_offsets();
#[no_mangle]
pub(crate) static TP_LAYOUT: TracepointLayout = TracepointLayout {
    exec_filename: 0,
    exec_pid: 0,
    exec_old_pid: 0,
    exit_pid: 0,
    exit_group_dead: 0,
    sys_nr: 0,
    sys_args: 0,
    _pad: 0,
};
#[no_mangle]
pub(crate) static SYSCALL_ABI: SyscallAbi = SyscallAbi::empty();

const fn zeroed_offsets() -> KernelOffsets {
    KernelOffsets {
        task_pid: 0,
        task_tgid: 0,
        task_real_parent: 0,
        task_loginuid: 0,
        task_sessionid: 0,
        task_cred: 0,
        task_mm: 0,
        task_fs: 0,
        task_signal: 0,
        task_exit_code: 0,
        cred_uid: 0,
        cred_euid: 0,
        cred_suid: 0,
        cred_fsuid: 0,
        cred_gid: 0,
        cred_egid: 0,
        cred_sgid: 0,
        cred_fsgid: 0,
        cred_cap_effective: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        fs_pwd: 0,
        path_mnt: 0,
        path_dentry: 0,
        dentry_parent: 0,
        dentry_name: 0,
        qstr_name: 0,
        vfsmount_root: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        signal_tty: 0,
        tty_name: 0,
        task_files: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        file_inode: 0,
        file_private_data: 0,
        inode_rdev: 0,
        inode_mode: 0,
        tty_file_private_tty: 0,
        tty_termios: 0,
        tty_winsize: 0,
        fs_root: 0,
        mm_exe_file: 0,
        file_path: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        inode_uid: 0,
        inode_nlink: 0,
        inode_ctime_sec: 0,
        inode_ctime_nsec: 0,
        binprm_file: 0,
        socket_sk: 0,
        unix_sock_peer: 0,
        unix_sock_path: 0,
        dentry_inode: 0,
        file_f_mode: 0,
        bpf_map_id: 0,
        bpf_prog_aux: 0,
        bpf_prog_aux_id: 0,
        bpf_link_id: 0,
        sock_family: 0,
        sock_type: 0,
        sock_protocol: 0,
        task_ptraced: 0,
        task_ptrace_entry: 0,
        sb_magic: 0,
        mm_owner: 0,
        task_thread_pid: 0,
        pid_level: 0,
        inode_span: 0,
        file_span: 0,
    }
}

/// A kernel struct member offset. Volatile so the compiler cannot fold the placeholder zero.
macro_rules! koff {
    ($field:ident) => {
        {
            #[allow(unused_unsafe)]
            let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(crate::kernel::KERNEL_OFFSETS.$field)) };
            value
        }
            as usize
    };
}
pub(crate) use koff;

macro_rules! tp_layout {
    ($field:ident) => {
        {
            #[allow(unused_unsafe)]
            let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(crate::kernel::TP_LAYOUT.$field)) };
            value
        }
            as usize
    };
}
pub(crate) use tp_layout;

pub type Ptr = *const u8;

#[inline(always)]
pub fn current_task() -> Ptr {
    unsafe { bpf_get_current_task() as Ptr }
}

/// Reads a `T` at `base + off` in kernel memory; `None` when the read faults.
#[inline(always)]
pub fn read<T: Copy>(base: Ptr, off: usize) -> Option<T> {
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let ret = unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(off) as *const c_void,
        )
    };
    if ret == 0 {
        Some(unsafe { out.assume_init() })
    } else {
        None
    }
}

/// Reads a `T` at `base + off` in kernel memory, zero when the read faults. No branch: the
/// helper zeroes its destination on failure, and a walk over many pointers stays one path for
/// the verifier instead of two per read.
#[inline(always)]
pub fn read_or_zero<T: Copy + Default>(base: Ptr, off: usize) -> T {
    let mut out = T::default();
    unsafe {
        generated::bpf_probe_read_kernel(
            &mut out as *mut T as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(off) as *const c_void,
        )
    };
    out
}

#[inline(always)]
pub fn read_ptr(base: Ptr, off: usize) -> Ptr {
    read_or_zero::<u64>(base, off) as Ptr
}

#[inline(always)]
pub fn loginuid(task: Ptr) -> u32 {
    read::<u32>(task, koff!(task_loginuid)).unwrap_or(AUDIT_UNSET)
}

#[inline(always)]
pub fn sessionid(task: Ptr) -> u32 {
    read::<u32>(task, koff!(task_sessionid)).unwrap_or(AUDIT_UNSET)
}

/// The `struct sock` of the socket behind `file` (`file->private_data` is its `struct socket`),
/// null for a null file (a read through a null pointer reads zero). Only a socket's file gives
/// a `sock`: callers pass the fd a socket call used or returned, or compare the result with one.
#[inline(always)]
pub fn socket_sock(file: Ptr) -> Ptr {
    read_ptr(read_ptr(file, koff!(file_private_data)), koff!(socket_sk))
}

/// The process's root directory (`&task->fs->root`, a `struct path`), null when it has none.
#[inline(always)]
pub fn process_root(task: Ptr) -> Ptr {
    let fs = read_ptr(task, koff!(task_fs));
    if fs.is_null() {
        return core::ptr::null();
    }
    fs.wrapping_add(koff!(fs_root))
}

/// What the kernel knows of the file behind `file` (a `struct file`); zero when null.
#[inline(never)]
pub fn file_id(file: Ptr) -> FileId {
    if file.is_null() {
        return FileId::default();
    }
    let (inode, f_mode) = if koff!(file_span) != 0 {
        let head = Span::<FILE_SPAN>::read(file);
        (
            head.at::<u64>(koff!(file_inode)) as Ptr,
            head.at::<u32>(koff!(file_f_mode)),
        )
    } else {
        (
            read_ptr(file, koff!(file_inode)),
            read_or_zero(file, koff!(file_f_mode)),
        )
    };
    let mut id = inode_id(inode);
    if f_mode & FMODE_CREATED != 0 {
        id.flags |= vigil_common::file_flag::CREATED;
    }
    if f_mode & FMODE_READ != 0 {
        id.flags |= vigil_common::file_flag::READABLE;
    }
    if f_mode & FMODE_WRITE != 0 {
        id.flags |= vigil_common::file_flag::WRITABLE;
    }
    id
}

/// Whether `file` is a process's memory (`/proc/<pid>/mem` or a thread's): a procfs inode
/// whose dentry the kernel named `mem`. Names in procfs are the kernel's (no one can make a
/// file there), and this is the file's own dentry, not the last component of the path walked,
/// which a bind mount of the file (`mount --bind /proc/1/mem /tmp/x`) renames. Four reads: for
/// the opens that are sent, not for folded ones.
#[inline(always)]
pub fn is_process_memory(file: Ptr) -> bool {
    /// `PROC_SUPER_MAGIC` of include/uapi/linux/magic.h.
    const PROC_SUPER_MAGIC: u64 = 0x9fa0;
    let sb = read_ptr(read_ptr(file, koff!(file_inode)), koff!(inode_sb));
    if read::<u64>(sb, koff!(sb_magic)) != Some(PROC_SUPER_MAGIC) {
        return false;
    }
    let dentry = read_ptr(file, koff!(file_path) + koff!(path_dentry));
    let name = read_ptr(dentry, koff!(dentry_name) + koff!(qstr_name));
    read::<[u8; 4]>(name, 0) == Some(*b"mem\0")
}

/// The process whose memory the memory file `file` opens, and its session: the file holds the
/// `mm` it was opened on (`private_data`), and `mm->owner` is the task that owns it. Not the
/// pid in the file's path, which a bind mount hides and a second procfs renumbers.
#[inline(always)]
pub fn memory_owner(file: Ptr) -> (u32, u32) {
    if koff!(mm_owner) == 0 {
        return (0, AUDIT_UNSET);
    }
    let mm = read_ptr(file, koff!(file_private_data));
    let owner = read_ptr(mm, koff!(mm_owner));
    let tgid = read::<u32>(owner, koff!(task_tgid)).unwrap_or(0);
    (tgid, crate::scope::session_id_of(tgid))
}

/// `FMODE_CREATED` of include/linux/fs.h (bit 20 of `fmode_t`, unchanged since 4.19 added it).
const FMODE_CREATED: u32 = 1 << 20;
/// `FMODE_READ` and `FMODE_WRITE` (bits 0 and 1, unchanged since they were defined).
const FMODE_READ: u32 = 1 << 0;
const FMODE_WRITE: u32 = 1 << 1;

/// The inode number of the directory holding `file`'s dentry (on the file's own file system).
/// A bind mount of the directory, or of any directory above it, renames the path the walk
/// reports but not this: the daemon knows the directories rules name by inode (see the daemon's
/// `watched` module). 0 when it cannot be read, and for a file that is itself the root of the
/// mount it was opened through (a file or directory bind-mounted on its own): the walk's last
/// name is then the mount point's, not the file's. Six reads, for the opens that are sent.
/// Not inlined: its reads would widen the frame of the syscall exit program, whose deepest call
/// chain (through the connect path) is at the 512-byte limit.
#[inline(never)]
pub fn parent_dir_ino(file: Ptr) -> u64 {
    let dentry = read_ptr(file, koff!(file_path) + koff!(path_dentry));
    let vfsmnt = read_ptr(file, koff!(file_path) + koff!(path_mnt));
    if dentry.is_null() || dentry == read_ptr(vfsmnt, koff!(vfsmount_root)) {
        return 0;
    }
    let parent = read_ptr(dentry, koff!(dentry_parent));
    if parent.is_null() || parent == dentry {
        return 0;
    }
    read_or_zero(read_ptr(parent, koff!(dentry_inode)), koff!(inode_ino))
}

/// The identity of an inode (zero for none).
#[inline(always)]
pub fn inode_id(inode: Ptr) -> FileId {
    let mut id = FileId::default();
    if inode.is_null() {
        return id;
    }
    let sb = if koff!(inode_span) != 0 {
        // One copy instead of seven helper calls: this runs for every monitored open.
        let head = Span::<INODE_SPAN>::read(inode);
        id.ino = head.at(koff!(inode_ino));
        id.ctime_sec = head.at(koff!(inode_ctime_sec));
        id.ctime_nsec = head.at(koff!(inode_ctime_nsec));
        id.uid = head.at(koff!(inode_uid));
        id.nlink = head.at(koff!(inode_nlink));
        id.mode = head.at(koff!(inode_mode));
        head.at::<u64>(koff!(inode_sb)) as Ptr
    } else {
        id.ino = read_or_zero(inode, koff!(inode_ino));
        id.ctime_sec = read_or_zero(inode, koff!(inode_ctime_sec));
        id.ctime_nsec = read_or_zero(inode, koff!(inode_ctime_nsec));
        id.uid = read_or_zero(inode, koff!(inode_uid));
        id.nlink = read_or_zero(inode, koff!(inode_nlink));
        id.mode = read_or_zero(inode, koff!(inode_mode));
        read_ptr(inode, koff!(inode_sb))
    };
    id.dev = read_or_zero(sb, koff!(sb_dev));
    id
}

/// The first `N` bytes of a kernel struct, copied with one helper call; members are then taken
/// out at their offsets. The daemon sets a span flag only when every member read lies inside
/// (`KernelOffsets::inode_span`, `file_span`), and the offsets are load-time constants, so the
/// verifier checks each access exactly. Zero when the copy faults (the helper zeroes it).
///
/// The copy lands in per-CPU scratch ([`SPAN_SCRATCH`]), not on the stack: a program and the
/// subprograms it calls share 512 bytes of stack where the kernel gives tracing programs no
/// private stack, and these spans sat in most of the deepest frames. One span at a time: take
/// out what is needed before the next [`Span::read`].
pub struct Span<const N: usize>(*const u8);

impl<const N: usize> Span<N> {
    #[inline(always)]
    pub fn read(base: Ptr) -> Self {
        const { assert!(N <= SPAN_MAX) };
        let Some(buf) = SPAN_SCRATCH.get_ptr_mut(0) else {
            return Span(core::ptr::null());
        };
        unsafe {
            generated::bpf_probe_read_kernel(buf as *mut c_void, N as u32, base as *const c_void)
        };
        Span(buf as *const u8)
    }

    /// The `T` at `off`; zero past the end (never, where the daemon set the flag).
    #[inline(always)]
    pub fn at<T: Copy + Default>(&self, off: usize) -> T {
        if self.0.is_null() || off + core::mem::size_of::<T>() > N {
            return T::default();
        }
        unsafe { core::ptr::read_unaligned(self.0.add(off) as *const T) }
    }
}

/// [`cred_ids`] written in place (into a record), not built on the stack and copied.
#[inline(always)]
pub fn write_cred_ids(task: Ptr, out: *mut CredIds) {
    let cred = read_ptr(task, koff!(task_cred));
    unsafe {
        (*out).uid = read::<u32>(cred, koff!(cred_uid)).unwrap_or(u32::MAX);
        (*out).euid = read::<u32>(cred, koff!(cred_euid)).unwrap_or(u32::MAX);
        (*out).suid = read::<u32>(cred, koff!(cred_suid)).unwrap_or(u32::MAX);
        (*out).fsuid = read::<u32>(cred, koff!(cred_fsuid)).unwrap_or(u32::MAX);
        (*out).gid = read::<u32>(cred, koff!(cred_gid)).unwrap_or(u32::MAX);
        (*out).egid = read::<u32>(cred, koff!(cred_egid)).unwrap_or(u32::MAX);
        (*out).sgid = read::<u32>(cred, koff!(cred_sgid)).unwrap_or(u32::MAX);
        (*out).fsgid = read::<u32>(cred, koff!(cred_fsgid)).unwrap_or(u32::MAX);
        (*out).cap_effective = read::<u64>(cred, koff!(cred_cap_effective)).unwrap_or(0);
    }
}

#[inline(always)]
pub fn cred_ids(task: Ptr) -> CredIds {
    let mut ids = CredIds::default();
    write_cred_ids(task, &mut ids);
    ids
}

/// Fills every field of a record header for the current task.
#[inline(always)]
pub fn fill_header(h: *mut EventHeader, kind: u16, size: u32, task: Ptr) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let cred = read_ptr(task, koff!(task_cred));
    let parent = read_ptr(task, koff!(task_real_parent));
    let audit_loginuid = loginuid(task);
    let audit_sessionid = sessionid(task);
    // The session the process entered scope in, whatever it wrote to its loginuid since.
    let session = crate::scope::session_of((pid_tgid >> 32) as u32).unwrap_or(ScopeEntry {
        loginuid: audit_loginuid,
        sessionid: audit_sessionid,
    });
    // Field by field into the record, not built on the stack and copied: see `Span`.
    unsafe {
        (*h).version = SCHEMA_VERSION;
        (*h).kind = kind;
        (*h).size = size;
        (*h).ktime_ns = bpf_ktime_get_ns();
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).pid = pid_tgid as u32;
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).ppid = read::<u32>(parent, koff!(task_tgid)).unwrap_or(0);
        (*h).uid = uid_gid as u32;
        (*h).euid = read::<u32>(cred, koff!(cred_euid)).unwrap_or(u32::MAX);
        (*h).gid = (uid_gid >> 32) as u32;
        (*h).loginuid = session.loginuid;
        (*h).sessionid = session.sessionid;
        (*h).audit_loginuid = audit_loginuid;
        (*h).audit_sessionid = audit_sessionid;
        generated::bpf_get_current_comm(
            core::ptr::addr_of_mut!((*h).comm) as *mut c_void,
            core::mem::size_of_val(&(*h).comm) as u32,
        );
    }
}

/// The dispatcher class of syscall `nr` (`sys_class::NONE` for anything not followed).
#[inline(always)]
pub fn sys_class(nr: u64) -> u8 {
    class_in(core::ptr::addr_of!(SYSCALL_ABI.classes), nr)
}

/// The dispatcher class of 32-bit syscall `nr` (`SyscallAbi::compat_classes`).
#[inline(always)]
pub fn compat_sys_class(nr: u64) -> u8 {
    class_in(core::ptr::addr_of!(SYSCALL_ABI.compat_classes), nr)
}

#[inline(always)]
fn class_in(table: *const [u8; SYSCALL_TABLE_SIZE], nr: u64) -> u8 {
    if nr >= SYSCALL_TABLE_SIZE as u64 {
        return sys_class::NONE;
    }
    unsafe { core::ptr::read_volatile(table.cast::<u8>().add(nr as usize)) }
}

/// `TS_COMPAT` of arch/x86/include/asm/thread_info.h: a 32-bit syscall is in progress (set at
/// its entry, cleared on the return to user mode, so still set at `sys_exit`).
const TS_COMPAT: u32 = 0x0002;

/// The user registers of a syscall, as the `sys_exit` hook hands them over. Two ways to read
/// them, one per kind of program on that hook: see [`SysRegs`] and [`BtfRegs`].
pub trait Regs: Copy {
    /// Syscall argument `n` (0..6).
    fn arg(self, n: usize) -> u64;
    /// The syscall number, at exit.
    fn nr(self) -> u64;
    /// The current task's audit login uid, read the cheapest way this kind of program can.
    fn loginuid(self) -> u32;
    /// The `struct file` behind the current task's `fd` (null when there is none), found the
    /// cheapest way this kind of program can.
    fn fd_file(self, fd: u32) -> Ptr;
}

#[inline(always)]
fn arg_offset(n: usize) -> usize {
    register_offset(core::ptr::addr_of!(SYSCALL_ABI.arg_offsets), n)
}

/// Entry `n` of one of `SYSCALL_ABI`'s register offset tables (a load-time constant).
#[inline(always)]
fn register_offset(table: *const [u32; 6], n: usize) -> usize {
    (unsafe { core::ptr::read_volatile(table.cast::<u32>().add(n & 7)) }) as usize
}

/// What only the hook's own registers can tell: which ABI the call came through, and the
/// arguments of a 32-bit call. [`Exit`] picks the arguments by ABI for every handler.
pub trait HookRegs: Regs {
    /// The current task, as this kind of program reads through it best (a typed pointer where
    /// it can). Taken once per exit and handed to what reads the task: each helper call costs
    /// a return thunk on hosts with return-stack mitigations, and every followed syscall of
    /// every process pays these.
    fn task(self) -> Self::Task;
    /// What [`HookRegs::task`] gives.
    type Task: Copy;
    /// Whether the syscall ending is a 32-bit one (`TS_COMPAT` of `task`, the current thread).
    fn in_compat_syscall(self, task: Self::Task) -> bool;
    /// The audit login uid of `task`, the current task.
    fn loginuid_of(self, task: Self::Task) -> u32;
    /// Argument `n` of a 32-bit syscall: its register's low 32 bits, as the kernel reads them.
    fn compat_arg(self, n: usize) -> u64;
}

#[inline(always)]
fn compat_arg_offset(n: usize) -> usize {
    register_offset(core::ptr::addr_of!(SYSCALL_ABI.compat_arg_offsets), n)
}

#[inline(always)]
fn ti_status_offset() -> usize {
    (unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SYSCALL_ABI.task_ti_status)) }) as usize
}

#[inline(always)]
fn nr_offset() -> usize {
    (unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SYSCALL_ABI.nr_offset)) }) as usize
}

/// The registers as a raw tracepoint passes them: an untyped pointer, read with
/// `bpf_probe_read_kernel` (a helper call each).
#[derive(Clone, Copy)]
pub struct SysRegs(pub Ptr);

impl Regs for SysRegs {
    #[inline(always)]
    fn arg(self, n: usize) -> u64 {
        read::<u64>(self.0, arg_offset(n)).unwrap_or(0)
    }

    #[inline(always)]
    fn nr(self) -> u64 {
        read::<u64>(self.0, nr_offset()).unwrap_or(u64::MAX)
    }

    #[inline(always)]
    fn loginuid(self) -> u32 {
        loginuid(current_task())
    }

    #[inline(always)]
    fn fd_file(self, fd: u32) -> Ptr {
        fd_file(current_task(), fd)
    }
}

/// The raw hook asks for the task where it reads it (nothing is kept: a pointer kept across
/// the exit grew the raw program's frame past the stack budget, and its reads are helper calls
/// either way).
impl HookRegs for SysRegs {
    type Task = ();

    #[inline(always)]
    fn task(self) {}

    #[inline(always)]
    fn in_compat_syscall(self, _task: ()) -> bool {
        read::<u32>(current_task(), ti_status_offset()).unwrap_or(0) & TS_COMPAT != 0
    }

    #[inline(always)]
    fn loginuid_of(self, _task: ()) -> u32 {
        loginuid(current_task())
    }

    #[inline(always)]
    fn compat_arg(self, n: usize) -> u64 {
        read::<u64>(self.0, compat_arg_offset(n)).unwrap_or(0) & 0xffff_ffff
    }
}

/// The registers as a BTF-typed tracepoint (`tp_btf`) passes them: a `struct pt_regs *` the
/// verifier knows the type of, so each register is one checked load instead of a helper call.
/// The offsets are load-time constants (frozen `.rodata`), which the verifier checks against
/// the kernel's `pt_regs`.
#[derive(Clone, Copy)]
pub struct BtfRegs(pub Ptr);

impl Regs for BtfRegs {
    #[inline(always)]
    fn arg(self, n: usize) -> u64 {
        unsafe { core::ptr::read_volatile(self.0.wrapping_add(arg_offset(n)) as *const u64) }
    }

    #[inline(always)]
    fn nr(self) -> u64 {
        unsafe { core::ptr::read_volatile(self.0.wrapping_add(nr_offset()) as *const u64) }
    }

    #[inline(always)]
    fn loginuid(self) -> u32 {
        self.loginuid_of(self.task())
    }

    /// `current->files->fdt->fd[fd]`: the first three steps are checked loads through typed
    /// pointers (a null one reads as zero); the array's element is read with a helper call, as
    /// the kernel's BTF types `fdt->fd` as a pointer to pointers, which the verifier does not
    /// follow.
    #[inline(always)]
    fn fd_file(self, fd: u32) -> Ptr {
        let files: u64 = typed_load(current_task_btf(), koff!(task_files));
        let fdt: u64 = typed_load(files as Ptr, koff!(files_fdt));
        let max_fds: u32 = typed_load(fdt as Ptr, koff!(fdtable_max_fds));
        if fd >= max_fds {
            return core::ptr::null();
        }
        let array: u64 = typed_load(fdt as Ptr, koff!(fdtable_fd));
        read_ptr(array as Ptr, fd as usize * 8)
    }
}

impl HookRegs for BtfRegs {
    type Task = Ptr;

    #[inline(always)]
    fn task(self) -> Ptr {
        current_task_btf()
    }

    #[inline(always)]
    fn in_compat_syscall(self, task: Ptr) -> bool {
        typed_load::<u32>(task, ti_status_offset()) & TS_COMPAT != 0
    }

    /// `current->loginuid` through the typed task pointer: one checked load.
    #[inline(always)]
    fn loginuid_of(self, task: Ptr) -> u32 {
        typed_load(task, koff!(task_loginuid))
    }

    #[inline(always)]
    fn compat_arg(self, n: usize) -> u64 {
        let reg = unsafe {
            core::ptr::read_volatile(self.0.wrapping_add(compat_arg_offset(n)) as *const u64)
        };
        reg & 0xffff_ffff
    }
}

/// One syscall's exit as every handler reads it: the hook's registers, the ABI the call came
/// through (a 64-bit process can make 32-bit calls, with other numbers and registers, which
/// must not be a way around what is followed), and the current task's login uid, read once to
/// decide scope and reused by every check after.
#[derive(Clone, Copy)]
pub struct Exit<R> {
    pub regs: R,
    pub compat: bool,
    pub login: u32,
}

impl<R: HookRegs> Exit<R> {
    #[inline(always)]
    pub fn read(regs: R, compat: bool, task: R::Task) -> Self {
        Exit {
            regs,
            compat,
            login: regs.loginuid_of(task),
        }
    }
}

impl<R: HookRegs> Regs for Exit<R> {
    #[inline(always)]
    fn arg(self, n: usize) -> u64 {
        if self.compat {
            self.regs.compat_arg(n)
        } else {
            self.regs.arg(n)
        }
    }

    #[inline(always)]
    fn nr(self) -> u64 {
        self.regs.nr()
    }

    #[inline(always)]
    fn loginuid(self) -> u32 {
        self.login
    }

    #[inline(always)]
    fn fd_file(self, fd: u32) -> Ptr {
        self.regs.fd_file(fd)
    }
}

/// The current task's login uid through the typed task pointer: one checked load, not a helper
/// call. For the cgroup socket hooks, which every datagram of every service passes (the kernel
/// gives them the typed pointer too, to a loader with `CAP_PERFMON`).
#[inline(always)]
pub fn current_loginuid_typed() -> u32 {
    typed_load(current_task_btf(), koff!(task_loginuid))
}

/// The current task as a BTF-typed pointer (only programs of the typed kinds may ask).
#[inline(always)]
fn current_task_btf() -> Ptr {
    unsafe { generated::bpf_get_current_task_btf() as Ptr }
}

/// A member of a struct behind a BTF-typed pointer, at a load-time constant offset: one load the
/// verifier checks against the kernel's type (a faulting one reads as zero).
#[inline(always)]
fn typed_load<T: Copy>(base: Ptr, off: usize) -> T {
    unsafe { core::ptr::read_volatile(base.wrapping_add(off) as *const T) }
}

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The `struct file` behind `fd` in `task` (null when there is none): task->files->fdt->fd[fd].
#[inline(always)]
pub fn fd_file(task: Ptr, fd: u32) -> Ptr {
    let files = read_ptr(task, koff!(task_files));
    let fdt = read_ptr(files, koff!(files_fdt));
    let max_fds = read::<u32>(fdt, koff!(fdtable_max_fds)).unwrap_or(0);
    if fdt.is_null() || fd >= max_fds {
        return core::ptr::null();
    }
    let array = read_ptr(fdt, koff!(fdtable_fd));
    read_ptr(array, fd as usize * 8)
}
