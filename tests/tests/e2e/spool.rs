//! The spool as the embedded store, end to end: sessions captured from the kernel are queryable
//! with `vigil sessions` and `vigil session`, and a daemon killed with SIGKILL and restarted on
//! the same spool keeps what it had, exactly once, and goes on appending.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{raw_bytes, require_root, vigil_bin, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn vigil(args: &[&str], spool: &Path) -> (i32, String, String) {
    let out = Command::new(vigil_bin())
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .expect("vigil runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sessions(spool: &Path) -> Vec<Value> {
    let (code, out, err) = vigil(&["sessions", "--json"], spool);
    assert_eq!(code, 0, "vigil sessions failed: {err}");
    serde_json::from_str(&out).expect("sessions JSON")
}

fn run_session(loginuid: u32, script: &str) {
    let home = std::env::temp_dir();
    assert!(vigil_e2e::login_session(HELPER, loginuid, &home, script).success());
}

/// Waits until the spool shows a session of `loginuid` with at least `commands` commands.
fn wait_for_session(spool: &Path, loginuid: u32, commands: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = sessions(spool)
            .into_iter()
            .find(|s| s["loginuid"] == loginuid && s["commands"].as_u64() >= Some(commands))
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "session of {loginuid} never reached the spool"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sessions_are_queryable_and_survive_sigkill() {
    require_root();
    let store = tempfile::tempdir().unwrap();
    let spool = store.path().join("spool");
    let base = 30_000 + std::process::id() % 5_000;
    let (first, second) = (base, base + 5_000);

    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    run_session(
        first,
        "/usr/bin/id > /dev/null; cat /etc/hostname > /dev/null; /bin/true",
    );
    let before = wait_for_session(&spool, first, 3);
    daemon.kill().expect("SIGKILL");

    // A new daemon on the same spool: what the first one wrote is still there, once.
    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon restarts");
    run_session(second, "/usr/bin/uname -a > /dev/null");
    daemon.stop().expect("daemon stops cleanly");

    let list = sessions(&spool);
    let mine: Vec<&Value> = list
        .iter()
        .filter(|s| s["loginuid"] == first || s["loginuid"] == second)
        .collect();
    assert_eq!(mine.len(), 2, "both sessions listed once: {list:?}");
    let after = mine.iter().find(|s| s["loginuid"] == first).unwrap();
    assert_eq!(
        after["commands"], before["commands"],
        "no duplicates after restart"
    );
    assert_eq!(after["session"], before["session"]);

    // Filter by host: this one has them, another has none.
    let (code, out, _) = vigil(&["sessions", "--json", "--host", "no-such-host"], &spool);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[]");
    let this_host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let (_, out, _) = vigil(&["sessions", "--json", "--host", &this_host], &spool);
    let on_host: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(on_host.len() >= 2 && on_host.iter().all(|s| s["host"] == this_host.as_str()));

    // Filter by user.
    let (code, out, err) = vigil(
        &["sessions", "--json", "--user", &second.to_string()],
        &spool,
    );
    assert_eq!(code, 0, "{err}");
    let filtered: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(filtered.iter().all(|s| s["loginuid"] == second) && !filtered.is_empty());

    // One session's timeline: time ordered, the commands exactly once, the hostname read.
    let id = after["session"].as_u64().unwrap().to_string();
    let (code, out, err) = vigil(&["session", &id, "--json"], &spool);
    assert_eq!(code, 0, "{err}");
    let timeline: Value = serde_json::from_str(&out).unwrap();
    let events = timeline["events"].as_array().unwrap();
    let monos: Vec<u64> = events
        .iter()
        .map(|e| e["mono_ns"].as_u64().unwrap())
        .collect();
    assert!(monos.windows(2).all(|w| w[0] <= w[1]), "time ordered");
    let ids: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "exec" && raw_bytes(&e["filename"]) == b"/usr/bin/id")
        .collect();
    assert_eq!(ids.len(), 1, "exec of id exactly once");
    let hostname_len = std::fs::metadata("/etc/hostname").unwrap().len();
    assert!(events.iter().any(|e| e["type"] == "file_read"
        && e["path"] == "/etc/hostname"
        && e["bytes"].as_u64() == Some(hostname_len)));

    // The same for people: a timeline and a process tree.
    let (code, out, _) = vigil(&["session", &id], &spool);
    assert_eq!(code, 0);
    assert!(
        out.contains("process tree:") && out.contains("exec   /usr/bin/id"),
        "{out}"
    );

    // Asking for what is not there is a clear error, not a crash.
    let (code, _, err) = vigil(&["session", "4294967294"], &spool);
    assert_eq!(code, 2);
    assert!(err.contains("no session 4294967294"), "{err}");
    let (code, _, err) = vigil(&["sessions", "--since", "last tuesday"], &spool);
    assert_eq!(code, 2);
    assert!(err.contains("neither a time"), "{err}");
}

#[test]
fn a_full_spool_writes_down_exactly_what_it_dropped() {
    require_root();
    let store = tempfile::tempdir().unwrap();
    let spool = store.path().join("spool");
    let daemon = Daemon::start(&format!(
        "spool:\n  dir: {}\n  segment_bytes: 16384\n  max_bytes: 65536\n  when_full: drop_oldest\n",
        spool.display()
    ))
    .expect("daemon starts");
    let loginuid = 36_000 + std::process::id() % 4_000;
    run_session(loginuid, "for i in $(seq 200); do /bin/true; done");
    let (_, log) = daemon.stop_with_log().expect("daemon stops cleanly");

    // The daemon's own count of what the spool dropped...
    let dropped: u64 = log
        .lines()
        .filter(|l| l.contains("spool counters"))
        .find_map(|l| {
            let rest = l.split("dropped").nth(1)?;
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
        .expect("spool counters in the log");
    assert!(dropped > 0, "a 64 KiB spool must drop something: {log}");
    // ...is exactly what the loss records left in the spool say.
    let out = Command::new(vigil_bin())
        .args(["spool", "stats", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["lost"]["spool"], dropped, "{stats}");
    assert_eq!(stats["damaged"], 0);
    assert!(
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .map(|e| e.metadata().unwrap().len())
            .sum::<u64>()
            <= 65536 + 16384
    );
}

/// The spool on a disk that fills up (a 2 MiB tmpfs, the real kernel's ENOSPC): with
/// drop_oldest the daemon deletes its oldest segments and writes the loss down; with
/// stop_accepting it holds what it can in memory, refuses the rest, and once the disk has room
/// again writes every held event and the count of the refused. The daemon keeps running, and
/// everything captured is either in the spool or counted in a loss record.
#[test]
fn a_full_disk_applies_when_full_with_a_loss_record() {
    require_root();
    for when_full in ["drop_oldest", "stop_accepting"] {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let mount = |opts: &str| {
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
                .arg(&spool)
                .status()
                .unwrap();
            assert!(status.success(), "mount {opts}");
        };
        mount("size=2m");
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(spool.clone());
        let daemon = Daemon::start(&format!(
            "spool:\n  dir: {}\n  segment_bytes: 131072\n  max_bytes: 1073741824\n  when_full: {when_full}\n",
            spool.display()
        ))
        .expect("daemon starts");
        let loginuid = 64_000 + std::process::id() % 1000;
        // Enough to fill 2 MiB several times over.
        run_session(loginuid, "for i in $(seq 3000); do /bin/true; done");
        std::thread::sleep(Duration::from_millis(1500));
        let metrics = daemon.scrape().expect("metrics while the disk is full");
        assert!(
            Daemon::metric(&metrics, "vigil_spool_disk_full_total", &[]).unwrap_or(0.0) > 0.0,
            "{when_full}: the disk was never full"
        );
        if when_full == "stop_accepting" {
            // Room returns: the held events and the count of the refused reach the disk.
            Command::new("mount")
                .args(["-o", "remount,size=64m"])
                .arg(&spool)
                .status()
                .unwrap();
            run_session(loginuid, "/bin/true");
            std::thread::sleep(Duration::from_millis(1500));
        }
        daemon
            .stop()
            .expect("the daemon kept running and stops cleanly");
        let mut lost = 0u64;
        let mut reasons = Vec::new();
        vigil::spool::read_all(&spool, 0, |item| {
            let event = match item {
                vigil::spool::SpoolItem::Event { event, .. } => event,
                vigil::spool::SpoolItem::Damaged(e) => e,
            };
            if let vigil::event::EventBody::Loss(l) = &event.body {
                lost += l.count;
                reasons.push(l.reason.clone());
            }
        })
        .expect("the spool reads");
        assert!(lost > 0, "{when_full}: no loss written down: {reasons:?}");
        let expect = match when_full {
            "drop_oldest" => "oldest segment deleted",
            _ => "the disk under the spool was full",
        };
        assert!(
            reasons.iter().any(|r| r.contains(expect)),
            "{when_full}: {reasons:?}"
        );
    }
}
