//! Closed vocabularies of the event model: each an enum, serialized one way everywhere (JSON,
//! spool, ClickHouse `detail`, rule literals, the README), with the list of its words for the
//! rule language to check literals against when a rule is loaded.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A closed vocabulary: its words, in order.
pub trait Vocabulary: Copy + 'static {
    const WORDS: &'static [&'static str];
    fn as_str(self) -> &'static str;
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant, )*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$( $name::$variant ),*];

            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $word, )* }
            }

            pub fn from_word(word: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == word)
            }
        }

        impl Vocabulary for $name {
            const WORDS: &'static [&'static str] = &[$( $word ),*];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Whether a program is what its path says: decided by the daemon from the file the kernel
    /// loaded (owner, mode, the directories above it, the package manager's record of the
    /// content at that path). A copy or a rename of a program, or a file put over it, is never
    /// `packaged`.
    Trust {
        /// The package manager's own file at this path, content unchanged, owned by root and
        /// writable by nobody else, in directories only root can write.
        Packaged = "packaged",
        /// Owned by root, writable by nobody else, in directories only root can write; not a
        /// file any package installed at this path.
        RootOwned = "root_owned",
        /// A package installed a file at this path, and this content is not it.
        PackageMismatch = "package_mismatch",
        /// The file, or a directory above it, is owned or writable by a user other than root.
        Writable = "writable",
        /// Deleted or never linked (memfd, `O_TMPFILE`): a program run from memory.
        Deleted = "deleted",
        /// The daemon could not check it (gone before it looked, too large, another file in
        /// its place).
        Unverified = "unverified",
    }
}

vocabulary! {
    /// How a file was opened (`O_ACCMODE`).
    Access {
        Read = "read",
        Write = "write",
        ReadWrite = "read_write",
    }
}

vocabulary! {
    /// Which call opened a file.
    OpenSyscall {
        Openat = "openat",
        Open = "open",
        Openat2 = "openat2",
        Creat = "creat",
        /// A file handle (`name_to_handle_at`) opened on a mount fd: no path was asked for.
        OpenByHandleAt = "open_by_handle_at",
        /// Another process's open file, copied with `pidfd_getfd`: no path was asked for.
        PidfdGetfd = "pidfd_getfd",
        /// A file cut to a length through an fd it was opened as before (nothing was opened):
        /// reported as an open with `O_WRONLY|O_TRUNC`.
        Ftruncate = "ftruncate",
        /// A file cut to a length by path (nothing was opened): the path is the one passed,
        /// made absolute, not a kernel walk.
        Truncate = "truncate",
    }
}

vocabulary! {
    /// A connection's address family. Families other than these are `other` (with their number
    /// beside it in the event).
    AddressFamily {
        Ipv4 = "ipv4",
        Ipv6 = "ipv6",
        Unix = "unix",
        /// `AF_PACKET`: frames below IP (a `raw_socket`).
        Packet = "packet",
        /// Written before families were a vocabulary as `family_N`; read back as this.
        #[serde(other)]
        Other = "other",
    }
}

vocabulary! {
    /// What changed a task's ids: a set*id call, or an exec (setuid/setgid binary, file
    /// capabilities).
    PrivOp {
        Setuid = "setuid",
        Setreuid = "setreuid",
        Setresuid = "setresuid",
        Setfsuid = "setfsuid",
        Setgid = "setgid",
        Setregid = "setregid",
        Setresgid = "setresgid",
        Setfsgid = "setfsgid",
        Exec = "exec",
    }
}

vocabulary! {
    /// How a login session was entered, from the processes above its first one.
    SessionEntry {
        Ssh = "ssh",
        Console = "console",
        Cron = "cron",
        Su = "su",
        Sudo = "sudo",
        Container = "container",
        Other = "other",
    }
}

vocabulary! {
    /// How serious an alert is.
    Severity {
        Low = "low",
        Medium = "medium",
        High = "high",
        Critical = "critical",
    }
}

impl clap::ValueEnum for Severity {
    fn value_variants<'a>() -> &'a [Self] {
        Severity::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<
        V: Vocabulary + Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    >(
        all: &[V],
    ) {
        assert_eq!(all.len(), V::WORDS.len());
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, v.as_str());
            assert_eq!(serde_json::from_value::<V>(json).unwrap(), *v);
        }
    }

    #[test]
    fn every_word_serializes_as_itself_and_back() {
        round_trips(Access::ALL);
        round_trips(OpenSyscall::ALL);
        round_trips(AddressFamily::ALL);
        round_trips(PrivOp::ALL);
        round_trips(SessionEntry::ALL);
        round_trips(Severity::ALL);
    }

    #[test]
    fn old_family_names_read_as_other_and_severity_orders() {
        let f: AddressFamily = serde_json::from_str("\"family_17\"").unwrap();
        assert_eq!(f, AddressFamily::Other);
        assert!(Severity::Critical > Severity::High && Severity::Medium > Severity::Low);
    }
}

vocabulary! {
    /// Why the daemon signed a checkpoint of its trail.
    CheckpointReason {
        /// The daemon started (the first record it wrote after opening its spool).
        Start = "start",
        /// The regular heartbeat (`integrity.checkpoint_interval`), with the daemon's counters.
        Heartbeat = "heartbeat",
        /// The daemon stopped cleanly: nothing after it belongs to this run.
        Stop = "stop",
    }
}

vocabulary! {
    /// What the daemon found wrong with itself.
    TamperCheck {
        /// The scoping policy in the kernel is not what the daemon wrote.
        PolicyChanged = "policy_changed",
        /// The kernel's list of processes not to watch holds more (or other) than the daemon.
        IgnoreListChanged = "ignore_list_changed",
        /// The kernel's table of routine files it folds holds other files than the daemon
        /// registered (an entry added there would hide a file's opens in a count).
        FoldListChanged = "fold_list_changed",
        /// The kernel's flag that some process may have changed its login uid was cleared:
        /// processes without one would skip the session lookup that keeps them in scope.
        LoginuidFlagReset = "loginuid_flag_reset",
        /// One of the daemon's kernel programs is no longer loaded.
        ProgramGone = "program_gone",
        /// One of the daemon's hooks was taken away while its program stayed loaded: a link
        /// detached (`bpftool link detach`) or running another program (`BPF_LINK_UPDATE`).
        /// A cgroup connect hook is attached again.
        HookDetached = "hook_detached",
        /// A kernel counter went backwards (reset behind the daemon's back).
        CountersReset = "counters_reset",
        /// The daemon did not run for a while (stopped with SIGSTOP, frozen, starved).
        Suspended = "suspended",
    }
}

vocabulary! {
    /// What a response does (`vigil respond`, a rule's `actions:`, `respond.on_risk`).
    ResponseAction {
        /// SIGKILL one process.
        KillProcess = "kill_process",
        /// SIGKILL every process of the session, including those that left it (new session id,
        /// another loginuid), and any the session forks meanwhile.
        KillSession = "kill_session",
        /// SIGSTOP every process of the session, and keep it stopped, until released or killed.
        HoldSession = "hold_session",
        /// Lift a hold: SIGCONT every process of the session.
        ReleaseSession = "release_session",
        /// Kill a program at exec, before its first instruction, by the file or by its content.
        DenyExec = "deny_exec",
        /// Lift a deny_exec.
        AllowExec = "allow_exec",
        /// Refuse the session's outbound connections (EPERM).
        DenyConnect = "deny_connect",
        /// Lift a deny_connect.
        AllowConnect = "allow_connect",
        /// Lock the account's password, expire it and kill its sessions.
        LockAccount = "lock_account",
        /// Undo a lock_account.
        UnlockAccount = "unlock_account",
    }
}

impl ResponseAction {
    /// Whether the action restricts (what rules and thresholds may ask for) rather than lifts.
    pub fn restricts(self) -> bool {
        !matches!(
            self,
            ResponseAction::ReleaseSession
                | ResponseAction::AllowExec
                | ResponseAction::AllowConnect
                | ResponseAction::UnlockAccount
        )
    }
}

vocabulary! {
    /// How a response ended.
    ResponseOutcome {
        /// Carried out.
        Done = "done",
        /// `respond.mode: dry_run`: what would have been done, nothing changed.
        DryRun = "dry_run",
        /// The target is a protected account or program (or the daemon, init): never touched.
        Protected = "protected",
        /// Automatic actions beyond `respond.max_actions_per_minute`: not carried out.
        RateLimited = "rate_limited",
        /// The respond queue was full: not carried out (counted).
        Dropped = "dropped",
        /// No such process, session or account on this host now.
        NotFound = "not_found",
        /// This kernel offers no mechanism for it.
        Unsupported = "unsupported",
        /// Tried and failed (the detail says how).
        Failed = "failed",
    }
}

vocabulary! {
    /// Who asked for a response.
    Requester {
        /// A detection rule's `actions:`.
        Rule = "rule",
        /// The session's risk reached `respond.on_risk.threshold`.
        Risk = "risk",
        /// A person, through `vigil respond` (their uid and pid, from the socket).
        Operator = "operator",
        /// The configuration (`respond.deny_exec`), at start.
        Config = "config",
    }
}

vocabulary! {
    /// Whether responses are carried out.
    RespondMode {
        /// Evaluate and record what would be done; change nothing.
        DryRun = "dry_run",
        /// Carry responses out.
        Enforce = "enforce",
    }
}

vocabulary! {
    /// Where events were lost on their way into the trail.
    LossStage {
        /// In the kernel: its ring buffer was full, or a table it follows processes in.
        Kernel = "kernel",
        /// A kernel record the daemon could not decode.
        Decode = "decode",
        /// The local spool: damaged or refused records, a full disk, a failed fsync.
        Spool = "spool",
        /// Rows ClickHouse returned that the reader could not decode.
        Clickhouse = "clickhouse",
    }
}

vocabulary! {
    /// How a response is, or would be, carried out on this host.
    Mechanism {
        /// Signals: the daemon's, through pidfds, and the kernel programs' (`bpf_send_signal`)
        /// at a process's next exec, fork or followed syscall.
        Signal = "signal",
        /// The BPF LSM refuses the exec (`bprm_check_security`).
        LsmBprmCheck = "lsm_bprm_check",
        /// The new image is killed at `sched_process_exec`, before its first instruction.
        ExecTracepointSignal = "exec_tracepoint_signal",
        /// cgroup `connect4`/`connect6` programs refuse the connection (EPERM).
        CgroupConnect = "cgroup_connect",
        /// `usermod --lock --expiredate 1` (and `--unlock`).
        Usermod = "usermod",
        /// This kernel offers none (the mechanisms' notes say why).
        Unavailable = "unavailable",
    }
}

vocabulary! {
    /// A bpf(2) command (`enum bpf_cmd` of include/uapi/linux/bpf.h, in number order: a
    /// command's word is at its number; a unit test checks the list against the header).
    BpfCommand {
        MapCreate = "map_create",
        MapLookupElem = "map_lookup_elem",
        MapUpdateElem = "map_update_elem",
        MapDeleteElem = "map_delete_elem",
        MapGetNextKey = "map_get_next_key",
        ProgLoad = "prog_load",
        ObjPin = "obj_pin",
        ObjGet = "obj_get",
        ProgAttach = "prog_attach",
        ProgDetach = "prog_detach",
        ProgTestRun = "prog_test_run",
        ProgGetNextId = "prog_get_next_id",
        MapGetNextId = "map_get_next_id",
        ProgGetFdById = "prog_get_fd_by_id",
        MapGetFdById = "map_get_fd_by_id",
        ObjGetInfoByFd = "obj_get_info_by_fd",
        ProgQuery = "prog_query",
        RawTracepointOpen = "raw_tracepoint_open",
        BtfLoad = "btf_load",
        BtfGetFdById = "btf_get_fd_by_id",
        TaskFdQuery = "task_fd_query",
        MapLookupAndDeleteElem = "map_lookup_and_delete_elem",
        MapFreeze = "map_freeze",
        BtfGetNextId = "btf_get_next_id",
        MapLookupBatch = "map_lookup_batch",
        MapLookupAndDeleteBatch = "map_lookup_and_delete_batch",
        MapUpdateBatch = "map_update_batch",
        MapDeleteBatch = "map_delete_batch",
        LinkCreate = "link_create",
        LinkUpdate = "link_update",
        LinkGetFdById = "link_get_fd_by_id",
        LinkGetNextId = "link_get_next_id",
        EnableStats = "enable_stats",
        IterCreate = "iter_create",
        LinkDetach = "link_detach",
        ProgBindMap = "prog_bind_map",
        TokenCreate = "token_create",
        /// A number this daemon does not know (newer than it): the event keeps the number.
        Other = "other",
    }
}

impl BpfCommand {
    /// The command numbered `cmd` by the kernel.
    pub fn from_number(cmd: u32) -> BpfCommand {
        BpfCommand::ALL
            .get(cmd as usize)
            .copied()
            .filter(|c| *c != BpfCommand::Other)
            .unwrap_or(BpfCommand::Other)
    }
}

vocabulary! {
    /// What a bpf(2) call returned an fd of.
    BpfObject {
        Map = "map",
        Program = "program",
        Link = "link",
    }
}

#[cfg(test)]
mod bpf_command_tests {
    use super::BpfCommand;

    /// The commands of this system's `enum bpf_cmd` (linux/bpf.h, whose numbers are ABI), in
    /// order: a prefix of the vocabulary (the headers may be older than the kernel), each at
    /// its number; and the numbers the kernel programs test are those of the same names.
    #[test]
    fn bpf_commands_are_the_kernels_in_number_order() {
        let header = std::fs::read_to_string("/usr/include/linux/bpf.h")
            .expect("linux/bpf.h (linux-libc-dev) is installed");
        let body = header
            .split_once("enum bpf_cmd {")
            .and_then(|(_, rest)| rest.split_once("};"))
            .map(|(body, _)| body)
            .expect("enum bpf_cmd in linux/bpf.h");
        let names: Vec<String> = body
            .lines()
            .map(str::trim)
            // `BPF_PROG_RUN = BPF_PROG_TEST_RUN` is an alias, not a number of its own.
            .filter(|l| l.starts_with("BPF_") && !l.contains('='))
            .map(|l| l.trim_end_matches(',')["BPF_".len()..].to_ascii_lowercase())
            .collect();
        assert!(names.len() >= 36, "{names:?}");
        for (number, name) in names.iter().enumerate() {
            assert_eq!(BpfCommand::from_number(number as u32).as_str(), name);
        }
        let number = |name: &str| names.iter().position(|n| n == name).unwrap() as u32;
        use vigil_common::bpf_cmd as k;
        for (constant, name) in [
            (k::MAP_CREATE, "map_create"),
            (k::PROG_LOAD, "prog_load"),
            (k::OBJ_GET, "obj_get"),
            (k::PROG_ATTACH, "prog_attach"),
            (k::PROG_DETACH, "prog_detach"),
            (k::PROG_GET_FD_BY_ID, "prog_get_fd_by_id"),
            (k::MAP_GET_FD_BY_ID, "map_get_fd_by_id"),
            (k::RAW_TRACEPOINT_OPEN, "raw_tracepoint_open"),
            (k::LINK_CREATE, "link_create"),
            (k::LINK_UPDATE, "link_update"),
            (k::LINK_GET_FD_BY_ID, "link_get_fd_by_id"),
            (k::LINK_DETACH, "link_detach"),
        ] {
            assert_eq!(constant, number(name), "{name}");
        }
        assert_eq!(BpfCommand::from_number(10_000), BpfCommand::Other);
    }
}

vocabulary! {
    /// A socket's type below the transport layer (`SOCK_RAW`, `SOCK_DGRAM`: for `AF_PACKET`
    /// cooked frames, for IP an ICMP echo socket).
    SocketType {
        Raw = "raw",
        Dgram = "dgram",
        /// Any other number (kept beside it in the event).
        Other = "other",
    }
}

vocabulary! {
    /// How a process reached into another (`process_access`).
    ProcessAccessOp {
        /// `ptrace(PTRACE_ATTACH)`: the tracee stops, and the tracer may then read and write
        /// its memory and registers.
        PtraceAttach = "ptrace_attach",
        /// `ptrace(PTRACE_SEIZE)`: the same without stopping it.
        PtraceSeize = "ptrace_seize",
        /// `process_vm_readv`: the other process's memory read.
        ProcessVmReadv = "process_vm_readv",
        /// `process_vm_writev`: the other process's memory written.
        ProcessVmWritev = "process_vm_writev",
    }
}

vocabulary! {
    /// How a file was given a name or had one taken away (`link`).
    LinkOp {
        /// rename(2), renameat, renameat2: the file's old name is gone, the new one replaced
        /// whatever had it.
        Rename = "rename",
        /// renameat2 with `RENAME_EXCHANGE`: two names swapped their files.
        Exchange = "exchange",
        /// link(2), linkat: a second name for the file (or the first, for an `O_TMPFILE` file).
        Link = "link",
        /// symlink(2), symlinkat: a new symlink holding the source text.
        Symlink = "symlink",
        /// unlink(2), unlinkat, rmdir(2): the name removed (the file goes with its last name).
        Unlink = "unlink",
    }
}
