//! The evasion suite: what an insider who has read Vigil's source tries, each in a real login
//! session on the real kernel under the real daemon. Five classes (how a file is named or
//! reached, how a program is identified, how a process leaves its session, how traffic leaves
//! the host, how the monitor itself is reached); every variant must
//! raise its rule with its ATT&CK technique, name the file by its canonical path, and (for the
//! ways out of a session) still attribute what followed to the session. A benign session beside
//! them raises nothing.

use std::collections::BTreeMap;

use serde_json::Value;
use vigil_e2e::{ensure_user, of_type, require_root, scenarios::Fixtures, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

#[test]
fn every_evasion_variant_is_detected_with_its_canonical_path() {
    require_root();
    ensure_user();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Fixtures::start(dir.path());
    let home = fixtures.home.clone();
    let evasions = fixtures.evasions();
    assert!(evasions.len() >= 25, "{} variants", evasions.len());
    let benign = fixtures.benign(1).remove(0)
        + "; cat /etc/passwd > /dev/null; python3 -c 'import os; print(os.getcwd())' > /dev/null; \
           tar cf - /etc/hostname 2>/dev/null | cat > /dev/null; echo aGkK | base64 -d > /dev/null; \
           cat /proc/self/environ > /dev/null; cat < /etc/hostname > /dev/null; true";

    let daemon = Daemon::start_with_spool(Some(&dir.path().join("spool")), "").expect("daemon");
    let base = 40_000 + (std::process::id() % 500) * 100;
    for (i, e) in evasions.iter().enumerate() {
        vigil_e2e::login_session(HELPER, base + i as u32, &home, &e.scenario.script);
    }
    let benign_uid = base + 99;
    assert!(evasions.len() < 99, "session ids would overlap");
    vigil_e2e::login_session(HELPER, benign_uid, &home, &benign);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = daemon.stop().expect("daemon stops");
    drop(fixtures);

    let alerts = of_type(&events, "alert");
    let of_session = |uid: u32| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["process"]["loginuid"] == uid)
            .copied()
            .collect()
    };
    let mut failures = Vec::new();
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, e) in evasions.iter().enumerate() {
        let s = &e.scenario;
        let mine = of_session(base + i as u32);
        let row = per_class.entry(e.class.name()).or_default();
        row.0 += 1;
        let Some(hit) = mine.iter().find(|a| a["rule"] == s.rule) else {
            failures.push(format!(
                "{:?} / {}: no {} alert; its session raised {:?}",
                e.class,
                s.name,
                s.rule,
                mine.iter().map(|a| &a["rule"]).collect::<Vec<_>>()
            ));
            continue;
        };
        if hit["technique"] != s.technique {
            failures.push(format!("{}: technique {} ", s.name, hit["technique"]));
            continue;
        }
        if let Some(path) = e.path {
            let evidence = hit["evidence"].as_str().unwrap_or("");
            if !evidence.contains(path) {
                failures.push(format!("{}: evidence {evidence:?} lacks {path}", s.name));
                continue;
            }
        }
        if let Some(also) = e.also {
            if !mine.iter().any(|a| a["rule"] == also) {
                failures.push(format!(
                    "{}: no {also} in its session too ({:?})",
                    s.name,
                    mine.iter().map(|a| &a["rule"]).collect::<Vec<_>>()
                ));
                continue;
            }
        }
        row.1 += 1;
    }
    for (class, (n, caught)) in &per_class {
        eprintln!("{class}: {caught}/{n} detected");
    }
    assert!(
        failures.is_empty(),
        "evasions got past:\n{}",
        failures.join("\n")
    );
    let benign_alerts = of_session(benign_uid);
    assert!(
        benign_alerts.is_empty(),
        "benign session raised {benign_alerts:#?}"
    );

    // The kernel named the opened file: a symlink's read is /etc/shadow in the event itself,
    // with the link as the path asked for, and the inode the kernel opened.
    let uid_of = |name: &str| {
        base + evasions
            .iter()
            .position(|e| e.scenario.name == name)
            .expect("a variant of that name") as u32
    };
    let symlink_uid = uid_of("symlink");
    let open = of_type(&events, "open")
        .into_iter()
        .find(|o| o["process"]["loginuid"] == symlink_uid && o["path"] == "/etc/shadow")
        .expect("the symlink's open, under the file's own path");
    assert!(
        open["requested_path"].as_str().unwrap().ends_with("/notes"),
        "{open}"
    );
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        open["file"]["ino"].as_u64(),
        Some(std::os::unix::fs::MetadataExt::ino(&shadow))
    );
    // And the program: the copy of cat named sudo is cat, not trusted.
    let sudo_uid = uid_of("cat copied as sudo");
    let exec = of_type(&events, "exec")
        .into_iter()
        .find(|x| {
            x["process"]["loginuid"] == sudo_uid
                && x["exe"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/sudo"))
        })
        .expect("the copy's exec");
    assert_eq!(exec["process"]["exe"]["program"], "/usr/bin/cat", "{exec}");
    assert_ne!(exec["exe"]["trust"], "packaged");
    // While the packaged program itself is trusted (its content checked against dpkg's record,
    // the kernel's inode and change time matched): what exemptions rely on.
    let cat = of_type(&events, "exec")
        .into_iter()
        .find(|x| x["process"]["loginuid"] == symlink_uid && x["exe"]["path"] == "/usr/bin/cat")
        .expect("the symlink session's cat");
    assert_eq!(cat["exe"]["trust"], "packaged", "{cat}");
    assert_eq!(cat["process"]["exe"]["trusted"], true);
    assert_eq!(exec["exe"]["sha256"].as_str().map(str::len), Some(64));
}
