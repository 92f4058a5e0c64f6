//! End to end on the real kernel: a login session runs real commands, and the daemon's output
//! holds exactly the events they caused, with the right ids, paths, byte counts and addresses.

use std::{
    net::TcpListener, os::unix::fs::PermissionsExt, os::unix::net::UnixListener, path::Path,
    process::Command,
};

use serde_json::Value;
use vigil_e2e::{login_session, of_type, raw_bytes, require_root, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// A listener on `addr` (port 0: any) that accepts (and drops) connections forever, so
/// connects succeed; its port.
fn serve_tcp(addr: &str) -> u16 {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    port
}

fn serve_unix(listener: UnixListener) {
    std::thread::spawn(move || for _ in listener.incoming() {});
}

fn session_events(events: &[Value], loginuid: u32) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .cloned()
        .collect()
}

/// `sh -c script` in a new login session of `loginuid`, run to its end: its output, after it
/// succeeded.
fn in_session(loginuid: u32, script: &str) -> std::process::Output {
    let output = Command::new(HELPER)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    output
}

/// Each connect as (address, port, whether `flag` is set on it, result): what the tests of
/// connects made without connect(2) compare, in order.
fn connect_summary(connects: &[&Value], flag: &str) -> Vec<(String, u64, bool, i64)> {
    connects
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap_or("").to_string(),
                c["port"].as_u64().unwrap_or(0),
                c[flag] == true,
                c["result"]["ret"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

/// The default (`syscall_hook: auto`) tries fexit on the syscall entry functions first; this
/// kernel refuses fexit at load, so the daemon must say so and fall back to the typed
/// tracepoint, every followed syscall still captured.
#[test]
fn login_session_commands_files_connections_and_privilege_changes() {
    capture_a_login_session("", "tp_btf/sys_exit");
}

/// The raw `sys_exit` tracepoint is what runs where the kernel refuses the BTF-typed one
/// (this kernel accepts it, so the fallback is forced): it captures the same session the same.
#[test]
fn the_raw_tracepoint_fallback_captures_the_same_session() {
    capture_a_login_session(
        "capture:\n  syscall_hook: raw_tracepoint\n",
        "raw_tp/sys_exit",
    );
}

fn capture_a_login_session(extra_yaml: &str, sys_exit_hook: &str) {
    require_root();
    let daemon = Daemon::start(extra_yaml).expect("daemon starts");

    // A working directory whose name needs quoting and is not ASCII.
    let base = tempfile::Builder::new()
        .prefix("vigil-session-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = base.path().join("work dir ✓");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = work.join("secret.txt");
    std::fs::write(&secret, vec![b's'; 12345]).unwrap();
    let shadow_len = std::fs::metadata("/etc/shadow").unwrap().len();
    let redirected = work.join("redirected.txt");
    std::fs::write(&redirected, vec![b'r'; 777]).unwrap();
    let held = work.join("held.txt");
    std::fs::write(&held, vec![b'h'; 5000]).unwrap();

    // A setuid-root copy of the helper, for an exec that changes the effective uid.
    let suid = work.join("suid-helper");
    std::fs::copy(HELPER, &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let p4 = serve_tcp("127.0.0.1:0");
    let p6 = serve_tcp("[::1]:0");
    let sock = base.path().join("agent.sock");
    serve_unix(UnixListener::bind(&sock).unwrap());

    let loginuid = 40_000 + std::process::id() % 20_000;
    let script = format!(
        r#"cd '{work}'
/usr/bin/printf '%s|' 'arg with spaces' "$(printf '\377\376')" 'ünïcödé' > /dev/null
cat secret.txt > /dev/null
/bin/cat < redirected.txt > /dev/null
{helper} read-exit held.txt 1000
cat /etc/shadow > /dev/null
{helper} connect 127.0.0.1:{p4}
{helper} connect '[::1]:{p6}'
{helper} connect-unix '{sock}'
{helper} setuid 65534 -- '{suid}' setuid 0
script -qec /usr/bin/tty /dev/null > /dev/null
for i in $(seq 300); do /bin/true; done
exit 7"#,
        work = work.display(),
        helper = HELPER,
        sock = sock.display(),
        suid = suid.display(),
    );
    // Outside any login session: must produce nothing.
    let marker = format!("vigil-out-of-scope-{}", std::process::id());
    let outside = Command::new(HELPER)
        .args(["login", "unset", "--", "/bin/echo", &marker])
        .output()
        .unwrap();
    assert!(outside.status.success());

    let mut session = Command::new(HELPER)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            "/bin/bash",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    let session_pid = session.id();
    assert_eq!(
        session.wait().unwrap().code(),
        Some(7),
        "the session script itself failed"
    );

    // Give the stats task a tick to publish the counters, then scrape them as Prometheus would.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let metrics = daemon.scrape().expect("metrics endpoint answers");
    let stderr_before_stop = daemon.stderr();
    assert!(
        stderr_before_stop.contains(&format!("sys_exit={sys_exit_hook}")),
        "the daemon did not attach {sys_exit_hook}:\n{stderr_before_stop}"
    );
    // Only `auto` tries fexit, and the refusal names the first entry function and why.
    let fexit_refused = stderr_before_stop
        .contains("the kernel refused fexit on the syscall entry functions")
        && stderr_before_stop.contains("__x64_sys_openat");
    assert_eq!(
        fexit_refused,
        extra_yaml.is_empty(),
        "fexit tried and refused, as the setting says:\n{stderr_before_stop}"
    );
    let events = daemon.stop().expect("daemon stops cleanly");
    let ours = session_events(&events, loginuid);
    assert!(
        !ours.is_empty(),
        "no events of the session; daemon log:\n{stderr_before_stop}"
    );

    // Every event of the session carries the same audit session and the identity of its task.
    let sessionid = ours[0]["process"]["sessionid"].clone();
    assert!(sessionid.is_u64(), "audit sessionid set: {sessionid}");
    for e in &ours {
        assert_eq!(e["process"]["sessionid"], sessionid, "{e}");
        assert!(
            e["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "{e}"
        );
        assert!(e["mono_ns"].as_u64().unwrap() > 0);
    }

    // exec with hostile argv, exact bytes, and the cwd.
    let execs = of_type(&ours, "exec");
    let printf = execs
        .iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/usr/bin/printf")
        .expect("printf exec captured");
    let argv: Vec<Vec<u8>> = printf["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(raw_bytes)
        .collect();
    assert_eq!(
        argv,
        vec![
            b"/usr/bin/printf".to_vec(),
            b"%s|".to_vec(),
            b"arg with spaces".to_vec(),
            b"\xff\xfe".to_vec(),
            "ünïcödé".as_bytes().to_vec(),
        ]
    );
    assert_eq!(printf["argv_truncated"], false);
    assert_eq!(
        raw_bytes(&printf["cwd"]),
        work.as_os_str().as_encoded_bytes()
    );
    assert_eq!(printf["process"]["uid"], 0);
    assert_eq!(printf["process"]["euid"], 0);
    assert_eq!(printf["process"]["loginuid"], loginuid);
    assert_eq!(printf["process"]["ppid"], session_pid);

    // The controlling terminal of a command run on a pty.
    let tty = execs
        .iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/usr/bin/tty")
        .expect("tty exec captured");
    let name = tty["tty"].as_str().unwrap_or_default();
    assert!(
        name.strip_prefix("pts/")
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "controlling terminal of a pty command: {tty}"
    );
    assert!(printf["tty"].is_null(), "no terminal in the session itself");

    // Identity: names for the ids; the ancestry of the exec, ending in the session shell and
    // the command itself.
    assert_eq!(printf["process"]["user"], "root");
    assert_eq!(printf["process"]["euser"], "root");
    let ancestry: Vec<(u64, &str)> = printf["ancestry"]
        .as_array()
        .expect("ancestry")
        .iter()
        .map(|a| (a["pid"].as_u64().unwrap(), a["name"].as_str().unwrap()))
        .collect();
    let printf_pid_u = printf["process"]["pid"].as_u64().unwrap();
    assert_eq!(
        ancestry[ancestry.len() - 2..],
        [(session_pid as u64, "bash"), (printf_pid_u, "printf")],
        "{ancestry:?}"
    );
    assert!(
        ancestry.len() > 3 && ancestry[0].0 == 1,
        "reaches init: {ancestry:?}"
    );

    // The process tree: the session shell forked the printf process.
    let printf_pid = printf["process"]["pid"].as_u64().unwrap();
    assert!(
        of_type(&ours, "fork")
            .iter()
            .any(|f| f["process"]["pid"] == session_pid && f["child_pid"] == printf_pid),
        "fork of printf from the session shell"
    );

    // open (relative path resolved against the cwd) and the bytes read from it.
    let secret_bytes = secret.as_os_str().as_encoded_bytes().to_vec();
    let open = of_type(&ours, "open")
        .into_iter()
        .find(|e| raw_bytes(&e["path"]) == secret_bytes)
        .expect("open of secret.txt");
    assert_eq!(raw_bytes(&open["requested_path"]), b"secret.txt");
    assert!(open["result"]["ret"].as_i64().unwrap() >= 0, "{open}");
    assert_eq!(open["access"], "read");
    let reads = of_type(&ours, "file_read");
    let secret_read = reads
        .iter()
        .find(|e| e["path"].is_string() && raw_bytes(&e["path"]) == secret_bytes)
        .expect("read volume of secret.txt");
    assert_eq!(secret_read["bytes"], 12345);
    assert_eq!(secret_read["reason"], "close");
    assert_eq!(secret_read["open_mono_ns"], open["mono_ns"]);
    let shadow = reads
        .iter()
        .find(|e| e["path"] == "/etc/shadow")
        .expect("read volume of /etc/shadow");
    assert_eq!(shadow["bytes"].as_u64().unwrap(), shadow_len);

    // A shell redirection: the shell opens the file, dup2s it onto stdin and execs cat, whose
    // reads through fd 0 count for that open.
    let redirected_bytes = redirected.as_os_str().as_encoded_bytes().to_vec();
    let via_stdin = reads
        .iter()
        .find(|e| e["path"].is_string() && raw_bytes(&e["path"]) == redirected_bytes)
        .expect("read volume of the redirected file");
    assert_eq!(via_stdin["bytes"], 777);
    assert_eq!(via_stdin["fd"], 0);
    assert_eq!(raw_bytes(&via_stdin["process"]["comm"]), b"cat");

    // A file still open at exit is reported at exit.
    let held_bytes = held.as_os_str().as_encoded_bytes().to_vec();
    let at_exit = reads
        .iter()
        .find(|e| e["path"].is_string() && raw_bytes(&e["path"]) == held_bytes)
        .expect("read volume of the file held at exit");
    assert_eq!(at_exit["bytes"], 1000);
    assert_eq!(at_exit["reason"], "exit");

    // Connections over IPv4, IPv6 and unix sockets, with their results.
    let connects = of_type(&ours, "connect");
    let find = |family: &str, addr: &[u8]| {
        connects
            .iter()
            .find(|c| c["family"] == family && raw_bytes(&c["address"]) == addr)
            .copied()
    };
    let c4 = find("ipv4", b"127.0.0.1").expect("IPv4 connect");
    assert_eq!(c4["port"], p4);
    assert_eq!(c4["result"]["ret"], 0);
    let c6 = find("ipv6", b"::1").expect("IPv6 connect");
    assert_eq!(c6["port"], p6);
    assert_eq!(c6["result"]["ret"], 0);
    let cu = find("unix", sock.as_os_str().as_encoded_bytes()).expect("unix connect");
    assert_eq!(cu["result"]["ret"], 0);
    assert!(cu["port"].is_null());

    // Privilege changes: setuid to nobody, an exec of a setuid-root binary, setuid back to root.
    let privs = of_type(&ours, "priv");
    let drop = privs
        .iter()
        .find(|p| p["op"] == "setuid" && p["requested"] == serde_json::json!([65534]))
        .expect("setuid(65534)");
    assert_eq!(drop["old"]["euid"], 0);
    assert_eq!(drop["new"]["uid"], 65534);
    assert_eq!(drop["new"]["euid"], 65534);
    assert_eq!(drop["result"]["ret"], 0);
    let gain = privs
        .iter()
        .find(|p| p["op"] == "exec")
        .expect("setuid exec");
    assert_eq!(gain["old"]["euid"], 65534);
    assert_eq!(gain["new"]["euid"], 0);
    assert_eq!(gain["new"]["uid"], 65534);
    assert_eq!(gain["gained_root"], true);
    let back = privs
        .iter()
        .find(|p| p["op"] == "setuid" && p["requested"] == serde_json::json!([0]))
        .expect("setuid(0) from the setuid binary");
    assert_eq!(back["old"]["uid"], 65534);
    assert_eq!(back["new"]["uid"], 0);
    assert_eq!(back["result"]["ret"], 0);

    // Exit status of the session shell.
    let exit = of_type(&ours, "exit")
        .into_iter()
        .find(|e| e["process"]["pid"] == session_pid)
        .expect("session shell exit");
    assert_eq!(exit["exit_code"], 7);
    assert!(exit["signal"].is_null());

    // Moderate load: all 300 execs captured, nothing lost anywhere.
    let trues = execs
        .iter()
        .filter(|e| raw_bytes(&e["filename"]) == b"/bin/true")
        .count();
    assert_eq!(trues, 300, "captured = expected");
    assert!(
        of_type(&events, "loss").is_empty(),
        "loss records in the stream"
    );
    for kind in [
        "exec",
        "exit",
        "fork",
        "open",
        "file_read",
        "connect",
        "priv",
    ] {
        let lost = Daemon::metric(
            &metrics,
            "vigil_kernel_events_total",
            &[("kind", kind), ("outcome", "lost")],
        );
        assert_eq!(lost, Some(0.0), "lost {kind} events; metrics:\n{metrics}");
    }
    let emitted = Daemon::metric(
        &metrics,
        "vigil_kernel_events_total",
        &[("kind", "exec"), ("outcome", "emitted")],
    );
    assert!(
        emitted.unwrap_or(0.0) >= 300.0,
        "exec emitted counter: {emitted:?}"
    );

    // Nothing from outside the scope.
    for e in of_type(&events, "exec") {
        let argv: Vec<Vec<u8>> = e["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(raw_bytes)
            .collect();
        assert!(
            !argv.iter().any(|a| a == marker.as_bytes()),
            "out-of-scope exec captured: {e}"
        );
    }
}

/// The kernel side follows the bytes read per open file in a table of 65,536 entries. Files
/// opened past it are not followed, and the loss says why (a full table), never that the ring
/// buffer was full, so an operator raises the right limit.
#[test]
fn files_past_the_open_file_table_are_reported_as_such() {
    require_root();
    // Four processes of 17,500: one may not hold more than its fd limit.
    const PER_PROCESS: u64 = 17_500;
    const HELD: u64 = 4 * PER_PROCESS;
    let loginuid = 37_000 + std::process::id() % 1000;
    // Folding off: the one file opened 70,000 times would be one open event and its repeats
    // (the table's limit holds for them too, but they have no open events to mark).
    let daemon = Daemon::start("capture:\n  fold:\n    enabled: false\n").expect("daemon starts");
    let status = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", HELPER, "hold-open"])
        .arg("/etc/hostname")
        .args([PER_PROCESS.to_string(), "4".to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let events = daemon.stop().expect("daemon stops");
    let losses = of_type(&events, "loss");
    let untracked: u64 = losses
        .iter()
        .filter(|l| l["kind"] == "file_read")
        .filter(|l| {
            l["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("open-file table was full")
        })
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    // Other processes' open files only take room: at least this many did not fit.
    assert!(untracked >= HELD - 65_536, "{untracked}: {losses:#?}");
    assert!(untracked <= HELD, "{untracked}: {losses:#?}");
    // What did fit is reported at exit, one volume (one read of one byte) per file.
    let reported: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "file_read" && e["process"]["loginuid"] == loginuid)
        .filter(|e| e["bytes"] == 1 && e["reads"] == 1)
        .collect();
    let followed = reported.len() as u64;
    // The opens that did not fit say so.
    let marked = of_type(&events, "open")
        .iter()
        .filter(|e| e["process"]["loginuid"] == loginuid && e["reads_untracked"] == true)
        .count() as u64;
    assert_eq!(marked, untracked);
    // Each file is either followed or counted as not followed, once.
    assert_eq!(
        followed + untracked,
        HELD,
        "{followed} + {untracked}: {losses:#?}"
    );
    // The daemon keeps the paths of as many opens as the kernel follows; the session's other
    // opens (the helpers' own libraries) take a few of those places.
    let with_path = reported
        .iter()
        .filter(|e| e["path"] == "/etc/hostname")
        .count() as u64;
    assert!(
        with_path + 64 >= followed,
        "{with_path} of {followed} with their path"
    );
}

/// A file read over a long stretch keeps its path however many other files come and go in the
/// meantime (more than the daemon keeps paths for): their volumes were reported and make room.
#[test]
fn a_long_read_keeps_its_path_through_a_storm_of_other_opens() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, [0u8; 64]).unwrap();
    let loginuid = 38_000 + std::process::id() % 1000;
    let daemon = Daemon::start("").expect("daemon starts");
    let script = format!(
        "exec 3< /etc/hostname; read -r -n 1 -u 3 _; {HELPER} storm open-read 80000 {} > /dev/null; \
         read -r -n 1 -u 3 _; exec 3<&-",
        other.display()
    );
    assert!(login_session(HELPER, loginuid, dir.path(), &script).success());
    let events = daemon.stop().expect("daemon stops");
    // The shell's `exec 3< /etc/hostname`, and the volume reported for that open at its close.
    let opened = events
        .iter()
        .find(|e| {
            e["type"] == "open"
                && e["process"]["loginuid"] == loginuid
                && e["process"]["comm"] == "bash"
                && e["path"] == "/etc/hostname"
        })
        .expect("the shell's open");
    let reported: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "file_read" && e["open_mono_ns"] == opened["mono_ns"])
        .collect();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert_eq!(reported[0]["reason"], "close");
    assert_eq!(reported[0]["path"], "/etc/hostname", "{:#}", reported[0]);
}

#[test]
fn stopping_detaches_every_program() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let ours = |name: &str| name.starts_with("vigil_");
    let loaded: Vec<String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| ours(n))
        .collect();
    let mut names = loaded.clone();
    names.sort();
    // A previous test's programs may still be in deferred release: compare the set.
    names.dedup();
    assert_eq!(
        names,
        // The LSM program loads only where the kernel runs the BPF LSM, and the fexit programs
        // on the syscall entry functions only where the kernel allows fexit (neither here: a
        // refused fexit program leaves none of them loaded).
        [
            "vigil_connect4",
            "vigil_connect6",
            "vigil_creds",
            // The change-time tracepoints' programs (names cut to the kernel's 15 bytes).
            "vigil_ctime_set",
            "vigil_ctime_ski",
            "vigil_ctime_xch",
            "vigil_exec",
            "vigil_exit",
            "vigil_fork",
            "vigil_sendmsg4",
            "vigil_sendmsg6",
            "vigil_sys_exit"
        ],
        "programs loaded while running"
    );
    daemon.stop().expect("daemon stops cleanly");
    // The kernel releases programs, and then their maps, in deferred work a moment after the
    // last file descriptor closes: wait for that, within a bound.
    let our_programs = || -> Vec<String> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| p.name_as_str().map(str::to_string))
            .filter(|n| ours(n))
            .collect()
    };
    let our_maps = || -> Vec<String> {
        const NAMES: [&str; 5] = [
            "EVENTS",
            "OPEN_FILES",
            "PENDING",
            "EXEC_SCRATCH",
            "OPEN_SCRATCH",
        ];
        aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .filter_map(|m| m.name_as_str().map(str::to_string))
            .filter(|n| NAMES.contains(&n.as_str()))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut programs, mut maps) = (our_programs(), our_maps());
    while !(programs.is_empty() && maps.is_empty()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        (programs, maps) = (our_programs(), our_maps());
    }
    assert!(
        programs.is_empty(),
        "programs left 10 s after stop: {programs:?}"
    );
    assert!(maps.is_empty(), "maps left 10 s after stop: {maps:?}");
}

#[test]
fn clear_errors_for_non_root_and_bad_configuration() {
    require_root();
    let bin = vigil_e2e::vigil_bin();
    // Not root: drop to nobody, then run the daemon (a copy nobody can reach: the checkout may
    // sit in a directory only root can enter).
    let reachable = tempfile::tempdir().unwrap();
    std::fs::set_permissions(reachable.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = reachable.path().join("vigil");
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(HELPER)
        .args(["setuid", "65534", "--"])
        .arg(&copy)
        .args(["run", "--no-stdout"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("must run as root"), "{stderr}");

    // A configuration mistake names the file and the key, and nothing starts.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "capture:\n  max_argv_bytes: 999999\n").unwrap();
    let out = Command::new(&bin)
        .arg("run")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("capture.max_argv_bytes"),
        "{stderr}"
    );
    let out = Command::new(&bin)
        .args(["config", "check"])
        .arg(Path::new("/nonexistent.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
}

/// What a process still has open when the daemon stops is reported then (reason `shutdown`),
/// attributed to the process that opened it, session and all: not to a stand-in known only by
/// its pid, which no session listing would show.
#[test]
fn reads_still_open_at_stop_are_reported_in_their_session() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let loginuid = 65_534;
    // bash opens the file and reads a line of it itself, then sleeps with it open.
    let mut session = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", "/bin/bash", "-c"])
        .arg("exec 3</etc/hostname; read -r -u 3 line; touch /tmp/vigil-e2e-held; sleep 30")
        .spawn()
        .expect("session starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !Path::new("/tmp/vigil-e2e-held").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never got there"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let _ = session.kill();
    let _ = session.wait();
    let _ = std::fs::remove_file("/tmp/vigil-e2e-held");
    let flushed: Vec<&Value> = of_type(&events, "file_read")
        .into_iter()
        .filter(|e| e["reason"] == "shutdown" && e["path"] == "/etc/hostname")
        .collect();
    assert_eq!(flushed.len(), 1, "{flushed:?}");
    let f = flushed[0];
    assert!(f["bytes"].as_u64().unwrap_or(0) > 0, "{f}");
    assert_eq!(f["process"]["loginuid"], loginuid, "{f}");
    assert!(f["process"]["sessionid"].is_u64(), "{f}");
    assert_eq!(f["process"]["comm"], "bash", "{f}");
    let session_id = f["process"]["sessionid"].clone();
    assert!(
        session_events(&events, loginuid)
            .iter()
            .any(|e| e["type"] == "session_start" && e["process"]["sessionid"] == session_id),
        "the volume is in the session that opened the file"
    );
}

/// A connect's destination is the address the kernel connected to. The kernel copies the
/// caller's `sockaddr` at entry; an insider's second thread rewrites that buffer while the call
/// runs, so a monitor reading it at exit would record a harmless decoy for a connection that
/// went elsewhere (and the other way round). Every attempt is checked against what the kernel
/// did: only the real address listens, so a connect that succeeded went there and a refused one
/// went to the decoy. The rewriting itself is reported, and alerted.
#[test]
fn a_connect_is_recorded_where_the_kernel_sent_it_whatever_its_buffer_says_after() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let real_port = serve_tcp("127.0.0.1:0");
    // A port nothing listens on: bound, then let go.
    let decoy_port = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let attempts = 300;
    let loginuid = 40_000 + std::process::id() % 20_000 + 1;
    let out = Command::new(HELPER)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            HELPER,
            "connect-race",
            &format!("127.0.0.1:{real_port}"),
            &format!("127.0.0.2:{decoy_port}"),
            &attempts.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let outcomes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(outcomes.len(), attempts, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o == "ok" || o == "ECONNREFUSED"),
        "{outcomes:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let ours = session_events(&events, loginuid);
    let mut connects = of_type(&ours, "connect");
    connects.sort_by_key(|c| c["mono_ns"].as_u64());
    assert_eq!(connects.len(), attempts, "one event per attempt");
    let mut wrong = Vec::new();
    for (outcome, c) in outcomes.iter().zip(&connects) {
        let (address, port, ret) = if outcome == "ok" {
            ("127.0.0.1", real_port, 0)
        } else {
            ("127.0.0.2", decoy_port, -libc::ECONNREFUSED as i64)
        };
        assert_eq!(c["result"]["ret"], ret, "events out of order? {c}");
        if c["address"] != address || c["port"] != port {
            wrong.push(c["address"].to_string() + ":" + &c["port"].to_string());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {attempts} connects recorded at another address than the kernel's, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    // The buffer held the other address at some exits (the thread rewrites it without pause):
    // said on those events and nowhere else, and alerted.
    let rewritten: Vec<&&Value> = connects
        .iter()
        .filter(|c| c["address_rewritten"] == true)
        .collect();
    assert!(
        !rewritten.is_empty(),
        "no connect of {attempts} was seen rewritten"
    );
    assert!(rewritten.len() < attempts, "every connect seen rewritten");
    assert!(
        of_type(&events, "alert")
            .iter()
            .any(|a| a["process"]["loginuid"] == loginuid
                && a["rule"] == "connect-destination-rewritten"),
        "no connect-destination-rewritten alert"
    );
}

/// TCP Fast Open connects a socket in its first send (`sendto` with `MSG_FASTOPEN`), with no
/// connect(2): such a connection is still a `connect` event, at the kernel's destination, said
/// to be opened by a send. IPv4 and IPv6.
#[test]
fn a_connection_opened_by_its_first_send_is_a_connect() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let p4 = serve_tcp("127.0.0.1:0");
    let p6 = serve_tcp("[::1]:0");
    let loginuid = 40_000 + std::process::id() % 20_000 + 2;
    let script = format!(
        "{HELPER} fast-open 127.0.0.1:{p4} && {HELPER} fast-open '[::1]:{p6}' && {HELPER} connect 127.0.0.1:{p4}"
    );
    in_session(loginuid, &script);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let ours = session_events(&events, loginuid);
    let connects = of_type(&ours, "connect");
    let summary = connect_summary(&connects, "opened_by_send");
    assert_eq!(
        summary,
        vec![
            ("127.0.0.1".to_string(), p4 as u64, true, 0),
            ("::1".to_string(), p6 as u64, true, 0),
            ("127.0.0.1".to_string(), p4 as u64, false, 0),
        ],
        "{connects:#?}"
    );
}

/// A UDP datagram sent to an address with no connect(2) (`sendto`, or several destinations in
/// one `sendmmsg`) is a `connect` event at the kernel's destination, said to be a datagram:
/// once per socket, process and destination, however many datagrams go there. Before, such
/// traffic (DNS tunnelling, exfiltration by UDP) left no record at all. An IPv4 address
/// written as IPv6 (`::ffff:a.b.c.d`, from an IPv6 socket) is the IPv4 destination it reaches.
#[test]
fn datagrams_sent_without_connect_are_recorded_once_per_destination() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let loginuid = 40_000 + std::process::id() % 20_000 + 3;
    // Nothing needs to listen: a datagram is sent whether or not anyone receives it.
    let script = format!(
        "{HELPER} datagrams 127.0.0.1:5301 127.0.0.1:5301 127.0.0.1:5302 127.0.0.1:5301 '[::1]:5303' '[::ffff:127.0.0.1]:5306' \
         && {HELPER} datagrams --mmsg 127.0.0.1:5304 127.0.0.1:5305 127.0.0.1:5304"
    );
    let output = in_session(loginuid, &script);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["ok"; 9]
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let ours = session_events(&events, loginuid);
    let connects = of_type(&ours, "connect");
    let summary = connect_summary(&connects, "datagram");
    let d = |a: &str, p: u64| (a.to_string(), p, true, 0);
    assert_eq!(
        summary,
        vec![
            d("127.0.0.1", 5301),
            d("127.0.0.1", 5302),
            d("::1", 5303),
            d("127.0.0.1", 5306),
            d("127.0.0.1", 5304),
            d("127.0.0.1", 5305),
        ],
        "{connects:#?}"
    );
    // The second helper is another process: its socket reports its own destinations.
    let pids: Vec<&Value> = connects.iter().map(|c| &c["process"]["pid"]).collect();
    assert_eq!(pids[0], pids[3]);
    assert_ne!(pids[3], pids[4]);
    assert_eq!(connects[3]["family"], "ipv4", "{:#?}", connects[3]);
}

/// bpf(2) in a session, as root reaches the monitor's own maps (`bpftool map show`): the
/// enumeration is reported once per process and command, and each fd got by id is reported
/// with the id of the map the kernel gave it, the daemon's own `POLICY` among them, and alerted.
#[test]
fn bpf_calls_in_a_session_name_the_objects_they_reach() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let ours: Vec<u32> = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("POLICY"))
        .map(|m| m.id())
        .collect();
    let loginuid = 40_000 + std::process::id() % 20_000 + 4;
    let output = in_session(loginuid, &format!("{HELPER} bpf-map-fd POLICY"));
    let found: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        ours.contains(&found),
        "{found} is not a POLICY map: {ours:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let mine = session_events(&events, loginuid);
    let calls = of_type(&mine, "bpf");
    let count = |command: &str| calls.iter().filter(|c| c["command"] == command).count();
    // One per process and command for the walk and the info; one per map reached by id.
    assert_eq!(count("map_get_next_id"), 1, "{calls:#?}");
    assert_eq!(count("obj_get_info_by_fd"), 1, "{calls:#?}");
    let reached: Vec<u64> = calls
        .iter()
        .filter(|c| c["command"] == "map_get_fd_by_id")
        .inspect(|c| assert_eq!(c["object"], "map", "{c}"))
        .filter_map(|c| c["object_id"].as_u64())
        .collect();
    assert!(reached.len() > 1, "{calls:#?}");
    assert!(reached.contains(&(found as u64)), "{reached:?}");
    assert!(
        of_type(&events, "alert")
            .iter()
            .any(|a| a["process"]["loginuid"] == loginuid && a["rule"] == "bpf-in-session"),
        "no bpf-in-session alert"
    );
}

/// Sockets below the transport layer (raw IP, packet, ICMP echo) send what no connect or
/// datagram hook sees: each one made in a session is a `raw_socket` event, described by the
/// kernel's socket (also when made through the 32-bit socketcall, whose arguments lie in
/// memory), and alerted; an ordinary UDP socket is not.
#[test]
fn raw_and_packet_sockets_in_a_session_are_recorded() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let loginuid = 40_000 + std::process::id() % 20_000 + 5;
    let script = format!(
        "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP); \
         socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))\" && {HELPER} int80 raw-socket"
    );
    in_session(loginuid, &script);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let mine = session_events(&events, loginuid);
    let sockets: Vec<(String, String, u64, bool)> = of_type(&mine, "raw_socket")
        .iter()
        .map(|s| {
            (
                s["family"].as_str().unwrap_or("").to_string(),
                s["socket_type"].as_str().unwrap_or("").to_string(),
                s["protocol"].as_u64().unwrap_or(u64::MAX),
                s["result"]["ret"].as_i64().unwrap_or(-1) >= 0,
            )
        })
        .collect();
    let s = |f: &str, t: &str, p: u64| (f.to_string(), t.to_string(), p, true);
    assert_eq!(
        sockets,
        vec![
            s("ipv4", "raw", 17),
            // ETH_P_ALL (3) in network order, as the kernel keeps it.
            s("packet", "raw", 0x0300),
            s("ipv4", "raw", 1),
        ]
    );
    assert!(
        of_type(&events, "alert")
            .iter()
            .any(|a| a["process"]["loginuid"] == loginuid && a["rule"] == "raw-socket-in-session"),
        "no raw-socket-in-session alert"
    );
}

/// A tracer can run any code in its tracee, and `process_vm_writev` writes another process's
/// memory: work put into a service outside the session runs outside it. Each attach and each
/// memory read or write made in a session is a `process_access` event naming its target (for
/// an attach, the process the kernel linked) and whether the target is of the session; doing
/// it to a process outside the session is alerted as a way out, to one of the session's own
/// only as memory access. A refused attach is reported too. A memory file opened for writing
/// names its owner the same way (the kernel's `mm`, not the pid in the path).
#[test]
fn reaching_into_a_process_outside_the_session_is_an_escape() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    // A service outside every session: started by this test, which runs outside any.
    let mut service = Command::new("sleep").arg("30").spawn().unwrap();
    let outside = service.id();
    let loginuid = 40_000 + std::process::id() % 20_000 + 6;
    // 4194303 is pid_max's last id: no process has it here.
    let script = format!(
        "set -e
         {HELPER} ptrace-seize {outside}
         {HELPER} vm-rewrite {outside}
         sleep 30 &
         own=$!
         {HELPER} ptrace-seize $own
         {HELPER} vm-rewrite $own
         exec 3<>/proc/{outside}/mem 4<>/proc/$own/mem
         kill $own
         ! {HELPER} ptrace-seize 4194303 2>/dev/null
         echo $own"
    );
    let output = in_session(loginuid, &script);
    let own: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let _ = service.kill();
    let _ = service.wait();
    let mine = session_events(&events, loginuid);
    let accesses = of_type(&mine, "process_access");
    let seen: Vec<(String, u64, bool, bool)> = accesses
        .iter()
        .map(|a| {
            (
                a["operation"].as_str().unwrap_or("").to_string(),
                a["target_pid"].as_u64().unwrap_or(0),
                a["target_in_session"] == true,
                a["result"]["error"].is_null(),
            )
        })
        .collect();
    let a = |op: &str, pid: u64, own: bool, ok: bool| (op.to_string(), pid, own, ok);
    let outside = outside as u64;
    assert_eq!(
        seen,
        vec![
            a("ptrace_seize", outside, false, true),
            a("process_vm_readv", outside, false, true),
            a("process_vm_writev", outside, false, true),
            a("ptrace_seize", own, true, true),
            a("process_vm_readv", own, true, true),
            a("process_vm_writev", own, true, true),
            a("ptrace_seize", 4194303, false, false),
        ]
    );
    // The attach's target is the process the kernel linked, not only the id passed.
    assert_eq!(accesses[0]["target_tgid"], outside);
    assert_eq!(accesses[3]["target_tgid"], own);
    let rules = |rule: &str| {
        of_type(&events, "alert")
            .iter()
            .filter(|x| x["process"]["loginuid"] == loginuid && x["rule"] == rule)
            .count()
    };
    // Memory files opened for writing: whose memory each is, by the kernel's `mm`.
    let memory: Vec<(u64, bool)> = of_type(&mine, "open")
        .iter()
        .filter(|o| o["file"]["process_memory"] == true)
        .map(|o| {
            (
                o["memory_of"]["pid"].as_u64().unwrap_or(0),
                o["memory_of"]["in_session"] == true,
            )
        })
        .collect();
    assert_eq!(memory, vec![(outside, false), (own, true)]);
    assert_eq!(
        rules("session-escape-injection"),
        3,
        "the attach to the service, the write into it and its memory file opened for writing, \
         not the session's own"
    );
    assert!(rules("process-memory-access") >= 1);
}

/// A file written elsewhere and given its name in a watched directory opens nothing there:
/// rename(2), a hard link and a symlink are each a `link` event, and its path is named by the
/// directory the kernel changed, not by the path passed. A bind mount of `/etc`, a symlinked
/// directory, a relative name from a directory fd and the 32-bit ABI each name the file
/// `/etc/cron.d/<name>`, and each is a `crontab-modified` alert. A rename that fails is
/// reported and alerts nothing; the names removed are `unlink` events.
#[test]
fn names_given_by_rename_link_and_symlink_are_named_by_the_directory_the_kernel_changed() {
    require_root();
    // The names the script gives in /etc/cron.d (and removes at its end), one per way.
    const NAMED: [&str; 7] = [
        "plain",
        "bind",
        "symlinked",
        "dirfd",
        "hard",
        "soft",
        "compat",
    ];
    let text = |v: &Value| String::from_utf8_lossy(&raw_bytes(v)).into_owned();
    let daemon = Daemon::start("").expect("daemon starts");
    let loginuid = 40_000 + std::process::id() % 20_000 + 7;
    let id = std::process::id();
    let scratch = tempfile::Builder::new()
        .prefix("vigil-link-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = scratch.path().display();
    let name = |how: &str| format!("vigil-e2e-{how}-{id}");
    let script = format!(
        "set -e
         cd {d}
         for f in a b c e f g; do echo '* * * * * root true' > {d}/$f; done
         mv {d}/a /etc/cron.d/{plain}
         mkdir {d}/etc
         mount --bind /etc {d}/etc
         cp {d}/b {d}/etc/{staged}
         mv {d}/etc/{staged} {d}/etc/cron.d/{bind}
         umount {d}/etc
         ln -s /etc/cron.d {d}/cron
         python3 -c 'import os; os.rename(\"{d}/c\", \"{d}/cron/{symlinked}\")'
         python3 -c 'import os; d = os.open(\"/etc/cron.d\", os.O_RDONLY); os.rename(\"{d}/e\", \"{dirfd}\", dst_dir_fd=d)'
         ln {d}/f /etc/cron.d/{hard}
         ln -s {d}/f /etc/cron.d/{soft}
         {HELPER} int80 rename {d}/g /etc/cron.d/{compat}
         ! mv {d}/missing /etc/cron.d/{failed} 2>/dev/null
         rm -f /etc/cron.d/vigil-e2e-*-{id}",
        plain = name("plain"),
        bind = name("bind"),
        staged = name("staged"),
        symlinked = name("symlinked"),
        dirfd = name("dirfd"),
        hard = name("hard"),
        soft = name("soft"),
        compat = name("compat"),
        failed = name("failed"),
    );
    // Whatever happens, nothing is left in /etc when the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("sh").args(["-c", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(format!(
        "umount {d}/etc 2>/dev/null; rm -f /etc/cron.d/vigil-e2e-*-{id} /etc/vigil-e2e-staged-{id}"
    ));
    in_session(loginuid, &script);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let events = daemon.stop().expect("daemon stops");
    let mine = session_events(&events, loginuid);
    let links = of_type(&mine, "link");
    let seen: Vec<(String, String, bool)> = links
        .iter()
        .filter(|l| text(&l["path"]).contains("/cron.d/vigil-e2e-") && l["operation"] != "unlink")
        .map(|l| {
            (
                l["operation"].as_str().unwrap_or("").to_string(),
                text(&l["path"]),
                l["result"]["error"].is_null(),
            )
        })
        .collect();
    let at = |how: &str| format!("/etc/cron.d/{}", name(how));
    let x = |op: &str, how: &str, ok: bool| (op.to_string(), at(how), ok);
    assert_eq!(
        seen,
        vec![
            x("rename", "plain", true),
            x("rename", "bind", true),
            x("rename", "symlinked", true),
            x("rename", "dirfd", true),
            x("link", "hard", true),
            x("symlink", "soft", true),
            x("rename", "compat", true),
            x("rename", "failed", false),
        ],
        "{links:#?}"
    );
    // The names removed at the end are unlink events, named the same way.
    let unlinked: Vec<String> = links
        .iter()
        .filter(|l| l["operation"] == "unlink" && l["result"]["error"].is_null())
        .map(|l| text(&l["path"]))
        .collect();
    for how in NAMED {
        assert!(
            unlinked.contains(&at(how)),
            "{how} not unlinked: {unlinked:#?}"
        );
    }
    // What the caller passed is kept beside it, and the kernel named the directories.
    let bind = links
        .iter()
        .find(|l| text(&l["path"]) == at("bind"))
        .unwrap();
    assert_eq!(
        text(&bind["requested_path"]),
        format!("{d}/etc/cron.d/{}", name("bind"))
    );
    assert_eq!(text(&bind["source"]), format!("{d}/etc/{}", name("staged")));
    assert!(
        bind["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|i| i["directory"] == true)),
        "{bind}"
    );
    let alerted: Vec<String> = of_type(&events, "alert")
        .iter()
        .filter(|a| a["process"]["loginuid"] == loginuid && a["rule"] == "crontab-modified")
        .map(|a| a["evidence"].to_string())
        .collect();
    for how in NAMED {
        assert!(
            alerted.iter().any(|e| e.contains(&name(how))),
            "no crontab-modified alert for {how}: {alerted:#?}"
        );
    }
    assert!(
        !alerted.iter().any(|e| e.contains(&name("failed"))),
        "a failed rename alerted: {alerted:#?}"
    );
}
