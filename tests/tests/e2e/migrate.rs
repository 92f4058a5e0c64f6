//! Migration 7 carries a database of an earlier Vigil over: the schema that release created
//! (tests/fixtures/schema-before-v7.sql) with sessions in it, then `vigil db migrate`, against
//! the real ClickHouse engine (chdb).

use std::process::Command;

use serde_json::Value;
use vigil::{
    decode::daemon_event,
    event::{EventBody, ExecEvent, Process, RawBytes},
};
use vigil_e2e::{
    free_port, require_root, run_ok, vigil_bin, ClickHouse, WRITER_PASSWORD, WRITER_USER,
};

const OLD_BOOT: &str = "0ddb0070-1111-4222-8333-944455556666";

/// An event as the earlier release stored it in `detail`: no host or boot at the top (they
/// were only in session_start and session_end).
fn old_detail(body: EventBody, session: u32, time_ns: i64) -> String {
    let mut e = daemon_event(
        Process {
            pid: 4242,
            loginuid: Some(1000),
            sessionid: Some(session),
            login_user: Some("olduser".into()),
            comm: RawBytes::from("bash"),
            ..Default::default()
        },
        body,
    );
    e.time_ns = time_ns;
    e.time = vigil::decode::rfc3339(time_ns);
    let mut v = serde_json::to_value(&e).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("host");
    o.remove("boot_id");
    v.to_string()
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[test]
fn migration_7_keys_an_earlier_releases_sessions_by_boot_and_keeps_every_event() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();

    // The earlier release's schema, migrations 1-6 recorded as applied.
    ch.query_server("CREATE DATABASE vigil").unwrap();
    let fixture = include_str!("../../fixtures/schema-before-v7.sql");
    for stmt in fixture
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.lines().any(|l| !l.starts_with("--")))
    {
        ch.query(stmt).unwrap_or_else(|e| panic!("{e}"));
    }
    ch.query(
        "CREATE TABLE schema_migrations (version UInt32, name String, \
         applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version",
    )
    .unwrap();
    ch.query(
        "INSERT INTO schema_migrations (version, name) VALUES (1, 'events'), (2, 'sessions'), \
         (3, 'alerts'), (4, 'session_identity'), (5, 'alerts_feed'), (6, 'baselines')",
    )
    .unwrap();

    // A session of that release: its start (with the boot id) and two commands.
    let t0 = 1_790_000_000_000_000_000i64;
    let start = format!(
        r#"{{"mono_ns":1,"time_ns":{t0},"time":"{}","process":{{"pid":4242,"tid":4242,"ppid":1,"uid":1000,"euid":1000,"gid":1000,"loginuid":1000,"sessionid":5,"cgroup_id":0,"comm":"bash","login_user":"olduser"}},"type":"session_start","session":5,"host":"old-host","boot_id":"{OLD_BOOT}","loginuid":1000,"login_user":"olduser","entry":"ssh","ssh":null,"ancestry":[]}}"#,
        vigil::decode::rfc3339(t0)
    );
    let exec = |n: i64, path: &str| {
        old_detail(
            EventBody::Exec(ExecEvent {
                exe: None,
                filename: RawBytes::from(path),
                argv: vec![RawBytes::from(path)],
                argv_truncated: false,
                argv_total_bytes: path.len() as u32 + 1,
                filename_truncated: false,
                cwd: Some(RawBytes::from("/home/olduser")),
                cwd_truncated: false,
                tty: Some("pts/1".into()),
                old_pid: 4242,
                ancestry: Vec::new(),
                stdin: None,
                stdout: None,
                stderr: None,
            }),
            5,
            t0 + n * 1_000_000,
        )
    };
    let rows = [
        ("session_start", 1u64, t0, start),
        ("exec", 2, t0 + 1_000_000, exec(1, "/usr/bin/id")),
        ("exec", 3, t0 + 2_000_000, exec(2, "/usr/bin/cat")),
    ];
    for (kind, seq, time, detail) in &rows {
        ch.query(&format!(
            "INSERT INTO events (host, seq, time, type, session_id, loginuid, path, detail) VALUES \
             ('old-host', {seq}, fromUnixTimestamp64Nano({time}, 'UTC'), '{kind}', 5, 1000, '', {})",
            sql_quote(detail)
        ))
        .unwrap();
    }
    assert_eq!(
        ch.query("SELECT count() FROM (SELECT DISTINCT host, session_id FROM sessions) FORMAT TSV")
            .unwrap()
            .trim(),
        "1"
    );

    // Migrate: 7 to 10 are pending.
    let out = run_ok(
        Command::new(vigil_bin())
            .args(["db", "migrate", "--config"])
            .arg(&config),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied migrations [7, 8, 9, 10, 11, 12]"),
        "{out:?}"
    );
    for table in ["events", "sessions", "session_identity"] {
        let key = ch
            .query(&format!(
                "SELECT sorting_key FROM system.tables WHERE database = 'vigil' AND name = '{table}' FORMAT TSV"
            ))
            .unwrap();
        assert!(
            key.starts_with("host, boot_id, session_id"),
            "{table}: {key}"
        );
        // The old table is kept, as evidence, beside the new one.
        let kept = ch
            .query(&format!(
                "SELECT count() FROM system.tables WHERE database = 'vigil' AND name = '{table}_before_v7' FORMAT TSV"
            ))
            .unwrap();
        assert_eq!(kept.trim(), "1", "{table}_before_v7");
    }
    // Every event came over, with the boot its session's start recorded.
    assert_eq!(
        ch.query("SELECT boot_id, count() FROM events GROUP BY boot_id FORMAT TSV")
            .unwrap()
            .trim(),
        format!("{OLD_BOOT}\t3")
    );
    let vigil_json = |args: &[&str]| -> Value {
        let out = run_ok(
            Command::new(vigil_bin())
                .args(args)
                .arg("--json")
                .arg("--config")
                .arg(&config),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let sessions = vigil_json(&["sessions"]);
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let key = format!("old-host/{}/5", &OLD_BOOT[..8]);
    assert_eq!(sessions[0]["key"], key.as_str());
    assert_eq!(sessions[0]["user"], "olduser");
    assert_eq!(sessions[0]["entry"], "ssh");
    assert_eq!(sessions[0]["commands"], 2);
    let timeline = vigil_json(&["session", &key]);
    assert_eq!(
        timeline["events"].as_array().unwrap().len(),
        3,
        "{timeline}"
    );
    assert!(
        timeline["damage"].as_array().unwrap().is_empty(),
        "{timeline}"
    );
    assert!(timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["host"] == "old-host" && e["boot_id"] == OLD_BOOT));

    // Done once: migrating again changes nothing, and new rows feed the views.
    let out = run_ok(
        Command::new(vigil_bin())
            .args(["db", "migrate", "--config"])
            .arg(&config),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema up to date"));
    assert_eq!(
        ch.query("SELECT count() FROM events FORMAT TSV")
            .unwrap()
            .trim(),
        "3"
    );
    ch.query(&format!(
        "INSERT INTO events (host, boot_id, seq, time, type, session_id, loginuid, detail) VALUES \
         ('old-host', 'later-boot', 4, fromUnixTimestamp64Nano({}, 'UTC'), 'exec', 5, 1000, {})",
        t0 + 86_400_000_000_000,
        sql_quote(&exec(3, "/usr/bin/true"))
    ))
    .unwrap();
    let sessions = vigil_json(&["sessions"]);
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
    assert_columns_are_the_rows(&ch);

    // Root on one host empties its list, sets retention to a day and restarts its daemon: the
    // daemon changes neither (it never runs DDL, and its user may only insert).
    let patterns = || {
        ch.query("SELECT pattern FROM sensitive_paths ORDER BY pattern FORMAT TSV")
            .unwrap()
    };
    let ttl = || {
        ch.query("SELECT engine_full FROM system.tables WHERE database = 'vigil' AND name = 'events' FORMAT TSV")
            .unwrap()
    };
    let fleet = patterns();
    assert!(fleet.contains("/etc/shadow"), "{fleet}");
    assert!(ttl().contains("toIntervalDay(90)"), "{}", ttl());
    let daemon = vigil_e2e::Daemon::start(&format!(
        "{}  retention_days: 1\ndetection:\n  baseline:\n    sensitive_paths: []\n",
        ch.config_yaml()
    ))
    .expect("daemon starts");
    let (_, log) = daemon.stop_with_log().expect("daemon stops");
    assert!(log.contains("ClickHouse schema checked"), "{log}");
    assert_eq!(
        patterns(),
        fleet,
        "a host's daemon replaced the fleet's sensitive paths"
    );
    assert!(
        ttl().contains("toIntervalDay(90)"),
        "a host's daemon changed retention: {}",
        ttl()
    );
    // And its user cannot, by hand either.
    for sql in [
        "ALTER TABLE vigil.events MODIFY TTL toDateTime(time) + INTERVAL 1 DAY",
        "ALTER TABLE vigil.events DELETE WHERE 1",
        "TRUNCATE TABLE vigil.events",
        "DROP TABLE vigil.events",
        "INSERT INTO vigil.host_keys (host, key) VALUES ('old-host', 'ed25519:forged')",
        "SELECT * FROM file('/etc/shadow', 'LineAsString')",
    ] {
        let err = ch
            .query_as(WRITER_USER, WRITER_PASSWORD, sql)
            .expect_err(sql);
        assert!(err.to_string().contains("ACCESS_DENIED"), "{sql}: {err}");
    }
    // The administrator's migrate sets them.
    std::fs::write(
        &config,
        format!(
            "{}detection:\n  baseline:\n    sensitive_paths: [/srv/secret/]\n",
            ch.admin_config_yaml()
        ),
    )
    .unwrap();
    run_ok(
        Command::new(vigil_bin())
            .args(["db", "migrate", "--config"])
            .arg(&config),
    );
    assert_eq!(patterns().trim(), "/srv/secret/");
    ch.stop().unwrap();
}

/// The tables the shipper writes have exactly the columns of the Rust rows, in order: the
/// schema and the model are one definition or this fails.
fn assert_columns_are_the_rows(ch: &ClickHouse) {
    use clickhouse::Row as _;
    for (table, columns) in [
        ("events", vigil::store::EventRow::COLUMN_NAMES),
        ("quarantine", vigil::store::QuarantineRow::COLUMN_NAMES),
    ] {
        let described = ch
            .query(&format!("DESCRIBE TABLE {table} FORMAT TSV"))
            .unwrap();
        let mut names: Vec<&str> = described
            .lines()
            .filter_map(|l| l.split('\t').next())
            .collect();
        // Columns ClickHouse fills itself are not the shipper's to send.
        names.retain(|n| *n != "received");
        assert_eq!(names, columns, "{table}");
    }
}

#[test]
fn a_fresh_database_has_the_rows_columns() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();
    run_ok(
        Command::new(vigil_bin())
            .args(["db", "migrate", "--config"])
            .arg(&config),
    );
    assert_columns_are_the_rows(&ch);
    ch.stop().unwrap();
}

/// Migration 9 on a database of the release before it: `events` a ReplacingMergeTree without
/// the chain's columns, with rows in it. The old table is kept (`events_before_v9`), every row
/// is copied, the views are made again on the new table, and `vigil verify` calls the copied
/// rows unchained (not tampered).
#[test]
fn migration_9_makes_events_append_only_and_keeps_every_row() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let config = dir.path().join("admin.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();
    let migrate = || {
        run_ok(
            Command::new(vigil_bin())
                .args(["db", "migrate", "--config"])
                .arg(&config),
        )
    };
    migrate();
    // Back to the layout of migration 8: the table as that release made it, and the ledger.
    for sql in [
        "DROP VIEW sessions_mv",
        "DROP VIEW session_identity_mv",
        "DROP VIEW alerts_mv",
        "DROP VIEW user_baseline_mv",
        "DROP VIEW user_daily_volume_mv",
        "DROP TABLE events",
        "CREATE TABLE events (host LowCardinality(String), boot_id LowCardinality(String), seq UInt64, \
         time DateTime64(9, 'UTC'), mono_ns UInt64, type LowCardinality(String), session_id UInt32, \
         loginuid UInt32, pid UInt32, tid UInt32, ppid UInt32, uid UInt32, euid UInt32, gid UInt32, \
         cgroup_id UInt64, comm LowCardinality(String), path String, argv Array(String), bytes UInt64, \
         port UInt16, ret Int64, gained_root Bool, summary String, detail String) \
         ENGINE = ReplacingMergeTree PARTITION BY toDate(time) ORDER BY (host, boot_id, session_id, time, seq)",
        "ALTER TABLE schema_migrations DELETE WHERE version >= 9 SETTINGS mutations_sync = 1",
    ] {
        ch.query(sql).unwrap();
    }
    // (Within retention: older rows would be removed by the TTL.)
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        - 3_600_000_000_000;
    ch.query(&format!(
        "INSERT INTO events (host, boot_id, seq, time, type, session_id, loginuid, detail) VALUES \
         ('old-host', 'b1', 1, fromUnixTimestamp64Nano({t0}, 'UTC'), 'exec', 5, 1000, {})",
        sql_quote(&old_detail(
            EventBody::Exec(ExecEvent {
                filename: RawBytes::from("/usr/bin/id"),
                exe: None,
                argv: vec![RawBytes::from("id")],
                argv_truncated: false,
                argv_total_bytes: 3,
                filename_truncated: false,
                cwd: None,
                cwd_truncated: false,
                tty: None,
                old_pid: 4242,
                ancestry: Vec::new(),
                stdin: None,
                stdout: None,
                stderr: None,
            }),
            5,
            t0
        ))
    ))
    .unwrap();
    let out = migrate();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("applied migrations [9, 10, 11, 12]"),
        "{shown}"
    );
    let q = |sql: &str| {
        ch.query(&format!("{sql} FORMAT TSV"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        q("SELECT engine FROM system.tables WHERE database = 'vigil' AND name = 'events'"),
        "MergeTree"
    );
    assert_eq!(
        q("SELECT comment FROM system.tables WHERE database = 'vigil' AND name = 'events_before_v9'"),
        "copied"
    );
    assert_eq!(
        q("SELECT count() FROM events WHERE host = 'old-host' AND epoch = ''"),
        "1"
    );
    assert_eq!(
        q("SELECT count() FROM system.tables WHERE database = 'vigil' AND name LIKE '%_mv'"),
        "5",
        "the views are made again"
    );
    // Migrating again changes nothing.
    let again = migrate();
    assert!(String::from_utf8_lossy(&again.stdout).contains("schema up to date"));
    assert_eq!(q("SELECT count() FROM events WHERE host = 'old-host'"), "1");
    let verify = Command::new(vigil_bin())
        .args(["verify", "--clickhouse", "--host", "old-host", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("unchained"), "{text}");
    ch.stop().unwrap();
}
