//! Responses on the real kernel, in real sessions: a denied program dies at exec before writing
//! anything (by path, through a link, and a copy by its content), a denied session's connect
//! gets EPERM and is recorded (and still does after root detaches the connect hooks), a held session stops and resumes and dies on kill, a rule's
//! `kill_session` ends the session that tripped it, a locked account's next SSH login is refused
//! by the real sshd and unlocking lets it in. Dry-run changes nothing; protected accounts and
//! programs are never touched; every response is in the trail with who asked.

use std::{
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{ensure_user, of_type, require_root, run_ok, vigil_bin, Daemon, USER};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn respond_yaml(dir: &Path, mode: &str, more: &str) -> String {
    format!(
        "respond:\n  mode: {mode}\n  control_socket: {}\n{more}",
        dir.join("control.sock").display()
    )
}

/// `vigil respond ARGS` against the daemon's socket: (succeeded, the answer as JSON).
fn respond(socket_dir: &Path, args: &[&str]) -> (bool, Value) {
    let out = Command::new(vigil_bin())
        .arg("respond")
        .args(args)
        .arg("--json")
        .arg("--socket")
        .arg(socket_dir.join("control.sock"))
        .output()
        .expect("vigil respond runs");
    let answer = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stderr).into_owned()));
    (out.status.success(), answer)
}

/// Runs `script` in a new login session of `uid` and waits: its status, a signal included.
fn run_session(uid: u32, script: &str) -> std::process::ExitStatus {
    Command::new(HELPER)
        .args(["login", &uid.to_string(), "--", "/bin/bash", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("helper runs")
}

/// A login session running `script` in the background.
struct LiveSession {
    child: Child,
    id: u32,
}

impl LiveSession {
    fn start(uid: u32, script: &str) -> LiveSession {
        let child = Command::new(HELPER)
            .args(["login", &uid.to_string(), "--", "/bin/bash", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("helper starts");
        let path = format!("/proc/{}/sessionid", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let id: u32 = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u32::MAX);
            if id != u32::MAX {
                break id;
            }
            assert!(Instant::now() < deadline, "the session did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The kernel has it in scope from its first followed call.
        std::thread::sleep(Duration::from_millis(300));
        LiveSession { child, id }
    }

    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn responses(events: &[Value]) -> Vec<&Value> {
    of_type(events, "response")
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The state letter of a process (`T` stopped, `S` sleeping …).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn a_denied_program_dies_at_exec_by_path_link_and_content() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&respond_yaml(dir.path(), "enforce", "")).expect("daemon starts");
    let prog = dir.path().join("mytouch");
    std::fs::copy("/usr/bin/touch", &prog).unwrap();
    let link = dir.path().join("innocent-name");
    std::os::unix::fs::symlink(&prog, &link).unwrap();
    let hard = dir.path().join("hard-link");
    std::fs::hard_link(&prog, &hard).unwrap();

    let (ok, answer) = respond(dir.path(), &["deny-exec", "--path", prog.to_str().unwrap()]);
    assert!(ok, "{answer}");
    assert_eq!(answer["response"]["outcome"], "done", "{answer}");
    assert_eq!(answer["response"]["requester"], "operator");

    // By its path, a symlink, a hard link: the same file, killed before it writes anything.
    for (i, via) in [&prog, &link, &hard].iter().enumerate() {
        let out = dir.path().join(format!("out-{i}"));
        let status = run_session(61000, &format!("exec {} {}", via.display(), out.display()));
        assert_eq!(status.signal(), Some(9), "{} was not killed", via.display());
        assert!(!out.exists(), "{} wrote its output", via.display());
    }
    // Loaded by the dynamic loader without an exec of its own: killed as the loader opens it.
    let out = dir.path().join("out-ld");
    let status = run_session(
        61000,
        &format!(
            "exec /lib64/ld-linux-x86-64.so.2 {} {}",
            prog.display(),
            out.display()
        ),
    );
    assert_eq!(status.signal(), Some(9), "ld.so ran the denied program");
    assert!(!out.exists(), "ld.so ran the denied program");
    // Outside any session too: a denied program is denied to everyone.
    let out = dir.path().join("out-outside");
    let status = Command::new(&prog).arg(&out).status().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(!out.exists());
    // An ordinary program still runs.
    let fine = dir.path().join("fine");
    let status = run_session(61000, &format!("touch {}", fine.display()));
    assert!(status.success() && fine.exists());

    // A copy is another file: denied by its content. Its first run is killed by the daemon once
    // the exec is hashed; from then on that file dies at exec in the kernel.
    let sleeper = dir.path().join("mysleep");
    std::fs::copy("/usr/bin/sleep", &sleeper).unwrap();
    let sha = {
        let out = run_ok(Command::new("sha256sum").arg(&sleeper));
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let (ok, answer) = respond(dir.path(), &["deny-exec", "--sha256", &sha]);
    assert!(ok, "{answer}");
    let copy = dir.path().join("renamed-copy");
    std::fs::copy(&sleeper, &copy).unwrap();
    let started = Instant::now();
    let status = run_session(61000, &format!("exec {} 20", copy.display()));
    assert_eq!(status.signal(), Some(9), "the copy ran on");
    assert!(started.elapsed() < Duration::from_secs(10));
    let started = Instant::now();
    let status = run_session(61000, &format!("exec {} 20", copy.display()));
    assert_eq!(status.signal(), Some(9));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Lifted: it runs again.
    let (ok, _) = respond(
        dir.path(),
        &["allow-exec", "--path", prog.to_str().unwrap()],
    );
    assert!(ok);
    let out = dir.path().join("out-allowed");
    let status = run_session(61000, &format!("{} {}", prog.display(), out.display()));
    assert!(status.success() && out.exists());

    // Protected programs are never denied.
    let (ok, answer) = respond(dir.path(), &["deny-exec", "--path", "/usr/sbin/sshd"]);
    assert!(!ok);
    assert_eq!(answer["response"]["outcome"], "protected", "{answer}");

    let events = daemon.stop().unwrap();
    let r = responses(&events);
    assert!(r.iter().any(|e| e["action"] == "deny_exec"
        && e["requester"] == "operator"
        && e["requested_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("uid 0 (root)")));
    // The copy's first run: the daemon found the content and denied that file too.
    assert!(
        r.iter().any(|e| e["action"] == "deny_exec"
            && e["target"].as_str().unwrap_or("").contains(&sha)
            && e["processes"] == 1),
        "{r:#?}"
    );
    // The kernel counted the execs it refused.
    let exits = of_type(&events, "exit");
    assert!(exits.iter().any(|e| e["signal"] == 9));
}

#[test]
fn a_session_denied_the_network_gets_eperm_and_the_attempt_is_recorded() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&respond_yaml(dir.path(), "enforce", "")).expect("daemon starts");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let go = dir.path().join("go");
    let result = dir.path().join("result");
    // A datagram to an address, with no connect(2), is refused all the same.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let sent = dir.path().join("sent");
    let mut session = LiveSession::start(
        61001,
        &format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; {HELPER} connect 127.0.0.1:{port} 2> {err}; echo $? > {result}; \
             {HELPER} datagrams 127.0.0.1:{udp_port} > {sent}",
            go = go.display(),
            err = dir.path().join("err").display(),
            result = result.display(),
            sent = sent.display()
        ),
    );
    let (ok, answer) = respond(dir.path(), &["deny-connect", &session.id.to_string()]);
    assert!(ok, "{answer}");
    assert_eq!(answer["response"]["mechanism"], "cgroup_connect");
    std::fs::write(&go, "").unwrap();
    assert!(session.wait(Duration::from_secs(10)).is_some());
    assert_eq!(std::fs::read_to_string(&result).unwrap().trim(), "1");
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(std::fs::read_to_string(&sent).unwrap().trim(), "EPERM");
    udp.set_nonblocking(true).unwrap();
    assert!(
        udp.recv(&mut [0u8; 8]).is_err(),
        "the denied session's datagram arrived"
    );
    // Someone outside the session still connects.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    // Allowed again: the same session connects.
    let mut again = LiveSession::start(
        61001,
        &format!("sleep 0.5; {HELPER} connect 127.0.0.1:{port}"),
    );
    let (ok, _) = respond(dir.path(), &["deny-connect", &again.id.to_string()]);
    assert!(ok);
    let (ok, _) = respond(dir.path(), &["allow-connect", &again.id.to_string()]);
    assert!(ok);
    let status = again.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");

    let events = daemon.stop().unwrap();
    let refused: Vec<_> = of_type(&events, "connect")
        .into_iter()
        .filter(|c| c["process"]["sessionid"] == session.id && c["port"] == port)
        .collect();
    assert!(
        refused.iter().any(|c| c["result"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("EPERM")),
        "the refused attempt is recorded: {refused:#?}"
    );
    let datagrams: Vec<_> = of_type(&events, "connect")
        .into_iter()
        .filter(|c| c["process"]["sessionid"] == session.id && c["port"] == udp_port)
        .collect();
    assert!(
        matches!(&datagrams[..], [d] if d["datagram"] == true
            && d["result"]["error"].as_str().unwrap_or("").contains("EPERM")),
        "the refused datagram is recorded once: {datagrams:#?}"
    );
    assert!(responses(&events)
        .iter()
        .any(|r| r["action"] == "deny_connect" && r["process"]["sessionid"] == session.id));
}

/// Detaches the daemon's cgroup links of `program` as root could (`bpftool link detach id N`):
/// the ids of the links detached. By hand (`BPF_LINK_GET_FD_BY_ID`, then `BPF_LINK_DETACH`,
/// numbered as in include/uapi/linux/bpf.h): aya detaches only links it made itself.
fn detach_links_of(program: &str) -> Vec<u32> {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let bpf = |cmd: libc::c_long, first: u32| {
        // Both commands read one u32 at the start of `union bpf_attr`.
        let mut attr = [0u8; 64];
        attr[..4].copy_from_slice(&first.to_ne_bytes());
        // SAFETY: bpf(2) reads `attr.len()` bytes of `attr`, which lives across the call.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len()) }
    };
    let programs: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(program))
        .map(|p| p.id())
        .collect();
    let mut detached = Vec::new();
    for link in aya::programs::loaded_links().filter_map(Result::ok) {
        if !matches!(link.link_type(), Ok(aya::programs::links::LinkType::Cgroup))
            || !programs.contains(&link.program_id())
        {
            continue;
        }
        let fd = bpf(BPF_LINK_GET_FD_BY_ID, link.id());
        assert!(
            fd >= 0,
            "link {}: {}",
            link.id(),
            std::io::Error::last_os_error()
        );
        let detach = bpf(BPF_LINK_DETACH, fd as u32);
        let why = std::io::Error::last_os_error();
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd as i32) };
        assert_eq!(detach, 0, "link {}: {why}", link.id());
        detached.push(link.id());
    }
    detached
}

/// Root detaching the connect hooks, twice, to let a denied session out: each time the daemon
/// reports it (a critical alert naming the link) and attaches the hook again, so the session
/// is still refused.
#[test]
fn detached_connect_hooks_are_reported_and_attached_again() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&respond_yaml(dir.path(), "enforce", "")).expect("daemon starts");
    let mut detached = Vec::new();
    for _ in 0..2 {
        let now: Vec<u32> = [
            "vigil_connect4",
            "vigil_connect6",
            "vigil_sendmsg4",
            "vigil_sendmsg6",
        ]
        .iter()
        .flat_map(|p| detach_links_of(p))
        .collect();
        assert_eq!(now.len(), 4, "one link per cgroup hook: {now:?}");
        detached.extend(now);
        // The daemon checks every 2 s.
        std::thread::sleep(Duration::from_secs(3));
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let go = dir.path().join("go");
    let result = dir.path().join("result");
    let mut session = LiveSession::start(
        61003,
        &format!(
            "while [ ! -e {go} ]; do sleep 0.05; done; {HELPER} connect 127.0.0.1:{port} 2>/dev/null; echo $? > {result}",
            go = go.display(),
            result = result.display()
        ),
    );
    let (ok, answer) = respond(dir.path(), &["deny-connect", &session.id.to_string()]);
    assert!(ok, "{answer}");
    std::fs::write(&go, "").unwrap();
    assert!(session.wait(Duration::from_secs(10)).is_some());
    assert_eq!(
        std::fs::read_to_string(&result).unwrap().trim(),
        "1",
        "the session's connect is refused with the hooks attached again"
    );

    let events = daemon.stop().unwrap();
    let reports: Vec<String> = of_type(&events, "tamper")
        .iter()
        .filter(|t| t["check"] == "hook_detached")
        .map(|t| t["detail"].as_str().unwrap_or("").to_string())
        .collect();
    for id in &detached {
        assert!(
            reports
                .iter()
                .any(|r| r.starts_with(&format!("link {id} ")) && r.ends_with("attached again")),
            "link {id} not reported: {reports:?}"
        );
    }
    assert!(of_type(&events, "alert")
        .iter()
        .any(|a| a["rule"] == "monitor-tampered"
            && a["severity"] == "critical"
            && a["evidence"].as_str().unwrap_or("").contains("detached")));
}

#[test]
fn a_held_session_stops_resumes_on_release_and_dies_on_kill() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&respond_yaml(dir.path(), "enforce", "")).expect("daemon starts");
    let ticks = dir.path().join("ticks");
    // A child that leaves the session's audit ids behind is still held and killed with it.
    let mut session = LiveSession::start(
        61002,
        &format!(
            "(echo 4294967295 > /proc/self/loginuid 2>/dev/null; while true; do echo x >> {t}.leaver; sleep 0.05; done) & \
             while true; do echo x >> {t}; sleep 0.05; done",
            t = ticks.display()
        ),
    );
    let leaver = PathBuf::from(format!("{}.leaver", ticks.display()));
    std::thread::sleep(Duration::from_millis(300));
    let (ok, answer) = respond(
        dir.path(),
        &["hold", &session.id.to_string(), "--reason", "review"],
    );
    assert!(ok, "{answer}");
    assert!(
        answer["response"]["processes"].as_u64().unwrap() >= 2,
        "{answer}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (a, b) = (file_len(&ticks), file_len(&leaver));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(file_len(&ticks), a, "the held session went on");
    assert_eq!(
        file_len(&leaver),
        b,
        "the process that left the session went on"
    );
    assert_eq!(state(session.child.id()), Some('T'));
    // Someone continues all of it by hand (the process group the session's shell leads): the
    // kernel stops each again at its next call.
    run_ok(Command::new("kill").args(["-CONT", "--", &format!("-{}", session.child.id())]));
    std::thread::sleep(Duration::from_millis(700));
    let a2 = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        file_len(&ticks),
        a2,
        "continued by hand, it was not stopped again"
    );

    let (ok, _) = respond(dir.path(), &["release", &session.id.to_string()]);
    assert!(ok);
    std::thread::sleep(Duration::from_millis(600));
    assert!(file_len(&ticks) > a2, "released, it did not resume");

    let (ok, answer) = respond(dir.path(), &["kill-session", &session.id.to_string()]);
    assert!(ok, "{answer}");
    let status = session.wait(Duration::from_secs(5)).expect("killed");
    assert_eq!(status.signal(), Some(9));
    std::thread::sleep(Duration::from_millis(300));
    let b2 = file_len(&leaver);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(file_len(&leaver), b2, "the leaver survived the kill");

    // One process alone: kill-process ends it and not its session.
    let mut one = LiveSession::start(61002, "sleep 30 & wait $!");
    std::thread::sleep(Duration::from_millis(300));
    let sleeper = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        one.child.id(),
        one.child.id()
    ))
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .to_string();
    let (ok, answer) = respond(dir.path(), &["kill-process", &sleeper]);
    assert!(ok, "{answer}");
    assert_eq!(answer["response"]["outcome"], "done");
    let status = one
        .wait(Duration::from_secs(5))
        .expect("the shell ends once its child is killed");
    // The shell was not killed: it saw its child die (128 + 9) and exited itself.
    assert_eq!(status.code(), Some(137), "{status}");
    let (ok, answer) = respond(dir.path(), &["kill-process", "1"]);
    assert!(!ok);
    assert_eq!(answer["response"]["outcome"], "protected", "{answer}");

    // Unknown sessions and other hosts are refused clearly.
    let (ok, answer) = respond(dir.path(), &["kill-session", "999999"]);
    assert!(!ok);
    assert_eq!(answer["response"]["outcome"], "not_found", "{answer}");
    let (ok, answer) = respond(dir.path(), &["kill-session", "other-host/abcd/3"]);
    assert!(!ok);
    assert!(
        answer
            .as_str()
            .unwrap_or("")
            .contains("is on host other-host"),
        "{answer}"
    );

    let events = daemon.stop().unwrap();
    let r = responses(&events);
    let actions: Vec<_> = r
        .iter()
        .filter(|e| e["process"]["sessionid"] == session.id)
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("hold_session", "done"),
            ("release_session", "done"),
            ("kill_session", "done")
        ]
    );
    assert!(r.iter().any(|e| e["reason"] == "review"));
}

#[test]
fn a_rule_kills_the_session_that_tripped_it_and_dry_run_changes_nothing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (canary, rules) = canary_rule(dir.path(), 40);
    let receiver = vigil_e2e::WebhookReceiver::start(dir.path(), "r-secret", 0).expect("receiver");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "r-secret").unwrap();
    let detection = format!(
        "detection:\n  rules_files: [{}]\nalerts:\n  webhooks:\n    - url: http://127.0.0.1:{}/r\n      secret_file: {}\n",
        rules.display(),
        receiver.port,
        secret.display()
    );
    // The threshold asks for a hold as well: in dry-run both are written down, nothing done.
    let on_risk = "  on_risk:\n    threshold: 40\n    actions: [hold_session]\n";

    for mode in ["dry_run", "enforce"] {
        let spool = dir.path().join(format!("spool-{mode}"));
        let daemon = Daemon::start_with_spool(
            Some(&spool),
            &format!("{detection}{}", respond_yaml(dir.path(), mode, on_risk)),
        )
        .expect("daemon starts");
        let after = dir.path().join(format!("after-{mode}"));
        // The test user reads the canary through sudo: a privileged session, as the report
        // lists them.
        let user = ensure_user();
        let mut session = LiveSession::start(
            user,
            &format!(
                "{HELPER} setuid {user} -- /usr/bin/sudo -n /bin/cat {} > /dev/null; sleep 3; touch {}",
                canary.display(),
                after.display()
            ),
        );
        let status = session.wait(Duration::from_secs(10)).expect("session ends");
        let events = daemon.stop().unwrap();
        let r: Vec<_> = responses(&events)
            .into_iter()
            .filter(|e| e["process"]["sessionid"] == session.id)
            .collect();
        let by_rule: Vec<_> = r.iter().filter(|e| e["requester"] == "rule").collect();
        assert_eq!(by_rule.len(), 1, "{r:#?}");
        assert_eq!(by_rule[0]["requested_by"], "rule canary-read");
        let by_risk: Vec<_> = r.iter().filter(|e| e["requester"] == "risk").collect();
        assert_eq!(by_risk.len(), 1, "{r:#?}");
        assert_eq!(by_risk[0]["action"], "hold_session");
        if mode == "dry_run" {
            assert!(status.success(), "dry run killed: {status}");
            assert!(after.exists());
            assert_eq!(by_rule[0]["outcome"], "dry_run");
            assert!(by_rule[0]["detail"]
                .as_str()
                .unwrap()
                .starts_with("would have killed"));
            assert_eq!(by_risk[0]["outcome"], "dry_run");
        } else {
            assert_eq!(status.signal(), Some(9));
            assert!(!after.exists(), "the session ran on after the rule fired");
            assert_eq!(by_rule[0]["outcome"], "done");
            // The session's own timeline and its replay show what was done to it.
            let key = format!("{}", session.id);
            let out = run_ok(
                Command::new(vigil_bin())
                    .args(["session", &key, "--spool"])
                    .arg(&spool),
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("RESPOND kill_session"), "{text}");
            // A marker in the replay (here its asciicast export) and a line in the report.
            let out = run_ok(
                Command::new(vigil_bin())
                    .args(["export", &key, "--format", "asciicast", "--spool"])
                    .arg(&spool),
            );
            let cast = String::from_utf8_lossy(&out.stdout);
            assert!(
                cast.lines()
                    .any(|l| l.contains("\"m\"") && l.contains("RESPOND kill_session")),
                "{cast}"
            );
            let out = run_ok(
                Command::new(vigil_bin())
                    .args(["report", "--since", "1h", "--json", "--spool"])
                    .arg(&spool),
            );
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            let listed = report["privileged"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["summary"]["session"] == session.id)
                .expect("the session is in the report");
            assert!(
                listed["responses"][0]
                    .as_str()
                    .unwrap_or("")
                    .contains("kill_session"),
                "{listed:#}"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let posted = receiver.received();
    receiver.stop();
    let posted: Vec<_> = posted
        .iter()
        .filter(|l| l["body"]["type"] == "response")
        .collect();
    assert!(
        posted.iter().any(|l| l["body"]["outcome"] == "done"
            && l["body"]["action"] == "kill_session"
            && l["signature_valid"] == true),
        "{posted:#?}"
    );
    assert!(posted.iter().any(|l| l["body"]["outcome"] == "dry_run"));
}

#[test]
fn automatic_responses_beyond_the_rate_limit_are_written_down_not_done() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (canary, rules) = canary_rule(dir.path(), 10);
    let daemon = Daemon::start(&format!(
        "detection:\n  rules_files: [{}]\n{}",
        rules.display(),
        respond_yaml(dir.path(), "enforce", "  max_actions_per_minute: 1\n")
    ))
    .expect("daemon starts");
    let script = format!("cat {} > /dev/null; sleep 2", canary.display());
    let mut first = LiveSession::start(61004, &script);
    let first_status = first.wait(Duration::from_secs(10)).expect("ends");
    let mut second = LiveSession::start(61004, &script);
    let second_status = second.wait(Duration::from_secs(10)).expect("ends");
    assert_eq!(first_status.signal(), Some(9));
    assert!(second_status.success(), "over the limit, still killed");
    // People are not limited.
    let mut third = LiveSession::start(61004, "sleep 20");
    let (ok, answer) = respond(dir.path(), &["kill-session", &third.id.to_string()]);
    assert!(ok, "{answer}");
    assert!(third.wait(Duration::from_secs(5)).is_some());
    // A peer that connects to the control socket and says nothing does not hold the daemon's
    // stop for long.
    let _silent = std::os::unix::net::UnixStream::connect(dir.path().join("control.sock")).unwrap();
    let stopping = Instant::now();
    let events = daemon.stop().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopping.elapsed()
    );
    let outcome = |s: u32| {
        responses(&events)
            .into_iter()
            .find(|e| e["process"]["sessionid"] == s)
            .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(outcome(first.id).as_deref(), Some("done"));
    assert_eq!(outcome(second.id).as_deref(), Some("rate_limited"));
    assert_eq!(outcome(third.id).as_deref(), Some("done"));
}

/// A canary file and a rules file whose rule `canary-read` (risk `risk`) kills the session that
/// opens it.
fn canary_rule(dir: &Path, risk: u32) -> (PathBuf, PathBuf) {
    let canary = dir.join("canary");
    std::fs::write(&canary, "secret").unwrap();
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  - id: canary-read\n    title: Canary read\n    technique: T1005\n    severity: high\n    risk: {risk}\n    actions: [kill_session]\n    when: type == \"open\" and path == \"{}\"\n",
            canary.display()
        ),
    )
    .unwrap();
    (canary, rules)
}

fn ssh_ok(ssh: &vigil_e2e::SshFixture) -> bool {
    ssh.client()
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn a_locked_account_is_refused_by_sshd_and_unlocking_lets_it_in() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ssh = vigil_e2e::SshFixture::start(dir.path());
    let uid = ssh.uid;
    assert!(ssh_ok(&ssh), "ssh works before the lock");

    // Protected: never locked, even by hand.
    {
        let daemon = Daemon::start(&respond_yaml(
            dir.path(),
            "enforce",
            &format!("  protected_accounts: [{USER}]\n"),
        ))
        .unwrap();
        let (ok, answer) = respond(dir.path(), &["lock", USER]);
        assert!(!ok);
        assert_eq!(answer["response"]["outcome"], "protected", "{answer}");
        let (ok, answer) = respond(dir.path(), &["lock", "root"]);
        assert!(!ok);
        assert_eq!(answer["response"]["outcome"], "protected", "{answer}");
        daemon.stop().unwrap();
        assert!(ssh_ok(&ssh), "a protected account was locked");
    }

    let daemon = Daemon::start(&respond_yaml(dir.path(), "enforce", "")).unwrap();
    // A session of the account is open when it is locked: it is killed.
    let mut open = LiveSession::start(uid, "sleep 30");
    let (ok, answer) = respond(dir.path(), &["lock", USER, "--reason", "offboarding"]);
    assert!(ok, "{answer}");
    assert!(
        open.wait(Duration::from_secs(5)).is_some(),
        "its session survived the lock"
    );
    assert!(!ssh_ok(&ssh), "sshd let a locked account in");
    let (ok, answer) = respond(dir.path(), &["unlock", USER]);
    assert!(ok, "{answer}");
    assert!(ssh_ok(&ssh), "unlocked, the account cannot log in");
    let events = daemon.stop().unwrap();
    let r = responses(&events);
    assert!(r.iter().any(|e| e["action"] == "lock_account"
        && e["outcome"] == "done"
        && e["processes"].as_u64() >= Some(1)));
    assert!(r
        .iter()
        .any(|e| e["action"] == "unlock_account" && e["outcome"] == "done"));
    // Left as ensure_user leaves it.
    ensure_user();
}

#[test]
fn what_is_in_force_survives_a_daemon_restart() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let yaml = respond_yaml(dir.path(), "enforce", "");
    let daemon = Daemon::start_with_spool(Some(&spool), &yaml).expect("daemon starts");
    let prog = dir.path().join("mytouch");
    std::fs::copy("/usr/bin/touch", &prog).unwrap();
    let (ok, answer) = respond(dir.path(), &["deny-exec", "--path", prog.to_str().unwrap()]);
    assert!(ok, "{answer}");
    let ticks = dir.path().join("ticks");
    let mut session = LiveSession::start(
        61005,
        &format!(
            "while true; do echo x >> {}; sleep 0.05; done",
            ticks.display()
        ),
    );
    let (ok, answer) = respond(dir.path(), &["hold", &session.id.to_string()]);
    assert!(ok, "{answer}");
    // Someone stops the daemon (here cleanly; a kill -9 leaves the same state file).
    daemon.stop().unwrap();
    assert_eq!(
        state(session.child.id()),
        Some('T'),
        "held while no daemon ran"
    );

    let daemon = Daemon::start_with_spool(Some(&spool), &yaml).expect("daemon restarts");
    let out = dir.path().join("out-after-restart");
    let status = run_session(61005, &format!("{} {}", prog.display(), out.display()));
    assert_eq!(
        status.signal(),
        Some(9),
        "the denial did not survive the restart"
    );
    assert!(!out.exists());
    // Continued by hand: the restored verdict stops it again.
    run_ok(Command::new("kill").args(["-CONT", "--", &format!("-{}", session.child.id())]));
    std::thread::sleep(Duration::from_millis(700));
    let a = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(file_len(&ticks), a, "the hold did not survive the restart");
    let (ok, answer) = respond(dir.path(), &["release", &session.id.to_string()]);
    assert!(ok, "{answer}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        file_len(&ticks) > a,
        "released after the restart, it did not resume"
    );
    let (ok, _) = respond(dir.path(), &["kill-session", &session.id.to_string()]);
    assert!(ok);
    assert!(session.wait(Duration::from_secs(5)).is_some());

    let events = daemon.stop().unwrap();
    let restored: Vec<_> = responses(&events)
        .into_iter()
        .filter(|e| {
            e["requested_by"]
                .as_str()
                .unwrap_or("")
                .starts_with("restored from")
        })
        .collect();
    assert!(
        restored
            .iter()
            .any(|e| e["action"] == "deny_exec" && e["outcome"] == "done"),
        "{restored:#?}"
    );
    assert!(
        restored
            .iter()
            .any(|e| e["action"] == "hold_session" && e["outcome"] == "done"),
        "{restored:#?}"
    );
}
