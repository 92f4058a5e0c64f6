//! The owned event types every stage after the decoder speaks. They serialize to the JSON Lines
//! output (and later to storage) as they are.

mod display;
mod file;
mod json;
pub use json::EventWriter;
mod kind;
#[cfg(test)]
pub mod samples;
mod session_key;
mod vocabulary;

pub use file::{
    ctime_ns, kernel_dev, kernel_dev_number, stat_dev, Executable, FileIdentity, ProcessExe,
};
pub use kind::{EventBody, EventType};
pub use vocabulary::{
    Access, AddressFamily, BpfCommand, BpfObject, CheckpointReason, LinkOp, LossStage, Mechanism,
    OpenSyscall, PrivOp, ProcessAccessOp, Requester, RespondMode, ResponseAction, ResponseOutcome,
    SessionEntry, Severity, SocketType, TamperCheck, Trust, Vocabulary,
};

use std::{fmt, sync::Arc};

pub use session_key::{
    boot_id, host_name, short_boot, Origin, SelectorError, SessionKey, SessionSelector,
    BOOT_ID_SHORT,
};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes from the monitored system (paths, argv, names) that need not be UTF-8.
///
/// Serialized as a plain JSON string when they are valid UTF-8, otherwise as
/// `{"base64": "..."}`: lossless and unambiguous, where a lossy conversion would let a hostile
/// argument hide what it was.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RawBytes(pub Vec<u8>);

impl RawBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Readable form for logs and terminals (invalid UTF-8 replaced).
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// As text, borrowed where the bytes are UTF-8 (nearly always), else with U+FFFD for what
    /// is not.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        text(&self.0)
    }
}

/// `bytes` as text: `String::from_utf8_lossy`, but first the standard library's faster
/// validation (word-at-a-time over ASCII), which is all that valid text needs; the lossy walk
/// runs only for bytes that are not UTF-8. Rules read paths many times per event.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

impl From<&[u8]> for RawBytes {
    fn from(b: &[u8]) -> Self {
        RawBytes(b.to_vec())
    }
}
impl From<&str> for RawBytes {
    fn from(s: &str) -> Self {
        RawBytes(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for RawBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Encoded { base64: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(RawBytes(t.into_bytes())),
            Repr::Encoded { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(RawBytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One event, as decoded from the kernel (or produced by the daemon, for loss records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (kernel time).
    pub mono_ns: u64,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Wall-clock time, RFC 3339.
    pub time: String,
    /// The host and boot it happened on: with `process.sessionid`, its [`SessionKey`]. Empty in
    /// records written before they were kept (a spool's reader fills in its own host).
    #[serde(default)]
    pub host: Arc<str>,
    #[serde(default)]
    pub boot_id: Arc<str>,
    pub process: Process,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The login session the event belongs to; `None` outside sessions.
    pub fn session_key(&self) -> Option<SessionKey> {
        self.process.sessionid.map(|session| SessionKey {
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            session,
        })
    }
}

/// Who did it: the task the event happened in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Audit login uid; `None` when unset (not a login session).
    pub loginuid: Option<u32>,
    /// Audit session id; `None` when unset.
    pub sessionid: Option<u32>,
    pub cgroup_id: u64,
    /// The task's own name: for display only, since the process sets it (`exe` says what runs).
    pub comm: RawBytes,
    /// The program it runs (enrich stage, from its exec or `/proc/<pid>/exe`). Shared: every
    /// event of a process carries the same one, and a copy per event was an allocation each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<std::sync::Arc<ProcessExe>>,
    /// Set when the process changed its audit login uid or session after it entered its session
    /// (it stays attributed to `loginuid`/`sessionid`): what the kernel reports for it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_now: Option<AuditIds>,
    /// Names of `uid`, `euid` and `loginuid` on the host, filled by the enrich stage: `alice →
    /// sudo → root` shows as user root, login_user alice. Shared (`Arc`): one name is on
    /// every event of its user, and a clone is a count, not an allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euser: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_user: Option<Arc<str>>,
    /// Name of `gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Arc<str>>,
    /// Container and Kubernetes pod, from the task's cgroup path (enrich stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's namespace and name (node-local pods, from the kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

impl Process {
    /// A process of which only its id is known (the kernel kept nothing else): every other
    /// field is unset, so it belongs to no session and names no user.
    pub fn known_by_pid(pid: u32) -> Process {
        Process {
            pid,
            tid: pid,
            ..Default::default()
        }
    }
}

/// A task's audit login uid and session id (`None`: unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditIds {
    pub loginuid: Option<u32>,
    pub sessionid: Option<u32>,
}

/// One process of an exec's ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub name: String,
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        self.event_type().name()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEvent {
    /// The path passed to exec.
    pub filename: RawBytes,
    /// The program the kernel loaded (not argv[0], not `filename`): its path walked from the
    /// file, its inode, and the daemon's verdict on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<Executable>,
    pub argv: Vec<RawBytes>,
    /// argv was longer than the configured limit and is cut short.
    pub argv_truncated: bool,
    /// Size of the whole argument area in bytes.
    pub argv_total_bytes: u32,
    pub filename_truncated: bool,
    /// Working directory at exec; `None` when the kernel could not provide it.
    pub cwd: Option<RawBytes>,
    pub cwd_truncated: bool,
    /// Controlling terminal (`pts/3`, `tty1`), if any.
    pub tty: Option<String>,
    /// The thread that called exec, when not the leader.
    pub old_pid: u32,
    /// The processes above this one, from the top (`sshd`, `bash`, `sudo`, `bash`), filled by the
    /// enrich stage from fork, exec and exit events and a /proc scan at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<Ancestor>,
    /// What its standard input, output and error were at exec (`None`: closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<StdioKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdioKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<StdioKind>,
}

/// The kind of file behind a standard fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdioKind {
    Tty,
    Pipe,
    Socket,
    File,
    Other,
}

impl StdioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StdioKind::Tty => "tty",
            StdioKind::Pipe => "pipe",
            StdioKind::Socket => "socket",
            StdioKind::File => "file",
            StdioKind::Other => "other",
        }
    }

    /// From the kernel's `stdio_kind` code.
    pub fn from_code(code: u8) -> Option<StdioKind> {
        use vigil_common::stdio_kind as k;
        match code {
            k::NONE => None,
            k::TTY => Some(StdioKind::Tty),
            k::PIPE => Some(StdioKind::Pipe),
            k::SOCKET => Some(StdioKind::Socket),
            k::FILE => Some(StdioKind::File),
            _ => Some(StdioKind::Other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    /// Exit status for a normal exit.
    pub exit_code: Option<i32>,
    /// Terminating signal.
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

/// A syscall's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallResult {
    /// The raw return value (non-negative on success, `-errno` on failure).
    pub ret: i64,
    /// The errno name (`ENOENT`) on failure.
    pub error: Option<String>,
}

impl SyscallResult {
    pub fn from_ret(ret: i64) -> Self {
        let error = (ret < 0).then(|| {
            let errno = i32::try_from(-ret).unwrap_or(i32::MAX);
            format!("{:?}", nix::errno::Errno::from_raw(errno))
        });
        SyscallResult { ret, error }
    }
    pub fn ok(&self) -> bool {
        self.ret >= 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenEvent {
    /// The file's canonical path: the path of the file actually opened, walked by the kernel
    /// (for a file the daemon watches, such as a sensitive path reached through a hard link, the
    /// watched name of its inode). For a failed open, the path asked for, made absolute
    /// against its base (the cwd or the directory fd).
    pub path: RawBytes,
    /// The path exactly as the process passed it.
    pub requested_path: RawBytes,
    /// The opened file as the kernel knows it (`None` for a failed open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileIdentity>,
    pub syscall: OpenSyscall,
    pub dfd: i32,
    pub flags: u32,
    pub access: Access,
    pub mode: u32,
    pub result: SyscallResult,
    pub path_truncated: bool,
    /// The kernel's open-file table was full: this open's read volume is not followed (the
    /// loss is counted). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reads_untracked: bool,
    /// For a process's memory file (`file.process_memory`): whose memory it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_of: Option<TargetProcess>,
    /// The inode number of the directory the opened file is in, as the kernel read it (0 when
    /// unknown). Used by the enrich stage to name a file in a watched directory reached through
    /// a bind mount (see `watched`); not part of the record written.
    #[serde(skip)]
    pub dir_ino: u64,
    /// The opened file's link count, as the kernel read it (0 when unknown or deleted). Used
    /// by the enrich stage only (a file with other names may be a watched one).
    #[serde(skip)]
    pub links: u32,
}

/// A process another one reached into, as the kernel named it (the tracee an attach linked,
/// the owner of the `mm` a memory file holds), not by an id the caller passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetProcess {
    /// Its process id; `None` when the kernel's object could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its session by lineage, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    /// Whether it is of the caller's own session (false when it could not be told).
    pub in_session: bool,
}

impl TargetProcess {
    /// From a record's target: its `tgid` (0 for none) and lineage session (`AUDIT_UNSET` for
    /// none), against the caller's session `own`.
    pub fn from_kernel(tgid: u32, sessionid: u32, own: u32) -> TargetProcess {
        const UNSET: u32 = vigil_common::AUDIT_UNSET;
        let pid = (tgid != 0).then_some(tgid);
        let session = pid.and((sessionid != UNSET).then_some(sessionid));
        TargetProcess {
            pid,
            session,
            in_session: own != UNSET && session == Some(own),
        }
    }
}

/// Why a read volume was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadVolumeReason {
    /// `close(2)`.
    Close,
    /// The process exited with the file still open.
    Exit,
    /// The daemon stopped with the file still open.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReadEvent {
    pub fd: u32,
    /// The file's path, from its open event.
    pub path: Option<RawBytes>,
    pub bytes: u64,
    pub reads: u64,
    /// `mono_ns` of the open event this volume belongs to.
    pub open_mono_ns: u64,
    pub reason: ReadVolumeReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectEvent {
    pub fd: i32,
    pub family: AddressFamily,
    /// The family's number when it is none of the named ones (`other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_number: Option<u16>,
    /// IP address, or unix socket path (abstract names start with `@`): for a unix socket
    /// connected by path, the path of the socket file the kernel connected to.
    pub address: Option<RawBytes>,
    /// The unix socket path as the process passed it, when the kernel's differs in spelling or
    /// not (set whenever `socket` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_address: Option<RawBytes>,
    /// The socket file the kernel connected to: its path walked from the peer's bound inode,
    /// device and inode (a symlink, relative name or bind mount leads here all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<FileIdentity>,
    pub port: Option<u16>,
    pub result: SyscallResult,
    /// The caller's `sockaddr` no longer held this destination (the kernel's) when the call
    /// returned: another of its threads rewrote it during the call, which hides where a
    /// connection went from a monitor that reads the buffer afterwards. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub address_rewritten: bool,
    /// The kernel opened this connection in a send, with no connect(2) of the process's: TCP
    /// Fast Open (`sendto`/`sendmsg` with `MSG_FASTOPEN`), or a connect io_uring made for the
    /// thread. Reported at that send. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opened_by_send: bool,
    /// A UDP datagram sent to this destination with no connect(2) (`sendto`/`sendmsg` with an
    /// address): the first of its socket in this process to that destination (later ones to
    /// it are not reported, as a connected socket's sends are not). `fd` is -1 (the kernel's
    /// hook does not know it); `result` is ok, or `EPERM` when a response refused it. Written
    /// only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub datagram: bool,
}

/// Every id of a task's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    /// Effective capabilities (bit n = capability n).
    #[serde(default)]
    pub cap_effective: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivEvent {
    pub op: PrivOp,
    /// Ids the call asked for (`None` = "leave unchanged", i.e. -1).
    pub requested: Vec<Option<u32>>,
    pub old: Ids,
    pub new: Ids,
    pub result: SyscallResult,
    /// The effective uid went to 0 from something else, or the real uid did.
    pub gained_root: bool,
    /// Effective capabilities it did not have before (`CAP_NET_RAW`, ...), when ids stayed
    /// short of root: file capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gained_caps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvent {
    pub child_pid: u32,
}

/// Which of the kernel's folds an `opens_folded` event reports (`vigil_common::fold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoldKind {
    /// A process's opens of routine files (loader, locale: `capture.fold.routine`) since its exec.
    Routine,
    /// Repeats of one open within `capture.fold.repeat_window_ms` of it.
    Repeat,
}

impl FoldKind {
    pub fn name(self) -> &'static str {
        match self {
            FoldKind::Routine => "routine",
            FoldKind::Repeat => "repeat",
        }
    }
}

/// Opens the kernel counted instead of sending an `open` each, with what was read through them.
/// A routine fold covers a program's routine opens (sent at its exec of the next program and at
/// exit); a repeat fold the re-opens of the file of the `open` event at `open_mono_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpensFoldedEvent {
    pub fold: FoldKind,
    /// Repeat: the file's path, from the open that was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<RawBytes>,
    /// Repeat: the file's device (`major:minor`) and inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Repeat: `mono_ns` of the open that was sent; 0 for routine.
    pub open_mono_ns: u64,
    pub opens: u64,
    pub reads: u64,
    pub bytes: u64,
    /// `mono_ns` of the first and last open folded (0 when only reads are reported).
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
}

/// An io_uring ring set up (`io_uring_setup(2)`): its size and flags as asked, and the result
/// (the ring's fd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUringEvent {
    pub entries: u32,
    /// `IORING_SETUP_*` bits.
    pub flags: u32,
    pub result: SyscallResult,
}

/// A process's first followed 32-bit syscall: its number in the 32-bit table, the kernel's
/// name for it, and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompatSyscallEvent {
    pub nr: u32,
    /// The name in the kernel's 32-bit table (`open`, `socketcall`, ...): one of the calls the
    /// kernel programs follow (`kernel::layout::compat_syscall_name`), `None` for a number the
    /// daemon does not know.
    pub syscall: Option<String>,
    pub result: SyscallResult,
}

/// A bpf(2) call in a session (see `RecordKind::Bpf` for which are reported): the command, the
/// object whose fd it returned, by the id the kernel gave that object, and the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfEvent {
    pub command: BpfCommand,
    /// The kernel's number for the command (the only name of one that is `other`).
    pub command_number: u32,
    /// The map, program or link the call returned an fd of (created, loaded, attached, or
    /// reached by id), read from the kernel's object behind that fd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<BpfObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u32>,
    pub result: SyscallResult,
}

/// A socket below the transport layer made (or tried) in a session: raw IP, packet
/// (`AF_PACKET`), ICMP echo. What it sends passes no connect or datagram hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawSocketEvent {
    pub family: AddressFamily,
    /// The family's number when it is none of the named ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_number: Option<u32>,
    pub socket_type: SocketType,
    /// `SOCK_*` when `socket_type` is `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_type_number: Option<u32>,
    /// The protocol (IP protocol number, or for `AF_PACKET` the ethertype in network order).
    pub protocol: u32,
    pub result: SyscallResult,
}

/// A process in a session reached into another: attached to it with ptrace, or read or wrote
/// its memory (see `RecordKind::ProcessAccess`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessAccessEvent {
    pub operation: ProcessAccessOp,
    /// The target as the caller named it: a thread id, in the caller's pid namespace.
    pub target_pid: u32,
    /// The target process as the kernel linked it (an attach that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tgid: Option<u32>,
    /// The session the target belongs to by lineage, when it belongs to one: the kernel's map
    /// for an attach, the daemon's sessions for a memory read or write by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_session: Option<u32>,
    /// Whether the target is of the caller's own session. False when it is of another, of
    /// none, or could not be told (an attach that failed, a caller in a pid namespace of its
    /// own, a target gone).
    pub target_in_session: bool,
    /// The caller counts process ids in a pid namespace of its own: `target_pid` is its
    /// number there, not one the daemon can look up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caller_pid_ns_nested: bool,
    pub result: SyscallResult,
}

/// A process in a session gave a file a name: a rename, an exchange, a hard link or a symlink
/// (see `RecordKind::Link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEvent {
    pub operation: LinkOp,
    /// The new name, absolute against the call's base (the cwd, or the directory fd passed).
    /// In a directory the rules name, it is named by that directory as the kernel changed it:
    /// not by a bind mount's, a symlinked directory's or a `..` path to it.
    pub path: RawBytes,
    /// The new name exactly as the process passed it.
    pub requested_path: RawBytes,
    /// A rename's or an exchange's old name and a link's file, as passed; a symlink's text (what
    /// it points to, not resolved).
    pub source: RawBytes,
    /// The inodes the kernel changed in the call (directories, the file moved, linked or
    /// replaced), in the kernel's order; empty when it named none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<ChangedInode>,
    /// The call changed more inodes than a record carries: the others are not in `changed`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed_cut: bool,
    /// The kernel named no directory for this call (a kernel without the change-time
    /// tracepoints): `path` is the name passed, made absolute, nothing more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// `renameat2`'s or `linkat`'s flags argument.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
    pub result: SyscallResult,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// An inode a call that names a file changed, as the kernel numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedInode {
    /// `major:minor` of its file system.
    pub dev: String,
    pub ino: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
}

/// Events that could not be delivered, written down where they would have been.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossEvent {
    /// Where they were lost.
    pub stage: LossStage,
    /// The kind of the events lost, when known.
    pub kind: Option<EventType>,
    pub count: u64,
    pub reason: String,
}

/// A signed statement of the trail so far: every record of `epoch` up to `covers_seq` hashes to
/// `chain`, says the host key `key`. Written by the spool itself (it alone knows the chain) at
/// start, at stop and every `integrity.checkpoint_interval`, carrying the daemon's counters (the
/// heartbeat `vigil verify` expects). See `crate::trail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEvent {
    pub reason: CheckpointReason,
    /// The chain epoch (32 hex digits).
    pub epoch: String,
    /// The last record covered; `None` when the epoch has none yet.
    pub covers_seq: Option<u64>,
    /// The chain after `covers_seq` (or the epoch's start), hex.
    pub chain: String,
    /// The signing key, `ed25519:<base64>`.
    pub key: String,
    /// Ed25519 over [`crate::trail::checkpoint_message`], base64.
    pub signature: String,
    /// On an epoch's first checkpoint: why the epoch began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_began: Option<String>,
    /// The daemon's counters when it signed (events decoded, written, lost, kernel counters).
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// The daemon's check of itself failed: someone with root is working against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperEvent {
    pub check: TamperCheck,
    pub detail: String,
}

/// A response: what was asked, by whom, and what came of it. Every one is in the trail, the
/// automatic and the manual, the carried out and the refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEvent {
    /// Unique per response: a manual request's answer and its trail record share it.
    pub action_id: String,
    pub action: ResponseAction,
    /// What it acts on, as people name it (`session web-1/3f2a9c1b/7`, `pid 4242`,
    /// `user alice`, `exe /usr/bin/nc (8:1 ino 1234)`, `sha256 …`).
    pub target: String,
    pub requester: Requester,
    /// The rule, the threshold crossed, or the operator (`uid 0 (root) pid 4242`).
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub outcome: ResponseOutcome,
    /// What was done, or would have been, or why not.
    pub detail: String,
    /// Processes signalled (or that would have been).
    #[serde(default)]
    pub processes: u32,
    /// How the kernel enforced it (`signal`, `exec_tracepoint_signal`, `cgroup_connect`,
    /// `usermod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Mechanism>,
}

/// A rule hit, with the session's risk after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Stable for the same hit (host, session, rule, time), so re-sends are recognisable.
    pub alert_id: String,
    pub rule: String,
    pub title: String,
    /// MITRE ATT&CK technique.
    pub technique: String,
    pub severity: Severity,
    /// Points this rule adds to its session (once per session).
    pub risk: u32,
    /// The session's risk (0-100) with this alert counted.
    pub session_risk: u32,
    /// Every rule that raised the session's risk so far.
    pub reasons: Vec<String>,
    /// The event that matched: its type, time (the alert has its own: when it was raised) and
    /// description.
    pub evidence_type: EventType,
    pub evidence_mono_ns: u64,
    /// Wall-clock nanoseconds; 0 in alerts recorded before it was kept.
    #[serde(default)]
    pub evidence_time_ns: i64,
    pub evidence: String,
    /// The responses the rule asks for (its `actions:`), carried out by the respond stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ResponseAction>,
}

/// Terminal bytes, as the process wrote or read them, with the terminal's state then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyEvent {
    /// The terminal (`pts/3`).
    pub tty: String,
    pub data: RawBytes,
    /// Bytes the call moved; more than `data` holds when truncated or over budget.
    pub total_bytes: u64,
    /// The call moved more than the per-event limit (capture.max_tty_bytes).
    pub truncated: bool,
    /// The session's terminal budget was spent: length only.
    pub over_budget: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// Window size then (0 when unknown).
    pub rows: u16,
    pub cols: u16,
    /// The terminal turned "\n" into "\r\n" on output (OPOST|ONLCR).
    pub onlcr: bool,
    /// The terminal echoed input.
    pub echo: bool,
}

/// Where an SSH session came from (`SSH_CONNECTION` of the session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOrigin {
    pub source_address: String,
    pub source_port: u16,
    pub server_port: u16,
    /// How sshd authenticated the login (`publickey`, `password`, ...), when its log tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    /// The authenticated key's fingerprint (`SHA256:...`), when known.
    pub key_fingerprint: Option<String>,
}

/// A login session began (its first event seen). The session is the event's [`SessionKey`]
/// (its host and boot are the event's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStartEvent {
    pub session: u32,
    pub loginuid: u32,
    pub login_user: Option<String>,
    pub entry: SessionEntry,
    pub ssh: Option<SshOrigin>,
    /// The login user's entry in the identity mapping file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::directory::CorporateIdentity>,
    /// The processes above the session's first process.
    pub ancestry: Vec<Ancestor>,
    /// When the session was first seen, a process of it ran as root below one of it that did
    /// not: root gained before the daemon was watching. It counts as privileged as a session
    /// that gained root in view.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_when_seen: bool,
}

/// What a session did, counted as it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    pub events: u64,
    pub commands: u64,
    pub files_opened: u64,
    pub bytes_read: u64,
    pub connections: u64,
    pub privilege_changes: u64,
}

impl SessionCounts {
    /// What one event of the session adds: the one definition the session tracker (for
    /// `session_end`), the spool's listings and detection count with. ClickHouse's `sessions`
    /// view counts the same in SQL; the end-to-end test comparing both stores holds them equal.
    pub fn count(&mut self, e: &Event) {
        self.events += 1;
        match &e.body {
            EventBody::Exec(_) => self.commands += 1,
            EventBody::Open(o) if o.result.ok() => self.files_opened += 1,
            EventBody::FileRead(r) => self.bytes_read += r.bytes,
            EventBody::OpensFolded(f) => self.bytes_read += f.bytes,
            EventBody::Connect(_) => self.connections += 1,
            EventBody::Priv(_) => self.privilege_changes += 1,
            _ => {}
        }
    }
}

/// The last process of a login session exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEndEvent {
    pub session: u32,
    pub duration_ms: u64,
    pub counts: SessionCounts,
}

#[cfg(test)]
mod tests {
    use super::{samples::sample, *};

    #[test]
    fn every_kind_survives_the_json_round_trip_and_names_itself() {
        for t in EventType::ALL {
            let e = sample(*t);
            assert_eq!(e.body.event_type(), *t);
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["type"], t.name(), "{json}");
            let back: Event = serde_json::from_value(json.clone())
                .unwrap_or_else(|err| panic!("{t}: {err}: {json}"));
            assert_eq!(back, e, "{t}");
            assert!(!e.to_string().is_empty());
            // No key of a body may shadow one of the event's own: flattened, it would be lost.
            let own = samples::own_keys(*t);
            for common in samples::common_keys() {
                assert!(!own.contains(&common), "{t}: `{common}` twice");
            }
        }
    }

    /// The README's event table is what the code serializes; `VIGIL_WRITE_README=1` rewrites
    /// it (and the rule-field table) from the code.
    #[test]
    fn the_readme_tables_are_the_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let tables = [
            ("events", samples::readme_event_table()),
            (
                "rule-fields",
                crate::detect::fields::Field::markdown_table(),
            ),
        ];
        let mut wanted = readme.clone();
        for (name, table) in &tables {
            let (begin, end) = (
                format!("<!-- {name}: generated from the code -->\n"),
                format!("<!-- end of {name} -->"),
            );
            let (Some(a), Some(b)) = (wanted.find(&begin), wanted.find(&end)) else {
                panic!("README.md lacks the {name} markers `{begin}` … `{end}`");
            };
            wanted.replace_range(a + begin.len()..b, table);
        }
        if wanted != readme {
            if std::env::var_os("VIGIL_WRITE_README").is_some() {
                std::fs::write(path, &wanted).unwrap();
            } else {
                panic!("README.md's tables differ from the code; run with VIGIL_WRITE_README=1");
            }
        }
    }
}
