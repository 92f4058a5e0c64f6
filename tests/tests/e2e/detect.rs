//! Detections on real scenarios: each attack runs in a login session of its own on the real
//! kernel, and the daemon must raise the built-in rule for it (with its ATT&CK technique) and
//! score the session; a benign administration session raises nothing. Alerts reach a real HTTP
//! receiver signed, retried and de-duplicated.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{
    ensure_user, of_type, require_root, scenarios::Fixtures, vigil_bin, Daemon, WebhookReceiver,
};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// Runs `script` with bash in a new login session of `loginuid`, HOME in `home`.
fn session(loginuid: u32, home: &Path, script: &str) {
    vigil_e2e::login_session(HELPER, loginuid, home, script);
}

#[test]
fn every_builtin_scenario_is_detected_and_benign_work_is_not() {
    require_root();
    ensure_user();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let fixtures = Fixtures::start(dir.path());
    let home = fixtures.home.clone();
    let scenarios = fixtures.attacks(false);
    let benign = fixtures.benign(1).remove(0)
        + "; ls -la /etc > /dev/null; df -h > /dev/null; ps aux > /dev/null; uptime; id; \
           cat /etc/hostname /etc/os-release > /dev/null; grep -c root /etc/passwd; \
           curl -s http://127.0.0.1:1/ > /dev/null; python3 -c 'print(1)' > /dev/null; \
           sudo -n -u root systemctl is-active cron > /dev/null 2>&1; crontab -l > /dev/null 2>&1; true";

    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    let base = 30_000 + (std::process::id() % 1000) * 40;
    for (i, s) in scenarios.iter().enumerate() {
        session(base + i as u32, &home, &s.script);
    }
    let benign_uid = base + 39;
    session(benign_uid, &home, &benign);
    std::thread::sleep(Duration::from_millis(500));
    let events = daemon.stop().expect("daemon stops");
    drop(fixtures);

    let alerts = of_type(&events, "alert");
    let mut missed = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let uid = base + i as u32;
        let hit = alerts
            .iter()
            .find(|a| a["process"]["loginuid"] == uid && a["rule"] == s.rule);
        match hit {
            Some(a) => {
                assert_eq!(a["technique"], s.technique, "{}", s.name);
                assert!(a["session_risk"].as_u64().unwrap() > 0);
                assert!(!a["evidence"].as_str().unwrap().is_empty());
                assert!(a["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.as_str().unwrap().contains(s.technique)));
            }
            None => missed.push(format!(
                "{} ({}): alerts in its session: {:?}",
                s.name,
                s.rule,
                alerts
                    .iter()
                    .filter(|a| a["process"]["loginuid"] == uid)
                    .map(|a| a["rule"].as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        missed.is_empty(),
        "scenarios not detected:\n{}",
        missed.join("\n")
    );
    let benign_alerts: Vec<&&Value> = alerts
        .iter()
        .filter(|a| a["process"]["loginuid"] == benign_uid)
        .collect();
    assert!(
        benign_alerts.is_empty(),
        "benign session raised {benign_alerts:?}"
    );

    // Sessions by risk.
    let out = Command::new(vigil_bin())
        .args(["sessions", "--json", "--min-risk", "40", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    assert!(out.status.success());
    let risky: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let uids: Vec<u64> = risky
        .iter()
        .filter_map(|s| s["loginuid"].as_u64())
        .collect();
    assert!(
        uids.contains(&(base as u64)),
        "shadow session (risk 40) listed: {uids:?}"
    );
    assert!(
        !uids.contains(&((base + 5) as u64)),
        "sudo session (risk 15) not listed: {:?}",
        risky
            .iter()
            .find(|s| s["loginuid"] == base + 5)
            .map(|s| &s["risk_reasons"])
    );
    assert!(!uids.contains(&(benign_uid as u64)));
    assert!(risky.iter().all(|s| s["risk"].as_u64().unwrap() >= 40));
}

#[test]
fn alerts_reach_a_webhook_signed_retried_and_once() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let secret = "test-webhook-secret";
    let receiver = WebhookReceiver::start(dir.path(), secret, 1).expect("webhook receiver");
    let (port, log) = (receiver.port, receiver.log.clone());
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let daemon = Daemon::start(&format!(
        "alerts:\n  webhooks:\n    - url: http://127.0.0.1:{port}/hook\n      secret_file: {}\n      min_severity: high\n",
        secret_file.display()
    ))
    .expect("daemon starts");
    let loginuid = 33_000 + std::process::id() % 1000;
    // The same detection twice in one session (one delivery), and a low-severity one (none).
    session(
        loginuid,
        dir.path(),
        "cat /etc/shadow > /dev/null; cat /etc/shadow > /dev/null",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.iter().any(|l| l["answered"] == 200) {
            break lines;
        }
        assert!(Instant::now() < deadline, "no delivery: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let events = daemon.stop().expect("daemon stops");
    let all = receiver.received();
    receiver.stop();
    assert!(all.len() >= received.len());
    // First attempt refused, second accepted, and no more: the repeat was de-duplicated.
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["answered"], 500);
    assert_eq!(all[1]["answered"], 200);
    assert_eq!(all[1]["headers"]["X-Vigil-Attempt"], "2");
    assert!(all.iter().all(|l| l["signature_valid"] == true), "{all:#?}");
    let body = &all[1]["body"];
    assert_eq!(body["type"], "alert");
    assert_eq!(body["rule"], "credential-store-read");
    assert_eq!(all[1]["headers"]["X-Vigil-Delivery"], body["alert_id"]);
    // Both hits are alerts in the stream all the same.
    let ours = of_type(&events, "alert")
        .into_iter()
        .filter(|a| a["process"]["loginuid"] == loginuid && a["rule"] == "credential-store-read")
        .count();
    assert_eq!(ours, 2);
}

/// Waits until `events_file` holds an alert of `rule` for `loginuid`.
fn wait_alert(events_file: &Path, loginuid: u32, rule: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The daemon may be writing the last line: take whole lines only.
        let text = std::fs::read_to_string(events_file).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if of_type(&events, "alert")
            .iter()
            .any(|a| a["process"]["loginuid"] == loginuid && a["rule"] == rule)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

const SIGMA_WGET_TMP: &str = r#"
title: Wget Output To Temporary Directory
id: 0f3b2a61-7d5e-4c3a-9f1e-2b7c8d9e0a11
logsource:
    product: linux
    category: process_creation
detection:
    selection_img:
        Image|endswith: '/sed'
    selection_cmd:
        CommandLine|contains: 'vigil-sigma-marker'
    condition: all of selection_*
tags:
    - attack.t1105
level: high
---
title: Auditd Config Change
logsource:
    product: linux
    service: auditd
detection:
    selection:
        type: CONFIG_CHANGE
    condition: selection
tags:
    - attack.t1562.012
level: low
"#;

#[test]
fn sigma_rules_import_and_rules_files_reload_without_restart() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sigma_dir = dir.path().join("sigma");
    std::fs::create_dir_all(&sigma_dir).unwrap();
    std::fs::write(sigma_dir.join("proc.yml"), SIGMA_WGET_TMP).unwrap();
    let imported = dir.path().join("imported.yaml");
    let report = dir.path().join("report.json");
    let out = Command::new(vigil_bin())
        .args(["rules", "import-sigma"])
        .arg(&sigma_dir)
        .arg("-o")
        .arg(&imported)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 1 Sigma rules, 1 not importable"),
        "{stderr}"
    );
    assert!(stderr.contains("service `auditd`"), "{stderr}");
    let rep: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        rep["imported"][0]["id"],
        "sigma-wget-output-to-temporary-directory"
    );
    assert_eq!(rep["skipped"][0]["title"], "Auditd Config Change");

    // A rules file of our own next to the import; it will change while the daemon runs.
    let mine = dir.path().join("mine.yaml");
    let rule = |id: &str, marker: &str| {
        format!(
            "  - id: {id}\n    title: marker {marker}\n    technique: T1059.004\n    severity: medium\n    risk: 10\n    when: type == \"exec\" and argv contains \"{marker}\"\n"
        )
    };
    std::fs::write(
        &mine,
        format!("rules:\n{}", rule("first-marker", "vigil-first")),
    )
    .unwrap();
    let check = Command::new(vigil_bin())
        .args(["rules", "check"])
        .arg(&mine)
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let daemon = Daemon::start(&format!(
        "detection:\n  rules_files: [{}, {}]\n",
        imported.display(),
        mine.display()
    ))
    .expect("daemon starts");
    let events_file = daemon.events_path.clone();
    let uid = 34_000 + std::process::id() % 1000;
    session(
        uid,
        dir.path(),
        "echo x | sed s/vigil-sigma-marker// > /dev/null; /bin/echo vigil-first > /dev/null",
    );
    assert!(wait_alert(
        &events_file,
        uid,
        "sigma-wget-output-to-temporary-directory"
    ));
    assert!(wait_alert(&events_file, uid, "first-marker"));

    // A new rule appears without a restart.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &mine,
        format!(
            "rules:\n{}{}",
            rule("first-marker", "vigil-first"),
            rule("second-marker", "vigil-second")
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    session(uid + 1, dir.path(), "/bin/echo vigil-second > /dev/null");
    assert!(
        wait_alert(&events_file, uid + 1, "second-marker"),
        "reloaded rule fired"
    );

    // A broken version is refused with its line, and the rules in force stay.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &mine,
        "rules:\n  - id: broken\n    title: b\n    technique: T1059\n    severity: high\n    risk: 5\n    when: type == \"exec\" and argv contans \"x\"\n",
    )
    .unwrap();
    let check = Command::new(vigil_bin())
        .args(["rules", "check"])
        .arg(&mine)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&check.stderr);
    assert!(
        msg.contains(&format!("{}:2: rule `broken`", mine.display())),
        "{msg}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    session(uid + 2, dir.path(), "/bin/echo vigil-second > /dev/null");
    assert!(
        wait_alert(&events_file, uid + 2, "second-marker"),
        "rules in force kept"
    );
    let (_, log) = daemon.stop_with_log().expect("daemon stops");
    assert!(log.contains("rules not reloaded"), "{log}");
    let metrics_hint = log.contains("mine.yaml:2");
    assert!(metrics_hint, "reload error names the file and line: {log}");
}

/// Issue 17's finding: bash writes its history at exit with `O_TRUNC`, creating the file on the
/// first interactive login of an account. Created by that open, it emptied nothing: no alert.
/// Truncating the history that exists still alerts (so the check is not a way out), and so
/// does moving it away.
#[test]
fn a_first_interactive_login_writes_its_history_without_an_alert() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let daemon = Daemon::start("").expect("daemon starts");
    let base = 34_000 + (std::process::id() % 500) * 4;
    // A real terminal (script(1) allocates a pty), commands typed, `exit`: bash saves history.
    session(
        base,
        &home,
        "(printf 'uptime\\nid\\nexit\\n'; sleep 3) | script -qec 'bash -i' /dev/null > /dev/null",
    );
    let history = home.join(".bash_history");
    let saved = std::fs::read_to_string(&history).unwrap_or_default();
    assert!(
        saved.contains("uptime"),
        "bash saved its history: {saved:?}"
    );
    session(base + 1, &home, ": > ~/.bash_history");
    session(
        base + 2,
        &home,
        "echo x >> ~/.bash_history; mv ~/.bash_history ~/.h.old",
    );
    std::thread::sleep(Duration::from_millis(500));
    let events = daemon.stop().expect("daemon stops");

    let history_path = history.to_string_lossy().into_owned();
    let created_open = events.iter().any(|e| {
        e["type"] == "open"
            && e["process"]["loginuid"] == base
            && vigil_e2e::raw_bytes(&e["path"]) == history_path.as_bytes()
            && e["file"]["created"] == true
    });
    assert!(
        created_open,
        "the first login's history open is seen, created by it"
    );
    let alerts = of_type(&events, "alert");
    let hit = |uid: u32| {
        alerts
            .iter()
            .any(|a| a["process"]["loginuid"] == uid && a["rule"] == "shell-history-cleared")
    };
    assert!(
        !hit(base),
        "first login alerted: {:?}",
        alerts
            .iter()
            .filter(|a| a["process"]["loginuid"] == base)
            .collect::<Vec<_>>()
    );
    assert!(hit(base + 1), "truncating an existing history alerts");
    assert!(hit(base + 2), "moving the history away alerts");
}

/// A slice of `cargo xtask bench detect` (every attack scenario and evasion variant, a few
/// scripted sessions, each interactive kind once, the whole anomaly population): its targets
/// hold on every run of the suite, not only when the bench is run by hand.
#[test]
fn the_detection_bench_slice_meets_its_targets() {
    require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-detect-bench"))
        .args(["--benign", "20", "--interactive-copies", "1"])
        .env("VIGIL_BIN", vigil_bin())
        .output()
        .expect("the detection bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("): met"),
        "targets missed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn baselines_learn_refuses_unreadable_history_and_a_state_in_use() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/baseline.json");
    let config = dir.path().join("learn.yaml");
    let baseline = format!(
        "detection:\n  baseline:\n    enabled: true\n    state_file: {}\n",
        state.display()
    );
    std::fs::write(
        &config,
        format!("spool:\n  dir: {}\n{baseline}", dir.path().display()),
    )
    .unwrap();
    let learn = |file: &Path| {
        Command::new(vigil_bin())
            .args(["baselines", "learn", "--config"])
            .arg(&config)
            .arg(file)
            .output()
            .expect("vigil runs")
    };
    // A history with a line that is not an event: refused with the place, nothing learnt.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "\n{\"type\": \"exec\"}\n").unwrap();
    let out = learn(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2: not an event"), "{stderr}");
    assert!(!state.exists(), "nothing was written");

    // The daemon's own recording is history it can learn from, once the daemon has stopped.
    let daemon = Daemon::start(&baseline).expect("daemon starts");
    session(39_990, dir.path(), "uptime > /dev/null; id > /dev/null");
    std::thread::sleep(Duration::from_millis(300));
    let out = learn(&daemon.events_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "learnt into a state a daemon holds");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    let events = daemon.stop().expect("daemon stops");
    let recorded = dir.path().join("recorded.jsonl");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&recorded, lines.join("\n")).unwrap();
    let out = learn(&recorded);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("learnt from {} events", events.len())),
        "{stdout}"
    );
    let learnt: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let users = learnt["users"].as_object().unwrap();
    assert!(
        users.keys().any(|u| u.contains("39990")),
        "the session's user has a profile: {:?}",
        users.keys().collect::<Vec<_>>()
    );
}
