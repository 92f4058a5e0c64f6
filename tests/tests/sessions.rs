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
