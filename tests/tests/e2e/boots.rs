//! Sessions of two boots stay apart, in the spool and in ClickHouse, and both stores give the
//! same answers to every query.
//!
//! Audit session ids restart at every boot. The first boot here is real: a daemon captures the
//! session of `nobody`, who reads /etc/shadow as root. A reboot cannot happen inside a test, so
//! the later boot's records are written the way a rebooted host's daemon writes them: through
//! the real spool writer, with the later boot's id, the same audit session id and another login
//! user (the test user's real session, renumbered as the kernel would after the reboot). Then a
//! real daemon ships that spool to ClickHouse (chdb) and the CLI reads both stores.

use std::{path::Path, process::Command};

use serde_json::Value;
use vigil::{
    event::Event,
    spool::{read_all, SpoolItem},
};
use vigil_e2e::{
    boot_id, ensure_user, free_port, login_session, raw_bytes, require_root, vigil_bin, ClickHouse,
    Daemon,
};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");
const LATER_BOOT: &str = "b0070b00-7b00-4b00-8b00-b0070b0070b0";

fn vigil(args: &[&str]) -> std::process::Output {
    Command::new(vigil_bin())
        .args(args)
        .output()
        .expect("vigil runs")
}

fn vigil_json(args: &[&str]) -> Value {
    let out = vigil(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

/// Every event in the spool.
fn spool_events(dir: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    read_all(dir, 0, |item| {
        if let SpoolItem::Event { event, .. } = item {
            events.push(*event);
        }
    })
    .expect("spool reads");
    events
}

fn execs_of(timeline: &Value) -> Vec<Vec<u8>> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exec")
        .map(|e| raw_bytes(&e["filename"]))
        .collect()
}

/// What a store answers, without what only one of them can know: terminal names come from
/// exec events in the spool, and ClickHouse keeps no per-session tty list.
fn comparable(mut sessions: Value) -> Value {
    for s in sessions.as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("ttys");
    }
    sessions
}

#[test]
fn two_boots_sessions_with_one_id_stay_apart_in_the_spool_and_in_clickhouse() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tester = ensure_user();

    // Boot one, for real: nobody reads /etc/shadow as root; the test user works harmlessly.
    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    let status = login_session(
        HELPER,
        65_534,
        &home,
        "cat /etc/shadow > /dev/null; /usr/bin/id > /dev/null",
    );
    assert!(status.success());
    let status = login_session(
        HELPER,
        tester,
        &home,
        "/bin/true; /bin/echo hello > /dev/null",
    );
    assert!(status.success());
    // And a root login, for the report's privileged evidence.
    let status = login_session(
        HELPER,
        0,
        &home,
        "/usr/bin/id > /dev/null; cat /etc/hostname",
    );
    assert!(status.success());
    daemon.stop().expect("daemon stops");

    let events = spool_events(&spool);
    let this_boot = boot_id();
    let session_of = |uid: u32| {
        events
            .iter()
            .find(|e| e.process.loginuid == Some(uid) && e.process.sessionid.is_some())
            .and_then(|e| e.process.sessionid)
            .expect("the session was captured")
    };
    let (shadow_session, tester_session) = (session_of(65_534), session_of(tester));
    assert!(events
        .iter()
        .filter(|e| e.process.sessionid.is_some())
        .all(|e| *e.boot_id == *this_boot && !e.host.is_empty()));

    // Boot two: the host rebooted and the kernel numbered the test user's session as the
    // first boot's `nobody` session. Its daemon writes those records to the same spool.
    let later: Vec<Event> = events
        .iter()
        .filter(|e| e.process.sessionid == Some(tester_session))
        .cloned()
        .map(|mut e| {
            e.boot_id = LATER_BOOT.into();
            e.process.sessionid = Some(shadow_session);
            e.time_ns += 3_600_000_000_000;
            e.time = vigil::decode::rfc3339(e.time_ns);
            e
        })
        .collect();
    assert!(!later.is_empty());
    {
        let mut writer = vigil_e2e::spool_writer(&spool);
        for e in &later {
            writer.append(e).expect("appended");
        }
        writer.flush().expect("flushed");
    }

    let spool_arg = spool.to_str().unwrap();
    let sid = shadow_session.to_string();
    let first_key = format!("{}/{}/{sid}", vigil::event::host_name(), &this_boot[..8]);
    let later_key = format!("{}/{}/{sid}", vigil::event::host_name(), &LATER_BOOT[..8]);
    let tester_name = String::from_utf8(
        Command::new("id")
            .args(["-nu", &tester.to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    // The spool lists two sessions with this id, each with its own user.
    let listed = vigil_json(&["sessions", "--json", "--spool", spool_arg]);
    let same_id: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["session"] == shadow_session)
        .collect();
    assert_eq!(same_id.len(), 2, "{listed}");
    let by_key = |key: &str| {
        same_id
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {listed}"))
    };
    assert_eq!(by_key(&first_key)["user"], "nobody");
    assert_eq!(by_key(&first_key)["boot_id"], this_boot.as_str());
    assert_eq!(by_key(&later_key)["user"], tester_name.as_str());

    // A bare id is ambiguous and says which sessions it could be.
    let out = vigil(&["session", &sid, "--spool", spool_arg]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains(&format!("2 sessions match {sid}"))
            && msg.contains(&first_key)
            && msg.contains(&later_key)
            && msg.contains("nobody")
            && msg.contains(&tester_name),
        "{msg}"
    );

    // Each key (or a short boot/id) opens its own session and nothing of the other.
    let first = vigil_json(&["session", &first_key, "--json", "--spool", spool_arg]);
    assert_eq!(first["summary"]["user"], "nobody");
    assert!(first["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["process"]["loginuid"] == 65_534));
    assert!(execs_of(&first).contains(&b"/usr/bin/cat".to_vec()));
    let short = format!("{}/{sid}", &LATER_BOOT[..4]);
    let second = vigil_json(&["session", &short, "--json", "--spool", spool_arg]);
    assert_eq!(second["summary"]["key"], later_key.as_str());
    assert_eq!(second["summary"]["user"], tester_name.as_str());
    assert!(!execs_of(&second).contains(&b"/usr/bin/cat".to_vec()));
    assert!(execs_of(&second).contains(&b"/bin/true".to_vec()));
    let boot_flag = vigil_json(&[
        "session",
        &sid,
        "--boot",
        &this_boot[..8],
        "--json",
        "--spool",
        spool_arg,
    ]);
    assert_eq!(boot_flag["summary"]["key"], first_key.as_str());

    // Alerts resolve the session the same way: the shadow read is the first boot's.
    let alerts = |key: &str, store: &[&str]| {
        let mut args = vec!["alerts", "--json", "--session", key];
        args.extend_from_slice(store);
        vigil_json(&args)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["rule"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let spool_store = ["--spool", spool_arg];
    assert!(alerts(&first_key, &spool_store).contains(&"credential-store-read".to_string()));
    assert!(!alerts(&later_key, &spool_store).contains(&"credential-store-read".to_string()));

    // The report counts the same sessions on every run, each privileged one once.
    // The later boot's records are an hour ahead: the period reaches past them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let until = vigil::decode::rfc3339(now + 2 * 3_600_000_000_000);
    let since = vigil::decode::rfc3339(now - 3_600_000_000_000);
    let report = |store: &[&str]| {
        let mut args = vec!["report", "--since", &since, "--until", &until, "--json"];
        args.extend_from_slice(store);
        vigil_json(&args)
    };
    let reports: Vec<Value> = (0..3).map(|_| report(&spool_store)).collect();
    assert!(reports
        .windows(2)
        .all(|w| w[0]["sessions_in_period"] == w[1]["sessions_in_period"]
            && w[0]["privileged"] == w[1]["privileged"]));
    let in_period = vigil_json(&[
        "sessions", "--json", "--since", &since, "--until", &until, "--spool", spool_arg,
    ]);
    assert_eq!(
        reports[0]["privileged"].as_array().unwrap().len(),
        1,
        "the root login"
    );
    assert_eq!(
        reports[0]["sessions_in_period"],
        in_period.as_array().unwrap().len(),
        "{in_period}"
    );
    let keys: std::collections::BTreeSet<&str> = in_period
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(first_key.as_str()) && keys.contains(later_key.as_str()));

    // ClickHouse: a real daemon ships the spool, and every answer is the spool's.
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let daemon = Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon starts");
    daemon.stop().expect("daemon stops");
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();
    let ch_store = ["--config", config.to_str().unwrap()];
    let with = |args: &[&str], store: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(store);
        vigil_json(&all)
    };
    let from_spool = comparable(with(&["sessions", "--json"], &spool_store));
    let from_ch = comparable(with(&["sessions", "--json"], &ch_store));
    assert_eq!(from_spool, from_ch, "sessions differ between the stores");
    for s in from_spool.as_array().unwrap() {
        let key = s["key"].as_str().unwrap();
        let mut a = with(&["session", key, "--json"], &spool_store);
        let mut b = with(&["session", key, "--json"], &ch_store);
        for t in [&mut a, &mut b] {
            t["summary"].as_object_mut().unwrap().remove("ttys");
        }
        assert_eq!(a, b, "timeline of {key} differs between the stores");
    }
    assert_eq!(
        with(&["alerts", "--json"], &spool_store),
        with(&["alerts", "--json"], &ch_store),
        "alerts differ between the stores"
    );
    let strip = |mut r: Value| {
        for key in ["generated", "source"] {
            r.as_object_mut().unwrap().remove(key);
        }
        for p in r["privileged"].as_array_mut().unwrap() {
            p["summary"].as_object_mut().unwrap().remove("ttys");
        }
        r
    };
    assert_eq!(
        strip(report(&spool_store)),
        strip(report(&ch_store)),
        "reports differ between the stores"
    );
    let out = vigil(&["session", &sid, "--config", config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("2 sessions match {sid}")),
        "{out:?}"
    );
    ch.stop().unwrap();
}
