//! The edge: kernel records (bytes) to owned [`Event`]s, once.
//!
//! Records are untrusted input as far as this code is concerned (a newer kernel object, a bug, a
//! corrupted buffer): every length is checked and anything inconsistent is a [`DecodeError`],
//! never a panic. The property tests below feed it arbitrary bytes.

use std::{
    mem::{offset_of, size_of},
    net::{Ipv4Addr, Ipv6Addr},
};

use vigil_common::{
    open_syscall, priv_op, ConnectRecord, CredIds, EventHeader, ExecRecord, ExitRecord,
    FileReadRecord, ForkRecord, OpenRecord, PrivRecord, RecordKind, TtyRecord, AUDIT_UNSET,
    EXEC_ARGV_TRUNCATED, EXEC_ARGV_UNAVAILABLE, EXEC_CWD_TRUNCATED, EXEC_CWD_UNAVAILABLE,
    EXEC_FILENAME_TRUNCATED, EXEC_FIXED_SIZE, HEADER_SIZE, OPEN_FIXED_SIZE, OPEN_PATH_TRUNCATED,
    OPEN_PATH_UNAVAILABLE, OPEN_READS_UNTRACKED, SCHEMA_VERSION, TTY_FIXED_SIZE, TTY_OVER_BUDGET,
    TTY_TRUNCATED, TTY_UNREADABLE,
};

use crate::event::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    TooShort { need: usize, got: usize },
    #[error("record schema version {got}, this daemon reads version {SCHEMA_VERSION}")]
    Version { got: u16 },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("header says {header} bytes but the record has {got}")]
    SizeMismatch { header: usize, got: usize },
    #[error("{field} of {len} bytes runs past the end of the record")]
    TailOverflow { field: &'static str, len: usize },
    #[error("{field} {value} is not one this daemon knows")]
    UnknownValue { field: &'static str, value: u32 },
}

impl DecodeError {
    /// Short label for loss records and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "too_short",
            DecodeError::Version { .. } => "version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::SizeMismatch { .. } => "size_mismatch",
            DecodeError::TailOverflow { .. } => "tail_overflow",
            DecodeError::UnknownValue { .. } => "unknown_value",
        }
    }
}

/// Converts kernel monotonic time to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds, taken at start.
    realtime_offset_ns: i64,
}

impl Clock {
    pub fn now() -> Clock {
        let ns = |id| {
            nix::time::clock_gettime(id)
                .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
                .unwrap_or(0)
        };
        let mono = ns(nix::time::ClockId::CLOCK_MONOTONIC);
        let real = ns(nix::time::ClockId::CLOCK_REALTIME);
        Clock {
            realtime_offset_ns: real - mono,
        }
    }

    pub fn fixed(realtime_offset_ns: i64) -> Clock {
        Clock { realtime_offset_ns }
    }

    pub fn mono_now_ns() -> u64 {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    }

    pub fn wall_ns(&self, mono_ns: u64) -> i64 {
        (mono_ns.min(i64::MAX as u64) as i64).saturating_add(self.realtime_offset_ns)
    }
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339(wall_ns: i64) -> String {
    let t = if wall_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(wall_ns as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// An event made by the daemon itself (loss records, flushes), stamped now, on this host and boot.
pub fn daemon_event(process: Process, body: EventBody) -> Event {
    let mono = Clock::mono_now_ns();
    let wall = Clock::now().wall_ns(mono);
    let origin = Origin::this_process();
    Event {
        mono_ns: mono,
        time_ns: wall,
        time: rfc3339(wall),
        host: origin.host.clone(),
        boot_id: origin.boot_id.clone(),
        process,
        body,
    }
}

/// Reads a plain-integer `T` at `off`. All kernel record types are integers only (no padding,
/// every bit pattern valid), which is what makes this read sound.
fn pod<T: Copy>(b: &[u8], off: usize) -> Result<T, DecodeError> {
    let need = off + size_of::<T>();
    if b.len() < need {
        return Err(DecodeError::TooShort { need, got: b.len() });
    }
    // SAFETY: bounds checked above; T is a #[repr(C)] integer-only type (or an integer).
    Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().add(off) as *const T) })
}

fn at_least(b: &[u8], need: usize) -> Result<(), DecodeError> {
    if b.len() < need {
        return Err(DecodeError::TooShort { need, got: b.len() });
    }
    Ok(())
}

/// Splits `len` bytes off the front of `tail`.
fn take<'a>(tail: &mut &'a [u8], len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
    if len > tail.len() {
        return Err(DecodeError::TailOverflow { field, len });
    }
    let (head, rest) = tail.split_at(len);
    *tail = rest;
    Ok(head)
}

/// A kernel C string: up to the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn audit_id(v: u32) -> Option<u32> {
    (v != AUDIT_UNSET).then_some(v)
}

/// The cwd as the kernel sends it (NUL-terminated components, innermost first) as a path.
fn cwd_path(components: &[u8]) -> RawBytes {
    let mut parts: Vec<&[u8]> = components
        .split(|&c| c == 0)
        .filter(|p| !p.is_empty())
        .collect();
    parts.reverse();
    let mut path = Vec::with_capacity(components.len() + 1);
    for p in parts {
        path.push(b'/');
        path.extend_from_slice(p);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    RawBytes(path)
}

/// Turns `ptsN` into `pts/N`, as `ps` shows it.
fn tty_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw).into_owned();
    match name.strip_prefix("pts") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("pts/{n}"),
        _ => name,
    }
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
    let header: EventHeader = pod(record, 0)?;
    if header.version != SCHEMA_VERSION {
        return Err(DecodeError::Version {
            got: header.version,
        });
    }
    let size = header.size as usize;
    if size > record.len() || size < HEADER_SIZE {
        return Err(DecodeError::SizeMismatch {
            header: size,
            got: record.len(),
        });
    }
    let b = &record[..size];
    let kind = RecordKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let body = match kind {
        RecordKind::Exec => EventBody::Exec(decode_exec(b)?),
        RecordKind::Exit => {
            let r: ExitRecord = pod(b, 0)?;
            EventBody::Exit(exit_status(r.exit_code))
        }
        RecordKind::Open => EventBody::Open(decode_open(b)?),
        RecordKind::FileRead => {
            let r: FileReadRecord = pod(b, 0)?;
            EventBody::FileRead(FileReadEvent {
                fd: r.fd,
                path: None,
                bytes: r.stats.bytes,
                reads: r.stats.reads,
                open_mono_ns: r.stats.open_ktime_ns,
                reason: ReadVolumeReason::Close,
            })
        }
        RecordKind::Connect => EventBody::Connect(decode_connect(&pod::<ConnectRecord>(b, 0)?)),
        RecordKind::Priv => EventBody::Priv(decode_priv(&pod::<PrivRecord>(b, 0)?)?),
        RecordKind::Fork => {
            let r: ForkRecord = pod(b, 0)?;
            EventBody::Fork(ForkEvent {
                child_pid: r.child_tgid,
            })
        }
        RecordKind::TtyOut => EventBody::TtyOutput(decode_tty(b)?),
        RecordKind::TtyIn => EventBody::TtyInput(decode_tty(b)?),
    };
    let wall = clock.wall_ns(header.ktime_ns);
    // The kernel that wrote the record is this boot's: records never outlive it in the ring.
    let origin = Origin::this_process();
    Ok(Event {
        mono_ns: header.ktime_ns,
        time_ns: wall,
        time: rfc3339(wall),
        host: origin.host.clone(),
        boot_id: origin.boot_id.clone(),
        process: Process {
            pid: header.tgid,
            tid: header.pid,
            ppid: header.ppid,
            uid: header.uid,
            euid: header.euid,
            gid: header.gid,
            loginuid: audit_id(header.loginuid),
            sessionid: audit_id(header.sessionid),
            cgroup_id: header.cgroup_id,
            comm: RawBytes(cstr(&header.comm).to_vec()),
            ..Default::default()
        },
        body,
    })
}

/// Splits `task_struct.exit_code` (wait status layout) into code, signal and core flag.
pub fn exit_status(raw: u32) -> ExitEvent {
    let signal = (raw & 0x7f) as i32;
    if signal == 0 {
        ExitEvent {
            exit_code: Some(((raw >> 8) & 0xff) as i32),
            signal: None,
            core_dumped: false,
        }
    } else {
        ExitEvent {
            exit_code: None,
            signal: Some(signal),
            core_dumped: raw & 0x80 != 0,
        }
    }
}

fn decode_tty(b: &[u8]) -> Result<TtyEvent, DecodeError> {
    at_least(b, TTY_FIXED_SIZE)?;
    let len = pod::<u32>(b, offset_of!(TtyRecord, len))? as usize;
    let data = b
        .get(TTY_FIXED_SIZE..TTY_FIXED_SIZE.saturating_add(len))
        .ok_or(DecodeError::TailOverflow { field: "data", len })?;
    let flags: u16 = pod(b, offset_of!(TtyRecord, flags))?;
    let dev: u32 = pod(b, offset_of!(TtyRecord, dev))?;
    let oflag: u32 = pod(b, offset_of!(TtyRecord, oflag))?;
    let lflag: u32 = pod(b, offset_of!(TtyRecord, lflag))?;
    // OPOST | ONLCR: the terminal receives "\r\n" for every "\n" written.
    const OPOST: u32 = 0o1;
    const ONLCR: u32 = 0o4;
    const ECHO: u32 = 0o10;
    Ok(TtyEvent {
        tty: tty_device_name(dev),
        data: RawBytes(data.to_vec()),
        total_bytes: pod::<u32>(b, offset_of!(TtyRecord, total))? as u64,
        truncated: flags & TTY_TRUNCATED != 0,
        over_budget: flags & TTY_OVER_BUDGET != 0,
        unreadable: flags & TTY_UNREADABLE != 0,
        rows: pod(b, offset_of!(TtyRecord, rows))?,
        cols: pod(b, offset_of!(TtyRecord, cols))?,
        onlcr: oflag & (OPOST | ONLCR) == OPOST | ONLCR,
        echo: lflag & ECHO != 0,
    })
}

/// `pts/N`, `ttyN` or `ttySN` from a terminal's device number.
fn tty_device_name(dev: u32) -> String {
    let (major, minor) = (dev >> 20, dev & 0xfffff);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    }
}

fn decode_exec(b: &[u8]) -> Result<ExecEvent, DecodeError> {
    at_least(b, EXEC_FIXED_SIZE)?;
    let flags: u32 = pod(b, offset_of!(ExecRecord, flags))?;
    let filename_len = pod::<u16>(b, offset_of!(ExecRecord, filename_len))? as usize;
    let tty_len = pod::<u16>(b, offset_of!(ExecRecord, tty_len))? as usize;
    let cwd_len = pod::<u16>(b, offset_of!(ExecRecord, cwd_len))? as usize;
    let argv_len = pod::<u16>(b, offset_of!(ExecRecord, argv_len))? as usize;
    let mut tail = &b[EXEC_FIXED_SIZE..];
    let filename = cstr(take(&mut tail, filename_len, "filename")?);
    let tty = cstr(take(&mut tail, tty_len, "tty")?);
    let cwd = take(&mut tail, cwd_len, "cwd")?;
    let argv = take(&mut tail, argv_len, "argv")?;
    let argv_truncated = flags & EXEC_ARGV_TRUNCATED != 0;
    // The argument area is NUL-separated with a final NUL; a cut one ends mid-argument, which
    // is kept as the last (partial) argument.
    let argv_body = argv.strip_suffix(&[0]).unwrap_or(argv);
    let args = if argv_body.is_empty() && flags & EXEC_ARGV_UNAVAILABLE != 0 {
        Vec::new()
    } else {
        argv_body.split(|&c| c == 0).map(RawBytes::from).collect()
    };
    Ok(ExecEvent {
        filename: RawBytes(filename.to_vec()),
        argv: args,
        argv_truncated,
        argv_total_bytes: pod(b, offset_of!(ExecRecord, argv_total))?,
        filename_truncated: flags & EXEC_FILENAME_TRUNCATED != 0,
        cwd: (flags & EXEC_CWD_UNAVAILABLE == 0).then(|| cwd_path(cwd)),
        cwd_truncated: flags & EXEC_CWD_TRUNCATED != 0,
        tty: (!tty.is_empty()).then(|| tty_name(tty)),
        old_pid: pod(b, offset_of!(ExecRecord, old_pid))?,
        ancestry: Vec::new(),
        stdin: StdioKind::from_code(pod(b, offset_of!(ExecRecord, stdio))?),
        stdout: StdioKind::from_code(pod(b, offset_of!(ExecRecord, stdio) + 1)?),
        stderr: StdioKind::from_code(pod(b, offset_of!(ExecRecord, stdio) + 2)?),
    })
}

fn decode_open(b: &[u8]) -> Result<OpenEvent, DecodeError> {
    at_least(b, OPEN_FIXED_SIZE)?;
    let flags: u16 = pod(b, offset_of!(OpenRecord, flags))?;
    let path_len = pod::<u16>(b, offset_of!(OpenRecord, path_len))? as usize;
    let cwd_len = pod::<u16>(b, offset_of!(OpenRecord, cwd_len))? as usize;
    let mut tail = &b[OPEN_FIXED_SIZE..];
    let requested = cstr(take(&mut tail, path_len, "path")?).to_vec();
    let cwd = take(&mut tail, cwd_len, "cwd")?;
    let path = if cwd_len > 0 && !requested.starts_with(b"/") {
        let mut full = cwd_path(cwd).0;
        if !full.ends_with(b"/") {
            full.push(b'/');
        }
        full.extend_from_slice(&requested);
        RawBytes(full)
    } else {
        RawBytes(requested.clone())
    };
    let open_flags: u32 = pod(b, offset_of!(OpenRecord, open_flags))?;
    let syscall = match pod::<u16>(b, offset_of!(OpenRecord, syscall))? {
        open_syscall::OPENAT => OpenSyscall::Openat,
        open_syscall::OPEN => OpenSyscall::Open,
        open_syscall::OPENAT2 => OpenSyscall::Openat2,
        open_syscall::CREAT => OpenSyscall::Creat,
        other => {
            return Err(DecodeError::UnknownValue {
                field: "open syscall",
                value: other.into(),
            })
        }
    };
    let access = match open_flags & libc::O_ACCMODE as u32 {
        0 => Access::Read,
        1 => Access::Write,
        _ => Access::ReadWrite,
    };
    Ok(OpenEvent {
        path: if flags & OPEN_PATH_UNAVAILABLE != 0 {
            RawBytes::default()
        } else {
            path
        },
        requested_path: RawBytes(requested),
        syscall,
        dfd: pod(b, offset_of!(OpenRecord, dfd))?,
        flags: open_flags,
        access,
        mode: pod(b, offset_of!(OpenRecord, mode))?,
        result: SyscallResult::from_ret(pod::<i32>(b, offset_of!(OpenRecord, ret))? as i64),
        path_truncated: flags & OPEN_PATH_TRUNCATED != 0,
        reads_untracked: flags & OPEN_READS_UNTRACKED != 0,
    })
}

fn decode_connect(r: &ConnectRecord) -> ConnectEvent {
    let (family, address, port) = match r.family as i32 {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(r.addr[0], r.addr[1], r.addr[2], r.addr[3]);
            (
                AddressFamily::Ipv4,
                Some(RawBytes::from(ip.to_string().as_str())),
                Some(r.port),
            )
        }
        libc::AF_INET6 => (
            AddressFamily::Ipv6,
            Some(RawBytes::from(Ipv6Addr::from(r.addr).to_string().as_str())),
            Some(r.port),
        ),
        libc::AF_UNIX => {
            let path_len = (r.addr_len as usize)
                .saturating_sub(2)
                .min(r.unix_path.len());
            let raw = &r.unix_path[..path_len];
            let address = if raw.first() == Some(&0) {
                // Abstract socket: the name is every byte after the leading NUL, by length.
                let mut name = b"@".to_vec();
                name.extend_from_slice(&raw[1..]);
                RawBytes(name)
            } else {
                RawBytes(cstr(raw).to_vec())
            };
            (AddressFamily::Unix, Some(address), None)
        }
        _ => (AddressFamily::Other, None, None),
    };
    ConnectEvent {
        fd: r.fd,
        family,
        family_number: (family == AddressFamily::Other).then_some(r.family),
        address,
        port,
        result: SyscallResult::from_ret(r.ret as i64),
    }
}

fn ids(c: &CredIds) -> Ids {
    Ids {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_effective: c.cap_effective,
    }
}

/// Capability names by number (linux/capability.h).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Names of the capabilities in `bits` (unknown ones as `CAP_<n>`).
pub fn capability_names(bits: u64) -> Vec<String> {
    (0..64)
        .filter(|i| bits & (1u64 << i) != 0)
        .map(|i| {
            CAPABILITIES
                .get(i)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("CAP_{i}"))
        })
        .collect()
}

fn decode_priv(r: &PrivRecord) -> Result<PrivEvent, DecodeError> {
    let op = match r.op {
        priv_op::SETUID => PrivOp::Setuid,
        priv_op::SETREUID => PrivOp::Setreuid,
        priv_op::SETRESUID => PrivOp::Setresuid,
        priv_op::SETFSUID => PrivOp::Setfsuid,
        priv_op::SETGID => PrivOp::Setgid,
        priv_op::SETREGID => PrivOp::Setregid,
        priv_op::SETRESGID => PrivOp::Setresgid,
        priv_op::SETFSGID => PrivOp::Setfsgid,
        priv_op::EXEC => PrivOp::Exec,
        other => {
            return Err(DecodeError::UnknownValue {
                field: "privilege operation",
                value: other.into(),
            })
        }
    };
    let argc = match r.op {
        priv_op::SETREUID | priv_op::SETREGID => 2,
        priv_op::SETRESUID | priv_op::SETRESGID => 3,
        priv_op::EXEC => 0,
        _ => 1,
    };
    let requested = r.requested[..argc]
        .iter()
        .map(|&v| (v != u32::MAX).then_some(v))
        .collect();
    let (old, new) = (ids(&r.old), ids(&r.new));
    // setfsuid/setfsgid return the previous fsuid/fsgid, never an error code.
    let ret = if matches!(r.op, priv_op::SETFSUID | priv_op::SETFSGID) {
        0
    } else {
        r.ret as i64
    };
    Ok(PrivEvent {
        op,
        requested,
        // Effective root gained (setuid binaries, sudo), or real root taken by a process that
        // only had it effectively (setuid(0) in a setuid-root program).
        gained_root: (old.euid != 0 && new.euid == 0) || (old.uid != 0 && new.uid == 0),
        gained_caps: if new.euid == 0 {
            Vec::new()
        } else {
            capability_names(new.cap_effective & !old.cap_effective)
        },
        old,
        new,
        result: SyscallResult::from_ret(ret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vigil_common::{kind, EXEC_TAIL_CAP, OPEN_TAIL_CAP};

    fn header(kind: u16, size: usize) -> EventHeader {
        EventHeader {
            version: SCHEMA_VERSION,
            kind,
            size: size as u32,
            ktime_ns: 5_000_000_000,
            cgroup_id: 7,
            pid: 101,
            tgid: 100,
            ppid: 1,
            uid: 1000,
            euid: 0,
            gid: 1000,
            loginuid: 1000,
            sessionid: 3,
            comm: *b"bash\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes_of<T>(v: &T, len: usize) -> Vec<u8> {
        // SAFETY: test-only view of a plain integer struct.
        let all = unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) };
        all[..len].to_vec()
    }

    fn exec_record(parts: &[&[u8]], flags: u32) -> Vec<u8> {
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        let mut pos = 0;
        let mut lens = [0u16; 4];
        for (i, p) in parts.iter().enumerate() {
            rec.tail[pos..pos + p.len()].copy_from_slice(p);
            pos += p.len();
            lens[i] = p.len() as u16;
        }
        rec.filename_len = lens[0];
        rec.tty_len = lens[1];
        rec.cwd_len = lens[2];
        rec.argv_len = lens[3];
        rec.flags = flags;
        rec.argv_total = lens[3] as u32;
        let size = EXEC_FIXED_SIZE + pos;
        rec.header = header(kind::EXEC, size);
        bytes_of(&rec, size)
    }

    #[test]
    fn decodes_exec_with_hostile_argv() {
        let argv: &[u8] = b"printf\0a b\0\xe2\x9c\x93\0\xff\xfe\0";
        let rec = exec_record(&[b"/usr/bin/printf\0", b"pts3\0", b"tmp\0home\0", argv], 0);
        let ev = decode(&rec, &Clock::fixed(1_000)).unwrap();
        let EventBody::Exec(e) = ev.body else {
            panic!("not exec")
        };
        assert_eq!(e.filename.as_bytes(), b"/usr/bin/printf");
        assert_eq!(e.tty.as_deref(), Some("pts/3"));
        assert_eq!(e.cwd.unwrap().as_bytes(), b"/home/tmp");
        let args: Vec<&[u8]> = e.argv.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(
            args,
            vec![&b"printf"[..], b"a b", "✓".as_bytes(), b"\xff\xfe"]
        );
        assert!(!e.argv_truncated);
        assert_eq!(ev.process.pid, 100);
        assert_eq!(ev.process.tid, 101);
        assert_eq!(ev.process.loginuid, Some(1000));
        assert_eq!(ev.time_ns, 5_000_001_000);
        // Non-UTF-8 survives a JSON round trip exactly.
        let json = serde_json::to_string(&e.argv).unwrap();
        assert!(json.contains("base64"), "{json}");
        let back: Vec<RawBytes> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e.argv);
    }

    #[test]
    fn truncated_argv_is_flagged_and_kept() {
        let rec = exec_record(&[b"/bin/x\0", b"", b"", b"x\0aaaa"], EXEC_ARGV_TRUNCATED);
        let EventBody::Exec(e) = decode(&rec, &Clock::fixed(0)).unwrap().body else {
            panic!()
        };
        assert!(e.argv_truncated);
        assert_eq!(e.argv.last().unwrap().as_bytes(), b"aaaa");
        assert_eq!(e.tty, None);
    }

    #[test]
    fn lengths_past_the_tail_are_errors() {
        let mut rec = exec_record(&[b"/bin/x\0", b"", b"", b"x\0"], 0);
        let off = offset_of!(ExecRecord, argv_len);
        rec[off..off + 2].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(
            decode(&rec, &Clock::fixed(0)),
            Err(DecodeError::TailOverflow { field: "argv", .. })
        ));
    }

    #[test]
    fn relative_open_is_joined_to_the_cwd() {
        let mut rec: OpenRecord = unsafe { std::mem::zeroed() };
        let tail = b"notes.txt\0alice\0home\0";
        rec.tail[..tail.len()].copy_from_slice(tail);
        rec.path_len = 10;
        rec.cwd_len = 11;
        rec.ret = -2;
        rec.syscall = open_syscall::OPENAT;
        rec.dfd = vigil_common::AT_FDCWD;
        let size = OPEN_FIXED_SIZE + tail.len();
        rec.header = header(kind::OPEN, size);
        let EventBody::Open(o) = decode(&bytes_of(&rec, size), &Clock::fixed(0))
            .unwrap()
            .body
        else {
            panic!()
        };
        assert_eq!(o.path.as_bytes(), b"/home/alice/notes.txt");
        assert_eq!(o.requested_path.as_bytes(), b"notes.txt");
        assert_eq!(o.result.error.as_deref(), Some("ENOENT"));
        assert_eq!(o.access, Access::Read);
    }

    #[test]
    fn exit_status_splits_code_and_signal() {
        assert_eq!(exit_status(3 << 8).exit_code, Some(3));
        let killed = exit_status(9);
        assert_eq!((killed.exit_code, killed.signal), (None, Some(9)));
        assert!(exit_status(0x80 | 11).core_dumped);
    }

    #[test]
    fn wrong_version_and_kind_are_rejected() {
        let mut h = header(kind::FORK, size_of::<ForkRecord>());
        h.version = 99;
        let rec = ForkRecord {
            header: h,
            child_pid: 1,
            child_tgid: 1,
        };
        assert_eq!(
            decode(&bytes_of(&rec, size_of::<ForkRecord>()), &Clock::fixed(0)),
            Err(DecodeError::Version { got: 99 })
        );
        let mut h = header(77, size_of::<ForkRecord>());
        h.version = SCHEMA_VERSION;
        let rec = ForkRecord {
            header: h,
            child_pid: 1,
            child_tgid: 1,
        };
        assert_eq!(
            decode(&bytes_of(&rec, size_of::<ForkRecord>()), &Clock::fixed(0)),
            Err(DecodeError::UnknownKind(77))
        );
    }

    fn kinds() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(kind::EXEC),
            Just(kind::OPEN),
            Just(kind::CONNECT),
            Just(kind::PRIV),
            Just(kind::TTY_OUT),
            0u16..20
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&data, &Clock::fixed(0));
        }

        /// A valid header followed by arbitrary bytes (the harder case: it passes the first
        /// checks) never panics, whatever the lengths claim.
        #[test]
        fn valid_header_hostile_body_never_panics(
            k in kinds(),
            body in proptest::collection::vec(any::<u8>(), 0..(EXEC_TAIL_CAP.max(OPEN_TAIL_CAP) / 4)),
            size_delta in -16i64..16,
        ) {
            let total = HEADER_SIZE + body.len();
            let size = (total as i64 + size_delta).max(0) as usize;
            let h = header(k, size);
            let mut rec = bytes_of(&h, HEADER_SIZE);
            rec.extend_from_slice(&body);
            let _ = decode(&rec, &Clock::fixed(i64::MAX));
        }
    }
}
