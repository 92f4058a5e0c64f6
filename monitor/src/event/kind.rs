//! The event kinds, written once. The table below gives the serialized body (`EventBody`, tagged
//! by `type`), the closed vocabulary of kinds (`EventType`: `capture.events`, metrics labels,
//! the rule field `type`, ClickHouse's `type` column), each kind's description (the README's
//! table is checked against it) and the kernel record it is decoded from, if any.
//!
//! Adding a kind: a line here, its `#[repr(C)]` record in `common` and kernel program when the
//! kernel makes it, its decoder arm — `EventType::from_record_kind`, the decoder's match and
//! `Display` are exhaustive, so the compiler points at each; the JSON round-trip and README
//! tests point at the rest.

use serde::{Deserialize, Serialize};
use vigil_common::RecordKind;

use super::{
    AlertEvent, BpfEvent, CheckpointEvent, CompatSyscallEvent, ConnectEvent, ExecEvent, ExitEvent,
    FileReadEvent, ForkEvent, IoUringEvent, LinkEvent, LossEvent, OpenEvent, OpensFoldedEvent,
    PrivEvent, ProcessAccessEvent, RawSocketEvent, ResponseEvent, SessionEndEvent,
    SessionStartEvent, TamperEvent, TtyEvent,
};

macro_rules! event_kinds {
    ($( $variant:ident ( $body:ty ) = $name:literal, $record:expr, $about:literal; )*) => {
        /// One event's own fields, tagged with its kind (`"type": "exec"`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum EventBody {
            $( #[doc = $about] #[serde(rename = $name)] $variant($body), )*
        }

        /// The kinds of event, as one closed vocabulary serialized by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum EventType {
            $( #[doc = $about] #[serde(rename = $name)] $variant, )*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$( EventType::$variant ),*];
            /// Every kind's name, in table order.
            pub const NAMES: &'static [&'static str] = &[$( $name ),*];

            /// The name every output uses (`file_read`).
            pub fn name(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            /// What an event of this kind says, for people (the README's table of events).
            pub fn about(self) -> &'static str {
                match self { $( EventType::$variant => $about, )* }
            }

            /// The kernel record it is decoded from; `None` for what the daemon makes.
            pub fn record_kind(self) -> Option<RecordKind> {
                match self { $( EventType::$variant => $record, )* }
            }
        }

        impl EventBody {
            pub fn event_type(&self) -> EventType {
                match self { $( EventBody::$variant(_) => EventType::$variant, )* }
            }

            /// The body of a `kind` event from the fields after its tag (see `json.rs`).
            pub(super) fn from_fields<'de, A: serde::de::MapAccess<'de>>(
                kind: EventType,
                fields: A,
            ) -> Result<EventBody, A::Error> {
                let fields = serde::de::value::MapAccessDeserializer::new(fields);
                match kind {
                    $( EventType::$variant => <$body>::deserialize(fields).map(EventBody::$variant), )*
                }
            }
        }
    };
}

event_kinds! {
    Exec(ExecEvent) = "exec", Some(RecordKind::Exec),
        "A program was executed: what was loaded, its arguments, cwd, terminal, ancestry and standard streams.";
    Exit(ExitEvent) = "exit", Some(RecordKind::Exit),
        "A process ended: its exit code or the signal that ended it.";
    Open(OpenEvent) = "open", Some(RecordKind::Open),
        "A file was opened (or an open failed): the path, how, and the result.";
    FileRead(FileReadEvent) = "file_read", Some(RecordKind::FileRead),
        "What was read from one open file, counted in the kernel and reported at close or exit.";
    Connect(ConnectEvent) = "connect", Some(RecordKind::Connect),
        "An outbound connection (IPv4, IPv6 or unix socket) and its result, or the first UDP datagram a socket addressed to a destination with no connect(2).";
    Priv(PrivEvent) = "priv", Some(RecordKind::Priv),
        "A privilege change: a set*id call or an exec that changed ids or capabilities.";
    Fork(ForkEvent) = "fork", Some(RecordKind::Fork),
        "A new process.";
    IoUring(IoUringEvent) = "io_uring", Some(RecordKind::IoUring),
        "An io_uring ring was set up (or tried): what goes through it reaches files and sockets without the syscalls the other kinds follow.";
    OpensFolded(OpensFoldedEvent) = "opens_folded", Some(RecordKind::OpensFolded),
        "Opens counted in the kernel instead of sent one by one: a program's routine opens (loader, locale), or the repeats of one open within the fold window, with what was read through them.";
    CompatSyscall(CompatSyscallEvent) = "compat_syscall", Some(RecordKind::CompatSyscall),
        "A process made a 32-bit syscall (the ia32 ABI a 64-bit program reaches with int 0x80, with other numbers than the native ones): once per process, at the first one followed. Its opens, reads and connects are recorded as any others.";
    Bpf(BpfEvent) = "bpf", Some(RecordKind::Bpf),
        "A process called bpf(2), which reaches every eBPF program, map and link on the host (the monitor's own among them): once per process and command, and every time it loads or attaches code or reaches an object by id or pinned path.";
    RawSocket(RawSocketEvent) = "raw_socket", Some(RecordKind::RawSocket),
        "A socket below the transport layer was made (or tried): raw IP, packet (`AF_PACKET`) or ICMP echo. What it sends passes no connect or datagram hook; a packet socket reads every frame on an interface.";
    ProcessAccess(ProcessAccessEvent) = "process_access", Some(RecordKind::ProcessAccess),
        "A process reached into another: attached to it with ptrace (`PTRACE_ATTACH`, `PTRACE_SEIZE`), or read or wrote its memory (`process_vm_readv`, `process_vm_writev`), naming the target and whether it is of the same session. A tracer can run any code in its tracee.";
    Link(LinkEvent) = "link", Some(RecordKind::Link),
        "A file was given a name or had one taken away: renamed (or two names exchanged), hard-linked, symlinked, unlinked (`rmdir` too). A file written elsewhere and renamed into place opens nothing there, nor does a log removed; the directory whose name changed is the one the kernel changed, whatever path named it.";
    Loss(LossEvent) = "loss", None,
        "Events that could not be delivered, written down where they would have been.";
    SessionStart(SessionStartEvent) = "session_start", None,
        "A login session began: who, how they came in and from where.";
    SessionEnd(SessionEndEvent) = "session_end", None,
        "A login session's last process exited, with what the session did.";
    TtyOutput(TtyEvent) = "tty_output", Some(RecordKind::TtyOut),
        "What a terminal of the session showed: bytes a process wrote to it.";
    TtyInput(TtyEvent) = "tty_input", Some(RecordKind::TtyIn),
        "What was typed: bytes a process read from a terminal while it echoed.";
    Alert(AlertEvent) = "alert", None,
        "A detection rule matched an event, with the session's risk after it.";
    Tamper(TamperEvent) = "tamper", None,
        "The daemon's check of itself failed: its kernel maps, programs or hooks changed, its counters went back, or it was suspended.";
    Response(ResponseEvent) = "response", None,
        "A response (kill, hold, deny, lock, and their undoing): who asked, what was done and how it ended, dry runs and refusals included.";
    Checkpoint(CheckpointEvent) = "checkpoint", None,
        "The daemon's signed statement of its trail so far (at start, every minute, at stop), with its counters.";
}

impl EventType {
    /// The kind a kernel record decodes to. Exhaustive by hand (not from the table): a new
    /// record kind fails to compile here until it has an event kind.
    pub fn from_record_kind(kind: RecordKind) -> EventType {
        match kind {
            RecordKind::Exec => EventType::Exec,
            RecordKind::Exit => EventType::Exit,
            RecordKind::Open => EventType::Open,
            RecordKind::FileRead => EventType::FileRead,
            RecordKind::Connect => EventType::Connect,
            RecordKind::Priv => EventType::Priv,
            RecordKind::Fork => EventType::Fork,
            RecordKind::IoUring => EventType::IoUring,
            RecordKind::OpensFolded => EventType::OpensFolded,
            RecordKind::CompatSyscall => EventType::CompatSyscall,
            RecordKind::Bpf => EventType::Bpf,
            RecordKind::RawSocket => EventType::RawSocket,
            RecordKind::ProcessAccess => EventType::ProcessAccess,
            RecordKind::Link => EventType::Link,
            RecordKind::TtyOut => EventType::TtyOutput,
            RecordKind::TtyIn => EventType::TtyInput,
        }
    }

    /// Kinds the kernel captures (what `capture.events` can name).
    pub fn captured() -> impl Iterator<Item = EventType> {
        EventType::ALL
            .iter()
            .copied()
            .filter(|t| t.record_kind().is_some())
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds_and_event_kinds_agree_both_ways() {
        for k in RecordKind::ALL {
            assert_eq!(EventType::from_record_kind(k).record_kind(), Some(k));
        }
        for t in EventType::captured() {
            let k = t.record_kind().unwrap();
            assert_eq!(EventType::from_record_kind(k), t);
        }
        assert_eq!(EventType::captured().count(), RecordKind::ALL.len());
    }

    #[test]
    fn names_are_unique_and_serialize_as_themselves() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
    }
}
