//! Every field a rule can use, written once: its name, its type (a closed vocabulary where
//! there is one, so a literal outside it is refused when the rule loads), the events that have
//! it and what it means. The parser resolves names to [`Field`]; the detector's accessor
//! matches on it exhaustively (a new field does not compile until it has a value); the Sigma
//! importer maps onto it; the README's table is checked against [`Field::ALL`].

use crate::event::{
    Access, AddressFamily, BpfCommand, BpfObject, EventType, EventType as E, LinkOp, OpenSyscall,
    PrivOp, ProcessAccessOp, SessionEntry, SocketType, Trust, Vocabulary,
};

/// A field's type in the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// Text from a closed vocabulary: only these words compare equal to anything.
    Word(&'static [&'static str]),
    Num,
    Bool,
    List,
}

impl Kind {
    pub fn is_text(self) -> bool {
        matches!(self, Kind::Str | Kind::Word(_))
    }

    /// How the README names the type.
    pub fn describe(self) -> String {
        match self {
            Kind::Str => "text".into(),
            Kind::Word(words) => format!(
                "one of {}",
                words
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Num => "number".into(),
            Kind::Bool => "true/false".into(),
            Kind::List => "list of text".into(),
        }
    }
}

/// What an opened file is (from its inode's mode).
pub const FILE_TYPES: &[&str] = &[
    "regular",
    "directory",
    "block_device",
    "char_device",
    "fifo",
    "socket",
    "symlink",
];

/// [`FILE_TYPES`] word of a `st_mode`.
pub fn file_type(mode: u32) -> Option<&'static str> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => "regular",
        libc::S_IFDIR => "directory",
        libc::S_IFBLK => "block_device",
        libc::S_IFCHR => "char_device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symlink",
        _ => return None,
    })
}

/// What a standard stream of an exec can be (`StdioKind`, or `closed`).
pub const STDIO_WORDS: &[&str] = &["tty", "pipe", "socket", "file", "other", "closed"];

macro_rules! rule_fields {
    ($( $variant:ident = $name:literal, $kind:expr, [$($event:ident),*], $about:literal; )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field {
            $( #[doc = $about] $variant, )*
        }

        impl Field {
            pub const ALL: &'static [Field] = &[$( Field::$variant ),*];

            pub fn name(self) -> &'static str {
                match self { $( Field::$variant => $name, )* }
            }

            pub fn kind(self) -> Kind {
                match self { $( Field::$variant => $kind, )* }
            }

            /// The kinds of event that have it; empty: every event.
            pub fn events(self) -> &'static [EventType] {
                match self { $( Field::$variant => &[$( E::$event ),*], )* }
            }

            pub fn about(self) -> &'static str {
                match self { $( Field::$variant => $about, )* }
            }
        }
    };
}

rule_fields! {
    Type = "type", Kind::Word(EventType::NAMES), [], "The event's kind.";
    ProcessPid = "process.pid", Kind::Num, [], "Process id.";
    ProcessPpid = "process.ppid", Kind::Num, [], "Parent's process id.";
    ProcessUid = "process.uid", Kind::Num, [], "Real uid.";
    ProcessEuid = "process.euid", Kind::Num, [], "Effective uid.";
    ProcessLoginuid = "process.loginuid", Kind::Num, [], "Audit login uid (the person behind sudo).";
    ProcessUser = "process.user", Kind::Str, [], "Name of the real uid.";
    ProcessEuser = "process.euser", Kind::Str, [], "Name of the effective uid.";
    ProcessLoginUser = "process.login_user", Kind::Str, [], "Name of the login uid.";
    ProcessComm = "process.comm", Kind::Str, [], "The task's command name (15 bytes; the process chose it: for display, never to tell programs apart).";
    ProcessExe = "process.exe", Kind::Str, [], "Canonical path of the program the kernel loaded for the process.";
    ProcessProgram = "process.program", Kind::Str, [], "What the program is by content: the path a package installed this very content at (a renamed copy of `/usr/bin/cat` is `/usr/bin/cat`); missing for content no package installed.";
    ProcessName = "process.name", Kind::Str, [], "What the program is called by its identity: the base name of `process.program` (its content) or else of `process.exe`; for a multi-call program (busybox, toybox) at exec, the applet it runs. What rules recognise programs by.";
    ProcessExeTrust = "process.exe_trust", Kind::Word(Trust::WORDS), [], "Whether the program is what its path says (see Program identity).";
    ProcessTrustedName = "process.trusted_name", Kind::Str, [], "The program's base name when it is trusted (the package's own file at its own path, root-only directories); missing for a copy, a rename, a file put over it, one in a writable place. What rules exempt programs by.";
    ProcessLeftSession = "process.left_session", Kind::Bool, [], "The process changed its audit login uid or session after entering its session (it stays attributed to it).";
    ProcessContainerId = "process.container_id", Kind::Str, [], "Container id from the cgroup path.";
    Filename = "filename", Kind::Str, [Exec], "The path passed to exec.";
    Argv = "argv", Kind::List, [Exec], "The arguments.";
    Cmdline = "cmdline", Kind::Str, [Exec], "The arguments joined by spaces.";
    Cwd = "cwd", Kind::Str, [Exec], "Working directory at exec.";
    Ancestry = "ancestry", Kind::List, [Exec], "Names of the processes above, from the top.";
    Parent = "parent", Kind::Str, [Exec], "Name of the parent process.";
    Stdin = "stdin", Kind::Word(STDIO_WORDS), [Exec], "What standard input was at exec.";
    Stdout = "stdout", Kind::Word(STDIO_WORDS), [Exec], "What standard output was at exec.";
    Stderr = "stderr", Kind::Word(STDIO_WORDS), [Exec], "What standard error was at exec.";
    ExeSha256 = "exe.sha256", Kind::Str, [Exec], "SHA-256 of the executable's content.";
    ExePackage = "exe.package", Kind::Str, [Exec], "The package that installed a file at the executable's path.";
    Path = "path", Kind::Str, [Open, FileRead, Link], "The file's canonical path: of the file actually opened, walked by the kernel (symlinks, `..`, directory fds, bind mounts resolved; a watched file's own name when reached through a hard link). Of a `link`, the new name, in a directory the rules name named by the directory the kernel changed.";
    RequestedPath = "requested_path", Kind::Str, [Open, Link], "The path exactly as the process passed it.";
    Source = "source", Kind::Str, [Link], "A rename's old name or a link's file, as passed; a symlink's text (not resolved); missing for an unlink.";
    Change = "change", Kind::Word(LinkOp::WORDS), [Link], "What changed the name: `rename`, `exchange` (two names swapped), `link` (a hard link), `symlink`, or `unlink` (the name removed; `rmdir` too).";
    FileType = "file.type", Kind::Word(FILE_TYPES), [Open], "What the opened file is.";
    FileDeleted = "file.deleted", Kind::Bool, [Open, Exec], "The opened file, or the executable, has no name left (deleted, `O_TMPFILE`, memfd).";
    FileOutsideRoot = "file.outside_root", Kind::Bool, [Open], "The opened file lies outside the process's root directory (a chroot escape).";
    FileCreated = "file.created", Kind::Bool, [Open], "This open created the file (the kernel's `FMODE_CREATED`): an `O_TRUNC` on it emptied nothing.";
    FileProcessMemory = "file.process_memory", Kind::Bool, [Open], "The opened file is a process's memory (`/proc/<pid>/mem` or a thread's), known by the kernel's objects: through any mount, bind mount or second procfs.";
    Access = "access", Kind::Word(Access::WORDS), [Open], "How the file was opened.";
    OpenedBy = "syscall", Kind::Word(OpenSyscall::WORDS), [Open], "The call that opened it: `pidfd_getfd` copied another process's open file, `open_by_handle_at` named no path; `ftruncate` and `truncate` opened nothing but cut the file (reported with `O_TRUNC`).";
    Truncate = "truncate", Kind::Bool, [Open], "Opened with O_TRUNC.";
    Succeeded = "ok", Kind::Bool, [Open, Connect, Priv, RawSocket, ProcessAccess, Link], "The call succeeded (a connect in progress counts).";
    Bytes = "bytes", Kind::Num, [FileRead], "Bytes read from the file.";
    Family = "family", Kind::Word(AddressFamily::WORDS), [Connect, RawSocket], "Address family.";
    SocketKind = "socket_type", Kind::Word(SocketType::WORDS), [RawSocket], "The socket's type: `raw`, or `dgram` (an ICMP echo socket, or cooked `AF_PACKET` frames).";
    Protocol = "protocol", Kind::Num, [RawSocket], "The socket's protocol (IP protocol number; for `AF_PACKET` the ethertype in network order).";
    Address = "address", Kind::Str, [Connect], "IP address, or unix socket path (`@` for abstract): the path of the socket file the kernel connected to.";
    RequestedAddress = "requested_address", Kind::Str, [Connect], "The unix socket path exactly as the process passed it.";
    Port = "port", Kind::Num, [Connect], "Destination port.";
    OpenedBySend = "opened_by_send", Kind::Bool, [Connect], "The connection was opened in a send (TCP Fast Open), with no connect(2).";
    Datagram = "datagram", Kind::Bool, [Connect], "A UDP datagram sent to this address with no connect(2): the first of its socket to it.";
    AddressRewritten = "address_rewritten", Kind::Bool, [Connect], "Another thread rewrote the caller's address buffer during the call (the destination is the kernel's).";
    Op = "op", Kind::Word(PrivOp::WORDS), [Priv], "What changed the ids.";
    Command = "command", Kind::Word(BpfCommand::WORDS), [Bpf], "The bpf(2) command (`map_get_fd_by_id`, `prog_load`, …).";
    Object = "object", Kind::Word(BpfObject::WORDS), [Bpf], "What the call returned an fd of: a map, a program or a link.";
    ObjectId = "object_id", Kind::Num, [Bpf], "The kernel's id of that map, program or link (`bpftool map show id N`).";
    Operation = "operation", Kind::Word(ProcessAccessOp::WORDS), [ProcessAccess], "How the process reached into another: a ptrace attach (which can run any code in the target), or a read or write of its memory.";
    TargetPid = "target_pid", Kind::Num, [ProcessAccess], "The target as the caller named it (a thread id in its pid namespace).";
    TargetInSession = "target_in_session", Kind::Bool, [ProcessAccess, Open], "The target (of a `process_access`; of an open, the process whose memory file it is) is of the caller's own session (by lineage); false for another session, none, or a target that could not be told. Missing on opens of any other file.";
    GainedRoot = "gained_root", Kind::Bool, [Priv], "Root was gained (effective, or real from effective).";
    GainedCaps = "gained_caps", Kind::List, [Priv], "Capabilities an exec gave short of root (`CAP_NET_RAW`).";
    SessionEntry = "session.entry", Kind::Word(SessionEntry::WORDS), [], "How the session was entered.";
    SessionBytesRead = "session.bytes_read", Kind::Num, [], "Bytes the session has read so far.";
    SessionSensitiveBytesRead = "session.sensitive_bytes_read", Kind::Num, [], "Bytes of credential files the session has read so far.";
    SessionDownloadThenShell = "session.download_then_shell", Kind::Bool, [], "This exec is a shell started with a downloader in one pipeline.";
    SessionDecodedThenShell = "session.decoded_then_shell", Kind::Bool, [], "This exec is a shell or interpreter started with a decoder (`base64 -d`, `xxd -r`, `openssl enc -d`, …) in one pipeline.";
    SessionForeignTerminal = "session.foreign_terminal", Kind::Bool, [Open], "The opened file is a terminal (`/dev/pts/N`, `/dev/ttyN`, `/dev/vcs*`) none of the session's commands ran on: another session's.";
    FileOtherProcess = "file.other_process", Kind::Bool, [Open], "The opened file is under `/proc/<pid>/` of another process.";
    SessionWrittenThenExecuted = "session.written_then_executed", Kind::Bool, [], "This exec runs a file the session wrote after a download.";
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Field {
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The README's table of rule fields, as the code defines them.
    pub fn markdown_table() -> String {
        let mut out = String::from("| field | type | events | meaning |\n|---|---|---|---|\n");
        for f in Field::ALL {
            let events = match f.events() {
                [] => "all".to_string(),
                list => list
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            out.push_str(&format!(
                "| `{}` | {} | {events} | {} |\n",
                f.name(),
                f.kind().describe(),
                f.about()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_again() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(*f), "{f:?}");
        }
    }

    #[test]
    fn stdio_words_are_the_stdio_kinds_and_closed() {
        use crate::event::StdioKind;
        for k in [
            StdioKind::Tty,
            StdioKind::Pipe,
            StdioKind::Socket,
            StdioKind::File,
            StdioKind::Other,
        ] {
            assert!(STDIO_WORDS.contains(&k.as_str()));
        }
        assert_eq!(STDIO_WORDS.len(), 6);
    }
}
