//! Kernel → daemon → spool → ClickHouse → CLI, end to end, against the real ClickHouse engine
//! (chdb behind deploy/dev/chdb_http.py): events arrive exactly once, through a ClickHouse outage
//! in the middle of a stream and through the daemon being killed with SIGKILL while shipping,
//! with one batch or two in flight.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{free_port, raw_bytes, require_root, run_ok, vigil_bin, ClickHouse, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// `vigil <args> --config <config>`, parsed as JSON.
fn vigil_json(args: &[&str], config: &Path) -> Value {
    let out = run_ok(
        Command::new(vigil_bin())
            .args(args)
            .arg("--json")
            .arg("--config")
            .arg(config),
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A configuration file for the CLI, reading the same ClickHouse.
fn cli_config(dir: &Path, ch: &ClickHouse) -> std::path::PathBuf {
    let path = dir.join("cli.yaml");
    std::fs::write(&path, ch.admin_config_yaml()).unwrap();
    path
}

fn run_trues(loginuid: u32, n: u32) {
    let status = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", "/bin/bash", "-c"])
        .arg(format!("for i in $(seq {n}); do /bin/true; done"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// The sessions of `loginuid` as ClickHouse's `sessions` table has them, once their commands
/// add up to `want` (the shipper works in the background), within 60 s.
fn wait_for_commands(config: &Path, loginuid: u32, want: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = vigil_json(&["sessions", "--user", &loginuid.to_string()], config);
        let sessions = list.as_array().cloned().unwrap_or_default();
        let commands: u64 = sessions.iter().filter_map(|s| s["commands"].as_u64()).sum();
        if commands >= want {
            return sessions;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse never reached {want} commands: {list}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Commands of one run_trues(n): bash, seq and n × /bin/true.
fn commands_of(n: u64) -> u64 {
    n + 2
}

/// Exec events of `/bin/true` in the session, from `events FINAL`.
fn trues_in_clickhouse(config: &Path, session: u64) -> usize {
    let timeline = vigil_json(&["session", &session.to_string()], config);
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exec" && raw_bytes(&e["filename"]) == b"/bin/true")
        .count()
}

/// A daemon shipping to `ch`, with the identity mapping `text` written to `mapping`.
fn daemon_with_mapping(ch: &ClickHouse, mapping: &Path, text: &str) -> Daemon {
    std::fs::write(mapping, text).unwrap();
    Daemon::start(&format!(
        "{}identity:\n  mapping_file: {}\n",
        ch.config_yaml(),
        mapping.display()
    ))
    .expect("daemon starts")
}

#[test]
fn session_reaches_clickhouse_and_the_cli_reads_it() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    // The session's login user is `nobody`, mapped to a person; its origin is an SSH client.
    let daemon = daemon_with_mapping(
        &ch,
        &dir.path().join("people.yaml"),
        "people:\n  - {username: nobody, person: Nora Body, email: nora@example.com, team: ops, peer_group: oncall}\n",
    );
    let loginuid = 65_534;
    let status = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", "/bin/bash", "-c"])
        .arg("sleep 0.5; /usr/bin/id > /dev/null; cat /etc/hostname > /dev/null; cat /etc/shadow > /dev/null")
        .env("SSH_CONNECTION", "198.51.100.4 40022 10.0.0.1 22")
        .status()
        .unwrap();
    assert!(status.success());
    // And a root login: a privileged session for the audit report.
    run_trues(0, 2);
    daemon.stop().expect("daemon stops");
    let config = cli_config(dir.path(), &ch);
    let session = wait_for_commands(&config, loginuid, 5).remove(0);
    let root_session = wait_for_commands(&config, 0, commands_of(2)).remove(0);
    let root_id = root_session["session"].as_u64().unwrap();
    assert_eq!(session["host"], vigil_e2e_host());
    // Identity and origin come back from ClickHouse, and filter the list.
    assert_eq!(session["identity"]["person"], "Nora Body", "{session}");
    assert_eq!(session["identity"]["peer_group"], "oncall");
    assert_eq!(session["entry"], "other");
    assert_eq!(session["ssh"]["source_address"], "198.51.100.4");
    assert_eq!(session["ssh"]["source_port"], 40022);
    assert_eq!(session["user"], "nobody");
    assert!(session["ended"].is_string(), "{session}");
    assert!(!session["ancestry"].as_array().unwrap().is_empty());
    let listed = |args: &[&str]| vigil_json(args, &config).as_array().unwrap().len();
    assert_eq!(listed(&["sessions", "--person", "NORA@example.com"]), 1);
    assert_eq!(listed(&["sessions", "--peer-group", "oncall"]), 1);
    assert_eq!(listed(&["sessions", "--peer-group", "data"]), 0);
    // The alert is stored, and scores the session.
    assert_eq!(session["risk"], 40, "{session}");
    assert_eq!(listed(&["sessions", "--min-risk", "40"]), 1);
    assert_eq!(listed(&["sessions", "--min-risk", "41"]), 0);
    let alerts = vigil_json(&["alerts", "--min-severity", "high"], &config);
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "credential-store-read");
    assert_eq!(alerts[0]["technique"], "T1003.008");
    assert_eq!(alerts[0]["process"]["sessionid"], session["session"]);
    assert!(alerts[0]["evidence"]
        .as_str()
        .unwrap()
        .contains("/etc/shadow"));
    assert_eq!(listed(&["alerts", "--min-severity", "critical"]), 0);
    let hostname_len = std::fs::metadata("/etc/hostname").unwrap().len();
    assert!(session["bytes_read"].as_u64().unwrap() >= hostname_len);
    let id = session["session"].as_u64().unwrap();
    let timeline = vigil_json(&["session", &id.to_string()], &config);
    let events = timeline["events"].as_array().unwrap();
    let ids: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "exec" && raw_bytes(&e["filename"]) == b"/usr/bin/id")
        .collect();
    assert_eq!(ids.len(), 1, "exec of id exactly once");
    assert!(events.iter().any(|e| e["type"] == "file_read"
        && e["path"] == "/etc/hostname"
        && e["bytes"].as_u64() == Some(hostname_len)));
    let monos: Vec<u64> = events
        .iter()
        .map(|e| e["mono_ns"].as_u64().unwrap())
        .collect();
    assert!(monos.windows(2).all(|w| w[0] <= w[1]), "time ordered");

    // A fleet's store: session ids are numbered per host, and another host has this id too.
    let ours = vigil_e2e_host();
    // (Columns named one by one: chdb's INSERT ... SELECT * REPLACE inserts nothing.)
    let columns = ch
        .query(
            "SELECT name FROM system.columns WHERE database = 'vigil' AND table = 'events' \
             ORDER BY position FORMAT TSV",
        )
        .unwrap();
    let copied: Vec<String> = columns
        .lines()
        .map(|c| match c {
            "host" => "'other-host'".to_string(),
            "detail" => {
                format!("replaceAll(detail, '\"host\":\"{ours}\"', '\"host\":\"other-host\"')")
            }
            other => format!("`{other}`"),
        })
        .collect();
    ch.query(&format!(
        "INSERT INTO events ({}) SELECT {} FROM events WHERE host = '{ours}' AND session_id IN ({id}, {root_id})",
        columns.lines().collect::<Vec<_>>().join(", "),
        copied.join(", ")
    ))
    .unwrap();
    let cli = |args: &[&str]| {
        Command::new(vigil_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("vigil runs")
    };
    // The listing names each by its key (host/boot/session), which `vigil session` takes back.
    let boot = vigil_e2e::boot_id();
    let key = |host: &str| format!("{host}/{}/{id}", &boot[..8]);
    let listing = cli(&["sessions"]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    for host in [ours.as_str(), "other-host"] {
        assert!(
            listing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(key(host).as_str())),
            "{host}:\n{listing}"
        );
    }
    let out = cli(&["session", &id.to_string()]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains(&format!("2 sessions match {id} in ClickHouse"))
            && msg.contains(&key(&ours))
            && msg.contains(&key("other-host"))
            && msg.contains("--host"),
        "{msg}"
    );
    for host in [ours.as_str(), "other-host"] {
        for args in [
            vec![
                "session".to_string(),
                id.to_string(),
                "--host".into(),
                host.into(),
            ],
            vec!["session".to_string(), key(host)],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let timeline = vigil_json(&args, &config);
            assert_eq!(timeline["summary"]["host"], host);
            assert_eq!(timeline["summary"]["key"], key(host));
            let ids = timeline["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "exec" && raw_bytes(&e["filename"]) == b"/usr/bin/id")
                .count();
            assert_eq!(ids, 1, "{host}: its own exec of id, not both hosts'");
        }
    }
    let out = cli(&["session", &id.to_string(), "--host", "nowhere"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("no session nowhere/*/{id}")),
        "{out:?}"
    );
    let out = cli(&[
        "session",
        &format!("{ours}/{id}/{id}"),
        "--host",
        "other-host",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("but --host says `other-host`"),
        "{out:?}"
    );
    let alerts = vigil_json(&["alerts", "--host", "other-host"], &config);
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["host"], "other-host");
    // The audit report keeps the two hosts' sessions apart, each with its own evidence.
    let report = vigil_json(&["report", "--since", "1h"], &config);
    let mut reported: Vec<(String, usize)> = report["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["summary"]["session"] == root_id)
        .map(|s| {
            let host = s["summary"]["host"].as_str().unwrap().to_string();
            (host, s["root_commands"].as_array().unwrap().len())
        })
        .collect();
    reported.sort();
    assert_eq!(reported.len(), 2, "{report}");
    assert_eq!(reported[0].1, reported[1].1, "{reported:?}");
    assert!(reported[0].1 > 0);

    // A stored row that does not decode is left out with a warning, never silently.
    ch.query(&format!(
        "INSERT INTO events (host, boot_id, session_id, seq, time, type, detail)
         VALUES ('{ours}', '{boot}', {id}, 999999999, now64(9), 'exec', '{{\"from\":\"the future\"}}')"
    ))
    .unwrap();
    let timeline = vigil_json(&["session", &id.to_string(), "--host", &ours], &config);
    let damage = timeline["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0]["count"], 1);
    assert!(damage[0]["reason"]
        .as_str()
        .unwrap()
        .contains("rows of `events` left out"));
    let out = cli(&["export", &id.to_string(), "--host", &ours]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vigil: warning: ")
            && String::from_utf8_lossy(&out.stderr).contains("left out"),
        "{out:?}"
    );
    ch.stop().unwrap();
}

fn vigil_e2e_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[test]
fn clickhouse_outage_mid_stream_loses_and_duplicates_nothing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("ch");
    let ch = ClickHouse::start_migrated(&data, port).expect("ClickHouse starts");
    let config = cli_config(dir.path(), &ch);
    let daemon = Daemon::start(&ch.config_yaml()).expect("daemon starts");
    let loginuid = 55_000 + std::process::id() % 5_000;

    run_trues(loginuid, 150);
    wait_for_commands(&config, loginuid, commands_of(150));
    // ClickHouse goes away in the middle of the stream...
    ch.stop().unwrap();
    run_trues(loginuid, 150);
    std::thread::sleep(Duration::from_secs(2)); // the shipper fails and retries meanwhile
                                                // ...and comes back on the same data.
    let ch = ClickHouse::start(&data, port).expect("ClickHouse restarts");
    wait_for_commands(&config, loginuid, 2 * commands_of(150));
    let metrics = daemon.scrape().expect("metrics");
    daemon.stop().expect("daemon stops");

    // Two sessions (one per run): every /bin/true exactly once over both.
    let list = vigil_json(&["sessions", "--user", &loginuid.to_string()], &config);
    let sessions = list.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    let total: usize = sessions
        .iter()
        .map(|s| trues_in_clickhouse(&config, s["session"].as_u64().unwrap()))
        .sum();
    assert_eq!(total, 300, "every /bin/true exactly once");
    for s in sessions {
        assert_eq!(
            s["commands"],
            commands_of(150),
            "sessions view counts each exec once: {s}"
        );
    }
    let lag = Daemon::metric(&metrics, "vigil_clickhouse_lag_events", &[]);
    assert!(lag.is_some(), "lag published: {metrics}");
    let errors = Daemon::metric(&metrics, "vigil_clickhouse_errors_total", &[]).unwrap_or(0.0);
    assert!(errors >= 1.0, "the outage was seen: {metrics}");
    ch.stop().unwrap();
}

#[test]
fn daemon_killed_while_shipping_resumes_exactly_once() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let config = cli_config(dir.path(), &ch);
    let spool = dir.path().join("spool");
    let loginuid = 60_000 + std::process::id() % 5_000;

    let daemon = Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon starts");
    run_trues(loginuid, 400);
    // Killed with whatever it was doing: shipping or acknowledging, once everything is in the
    // spool (what is still in the kernel's ring buffer dies with the daemon; that is another
    // test's subject).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(vigil_bin())
            .args([
                "sessions",
                "--json",
                "--user",
                &loginuid.to_string(),
                "--spool",
            ])
            .arg(&spool)
            .output()
            .unwrap();
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let spooled: u64 = list
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["commands"].as_u64()).sum())
            .unwrap_or(0);
        if spooled >= commands_of(400) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool never held them all: {spooled}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill().expect("SIGKILL");

    let daemon =
        Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon restarts");
    let session = wait_for_commands(&config, loginuid, commands_of(400)).remove(0);
    daemon.stop().expect("daemon stops");
    let id = session["session"].as_u64().unwrap();
    assert_eq!(
        trues_in_clickhouse(&config, id),
        400,
        "every /bin/true exactly once"
    );
    let list = vigil_json(&["sessions", "--user", &loginuid.to_string()], &config);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0]["commands"],
        commands_of(400),
        "sessions view counts each exec once"
    );
    ch.stop().unwrap();
}

/// A spool of `events` synthetic records (sequences 0 to `events` - 1), written as the sink
/// writes them (`vigil bench-ingest` without ClickHouse), in `dir/spool`.
fn synthetic_spool(dir: &Path, events: u64) -> std::path::PathBuf {
    let spool = dir.join("spool");
    run_ok(
        Command::new(vigil_bin())
            .args(["bench-ingest", "--rounds", "1", "--events"])
            .arg(events.to_string())
            .arg("--spool")
            .arg(&spool),
    );
    spool
}

/// Rows of the synthetic spool's sequences (below `events`) in ClickHouse: all of them, and
/// how many distinct.
fn synthetic_rows(ch: &ClickHouse, events: u64) -> (u64, u64) {
    let out = ch
        .query(&format!(
            "SELECT count(), uniqExact(seq) FROM events WHERE seq < {events} FORMAT TSV"
        ))
        .unwrap_or_default();
    let mut fields = out
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// A long spool shipped in small batches keeps two in flight all the time. The daemon is
/// killed with both in flight, and later ClickHouse goes away with both in flight: what was
/// not acknowledged goes again in the order it was sent, with the same tokens, so every
/// record is in ClickHouse exactly once.
#[test]
fn batches_in_flight_go_again_as_they_were_after_a_kill_and_an_outage() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    const EVENTS: u64 = 200_000;
    let spool = synthetic_spool(dir.path(), EVENTS);
    let data = dir.path().join("ch");
    let port = free_port();
    let ch = ClickHouse::start_migrated(&data, port).expect("ClickHouse starts");
    let yaml = format!("{}  batch_rows: 1000\n", ch.config_yaml());
    let wait_for = |ch: &ClickHouse, rows: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (count, _) = synthetic_rows(ch, EVENTS);
            if count >= rows {
                return count;
            }
            if Instant::now() > deadline {
                let missing = ch
                    .query(&format!(
                        "SELECT min(number), max(number), count() FROM numbers({EVENTS}) \
                         WHERE number NOT IN (SELECT seq FROM events) FORMAT TSV"
                    ))
                    .unwrap_or_default();
                let acks = std::fs::read_to_string(spool.join("acks/clickhouse"));
                let inflight = std::fs::read_to_string(spool.join("acks/clickhouse.inflight"));
                panic!(
                    "{what}: {count} rows of {rows}; missing (min, max, count): {missing}; \
                     ack {acks:?}, in flight {inflight:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    };

    let daemon = Daemon::start_with_spool(Some(&spool), &yaml).expect("daemon starts");
    wait_for(&ch, 20_000, "before the kill");
    daemon.kill().expect("SIGKILL");
    let inflight =
        std::fs::read_to_string(spool.join("acks/clickhouse.inflight")).unwrap_or_default();

    let daemon = Daemon::start_with_spool(Some(&spool), &yaml).expect("daemon restarts");
    wait_for(&ch, 60_000, "before the outage");
    ch.stop().unwrap();
    std::thread::sleep(Duration::from_secs(1)); // the shipper fails and retries meanwhile
    let ch = ClickHouse::start(&data, port).expect("ClickHouse restarts");
    wait_for(&ch, EVENTS, "after the outage");
    let metrics = daemon.scrape().expect("metrics");
    daemon.stop().expect("daemon stops");

    assert_eq!(
        synthetic_rows(&ch, EVENTS),
        (EVENTS, EVENTS),
        "every record exactly once (in flight at the kill: {inflight:?})"
    );
    let errors = Daemon::metric(&metrics, "vigil_clickhouse_errors_total", &[]).unwrap_or(0.0);
    assert!(errors >= 1.0, "the outage was seen: {metrics}");
    ch.stop().unwrap();
}

/// An in-flight file that names more than the spool holds (edited by hand, or left ahead of
/// spool data a power cut took) is not taken at its word: what is acknowledged is what was
/// sent, and records written later under those sequence numbers still reach ClickHouse.
#[test]
fn an_inflight_range_past_the_spool_acknowledges_only_what_was_sent() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    const EVENTS: u64 = 100;
    let spool = synthetic_spool(dir.path(), EVENTS);
    std::fs::create_dir_all(spool.join("acks")).unwrap();
    std::fs::write(spool.join("acks/clickhouse.inflight"), "0-100000\n").unwrap();
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let daemon = Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon starts");
    // The daemon's own records (its start checkpoint, at least) follow the synthetic ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let later = loop {
        let out = ch
            .query(&format!(
                "SELECT count() FROM events WHERE seq >= {EVENTS} FORMAT TSV"
            ))
            .unwrap_or_default();
        let later: u64 = out.trim().parse().unwrap_or(0);
        if later > 0 || Instant::now() > deadline {
            break later;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    daemon.stop().expect("daemon stops");
    assert_eq!(
        synthetic_rows(&ch, EVENTS),
        (EVENTS, EVENTS),
        "the spool's own records once"
    );
    assert!(
        later > 0,
        "records after the spool's end never reached ClickHouse"
    );
    // Everything the spool holds at the end (the stop checkpoint last) is in ClickHouse.
    let stats = run_ok(
        Command::new(vigil_bin())
            .args(["spool", "stats", "--spool"])
            .arg(&spool),
    );
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let last = stats["last_seq"].as_u64().expect("last_seq");
    let stored = ch
        .query("SELECT count(), uniqExact(seq), max(seq) FROM events FORMAT TSV")
        .unwrap();
    assert_eq!(
        stored.split_whitespace().collect::<Vec<_>>(),
        [
            (last + 1).to_string(),
            (last + 1).to_string(),
            last.to_string()
        ],
        "every spool record 0..={last} exactly once"
    );
    let ack = std::fs::read_to_string(spool.join("acks/clickhouse")).unwrap_or_default();
    assert!(
        ack.trim().parse::<u64>().is_ok_and(|a| a < 100_000),
        "acknowledged past what was sent: {ack:?}"
    );
    ch.stop().unwrap();
}

#[test]
fn fleet_baselines_in_clickhouse_answer_the_anomaly_queries() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let config = cli_config(dir.path(), &ch);
    // On a terminal (script(1) gives it one), the migration shows its progress.
    let migrate = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} db migrate --config {}",
            vigil_bin().display(),
            config.display()
        ))
        .arg("/dev/null")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&migrate.stdout);
    assert!(migrate.status.success(), "{shown}");
    assert!(shown.contains("migrate: 1/12 events"), "{shown:?}");
    assert!(
        shown.contains("migrate: 12/12 events_without_user_projection"),
        "{shown:?}"
    );
    assert!(
        shown.contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]"),
        "{shown:?}"
    );
    // A month of history from other days: nobody ran id and bash at another hour of the week,
    // read about a kilobyte a day; a peer (daemon, same peer group, another host) ran id.
    let host = vigil_e2e_host();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = ((now_ns.div_euclid(3_600_000_000_000) + 72).rem_euclid(168) + 84) % 168;
    ch.query(&format!(
        "INSERT INTO user_baseline VALUES
            ('nobody', 'binary', '/usr/bin/id', now64(9) - INTERVAL 30 DAY, now64(9) - INTERVAL 1 DAY, 20),
            ('nobody', 'binary', '/bin/bash', now64(9) - INTERVAL 30 DAY, now64(9) - INTERVAL 1 DAY, 20),
            ('nobody', 'hour_of_week', '{hour}', now64(9) - INTERVAL 30 DAY, now64(9) - INTERVAL 1 DAY, 40),
            ('nobody', 'host', '{host}', now64(9) - INTERVAL 30 DAY, now64(9) - INTERVAL 1 DAY, 40),
            ('daemon', 'binary', '/usr/bin/id', now64(9) - INTERVAL 30 DAY, now64(9) - INTERVAL 1 DAY, 5)"
    ))
    .unwrap();
    ch.query(
        "INSERT INTO user_daily_volume VALUES
            ('nobody', today() - 3, 'h', 1000, 1), ('nobody', today() - 2, 'h', 1200, 1),
            ('nobody', today() - 1, 'h', 800, 1)",
    )
    .unwrap();
    ch.query("INSERT INTO session_identity (host, session_id, login_user, peer_group) VALUES ('other-host', 7, 'daemon', 'oncall')")
        .unwrap();
    let daemon = daemon_with_mapping(
        &ch,
        &dir.path().join("people.csv"),
        "username,person,peer_group\nnobody,Nora Body,oncall\n",
    );
    let status = Command::new(HELPER)
        .args(["login", "65534", "--", "/bin/bash", "-c"])
        .arg("/usr/bin/id > /dev/null; /usr/bin/base64 /dev/null; /usr/bin/head -c 5000000 /dev/zero > /dev/null; /usr/bin/id < /etc/ssh/sshd_config > /dev/null; /usr/bin/id < /etc/hostname > /dev/null")
        .status()
        .unwrap();
    assert!(status.success());
    daemon.stop().expect("daemon stops");
    wait_for_commands(&config, 65_534, 4);

    let anomalies = |kind: &str| -> Vec<String> {
        let rows = vigil_json(
            &[
                "anomalies",
                "--since",
                "1h",
                "--min-bytes",
                "1048576",
                "--kind",
                kind,
            ],
            &config,
        );
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["user"] == "nobody")
            .map(|r| r["value"].as_str().unwrap().to_string())
            .collect()
    };
    let mut bins = anomalies("new-binary");
    bins.sort();
    assert_eq!(bins, vec!["/usr/bin/base64", "/usr/bin/head"]);
    let current = ((now_ns.div_euclid(3_600_000_000_000) + 72).rem_euclid(168)).to_string();
    let hours = anomalies("new-hour-of-week");
    assert!(
        hours == vec![current.clone()] || hours.len() == 2,
        "{hours:?} (now {current})"
    );
    assert!(anomalies("new-host").is_empty());
    // The daemon's default sensitive patterns: /etc/ssh/ is one, /etc/hostname is not.
    assert_eq!(
        anomalies("new-sensitive-path"),
        vec!["/etc/ssh/sshd_config"]
    );
    let days = anomalies("volume");
    assert_eq!(days.len(), 1, "{days:?}");
    let mut unique = anomalies("peer-unique-binary");
    unique.sort();
    assert_eq!(unique, vec!["/usr/bin/base64", "/usr/bin/head"]);
    // A shorter learning period than the history makes nothing of id; one longer than the
    // user's history makes everything "still learning".
    let rows = vigil_json(
        &["anomalies", "--since", "1h", "--learning", "400d"],
        &config,
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] == "volume" || r["kind"] == "peer-unique-binary"),
        "{rows}"
    );
    // The Grafana dashboard's ClickHouse panels run against this schema (its time macros
    // expanded as the Grafana ClickHouse data source expands them).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/vigil-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(sql) = target["rawSql"].as_str() else {
                continue;
            };
            let expand = |sql: &str, macro_: &str, with: &dyn Fn(&str) -> String| {
                let mut out = String::new();
                let mut rest = sql;
                while let Some(i) = rest.find(macro_) {
                    out.push_str(&rest[..i]);
                    let after = &rest[i + macro_.len()..];
                    let close = after.find(')').unwrap();
                    out.push_str(&with(&after[..close]));
                    rest = &after[close + 1..];
                }
                out.push_str(rest);
                out
            };
            let sql = expand(sql, "$__timeFilter(", &|c| {
                format!("{c} >= now() - INTERVAL 1 DAY AND {c} <= now() + INTERVAL 1 HOUR")
            });
            let sql = expand(&sql, "$__timeInterval(", &|c| {
                format!("toStartOfInterval({c}, INTERVAL 60 second)")
            });
            ch.query(&sql)
                .unwrap_or_else(|e| panic!("dashboard panel {}: {e}", panel["title"]));
            panels += 1;
        }
    }
    assert!(panels >= 4, "{panels} ClickHouse panels");
    // The queries are there to read.
    let sql = Command::new(vigil_bin())
        .args(["anomalies", "--sql"])
        .output()
        .unwrap();
    assert!(sql.status.success());
    assert!(String::from_utf8_lossy(&sql.stdout).contains("FROM user_daily_volume"));
    ch.stop().unwrap();
}
