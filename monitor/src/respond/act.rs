//! The executor: carries responses out on a thread of its own, owning the kernel's response maps.
//!
//! Processes are signalled through pidfds, and only after the kernel's scope table confirms,
//! with the pidfd held, that the pid is still a process of the session: a pid freed and reused
//! between the listing and the signal is then never hit. What the executor misses (a fork in
//! flight, a process someone continues) the kernel programs catch at its next call.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};
use vigil_common::{respond as verdict, ExeKey};

use super::{ExeTarget, Request, RespondConfig, Target};
use crate::{
    event::{
        Event, EventBody, Mechanism, Process, Requester, RespondMode, ResponseAction,
        ResponseEvent, ResponseOutcome,
    },
    kernel::respond::{exe_key_of, KernelResponder},
};

/// Where the dynamic loaders of the architectures Vigil runs on live (multiarch and merged-/usr
/// spellings lead to the same files; each distinct file is registered once).
const DYNAMIC_LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

/// Requests waiting for the executor at most; beyond it a request is `dropped`.
pub const QUEUE: usize = 256;
/// How often holds are re-asserted, killed sessions swept and denied paths looked up again.
const TICK: Duration = Duration::from_millis(500);
/// A killed session's verdict stays this long after its last process is gone (a straggler
/// still in flight meets it).
const KILL_LINGER: Duration = Duration::from_secs(30);

/// One request and, for a manual one, where its answer goes.
pub struct Job {
    pub request: Request,
    pub reply: Option<oneshot::Sender<ResponseEvent>>,
}

/// What a denied content hash came from, so its later finds say the same.
#[derive(Clone)]
struct DeniedHash {
    requester: Requester,
    requested_by: String,
}

pub struct Executor {
    config: RespondConfig,
    kernel: KernelResponder,
    protected_exes: HashSet<ExeKey>,
    denied_hashes: BTreeMap<String, DeniedHash>,
    hashes_tx: watch::Sender<Arc<BTreeSet<String>>>,
    /// Denied paths and the file each named when last looked up.
    denied_paths: Vec<(PathBuf, Option<ExeKey>)>,
    /// Automatic responses carried out in the last minute.
    recent: VecDeque<Instant>,
    /// Sessions killed, since when, and when they were last seen with a process.
    killed: HashMap<u32, Instant>,
    users: crate::identity::UserNames,
    host_etc: Option<PathBuf>,
    host_root: PathBuf,
    own_pid: u32,
    next_id: u64,
    /// Responses made at start (`respond.deny_exec`, the saved state), published when the
    /// thread runs.
    startup: Vec<Event>,
    /// Files denied by the kernel's identity (a copy of denied content found at its exec).
    denied_files: BTreeSet<(String, u64)>,
    /// Where what is in force is kept across restarts (see [`SavedState`]).
    state_path: PathBuf,
    /// Set while the saved state is applied (nothing to save then).
    restoring: bool,
}

/// What is in force, kept beside the spool so that a daemon restarted (or stopped and started by
/// someone working against it) puts it back: denials always, session verdicts when it is still
/// the same boot (session ids are the boot's). Rewritten after every change.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SavedState {
    boot_id: String,
    denied_paths: Vec<PathBuf>,
    /// (sha256, requester, requested_by)
    denied_hashes: Vec<(String, Requester, String)>,
    /// (`major:minor`, inode)
    denied_files: Vec<(String, u64)>,
    /// Session id → verdict bits.
    verdicts: BTreeMap<u32, u32>,
}

/// What carrying a request out came to.
struct Outcome {
    outcome: ResponseOutcome,
    detail: String,
    processes: u32,
    mechanism: Option<Mechanism>,
}

impl Outcome {
    fn new(outcome: ResponseOutcome, detail: impl Into<String>) -> Self {
        Outcome {
            outcome,
            detail: detail.into(),
            processes: 0,
            mechanism: None,
        }
    }
}

/// Opens a pidfd for `pid`.
fn pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    // By hand: nix 0.29 has no pidfd calls; these two syscalls are all that is needed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(fd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Executor {
    /// Resolves the protected programs and the configured denials into the kernel's maps.
    pub fn new(
        config: RespondConfig,
        mut kernel: KernelResponder,
        host_etc: Option<PathBuf>,
        host_root: PathBuf,
        state_path: PathBuf,
    ) -> (Self, watch::Receiver<Arc<BTreeSet<String>>>) {
        let own_pid = std::process::id();
        let mut protected_exes = HashSet::new();
        let always = [
            PathBuf::from("/proc/self/exe"),
            PathBuf::from("/proc/1/exe"),
        ];
        for path in always.iter().chain(config.protected_programs.iter()) {
            let at = if path.starts_with("/proc") {
                path.clone()
            } else {
                under_root(&host_root, path)
            };
            match exe_key_of(&at) {
                Ok(key) => {
                    protected_exes.insert(key);
                    if let Err(e) = kernel.protect_exe(key) {
                        tracing::error!(path = %path.display(), "cannot protect program: {e}");
                    }
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), "protected program not here: {e}")
                }
            }
        }
        for loader in DYNAMIC_LOADERS {
            if let Ok(key) = exe_key_of(&under_root(&host_root, Path::new(loader))) {
                if let Err(e) = kernel.add_loader(key) {
                    tracing::error!(%loader, "cannot register the dynamic loader: {e}");
                }
            }
        }
        let (hashes_tx, hashes_rx) = watch::channel(Arc::new(BTreeSet::new()));
        let executor = Executor {
            denied_paths: Vec::new(),
            denied_hashes: BTreeMap::new(),
            hashes_tx,
            protected_exes,
            recent: VecDeque::new(),
            killed: HashMap::new(),
            users: crate::identity::UserNames::new(host_etc.clone()),
            host_etc,
            host_root,
            own_pid,
            next_id: 0,
            startup: Vec::new(),
            denied_files: BTreeSet::new(),
            state_path,
            restoring: false,
            kernel,
            config,
        };
        (executor.with_configured_denials().restored(), hashes_rx)
    }

    /// The `response` events of `respond.deny_exec`, applied at start.
    fn with_configured_denials(mut self) -> Self {
        let deny = self.config.deny_exec.clone();
        let targets = deny
            .paths
            .into_iter()
            .map(|p| ExeTarget {
                path: Some(p),
                ..Default::default()
            })
            .chain(deny.sha256.into_iter().map(|h| ExeTarget {
                sha256: Some(h),
                ..Default::default()
            }));
        for target in targets {
            let request = Request {
                action: ResponseAction::DenyExec,
                target: Target::Exe(target),
                requester: Requester::Config,
                requested_by: "respond.deny_exec".into(),
                reason: String::new(),
            };
            let event = self.handle(&request);
            self.startup.push(event);
        }
        self
    }

    /// Writes what is in force to the state file (owner-only, atomically). A failure is logged
    /// and counted: what is in force stays in force, only a restart would forget it.
    fn save(&self) {
        if self.restoring {
            return;
        }
        let state = SavedState {
            boot_id: crate::event::Origin::this_process().boot_id.to_string(),
            denied_paths: self.denied_paths.iter().map(|(p, _)| p.clone()).collect(),
            denied_hashes: self
                .denied_hashes
                .iter()
                .map(|(h, d)| (h.clone(), d.requester, d.requested_by.clone()))
                .collect(),
            denied_files: self.denied_files.iter().cloned().collect(),
            verdicts: self.kernel.verdicts(),
        };
        let written = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::durable::write_atomic(&self.state_path, &bytes));
        if let Err(e) = written {
            metrics::counter!("vigil_respond_state_errors_total").increment(1);
            tracing::error!(path = %self.state_path.display(), "cannot save what responses are in force: {e}");
        }
    }

    /// Puts back what the state file says was in force, each as a response in the trail
    /// (requested by `config`, naming the file). Session verdicts only within the same boot, and
    /// only for sessions that still have processes.
    fn restored(mut self) -> Self {
        let text = match std::fs::read(&self.state_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self,
            Err(e) => {
                tracing::error!(path = %self.state_path.display(), "cannot read the saved responses: {e}");
                return self;
            }
        };
        let state: SavedState = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(path = %self.state_path.display(), "the saved responses are not readable, nothing restored: {e}");
                return self;
            }
        };
        let by = format!("restored from {}", self.state_path.display());
        let mut requests: Vec<Request> = Vec::new();
        let exe = |target: ExeTarget, requester: Requester, reason: String| Request {
            action: ResponseAction::DenyExec,
            target: Target::Exe(target),
            requester,
            requested_by: by.clone(),
            reason,
        };
        for path in state.denied_paths {
            if !self.denied_paths.iter().any(|(p, _)| *p == path) {
                requests.push(exe(
                    ExeTarget {
                        path: Some(path),
                        ..Default::default()
                    },
                    Requester::Config,
                    String::new(),
                ));
            }
        }
        for (sha256, requester, requested_by) in state.denied_hashes {
            requests.push(exe(
                ExeTarget {
                    sha256: Some(sha256),
                    ..Default::default()
                },
                requester,
                format!("denied by {requested_by}"),
            ));
        }
        let same_boot = state.boot_id == *crate::event::Origin::this_process().boot_id;
        if same_boot {
            for file in state.denied_files {
                requests.push(exe(
                    ExeTarget {
                        file: Some(file),
                        ..Default::default()
                    },
                    Requester::Config,
                    String::new(),
                ));
            }
            for (session, bits) in state.verdicts {
                // In force before the processes are seen again: the kernel's scope table
                // started empty, and each process of the session re-enters it (and meets the
                // verdict) at its next call.
                if let Err(e) = self.kernel.set_verdict(session, bits, 0) {
                    tracing::error!(session, "cannot restore the session's verdict: {e}");
                    continue;
                }
                for (bit, action) in [
                    (verdict::KILL, ResponseAction::KillSession),
                    (verdict::HOLD, ResponseAction::HoldSession),
                    (verdict::DENY_CONNECT, ResponseAction::DenyConnect),
                ] {
                    if bits & bit != 0 {
                        requests.push(Request {
                            action,
                            target: Target::Session(session),
                            requester: Requester::Config,
                            requested_by: by.clone(),
                            reason: String::new(),
                        });
                    }
                }
            }
        }
        self.restoring = true;
        for request in requests {
            let event = self.handle(&request);
            self.startup.push(event);
        }
        self.restoring = false;
        self.save();
        self
    }

    pub fn mechanisms(&self) -> &crate::kernel::respond::Mechanisms {
        &self.kernel.mechanisms
    }

    /// The thread's body: requests until the queue closes, a tick between them.
    pub fn run(
        mut self,
        jobs: std::sync::mpsc::Receiver<Job>,
        out: crate::pipeline::batch::Sender,
        webhooks: crate::detect::webhook::Webhooks,
    ) {
        let publish = |event: Event| {
            webhooks.offer_response(&event);
            if out.blocking_send(vec![event]).is_err() {
                tracing::error!("the sink stopped: a response is not in the trail");
            }
        };
        for event in std::mem::take(&mut self.startup) {
            publish(event);
        }
        let mut last_tick = Instant::now();
        loop {
            match jobs.recv_timeout(TICK) {
                Ok(job) => {
                    let event = self.handle(&job.request);
                    if let (Some(reply), EventBody::Response(r)) = (job.reply, &event.body) {
                        let _ = reply.send(r.clone());
                    }
                    publish(event);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= TICK {
                self.tick();
                last_tick = Instant::now();
            }
        }
    }

    /// Carries out one request (or says why not) as its `response` event.
    pub fn handle(&mut self, request: &Request) -> Event {
        // A copy of denied content found at its exec: asked for by whoever denied the content.
        let mut request = request.clone();
        if let Target::Exe(ExeTarget {
            sha256: Some(h),
            running_pid: Some(_),
            ..
        }) = &request.target
        {
            if let Some(d) = self.denied_hashes.get(h) {
                request.requester = d.requester;
                request.reason = format!("{}; denied by {}", request.reason, d.requested_by);
            }
        }
        let request = &request;
        self.next_id += 1;
        let action_id = format!(
            "{:x}-{}-{}",
            crate::decode::Clock::now().wall_ns(crate::decode::Clock::mono_now_ns()),
            self.own_pid,
            self.next_id
        );
        let mut process = Process::default();
        let target = self.describe(&request.target, &mut process);
        let o = match request.check_shape() {
            Err(e) => Outcome::new(ResponseOutcome::Failed, e.to_string()),
            Ok(()) => self.carry_out(request, &mut process),
        };
        if o.outcome == ResponseOutcome::Done {
            self.save();
        }
        metrics::counter!("vigil_responses_total", "action" => request.action.as_str(), "outcome" => o.outcome.as_str()).increment(1);
        tracing::warn!(action = %request.action, %target, requester = %request.requester, requested_by = %request.requested_by, outcome = %o.outcome, detail = %o.detail, "response");
        crate::decode::daemon_event(
            process,
            EventBody::Response(ResponseEvent {
                action_id,
                action: request.action,
                target,
                requester: request.requester,
                requested_by: request.requested_by.clone(),
                reason: request.reason.clone(),
                outcome: o.outcome,
                detail: o.detail,
                processes: o.processes,
                mechanism: o.mechanism,
            }),
        )
    }

    /// How the target is named in the trail; fills in the session the event belongs to.
    fn describe(&mut self, target: &Target, process: &mut Process) -> String {
        match target {
            Target::Process(pid) => {
                process.pid = *pid;
                if let Some((session, login)) = self.kernel.session_of(*pid) {
                    process.sessionid = Some(session);
                    process.loginuid = Some(login);
                }
                format!("pid {pid}")
            }
            Target::Session(sid) => {
                process.sessionid = Some(*sid);
                process.loginuid = self.kernel.sessions().get(sid).copied();
                self.users.refresh();
                process.login_user = process.loginuid.and_then(|u| self.users.name(u));
                let origin = crate::event::Origin::this_process();
                format!(
                    "session {}",
                    crate::event::SessionKey {
                        host: origin.host.clone(),
                        boot_id: origin.boot_id.clone(),
                        session: *sid,
                    }
                )
            }
            Target::Account(who) => format!("user {who}"),
            Target::Exe(e) => {
                if let Some(pid) = e.running_pid {
                    if let Some((session, login)) = self.kernel.session_of(pid) {
                        process.pid = pid;
                        process.sessionid = Some(session);
                        process.loginuid = Some(login);
                    }
                }
                match (&e.path, &e.sha256, &e.file) {
                    (Some(p), _, _) => format!("exe {}", p.display()),
                    (None, Some(h), Some((dev, ino))) => {
                        format!("exe sha256 {h} (file {dev} ino {ino})")
                    }
                    (None, Some(h), None) => format!("exe sha256 {h}"),
                    (None, None, Some((dev, ino))) => format!("exe file {dev} ino {ino}"),
                    (None, None, None) => "exe (nothing named)".into(),
                }
            }
        }
    }

    fn dry(&self) -> bool {
        self.config.mode == RespondMode::DryRun
    }

    fn carry_out(&mut self, request: &Request, process: &mut Process) -> Outcome {
        use ResponseAction as A;
        if request.automatic() {
            let now = Instant::now();
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= self.config.max_actions_per_minute as usize {
                return Outcome::new(
                    ResponseOutcome::RateLimited,
                    format!(
                        "{} automatic responses in the last minute (respond.max_actions_per_minute)",
                        self.recent.len()
                    ),
                );
            }
            if !self.dry() {
                self.recent.push_back(now);
            }
        }
        match (&request.target, request.action) {
            (Target::Process(pid), A::KillProcess) => self.kill_process(*pid),
            (Target::Session(sid), action) => self.session_action(*sid, action, process),
            (Target::Account(who), action) => self.account_action(who, action, request),
            (Target::Exe(e), action) => self.exe_action(e, action, request),
            _ => Outcome::new(ResponseOutcome::Failed, "unreachable: shape checked"),
        }
    }

    /// Whether a process is one no response touches, and why.
    fn protected_process(&self, pid: u32) -> Option<String> {
        if pid == self.own_pid || pid == 1 {
            return Some(format!(
                "pid {pid} is {}",
                if pid == 1 { "init" } else { "the daemon" }
            ));
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        match exe_key_of(&exe) {
            Ok(key) if self.protected_exes.contains(&key) => Some(format!(
                "pid {pid} runs a protected program ({})",
                std::fs::read_link(&exe)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            _ => None,
        }
    }

    fn protected_account(&mut self, uid: u32) -> Option<String> {
        let name = self.users.name(uid);
        if name
            .as_deref()
            .is_some_and(|n| self.config.protected_accounts.iter().any(|p| p == n))
        {
            return Some(format!(
                "{} is a protected account (respond.protected_accounts)",
                name.unwrap_or_default()
            ));
        }
        None
    }

    fn kill_process(&mut self, pid: u32) -> Outcome {
        if let Some(why) = self.protected_process(pid) {
            return Outcome::new(ResponseOutcome::Protected, why);
        }
        if let Some(uid) = self.kernel.session_of(pid).map(|(_, login)| login) {
            if let Some(why) = self.protected_account(uid) {
                return Outcome::new(ResponseOutcome::Protected, why);
            }
        }
        let fd = match pidfd(pid) {
            Ok(fd) => fd,
            Err(e) => {
                return Outcome::new(ResponseOutcome::NotFound, format!("pid {pid}: {e}"));
            }
        };
        if self.dry() {
            let mut o = Outcome::new(ResponseOutcome::DryRun, format!("would kill pid {pid}"));
            o.processes = 1;
            return o;
        }
        let mut o = match pidfd_signal(&fd, libc::SIGKILL) {
            Ok(()) => Outcome::new(ResponseOutcome::Done, format!("killed pid {pid}")),
            Err(e) => Outcome::new(ResponseOutcome::Failed, format!("kill {pid}: {e}")),
        };
        o.processes = 1;
        o.mechanism = Some(Mechanism::Signal);
        o
    }

    /// Signals every unprotected process of `session` with `signal`, until none is left (for
    /// SIGKILL) or once each (others). Returns the pids signalled and those spared.
    fn signal_session(&mut self, session: u32, signal: i32) -> (BTreeSet<u32>, BTreeSet<u32>) {
        let mut hit = BTreeSet::new();
        let mut spared = BTreeSet::new();
        let rounds = if signal == libc::SIGKILL { 200 } else { 2 };
        for _ in 0..rounds {
            let mut fresh = false;
            let members = self.kernel.members(session);
            if members.iter().all(|p| spared.contains(p)) {
                break;
            }
            for pid in members {
                if spared.contains(&pid) || (signal != libc::SIGKILL && hit.contains(&pid)) {
                    continue;
                }
                if self.protected_process(pid).is_some() {
                    spared.insert(pid);
                    continue;
                }
                let Ok(fd) = pidfd(pid) else { continue };
                // With the pidfd held the pid cannot be reused: is it still of the session?
                if self.kernel.session_of(pid).map(|(s, _)| s) != Some(session) {
                    continue;
                }
                if pidfd_signal(&fd, signal).is_ok() {
                    fresh |= hit.insert(pid) || signal == libc::SIGKILL;
                }
            }
            if !fresh {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (hit, spared)
    }

    fn session_action(
        &mut self,
        session: u32,
        action: ResponseAction,
        process: &mut Process,
    ) -> Outcome {
        use ResponseAction as A;
        let members = self.kernel.members(session);
        let known = self.kernel.verdict(session) != 0 || !members.is_empty();
        if !known {
            return Outcome::new(
                ResponseOutcome::NotFound,
                format!("no process of session {session} is running on this host now"),
            );
        }
        if action.restricts() {
            if let Some(why) = process.loginuid.and_then(|u| self.protected_account(u)) {
                return Outcome::new(ResponseOutcome::Protected, why);
            }
        }
        if action == A::DenyConnect && !self.kernel.can_deny_connect() {
            return Outcome::new(
                ResponseOutcome::Unsupported,
                format!(
                    "this host cannot refuse connections: {}",
                    self.kernel.mechanisms.notes.join("; ")
                ),
            );
        }
        let spared: Vec<u32> = members
            .iter()
            .copied()
            .filter(|p| self.protected_process(*p).is_some())
            .collect();
        let spared_note = if spared.is_empty() {
            String::new()
        } else {
            format!(
                "; spared {} protected ({})",
                spared.len(),
                spared
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let (add, clear, signal, verb) = match action {
            A::KillSession => (verdict::KILL, verdict::HOLD, libc::SIGKILL, "killed"),
            A::HoldSession => (verdict::HOLD, 0, libc::SIGSTOP, "stopped"),
            A::ReleaseSession => (0, verdict::HOLD, libc::SIGCONT, "continued"),
            A::DenyConnect => (verdict::DENY_CONNECT, 0, 0, ""),
            A::AllowConnect => (0, verdict::DENY_CONNECT, 0, ""),
            _ => return Outcome::new(ResponseOutcome::Failed, "not a session action"),
        };
        let targets = members.len() - spared.len();
        if self.dry() {
            let what = match action {
                A::DenyConnect => "would refuse the session's outbound connections".to_string(),
                A::AllowConnect => "would allow the session's connections again".to_string(),
                _ => format!(
                    "would have {verb} {targets} process(es) of session {session}{spared_note}"
                ),
            };
            let mut o = Outcome::new(ResponseOutcome::DryRun, what);
            o.processes = if signal == 0 { 0 } else { targets as u32 };
            return o;
        }
        if action == A::ReleaseSession && self.kernel.verdict(session) & verdict::HOLD == 0 {
            return Outcome::new(
                ResponseOutcome::NotFound,
                format!("session {session} is not held"),
            );
        }
        if let Err(e) = self.kernel.set_verdict(session, add, clear) {
            return Outcome::new(ResponseOutcome::Failed, e.to_string());
        }
        if action == A::KillSession {
            self.killed.insert(session, Instant::now());
        }
        let mut o = if signal == 0 {
            let mut o = Outcome::new(
                ResponseOutcome::Done,
                if action == A::DenyConnect {
                    format!("outbound connections of session {session} are refused")
                } else {
                    format!("outbound connections of session {session} are allowed again")
                },
            );
            o.mechanism = Some(self.kernel.mechanisms.deny_connect);
            o
        } else {
            let (hit, _) = self.signal_session(session, signal);
            let mut o = Outcome::new(
                ResponseOutcome::Done,
                format!(
                    "{verb} {} process(es) of session {session}{spared_note}",
                    hit.len()
                ),
            );
            o.processes = hit.len() as u32;
            o.mechanism = Some(self.kernel.mechanisms.session);
            o
        };
        if o.outcome == ResponseOutcome::Done && action == A::KillSession {
            o.detail
                .push_str("; new processes of it are killed at their first call");
        }
        o
    }

    /// An account by name or uid: (uid, name).
    fn account(&mut self, who: &str) -> Option<(u32, String)> {
        if let Ok(uid) = who.parse::<u32>() {
            return self.users.name(uid).map(|n| (uid, n.to_string()));
        }
        match &self.host_etc {
            Some(etc) => std::fs::read_to_string(etc.join("passwd"))
                .ok()?
                .lines()
                .find_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let _ = f.next()?;
                    let uid = f.next()?.parse().ok()?;
                    (name == who).then(|| (uid, name.to_string()))
                }),
            None => nix::unistd::User::from_name(who)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.name)),
        }
    }

    fn account_action(&mut self, who: &str, action: ResponseAction, request: &Request) -> Outcome {
        let Some((uid, name)) = self.account(who) else {
            return Outcome::new(
                ResponseOutcome::NotFound,
                format!("no account `{}` on this host", who.escape_debug()),
            );
        };
        if let Some(why) = self.protected_account(uid) {
            return Outcome::new(ResponseOutcome::Protected, why);
        }
        if uid < self.config.min_lockable_uid || uid == 0 {
            return Outcome::new(
                ResponseOutcome::Protected,
                format!(
                    "{name} (uid {uid}) is a system account (below respond.min_lockable_uid {})",
                    self.config.min_lockable_uid
                ),
            );
        }
        let sessions: Vec<u32> = self
            .kernel
            .sessions()
            .into_iter()
            .filter(|(_, login)| *login == uid)
            .map(|(s, _)| s)
            .collect();
        let lock = action == ResponseAction::LockAccount;
        if self.dry() {
            let mut o = Outcome::new(
                ResponseOutcome::DryRun,
                if lock {
                    format!(
                        "would lock and expire {name} (uid {uid}) and kill its {} session(s)",
                        sessions.len()
                    )
                } else {
                    format!("would unlock {name} (uid {uid})")
                },
            );
            o.mechanism = Some(Mechanism::Usermod);
            return o;
        }
        let mut usermod = std::process::Command::new("usermod");
        if self.host_root != Path::new("/") {
            usermod.arg("--prefix").arg(&self.host_root);
        }
        if lock {
            usermod.args(["--lock", "--expiredate", "1"]);
        } else {
            usermod.args(["--unlock", "--expiredate", ""]);
        }
        usermod.arg("--").arg(&name);
        let result = usermod.output();
        let failure = match result {
            Err(e) => Some(format!("cannot run usermod: {e}")),
            Ok(out) if !out.status.success() => Some(format!(
                "usermod {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => None,
        };
        if let Some(why) = failure {
            return Outcome::new(ResponseOutcome::Failed, why);
        }
        let mut killed = 0;
        if lock {
            for s in &sessions {
                let sub = Request {
                    action: ResponseAction::KillSession,
                    target: Target::Session(*s),
                    requester: request.requester,
                    requested_by: request.requested_by.clone(),
                    reason: format!("lock_account {name}"),
                };
                let mut p = Process {
                    loginuid: Some(uid),
                    ..Default::default()
                };
                killed += self.session_action(*s, sub.action, &mut p).processes;
            }
        }
        let mut o = Outcome::new(
            ResponseOutcome::Done,
            if lock {
                format!(
                    "locked and expired {name} (uid {uid}); killed {killed} process(es) in {} session(s)",
                    sessions.len()
                )
            } else {
                format!("unlocked {name} (uid {uid}), expiry removed")
            },
        );
        o.processes = killed;
        o.mechanism = Some(Mechanism::Usermod);
        o
    }

    fn exe_action(&mut self, e: &ExeTarget, action: ResponseAction, request: &Request) -> Outcome {
        let deny = action == ResponseAction::DenyExec;
        let mut keys = Vec::new();
        let mut named = Vec::new();
        if let Some(path) = &e.path {
            match exe_key_of(&under_root(&self.host_root, path)) {
                Ok(k) => {
                    keys.push(k);
                    named.push(format!("{} (dev {} ino {})", path.display(), k.dev, k.ino));
                }
                Err(err) => {
                    return Outcome::new(
                        ResponseOutcome::NotFound,
                        format!("{}: {err}", path.display()),
                    )
                }
            }
        }
        if let Some((dev, ino)) = &e.file {
            if let Some(dev) = parse_dev(dev) {
                keys.push(ExeKey {
                    ino: *ino,
                    dev,
                    _pad: 0,
                });
                named.push(format!("file dev {dev} ino {ino}"));
            }
        }
        if let Some(h) = &e.sha256 {
            if !super::is_sha256(h) {
                return Outcome::new(ResponseOutcome::Failed, format!("`{h}` is not a SHA-256"));
            }
        }
        if keys.is_empty() && e.sha256.is_none() {
            return Outcome::new(ResponseOutcome::Failed, "name a path or a sha256");
        }
        if deny {
            if let Some(k) = keys.iter().find(|k| self.protected_exes.contains(k)) {
                return Outcome::new(
                    ResponseOutcome::Protected,
                    format!("dev {} ino {} is a protected program", k.dev, k.ino),
                );
            }
        }
        if self.dry() {
            return Outcome::new(
                ResponseOutcome::DryRun,
                format!(
                    "would {} {}{}",
                    if deny { "deny" } else { "allow" },
                    named.join(", "),
                    e.sha256
                        .as_ref()
                        .map(|h| format!(" content sha256 {h}"))
                        .unwrap_or_default()
                ),
            );
        }
        for k in &keys {
            let r = if deny {
                self.kernel.deny_exe(*k)
            } else {
                self.kernel.allow_exe(k).map(|_| ())
            };
            if let Err(err) = r {
                return Outcome::new(ResponseOutcome::Failed, err.to_string());
            }
        }
        if let Some(file) = &e.file {
            if deny {
                self.denied_files.insert(file.clone());
            } else {
                self.denied_files.remove(file);
            }
        }
        if let Some(path) = &e.path {
            if deny {
                if !self.denied_paths.iter().any(|(p, _)| p == path) {
                    self.denied_paths
                        .push((path.clone(), keys.first().copied()));
                }
            } else {
                self.denied_paths.retain(|(p, _)| p != path);
            }
        }
        if let Some(h) = &e.sha256 {
            let h = h.to_ascii_lowercase();
            if deny {
                self.denied_hashes.insert(
                    h,
                    DeniedHash {
                        requester: request.requester,
                        requested_by: request.requested_by.clone(),
                    },
                );
            } else {
                self.denied_hashes.remove(&h);
            }
            let set: BTreeSet<String> = self.denied_hashes.keys().cloned().collect();
            let _ = self.hashes_tx.send(Arc::new(set));
        }
        let mut killed = 0;
        if let (true, Some(pid)) = (deny, e.running_pid) {
            if self.kill_process(pid).outcome == ResponseOutcome::Done {
                killed = 1;
            }
        }
        let mut o = Outcome::new(
            ResponseOutcome::Done,
            format!(
                "{} {}{}{}",
                if deny { "denied" } else { "allowed" },
                named.join(", "),
                e.sha256
                    .as_ref()
                    .map(|h| format!(" content sha256 {h}"))
                    .unwrap_or_default(),
                if killed > 0 {
                    format!("; killed the running pid {}", e.running_pid.unwrap_or(0))
                } else {
                    String::new()
                }
            ),
        );
        o.processes = killed;
        o.mechanism = Some(self.kernel.mechanisms.deny_exec);
        o
    }

    /// Holds re-asserted, killed sessions swept (their verdict lifted once empty a while),
    /// denied paths looked up again (a file put in a denied path's place is denied too).
    fn tick(&mut self) {
        for (session, bits) in self.kernel.verdicts() {
            if bits & verdict::KILL != 0 {
                let (hit, _) = self.signal_session(session, libc::SIGKILL);
                if !hit.is_empty() {
                    self.killed.insert(session, Instant::now());
                }
                let quiet = self
                    .killed
                    .get(&session)
                    .is_none_or(|t| t.elapsed() > KILL_LINGER);
                if quiet && self.kernel.members(session).is_empty() {
                    let _ = self.kernel.set_verdict(session, 0, u32::MAX);
                    self.killed.remove(&session);
                    self.save();
                }
            } else if bits & verdict::HOLD != 0 {
                self.signal_session(session, libc::SIGSTOP);
            }
        }
        for i in 0..self.denied_paths.len() {
            let path = self.denied_paths[i].0.clone();
            if let Ok(key) = exe_key_of(&under_root(&self.host_root, &path)) {
                if Some(key) != self.denied_paths[i].1 && !self.protected_exes.contains(&key) {
                    if let Err(e) = self.kernel.deny_exe(key) {
                        tracing::error!(path = %path.display(), "cannot deny the new file: {e}");
                    }
                    self.denied_paths[i].1 = Some(key);
                }
            }
        }
    }
}

/// `path` as seen from the host root the daemon was given.
fn under_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// `major:minor` to the kernel's encoding.
fn parse_dev(dev: &str) -> Option<u32> {
    let (major, minor) = dev.split_once(':')?;
    Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
}

/// The request an exec of denied content makes: deny that very file from now on and kill the
/// process running it (it got past the kernel because this file was not known to be denied).
pub fn denied_content(event: &Event, denied: &BTreeSet<String>) -> Option<Request> {
    let EventBody::Exec(x) = &event.body else {
        return None;
    };
    let exe = x.exe.as_ref()?;
    let h = exe.sha256.as_ref()?;
    if !denied.contains(h) {
        return None;
    }
    Some(Request {
        action: ResponseAction::DenyExec,
        target: Target::Exe(ExeTarget {
            path: None,
            sha256: Some(h.clone()),
            file: Some((exe.file.dev.clone(), exe.file.ino)),
            running_pid: Some(event.process.pid),
        }),
        requester: Requester::Config,
        requested_by: format!("denied content sha256 {h}"),
        reason: format!("{} runs denied content", exe.file.path.lossy()),
    })
}
