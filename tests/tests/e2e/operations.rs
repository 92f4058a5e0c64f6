//! Operating the daemon: a real Prometheus scrape of the running daemon, its health and
//! readiness endpoints, JSON logs that never carry a secret, environment overrides, and
//! `vigil config check` naming every problem.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use vigil_e2e::{free_port, login_session, require_root, vigil_bin, Daemon, KillOnDrop};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    Daemon::metric(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

/// systemd and the kubelet may stop the daemon while it is still starting or the moment it
/// reports ready: the stop signal must drain the pipeline and exit cleanly, never take the
/// default action and kill the process. The ready file is a FIFO here, so the daemon is held
/// exactly at the point of announcing readiness while the signal arrives.
#[test]
fn a_stop_signal_while_the_daemon_announces_readiness_drains_and_exits_cleanly() {
    require_root();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        nix::unistd::mkfifo(&ready, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let log_path = dir.path().join("stderr.log");
        let child = Command::new(vigil_bin())
            .args(["run", "--no-stdout", "--ready-file"])
            .arg(&ready)
            .env("VIGIL_SPOOL__DIR", dir.path().join("spool"))
            .env(
                "VIGIL_METRICS__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        // Wait until the daemon blocks opening the FIFO to announce readiness.
        let wchan = format!("/proc/{pid}/wchan");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&wchan).unwrap_or_default() != "wait_for_partner" {
            assert!(Instant::now() < deadline, "daemon never reached readiness");
            assert!(child.0.try_wait().unwrap().is_none(), "daemon exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Handlers first: a default action here would kill the process, kernel programs and all.
        let caught = caught_signals(pid);
        for s in [Signal::SIGTERM, Signal::SIGINT] {
            assert!(
                caught & (1 << (s as i32 - 1)) != 0,
                "no handler for {s} while announcing readiness"
            );
        }
        nix::sys::signal::kill(pid, signal).unwrap();
        // Reading the FIFO lets the start finish; the daemon then sees the pending signal.
        let announced = read_fifo(&ready, &mut child.0);
        assert_eq!(announced.trim(), pid.to_string());
        let status = child.0.wait().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            status.success(),
            "{signal}: vigil exited with {status}:\n{log}"
        );
        assert!(log.contains("stopping: draining the pipeline"), "{log}");
    }
}

/// The mask of signals `pid` has handlers for (`SigCgt` in /proc/<pid>/status).
fn caught_signals(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .expect("SigCgt in /proc/<pid>/status");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// Everything the daemon writes to the FIFO at `path`, read without ever blocking on a writer
/// that might not come (the read side is opened non-blocking).
fn read_fifo(path: &std::path::Path, child: &mut std::process::Child) -> String {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut buf = [0u8; 64];
        match fifo.read(&mut buf) {
            Ok(0) if !text.is_empty() => return text,
            Ok(n) => text.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the ready FIFO: {e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited ({status}) before announcing readiness");
        }
        assert!(Instant::now() < deadline, "nothing announced in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn metrics_health_and_readiness_of_the_running_daemon() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-never-logged";
    // ClickHouse configured but away: the spool holds everything, lag grows, errors count.
    let daemon = Daemon::start(&format!(
        "clickhouse:\n  url: http://127.0.0.1:{}\n  password: {secret}\n  retry_max_ms: 200\nlog:\n  format: json\n  level: info\n",
        free_port()
    ))
    .expect("daemon starts");
    let uid = 37_000 + std::process::id() % 1000;
    login_session(
        HELPER,
        uid,
        dir.path(),
        "/bin/true; cat /etc/shadow > /dev/null",
    );
    // Scrape until the session's events and the alert are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = daemon.scrape().expect("scrape");
        let alerts = Daemon::metric(
            &text,
            "vigil_alerts_total",
            &[("rule", "credential-store-read")],
        );
        if alerts.is_some() && Daemon::metric(&text, "vigil_spool_age_seconds", &[]).is_some() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the alert:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Events by type and outcome, from the kernel and out of the pipeline.
    assert!(
        metric(
            &text,
            "vigil_kernel_events_total",
            &[("kind", "exec"), ("outcome", "emitted")]
        ) >= 2.0
    );
    assert!(Daemon::metric(
        &text,
        "vigil_kernel_events_total",
        &[("kind", "exec"), ("outcome", "filtered")]
    )
    .is_some());
    assert!(Daemon::metric(
        &text,
        "vigil_kernel_events_total",
        &[("kind", "exec"), ("outcome", "lost")]
    )
    .is_some());
    assert!(metric(&text, "vigil_events_written_total", &[("type", "exec")]) >= 2.0);
    assert!(metric(&text, "vigil_spool_bytes", &[]) > 0.0);
    assert!(metric(&text, "vigil_spool_age_seconds", &[]) >= 0.0);
    assert!(metric(&text, "vigil_clickhouse_lag_events", &[]) > 0.0);
    assert!(metric(&text, "vigil_clickhouse_errors_total", &[]) >= 1.0);
    assert_eq!(metric(&text, "vigil_clickhouse_up", &[]), 0.0);
    assert_eq!(
        metric(
            &text,
            "vigil_alerts_total",
            &[("rule", "credential-store-read"), ("severity", "high")]
        ),
        1.0
    );
    assert!(metric(&text, "vigil_rule_eval_seconds_count", &[]) > 0.0);
    assert_eq!(metric(&text, "vigil_ready", &[]), 1.0);
    // Every metric the Grafana dashboard charts is served (webhook ones once a webhook exists).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/grafana/vigil-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut charted = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            for part in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if part.starts_with("vigil_") && !charted.contains(&part.to_string()) {
                    charted.push(part.to_string());
                }
            }
        }
    }
    assert!(charted.len() >= 10, "{charted:?}");
    for name in charted.iter().filter(|n| !n.starts_with("vigil_webhook_")) {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "the dashboard charts {name}, which the daemon does not serve"
        );
    }

    // Alive and ready, with the reason in the body: every stage running, ClickHouse away.
    let (status, body) = daemon.get("/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    for stage in [
        "capture",
        "enrich",
        "detect",
        "sink",
        "stats",
        "clickhouse_shipper",
    ] {
        assert_eq!(health["stages"][stage], "running", "{health}");
    }
    assert_eq!(health["clickhouse"]["configured"], true);
    assert!(health["clickhouse"]["lag_events"].as_u64().unwrap() > 0);
    assert!(health["clickhouse"]["last_error"].is_string(), "{health}");
    let (status, body) = daemon.get("/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = daemon.get("/nothing-here").unwrap();
    assert_eq!(status, 404);

    // JSON logs, and the password in none of them.
    let (_, log) = daemon.stop_with_log().expect("daemon stops");
    assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "kernel programs attached"),
        "{log}"
    );
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}

#[test]
fn environment_overrides_reach_the_daemon_and_config_check_names_every_problem() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // The override moves the metrics endpoint: the daemon answers where the environment says.
    let port = free_port();
    let out = Command::new(vigil_bin())
        .args(["config", "show"])
        .env("VIGIL_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("VIGIL_CLICKHOUSE__PASSWORD", "from-env-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("listen: 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(
        !shown.contains("from-env-secret") && shown.contains("<redacted>"),
        "{shown}"
    );

    let spool = dir.path().join("spool");
    let ready = dir.path().join("ready");
    let mut child = Command::new(vigil_bin())
        .args(["run", "--no-stdout", "--ready-file"])
        .arg(&ready)
        .env("VIGIL_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("VIGIL_SPOOL__DIR", &spool)
        .env("VIGIL_DETECTION__BUILTIN_RULES", "false")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "daemon not ready");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("metrics where the environment put them");
    use std::io::{Read, Write};
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(spool.exists(), "the spool went where VIGIL_SPOOL__DIR said");

    // Every problem, with the file, line and key.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "capture:\n  max_argv_bytes: 0\n  scop: all\nclickhouse:\n  url: ftp://x\n",
    )
    .unwrap();
    let out = Command::new(vigil_bin())
        .args(["config", "check"])
        .arg(&bad)
        .env("VIGIL_SPOOL__MAX_BYTEZ", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&out.stderr);
    let b = bad.display();
    assert!(
        msg.contains(&format!(
            "{b}: line 3: capture.scop: unknown setting (did you mean `scope`?)"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(
            "spool.max_bytez (environment VIGIL_SPOOL__MAX_BYTEZ): `max_bytez` is not a setting"
        ),
        "{msg}"
    );
    // Once the keys are right, the values are checked, all of them.
    std::fs::write(
        &bad,
        "capture:\n  max_argv_bytes: 0\nclickhouse:\n  url: ftp://x\n",
    )
    .unwrap();
    let out = Command::new(vigil_bin())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&format!(
            "{b}: line 2: capture.max_argv_bytes: 0 is out of range"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "{b}: line 4: clickhouse.url: `ftp://x` is not an http:// or https:// URL"
        )),
        "{msg}"
    );
}

/// The capability names of `CapabilityBoundingSet=` in the systemd unit.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/vigil.service"),
    )
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities");
    let mut caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    caps.sort();
    caps
}

/// The capabilities the chart's DaemonSet adds.
fn daemonset_capabilities() -> Vec<String> {
    let ds = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/helm/vigil/templates/daemonset.yaml"),
    )
    .unwrap();
    let mut caps = Vec::new();
    let mut inside = false;
    for line in ds.lines() {
        let t = line.trim();
        if t == "add:" {
            inside = true;
        } else if inside && t.starts_with("- ") {
            caps.push(t.trim_start_matches("- ").to_string());
        } else if inside && !t.starts_with('#') {
            inside = false;
        }
    }
    caps.sort();
    caps
}

#[test]
fn the_daemon_works_with_only_the_capabilities_the_deploy_files_grant() {
    require_root();
    let caps = unit_capabilities();
    assert_eq!(
        caps,
        daemonset_capabilities(),
        "the unit and the DaemonSet grant the same"
    );
    let bounding = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{}", c.to_ascii_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let wrapper: Vec<String> = [
        "setpriv",
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        "--no-new-privs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sock_dir = tempfile::tempdir().unwrap();
    let socket = sock_dir.path().join("control.sock");
    let daemon = Daemon::start_wrapped(
        &wrapper,
        None,
        &format!(
            "respond:\n  mode: enforce\n  control_socket: {}\n",
            socket.display()
        ),
    )
    .expect("daemon starts with those capabilities alone");
    // It holds exactly those.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", daemon.pid().unwrap())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let bit = |name: &str| match name {
        "CHOWN" => 0,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "KILL" => 5,
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("unexpected capability {other}"),
    };
    // What was granted, less what this machine's own bounding set lacks (a container may not
    // have SYS_RESOURCE, which kernels from 5.11 do not need for maps anyway).
    let own_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let want = caps.iter().fold(0u64, |m, c| m | 1 << bit(c)) & own_bounding;
    assert_eq!(eff, want, "CapEff {eff:#x}");
    let dir = tempfile::tempdir().unwrap();
    let uid = 38_000 + std::process::id() % 1000;
    login_session(
        HELPER,
        uid,
        dir.path(),
        "/usr/bin/id > /dev/null; cat /etc/shadow > /dev/null",
    );
    // Responses work with those capabilities: the connect programs attached, a session killed.
    let (_, ready) = daemon.get("/readyz").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        ready["respond"]["mechanisms"]["deny_connect"], "cgroup_connect",
        "{ready}"
    );
    let mut victim = std::process::Command::new(HELPER)
        .args(["login", &(uid + 1).to_string(), "--", "/bin/sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sid = std::fs::read_to_string(format!("/proc/{}/sessionid", victim.id())).unwrap();
    let out = std::process::Command::new(vigil_bin())
        .args(["respond", "kill-session", sid.trim(), "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(victim.wait().unwrap().signal(), Some(9));
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let ours = |t: &str| {
        events
            .iter()
            .filter(|e| e["type"] == t && e["process"]["loginuid"] == uid)
            .count()
    };
    assert!(ours("exec") >= 3, "commands captured");
    assert!(ours("file_read") >= 1, "file reads captured");
    assert_eq!(ours("alert"), 1, "the shadow read detected");
}
