//! The tamper-evident trail, attacked as an insider with root on one host would: against the
//! real daemon (signing checkpoints with its host key) and ClickHouse (chdb, with the daemons'
//! insert-only user), every attempt is either refused or named by `vigil verify`, and an
//! untouched trail verifies clean.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use vigil::spool::frame::{
    encode_record, list_segments, scan, Chain, Scanned, SegmentFile, SegmentHeader,
};
use vigil_e2e::{
    free_port, require_root, vigil_bin, ClickHouse, Daemon, WebhookReceiver, WRITER_PASSWORD,
    WRITER_USER,
};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn run_trues(loginuid: u32, n: u32) {
    let status = Command::new(HELPER)
        .args(["login", &loginuid.to_string(), "--", "/bin/bash", "-c"])
        .arg(format!("for i in $(seq {n}); do /bin/true; done"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Integrity settings of a test daemon: its key in `dir`, checkpoints every half second.
fn integrity_yaml(key: &Path, extra: &str) -> String {
    format!(
        "integrity:\n  key_file: {}\n  checkpoint_interval_ms: 500\n  silent_after_ms: 1000\n{extra}",
        key.display()
    )
}

/// `vigil verify` with `args`: (clean, output).
fn verify(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(vigil_bin())
        .arg("verify")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        other => panic!("vigil verify failed ({other:?}): {text}"),
    }
}

fn public_key(config: &Path) -> String {
    let out = Command::new(vigil_bin())
        .args(["key", "show", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Rewrites every segment of `dir` as an insider who read the source would: each payload
/// through `edit`, every checksum fixed, and (`rechain`) every chain value recomputed too (no
/// key is needed for either).
fn rewrite_spool(dir: &Path, rechain: bool, mut edit: impl FnMut(u64, &mut Vec<u8>)) {
    let mut chain: Option<Chain> = None;
    for (first, path) in list_segments(dir).unwrap() {
        let mut seg = SegmentFile::open(&path, first).unwrap().unwrap();
        let mut header: SegmentHeader = seg.header;
        if let Some(c) = chain {
            header.prev_chain = c;
        }
        let mut c = header.prev_chain;
        let mut out = header.encode().to_vec();
        scan(&mut seg, |item| {
            if let Scanned::Record {
                seq,
                payload,
                chain: stored,
                ..
            } = item
            {
                let mut p = payload.to_vec();
                edit(seq, &mut p);
                c = match (rechain, stored) {
                    (false, Some(stored)) => stored,
                    _ => c.next(seq, &p),
                };
                out.extend_from_slice(&encode_record(seq, &c, &p));
                out.extend_from_slice(&p);
            }
        })
        .unwrap();
        chain = Some(c);
        std::fs::write(&path, out).unwrap();
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    spool: PathBuf,
    config: PathBuf,
    key_file: PathBuf,
}

/// A daemon that captured a session in a spool of small segments and stopped cleanly.
fn recorded_spool() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let key_file = dir.path().join("host-key.pem");
    let yaml = format!(
        "spool:\n  dir: {}\n  segment_bytes: 65536\n{}",
        spool.display(),
        integrity_yaml(&key_file, "")
    );
    let daemon = Daemon::start(&yaml).expect("daemon starts");
    run_trues(61_000 + std::process::id() % 1000, 40);
    std::thread::sleep(std::time::Duration::from_millis(1200)); // a heartbeat or two
    daemon.stop().expect("daemon stops");
    let config = dir.path().join("verify.yaml");
    std::fs::write(&config, &yaml).unwrap();
    // Pin the key, as an administrator would from `vigil key show`.
    let pinned = format!(
        "{yaml}  trusted_keys:\n    {}: \"{}\"\n",
        vigil::event::Origin::this_process().host,
        public_key(&config)
    );
    std::fs::write(&config, pinned).unwrap();
    assert!(
        list_segments(&spool).unwrap().len() >= 3,
        "several segments"
    );
    Setup {
        _dir: dir,
        spool,
        config,
        key_file,
    }
}

#[test]
fn every_attempt_on_a_spool_is_named_by_verify() {
    require_root();
    let s = recorded_spool();
    let (clean, out) = verify(&s.config, &["--spool", s.spool.to_str().unwrap()]);
    assert!(clean, "an untouched spool verifies: {out}");
    assert!(out.contains("verified"), "{out}");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&s.spool), 0o700);
    assert_eq!(mode(&s.key_file), 0o600);

    let attempt = |name: &str, tamper: &dyn Fn(&Path), expect: &str| {
        let copy = s.spool.with_file_name(format!("spool-{name}"));
        copy_dir(&s.spool, &copy);
        tamper(&copy);
        let (clean, out) = verify(&s.config, &["--spool", copy.to_str().unwrap()]);
        assert!(!clean, "{name}: not caught: {out}");
        assert!(out.contains(expect), "{name}: expected {expect}: {out}");
    };
    let edit_first_true = || {
        let mut done = false;
        move |_: u64, p: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(p).to_string();
            if !done && text.contains("/bin/true") {
                *p = text.replacen("/bin/true", "/bin/echo", 1).into_bytes();
                done = true;
            }
        }
    };
    // One record's command changed, its checksum fixed (a hand-written record).
    attempt(
        "edited",
        &|dir| rewrite_spool(dir, false, edit_first_true()),
        "edited",
    );
    // The same, with every chain value after it recomputed: the links hold, the signed
    // checkpoints do not.
    attempt(
        "rechained",
        &|dir| rewrite_spool(dir, true, edit_first_true()),
        "checkpoint_mismatch",
    );
    // A middle segment deleted.
    attempt(
        "deleted-segment",
        &|dir| {
            let segs = list_segments(dir).unwrap();
            std::fs::remove_file(&segs[1].1).unwrap();
        },
        "missing",
    );
    // Two records swapped (reordered), chains recomputed.
    attempt(
        "reordered",
        &|dir| {
            let mut held: Option<Vec<u8>> = None;
            rewrite_spool(dir, true, |seq, p| {
                if seq == 5 {
                    held = Some(p.clone());
                } else if seq == 6 {
                    if let Some(h) = held.take() {
                        *p = h;
                    }
                }
            });
        },
        "checkpoint_mismatch",
    );
    // Everything re-signed by another key (the insider replaced the host key and rewrote).
    attempt(
        "resigned",
        &|dir| {
            let other = vigil::trail::HostKey::generate().unwrap();
            let signer = vigil::trail::Signer {
                key: other,
                host: vigil::event::Origin::this_process().host.to_string(),
            };
            rewrite_spool(dir, true, |_, p| {
                let Ok(mut e) = serde_json::from_slice::<vigil::event::Event>(p) else {
                    return;
                };
                if let vigil::event::EventBody::Checkpoint(c) = &mut e.body {
                    signer.sign(e.time_ns, c);
                    *p = serde_json::to_vec(&e).unwrap();
                }
            });
        },
        "untrusted_key",
    );
    // The end cut off (the stop checkpoint and what came after the last heartbeat).
    attempt(
        "truncated",
        &|dir| {
            let (_, last) = list_segments(dir).unwrap().pop().unwrap();
            let len = std::fs::metadata(&last).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
            f.set_len(len * 2 / 3).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
        },
        "silent",
    );
}

/// Rows of the host in ClickHouse, once the shipper has caught up with `want` of them.
fn wait_rows(ch: &ClickHouse, host: &str, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: u64 = ch
            .query(&format!(
                "SELECT count() FROM events WHERE host = '{host}' FORMAT TSV"
            ))
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0);
        if n >= want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{n} of {want} rows");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn clickhouse_refuses_or_verify_names_what_a_host_can_try() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse");
    let spool = dir.path().join("spool");
    let key_file = dir.path().join("host-key.pem");
    let host = vigil::event::Origin::this_process().host.to_string();
    let daemon_yaml = format!("{}{}", ch.config_yaml(), integrity_yaml(&key_file, ""));
    let daemon = Daemon::start_with_spool(Some(&spool), &daemon_yaml).expect("daemon starts");
    let loginuid = 62_000 + std::process::id() % 1000;
    run_trues(loginuid, 30);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    daemon.stop().expect("daemon stops");
    let admin = dir.path().join("admin.yaml");
    std::fs::write(
        &admin,
        format!(
            "{}{}",
            ch.admin_config_yaml(),
            integrity_yaml(&key_file, "")
        ),
    )
    .unwrap();
    let spooled = list_segments(&spool).unwrap().len();
    assert!(spooled > 0);
    let rows: u64 = ch
        .query(&format!(
            "SELECT count() FROM events WHERE host = '{host}' FORMAT TSV"
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rows > 30, "{rows}");
    // Before its key is registered, the host's checkpoints prove nothing.
    let (clean, out) = verify(&admin, &["--clickhouse"]);
    assert!(!clean && out.contains("untrusted_key"), "{out}");
    // The administrator registers it.
    let key = public_key(&admin);
    let reg = Command::new(vigil_bin())
        .args(["db", "register-key", "--host", &host, &key, "--config"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(reg.status.success(), "{reg:?}");
    // ... which the daemon's user could not have done itself.
    let err = ch
        .query_as(
            WRITER_USER,
            WRITER_PASSWORD,
            &format!("INSERT INTO host_keys (host, key) VALUES ('{host}', 'ed25519:x')"),
        )
        .expect_err("daemon user writes host_keys");
    assert!(err.to_string().contains("ACCESS_DENIED"), "{err}");
    let (clean, out) = verify(&admin, &["--clickhouse"]);
    assert!(clean, "an untouched ClickHouse verifies: {out}");

    // A forged command inserted over a real one (the same epoch and sequence), with the
    // daemon's own credentials: nothing is replaced, and verify names it.
    let original = ch
        .query(&format!(
            "SELECT epoch, seq, hex(chain), boot_id, session_id, toUnixTimestamp64Nano(time), detail \
             FROM events WHERE host = '{host}' AND type = 'exec' ORDER BY seq LIMIT 1 FORMAT TSV"
        ))
        .unwrap();
    let cols: Vec<&str> = original.trim_end().splitn(7, '\t').collect();
    let forged_detail = cols[6].replace("/bin/true", "/bin/echo");
    let insert = format!(
        "INSERT INTO events (host, boot_id, epoch, seq, chain, time, type, session_id, loginuid, detail) \
         VALUES ('{host}', '{}', '{}', {}, unhex('{}'), fromUnixTimestamp64Nano({}, 'UTC'), 'exec', {}, {loginuid}, '{}')",
        cols[3],
        cols[0],
        cols[1],
        cols[2],
        cols[5],
        cols[4],
        forged_detail.replace('\\', "\\\\").replace('\'', "\\'")
    );
    ch.query_as(WRITER_USER, WRITER_PASSWORD, &insert)
        .expect("the daemon's user may insert");
    let (clean, out) = verify(&admin, &["--clickhouse"]);
    assert!(!clean && out.contains("conflicting_copies"), "{out}");
    // The host's rows copied under another host's name (one whose key is registered).
    let other_key = vigil::trail::HostKey::generate()
        .unwrap()
        .public()
        .to_string();
    let reg = Command::new(vigil_bin())
        .args([
            "db",
            "register-key",
            "--host",
            "web-2",
            &other_key,
            "--config",
        ])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(reg.status.success());
    // (Through a copy: chdb's INSERT ... SELECT from the table itself inserts nothing.)
    for sql in [
        "CREATE TABLE copied AS events".to_string(),
        format!("INSERT INTO copied SELECT * FROM events WHERE host = '{host}'"),
        "INSERT INTO events SELECT * REPLACE ('web-2' AS host) FROM copied".to_string(),
    ] {
        ch.query(&sql).unwrap();
    }
    let (_, out) = verify(&admin, &["--clickhouse", "--host", "web-2"]);
    assert!(
        out.contains("host_mismatch") && out.contains("untrusted_key"),
        "{out}"
    );
    // A registered host that never sends anything is silent.
    let reg = Command::new(vigil_bin())
        .args([
            "db",
            "register-key",
            "--host",
            "ghost",
            &other_key,
            "--config",
        ])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(reg.status.success());
    let (_, out) = verify(&admin, &["--clickhouse", "--host", "ghost"]);
    assert!(out.contains("silent"), "{out}");

    // The daemon killed and its spool wiped (acknowledgements and all), then restarted: a new
    // epoch that says why, whose batches reach ClickHouse (their deduplication tokens are new),
    // and the old epoch's missing stop is named.
    let daemon = Daemon::start_with_spool(Some(&spool), &daemon_yaml).expect("daemon starts");
    run_trues(loginuid, 5);
    std::thread::sleep(std::time::Duration::from_millis(800));
    daemon.kill().expect("kill -9");
    std::fs::remove_dir_all(&spool).unwrap();
    let before: u64 = ch
        .query(&format!(
            "SELECT count() FROM events WHERE host = '{host}' FORMAT TSV"
        ))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let daemon = Daemon::start_with_spool(Some(&spool), &daemon_yaml).expect("daemon restarts");
    run_trues(loginuid, 5);
    std::thread::sleep(std::time::Duration::from_millis(800));
    daemon.stop().expect("daemon stops");
    wait_rows(&ch, &host, before + 10);
    let epochs = ch
        .query(&format!(
            "SELECT count(DISTINCT epoch) FROM events WHERE host = '{host}' FORMAT TSV"
        ))
        .unwrap();
    assert_eq!(epochs.trim(), "2", "the wiped spool began a new epoch");
    let began = ch
        .query(&format!(
            "SELECT detail FROM events WHERE host = '{host}' AND detail LIKE '%epoch_began%new spool%' FORMAT TSV"
        ))
        .unwrap();
    assert!(!began.trim().is_empty(), "the new epoch says why");
    let (clean, out) = verify(&admin, &["--clickhouse", "--host", &host]);
    assert!(!clean && out.contains("unclean_end"), "{out}");
    ch.stop().unwrap();
}

/// With `checkpoints: true`, a webhook gets a copy of every checkpoint (start, heartbeats, stop),
/// signed twice: by the webhook secret, and by the host key (what `vigil verify` checks).
#[test]
fn checkpoints_go_to_a_webhook_as_an_off_host_copy() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(dir.path(), "cp-secret", 0).expect("receiver");
    let port = receiver.port;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cp-secret").unwrap();
    let key_file = dir.path().join("host-key.pem");
    let daemon = Daemon::start(&format!(
        "{}alerts:\n  webhooks:\n    - url: http://127.0.0.1:{port}/cp\n      secret_file: {}\n      min_severity: critical\n      checkpoints: true\n",
        integrity_yaml(&key_file, ""),
        secret.display()
    ))
    .expect("daemon starts");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    daemon.stop().expect("daemon stops");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lines = receiver.received();
    receiver.stop();
    let reasons: Vec<String> = lines
        .iter()
        .map(|l| l["body"]["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons.first().is_some_and(|r| r == "start"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "heartbeat"), "{reasons:?}");
    assert!(reasons.last().is_some_and(|r| r == "stop"), "{reasons:?}");
    for l in &lines {
        assert_eq!(l["signature_valid"], true, "{l}");
        let event: vigil::event::Event = serde_json::from_value(l["body"].clone()).unwrap();
        let vigil::event::EventBody::Checkpoint(c) = &event.body else {
            panic!("not a checkpoint: {l}")
        };
        vigil::trail::check_signature(&event.host, event.time_ns, c)
            .expect("signed by the host key");
    }
}
