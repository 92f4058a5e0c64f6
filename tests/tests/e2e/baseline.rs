//! Behavioural baselines on the real kernel: a profile learns, then scores (first-seen binaries,
//! destinations and sensitive paths, volume far above the norm, unusual hours), keeps what it
//! learnt across a restart, and sets an unreadable state file aside instead of failing.

use std::{
    net::TcpListener,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use vigil_e2e::{ensure_user, login_session, of_type, require_root, Daemon, USER};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn anomalies(events: &[Value], loginuid: u32) -> Vec<&Value> {
    of_type(events, "alert")
        .into_iter()
        .filter(|a| {
            a["process"]["loginuid"] == loginuid
                && a["rule"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("anomaly-"))
        })
        .collect()
}

fn titles(alerts: &[&Value], rule: &str) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule)
        .map(|a| a["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

const FAST_LEARNING: &str =
    "detection:\n  baseline:\n    learning_period: 2s\n    save_every: 100ms\n";

#[test]
fn a_profile_learns_then_scores_and_remembers_across_restarts() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let uid = 36_000 + std::process::id() % 1000;
    let user = format!("uid:{uid}");

    // Programs no package put where they run (copies, as a download or a build would be),
    // and packaged ones: the first are reported when new, the second are ordinary.
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let tool = |name: &str, from: &str| {
        let p = tools.join(name);
        std::fs::copy(from, &p).unwrap();
        p.display().to_string()
    };
    let (b64, tac) = (tool("b64", "/usr/bin/base64"), tool("tac2", "/usr/bin/tac"));

    let daemon = Daemon::start_with_spool(Some(&spool), FAST_LEARNING).expect("daemon starts");
    // Learning: nothing is scored yet, whatever runs.
    login_session(
        HELPER,
        uid,
        dir.path(),
        "/usr/bin/id > /dev/null; /bin/ls / > /dev/null",
    );
    std::thread::sleep(Duration::from_millis(2500));
    // Scoring: id is known, the copy of base64 is not; a packaged program run for the first
    // time (base64 itself) is ordinary.
    login_session(
        HELPER,
        uid,
        dir.path(),
        &format!("/usr/bin/id > /dev/null; {b64} /dev/null > /dev/null; /usr/bin/base64 /dev/null > /dev/null"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let found = anomalies(&events, uid);
    let new_bins = titles(&found, "anomaly-new-binary");
    assert_eq!(
        new_bins,
        vec![format!("First-seen binary for {user}: {b64}")],
        "{found:#?}"
    );
    assert!(titles(&found, "anomaly-off-hours").is_empty(), "{found:#?}");
    let alert = found[0];
    assert_eq!(alert["severity"], "medium");
    assert!(alert["session_risk"].as_u64().unwrap() >= 15);
    assert!(alert["reasons"][0]
        .as_str()
        .unwrap()
        .contains("(anomaly, +15)"));

    // The state was saved; a restart keeps it: the copy of base64 is known now, tac's is new.
    let state: Value =
        serde_json::from_slice(&std::fs::read(spool.join("baseline.json")).unwrap()).unwrap();
    assert!(state["users"][&user]["binaries"][&b64].as_u64() == Some(1));
    assert!(state["users"][&user]["binaries"]["/usr/bin/base64"].as_u64() == Some(1));
    let daemon = Daemon::start_with_spool(Some(&spool), FAST_LEARNING).expect("daemon restarts");
    login_session(
        HELPER,
        uid,
        dir.path(),
        &format!("{b64} /dev/null > /dev/null; {tac} /dev/null"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let found = anomalies(&events, uid);
    assert_eq!(
        titles(&found, "anomaly-new-binary"),
        vec![format!("First-seen binary for {user}: {tac}")],
        "{found:#?}"
    );

    // An unreadable state file is set aside, not fatal, and not silently overwritten.
    std::fs::write(spool.join("baseline.json"), b"{ not json").unwrap();
    let daemon = Daemon::start_with_spool(Some(&spool), FAST_LEARNING).expect("daemon starts");
    let (_, log) = daemon.stop_with_log().expect("daemon stops");
    assert!(log.contains("baseline state unreadable"), "{log}");
    assert_eq!(
        std::fs::read(spool.join("baseline.json.corrupt")).unwrap(),
        b"{ not json"
    );
}

/// The UTC hour of the week (Monday 00:00 = 0) of `ns`.
fn hour_of_week(ns: i64) -> usize {
    ((ns.div_euclid(3_600_000_000_000) + 72).rem_euclid(168)) as usize
}

#[test]
fn a_learnt_profile_flags_hours_volume_destinations_and_sensitive_paths() {
    require_root();
    let loginuid = ensure_user();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let day = now.div_euclid(86_400_000_000_000);
    let month_ago = now - 30 * 86_400_000_000_000;
    // Weeks of history, as a previous run of the daemon left them: the user works twelve hours
    // away from now, reads about a kilobyte a day, has never touched a sensitive path; the
    // peer group has read /etc/ssh/sshd_config.
    let mut hours = vec![0u64; 168];
    hours[(hour_of_week(now) + 84) % 168] = 40;
    let profile = |sensitive: Value| {
        json!({
            "since_ns": month_ago,
            "hours": hours,
            "commands": 40,
            "binaries": {"/bin/bash": 10, "/usr/bin/head": 10, "/usr/bin/cat": 10, "/bin/cat": 10},
            "destinations": {},
            "sensitive_paths": sensitive,
            "hosts": {},
            "daily_bytes": {(day - 3).to_string(): 1000, (day - 2).to_string(): 1200, (day - 1).to_string(): 800},
        })
    };
    let state = json!({
        "version": 1,
        "users": {USER: profile(json!({}))},
        "groups": {"oncall": profile(json!({"/etc/ssh/sshd_config": 3}))},
    });
    std::fs::write(spool.join("baseline.json"), state.to_string()).unwrap();
    let mapping = dir.path().join("people.csv");
    std::fs::write(
        &mapping,
        format!("username,person,email,team,role,peer_group\n{USER},Vera Gil,vera@example.com,sre,admin,oncall\n"),
    )
    .unwrap();
    let sink = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    std::thread::spawn(move || for _c in sink.incoming() {});
    let out_ip = {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("192.0.2.1:9").unwrap();
        s.local_addr().unwrap().ip().to_string()
    };

    let daemon = Daemon::start_with_spool(
        Some(&spool),
        &format!(
            "identity:\n  mapping_file: {}\ndetection:\n  baseline:\n    volume_min_bytes: 1048576\n    save_every: 100ms\n",
            mapping.display()
        ),
    )
    .expect("daemon starts");
    login_session(
        HELPER,
        loginuid,
        dir.path(),
        &format!(
            "head -c 5000000 /dev/zero > /dev/null; cat /etc/ssh/sshd_config /etc/ssh/ssh_config > /dev/null; \
             exec 3<>/dev/tcp/{out_ip}/{port}; sleep 0.2"
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let found = anomalies(&events, loginuid);
    let by = |rule: &str| titles(&found, rule);
    assert_eq!(by("anomaly-off-hours").len(), 1, "{found:#?}");
    assert!(by("anomaly-off-hours")[0].contains("outside their usual hours"));
    let volume = by("anomaly-volume");
    assert_eq!(volume.len(), 1, "{found:#?}");
    assert!(
        volume[0].starts_with(&format!("{USER} read 4.8 MiB today")),
        "{volume:?}"
    );
    assert_eq!(
        by("anomaly-new-destination"),
        vec![format!(
            "First-seen destination for {USER}: {out_ip}:{port}"
        )]
    );
    let mut sensitive = by("anomaly-new-sensitive-path");
    sensitive.sort();
    // The peer group's sshd_config is ordinary for its members; ssh_config is new to both.
    assert_eq!(
        sensitive,
        vec![format!(
            "First-seen sensitive path for {USER}: /etc/ssh/ssh_config"
        )],
        "{found:#?}"
    );
    // Known binaries raise nothing.
    assert!(by("anomaly-new-binary")
        .iter()
        .all(|t| !t.contains("/usr/bin/head")));
    // The anomalies score the session.
    let last = found
        .iter()
        .map(|a| a["session_risk"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(last >= 15 + 25 + 10 + 15, "{last}");
}
