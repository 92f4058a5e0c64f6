//! Folding on the real kernel: routine opens (loader, locale) and repeated opens of one file are
//! counted in the kernel and arrive as `opens_folded` events, with nothing lost; the files an
//! insider cares about are never folded.

use serde_json::Value;
use vigil_e2e::{login_session, of_type, require_root, Daemon};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

fn by_pid<'a>(events: &'a [Value], t: &str, pid: &Value) -> Vec<&'a Value> {
    of_type(events, t)
        .into_iter()
        .filter(|e| &e["process"]["pid"] == pid)
        .collect()
}

fn path_of(e: &Value) -> String {
    e["path"].as_str().unwrap_or_default().to_string()
}

/// A daemon on the default configuration, and a home holding `data.bin` (4096 bytes).
fn daemon_and_data_file() -> (Daemon, tempfile::TempDir, std::path::PathBuf) {
    require_root();
    let daemon = Daemon::start("").expect("daemon starts");
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data.bin");
    std::fs::write(&data, vec![b'd'; 4096]).unwrap();
    (daemon, home, data)
}

/// Everything the daemon recorded of the session of `loginuid`, once stopped.
fn session_events(daemon: Daemon, loginuid: u32) -> Vec<Value> {
    let events = daemon.stop().expect("daemon stops");
    events
        .into_iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .collect()
}

#[test]
fn routine_and_repeated_opens_fold_into_counts_and_credentials_never_do() {
    let (daemon, home, data) = daemon_and_data_file();
    let loginuid = 41_000 + std::process::id() % 9_000;
    let script = format!(
        r#"/usr/bin/ls / > /dev/null
/usr/bin/python3 -c "
for i in range(1000):
    open('{data}', 'rb').read()
for i in range(5):
    open('/etc/shadow', 'rb').read()
"
exit 0"#,
        data = data.display()
    );
    login_session(HELPER, loginuid, home.path(), &script);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let session = session_events(daemon, loginuid);

    // ls: the loader's opens (ld.so.cache, libselinux, libc, ...) are one routine fold.
    let ls = of_type(&session, "exec")
        .into_iter()
        .find(|e| e["filename"] == "/usr/bin/ls")
        .expect("exec of ls");
    let ls_pid = &ls["process"]["pid"];
    let routine_paths: Vec<String> = by_pid(&session, "open", ls_pid)
        .into_iter()
        .map(path_of)
        .filter(|p| p.starts_with("/usr/lib/x86_64-linux-gnu/") || p == "/etc/ld.so.cache")
        .collect();
    assert!(
        routine_paths.is_empty(),
        "routine opens were sent one by one: {routine_paths:?}"
    );
    let folded: Vec<&Value> = by_pid(&session, "opens_folded", ls_pid)
        .into_iter()
        .filter(|e| e["fold"] == "routine")
        .collect();
    let routine_opens: u64 = folded.iter().map(|e| e["opens"].as_u64().unwrap()).sum();
    assert!(
        routine_opens >= 2,
        "ls's loader opens counted as routine: {folded:?}"
    );

    // python: 1000 opens of one file are one open event and folds of the other 999, and
    // every byte read is accounted for.
    let py = of_type(&session, "exec")
        .into_iter()
        .find(|e| {
            e["argv"][0]
                .as_str()
                .is_some_and(|a| a.ends_with("python3"))
        })
        .expect("exec of python3");
    let py_pid = &py["process"]["pid"];
    let data_path = data.display().to_string();
    let sent = by_pid(&session, "open", py_pid)
        .into_iter()
        .filter(|e| path_of(e) == data_path)
        .count();
    let repeats: Vec<&Value> = by_pid(&session, "opens_folded", py_pid)
        .into_iter()
        .filter(|e| e["fold"] == "repeat" && path_of(e) == data_path)
        .collect();
    let folded_opens: u64 = repeats.iter().map(|e| e["opens"].as_u64().unwrap()).sum();
    assert!(sent >= 1, "the first open is sent");
    assert_eq!(
        sent as u64 + folded_opens,
        1000,
        "every open counted once: {sent} sent, {folded_opens} folded"
    );
    assert!(
        sent <= 5,
        "1000 opens in well under the window fold: {sent} sent"
    );
    let read_bytes: u64 = by_pid(&session, "file_read", py_pid)
        .into_iter()
        .filter(|e| path_of(e) == data_path)
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum::<u64>()
        + repeats
            .iter()
            .map(|e| e["bytes"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(read_bytes, 1000 * 4096, "every byte read is reported");

    // /etc/shadow is watched: each of its five opens is sent, and the read is an alert.
    let shadow_opens = by_pid(&session, "open", py_pid)
        .into_iter()
        .filter(|e| path_of(e) == "/etc/shadow")
        .count();
    assert_eq!(shadow_opens, 5, "a watched file's opens are never folded");
    assert!(
        of_type(&session, "alert")
            .iter()
            .any(|a| a["rule"] == "credential-store-read"),
        "the shadow read is an alert"
    );
}

/// A folded open's fd is held in the kernel's fold entry of its process (a few at a time; the
/// rest are followed as any open): every byte read through one is reported, whether it is
/// closed, closed by an exec, or kept across an exec and read by the new program; and a pipe
/// given the number of an fd the exec closed is not counted as that file's.
#[test]
fn folded_fds_count_every_read_across_closes_and_execs() {
    let (daemon, home, data) = daemon_and_data_file();
    let program = home.path().join("held.py");
    std::fs::write(
        &program,
        r#"import os, sys
data = sys.argv[1]
# More folded fds open at once than a fold entry holds.
for _ in range(50):
    fds = [os.open(data, os.O_RDONLY) for _ in range(6)]
    for fd in fds:
        assert len(os.read(fd, 8192)) == 4096
    for fd in fds:
        os.close(fd)
# Pipes below, so that the next two fds are above what the new program's own start opens.
pipes = [os.pipe() for _ in range(8)]
# Read once, then closed by the exec (O_CLOEXEC, Python's default).
closed_by_exec = os.open(data, os.O_RDONLY)
assert len(os.read(closed_by_exec, 1000)) == 1000
# Kept across the exec, and read by the new program.
kept = os.open(data, os.O_RDONLY)
os.set_inheritable(kept, True)
for r, w in pipes:
    os.close(r)
    os.close(w)
# The new program takes the number the exec freed for a pipe (pipe(2) is not an open).
after = f"""import os
pipes = []
while not pipes or pipes[-1][0] < {closed_by_exec}:
    pipes.append(os.pipe())
r, w = pipes[-1]
assert r == {closed_by_exec}, (r, {closed_by_exec})
os.write(w, b"p" * 777)
assert len(os.read(r, 777)) == 777
assert len(os.read({kept}, 8192)) == 4096
"""
os.execv(sys.executable, [sys.executable, "-c", after])
"#,
    )
    .unwrap();
    let loginuid = 32_000 + std::process::id() % 9_000;
    let script = format!("/usr/bin/python3 {} {}", program.display(), data.display());
    let status = login_session(HELPER, loginuid, home.path(), &script);
    assert!(status.success(), "the session's program failed: {status}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let session = session_events(daemon, loginuid);
    let data_path = data.display().to_string();
    let py = of_type(&session, "exec")
        .into_iter()
        .find(|e| e["argv"][1].as_str() == Some(program.to_str().unwrap()))
        .expect("exec of the program");
    let pid = &py["process"]["pid"];
    let sent = by_pid(&session, "open", pid)
        .into_iter()
        .filter(|e| path_of(e) == data_path)
        .count() as u64;
    let repeats: Vec<&Value> = by_pid(&session, "opens_folded", pid)
        .into_iter()
        .filter(|e| e["fold"] == "repeat" && path_of(e) == data_path)
        .collect();
    let folded: u64 = repeats.iter().map(|e| e["opens"].as_u64().unwrap()).sum();
    assert_eq!(sent + folded, 302, "every open counted once: {sent} sent");
    assert!(sent < 10, "the opens folded: {sent} sent");
    let reads: Vec<&Value> = by_pid(&session, "file_read", pid)
        .into_iter()
        .filter(|e| path_of(e) == data_path)
        .collect();
    let bytes: u64 = reads
        .iter()
        .chain(repeats.iter())
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        bytes,
        300 * 4096 + 1000 + 4096,
        "every byte read from the file is reported, and none of the pipe's: {reads:?} {repeats:?}"
    );
}

#[test]
fn folding_off_sends_every_open() {
    require_root();
    let daemon = Daemon::start("capture:\n  fold:\n    enabled: false\n").expect("daemon starts");
    let home = tempfile::tempdir().unwrap();
    let loginuid = 50_000 + std::process::id() % 9_000;
    login_session(HELPER, loginuid, home.path(), "/usr/bin/ls / > /dev/null");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let session = session_events(daemon, loginuid);
    assert!(of_type(&session, "opens_folded").is_empty());
    assert!(
        of_type(&session, "open")
            .iter()
            .any(|e| path_of(e).starts_with("/usr/lib/x86_64-linux-gnu/libc.so")),
        "the loader's opens are sent"
    );
}
