//! Terminal recording and replay on a real pty: a login session typed into through the pty
//! master, recorded by the kernel programs, replayed by `vigil replay` to the same screen the
//! terminal showed (compared through a terminal emulator's screen model), with the sequences
//! that would act on the viewer removed, no input recorded while echo was off, and exported as
//! asciicast that the real asciinema player reads.

use std::{
    io::{Read, Write},
    os::fd::OwnedFd,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{
    free_port, of_type, python, raw_bytes, require_root, run_ok, vigil_bin, ClickHouse, Daemon,
};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");
const ROWS: u16 = 30;
const COLS: u16 = 100;
const SECRET: &str = "hunter2-not-for-the-record";

/// A shell on a real pty, driven through its master like a person at a terminal.
struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Terminal {
    fn start(loginuid: u32) -> Terminal {
        let winsize = nix::pty::Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&winsize), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let child = Command::new(HELPER)
            .args(["login", &loginuid.to_string(), "--"])
            .args(["/bin/bash", "--norc", "--noprofile", "-i"])
            .env("PS1", "$ ")
            .env("TERM", "xterm")
            .env("HISTFILE", "/dev/null")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("shell starts");
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reading = master.try_clone().unwrap();
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave fd closes: the session is over.
            while let Ok(n) = reading.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let t = Terminal {
            master,
            seen,
            child,
            reader: Some(reader),
        };
        t.wait_for("$ ");
        t
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let count = |s: &[u8]| {
            s.windows(text.len())
                .filter(|w| *w == text.as_bytes())
                .count()
        };
        while count(&self.seen.lock().unwrap()) == 0 {
            assert!(Instant::now() < deadline, "terminal never showed {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys`, then waits until the screen has shown `expect` `times` times in all.
    fn type_and_wait(&mut self, keys: &str, expect: &str, times: usize) {
        self.master.write_all(keys.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = {
                let s = self.seen.lock().unwrap();
                s.windows(expect.len())
                    .filter(|w| *w == expect.as_bytes())
                    .count()
            };
            if n >= times {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "terminal never showed {expect:?} {times} times: {}",
                String::from_utf8_lossy(&self.seen.lock().unwrap())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the writes that follow the awaited text land too.
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Ends the session; what the terminal showed, all of it.
    fn finish(mut self) -> Vec<u8> {
        self.master.write_all(b"exit\n").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "shell exited with {status}");
        if let Some(r) = self.reader.take() {
            // The reader stops at EIO, once the shell's side of the pty is closed.
            r.join().unwrap();
        }
        let out = self.seen.lock().unwrap().clone();
        out
    }
}

fn screen(bytes: &[u8]) -> String {
    let mut parser = vt100::Parser::new(ROWS, COLS, 0);
    parser.process(bytes);
    parser.screen().contents()
}

fn vigil(args: &[&str]) -> Vec<u8> {
    run_ok(Command::new(vigil_bin()).args(args)).stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Everything under `dir`, concatenated (to look for bytes that must not be there).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

/// Types a session with hostile output, a program reading echoed input, and a password prompt.
fn typed_session(term: &mut Terminal) {
    term.type_and_wait("echo hello from $((6*7))\n", "hello from 42", 1);
    // Output that would act on the viewer: clipboard write, title, cursor position query,
    // bracketed paste, hyperlink.
    term.type_and_wait(
        "printf 'safe\\033]52;c;cm0gLXJmIC8K\\007\\033]0;pwned\\007\\033[6n\\033[?2004h\\033]8;;http://evil.example/\\033\\\\link\\033]8;;\\033\\\\ done\\n'\n",
        "link",
        1,
    );
    term.type_and_wait("cat\n", "cat", 1);
    term.type_and_wait("typed into cat\n", "typed into cat", 2);
    term.type_and_wait("\x04", "$ ", 4);
    term.type_and_wait(
        "read -s -p 'Password: ' pw; echo; echo got ${#pw}\n",
        "Password: ",
        1,
    );
    term.type_and_wait(&format!("{SECRET}\n"), "got 26", 1);
}

#[test]
fn a_pty_session_replays_to_the_screen_it_showed_and_nothing_more() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    let loginuid = 46_000 + std::process::id() % 4_000;
    let mut term = Terminal::start(loginuid);
    typed_session(&mut term);
    let shown = term.finish();
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let ours: Vec<Value> = events
        .iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .cloned()
        .collect();
    let session = ours[0]["process"]["sessionid"]
        .as_u64()
        .unwrap()
        .to_string();

    // Recorded faithfully: the output as written, with the terminal's size.
    let output = of_type(&ours, "tty_output");
    assert!(!output.is_empty());
    assert!(output.iter().all(|e| e["rows"] == ROWS
        && e["cols"] == COLS
        && e["tty"].as_str().unwrap().starts_with("pts/")));
    let written: Vec<u8> = output.iter().flat_map(|e| raw_bytes(&e["data"])).collect();
    assert!(
        contains(&written, b"\x1b]52;c;cm0gLXJmIC8K\x07"),
        "hostile output is recorded as it was"
    );
    // Input read while the terminal echoed is recorded; the password, read with echo off, is
    // nowhere: not in any event, not in the spool's bytes.
    let typed: Vec<u8> = of_type(&ours, "tty_input")
        .iter()
        .flat_map(|e| raw_bytes(&e["data"]))
        .collect();
    assert!(
        contains(&typed, b"typed into cat\n"),
        "{}",
        String::from_utf8_lossy(&typed)
    );
    assert!(!contains(&typed, SECRET.as_bytes()));
    assert!(
        !contains(&all_bytes(&spool), SECRET.as_bytes()),
        "the password reached the spool"
    );

    // Replay draws exactly the screen the terminal showed.
    let replayed = vigil(&[
        "replay",
        &session,
        "--spool",
        spool.to_str().unwrap(),
        "--instant",
        "--no-markers",
    ]);
    assert_eq!(screen(&replayed), screen(&shown), "replayed screen differs");
    assert!(screen(&shown).contains("typed into cat\ntyped into cat"));
    // ...and nothing that acts on the viewer.
    for bad in [&b"\x1b]"[..], b"\x1b[6n", b"\x1b[?2004h", b"\x07", b"\x1bP"] {
        assert!(!contains(&replayed, bad), "replay let {bad:?} through");
    }

    // Markers: what the session did, and what was removed from its output.
    let marked = String::from_utf8_lossy(&vigil(&[
        "replay",
        &session,
        "--spool",
        spool.to_str().unwrap(),
        "--instant",
    ]))
    .into_owned();
    assert!(
        marked.contains("[vigil ") && marked.contains("exec cat"),
        "{marked}"
    );
    assert!(marked.contains("clipboard access (OSC 52)"), "{marked}");
    assert!(marked.contains("title change"), "{marked}");

    // asciicast v2 that the asciinema player reads back to the same screen.
    let cast = dir.path().join("session.cast");
    vigil(&[
        "export",
        &session,
        "--spool",
        spool.to_str().unwrap(),
        "--format",
        "asciicast",
        "-o",
        cast.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&cast).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], COLS);
    assert_eq!(header["height"], ROWS);
    assert!(
        text.lines().skip(1).any(|l| l.contains("\"m\"")),
        "markers in the cast"
    );
    let played = Command::new(python())
        .args(["-m", "asciinema", "cat"])
        .arg(&cast)
        .output()
        .expect("asciinema (cargo xtask setup installs it)");
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert_eq!(
        screen(&played.stdout),
        screen(&shown),
        "asciinema's playback differs"
    );

    // The full timeline as JSON.
    let json: Value = serde_json::from_slice(&vigil(&[
        "export",
        &session,
        "--spool",
        spool.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    let types: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for t in ["session_start", "exec", "tty_output", "tty_input"] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
}

#[test]
fn replay_from_clickhouse_draws_what_replay_from_the_spool_draws() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch =
        ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse starts");
    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(Some(&spool), &ch.config_yaml()).expect("daemon starts");
    let loginuid = 42_000 + std::process::id() % 3_000;
    let mut term = Terminal::start(loginuid);
    term.type_and_wait("printf 'x\\033]52;c;AAAA\\007y\\n'; echo ok\n", "ok", 2);
    let shown = term.finish();
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let session = events
        .iter()
        .find(|e| e["process"]["loginuid"] == loginuid)
        .map(|e| e["process"]["sessionid"].to_string())
        .unwrap();
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, ch.admin_config_yaml()).unwrap();
    let from_spool = vigil(&[
        "replay",
        &session,
        "--spool",
        spool.to_str().unwrap(),
        "--instant",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let from_clickhouse = loop {
        let out = Command::new(vigil_bin())
            .args(["replay", &session, "--instant", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        if out.status.success() && out.stdout == from_spool {
            break out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse replay never matched: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(screen(&from_clickhouse).contains("xy"));
    assert_eq!(
        screen(&vigil(&[
            "replay",
            &session,
            "--instant",
            "--no-markers",
            "--config",
            config.to_str().unwrap()
        ])),
        screen(&shown)
    );
    ch.stop().unwrap();
}

/// Ctrl-C during a replay puts the viewer's terminal back as it was: a session that left the
/// alternate screen on, the cursor hidden and line drawing selected, interrupted in the middle
/// of a pause, leaves the viewer on the main screen with a cursor, and `vigil` exits 130.
#[test]
fn ctrl_c_in_a_replay_restores_the_viewers_terminal() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(Some(&spool), "").expect("daemon starts");
    let loginuid = 42_000 + std::process::id() % 4_000;
    let mut term = Terminal::start(loginuid);
    term.type_and_wait(
        // Printed through %s: the echo of the typed line does not hold the text itself.
        "printf '\\033[?1049h\\033[?25l\\033(0'; sleep 4; printf 'after %s\\n' 'the pause'\n",
        "after the pause",
        1,
    );
    let _ = term.finish();
    std::thread::sleep(Duration::from_millis(300));
    let events = daemon.stop().expect("daemon stops");
    let session = events
        .iter()
        .find(|e| e["process"]["loginuid"] == loginuid)
        .and_then(|e| e["process"]["sessionid"].as_u64())
        .expect("the session was captured")
        .to_string();

    // Real time: the recorded 4 s pause is where Ctrl-C lands.
    let child = Command::new(vigil_bin())
        .args(["replay", &session, "--spool", spool.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it did not stop"
    );
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(!contains(&out.stdout, b"after the pause"), "it played on");
    // What the recording set, the viewer saw set, and then undone.
    assert!(contains(&out.stdout, b"\x1b[?1049h"));
    let mut parser = vt100::Parser::new(ROWS, COLS, 0);
    parser.process(&out.stdout);
    assert!(
        !parser.screen().alternate_screen(),
        "left on the alternate screen"
    );
    assert!(!parser.screen().hide_cursor(), "left without a cursor");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replay interrupted"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}
