//! Ingest benchmark body (`vigil bench-ingest`, run by `cargo xtask bench ingest`): realistic
//! events through the real spool writer, then through the real shipper into ClickHouse.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    decode::daemon_event,
    event::*,
    spool::{AckFile, Spool, SpoolConfig, SpoolThread, WhenFull},
    store::ClickHouseConfig,
};

#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub events: u64,
    /// The median round's.
    pub spool_seconds: f64,
    /// The median of the rounds.
    pub spool_events_per_second: f64,
    /// Every round's, in the order run.
    pub spool_rounds_per_second: Vec<f64>,
    pub spool_bytes: u64,
    pub clickhouse_seconds: Option<f64>,
    pub clickhouse_rows_per_second: Option<f64>,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// A mix like a busy admin session: exec with arguments, opens, read volumes, connects, exits.
/// Distinct synthetic events the ingest benchmark cycles through.
const POOL: u64 = 1000;

fn synthetic(i: u64) -> Event {
    let process = Process {
        pid: 10_000 + (i % 500) as u32,
        tid: 10_000 + (i % 500) as u32,
        ppid: 9_999,
        uid: 0,
        euid: 0,
        gid: 0,
        loginuid: Some(1000),
        sessionid: Some(7 + (i % 3) as u32),
        cgroup_id: 4242,
        comm: "bash".into(),
        exe: Some(std::sync::Arc::new(crate::event::ProcessExe {
            path: "/usr/bin/bash".into(),
            program: Some("/usr/bin/bash".into()),
            trust: crate::event::Trust::Packaged,
            trusted: true,
        })),
        ..Default::default()
    };
    let file = |path: &str, ino: u64| crate::event::FileIdentity {
        path: path.into(),
        root_path: None,
        dev: "8:1".into(),
        ino,
        uid: 0,
        mode: 0o100644,
        ctime_ns: 1_764_000_000_000_000_000,
        deleted: false,
        truncated: false,
        outside_root: false,
        created: false,
        process_memory: false,
    };
    let body = match i % 5 {
        0 => EventBody::Exec(ExecEvent {
            filename: "/usr/bin/grep".into(),
            exe: Some(crate::event::Executable {
                file: file("/usr/bin/grep", 1_312_113),
                sha256: Some(
                    "4f1c2d0a9e8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d".into(),
                ),
                package: Some("grep".into()),
                trust: crate::event::Trust::Packaged,
            }),
            argv: [
                "grep",
                "-rn",
                "password",
                "/etc/app/config.d",
                "--include=*.yaml",
            ]
            .iter()
            .map(|a| (*a).into())
            .collect(),
            argv_truncated: false,
            argv_total_bytes: 58,
            filename_truncated: false,
            cwd: Some("/home/alice/src/service".into()),
            cwd_truncated: false,
            tty: Some("pts/3".into()),
            old_pid: 0,
            ancestry: Vec::new(),
            stdin: Some(StdioKind::Tty),
            stdout: Some(StdioKind::Tty),
            stderr: Some(StdioKind::Tty),
        }),
        1 => EventBody::Open(OpenEvent {
            memory_of: None,
            path: "/etc/app/config.d/database.yaml".into(),
            requested_path: "/etc/app/config.d/database.yaml".into(),
            file: Some(file("/etc/app/config.d/database.yaml", 2_400_117 + i % 64)),
            syscall: crate::event::OpenSyscall::Openat,
            dfd: -100,
            flags: 0o2000000,
            access: crate::event::Access::Read,
            mode: 0,
            result: SyscallResult::from_ret(3),
            path_truncated: false,
            reads_untracked: false,
            dir_ino: 0,
            links: 0,
        }),
        2 => EventBody::FileRead(FileReadEvent {
            fd: 3,
            path: Some("/etc/app/config.d/database.yaml".into()),
            bytes: 4096 + i % 1000,
            reads: 2,
            open_mono_ns: i * 1000,
            reason: ReadVolumeReason::Close,
        }),
        3 => EventBody::Connect(ConnectEvent {
            fd: 4,
            family: crate::event::AddressFamily::Ipv4,
            family_number: None,
            address: Some("10.20.30.40".into()),
            requested_address: None,
            socket: None,
            port: Some(5432),
            result: SyscallResult::from_ret(0),
            address_rewritten: false,
            opened_by_send: false,
            datagram: false,
        }),
        _ => EventBody::Exit(ExitEvent {
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
        }),
    };
    let mut e = daemon_event(process, body);
    e.mono_ns = 1_000_000_000 + i * 1000;
    e.time_ns = 1_795_000_000_000_000_000 + (i * 1000) as i64;
    e.time = crate::decode::rfc3339(e.time_ns);
    e
}

fn rusage_cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set of this process (VmHWM), bytes.
pub fn peak_rss_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Serializes and appends `events` synthetic events into a fresh spool at `dir`, as the sink
/// does; seconds taken and bytes written.
fn spool_round(dir: &Path, events: u64, pool: &[Event]) -> anyhow::Result<(f64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let cfg = SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 64 * 1024 * 1024,
        max_bytes: 64 * 1024 * 1024 * 1024,
        when_full: WhenFull::DropOldest,
        fsync_interval_ms: 1000,
    };
    let mut spool = SpoolThread::start(Spool::open(cfg)?)?;
    let mut line = Vec::with_capacity(4096);
    let mut writer = EventWriter::new();
    let started = Instant::now();
    for i in 0..events {
        // As the sink does it: serialize once, hand the bytes to the spool's writer thread
        // (chain, checksum, frame, write), flush now and then, close at the end.
        line.clear();
        let process = writer.write(&mut line, &pool[(i % POOL) as usize])?;
        spool.append_json(&line, Some(process))?;
        if i % 4096 == 4095 {
            spool.flush()?;
        }
    }
    let closed = spool.close(Default::default())?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, closed.counters.bytes))
}

/// `rounds` spool rounds (the median reported: this machine kind's speed varies by 10–20%
/// from one run to the next), then, when `clickhouse` is given, the last round's spool shipped.
pub async fn ingest(
    spool_dir: &Path,
    events: u64,
    rounds: u32,
    clickhouse: Option<ClickHouseConfig>,
) -> anyhow::Result<IngestReport> {
    // The events are made before the clock starts (making them is the decoder's work, not the
    // spool's): a pool of every shape, used in turn.
    let pool: Vec<Event> = (0..POOL).map(synthetic).collect();
    let mut timed = Vec::new();
    for _ in 0..rounds.max(1) {
        timed.push(spool_round(spool_dir, events, &pool)?);
    }
    let spool_rounds_per_second: Vec<f64> = timed.iter().map(|(s, _)| events as f64 / s).collect();
    let mut by_time = timed.clone();
    by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (spool_seconds, spool_bytes) = by_time[by_time.len() / 2];

    let mut clickhouse_seconds = None;
    if let Some(ch) = clickhouse {
        let sensitive = crate::config::Config::embedded()
            .detection
            .baseline
            .sensitive_paths;
        crate::store::migrate(&ch, &sensitive).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ack = AckFile::new(spool_dir, "clickhouse");
        let started = Instant::now();
        let shipper = tokio::spawn(crate::store::shipper::run(
            ch,
            spool_dir.to_path_buf(),
            "bench".into(),
            None,
            Default::default(),
            stop_rx,
        ));
        while ack.next() < events {
            if shipper.is_finished() {
                anyhow::bail!("the shipper stopped early");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        clickhouse_seconds = Some(started.elapsed().as_secs_f64());
        let _ = stop_tx.send(true);
        shipper.await??;
    }
    Ok(IngestReport {
        events,
        spool_seconds,
        spool_events_per_second: events as f64 / spool_seconds,
        spool_rounds_per_second,
        spool_bytes,
        clickhouse_seconds,
        clickhouse_rows_per_second: clickhouse_seconds.map(|s| events as f64 / s),
        cpu_seconds: rusage_cpu_seconds(),
        peak_rss_bytes: peak_rss_bytes("self"),
    })
}

/// The session the replay benchmark writes (`vigil bench-session`).
pub const REPLAY_SESSION: u32 = 77;

/// Writes one session of `events` events into a spool, as an interactive admin session looks
/// to replay: mostly terminal output (coloured listings, 1 ms apart), with commands, file reads
/// and exits between them. Events of other sessions are interleaved, as on a shared host.
pub fn write_replay_session(spool_dir: &Path, events: u64) -> anyhow::Result<u64> {
    let cfg = SpoolConfig {
        dir: spool_dir.to_path_buf(),
        segment_bytes: 64 * 1024 * 1024,
        max_bytes: 64 * 1024 * 1024 * 1024,
        when_full: WhenFull::DropOldest,
        fsync_interval_ms: 1000,
    };
    let mut spool = Spool::open(cfg)?;
    let mut line = Vec::with_capacity(4096);
    let mut written = 0;
    for i in 0..events {
        let mut e = synthetic(i);
        e.process.sessionid = Some(REPLAY_SESSION);
        if i % 10 < 6 {
            e.body = EventBody::TtyOutput(TtyEvent {
                tty: "pts/3".into(),
                data: format!(
                    "-rw-r--r-- 1 root root {:>8} Nov 25 10:{:02} \x1b[01;34mfile-{i}.conf\x1b[0m\n",
                    i * 37 % 100_000,
                    i % 60
                )
                .as_str()
                .into(),
                total_bytes: 64,
                truncated: false,
                over_budget: false,
                unreadable: false,
                rows: 40,
                cols: 120,
                onlcr: true,
                echo: false,
            });
        }
        e.mono_ns = 1_000_000_000 + i * 1_000_000;
        e.time_ns = 1_795_000_000_000_000_000 + (i * 1_000_000) as i64;
        e.time = crate::decode::rfc3339(e.time_ns);
        line.clear();
        serde_json::to_writer(&mut line, &e)?;
        spool.append_json(&line)?;
        written += 1;
        // Another session's event between two of this one's.
        if i % 4 == 0 {
            let mut other = synthetic(i);
            other.process.sessionid = Some(REPLAY_SESSION + 1);
            line.clear();
            serde_json::to_writer(&mut line, &other)?;
            spool.append_json(&line)?;
        }
    }
    spool.flush()?;
    Ok(written)
}
