//! Vigil's kernel/user event schema.
//!
//! The kernel programs write these `#[repr(C)]` records into the ring buffer; the daemon decodes
//! each record exactly once, at the edge (`monitor::decode`), into owned Rust types. Every record
//! starts with an [`EventHeader`] carrying the schema version, the record kind and the number of
//! bytes that follow, so a decoder can reject anything it does not understand without guessing.
//!
//! Layout rules, checked by the tests at the bottom of this file:
//! - no implicit padding (the kernel writes every byte, so nothing uninitialised leaks out, and the
//!   userspace decoder can read fields at fixed offsets);
//! - variable-length data (paths, argv, cwd) lives in a trailing `tail`, and the kernel only sends
//!   the used prefix of it; the fixed part records how many tail bytes each string uses.
#![no_std]

/// Bumped whenever a record's layout changes. The daemon refuses records of another version.
pub const SCHEMA_VERSION: u16 = 4;

/// The kinds of record the kernel writes (`EventHeader::kind`), written once. The value
/// arrives from the kernel as a `u16` and is validated with [`RecordKind::from_u16`], never
/// transmuted; a kind this enum lacks is a decode error.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Exec = 1,
    Exit = 2,
    Open = 3,
    FileRead = 4,
    Connect = 5,
    Priv = 6,
    Fork = 7,
    /// Bytes a session's process wrote to a terminal (what the terminal showed).
    TtyOut = 8,
    /// Bytes a session's process read from a terminal with echo on (what was typed).
    TtyIn = 9,
    /// An io_uring instance set up (or the attempt): its operations reach files and sockets
    /// without the syscalls the other kinds follow.
    IoUring = 10,
    /// Opens the kernel counted instead of sending one record each: a process's routine opens
    /// (loader, locale) since its exec, or the repeats of one open within the fold window.
    OpensFolded = 11,
    /// A process in scope made a 32-bit syscall (x86_64's ia32 ABI: `int 0x80` from a 64-bit
    /// program, or a 32-bit program): once per process, at the first one Vigil follows.
    CompatSyscall = 12,
    /// A process in scope called bpf(2), the way to every eBPF program, map and link on the
    /// host (the monitor's own among them): once per process and command, and every time for
    /// the commands that load, attach or reach an object by id.
    Bpf = 13,
    /// A process in scope created (or tried to create) a socket below the transport layer: raw
    /// IP, packet (`AF_PACKET`), or ICMP echo. Such sockets send what no connect or datagram
    /// hook sees (crafted packets, ping tunnels) and read every packet on an interface.
    RawSocket = 14,
    /// A process in scope reached into another process: attached to it with ptrace(2)
    /// (`PTRACE_ATTACH`, `PTRACE_SEIZE`), or read or wrote its memory with
    /// `process_vm_readv`/`process_vm_writev`. A tracer can run any code in its tracee: a
    /// session's work done inside a service outside it has left the session.
    ProcessAccess = 15,
    /// A process in scope gave a file a name or took one away: rename(2) (or an exchange of
    /// two names), a hard link, a symlink, unlink(2) or rmdir(2). A file written elsewhere and
    /// renamed into a watched directory opens nothing there; a log removed is not written.
    Link = 16,
}

impl RecordKind {
    /// Every kind, in number order.
    pub const ALL: [RecordKind; 16] = [
        RecordKind::Exec,
        RecordKind::Exit,
        RecordKind::Open,
        RecordKind::FileRead,
        RecordKind::Connect,
        RecordKind::Priv,
        RecordKind::Fork,
        RecordKind::TtyOut,
        RecordKind::TtyIn,
        RecordKind::IoUring,
        RecordKind::OpensFolded,
        RecordKind::CompatSyscall,
        RecordKind::Bpf,
        RecordKind::RawSocket,
        RecordKind::ProcessAccess,
        RecordKind::Link,
    ];

    pub const fn from_u16(v: u16) -> Option<RecordKind> {
        let mut i = 0;
        while i < RecordKind::ALL.len() {
            if RecordKind::ALL[i] as u16 == v {
                return Some(RecordKind::ALL[i]);
            }
            i += 1;
        }
        None
    }
}

/// The kinds as the numbers the kernel programs write (derived from [`RecordKind`]).
pub mod kind {
    use super::RecordKind;
    pub const EXEC: u16 = RecordKind::Exec as u16;
    pub const EXIT: u16 = RecordKind::Exit as u16;
    pub const OPEN: u16 = RecordKind::Open as u16;
    pub const FILE_READ: u16 = RecordKind::FileRead as u16;
    pub const CONNECT: u16 = RecordKind::Connect as u16;
    pub const PRIV: u16 = RecordKind::Priv as u16;
    pub const FORK: u16 = RecordKind::Fork as u16;
    pub const TTY_OUT: u16 = RecordKind::TtyOut as u16;
    pub const TTY_IN: u16 = RecordKind::TtyIn as u16;
    pub const IO_URING: u16 = RecordKind::IoUring as u16;
    pub const OPENS_FOLDED: u16 = RecordKind::OpensFolded as u16;
    pub const COMPAT_SYSCALL: u16 = RecordKind::CompatSyscall as u16;
    pub const BPF: u16 = RecordKind::Bpf as u16;
    pub const RAW_SOCKET: u16 = RecordKind::RawSocket as u16;
    pub const PROCESS_ACCESS: u16 = RecordKind::ProcessAccess as u16;
    pub const LINK: u16 = RecordKind::Link as u16;
    /// One past the largest kind; sizes the per-kind counter arrays.
    pub const COUNT: u16 = RecordKind::Link as u16 + 1;
}

/// Bits of [`Policy::kinds`]: which event kinds the kernel emits.
pub const fn kind_bit(kind: u16) -> u32 {
    1u32 << kind
}

/// Counters kept per CPU in the kernel, one slot per (kind, outcome).
pub mod counter {
    /// A record was written to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// The event was out of scope and nothing was written.
    pub const FILTERED: u32 = 1;
    /// The ring buffer was full: the event is lost.
    pub const LOST: u32 = 2;
    /// A record went out with a string cut short (argv, path or cwd longer than the limits).
    pub const TRUNCATED: u32 = 3;
    /// A table the kernel side keeps between syscalls was full (pending set*id calls, open
    /// files whose reads are counted): the event could not be followed and is lost.
    pub const UNTRACKED: u32 = 4;
    /// A response in force acted on the event in the kernel: an exec denied, a connection
    /// refused, a process of a killed or held session signalled (see [`super::respond`]).
    pub const ENFORCED: u32 = 5;
    pub const OUTCOMES: u32 = 6;
    /// Number of slots in the counters map.
    pub const SLOTS: u32 = super::kind::COUNT as u32 * OUTCOMES;

    pub const fn index(kind: u16, outcome: u32) -> u32 {
        kind as u32 * OUTCOMES + outcome
    }
}

/// `Policy::scope` values.
pub mod scope {
    /// Processes whose audit loginuid is set (interactive login sessions) and everything they
    /// start, whatever its effective uid.
    pub const LOGIN_SESSIONS: u32 = 0;
    /// Every process on the host (for hosts where every process is interesting; noisy).
    pub const ALL: u32 = 1;
    /// Nothing: capture paused.
    pub const NONE: u32 = 2;
}

/// The in-kernel scoping policy (single entry of the `POLICY` array map).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// One of [`scope`].
    pub scope: u32,
    /// Bit set of [`kind_bit`] for the kinds to emit.
    pub kinds: u32,
    /// Most argv bytes copied per exec (at most [`EXEC_ARGV_MAX`]); beyond it the record is
    /// flagged [`EXEC_ARGV_TRUNCATED`].
    pub max_argv_bytes: u32,
    /// Non-zero: also walk the cwd for relative opens (costs a dentry walk per relative open).
    pub resolve_relative_opens: u32,
    /// Wake the daemon only once this many bytes wait in the ring buffer; it also drains on a
    /// short timer. Waking it per record would cost a context switch per event.
    pub wakeup_bytes: u32,
    /// Most terminal bytes copied per write or read (at most [`TTY_DATA_CAP`]); beyond it the
    /// record is flagged [`TTY_TRUNCATED`].
    pub max_tty_bytes: u32,
    /// Terminal bytes copied per session (KiB) before records carry only lengths
    /// ([`TTY_OVER_BUDGET`]).
    pub tty_session_budget_kib: u32,
    /// Non-zero: walk every opened file's and executable's path from the kernel's objects.
    pub canonical_paths: u32,
    /// Non-zero: fold routine opens and repeated opens into [`FoldedRecord`]s (see [`fold`]).
    pub fold_opens: u32,
    /// Read-only opens of a file the process opened (and had sent) less than this long ago are
    /// counted in that open's fold instead of sent (milliseconds).
    pub fold_repeat_window_ms: u32,
}

impl Policy {
    pub const fn default_policy() -> Self {
        Policy {
            scope: scope::LOGIN_SESSIONS,
            kinds: u32::MAX,
            max_argv_bytes: 4096,
            resolve_relative_opens: 1,
            wakeup_bytes: 256 * 1024,
            max_tty_bytes: 8192,
            tty_session_budget_kib: 64 * 1024,
            canonical_paths: 1,
            fold_opens: 0,
            fold_repeat_window_ms: 0,
        }
    }
}

/// Header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`SCHEMA_VERSION`].
    pub version: u16,
    /// One of [`kind`].
    pub kind: u16,
    /// Bytes in the record, header included (the used prefix of the record struct).
    pub size: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds. Userspace adds the realtime offset.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Login uid of the session the process belongs to (`u32::MAX` outside sessions): the
    /// audit login uid it had when it entered scope, kept by the kernel programs for it and its
    /// descendants whatever they later write to `/proc/self/loginuid` (see [`ScopeEntry`]).
    pub loginuid: u32,
    /// Audit session id of that session (`u32::MAX` outside sessions).
    pub sessionid: u32,
    /// The task's audit login uid and session id now. They differ from `loginuid`/`sessionid`
    /// only when a process of a session changed them: an attempt to leave the session.
    pub audit_loginuid: u32,
    pub audit_sessionid: u32,
    /// Task command name, NUL padded.
    pub comm: [u8; 16],
}

/// The session a process in scope belongs to, kept per process (`SCOPE` map, by tgid): set when
/// it is first seen with a login uid, inherited by every child at fork, removed at its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeEntry {
    pub loginuid: u32,
    pub sessionid: u32,
}

// ---------------------------------------------------------------------------------------------
// responses the kernel enforces

/// What the kernel does to the processes of one session (`SESSION_VERDICTS`, by audit session
/// id), and the bits of `RESPOND_ACTIVE` that tell the programs whether to look at all.
pub mod respond {
    /// Every process of the session gets SIGKILL at its next exec, fork or followed syscall.
    pub const KILL: u32 = 1;
    /// Every process of the session gets SIGSTOP at its next exec, fork or followed syscall
    /// (one continued by someone else stops again).
    pub const HOLD: u32 = 2;
    /// The session's outbound connections are refused (`EPERM`) by the cgroup connect programs.
    pub const DENY_CONNECT: u32 = 4;

    /// `RESPOND_ACTIVE` bit: some session has a verdict (else the programs skip the lookup).
    pub const ACTIVE_SESSIONS: u32 = 1;
    /// `RESPOND_ACTIVE` bit: some executable is denied.
    pub const ACTIVE_DENY_EXEC: u32 = 2;
}

/// An executable as the kernel knows it: the device and inode of the file it loaded
/// (`mm->exe_file`), whatever path, link, bind mount or name reached it. Keys `DENY_EXEC` and
/// `PROTECTED_EXES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub ino: u64,
    /// `super_block.s_dev`, the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
}

// ---------------------------------------------------------------------------------------------
// kernel paths and file identity

/// Components walked up from a `struct path` at most (innermost first). Deeper paths are cut
/// and flagged [`path_flag::TRUNCATED`]: the innermost components (the file's own name and its
/// nearest directories) are the ones kept.
pub const PATH_DEPTH_MAX: u32 = 40;
/// Path components stop being copied once this many bytes are used.
pub const PATH_BYTES_MAX: u32 = 2048;
/// Longest single path component copied (NAME_MAX + NUL).
pub const COMPONENT_MAX: u32 = 256;
/// Room one walked path may take in a record's tail.
pub const PATH_SPAN: u32 = PATH_BYTES_MAX + COMPONENT_MAX;

/// A path the kernel walked from a `struct path` (an opened file, an executable, a cwd) up to the
/// root of the mount namespace, across mount points: the path of the object itself, however the
/// caller named it (symlinks, `..`, directory fds, bind mounts and `/proc/self/...` resolve to
/// what was opened).
///
/// Tail encoding: `len` bytes of NUL-terminated components, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathWalk {
    pub len: u16,
    /// Bytes of the innermost components that lie inside the process's root directory: the path
    /// as the process sees it is those components (equal to `len` unless the process is
    /// chrooted). Meaningless with [`path_flag::OUTSIDE_ROOT`].
    pub root_at: u16,
    /// [`path_flag`] bits.
    pub flags: u16,
    pub _pad: u16,
}

impl PathWalk {
    /// Nothing was walked (no file, no mm, canonical paths off).
    pub const UNAVAILABLE: PathWalk = PathWalk {
        len: 0,
        root_at: 0,
        flags: path_flag::UNAVAILABLE,
        _pad: 0,
    };
}

/// [`PathWalk::flags`].
pub mod path_flag {
    /// Deeper or longer than the bounds: the outermost components are missing.
    pub const TRUNCATED: u16 = 1 << 0;
    /// Nothing to walk (no file, no mm, a read fault).
    pub const UNAVAILABLE: u16 = 1 << 1;
    /// The walk never met the process's root: the object lies outside its chroot (an fd
    /// passed in or kept from before `chroot`, a chroot escape).
    pub const OUTSIDE_ROOT: u16 = 1 << 2;
}

/// What the kernel knows of a file: its inode, the device of its file system, owner, mode and
/// change time. Identifies a file whatever path reached it (hard links, bind mounts, renames).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileId {
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// `super_block.s_dev`, the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    pub uid: u32,
    /// 0 for a deleted (or never linked: `O_TMPFILE`, memfd) file.
    pub nlink: u32,
    pub mode: u16,
    /// [`file_flag`] bits: what the opening `struct file` says of itself.
    pub flags: u8,
    pub _pad: [u8; 5],
}

/// `FileId.flags`.
pub mod file_flag {
    /// The open that made this `struct file` created the file (the kernel's `FMODE_CREATED`):
    /// an `O_TRUNC` on it emptied nothing.
    pub const CREATED: u8 = 1 << 0;
    /// The `struct file` was opened for reading (`FMODE_READ`): a copied fd's access.
    pub const READABLE: u8 = 1 << 1;
    /// The `struct file` was opened for writing (`FMODE_WRITE`).
    pub const WRITABLE: u8 = 1 << 2;
    /// A process's memory (`/proc/<pid>/mem`, `/proc/<pid>/task/<tid>/mem`), known by the
    /// kernel's own objects, not by the path: a procfs inode under the kernel's name `mem`,
    /// whatever mount, bind mount or second procfs reached it. Set on the opens that are sent.
    pub const PROCESS_MEMORY: u8 = 1 << 3;
}

pub const HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();

/// Unset audit ids (`AUDIT_UID_UNSET`, `AUDIT_SID_UNSET`).
pub const AUDIT_UNSET: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// exec

/// Largest argv copy per exec, in bytes.
pub const EXEC_ARGV_MAX: u32 = 16383;
/// Longest filename copied (bytes, NUL included).
pub const EXEC_FILENAME_MAX: u32 = 512;
/// Longest tty name copied (bytes, NUL included).
pub const TTY_NAME_MAX: u32 = 64;
/// Everything before argv (filename, tty, cwd, executable) fits below this offset in the tail.
pub const EXEC_PREFIX_SPAN: u32 = 8192;
const _: () = assert!(EXEC_FILENAME_MAX + TTY_NAME_MAX + 2 * PATH_SPAN <= EXEC_PREFIX_SPAN);
/// A power of two at least `EXEC_PREFIX_SPAN + EXEC_ARGV_MAX`, so that the kernel can bound the
/// used size with a mask, which the verifier tracks exactly.
pub const EXEC_TAIL_CAP: usize = 32768;
const _: () = assert!(EXEC_TAIL_CAP >= (EXEC_PREFIX_SPAN + EXEC_ARGV_MAX) as usize);
const _: () = assert!(EXEC_TAIL_CAP.is_power_of_two());

pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 1;
pub const EXEC_CWD_TRUNCATED: u32 = 1 << 2;
pub const EXEC_CWD_UNAVAILABLE: u32 = 1 << 3;
pub const EXEC_ARGV_UNAVAILABLE: u32 = 1 << 4;

/// A successful exec (`sched_process_exec`).
///
/// Tail layout: `filename` (`filename_len` bytes, NUL included), `tty` (`tty_len`, NUL included,
/// 0 when there is no controlling terminal), `cwd` (`cwd_len` bytes: NUL-terminated components,
/// innermost first), the executable's path (`exe_path`), then `argv` (`argv_len` bytes, the
/// process's NUL-separated argument area).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: EventHeader,
    /// The file the kernel loaded (`mm->exe_file`), not the name passed to exec: a copy or a
    /// rename of a program cannot borrow another's identity.
    pub exe: FileId,
    pub exe_path: PathWalk,
    /// Thread id that called exec (differs from `pid` when a non-leader thread exec'd).
    pub old_pid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub filename_len: u16,
    pub tty_len: u16,
    pub cwd_len: u16,
    pub argv_len: u16,
    /// Size of the whole argument area, to report how much was cut.
    pub argv_total: u32,
    /// What the new image's fds 0, 1 and 2 are (`stdio_kind::*`), read at exec: a shell whose
    /// input is a socket is a reverse shell; one whose input is a pipe may run a download.
    pub stdio: [u8; 3],
    pub _pad: u8,
    pub tail: [u8; EXEC_TAIL_CAP],
}

/// What an exec'd process's standard fds are (`ExecRecord::stdio`).
pub mod stdio_kind {
    pub const NONE: u8 = 0;
    pub const TTY: u8 = 1;
    pub const PIPE: u8 = 2;
    pub const SOCKET: u8 = 3;
    pub const FILE: u8 = 4;
    pub const OTHER: u8 = 5;
}

pub const EXEC_FIXED_SIZE: usize = core::mem::offset_of!(ExecRecord, tail);

// ---------------------------------------------------------------------------------------------
// exit

/// The last thread of a process exited (`sched_process_exit` with `group_dead`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRecord {
    pub header: EventHeader,
    /// Raw `task_struct.exit_code`: `(status << 8) | signal`, with 0x80 for a core dump.
    pub exit_code: u32,
    pub _pad: u32,
}

// ---------------------------------------------------------------------------------------------
// open

pub const OPEN_PATH_MAX: u32 = 4096;
/// The requested path, its base and the opened file's path fit below this offset.
pub const OPEN_TAIL_SPAN: u32 = 16384;
const _: () = assert!(OPEN_PATH_MAX + 2 * PATH_SPAN <= OPEN_TAIL_SPAN);
/// A power of two at least `OPEN_TAIL_SPAN + COMPONENT_MAX` (see `EXEC_TAIL_CAP`).
pub const OPEN_TAIL_CAP: usize = 32768;
const _: () = assert!(OPEN_TAIL_CAP >= (OPEN_TAIL_SPAN + COMPONENT_MAX) as usize);
const _: () = assert!(OPEN_TAIL_CAP.is_power_of_two());

pub const OPEN_PATH_TRUNCATED: u16 = 1 << 0;
pub const OPEN_CWD_TRUNCATED: u16 = 1 << 1;
pub const OPEN_PATH_UNAVAILABLE: u16 = 1 << 2;
/// The kernel's open-file table had no room: reads from this open are not followed.
pub const OPEN_READS_UNTRACKED: u16 = 1 << 3;
/// The base of a relative path (`cwd_len` bytes) is the directory of `dfd`, not the cwd.
pub const OPEN_BASE_IS_DFD: u16 = 1 << 4;

/// Which syscall opened the file.
pub mod open_syscall {
    pub const OPENAT: u16 = 1;
    pub const OPEN: u16 = 2;
    pub const OPENAT2: u16 = 3;
    pub const CREAT: u16 = 4;
    /// No path asked for: `dfd` is the mount fd, the file is known by what was opened.
    pub const OPEN_BY_HANDLE_AT: u16 = 5;
    /// Another process's open file, copied with `pidfd_getfd`: `dfd` is the pidfd, the flags
    /// the file's access mode.
    pub const PIDFD_GETFD: u16 = 6;
    /// A file cut to a length with `ftruncate(fd, len)` (`dfd` is the fd) or `truncate(path,
    /// len)`: an open for writing with `O_TRUNC` by its effect, though nothing was opened.
    pub const FTRUNCATE: u16 = 7;
    pub const TRUNCATE: u16 = 8;
}

/// `AT_FDCWD` as it arrives in `dfd`.
pub const AT_FDCWD: i32 = -100;

/// A file open, reported at syscall exit so the user page holding the path has been read by the
/// kernel (never empty because of a not-yet-faulted page).
///
/// Tail: `path` (`path_len` bytes, NUL included) then, for relative paths, their base: the cwd
/// or, with [`OPEN_BASE_IS_DFD`], the directory `dfd` refers to (`cwd_len` bytes, components
/// innermost first), then the opened file's own path (`file_path`, for successful opens).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenRecord {
    pub header: EventHeader,
    /// The file opened (zero for a failed open).
    pub file: FileId,
    pub file_path: PathWalk,
    pub open_flags: u32,
    pub mode: u32,
    pub dfd: i32,
    /// fd on success, `-errno` on failure.
    pub ret: i32,
    /// One of [`open_syscall`].
    pub syscall: u16,
    pub path_len: u16,
    pub cwd_len: u16,
    /// `OPEN_*` flags.
    pub flags: u16,
    /// For a process's memory file (`file_flag::PROCESS_MEMORY`): the process whose memory it
    /// is (`mm->owner`, 0 when it cannot be read) and its session as the lineage map has it
    /// ([`AUDIT_UNSET`] for none). Zero and unset otherwise.
    pub memory_tgid: u32,
    pub memory_sessionid: u32,
    /// The inode number of the directory the opened file is in (its dentry's parent, on the
    /// file's file system); 0 for a failed open, when it cannot be read, and when the file is
    /// itself the root of the mount it was opened through.
    pub dir_ino: u64,
    pub tail: [u8; OPEN_TAIL_CAP],
}

pub const OPEN_FIXED_SIZE: usize = core::mem::offset_of!(OpenRecord, tail);

// ---------------------------------------------------------------------------------------------
// terminal I/O

/// Largest terminal data copied per record (a power of two, for the verifier's mask).
pub const TTY_DATA_CAP: usize = 16384;
/// The call moved more bytes than were copied.
pub const TTY_TRUNCATED: u16 = 1;
/// The session's terminal budget is spent: lengths only, no data.
pub const TTY_OVER_BUDGET: u16 = 2;
/// The data could not be read from user memory.
pub const TTY_UNREADABLE: u16 = 4;

/// Terminal output (`write`, `writev` to a tty) or input (`read` from a tty with echo on) of a
/// monitored process, with the terminal's state at that moment.
///
/// Tail: `len` bytes of data.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TtyRecord {
    pub header: EventHeader,
    /// Bytes the call moved.
    pub total: u32,
    /// Bytes copied into `data`.
    pub len: u32,
    pub fd: u32,
    /// The terminal's device number (`i_rdev`).
    pub dev: u32,
    /// `TTY_*` flags.
    pub flags: u16,
    pub rows: u16,
    pub cols: u16,
    pub _pad: u16,
    /// The terminal's `c_oflag` and `c_lflag` (ONLCR, ECHO...).
    pub oflag: u32,
    pub lflag: u32,
    pub data: [u8; TTY_DATA_CAP],
}

pub const TTY_FIXED_SIZE: usize = core::mem::offset_of!(TtyRecord, data);

// ---------------------------------------------------------------------------------------------
// file read volume

/// Key of the kernel's per-open-file read counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenFileKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Read volume of one open file, aggregated in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileReadStats {
    pub bytes: u64,
    pub reads: u64,
    /// `header.ktime_ns` of the open that created the entry: joins the volume to its open (for
    /// a folded repeat, the open that was sent).
    pub open_ktime_ns: u64,
    /// [`fold`] kind of the open when it was folded (its reads go into the fold), else 0.
    pub fold: u32,
    pub _pad: u32,
}

/// Read volume of a file, sent when it is closed (the daemon flushes the rest at process exit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileReadRecord {
    pub header: EventHeader,
    pub fd: u32,
    pub _pad: u32,
    pub stats: FileReadStats,
}

// ---------------------------------------------------------------------------------------------
// connect

pub const UNIX_PATH_MAX: usize = 108;
/// The peer socket's path fits below this offset of the tail (the walk's write mask + 1).
pub const CONNECT_TAIL_SPAN: u32 = 4096;
const _: () = assert!(PATH_SPAN <= CONNECT_TAIL_SPAN);
/// A power of two at least `CONNECT_TAIL_SPAN + COMPONENT_MAX` (see `EXEC_TAIL_CAP`).
pub const CONNECT_TAIL_CAP: usize = 8192;
const _: () = assert!(CONNECT_TAIL_CAP >= (CONNECT_TAIL_SPAN + COMPONENT_MAX) as usize);
const _: () = assert!(CONNECT_TAIL_CAP.is_power_of_two());

/// An outbound connect (`connect(2)` exit), with its destination as the process passed it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectRecord {
    pub header: EventHeader,
    pub fd: i32,
    /// 0, or `-errno` (`-EINPROGRESS` for a non-blocking connect under way).
    pub ret: i32,
    /// `AF_INET`, `AF_INET6`, `AF_UNIX` or whatever else the process passed.
    pub family: u16,
    /// Destination port in host byte order (IP families).
    pub port: u16,
    /// `addrlen` the process passed, capped.
    pub addr_len: u16,
    /// `CONNECT_*` flags.
    pub flags: u16,
    /// IPv4 in the first 4 bytes, or IPv6 (network byte order).
    pub addr: [u8; 16],
    /// `sun_path` for `AF_UNIX` (abstract names start with a NUL).
    pub unix_path: [u8; UNIX_PATH_MAX],
    pub _pad2: u32,
    /// `AF_UNIX`, connected: the socket file the kernel connected to (the peer's bound inode,
    /// whatever name, symlink, relative path or bind mount `sun_path` reached it by); zero
    /// otherwise (abstract names have no file).
    pub peer: FileId,
    /// That file's path, walked as for opens, in the tail.
    pub peer_path: PathWalk,
    pub tail: [u8; CONNECT_TAIL_CAP],
}

pub const CONNECT_FIXED_SIZE: usize = core::mem::offset_of!(ConnectRecord, tail);

/// `family`, `port` and `addr` are the destination the kernel copied from the caller and
/// connected to (its cgroup `connect4`/`connect6` hook saw it), not the caller's buffer read
/// after the call.
pub const CONNECT_ADDR_KERNEL: u16 = 1 << 0;
/// The caller's buffer held another address than the kernel's by the time the call returned:
/// another thread rewrote it during the call (what hides a destination from a monitor that
/// reads the buffer afterwards).
pub const CONNECT_ADDR_REWRITTEN: u16 = 1 << 1;
/// The kernel opened this connection in a send (`sendto`/`sendmsg` with `MSG_FASTOPEN`: TCP
/// Fast Open), or in a connect made for the thread without a connect(2) exit (io_uring): it is
/// reported at that send's exit.
pub const CONNECT_AT_SEND: u16 = 1 << 2;
/// A UDP datagram addressed to this destination with no connect(2) (`sendto`/`sendmsg` with an
/// address): reported by the kernel's cgroup `sendmsg4`/`sendmsg6` hook at the first datagram
/// of a socket in a process to each destination ([`DATAGRAM_DESTS_PER_SOCKET`] remembered). The
/// hook does not know the fd (`fd` is -1); `ret` is 0, or `-EPERM` when the session was denied
/// the network and the datagram refused.
pub const CONNECT_DATAGRAM: u16 = 1 << 3;

/// Destinations remembered per socket and process for [`CONNECT_DATAGRAM`]: a datagram to one
/// of them is not reported again (as a connected socket's sends are not); a socket that cycles
/// over more is reported again each time one comes back.
pub const DATAGRAM_DESTS_PER_SOCKET: usize = 4;

/// A datagram destination, compared as three words: address, then port and family.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct DatagramDest {
    pub addr: [u64; 2],
    /// `port | family << 16`; 0 for a free slot (no datagram goes to family 0).
    pub port_family: u32,
    pub _pad: u32,
}

/// The datagram destinations a socket was reported sending to, in one process.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct DatagramDests {
    pub dests: [DatagramDest; DATAGRAM_DESTS_PER_SOCKET],
    /// The slot the next new destination takes (round robin).
    pub next: u32,
    pub _pad: u32,
}

/// Key of the datagram destinations: the socket's cookie (unique for the host's uptime, never
/// reused as a `struct sock` address is) and the sending process, so a socket handed to
/// another process reports that process's datagrams too.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct DatagramKey {
    pub cookie: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// An IP destination as the kernel copied it at a thread's `connect` (the cgroup hook's
/// `bpf_sock_addr`), kept until that call's exit reports it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ConnectDest {
    /// The `struct sock` connecting: the exit takes this destination only for the socket its
    /// fd names, never one a stale entry left for another socket.
    pub sk: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, or IPv6 (network byte order).
    pub addr: [u8; 16],
}

// ---------------------------------------------------------------------------------------------
// privilege changes

/// `PrivRecord::op`: which call changed (or tried to change) the ids.
pub mod priv_op {
    pub const SETUID: u16 = 1;
    pub const SETREUID: u16 = 2;
    pub const SETRESUID: u16 = 3;
    pub const SETFSUID: u16 = 4;
    pub const SETGID: u16 = 5;
    pub const SETREGID: u16 = 6;
    pub const SETRESGID: u16 = 7;
    pub const SETFSGID: u16 = 8;
    /// An exec that changed ids (setuid/setgid binary, file capabilities).
    pub const EXEC: u16 = 9;
    pub const COUNT: u16 = 10;
}

/// The full set of task credentials ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredIds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    /// `cred->cap_effective` (bit n = capability n): an exec that raises it without changing
    /// ids is a file-capability program.
    pub cap_effective: u64,
}

/// A privilege change: a set*id call (successful or not) or an exec that changed ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivRecord {
    pub header: EventHeader,
    /// One of [`priv_op`].
    pub op: u16,
    pub _pad: u16,
    /// Syscall result (0 or `-errno`); 0 for exec.
    pub ret: i32,
    /// Ids requested by the call (`u32::MAX` = "unchanged", as the syscalls take it).
    pub requested: [u32; 3],
    pub _pad2: u32,
    pub old: CredIds,
    pub new: CredIds,
}

// ---------------------------------------------------------------------------------------------
// fork

/// A new process (not thread) was created. The header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkRecord {
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tgid: u32,
}

// ---------------------------------------------------------------------------------------------
// io_uring

/// `io_uring_setup(2)` returned: the ring's size and flags as asked, and its fd or `-errno`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoUringRecord {
    pub header: EventHeader,
    pub entries: u32,
    /// `io_uring_params.flags` as the process passed them.
    pub flags: u32,
    pub ret: i32,
    pub _pad: u32,
}

/// A process's first followed 32-bit syscall: its number in the 32-bit table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatSyscallRecord {
    pub header: EventHeader,
    pub nr: u32,
    pub ret: i32,
}

/// A bpf(2) call of a process in scope, at its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfRecord {
    pub header: EventHeader,
    /// The command (`enum bpf_cmd` of include/uapi/linux/bpf.h).
    pub cmd: u32,
    /// The result: an fd, 0, or `-errno`.
    pub ret: i32,
    /// The id of the map, program or link the call returned an fd of (see [`bpf_object`]),
    /// read from the kernel's object behind that fd (not from the caller's buffer, which
    /// another thread can rewrite during the call); 0 when none.
    pub object_id: u32,
    /// One of [`bpf_object`].
    pub object: u32,
}

/// A socket below the transport layer, at the exit of the call that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RawSocketRecord {
    pub header: EventHeader,
    /// Family, type (`SOCK_*`, flags masked off) and protocol: of the kernel's socket when it
    /// was made (not the caller's arguments, which socketcall passes in raceable memory), else
    /// as asked. A packet socket's protocol is always as asked (the kernel keeps it elsewhere).
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    /// The fd, or `-errno`.
    pub ret: i32,
}

/// A process in scope reaching into another one (`RecordKind::ProcessAccess`), at the exit of
/// the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessAccessRecord {
    pub header: EventHeader,
    /// One of [`process_access`]'s operations.
    pub operation: u32,
    /// The target as the caller named it: a thread id, in the caller's pid namespace.
    pub target_pid: u32,
    /// The process the kernel linked as tracee (a ptrace attach that succeeded: the newest
    /// entry of the tracer's `ptraced` list, checked against the id asked for), else 0.
    pub target_tgid: u32,
    /// That target's session as the programs' lineage map has it ([`ScopeEntry`]), or
    /// [`AUDIT_UNSET`] when it is in none (or `target_tgid` is 0).
    pub target_sessionid: u32,
    /// The result: 0 or bytes moved, or `-errno`.
    pub ret: i32,
    /// [`process_access::CALLER_PID_NS_NESTED`].
    pub flags: u32,
}

/// The operations a [`ProcessAccessRecord`] reports.
pub mod process_access {
    /// The caller counts process ids in a pid namespace below the initial one: `target_pid`
    /// is not an id the daemon can look up.
    pub const CALLER_PID_NS_NESTED: u32 = 1;

    pub const PTRACE_ATTACH: u32 = 1;
    pub const PTRACE_SEIZE: u32 = 2;
    pub const PROCESS_VM_READV: u32 = 3;
    pub const PROCESS_VM_WRITEV: u32 = 4;

    /// `PTRACE_ATTACH` and `PTRACE_SEIZE` (include/uapi/linux/ptrace.h): the requests that make
    /// a tracer. What a tracer then does (peeks, pokes, register writes) needs one of them first,
    /// or a child that asked to be traced (`PTRACE_TRACEME`), which is of the tracer's session.
    pub const REQUEST_ATTACH: u64 = 16;
    pub const REQUEST_SEIZE: u64 = 0x4206;

    /// The operation of a ptrace request, when it is one reported.
    pub const fn of_ptrace(request: u64) -> Option<u32> {
        match request {
            REQUEST_ATTACH => Some(PTRACE_ATTACH),
            REQUEST_SEIZE => Some(PTRACE_SEIZE),
            _ => None,
        }
    }
}

/// Inodes a [`LinkRecord`] carries at most.
pub const LINK_TOUCHED_MAX: usize = 4;

/// The inodes whose change time a call that names a file set, in the order the kernel set
/// them (kept per thread between the ctime tracepoints and the call's exit). `count` may
/// exceed [`LINK_TOUCHED_MAX`]: the rest were not kept.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkTouched {
    pub count: u32,
    pub _pad: u32,
    pub inodes: [FileId; LINK_TOUCHED_MAX],
}

/// A file given a name or a name taken away (`RecordKind::Link`), at the exit of the call.
///
/// Tail: the source as passed (`from_len` bytes, NUL included: the old name of a rename or a
/// link, the text a symlink holds; nothing for an unlink); the new name as passed (`to_len`
/// bytes; for an unlink, the name removed); for a relative one, its base (the cwd, or with [`LINK_BASE_IS_DFD`] the directory `new_dfd` refers to:
/// `base_len` bytes of components, innermost first).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LinkRecord {
    pub header: EventHeader,
    /// What the kernel changed: the directories that lost and got a name, the file moved or
    /// linked, a file the new name replaced. Their identity, not the names passed.
    pub touched: LinkTouched,
    /// One of [`link_call`].
    pub call: u32,
    /// `renameat2`'s, `linkat`'s or `unlinkat`'s flags argument (0 for the others).
    pub call_flags: u32,
    pub old_dfd: i32,
    pub new_dfd: i32,
    /// 0, or `-errno`.
    pub ret: i32,
    pub to_len: u16,
    pub base_len: u16,
    pub from_len: u16,
    /// `LINK_*` flags.
    pub flags: u16,
    pub _pad: u32,
    pub tail: [u8; OPEN_TAIL_CAP],
}

pub const LINK_FIXED_SIZE: usize = core::mem::offset_of!(LinkRecord, tail);
const _: () = assert!(2 * OPEN_PATH_MAX + PATH_SPAN <= OPEN_TAIL_SPAN);

/// `LinkRecord.flags`.
pub const LINK_TO_TRUNCATED: u16 = 1 << 0;
pub const LINK_BASE_TRUNCATED: u16 = 1 << 1;
pub const LINK_FROM_TRUNCATED: u16 = 1 << 2;
/// The new name could not be read from the caller's memory.
pub const LINK_TO_UNAVAILABLE: u16 = 1 << 3;
/// The base of a relative new name is the directory `new_dfd` refers to, not the cwd.
pub const LINK_BASE_IS_DFD: u16 = 1 << 4;
/// The ctime tracepoints are not there (a kernel before 6.13), or kept nothing for the call:
/// `touched` is empty, and the daemon has only the names passed.
pub const LINK_UNTOUCHED: u16 = 1 << 5;

/// The calls a [`LinkRecord`] reports, one per argument layout.
pub mod link_call {
    pub const RENAME: u32 = 1;
    pub const RENAMEAT: u32 = 2;
    pub const RENAMEAT2: u32 = 3;
    pub const LINK: u32 = 4;
    pub const LINKAT: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const SYMLINKAT: u32 = 7;
    /// unlink(2) and rmdir(2).
    pub const UNLINK: u32 = 8;
    pub const UNLINKAT: u32 = 9;
    /// `RENAME_EXCHANGE` of renameat2 (include/uapi/linux/fs.h): the two names swap files.
    pub const RENAME_EXCHANGE: u32 = 1 << 1;

    /// The call of a syscall class (`sys_class::RENAME` ..= `SYMLINKAT`).
    pub const fn of_class(class: u8) -> u32 {
        (class - super::sys_class::RENAME) as u32 + RENAME
    }
}

/// Which sockets are reported as `RecordKind::RawSocket`: raw IP, packet, ICMP echo.
pub mod raw_socket {
    pub const AF_INET: u32 = 2;
    pub const AF_INET6: u32 = 10;
    pub const AF_PACKET: u32 = 17;
    pub const SOCK_DGRAM: u32 = 2;
    pub const SOCK_RAW: u32 = 3;
    pub const IPPROTO_ICMP: u32 = 1;
    pub const IPPROTO_ICMPV6: u32 = 58;
    /// `SOCK_TYPE_MASK`: the type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    pub const TYPE_MASK: u32 = 0xf;

    /// Whether a socket of this family, type and protocol is reported.
    pub const fn reported(family: u32, sock_type: u32, protocol: u32) -> bool {
        let sock_type = sock_type & TYPE_MASK;
        family == AF_PACKET
            || (family == AF_INET || family == AF_INET6)
                && (sock_type == SOCK_RAW
                    || sock_type == SOCK_DGRAM
                        && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6))
    }
}

/// What kind of object a bpf(2) call returned an fd of (`BpfRecord::object`).
pub mod bpf_object {
    pub const NONE: u32 = 0;
    pub const MAP: u32 = 1;
    pub const PROGRAM: u32 = 2;
    pub const LINK: u32 = 3;
}

/// The bpf(2) commands Vigil names (`enum bpf_cmd`, include/uapi/linux/bpf.h; numbers are ABI).
pub mod bpf_cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const PROG_LOAD: u32 = 5;
    pub const OBJ_GET: u32 = 7;
    pub const PROG_ATTACH: u32 = 8;
    pub const PROG_DETACH: u32 = 9;
    pub const PROG_GET_FD_BY_ID: u32 = 13;
    pub const MAP_GET_FD_BY_ID: u32 = 14;
    pub const RAW_TRACEPOINT_OPEN: u32 = 17;
    pub const LINK_CREATE: u32 = 28;
    pub const LINK_UPDATE: u32 = 29;
    pub const LINK_GET_FD_BY_ID: u32 = 30;
    pub const LINK_DETACH: u32 = 34;

    /// Commands reported every time: they load or attach code, or reach an existing object
    /// (the monitor's own maps, programs and links among them) by id or pinned path. Any other
    /// is reported once per process.
    pub const fn always_reported(cmd: u32) -> bool {
        matches!(
            cmd,
            MAP_CREATE
                | PROG_LOAD
                | OBJ_GET
                | PROG_ATTACH
                | PROG_DETACH
                | PROG_GET_FD_BY_ID
                | MAP_GET_FD_BY_ID
                | RAW_TRACEPOINT_OPEN
                | LINK_CREATE
                | LINK_UPDATE
                | LINK_GET_FD_BY_ID
                | LINK_DETACH
        )
    }

    /// The kind of object (`super::bpf_object`) whose fd a successful `cmd` returns.
    pub const fn returned_object(cmd: u32) -> u32 {
        match cmd {
            MAP_CREATE | MAP_GET_FD_BY_ID => super::bpf_object::MAP,
            PROG_LOAD | PROG_GET_FD_BY_ID => super::bpf_object::PROGRAM,
            RAW_TRACEPOINT_OPEN | LINK_CREATE | LINK_GET_FD_BY_ID => super::bpf_object::LINK,
            _ => super::bpf_object::NONE,
        }
    }
}

/// How opens are folded (`FoldedRecord::fold`, `FileReadStats::fold`).
pub mod fold {
    /// Read-only opens of files the daemon registered as routine at start (by device, inode and
    /// change time: a file renamed, linked, written or replaced since is another file), counted
    /// per process and sent once per exec and at exit.
    pub const ROUTINE: u32 = 1;
    /// Read-only opens of a file the process opened within the window after the open that was
    /// sent, counted in that open's slot.
    pub const REPEAT: u32 = 2;
}

/// Opens folded into one count, and what was read through them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldCount {
    pub opens: u64,
    pub reads: u64,
    pub bytes: u64,
    pub first_ktime_ns: u64,
    pub last_ktime_ns: u64,
}

/// Opens counted instead of sent: a process's routine opens since its exec (`file` zero), or
/// the repeats of the open sent at `origin_ktime_ns` (`file` the file opened).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldedRecord {
    pub header: EventHeader,
    /// One of [`fold`].
    pub fold: u32,
    pub _pad: u32,
    /// `header.ktime_ns` of the open that was sent (repeats); 0 for routine opens.
    pub origin_ktime_ns: u64,
    pub file: FileId,
    pub count: FoldCount,
}

/// A routine file as the daemon registered it: `FOLD_ROUTINE` is keyed by device and inode, and
/// holds the change time the file had then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FoldFileKey {
    pub ino: u64,
    /// `super_block.s_dev`, the kernel's encoding.
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldFileCtime {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub _pad: u32,
}

// ---------------------------------------------------------------------------------------------
// load-time configuration

/// Offsets of kernel struct members the programs read, found by the daemon in the kernel's BTF at
/// start (there is no CO-RE relocation for Rust eBPF programs) and set as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_loginuid: u32,
    pub task_sessionid: u32,
    pub task_cred: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_suid: u32,
    pub cred_fsuid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub cred_sgid: u32,
    pub cred_fsgid: u32,
    pub cred_cap_effective: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_name: u32,
    pub vfsmount_root: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub signal_tty: u32,
    pub tty_name: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_rdev: u32,
    pub inode_mode: u32,
    pub tty_file_private_tty: u32,
    pub tty_termios: u32,
    pub tty_winsize: u32,
    pub fs_root: u32,
    pub mm_exe_file: u32,
    pub file_path: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// `super_block.s_magic`: which file system (procfs, for a process's memory file).
    pub sb_magic: u32,
    /// `mm_struct.owner`: the task an `mm` belongs to (kernels with `CONFIG_MEMCG`; 0 where it
    /// is absent, and a memory file's owner is then not resolved).
    pub mm_owner: u32,
    pub inode_uid: u32,
    pub inode_nlink: u32,
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    /// `linux_binprm.file`: the file an exec loads (the BPF LSM's `bprm_check_security`).
    pub binprm_file: u32,
    /// A connected unix socket's peer and the path it is bound at: `socket.sk`,
    /// `unix_sock.peer`, `unix_sock.path`, and `dentry.d_inode` for the file behind it.
    pub socket_sk: u32,
    pub unix_sock_peer: u32,
    pub unix_sock_path: u32,
    pub dentry_inode: u32,
    /// `file.f_mode` (for `FMODE_CREATED`).
    pub file_f_mode: u32,
    /// `bpf_map.id`, `bpf_prog.aux` and `bpf_prog_aux.id`, `bpf_link.id`: the id of the object
    /// behind an fd a bpf(2) call returned.
    pub bpf_map_id: u32,
    pub bpf_prog_aux: u32,
    pub bpf_prog_aux_id: u32,
    pub bpf_link_id: u32,
    /// `sock.sk_family` (in `sock_common`), `sock.sk_type`, `sock.sk_protocol`: what a socket
    /// the kernel made is.
    pub sock_family: u32,
    pub sock_type: u32,
    pub sock_protocol: u32,
    /// `task_struct.ptraced` (the tracer's list of tracees, newest first) and
    /// `task_struct.ptrace_entry` (a tracee's node in it): whom a ptrace attach linked.
    pub task_ptraced: u32,
    pub task_ptrace_entry: u32,
    /// `task_struct.thread_pid` and `pid.level`: how deep the task's pid namespace is (0: the
    /// initial one, whose ids the daemon sees).
    pub task_thread_pid: u32,
    pub pid_level: u32,
    /// 1 when every `inode` member a file's identity needs lies in its first [`INODE_SPAN`]
    /// bytes (then the programs read them with one copy), 0 otherwise (a read each).
    pub inode_span: u32,
    /// 1 when `file.f_inode` and `file.f_mode` lie in its first [`FILE_SPAN`] bytes.
    pub file_span: u32,
}

/// Bytes of a `struct inode` copied at once for a file's identity (see `KernelOffsets::inode_span`).
pub const INODE_SPAN: usize = 128;
/// Bytes of a `struct file` copied at once for its inode and mode (`KernelOffsets::file_span`).
pub const FILE_SPAN: usize = 64;

/// Offsets of tracepoint record fields, read by the daemon from tracefs `format` files at start
/// (layouts move between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    /// `sched_process_exec`: `__data_loc char[] filename`, `pid`, `old_pid`.
    pub exec_filename: u32,
    pub exec_pid: u32,
    pub exec_old_pid: u32,
    /// `sched_process_exit`: `pid`, `group_dead` (`u32::MAX` when the kernel lacks the field).
    pub exit_pid: u32,
    pub exit_group_dead: u32,
    /// Syscall entry records (`syscalls:sys_enter_*`): `__syscall_nr` and the first argument.
    pub sys_nr: u32,
    pub sys_args: u32,
    pub _pad: u32,
}

/// What the syscall dispatcher does with a syscall number (`SyscallAbi::classes`).
pub mod sys_class {
    /// Not followed: the dispatcher returns after one table load.
    pub const NONE: u8 = 0;
    pub const OPENAT: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const OPENAT2: u8 = 3;
    pub const CREAT: u8 = 4;
    /// Read family with the fd in the first argument (read, pread64, readv, preadv, preadv2,
    /// copy_file_range, splice).
    pub const READ_FD0: u8 = 5;
    /// Read family with the fd in the second argument (sendfile).
    pub const READ_FD1: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CONNECT: u8 = 8;
    pub const EXECVE: u8 = 9;
    /// dup2 and dup3: the target fd is replaced.
    pub const DUP_ONTO: u8 = 10;
    /// read(2): read volume, and terminal input when the fd is a terminal.
    pub const READ_TTY: u8 = 11;
    /// write(2) and writev(2): terminal output when the fd is a terminal.
    pub const WRITE: u8 = 12;
    pub const WRITEV: u8 = 13;
    /// io_uring_setup(2).
    pub const IO_URING_SETUP: u8 = 14;
    /// writev(2) made through the 32-bit ABI: its iovecs are `compat_iovec`s (two u32s).
    pub const WRITEV_COMPAT: u8 = 15;
    /// socketcall(2), the 32-bit ABI's one entry to the socket calls: `SYS_CONNECT` with its
    /// arguments in user memory is a connect.
    pub const SOCKETCALL: u8 = 16;
    /// A call the dispatcher sees but cannot decode (the 32-bit ABI's set*id family: the
    /// per-syscall entry tracepoints that keep the credentials before the call do not fire for
    /// 32-bit calls): counted as an untracked `priv` event of a session process.
    pub const PRIV_UNDECODED: u8 = 17;
    /// open_by_handle_at(2): an open with no path (a file handle from `name_to_handle_at`, on
    /// a mount fd); the file opened is walked as any open's.
    pub const OPEN_BY_HANDLE: u8 = 18;
    /// pidfd_getfd(2): a copy of another process's fd, reported as an open of the file it
    /// refers to (no path asked for; the access is the file's own).
    pub const FD_FROM_PROCESS: u8 = 19;
    /// sendto(2), sendmsg(2), sendmmsg(2) (fd in the first argument): TCP Fast Open connects
    /// a socket in its first send (`MSG_FASTOPEN`) with no connect(2), which the send's exit
    /// reports as a connect.
    pub const SEND: u8 = 20;
    /// bpf(2): reported as a `bpf` event (see `RecordKind::Bpf`).
    pub const BPF: u8 = 21;
    /// socket(2): a socket below the transport layer is a `raw_socket` event.
    pub const SOCKET: u8 = 22;
    /// ptrace(2): an attach is a `process_access` event.
    pub const PTRACE: u8 = 23;
    /// process_vm_readv and process_vm_writev: `process_access` events.
    pub const PROCESS_VM_READ: u8 = 24;
    pub const PROCESS_VM_WRITE: u8 = 25;
    /// The calls that give a file a name, one class per argument layout (see
    /// [`link_call`](crate::link_call)): `link` events.
    pub const RENAME: u8 = 26;
    pub const RENAMEAT: u8 = 27;
    pub const RENAMEAT2: u8 = 28;
    pub const LINK: u8 = 29;
    pub const LINKAT: u8 = 30;
    pub const SYMLINK: u8 = 31;
    pub const SYMLINKAT: u8 = 32;
    /// unlink(2) and rmdir(2) (one path argument), unlinkat(2).
    pub const UNLINK: u8 = 33;
    pub const UNLINKAT: u8 = 34;
    /// ftruncate(2) and truncate(2): reported as opens that cut the file (`open_syscall`).
    pub const FTRUNCATE: u8 = 35;
    pub const TRUNCATE: u8 = 36;
    /// Whether `class` is one of the calls above.
    pub const fn is_link(class: u8) -> bool {
        class >= RENAME && class <= UNLINKAT
    }
    /// `PRIV_BASE + priv_op::X` for the set*id family.
    pub const PRIV_BASE: u8 = 40;
}

/// One followed syscall's entry function in the kernel: where an `fexit` program attaches
/// when the kernel allows fexit (a BPF tracing program attaches to exactly one function, so
/// there is one program per entry: `vigil_fexit_<i>`, `i` the index in
/// [`X86_64_SYSCALL_ENTRIES`], each taking its class and ABI from its entry when it is built).
///
/// The function is the one the kernel's syscall table calls for that ABI (`syscall_64.tbl`,
/// and `syscall_32.tbl`'s compat entry point where it has one): hooking another function of
/// the same syscall (`__ia32_sys_open` instead of `__ia32_compat_sys_open`) would miss every
/// call. The daemon checks each against the followed syscalls (`kernel::layout`, by test) and
/// against the kernel's BTF before it loads any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEntry {
    /// The syscall's name in its ABI's table (`setuid32`, `pread64`).
    pub syscall: &'static str,
    /// The kernel function the syscall table calls (`__x64_sys_openat`).
    pub function: &'static str,
    /// Its [`sys_class`].
    pub class: u8,
    /// Whether it is the 32-bit ABI's entry (`int 0x80`): its arguments are in the i386
    /// registers.
    pub compat: bool,
}

const fn native(syscall: &'static str, function: &'static str, class: u8) -> SyscallEntry {
    SyscallEntry {
        syscall,
        function,
        class,
        compat: false,
    }
}

const fn ia32(syscall: &'static str, function: &'static str, class: u8) -> SyscallEntry {
    SyscallEntry {
        syscall,
        function,
        class,
        compat: true,
    }
}

/// Every followed syscall's entry function on x86_64 but execve and execveat (their exits
/// need no program: `sched_process_exec` records every exec). The number of `vigil_fexit_<i>`
/// programs in the kernel object is this table's length (checked when it is built).
pub const X86_64_SYSCALL_ENTRIES: &[SyscallEntry] = {
    use sys_class::*;
    const fn set(op: u16) -> u8 {
        PRIV_BASE + op as u8
    }
    &[
        native("openat", "__x64_sys_openat", OPENAT),
        native("openat2", "__x64_sys_openat2", OPENAT2),
        native("open", "__x64_sys_open", OPEN),
        native("creat", "__x64_sys_creat", CREAT),
        native(
            "open_by_handle_at",
            "__x64_sys_open_by_handle_at",
            OPEN_BY_HANDLE,
        ),
        native("pidfd_getfd", "__x64_sys_pidfd_getfd", FD_FROM_PROCESS),
        native("read", "__x64_sys_read", READ_TTY),
        native("write", "__x64_sys_write", WRITE),
        native("writev", "__x64_sys_writev", WRITEV),
        native("pread64", "__x64_sys_pread64", READ_FD0),
        native("readv", "__x64_sys_readv", READ_FD0),
        native("preadv", "__x64_sys_preadv", READ_FD0),
        native("preadv2", "__x64_sys_preadv2", READ_FD0),
        native("copy_file_range", "__x64_sys_copy_file_range", READ_FD0),
        native("splice", "__x64_sys_splice", READ_FD0),
        // syscall_64.tbl: 40 sendfile sys_sendfile64.
        native("sendfile", "__x64_sys_sendfile64", READ_FD1),
        native("close", "__x64_sys_close", CLOSE),
        native("dup2", "__x64_sys_dup2", DUP_ONTO),
        native("dup3", "__x64_sys_dup3", DUP_ONTO),
        native("connect", "__x64_sys_connect", CONNECT),
        native("sendto", "__x64_sys_sendto", SEND),
        native("sendmsg", "__x64_sys_sendmsg", SEND),
        native("sendmmsg", "__x64_sys_sendmmsg", SEND),
        native("bpf", "__x64_sys_bpf", BPF),
        native("socket", "__x64_sys_socket", SOCKET),
        native("ptrace", "__x64_sys_ptrace", PTRACE),
        native(
            "process_vm_readv",
            "__x64_sys_process_vm_readv",
            PROCESS_VM_READ,
        ),
        native(
            "process_vm_writev",
            "__x64_sys_process_vm_writev",
            PROCESS_VM_WRITE,
        ),
        native("rename", "__x64_sys_rename", RENAME),
        native("renameat", "__x64_sys_renameat", RENAMEAT),
        native("renameat2", "__x64_sys_renameat2", RENAMEAT2),
        native("link", "__x64_sys_link", LINK),
        native("linkat", "__x64_sys_linkat", LINKAT),
        native("symlink", "__x64_sys_symlink", SYMLINK),
        native("symlinkat", "__x64_sys_symlinkat", SYMLINKAT),
        native("unlink", "__x64_sys_unlink", UNLINK),
        native("rmdir", "__x64_sys_rmdir", UNLINK),
        native("unlinkat", "__x64_sys_unlinkat", UNLINKAT),
        native("ftruncate", "__x64_sys_ftruncate", FTRUNCATE),
        native("truncate", "__x64_sys_truncate", TRUNCATE),
        native("io_uring_setup", "__x64_sys_io_uring_setup", IO_URING_SETUP),
        native("setuid", "__x64_sys_setuid", set(priv_op::SETUID)),
        native("setreuid", "__x64_sys_setreuid", set(priv_op::SETREUID)),
        native("setresuid", "__x64_sys_setresuid", set(priv_op::SETRESUID)),
        native("setfsuid", "__x64_sys_setfsuid", set(priv_op::SETFSUID)),
        native("setgid", "__x64_sys_setgid", set(priv_op::SETGID)),
        native("setregid", "__x64_sys_setregid", set(priv_op::SETREGID)),
        native("setresgid", "__x64_sys_setresgid", set(priv_op::SETRESGID)),
        native("setfsgid", "__x64_sys_setfsgid", set(priv_op::SETFSGID)),
        ia32("read", "__ia32_sys_read", READ_TTY),
        ia32("write", "__ia32_sys_write", WRITE),
        ia32("open", "__ia32_compat_sys_open", OPEN),
        ia32("close", "__ia32_sys_close", CLOSE),
        ia32("creat", "__ia32_sys_creat", CREAT),
        ia32("dup2", "__ia32_sys_dup2", DUP_ONTO),
        ia32("socketcall", "__ia32_compat_sys_socketcall", SOCKETCALL),
        ia32("readv", "__ia32_sys_readv", READ_FD0),
        ia32("writev", "__ia32_sys_writev", WRITEV_COMPAT),
        ia32("pread64", "__ia32_sys_ia32_pread64", READ_FD0),
        ia32("sendfile", "__ia32_compat_sys_sendfile", READ_FD1),
        ia32("sendfile64", "__ia32_sys_sendfile64", READ_FD1),
        ia32("openat", "__ia32_compat_sys_openat", OPENAT),
        ia32("splice", "__ia32_sys_splice", READ_FD0),
        ia32("dup3", "__ia32_sys_dup3", DUP_ONTO),
        ia32("preadv", "__ia32_compat_sys_preadv", READ_FD0),
        ia32(
            "open_by_handle_at",
            "__ia32_compat_sys_open_by_handle_at",
            OPEN_BY_HANDLE,
        ),
        ia32("connect", "__ia32_sys_connect", CONNECT),
        ia32("sendto", "__ia32_sys_sendto", SEND),
        ia32("sendmsg", "__ia32_compat_sys_sendmsg", SEND),
        ia32("sendmmsg", "__ia32_compat_sys_sendmmsg", SEND),
        ia32("bpf", "__ia32_sys_bpf", BPF),
        ia32("socket", "__ia32_sys_socket", SOCKET),
        ia32("ptrace", "__ia32_compat_sys_ptrace", PTRACE),
        ia32("rename", "__ia32_sys_rename", RENAME),
        ia32("renameat", "__ia32_sys_renameat", RENAMEAT),
        ia32("renameat2", "__ia32_sys_renameat2", RENAMEAT2),
        ia32("link", "__ia32_sys_link", LINK),
        ia32("linkat", "__ia32_sys_linkat", LINKAT),
        ia32("symlink", "__ia32_sys_symlink", SYMLINK),
        ia32("symlinkat", "__ia32_sys_symlinkat", SYMLINKAT),
        ia32("unlink", "__ia32_sys_unlink", UNLINK),
        ia32("rmdir", "__ia32_sys_rmdir", UNLINK),
        ia32("unlinkat", "__ia32_sys_unlinkat", UNLINKAT),
        ia32("ftruncate", "__ia32_compat_sys_ftruncate", FTRUNCATE),
        ia32("truncate", "__ia32_compat_sys_truncate", TRUNCATE),
        ia32("ftruncate64", "__ia32_sys_ia32_ftruncate64", FTRUNCATE),
        ia32("truncate64", "__ia32_sys_ia32_truncate64", TRUNCATE),
        ia32(
            "process_vm_readv",
            "__ia32_sys_process_vm_readv",
            PROCESS_VM_READ,
        ),
        ia32(
            "process_vm_writev",
            "__ia32_sys_process_vm_writev",
            PROCESS_VM_WRITE,
        ),
        ia32("copy_file_range", "__ia32_sys_copy_file_range", READ_FD0),
        ia32("preadv2", "__ia32_compat_sys_preadv2", READ_FD0),
        ia32(
            "io_uring_setup",
            "__ia32_sys_io_uring_setup",
            IO_URING_SETUP,
        ),
        ia32("openat2", "__ia32_sys_openat2", OPENAT2),
        ia32("pidfd_getfd", "__ia32_sys_pidfd_getfd", FD_FROM_PROCESS),
        // The 16-bit id calls of the i386 table, then their 32-bit successors.
        ia32("setuid", "__ia32_sys_setuid16", PRIV_UNDECODED),
        ia32("setgid", "__ia32_sys_setgid16", PRIV_UNDECODED),
        ia32("setreuid", "__ia32_sys_setreuid16", PRIV_UNDECODED),
        ia32("setregid", "__ia32_sys_setregid16", PRIV_UNDECODED),
        ia32("setfsuid", "__ia32_sys_setfsuid16", PRIV_UNDECODED),
        ia32("setfsgid", "__ia32_sys_setfsgid16", PRIV_UNDECODED),
        ia32("setresuid", "__ia32_sys_setresuid16", PRIV_UNDECODED),
        ia32("setresgid", "__ia32_sys_setresgid16", PRIV_UNDECODED),
        ia32("setreuid32", "__ia32_sys_setreuid", PRIV_UNDECODED),
        ia32("setregid32", "__ia32_sys_setregid", PRIV_UNDECODED),
        ia32("setresuid32", "__ia32_sys_setresuid", PRIV_UNDECODED),
        ia32("setresgid32", "__ia32_sys_setresgid", PRIV_UNDECODED),
        ia32("setuid32", "__ia32_sys_setuid", PRIV_UNDECODED),
        ia32("setgid32", "__ia32_sys_setgid", PRIV_UNDECODED),
        ia32("setfsuid32", "__ia32_sys_setfsuid", PRIV_UNDECODED),
        ia32("setfsgid32", "__ia32_sys_setfsgid", PRIV_UNDECODED),
    ]
};

/// Syscall numbers covered by the class table.
pub const SYSCALL_TABLE_SIZE: usize = 512;

/// How to read syscalls on this architecture, filled by the daemon: where `pt_regs` keeps the
/// arguments and the syscall number (from BTF), and what each syscall number is to Vigil.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallAbi {
    /// Offsets in `struct pt_regs` of the six syscall arguments.
    pub arg_offsets: [u32; 6],
    /// The same for a 32-bit (compat) syscall, which a 64-bit process can make too (`int
    /// 0x80`): other registers (bx, cx, dx, si, di, bp on x86_64), of which the kernel reads the
    /// low 32 bits.
    pub compat_arg_offsets: [u32; 6],
    /// Offset in `struct pt_regs` of the syscall number at exit (`orig_ax` on x86_64).
    pub nr_offset: u32,
    /// Offset in `struct task_struct` of `thread_info.status`, whose `TS_COMPAT` bit marks a
    /// 32-bit syscall in progress (until the return to user mode, after `sys_exit`).
    pub task_ti_status: u32,
    /// [`sys_class`] per syscall number.
    pub classes: [u8; SYSCALL_TABLE_SIZE],
    /// [`sys_class`] per 32-bit syscall number (the numbers differ: 5 is open there, fstat here).
    pub compat_classes: [u8; SYSCALL_TABLE_SIZE],
}

impl SyscallAbi {
    pub const fn empty() -> Self {
        SyscallAbi {
            arg_offsets: [0; 6],
            compat_arg_offsets: [0; 6],
            nr_offset: 0,
            task_ti_status: 0,
            classes: [0; SYSCALL_TABLE_SIZE],
            compat_classes: [0; SYSCALL_TABLE_SIZE],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made of integers only, with no padding (checked by the
    // layout tests below), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::TracepointLayout {}
    unsafe impl aya::Pod for super::SyscallAbi {}
    unsafe impl aya::Pod for super::OpenFileKey {}
    unsafe impl aya::Pod for super::FileReadStats {}
    unsafe impl aya::Pod for super::ScopeEntry {}
    unsafe impl aya::Pod for super::ExeKey {}
    unsafe impl aya::Pod for super::FoldFileKey {}
    unsafe impl aya::Pod for super::FoldFileCtime {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{align_of, size_of};

    /// Sum of field sizes equals struct size: no implicit padding anywhere.
    #[test]
    fn records_have_no_implicit_padding() {
        assert_eq!(size_of::<EventHeader>(), 2 + 2 + 4 + 8 + 8 + 4 * 10 + 16);
        assert_eq!(size_of::<FileId>(), 8 + 8 + 4 * 4 + 2 + 6);
        assert_eq!(size_of::<PathWalk>(), 4 * 2);
        assert_eq!(size_of::<ScopeEntry>(), 8);
        assert_eq!(
            EXEC_FIXED_SIZE,
            HEADER_SIZE + 40 + 8 + 4 + 4 + 2 * 4 + 4 + 4
        );
        assert_eq!(size_of::<ExecRecord>(), EXEC_FIXED_SIZE + EXEC_TAIL_CAP);
        assert_eq!(size_of::<ExitRecord>(), HEADER_SIZE + 8);
        assert_eq!(
            OPEN_FIXED_SIZE,
            HEADER_SIZE + 40 + 8 + 4 * 4 + 2 * 4 + 4 * 2 + 8
        );
        assert_eq!(size_of::<OpenRecord>(), OPEN_FIXED_SIZE + OPEN_TAIL_CAP);
        assert_eq!(size_of::<FileReadRecord>(), HEADER_SIZE + 8 + 32);
        assert_eq!(size_of::<FoldCount>(), 5 * 8);
        assert_eq!(
            size_of::<FoldedRecord>(),
            HEADER_SIZE + 8 + 8 + size_of::<FileId>() + size_of::<FoldCount>()
        );
        assert_eq!(size_of::<CompatSyscallRecord>(), HEADER_SIZE + 8);
        assert_eq!(size_of::<BpfRecord>(), HEADER_SIZE + 16);
        assert_eq!(size_of::<FoldFileKey>(), 16);
        assert_eq!(size_of::<FoldFileCtime>(), 16);
        assert_eq!(
            CONNECT_FIXED_SIZE,
            HEADER_SIZE + 4 + 4 + 2 * 4 + 16 + UNIX_PATH_MAX + 4 + 40 + 8
        );
        assert_eq!(
            size_of::<ConnectRecord>(),
            CONNECT_FIXED_SIZE + CONNECT_TAIL_CAP
        );
        assert_eq!(size_of::<ConnectDest>(), 8 + 2 + 2 + 4 + 16);
        assert_eq!(size_of::<CredIds>(), 8 * 4 + 8);
        assert_eq!(
            size_of::<PrivRecord>(),
            HEADER_SIZE + 4 + 4 + 12 + 4 + 2 * 40
        );
        assert_eq!(size_of::<ForkRecord>(), HEADER_SIZE + 8);
        assert_eq!(size_of::<KernelOffsets>(), 75 * 4);
        assert_eq!(size_of::<RawSocketRecord>(), HEADER_SIZE + 16);
        assert_eq!(size_of::<ProcessAccessRecord>(), HEADER_SIZE + 24);
        assert_eq!(size_of::<LinkTouched>(), 8 + 4 * size_of::<FileId>());
        assert_eq!(LINK_FIXED_SIZE, HEADER_SIZE + size_of::<LinkTouched>() + 32);
        assert_eq!(size_of::<DatagramDest>(), 16 + 4 + 4);
        assert_eq!(
            size_of::<DatagramDests>(),
            DATAGRAM_DESTS_PER_SOCKET * size_of::<DatagramDest>() + 8
        );
        assert_eq!(size_of::<DatagramKey>(), 16);
        assert_eq!(size_of::<Policy>(), 40);
        assert_eq!(TTY_FIXED_SIZE, HEADER_SIZE + 4 * 4 + 2 * 4 + 4 * 2);
        assert_eq!(size_of::<TtyRecord>(), TTY_FIXED_SIZE + TTY_DATA_CAP);
        assert!(align_of::<EventHeader>() <= 8);
    }

    #[test]
    fn record_kinds_round_trip_and_nothing_else_decodes() {
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_u16(k as u16), Some(k));
            assert!((k as u16) < kind::COUNT);
        }
        assert_eq!(RecordKind::from_u16(0), None);
        assert_eq!(RecordKind::from_u16(kind::COUNT), None);
        assert_eq!(RecordKind::from_u16(u16::MAX), None);
    }

    #[test]
    fn counter_slots_cover_every_kind() {
        assert_eq!(
            counter::index(kind::COUNT - 1, counter::OUTCOMES - 1),
            counter::SLOTS - 1
        );
    }
}
