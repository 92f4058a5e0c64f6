//! Everything an insider controls reaches auditors' terminals escaped, on every output.
//!
//! A real session on the real kernel runs a program whose name carries OSC 52 (a clipboard
//! write), a screen clear, a bidi override and a byte that is not UTF-8, on a file named the
//! same way, and reads /etc/shadow with it (an alert). What a session cannot set itself (its SSH
//! origin, the person behind it, the host's name, terminal output, an alert's title) is written
//! into the recorded events as someone with the host's credentials could. Then every reading
//! command runs on that spool: no output may contain a byte that acts on a terminal, and replay
//! draws its markers after a full reset and leaves the terminal as it found it.

use std::{path::Path, process::Command};

use vigil::{
    event::{EventBody, RawBytes, SshOrigin, TtyEvent},
    present::drives_terminal,
    replay::RESTORE_TERMINAL,
    spool::{read_all, SpoolItem},
};
use vigil_e2e::{require_root, spool_writer, vigil_bin, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");
/// Clipboard write, clear screen, bidi override, zero-width space, a byte that is not UTF-8.
const HOSTILE: &str = "\x1b]52;c;cm0gLXJmIC8K\x07\x1b[2J\u{202e}gpj.exe\u{200b}";

fn run(args: &[&str]) -> std::process::Output {
    Command::new(vigil_bin())
        .args(args)
        .output()
        .expect("vigil runs")
}

fn assert_safe(what: &str, out: &std::process::Output) {
    assert!(out.status.success(), "{what}: {out:?}");
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        // Bytes that are not UTF-8 count as hostile too: they must have been shown as \xNN.
        let text = std::str::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{what} {stream} is not UTF-8: {e}"));
        assert!(
            !drives_terminal(text),
            "{what} {stream} carries what acts on a terminal: {text:?}"
        );
    }
}

#[test]
fn every_cli_output_shows_hostile_strings_without_obeying_them() {
    require_root();
    vigil_e2e::ensure_user();
    let dir = tempfile::tempdir().unwrap();
    let captured = dir.path().join("captured");
    let forged = dir.path().join("forged");
    let daemon = Daemon::start_with_spool(Some(&captured), "").expect("daemon starts");
    let loginuid = 47_000 + std::process::id() % 2_000;
    // $'…' gives bash the raw bytes; \xff is not UTF-8.
    let name = "$'\\e]52;c;cm0gLXJmIC8K\\a\\e[2J\\u202egpj.exe\\u200b\\xff'";
    let script = format!(
        "d={d}/bin; mkdir -p $d && cp /usr/bin/cat $d/{name} && $d/{name} /etc/shadow > /dev/null \
         && touch $d/{name}.txt && $d/{name} $d/{name}.txt; \
         su {user} -s /bin/sh -c 'sudo -n /bin/true'",
        d = dir.path().display(),
        user = vigil_e2e::USER,
    );
    vigil_e2e::login_session(HELPER, loginuid, dir.path(), &script);
    std::thread::sleep(std::time::Duration::from_millis(300));
    daemon.stop().expect("daemon stops");

    // What a session cannot set itself, set as host credentials could.
    let mut events = Vec::new();
    read_all(&captured, 0, |item| {
        if let SpoolItem::Event { event, .. } = item {
            if event.process.loginuid == Some(loginuid) {
                events.push(*event);
            }
        }
    })
    .expect("spool reads");
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.body, EventBody::Alert(a) if a.rule == "credential-store-read")),
        "the hostile program's read raised its alert"
    );
    let host: std::sync::Arc<str> = format!("web{HOSTILE}").into();
    let mut tty_at = None;
    for e in &mut events {
        e.host = host.clone();
        e.process.login_user = Some(format!("alice{HOSTILE}").into());
        match &mut e.body {
            EventBody::SessionStart(s) => {
                s.ssh = Some(SshOrigin {
                    source_address: format!("198.51.100.7{HOSTILE}"),
                    source_port: 40_022,
                    server_port: 22,
                    auth_method: Some(format!("publickey{HOSTILE}")),
                    key_fingerprint: Some(format!("SHA256:{HOSTILE}")),
                });
                s.login_user = Some(format!("alice{HOSTILE}"));
                s.identity = Some(vigil::directory::CorporateIdentity {
                    person: format!("Alice{HOSTILE}"),
                    email: Some(format!("a@x{HOSTILE}")),
                    team: Some(HOSTILE.into()),
                    role: None,
                    peer_group: Some(HOSTILE.into()),
                });
                tty_at = Some(e.clone());
            }
            EventBody::Alert(a) => {
                a.title = format!("First run of {HOSTILE}");
                a.reasons.push(format!("anomaly {HOSTILE} (+10)"));
                a.evidence = format!("read from {HOSTILE}");
            }
            _ => {}
        }
    }
    let mut output = tty_at.expect("a session start");
    output.mono_ns += 1;
    output.body = EventBody::TtyOutput(TtyEvent {
        tty: format!("pts/9{HOSTILE}"),
        data: RawBytes(format!("listing\r\n{HOSTILE}\x1b(0lqqk\x1b[8m").into_bytes()),
        total_bytes: 40,
        truncated: false,
        over_budget: false,
        unreadable: false,
        rows: 24,
        cols: 80,
        onlcr: true,
        echo: true,
    });
    events.push(output);
    events.sort_by_key(|e| e.mono_ns);
    let session = events[0]
        .process
        .sessionid
        .expect("in a session")
        .to_string();
    {
        let mut spool = spool_writer(&forged);
        for e in &events {
            spool.append(e).expect("append");
        }
        spool.flush().expect("flushed");
    }

    let spool = forged.to_str().unwrap();
    for args in [
        vec!["sessions", "--spool", spool],
        vec!["alerts", "--spool", spool],
        vec!["session", &session, "--spool", spool],
        vec!["report", "--since", "30d", "--spool", spool],
    ] {
        assert_safe(&args.join(" "), &run(&args));
    }
    // An id that names nothing is quoted back in the error, escaped as well.
    let missing = run(&["session", &format!("9{HOSTILE}"), "--spool", spool]);
    assert!(!missing.status.success());
    assert!(!drives_terminal(&String::from_utf8_lossy(&missing.stderr)));

    // The report's suggested commands are one shell word each, whatever the host is called.
    let report = String::from_utf8(run(&["report", "--since", "30d", "--spool", spool]).stdout)
        .expect("UTF-8");
    assert!(report.contains("vigil replay 'web"), "{report}");

    // Replay draws the recorded output through its filter, its markers after a full reset, and
    // leaves the terminal as it found it.
    let replay = run(&["replay", &session, "--spool", spool, "--instant"]);
    assert!(replay.status.success(), "{replay:?}");
    let drawn = &replay.stdout;
    let has = |needle: &[u8]| drawn.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"\x1b]52"), "the clipboard write reached the viewer");
    assert!(has(b"listing"));
    assert!(
        drawn.ends_with(RESTORE_TERMINAL),
        "replay restores the terminal"
    );
    let markers = drawn
        .windows(b"[vigil ".len())
        .enumerate()
        .filter(|(_, w)| *w == b"[vigil ")
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert!(!markers.is_empty());
    for at in markers {
        let before = &drawn[..at];
        assert!(
            before.ends_with(b"\x1b[0m\x1b(B\x0f\x1b[4l\x1b[?6l\x1b[r\r\n\x1b[7m"),
            "marker at {at} is not drawn after a reset: {:?}",
            String::from_utf8_lossy(&before[before.len().saturating_sub(40)..])
        );
        let line_end = drawn[at..]
            .iter()
            .position(|&b| b == b'\r')
            .map_or(drawn.len(), |n| at + n);
        let line = String::from_utf8_lossy(&drawn[at..line_end]);
        let inner = line
            .trim_start_matches("[vigil ")
            .trim_end_matches("\x1b[0m");
        assert!(!drives_terminal(inner), "marker text {line:?}");
    }
    let _ = Path::new(spool);
}

/// A rules file nested 20,000 deep (parentheses, `not`s, a chain of `and`s) is refused with an
/// error naming the bound, not a stack overflow that would abort the CLI or crash-loop a daemon
/// that reloads it.
#[test]
fn hostile_rules_files_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    let rule = |when: String| {
        format!(
            "rules:\n  - id: deep\n    title: deep\n    technique: T1059\n    severity: low\n    risk: 1\n    when: {}\n",
            serde_json::to_string(&when).unwrap()
        )
    };
    for (name, text, expect) in [
        (
            "parens",
            rule(format!(
                "{}type == \"exec\"{}",
                "(".repeat(n),
                ")".repeat(n)
            )),
            "nested more than 64",
        ),
        (
            "nots",
            rule(format!("{}type == \"exec\"", "not ".repeat(n))),
            "nested more than 64",
        ),
        (
            "chain",
            rule(vec!["type == \"exec\""; n].join(" and ")),
            "more than 2000 terms",
        ),
        (
            "yaml",
            format!("rules: {}{}\n", "[".repeat(n), "]".repeat(n)),
            "recursion limit",
        ),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = run(&["rules", "check", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
    }
}
