//! The daemon against someone with root working on it directly: a pid added to its kernel
//! ignore list, a credential file added to its routine (folded) files, its kernel counters zeroed, the daemon stopped with SIGSTOP for a while. Each is
//! noticed by the running daemon and raised as a critical alert (`monitor-tampered`).

use std::time::Duration;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use vigil_e2e::{of_type, require_root, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// Every loaded kernel map of this name (the daemon's; tests run one daemon at a time).
fn maps_named(name: &str) -> Vec<MapData> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(name))
        .filter_map(|info| MapData::from_id(info.id()).ok())
        .collect()
}

fn tamper_alerts(events: &[serde_json::Value]) -> Vec<String> {
    of_type(events, "alert")
        .into_iter()
        .filter(|a| a["rule"] == "monitor-tampered")
        .map(|a| a["evidence"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_daemon_notices_changes_to_its_kernel_side_and_being_stopped() {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    // Some events, so the counters are not zero.
    let status = std::process::Command::new(HELPER)
        .args([
            "login",
            "66000",
            "--",
            "/bin/bash",
            "-c",
            "for i in $(seq 20); do /bin/true; done",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));

    // 1. A process added to the ignore list (what an insider would do to go unseen).
    let mut found = 0;
    for data in maps_named("IGNORED_TGIDS") {
        let mut map: HashMap<MapData, u32, u8> =
            HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
        map.insert(4_242_424, 1, 0).unwrap();
        found += 1;
    }
    assert!(found > 0, "the daemon's ignore list was not found");
    // 1b. /etc/shadow made a routine file (its reads would fold into a program's count).
    use std::os::unix::fs::MetadataExt as _;
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    let dev = (libc::major(shadow.dev()) as u64) << 20 | libc::minor(shadow.dev()) as u64;
    for data in maps_named("FOLD_ROUTINE") {
        // FoldFileKey { ino, dev, _pad } and FoldFileCtime { sec, nsec, _pad }, as u64 pairs.
        let mut map: HashMap<MapData, [u64; 2], [u64; 2]> =
            HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
        map.insert(
            [shadow.ino(), dev],
            [shadow.ctime() as u64, shadow.ctime_nsec() as u64],
            0,
        )
        .unwrap();
    }
    let status = std::process::Command::new(HELPER)
        .args([
            "login",
            "66001",
            "--",
            "/usr/bin/python3",
            "-c",
            "[open('/etc/shadow', 'rb').read() for i in range(3)]",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // 1c. A session process opens its loginuid file for writing (without writing): the kernel
    // notes that login uids may change from now on; clearing that note is tampering too.
    let status = std::process::Command::new(HELPER)
        .args([
            "login",
            "66002",
            "--",
            "/usr/bin/python3",
            "-c",
            "open('/proc/self/loginuid', 'w')",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let mut flags = 0;
    for data in maps_named("LOGINUID_OPENED") {
        let mut flag: aya::maps::Array<MapData, u32> =
            aya::maps::Array::try_from(Map::from_map_data(data).unwrap()).unwrap();
        assert_eq!(
            flag.get(&0, 0).unwrap(),
            1,
            "the open was noticed by the kernel"
        );
        std::thread::sleep(Duration::from_millis(2500)); // the daemon sees it set
        flag.set(0, 0, 0).unwrap();
        flags += 1;
    }
    assert!(flags > 0, "the daemon's login-uid flag was not found");
    // 2. The kernel counters zeroed.
    for data in maps_named("COUNTERS") {
        let mut counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::from_map_data(data).unwrap()).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        for i in 0..counters.len() {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).unwrap();
            counters.set(i, zeros, 0).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(3000));
    // 3. Stopped for five seconds, then let go.
    let pid = nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let events = daemon.stop().expect("daemon stops");
    let tampers: Vec<String> = of_type(&events, "tamper")
        .iter()
        .map(|t| t["check"].as_str().unwrap_or("").to_string())
        .collect();
    // The watched file is never folded, whatever the routine table says.
    let shadow_opens = of_type(&events, "open")
        .iter()
        .filter(|e| e["process"]["loginuid"] == 66001 && e["path"] == "/etc/shadow")
        .count();
    assert_eq!(shadow_opens, 3, "each read of /etc/shadow is sent");
    for check in [
        "ignore_list_changed",
        "fold_list_changed",
        "loginuid_flag_reset",
        "counters_reset",
        "suspended",
    ] {
        assert!(
            tampers.iter().any(|t| t == check),
            "{check} not noticed: {tampers:?}"
        );
    }
    let alerts = tamper_alerts(&events);
    assert!(alerts.len() >= 3, "tampering not alerted: {alerts:?}");
    assert!(alerts.iter().any(|a| a.contains("4242424")), "{alerts:?}");
    assert!(of_type(&events, "alert")
        .iter()
        .filter(|a| a["rule"] == "monitor-tampered")
        .all(|a| a["severity"] == "critical"));
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): the daemon says READY=1 once capturing and
/// pings the watchdog while it runs; stopped with SIGSTOP, the pings stop (and systemd would
/// kill and restart it). A socket stands in for systemd here: no systemd runs on this machine
/// as the init of the test's namespace.
#[test]
fn the_daemon_tells_systemd_it_is_ready_and_alive_and_falls_silent_when_stopped() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &sock_path);
    std::env::set_var("WATCHDOG_USEC", "400000");
    // systemd names the watched process in WATCHDOG_PID: the daemon's own pid, set by a shell
    // that then becomes the daemon.
    let wrapper = [
        "/bin/sh".to_string(),
        "-c".to_string(),
        "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"".to_string(),
    ];
    let daemon = Daemon::start_wrapped(&wrapper, None, "").expect("daemon starts");
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("WATCHDOG_USEC");
    let drain = |for_ms: u64| {
        let until = std::time::Instant::now() + Duration::from_millis(for_ms);
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while std::time::Instant::now() < until {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    };
    let first = drain(1500);
    assert!(first.iter().any(|m| m.contains("READY=1")), "{first:?}");
    assert!(
        first.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{first:?}"
    );
    let pid = nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let _ = drain(300); // what was already sent
    let stopped = drain(1500);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        !stopped.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged while stopped: {stopped:?}"
    );
    let resumed = drain(1000);
    assert!(
        resumed.iter().any(|m| m.contains("WATCHDOG=1")),
        "{resumed:?}"
    );
    daemon.stop().expect("daemon stops");
}

/// The kernel's login-uid-written flag (processes without a login uid skip the session lookup
/// until it is set) is set by a process in a session opening a `loginuid` file for writing, or
/// by any process opening another task's; not by a process outside every session writing its
/// own, as PAM does for every new login (which only enters a session).
#[test]
fn the_login_uid_flag_is_set_by_sessions_and_by_anothers_file_not_by_logins() {
    require_root();
    let own = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
    assert_eq!(
        own.trim(),
        "4294967295",
        "this test starts logins from outside every session: run it outside a login session"
    );
    let flag = || -> u32 {
        let data = maps_named("LOGINUID_OPENED")
            .pop()
            .expect("the daemon's login-uid flag");
        let flag: aya::maps::Array<MapData, u32> =
            aya::maps::Array::try_from(Map::from_map_data(data).unwrap()).unwrap();
        flag.get(&0, 0).unwrap()
    };
    let run = |args: &[&str]| {
        let status = std::process::Command::new(HELPER)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    };
    let python = |code: &str| {
        let status = std::process::Command::new("/usr/bin/python3")
            .args(["-c", code])
            .status()
            .unwrap();
        assert!(status.success(), "{code}");
    };
    for case in ["another task's file", "a session's own"] {
        let daemon = Daemon::start("").expect("daemon starts");
        assert_eq!(flag(), 0, "clear at start");
        // A login started from outside every session: the helper writes its own login uid.
        run(&["login", "66100", "--", "/bin/true"]);
        assert_eq!(flag(), 0, "a new login does not set it");
        if case == "another task's file" {
            // Outside every session, another task's file (its fd could be handed to that task).
            python("open('/proc/1/loginuid', 'w')");
        } else {
            // Inside a session, its own: it could unset it and stay in the session.
            run(&[
                "login",
                "66101",
                "--",
                "/usr/bin/python3",
                "-c",
                "open('/proc/self/loginuid', 'w')",
            ]);
        }
        assert_eq!(flag(), 1, "{case} sets it");
        daemon.stop().expect("daemon stops");
    }
}

/// Stopped while a storm fills the kernel ring buffer, the daemon wakes to a backlog that keeps
/// every stage's channel full for a while: the report that it was stopped must wait for room,
/// not be dropped because there was none at that moment.
#[test]
fn being_stopped_is_reported_even_when_the_pipeline_is_backed_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    // Channels of a few batches, and every open an event of its own (no folding).
    let daemon = Daemon::start(
        "pipeline:\n  channel_capacity: 1\n  stats_interval_ms: 100\ncapture:\n  fold:\n    enabled: false\n",
    )
    .expect("daemon starts");
    let pid = nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32);
    let mut storm = std::process::Command::new(HELPER)
        .args([
            "login",
            "66010",
            "--",
            HELPER,
            "storm",
            "open-read",
            "200000",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(storm.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(4));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    let events = daemon.stop().expect("daemon stops");
    assert!(
        of_type(&events, "loss")
            .iter()
            .any(|l| l["stage"] == "kernel"),
        "the storm did not fill the ring buffer: the test did not back the pipeline up"
    );
    let suspended = of_type(&events, "tamper")
        .iter()
        .filter(|t| t["check"] == "suspended")
        .count();
    assert_eq!(suspended, 1, "the stop was reported once");
}
