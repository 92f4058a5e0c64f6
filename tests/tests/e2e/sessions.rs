//! The session model end to end: a login session produces one `session_start` (host, boot id,
//! how it was entered, where from, its ancestry) and, when its last process exits, one
//! `session_end` with what it did.

use std::process::Command;

use vigil_e2e::{of_type, require_root, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

#[test]
fn a_session_starts_once_and_ends_with_its_last_process() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let loginuid = 47_000 + std::process::id() % 2_000;
    // The origin is read from the session's environment at its start, so the shell lives a
    // moment (see the issue notes: very short sessions can miss it).
    let status = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", "/bin/bash", "-c"])
        .arg("sleep 1; /usr/bin/id > /dev/null; cat /etc/hostname > /dev/null")
        .env("SSH_CONNECTION", "203.0.113.7 50022 10.0.0.1 22")
        .status()
        .unwrap();
    assert!(status.success());
    let events = daemon.stop().expect("daemon stops");
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .cloned()
        .collect();

    let starts = of_type(&ours, "session_start");
    assert_eq!(starts.len(), 1, "{starts:?}");
    let start = starts[0];
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(start["boot_id"], boot_id.trim());
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(start["host"], host.as_str());
    assert_eq!(start["loginuid"], loginuid);
    assert_eq!(start["entry"], "other");
    assert_eq!(start["ssh"]["source_address"], "203.0.113.7");
    assert_eq!(start["ssh"]["source_port"], 50022);
    assert_eq!(start["ssh"]["server_port"], 22);
    let ancestry = start["ancestry"].as_array().unwrap();
    assert_eq!(ancestry.last().unwrap()["name"], "bash", "{ancestry:?}");
    // It comes before every other event of the session.
    let first = ours
        .iter()
        .position(|e| e["type"] == "session_start")
        .unwrap();
    assert_eq!(first, 0);

    let ends = of_type(&ours, "session_end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    let end = ends[0];
    assert_eq!(end["session"], start["session"]);
    // bash, sleep, id, cat.
    assert_eq!(end["counts"]["commands"], 4, "{end}");
    let hostname_len = std::fs::metadata("/etc/hostname").unwrap().len();
    assert!(end["counts"]["bytes_read"].as_u64().unwrap() >= hostname_len);
    assert!(end["counts"]["files_opened"].as_u64().unwrap() > 0);
    assert!(end["duration_ms"].as_u64().unwrap() >= 1000, "{end}");
    // ...and after the last exit of the session.
    let last_exit = ours.iter().rposition(|e| e["type"] == "exit").unwrap();
    let end_at = ours
        .iter()
        .position(|e| e["type"] == "session_end")
        .unwrap();
    assert!(end_at > last_exit);
}

/// A session that became root before the daemon looked (a `sudo -i` started while it was
/// stopped) is privileged: its `session_start` says it, `vigil sessions` and the audit report
/// list it. The same session without sudo is not.
#[test]
fn root_gained_before_the_daemon_looked_makes_the_session_privileged() {
    require_root();
    let tester = vigil_e2e::ensure_user();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // Two sessions of the test user, started before the daemon: one whose shell ran a root
    // shell through sudo, one whose shell did not. Each waits on its FIFO, then reads a file.
    let session = |name: &str, sudo: bool| {
        let fifo = dir.path().join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        // It lives on a while after its first event: the daemon reads the session's processes
        // from /proc when it first sees the session.
        let wait = format!(
            "read line < {}; cat /etc/hostname > /dev/null; sleep 3",
            fifo.display()
        );
        let script = if sudo {
            format!("sudo -n /bin/bash -c '{wait}'")
        } else {
            wait
        };
        let child = Command::new(HELPER)
            .args(["login", &tester.to_string(), "--", HELPER, "setuid"])
            .arg(tester.to_string())
            .args(["--", "/bin/bash", "-c", &script])
            .spawn()
            .unwrap();
        (vigil_e2e::KillOnDrop(child), fifo)
    };
    let (mut rooted, rooted_fifo) = session("rooted", true);
    let (mut plain, plain_fifo) = session("plain", false);
    // Both are waiting (sudo's root shell included) before the daemon starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Command::new("pgrep")
        .args(["-u", "0", "-f", "^/bin/bash -c read line < .*rooted"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sudo's root shell did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    for fifo in [&rooted_fifo, &plain_fifo] {
        std::fs::write(fifo, "go\n").unwrap();
    }
    assert!(rooted.0.wait().unwrap().success());
    assert!(plain.0.wait().unwrap().success());
    let events = daemon.stop().expect("daemon stops");

    let session_of = |pid: u32| {
        events
            .iter()
            .find(|e| e["process"]["pid"] == pid || e["process"]["ppid"] == pid)
            .and_then(|e| e["process"]["sessionid"].as_u64())
            .unwrap_or_else(|| panic!("session of {pid} not captured"))
    };
    // The helper's pid is its session's first process (it became the bash that waits).
    let (rooted_id, plain_id) = (session_of(rooted.0.id()), session_of(plain.0.id()));
    let start_of = |id: u64| {
        of_type(&events, "session_start")
            .into_iter()
            .find(|e| e["session"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no session_start for {id}"))
    };
    assert_eq!(
        start_of(rooted_id)["root_when_seen"],
        true,
        "{}",
        start_of(rooted_id)
    );
    assert!(start_of(plain_id).get("root_when_seen").is_none());
    // No change of ids was in view: the sudo happened before the daemon.
    assert!(!events
        .iter()
        .any(|e| e["type"] == "priv" && e["process"]["sessionid"] == rooted_id));

    let spool_arg = spool.to_str().unwrap();
    let vigil = |args: &[&str]| {
        let out = Command::new(vigil_e2e::vigil_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let listed = vigil(&["sessions", "--json", "--spool", spool_arg]);
    let gained = |id: u64| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session"] == id)
            .map(|s| s["gained_root"] == true)
            .unwrap()
    };
    assert!(gained(rooted_id), "{listed}");
    assert!(!gained(plain_id), "{listed}");
    let report = vigil(&["report", "--since", "1h", "--json", "--spool", spool_arg]);
    let privileged: Vec<u64> = report["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["summary"]["session"].as_u64())
        .collect();
    assert!(privileged.contains(&rooted_id), "{report}");
    assert!(!privileged.contains(&plain_id), "{report}");
}
