//! Detection: rules evaluated on every enriched event with its session's context, alerts as
//! events in the stream (so they are spooled, shipped and replayed like the rest), and a risk
//! score per session with its reasons.

pub mod baseline;
pub mod expr;
pub mod fields;
mod guard;
pub mod rules;
pub mod sigma;
pub mod webhook;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
};

use crate::{
    decode::daemon_event,
    event::{AlertEvent, Event, EventBody, LinkEvent, OpenEvent},
};
use expr::{Fields, Value};
use fields::Field;
use rules::LiveRules;

/// Programs that run the applet argv[0] names (procps' `pgrep` is also `pkill` and `pidwait`,
/// through symlinks the kernel resolves to it).
const MULTI_CALL: &[&str] = &["busybox", "toybox", "pgrep"];

/// What a process's program is called by its identity (`process.name`): the base name of the
/// packaged path its content is, else of its executable, else (nothing known) its `comm`. At
/// exec, a multi-call program is the applet argv[0] names.
pub fn program_name(e: &Event) -> Cow<'_, str> {
    fn base(p: &[u8]) -> &[u8] {
        p.rsplit(|&c| c == b'/').next().unwrap_or(p)
    }
    let exe = e.process.exe.as_ref();
    let name = match exe {
        Some(x) => base(x.program.as_ref().map_or(&x.path.0, |p| &p.0)),
        None => &e.process.comm.0[..],
    };
    if let (EventBody::Exec(x), Ok(n)) = (&e.body, std::str::from_utf8(name)) {
        if MULTI_CALL.contains(&n) {
            if let Some(arg0) = x.argv.first() {
                let applet = base(&arg0.0);
                if !MULTI_CALL.iter().any(|m| m.as_bytes() == applet) {
                    return crate::event::text(applet);
                }
            }
        }
    }
    crate::event::text(name)
}

/// Credential files, whose bytes read count toward exfiltration (credential reads, then a
/// connection). Deliberately narrower than the baselines' `sensitive_paths` (which also cover
/// configuration such as /etc/ssh/ and /root/): reading sshd_config and connecting out is routine.
fn is_credential_file(path: &[u8]) -> bool {
    let p = crate::event::text(path);
    ["/etc/shadow", "/etc/gshadow"].contains(&p.as_ref())
        || (p.contains("/.ssh/id_") && !p.ends_with(".pub"))
        || p.ends_with("/.aws/credentials")
        || p.ends_with("/.kube/config")
        || p.ends_with("/serviceaccount/token")
}

const DOWNLOADERS: &[&str] = &["curl", "wget", "fetch", "aria2c"];

/// A shell or script interpreter (by `process.name`: `python3.11` is Python).
fn is_shell(name: &str) -> bool {
    const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "fish", "busybox"];
    const INTERPRETERS: &[&str] = &["python", "perl", "ruby", "php", "node", "lua", "tclsh"];
    SHELLS.contains(&name)
        || INTERPRETERS.iter().any(|i| {
            name.strip_prefix(i)
                .is_some_and(|v| v.bytes().all(|c| c.is_ascii_digit() || c == b'.'))
        })
}

/// An exec that decodes data to its output (`base64 -d`, `xxd -r`, `openssl enc -d`): the first
/// half of an obfuscated payload piped into a shell.
fn is_decoder(name: &str, argv: &[crate::event::RawBytes]) -> bool {
    let has = |flags: &[&str]| {
        argv.iter().skip(1).any(|a| {
            let a = a.as_bytes();
            flags.iter().any(|f| a == f.as_bytes())
                || (a.len() > 1
                    && a[0] == b'-'
                    && a[1] != b'-'
                    && flags.iter().any(|f| {
                        f.len() == 2 && f.as_bytes()[0] == b'-' && a[1..].contains(&f.as_bytes()[1])
                    }))
        })
    };
    match name {
        "base64" | "base32" | "basenc" => has(&["-d", "--decode", "-D"]),
        "xxd" => has(&["-r", "-revert"]),
        "openssl" => has(&["-d", "-base64", "-a", "-A"]),
        "uudecode" => true,
        _ => false,
    }
}
/// How close in time a download and a shell of the same pipeline start: the shell forks both
/// sides of `curl … | sh` at once.
const PIPELINE_WINDOW_NS: u64 = 2_000_000_000;

/// What detection keeps per session.
#[derive(Default)]
struct SessionState {
    /// What the session did so far (the one definition of the counts).
    counts: crate::event::SessionCounts,
    sensitive_bytes_read: u64,
    /// Rules that fired already (each adds its risk once).
    fired: HashSet<String>,
    risk: u32,
    reasons: Vec<String>,
    /// Recent downloader, decoder and shell execs: (parent pid, time).
    downloads: VecDeque<(u32, u64)>,
    decoders: VecDeque<(u32, u64)>,
    shells: VecDeque<(u32, u64)>,
    /// The session's terminals (`/dev/pts/3`), from its execs.
    terminals: HashSet<String>,
    /// Files written after a download in this session.
    written_after_download: HashSet<Vec<u8>>,
    entry: Option<crate::event::SessionEntry>,
}

/// Per-event facts computed once for the rules.
struct View<'a> {
    event: &'a Event,
    session: Option<&'a SessionState>,
    download_then_shell: bool,
    decoded_then_shell: bool,
    written_then_executed: bool,
    /// Read by most rules on an open or an exec, several times each: decoded once per event.
    path: std::cell::OnceCell<Cow<'a, str>>,
    name: std::cell::OnceCell<Cow<'a, str>>,
}

/// A terminal device: a pty, a virtual console, or a console's screen memory.
fn is_terminal_device(path: &[u8]) -> bool {
    let p = String::from_utf8_lossy(path);
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit());
    p.strip_prefix("/dev/pts/").is_some_and(numbered)
        || p.strip_prefix("/dev/tty").is_some_and(numbered)
        || p.strip_prefix("/dev/vcsa")
            .is_some_and(|r| r.is_empty() || numbered(r))
        || p.strip_prefix("/dev/vcs")
            .is_some_and(|r| r.is_empty() || numbered(r))
}

/// `/proc/<pid>/…` of a process other than `own` (the reader's own process id).
fn of_other_process(path: &[u8], own: u32) -> bool {
    let Some(rest) = path.strip_prefix(b"/proc/") else {
        return false;
    };
    let pid = rest.split(|&c| c == b'/').next().unwrap_or(b"");
    std::str::from_utf8(pid)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p != own)
}

fn stdio(kind: Option<crate::event::StdioKind>) -> Value<'static> {
    Value::Str(Cow::Borrowed(kind.map(|k| k.as_str()).unwrap_or("closed")))
}

fn lossy(b: &[u8]) -> Cow<'_, str> {
    crate::event::text(b)
}

impl Fields for View<'_> {
    /// Every field's value for this event. Exhaustive over [`Field`]: a field added to the
    /// table does not compile until it has a value here.
    fn get(&self, field: Field) -> Value<'_> {
        let e = self.event;
        let p = &e.process;
        let num = |n: u32| Value::Num(n as f64);
        let word = |w: &'static str| Value::Str(Cow::Borrowed(w));
        fn opt_name(s: &Option<std::sync::Arc<str>>) -> Value<'_> {
            match s {
                Some(s) => Value::Str(Cow::Borrowed(s)),
                None => Value::Missing,
            }
        }
        fn opt_str(s: &Option<String>) -> Value<'_> {
            match s {
                Some(s) => Value::Str(Cow::Borrowed(s.as_str())),
                None => Value::Missing,
            }
        }
        let session = self.session;
        match (field, &e.body) {
            (Field::Type, _) => word(e.body.type_name()),
            (Field::ProcessPid, _) => num(p.pid),
            (Field::ProcessPpid, _) => num(p.ppid),
            (Field::ProcessUid, _) => num(p.uid),
            (Field::ProcessEuid, _) => num(p.euid),
            (Field::ProcessLoginuid, _) => p.loginuid.map(num).unwrap_or(Value::Missing),
            (Field::ProcessUser, _) => opt_name(&p.user),
            (Field::ProcessEuser, _) => opt_name(&p.euser),
            (Field::ProcessLoginUser, _) => opt_name(&p.login_user),
            (Field::ProcessComm, _) => Value::Str(lossy(&p.comm.0)),
            (Field::ProcessExe, _) => p
                .exe
                .as_ref()
                .map(|x| Value::Str(lossy(&x.path.0)))
                .unwrap_or(Value::Missing),
            (Field::ProcessProgram, _) => p
                .exe
                .as_ref()
                .and_then(|x| x.program.as_ref())
                .map(|x| Value::Str(lossy(&x.0)))
                .unwrap_or(Value::Missing),
            (Field::ProcessName, _) => {
                Value::Str(Cow::Borrowed(self.name.get_or_init(|| program_name(e))))
            }
            (Field::ProcessExeTrust, _) => p
                .exe
                .as_ref()
                .map(|x| word(x.trust.as_str()))
                .unwrap_or(Value::Missing),
            (Field::ProcessTrustedName, _) => p
                .exe
                .as_ref()
                .and_then(|x| x.trusted_name())
                .map(|n| Value::Str(lossy(n)))
                .unwrap_or(Value::Missing),
            (Field::ProcessLeftSession, _) => Value::Bool(p.audit_now.is_some()),
            (Field::ProcessContainerId, _) => opt_str(&p.container_id),
            (Field::SessionEntry, _) => session
                .and_then(|s| s.entry)
                .map(|s| word(s.as_str()))
                .unwrap_or(Value::Missing),
            (Field::SessionBytesRead, _) => {
                Value::Num(session.map(|s| s.counts.bytes_read).unwrap_or(0) as f64)
            }
            (Field::SessionSensitiveBytesRead, _) => {
                Value::Num(session.map(|s| s.sensitive_bytes_read).unwrap_or(0) as f64)
            }
            (Field::SessionDownloadThenShell, _) => Value::Bool(self.download_then_shell),
            (Field::SessionDecodedThenShell, _) => Value::Bool(self.decoded_then_shell),
            (Field::SessionForeignTerminal, EventBody::Open(o)) => Value::Bool(
                is_terminal_device(&o.path.0)
                    && session.is_some_and(|s| !s.terminals.contains(o.path.lossy().as_str())),
            ),
            (Field::FileOtherProcess, EventBody::Open(o)) => {
                Value::Bool(of_other_process(&o.path.0, p.pid))
            }
            (Field::SessionWrittenThenExecuted, _) => Value::Bool(self.written_then_executed),
            (Field::Filename, EventBody::Exec(x)) => Value::Str(lossy(&x.filename.0)),
            (Field::Argv, EventBody::Exec(x)) => {
                Value::List(x.argv.iter().map(|a| lossy(&a.0)).collect())
            }
            (Field::Cmdline, EventBody::Exec(x)) => Value::Str(Cow::Owned(
                x.argv
                    .iter()
                    .map(|a| a.lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
            )),
            (Field::Cwd, EventBody::Exec(x)) => x
                .cwd
                .as_ref()
                .map(|c| Value::Str(lossy(&c.0)))
                .unwrap_or(Value::Missing),
            (Field::Ancestry, EventBody::Exec(x)) => Value::List(
                x.ancestry
                    .iter()
                    .map(|a| Cow::Borrowed(a.name.as_str()))
                    .collect(),
            ),
            (Field::Parent, EventBody::Exec(x)) => x
                .ancestry
                .iter()
                .rev()
                .nth(1)
                .map(|a| Value::Str(Cow::Borrowed(a.name.as_str())))
                .unwrap_or(Value::Missing),
            (Field::Stdin, EventBody::Exec(x)) => stdio(x.stdin),
            (Field::Stdout, EventBody::Exec(x)) => stdio(x.stdout),
            (Field::Stderr, EventBody::Exec(x)) => stdio(x.stderr),
            (Field::ExeSha256, EventBody::Exec(x)) => x
                .exe
                .as_ref()
                .and_then(|x| x.sha256.as_deref())
                .map(|h| Value::Str(Cow::Borrowed(h)))
                .unwrap_or(Value::Missing),
            (Field::ExePackage, EventBody::Exec(x)) => x
                .exe
                .as_ref()
                .and_then(|x| x.package.as_deref())
                .map(|h| Value::Str(Cow::Borrowed(h)))
                .unwrap_or(Value::Missing),
            (
                Field::Path,
                EventBody::Open(OpenEvent { path, .. }) | EventBody::Link(LinkEvent { path, .. }),
            ) => Value::Str(Cow::Borrowed(self.path.get_or_init(|| lossy(&path.0)))),
            (
                Field::RequestedPath,
                EventBody::Open(OpenEvent { requested_path, .. })
                | EventBody::Link(LinkEvent { requested_path, .. }),
            ) => Value::Str(lossy(&requested_path.0)),
            (Field::Source, EventBody::Link(l)) if l.operation == crate::event::LinkOp::Unlink => {
                Value::Missing
            }
            (Field::Source, EventBody::Link(l)) => Value::Str(lossy(&l.source.0)),
            (Field::Change, EventBody::Link(l)) => word(l.operation.as_str()),
            (Field::Succeeded, EventBody::Link(l)) => Value::Bool(l.result.ok()),
            (Field::FileType, EventBody::Open(o)) => o
                .file
                .as_ref()
                .and_then(|f| fields::file_type(f.mode))
                .map(word)
                .unwrap_or(Value::Missing),
            (Field::FileDeleted, EventBody::Open(o)) => o
                .file
                .as_ref()
                .map(|f| Value::Bool(f.deleted))
                .unwrap_or(Value::Missing),
            (Field::FileDeleted, EventBody::Exec(x)) => x
                .exe
                .as_ref()
                .map(|f| Value::Bool(f.file.deleted))
                .unwrap_or(Value::Missing),
            (Field::FileOutsideRoot, EventBody::Open(o)) => o
                .file
                .as_ref()
                .map(|f| Value::Bool(f.outside_root))
                .unwrap_or(Value::Missing),
            (Field::FileCreated, EventBody::Open(o)) => o
                .file
                .as_ref()
                .map(|f| Value::Bool(f.created))
                .unwrap_or(Value::Missing),
            (Field::FileProcessMemory, EventBody::Open(o)) => o
                .file
                .as_ref()
                .map(|f| Value::Bool(f.process_memory))
                .unwrap_or(Value::Missing),
            (Field::Path, EventBody::FileRead(r)) => r
                .path
                .as_ref()
                .map(|x| Value::Str(lossy(&x.0)))
                .unwrap_or(Value::Missing),
            (Field::Access, EventBody::Open(o)) => word(o.access.as_str()),
            (Field::OpenedBy, EventBody::Open(o)) => word(o.syscall.as_str()),
            (Field::Truncate, EventBody::Open(o)) => {
                Value::Bool(o.flags & (libc::O_TRUNC as u32) != 0)
            }
            (Field::Succeeded, EventBody::Open(o)) => Value::Bool(o.result.ok()),
            (Field::Succeeded, EventBody::Priv(x)) => Value::Bool(x.result.ok()),
            // A non-blocking connect in progress is on its way.
            (Field::Succeeded, EventBody::Connect(c)) => {
                Value::Bool(c.result.ok() || c.result.error.as_deref() == Some("EINPROGRESS"))
            }
            (Field::Bytes, EventBody::FileRead(r)) => Value::Num(r.bytes as f64),
            (Field::Family, EventBody::Connect(c)) => word(c.family.as_str()),
            (Field::Family, EventBody::RawSocket(r)) => word(r.family.as_str()),
            (Field::Succeeded, EventBody::RawSocket(r)) => Value::Bool(r.result.ok()),
            (Field::SocketKind, EventBody::RawSocket(r)) => word(r.socket_type.as_str()),
            (Field::Protocol, EventBody::RawSocket(r)) => Value::Num(r.protocol as f64),
            (Field::Succeeded, EventBody::ProcessAccess(a)) => Value::Bool(a.result.ok()),
            (Field::Operation, EventBody::ProcessAccess(a)) => word(a.operation.as_str()),
            (Field::TargetPid, EventBody::ProcessAccess(a)) => Value::Num(a.target_pid as f64),
            (Field::TargetInSession, EventBody::ProcessAccess(a)) => {
                Value::Bool(a.target_in_session)
            }
            (Field::TargetInSession, EventBody::Open(o)) => o
                .memory_of
                .as_ref()
                .map(|m| Value::Bool(m.in_session))
                .unwrap_or(Value::Missing),
            (Field::Address, EventBody::Connect(c)) => c
                .address
                .as_ref()
                .map(|a| Value::Str(lossy(&a.0)))
                .unwrap_or(Value::Missing),
            (Field::RequestedAddress, EventBody::Connect(c)) => c
                .requested_address
                .as_ref()
                .map(|a| Value::Str(lossy(&a.0)))
                .unwrap_or(Value::Missing),
            (Field::Port, EventBody::Connect(c)) => c
                .port
                .map(|p| Value::Num(p as f64))
                .unwrap_or(Value::Missing),
            (Field::AddressRewritten, EventBody::Connect(c)) => Value::Bool(c.address_rewritten),
            (Field::OpenedBySend, EventBody::Connect(c)) => Value::Bool(c.opened_by_send),
            (Field::Datagram, EventBody::Connect(c)) => Value::Bool(c.datagram),
            (Field::Command, EventBody::Bpf(b)) => word(b.command.as_str()),
            (Field::Object, EventBody::Bpf(b)) => {
                b.object.map(|o| word(o.as_str())).unwrap_or(Value::Missing)
            }
            (Field::ObjectId, EventBody::Bpf(b)) => b
                .object_id
                .map(|id| Value::Num(id as f64))
                .unwrap_or(Value::Missing),
            (Field::Op, EventBody::Priv(x)) => word(x.op.as_str()),
            (Field::GainedRoot, EventBody::Priv(x)) => Value::Bool(x.gained_root),
            (Field::GainedCaps, EventBody::Priv(x)) => Value::List(
                x.gained_caps
                    .iter()
                    .map(|c| Cow::Borrowed(c.as_str()))
                    .collect(),
            ),
            // The field belongs to other kinds of event: this one lacks it.
            (
                Field::Filename
                | Field::Argv
                | Field::Cmdline
                | Field::Cwd
                | Field::Ancestry
                | Field::Parent
                | Field::Stdin
                | Field::Stdout
                | Field::Stderr
                | Field::Path
                | Field::ExeSha256
                | Field::ExePackage
                | Field::RequestedPath
                | Field::Source
                | Field::Change
                | Field::FileType
                | Field::FileDeleted
                | Field::FileOutsideRoot
                | Field::FileCreated
                | Field::FileProcessMemory
                | Field::FileOtherProcess
                | Field::SessionForeignTerminal
                | Field::Access
                | Field::OpenedBy
                | Field::Truncate
                | Field::Succeeded
                | Field::Bytes
                | Field::Family
                | Field::Address
                | Field::RequestedAddress
                | Field::Port
                | Field::AddressRewritten
                | Field::OpenedBySend
                | Field::Datagram
                | Field::SocketKind
                | Field::Protocol
                | Field::Operation
                | Field::TargetPid
                | Field::TargetInSession
                | Field::Command
                | Field::Object
                | Field::ObjectId
                | Field::Op
                | Field::GainedRoot
                | Field::GainedCaps,
                _,
            ) => Value::Missing,
        }
    }
}

/// Deterministic alert id (a UUID in form), so a re-sent alert is the same alert: the event's
/// session key, the rule and the event's kernel time.
fn alert_id(event: &Event, rule: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!(
        "{}\0{}\0{}\0{rule}\0{}",
        event.host,
        event.boot_id,
        event.process.sessionid.unwrap_or(0),
        event.mono_ns
    ));
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Rule evaluation is timed (`vigil_rule_eval_seconds`) on one event in this many.
const TIMED_EVERY: u32 = 16;

pub struct Detector {
    rules: LiveRules,
    /// By audit session id: the detector sees the live events of one host's one boot (its
    /// state dies with the daemon, which lives within a boot), so the id alone is the whole
    /// `SessionKey` here, as in the session tracker.
    sessions: crate::IdMap<u32, SessionState>,
    /// The rules that can match each event type, and what they need of its path (see
    /// `guard`).
    by_type: HashMap<crate::event::EventType, guard::Candidates>,
    /// Events since rule evaluation was last timed.
    untimed: u32,
    baselines: Option<baseline::Baselines>,
    anomalies: Vec<baseline::Anomaly>,
}

impl Detector {
    pub fn new(rules: LiveRules, baselines: Option<baseline::Baselines>) -> Self {
        let mut d = Detector {
            rules,
            baselines,
            anomalies: Vec::new(),
            sessions: Default::default(),
            by_type: HashMap::new(),
            // The first event is timed: the histogram has a sample from the start.
            untimed: TIMED_EVERY - 1,
        };
        d.index();
        d
    }

    fn index(&mut self) {
        self.by_type = guard::Candidates::index(self.rules.rules.iter().map(|r| &r.when));
    }

    /// Saves what the baselines learnt (at shutdown).
    pub fn shutdown(&mut self) {
        if let Some(b) = &mut self.baselines {
            if let Err(e) = b.save() {
                tracing::error!("{e}");
            }
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.rules.len()
    }

    /// Takes up an edit of the rules files, if there was one (the stage asks once per batch:
    /// looking costs a clock read, too much to pay on every event).
    pub fn refresh_rules(&mut self) {
        if self.rules.refresh() {
            self.index();
        }
    }

    /// Evaluates the rules on `event` (already enriched); alerts follow it in `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Event>) {
        let sid = event.process.sessionid;
        // Session context, updated before the rules see the event.
        let mut download_then_shell = false;
        let mut decoded_then_shell = false;
        let mut written_then_executed = false;
        if let Some(sid) = sid {
            let s = self.sessions.entry(sid).or_default();
            s.counts.count(event);
            match &event.body {
                EventBody::SessionStart(st) => s.entry = Some(st.entry),
                EventBody::FileRead(r)
                    if r.path.as_ref().is_some_and(|p| is_credential_file(&p.0)) =>
                {
                    s.sensitive_bytes_read += r.bytes;
                }
                EventBody::OpensFolded(f)
                    if f.path.as_ref().is_some_and(|p| is_credential_file(&p.0)) =>
                {
                    s.sensitive_bytes_read += f.bytes;
                }
                EventBody::Open(o)
                    if o.result.ok()
                        && o.access != crate::event::Access::Read
                        && !s.downloads.is_empty()
                        && s.written_after_download.len() < 4096 =>
                {
                    s.written_after_download.insert(o.path.0.clone());
                }
                EventBody::Exec(x) => {
                    let name = program_name(event).into_owned();
                    let now = event.mono_ns;
                    let ppid = event.process.ppid;
                    let recent = |q: &VecDeque<(u32, u64)>| {
                        q.iter()
                            .any(|&(p, t)| p == ppid && now.saturating_sub(t) <= PIPELINE_WINDOW_NS)
                    };
                    if let Some(tty) = &x.tty {
                        if s.terminals.len() < 64 {
                            s.terminals.insert(format!("/dev/{tty}"));
                        }
                    }
                    if DOWNLOADERS.contains(&name.as_str()) {
                        download_then_shell = recent(&s.shells);
                        s.downloads.push_back((ppid, now));
                    } else if is_decoder(&name, &x.argv) {
                        decoded_then_shell = recent(&s.shells);
                        s.decoders.push_back((ppid, now));
                    } else if is_shell(&name) && x.stdin == Some(crate::event::StdioKind::Pipe) {
                        // Only a shell reading its script from a pipe can be the end of one.
                        download_then_shell = recent(&s.downloads);
                        decoded_then_shell = recent(&s.decoders);
                        s.shells.push_back((ppid, now));
                    }
                    for q in [&mut s.downloads, &mut s.decoders, &mut s.shells] {
                        while q.len() > 64
                            || q.front()
                                .is_some_and(|&(_, t)| now.saturating_sub(t) > PIPELINE_WINDOW_NS)
                        {
                            q.pop_front();
                        }
                    }
                    written_then_executed = s.written_after_download.contains(&x.filename.0)
                        || x.argv.get(1).is_some_and(|a| {
                            s.written_after_download.contains(&a.0) && is_shell(&name)
                        });
                }
                _ => {}
            }
        }
        let view = View {
            event,
            session: sid.and_then(|s| self.sessions.get(&s)),
            download_then_shell,
            decoded_then_shell,
            written_then_executed,
            path: Default::default(),
            name: Default::default(),
        };
        let mut hits: Vec<usize> = Vec::new();
        // Timed on one event in TIMED_EVERY, not every one: two clock reads and a histogram
        // sample cost about what evaluating the rules of an ordinary event does.
        self.untimed += 1;
        let started = (self.untimed >= TIMED_EVERY).then(|| {
            self.untimed = 0;
            std::time::Instant::now()
        });
        if let Some(candidates) = self.by_type.get_mut(&event.body.event_type()) {
            for i in candidates.in_play(&view.get(Field::Path)) {
                if self.rules.rules[i].when.eval(&view) {
                    hits.push(i);
                }
            }
        }
        if let Some(started) = started {
            metrics::histogram!("vigil_rule_eval_seconds").record(started.elapsed().as_secs_f64());
        }
        for i in hits {
            let rule = &self.rules.rules[i];
            let finding = Finding {
                id: &rule.id,
                title: &rule.title,
                technique: &rule.technique,
                severity: rule.severity,
                risk: rule.risk,
                actions: &rule.actions,
            };
            out.push(alert(&finding, &mut self.sessions, event));
        }
        if let Some(b) = &mut self.baselines {
            b.observe(event, &mut self.anomalies);
            for a in self.anomalies.drain(..) {
                let finding = Finding {
                    id: a.id,
                    title: &a.title,
                    technique: "",
                    severity: a.severity,
                    risk: a.risk,
                    actions: &[],
                };
                out.push(alert(&finding, &mut self.sessions, event));
            }
        }
        if let (Some(sid), EventBody::SessionEnd(_)) = (sid, &event.body) {
            self.sessions.remove(&sid);
        }
    }
}

/// What raised an alert: a rule, or an anomaly against a baseline (which has no technique).
struct Finding<'a> {
    id: &'a str,
    title: &'a str,
    technique: &'a str,
    severity: rules::Severity,
    risk: u32,
    actions: &'a [crate::event::ResponseAction],
}

impl Finding<'_> {
    fn reason(&self) -> String {
        let kind = if self.technique.is_empty() {
            "anomaly"
        } else {
            self.technique
        };
        format!("{} ({kind}, +{})", self.title, self.risk)
    }
}

/// The alert for `rule` matching `event`, counting it into its session's risk (once per rule
/// id and session).
fn alert(rule: &Finding, sessions: &mut crate::IdMap<u32, SessionState>, event: &Event) -> Event {
    let sid = event.process.sessionid;
    let (session_risk, reasons) = match sid.map(|s| sessions.entry(s).or_default()) {
        Some(s) => {
            if s.fired.insert(rule.id.to_string()) {
                s.risk = (s.risk + rule.risk).min(100);
                s.reasons.push(rule.reason());
            }
            (s.risk, s.reasons.clone())
        }
        None => (rule.risk.min(100), vec![rule.reason()]),
    };
    metrics::counter!("vigil_alerts_total", "rule" => rule.id.to_string(), "severity" => rule.severity.as_str()).increment(1);
    let body = EventBody::Alert(AlertEvent {
        alert_id: alert_id(event, rule.id),
        rule: rule.id.to_string(),
        title: rule.title.to_string(),
        technique: rule.technique.to_string(),
        severity: rule.severity,
        risk: rule.risk,
        session_risk,
        reasons,
        evidence_type: event.body.event_type(),
        evidence_mono_ns: event.mono_ns,
        evidence_time_ns: event.time_ns,
        evidence: event.to_string(),
        actions: rule.actions.to_vec(),
    });
    // Its own time, when detection knew (the evidence's is in the body): the alert follows its
    // evidence in every timeline, and how long detection took is there to see. Its process is
    // the evidence's, the one the alert is about.
    daemon_event(event.process.clone(), body)
}
