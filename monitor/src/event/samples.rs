//! One complete event of every kind (every optional field set), for the tests: each must
//! survive the JSON round trip, describe itself, and the README's table of events is derived
//! from what they serialize. The match is exhaustive: a new kind needs its sample.

use super::*;
use crate::directory::CorporateIdentity;

pub fn sample(t: EventType) -> Event {
    let raw = |s: &str| RawBytes::from(s);
    let ids = Ids {
        uid: 1000,
        euid: 1000,
        suid: 1000,
        fsuid: 1000,
        gid: 1000,
        egid: 1000,
        sgid: 1000,
        fsgid: 1000,
        cap_effective: 0,
    };
    let tty = TtyEvent {
        tty: "pts/3".into(),
        data: raw("ls\r\n"),
        total_bytes: 4,
        truncated: false,
        over_budget: false,
        unreadable: true,
        rows: 24,
        cols: 80,
        onlcr: true,
        echo: true,
    };
    let file = |path: &str| FileIdentity {
        path: raw(path),
        root_path: None,
        dev: "8:1".into(),
        ino: 1234,
        uid: 0,
        mode: 0o100755,
        ctime_ns: 1_700_000_000_000_000_000,
        deleted: false,
        truncated: false,
        outside_root: false,
        created: false,
        process_memory: true,
    };
    let body = match t {
        EventType::Exec => EventBody::Exec(ExecEvent {
            filename: raw("/usr/bin/cat"),
            exe: Some(Executable {
                file: file("/usr/bin/cat"),
                sha256: Some("ab".repeat(32)),
                package: Some("coreutils".into()),
                trust: Trust::Packaged,
            }),
            argv: vec![raw("cat"), raw("/etc/hostname")],
            argv_truncated: false,
            argv_total_bytes: 18,
            filename_truncated: false,
            cwd: Some(raw("/root")),
            cwd_truncated: false,
            tty: Some("pts/3".into()),
            old_pid: 4242,
            ancestry: vec![Ancestor {
                pid: 1,
                name: "sshd".into(),
            }],
            stdin: Some(StdioKind::Tty),
            stdout: Some(StdioKind::Pipe),
            stderr: Some(StdioKind::File),
        }),
        EventType::Exit => EventBody::Exit(ExitEvent {
            exit_code: Some(0),
            signal: Some(9),
            core_dumped: false,
        }),
        EventType::Open => EventBody::Open(OpenEvent {
            memory_of: Some(TargetProcess {
                pid: Some(812),
                session: None,
                in_session: false,
            }),
            path: raw("/etc/shadow"),
            requested_path: raw("shadow"),
            file: Some(FileIdentity {
                root_path: Some(raw("/shadow")),
                deleted: true,
                truncated: true,
                outside_root: true,
                ..file("/etc/shadow")
            }),
            syscall: OpenSyscall::Openat,
            dfd: 3,
            flags: 0,
            access: Access::Read,
            mode: 0,
            result: SyscallResult::from_ret(-13),
            path_truncated: false,
            reads_untracked: true,
            dir_ino: 0,
            links: 0,
        }),
        EventType::FileRead => EventBody::FileRead(FileReadEvent {
            fd: 3,
            path: Some(raw("/etc/hostname")),
            bytes: 12,
            reads: 2,
            open_mono_ns: 1,
            reason: ReadVolumeReason::Close,
        }),
        EventType::OpensFolded => EventBody::OpensFolded(OpensFoldedEvent {
            fold: FoldKind::Repeat,
            path: Some(raw("/etc/hostname")),
            dev: Some("0:31".into()),
            ino: Some(1234),
            open_mono_ns: 1,
            opens: 999,
            reads: 1998,
            bytes: 11988,
            first_mono_ns: 2,
            last_mono_ns: 3,
        }),
        EventType::Connect => EventBody::Connect(ConnectEvent {
            fd: 4,
            family: AddressFamily::Other,
            family_number: Some(17),
            address: Some(raw("/run/docker.sock")),
            requested_address: Some(raw("../run/link-to-docker.sock")),
            socket: Some(file("/run/docker.sock")),
            port: Some(443),
            result: SyscallResult::from_ret(0),
            address_rewritten: true,
            opened_by_send: true,
            datagram: true,
        }),
        EventType::Priv => EventBody::Priv(PrivEvent {
            op: PrivOp::Setresuid,
            requested: vec![Some(0), None, Some(0)],
            old: ids,
            new: Ids {
                uid: 0,
                euid: 0,
                ..ids
            },
            result: SyscallResult::from_ret(0),
            gained_root: true,
            gained_caps: vec!["CAP_NET_RAW".into()],
        }),
        EventType::Fork => EventBody::Fork(ForkEvent { child_pid: 4243 }),
        EventType::IoUring => EventBody::IoUring(IoUringEvent {
            entries: 8,
            flags: 0,
            result: SyscallResult::from_ret(3),
        }),
        EventType::CompatSyscall => EventBody::CompatSyscall(CompatSyscallEvent {
            nr: 5,
            syscall: Some("open".into()),
            result: SyscallResult::from_ret(3),
        }),
        EventType::Bpf => EventBody::Bpf(BpfEvent {
            command: BpfCommand::MapGetFdById,
            command_number: 14,
            object: Some(BpfObject::Map),
            object_id: Some(42),
            result: SyscallResult::from_ret(5),
        }),
        EventType::RawSocket => EventBody::RawSocket(RawSocketEvent {
            family: AddressFamily::Other,
            family_number: Some(44),
            socket_type: SocketType::Other,
            socket_type_number: Some(5),
            protocol: 1,
            result: SyscallResult::from_ret(3),
        }),
        EventType::ProcessAccess => EventBody::ProcessAccess(ProcessAccessEvent {
            operation: ProcessAccessOp::PtraceSeize,
            target_pid: 812,
            target_tgid: Some(812),
            target_session: Some(7),
            target_in_session: false,
            caller_pid_ns_nested: true,
            result: SyscallResult::from_ret(0),
        }),
        EventType::Link => EventBody::Link(LinkEvent {
            operation: LinkOp::Rename,
            path: RawBytes::from("/etc/cron.d/job"),
            requested_path: RawBytes::from("/tmp/x/cron.d/job"),
            source: RawBytes::from("/tmp/job"),
            changed: vec![
                ChangedInode {
                    dev: "254:0".into(),
                    ino: 131,
                    directory: true,
                },
                ChangedInode {
                    dev: "254:0".into(),
                    ino: 4022,
                    directory: false,
                },
            ],
            changed_cut: false,
            unverified: false,
            path_truncated: false,
            flags: 0,
            result: SyscallResult::from_ret(0),
        }),
        EventType::Loss => EventBody::Loss(LossEvent {
            stage: LossStage::Kernel,
            kind: Some(EventType::Open),
            count: 3,
            reason: "the kernel ring buffer was full".into(),
        }),
        EventType::Tamper => EventBody::Tamper(TamperEvent {
            check: TamperCheck::IgnoreListChanged,
            detail: "pid 4242 added".into(),
        }),
        EventType::Checkpoint => EventBody::Checkpoint(CheckpointEvent {
            reason: CheckpointReason::Heartbeat,
            epoch: "0f".repeat(16),
            covers_seq: Some(41),
            chain: "ab".repeat(32),
            key: "ed25519:AAAA".into(),
            signature: "c2ln".into(),
            epoch_began: None,
            counters: [("written".to_string(), 42)].into(),
        }),
        EventType::SessionStart => EventBody::SessionStart(SessionStartEvent {
            session: 7,
            loginuid: 1000,
            login_user: Some("alice".into()),
            entry: SessionEntry::Ssh,
            ssh: Some(SshOrigin {
                source_address: "198.51.100.4".into(),
                source_port: 40022,
                server_port: 22,
                auth_method: Some("publickey".into()),
                key_fingerprint: Some("SHA256:abc".into()),
            }),
            identity: Some(CorporateIdentity {
                person: "Alice Example".into(),
                email: Some("alice@example.com".into()),
                team: Some("ops".into()),
                role: Some("sre".into()),
                peer_group: Some("oncall".into()),
            }),
            ancestry: vec![Ancestor {
                pid: 1,
                name: "sshd".into(),
            }],
            root_when_seen: true,
        }),
        EventType::SessionEnd => EventBody::SessionEnd(SessionEndEvent {
            session: 7,
            duration_ms: 1200,
            counts: SessionCounts {
                events: 10,
                commands: 2,
                files_opened: 3,
                bytes_read: 100,
                connections: 1,
                privilege_changes: 1,
            },
        }),
        EventType::TtyOutput => EventBody::TtyOutput(tty.clone()),
        EventType::TtyInput => EventBody::TtyInput(tty),
        EventType::Alert => EventBody::Alert(AlertEvent {
            alert_id: "3f2a9c1b-0000-4000-8000-000000000001".into(),
            rule: "credential-store-read".into(),
            title: "Local password hashes read".into(),
            technique: "T1003.008".into(),
            severity: Severity::High,
            risk: 40,
            session_risk: 40,
            reasons: vec!["Local password hashes read (T1003.008, +40)".into()],
            evidence_type: EventType::FileRead,
            evidence_mono_ns: 1,
            evidence_time_ns: 1_700_000_000_000_000_000,
            evidence: "read   12 bytes from /etc/shadow (1 reads)".into(),
            actions: vec![ResponseAction::HoldSession],
        }),
        EventType::Response => EventBody::Response(ResponseEvent {
            action_id: "18ed34aec6fdd26f-4242-1".into(),
            action: ResponseAction::HoldSession,
            target: "session web-1/3f2a9c1b/7".into(),
            requester: Requester::Rule,
            requested_by: "rule credential-store-read".into(),
            reason: "Local password hashes read".into(),
            outcome: ResponseOutcome::Done,
            detail: "stopped 3 process(es) of session 7".into(),
            processes: 3,
            mechanism: Some(Mechanism::Signal),
        }),
    };
    Event {
        mono_ns: 1_000,
        time_ns: 1_790_000_000_000_000_000,
        time: crate::decode::rfc3339(1_790_000_000_000_000_000),
        host: "web-1".into(),
        boot_id: "3f2a9c1b-77aa-4d2e-9f00-0123456789ab".into(),
        process: Process {
            pid: 4242,
            tid: 4242,
            ppid: 1,
            uid: 1000,
            euid: 0,
            gid: 1000,
            loginuid: Some(1000),
            sessionid: Some(7),
            cgroup_id: 1,
            comm: RawBytes::from("cat"),
            exe: Some(std::sync::Arc::new(ProcessExe {
                path: raw("/tmp/sudo"),
                program: Some(raw("/usr/bin/cat")),
                trust: Trust::Writable,
                trusted: false,
            })),
            audit_now: Some(AuditIds {
                loginuid: None,
                sessionid: Some(8),
            }),
            user: Some("alice".into()),
            euser: Some("root".into()),
            login_user: Some("alice".into()),
            group: Some("alice".into()),
            container_id: Some("c0ffee".into()),
            pod_uid: Some("pod-uid".into()),
            pod_namespace: Some("default".into()),
            pod_name: Some("web".into()),
        },
        body,
    }
}

/// The JSON keys an event of kind `t` has of its own (beside `type` and the common ones).
pub fn own_keys(t: EventType) -> Vec<String> {
    let value = serde_json::to_value(sample(t)).unwrap_or_default();
    let common = serde_json::to_value(sample(EventType::Fork)).unwrap_or_default();
    let shared: Vec<&String> = common
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "child_pid").collect())
        .unwrap_or_default();
    value
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !shared.contains(k) && *k != "type")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The README's table of event kinds, from the samples and the kinds' descriptions.
pub fn readme_event_table() -> String {
    let mut out = String::from("| type | fields | what it says |\n|---|---|---|\n");
    for t in EventType::ALL {
        let keys = own_keys(*t)
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("| `{t}` | {keys} | {} |\n", t.about()));
    }
    out
}

/// The fields every event has, in the order they serialize.
pub fn common_keys() -> Vec<String> {
    let value = serde_json::to_value(sample(EventType::Fork)).unwrap_or_default();
    value
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| *k != "child_pid" && *k != "type")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
