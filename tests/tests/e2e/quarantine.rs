//! Nothing is dropped on the way to ClickHouse: a spool record that passes its checksum but
//! does not decode (a newer daemon wrote it before a rollback) is shipped to `quarantine` as it
//! was, counted, and the events around it arrive as usual.

use std::time::{Duration, Instant};

use base64::Engine as _;
use vigil_e2e::{free_port, require_root, ClickHouse, Daemon};

const FROM_THE_FUTURE: &[u8] = br#"{"type":"exec_v9","mono_ns":"not a number","\u00ff":1}"#;

#[test]
fn a_record_that_does_not_decode_is_quarantined_and_counted_not_dropped() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    {
        let mut writer = vigil_e2e::spool_writer(&spool);
        let before =
            vigil::spool::loss(vigil::event::LossStage::Spool, 0, "an event before".into());
        writer.append(&before).expect("appended");
        writer.append_json(FROM_THE_FUTURE).expect("appended");
        let after = vigil::spool::loss(vigil::event::LossStage::Spool, 0, "an event after".into());
        writer.append(&after).expect("appended");
        writer.flush().expect("flushed");
    }
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let daemon = Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let quarantined = loop {
        let text = daemon.scrape().expect("metrics");
        if let Some(n) = Daemon::metric(&text, "vigil_clickhouse_quarantined_total", &[]) {
            break n;
        }
        assert!(Instant::now() < deadline, "never counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(quarantined, 1.0);
    let (_, log) = daemon.stop_with_log().expect("daemon stops");
    assert!(log.contains("quarantine"), "{log}");

    let rows = ch
        .query("SELECT seq, reason, payload FROM quarantine FORMAT TSV")
        .unwrap();
    let fields: Vec<&str> = rows.trim().split('\t').collect();
    assert_eq!(fields.len(), 3, "{rows}");
    assert_eq!(fields[0], "1", "the record's own sequence number");
    assert!(!fields[1].is_empty());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(fields[2])
            .unwrap(),
        FROM_THE_FUTURE,
        "kept byte for byte"
    );
    let around = ch
        .query("SELECT seq FROM events WHERE type = 'loss' AND seq <= 2 ORDER BY seq FORMAT TSV")
        .unwrap();
    assert_eq!(around.trim(), "0\n2", "the events around it shipped");

    // The readers say so: `vigil db quarantine` lists it, byte for byte, and a listing from
    // ClickHouse warns that records are held there.
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();
    let vigil = |args: &[&str]| {
        vigil_e2e::run_ok(
            std::process::Command::new(vigil_e2e::vigil_bin())
                .args(args)
                .arg("--config")
                .arg(&config),
        )
    };
    let listed = vigil(&["db", "quarantine", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["seq"], 1);
    assert!(!rows[0]["reason"].as_str().unwrap().is_empty());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(rows[0]["payload"].as_str().unwrap())
            .unwrap(),
        FROM_THE_FUTURE
    );
    let table = vigil(&["db", "quarantine"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.lines().count(), 2, "a header and the record: {table}");
    let sessions = vigil(&["sessions"]);
    let warned = String::from_utf8_lossy(&sessions.stderr);
    assert!(
        warned.contains("1 records of host") && warned.contains("vigil db quarantine"),
        "{warned}"
    );
    ch.stop().unwrap();
}
