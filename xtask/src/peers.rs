//! The peers of the overhead benchmark: auditd and bpftrace, each with rules equivalent to
//! Vigil's default capture in login sessions (processes with a login uid): commands, opens,
//! outbound connects and datagrams, privilege changes, and read volume where the tool can count
//! it (bpftrace sums bytes read per process; auditd has no such rule). Started before one phase
//! of a round and stopped after it, like the daemon.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::bench::KillOnDrop;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerKind {
    Auditd,
    Bpftrace,
}

/// The audit key of the bench's rules: only these are removed again (a host's own rules stay).
const AUDIT_KEY: &str = "vigil-bench";

/// One rule per capture kind of Vigil's default, limited to processes with a login uid.
const AUDIT_RULES: &[&[&str]] = &[
    &["-S", "execve", "-S", "execveat"],
    &["-S", "open", "-S", "openat", "-S", "openat2", "-S", "creat"],
    &["-S", "connect"],
    // Vigil reports a datagram addressed with no connect(2); auditd can only see the sends.
    &["-S", "sendto", "-S", "sendmsg", "-S", "sendmmsg"],
    &[
        "-S",
        "setuid",
        "-S",
        "setgid",
        "-S",
        "setreuid",
        "-S",
        "setregid",
        "-S",
        "setresuid",
        "-S",
        "setresgid",
        "-S",
        "setfsuid",
        "-S",
        "setfsgid",
        "-S",
        "setgroups",
        "-S",
        "capset",
    ],
];

/// bpftrace printing what Vigil records, for processes with a login uid (4294967295: unset).
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_execve, tracepoint:syscalls:sys_enter_execveat
/curtask->loginuid.val != 4294967295/ { printf("exec %d %d %s\n", pid, uid, str(args->filename)); }
tracepoint:syscalls:sys_enter_open
/curtask->loginuid.val != 4294967295/ { printf("open %d %d %s\n", pid, uid, str(args->filename)); }
tracepoint:syscalls:sys_enter_openat, tracepoint:syscalls:sys_enter_openat2
/curtask->loginuid.val != 4294967295/ { printf("open %d %d %s\n", pid, uid, str(args->filename)); }
tracepoint:syscalls:sys_enter_connect
/curtask->loginuid.val != 4294967295/ { printf("connect %d %d %d\n", pid, uid, args->fd); }
tracepoint:syscalls:sys_enter_sendto
/curtask->loginuid.val != 4294967295 && args->addr != 0/ { printf("datagram %d %d %d\n", pid, uid, args->fd); }
tracepoint:syscalls:sys_enter_sendmsg, tracepoint:syscalls:sys_enter_sendmmsg
/curtask->loginuid.val != 4294967295/ { printf("send %d %d %d\n", pid, uid, args->fd); }
tracepoint:syscalls:sys_enter_setuid, tracepoint:syscalls:sys_enter_setresuid,
tracepoint:syscalls:sys_enter_setreuid
/curtask->loginuid.val != 4294967295/ { printf("priv %d %d\n", pid, uid); }
tracepoint:syscalls:sys_exit_read
/curtask->loginuid.val != 4294967295 && args->ret > 0/ { @read_bytes[pid] = sum(args->ret); }
"#;

pub struct Peer {
    kind: PeerKind,
    child: KillOnDrop,
    dir: PathBuf,
    /// The audit subsystem's `enabled` before the bench (restored after).
    audit_enabled_before: Option<String>,
    /// The kernel's count of audit records lost (backlog full), when auditd started.
    audit_lost_at_start: u64,
}

/// What a peer recorded while it ran.
pub struct PeerSeen {
    /// Its records naming the storm file.
    pub records: u64,
    /// Records the kernel's audit backlog lost meanwhile (auditd only).
    pub lost: u64,
}

fn auditctl(args: &[&str]) -> Result<String> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .context("cannot run auditctl")?;
    if !out.status.success() {
        bail!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A field of `auditctl -s` ("enabled 1", "pid 123", ...).
fn audit_status(field: &str) -> Result<String> {
    Ok(auditctl(&["-s"])?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(' ').map(str::to_string))
        .unwrap_or_default())
}

impl Peer {
    pub fn start(kind: PeerKind, dir: &Path) -> Result<Peer> {
        let dir = dir.join(format!("{kind:?}").to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        match kind {
            PeerKind::Auditd => Peer::start_auditd(dir),
            PeerKind::Bpftrace => Peer::start_bpftrace(dir),
        }
    }

    fn start_auditd(dir: PathBuf) -> Result<Peer> {
        if audit_status("pid")?.parse::<u32>().unwrap_or(0) != 0 {
            bail!("an audit daemon is already running on this host: stop it for the benchmark");
        }
        let enabled_before = audit_status("enabled")?;
        // The distribution's configuration, logging into the bench's directory instead.
        let conf = std::fs::read_to_string("/etc/audit/auditd.conf")
            .context("/etc/audit/auditd.conf (the auditd package)")?;
        let log = dir.join("audit.log");
        // One log that is never rotated away (the bench counts what it recorded).
        let conf: String = conf
            .lines()
            .map(|l| match l.split('=').next().map(str::trim) {
                Some("log_file") => format!("log_file = {}", log.display()),
                Some("max_log_file_action") => "max_log_file_action = ignore".to_string(),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("auditd.conf"), conf + "\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.join("auditd.conf"),
            std::fs::Permissions::from_mode(0o640),
        )?;
        let child = Command::new("auditd")
            .args(["-n", "-c"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("cannot start auditd")?;
        let peer = Peer {
            kind: PeerKind::Auditd,
            child: KillOnDrop(child),
            dir,
            audit_enabled_before: Some(enabled_before),
            audit_lost_at_start: audit_status("lost")?.parse().unwrap_or(0),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while audit_status("pid")?.parse::<u32>().unwrap_or(0) != peer.child.0.id() {
            if Instant::now() > deadline {
                bail!(
                    "auditd not registered with the kernel in 20 s: {}",
                    peer.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Debian's default rules file sets this backlog; without it the kernel's 64 would drop.
        auditctl(&["-b", "8192"])?;
        for rule in AUDIT_RULES {
            let mut args = vec!["-a", "always,exit", "-F", "arch=b64"];
            args.extend_from_slice(rule);
            args.extend_from_slice(&["-F", "auid!=-1", "-k", AUDIT_KEY]);
            auditctl(&args)?;
        }
        auditctl(&["-e", "1"])?;
        Ok(peer)
    }

    fn start_bpftrace(dir: PathBuf) -> Result<Peer> {
        let out = dir.join("bpftrace.out");
        let child = Command::new("bpftrace")
            .arg("-o")
            .arg(&out)
            .args(["-e", BPFTRACE_SCRIPT])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("cannot start bpftrace")?;
        let mut peer = Peer {
            kind: PeerKind::Bpftrace,
            child: KillOnDrop(child),
            dir,
            audit_enabled_before: None,
            audit_lost_at_start: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("Attaching") {
                break;
            }
            if let Ok(Some(status)) = peer.child.0.try_wait() {
                bail!("bpftrace exited with {status}: {}", peer.log());
            }
            if Instant::now() > deadline {
                bail!("bpftrace not attached in 60 s: {}", peer.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peer)
    }

    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Stops the peer; returns how many of its records name `needle` (that it was capturing).
    pub fn stop(mut self, needle: &str) -> Result<PeerSeen> {
        let lost = match self.kind {
            PeerKind::Auditd => audit_status("lost")?
                .parse::<u64>()
                .unwrap_or(0)
                .saturating_sub(self.audit_lost_at_start),
            PeerKind::Bpftrace => 0,
        };
        self.detach();
        if self.kind == PeerKind::Auditd {
            // Records still queued in the kernel and in auditd reach its log before it stops
            // (SIGTERM at once loses them, and the count below would be short).
            self.wait_log_settled(&self.dir.join("audit.log"));
        }
        // auditd stops on SIGTERM; bpftrace prints its maps and exits on SIGINT.
        let signal = match self.kind {
            PeerKind::Auditd => libc::SIGTERM,
            PeerKind::Bpftrace => libc::SIGINT,
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.0.id() as i32, signal) };
        let status = self.child.0.wait()?;
        if self.kind == PeerKind::Bpftrace && !status.success() {
            bail!("bpftrace exited with {status}: {}", self.log());
        }
        let file = match self.kind {
            PeerKind::Auditd => self.dir.join("audit.log"),
            PeerKind::Bpftrace => self.dir.join("bpftrace.out"),
        };
        use std::io::BufRead as _;
        let mut seen = 0;
        if let Ok(f) = std::fs::File::open(&file) {
            for line in std::io::BufReader::new(f).lines() {
                if line?.contains(needle) {
                    seen += 1;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(PeerSeen {
            records: seen,
            lost,
        })
    }

    /// Waits (10 s at most) until `log` has not grown for half a second.
    fn wait_log_settled(&self, log: &Path) {
        let size = || std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = size();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let now = size();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Removes the bench's audit rules and restores the audit state (idempotent).
    fn detach(&mut self) {
        if self.kind == PeerKind::Auditd {
            let _ = auditctl(&["-D", "-k", AUDIT_KEY]);
            if let Some(before) = self.audit_enabled_before.take() {
                let _ = auditctl(&["-e", if before == "1" { "1" } else { "0" }]);
            }
        }
    }
}

/// A bench that fails half-way must not leave audit rules behind (the tracer or auditd itself
/// is killed by its `KillOnDrop`).
impl Drop for Peer {
    fn drop(&mut self) {
        self.detach();
    }
}
