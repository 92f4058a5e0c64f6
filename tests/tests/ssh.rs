//! A real SSH login: sshd (Debian's, with its PAM stack setting the audit login uid) on a
//! loopback port, a test user with a key, commands over SSH and under sudo. The session is
//! attributed to the SSH user, entered by ssh from 127.0.0.1, with the ancestry through sshd and
//! sudo, and ends when the connection closes.

use std::{
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{free_port, of_type, raw_bytes, require_root, Daemon};

const USER: &str = "vigil-e2e";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test user (created once; left in place, like the packages `cargo xtask setup` installs),
/// allowed to sudo without a password, with `key` authorized.
fn prepare_user(key_pub: &Path) -> u32 {
    if Command::new("id")
        .arg(USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        run(Command::new("useradd").args(["-m", "-s", "/bin/bash", USER]));
    }
    // Not locked (sshd refuses keys for "!" passwords), but no password either.
    run(Command::new("usermod").args(["-p", "*", USER]));
    std::fs::write(
        format!("/etc/sudoers.d/{USER}"),
        format!("{USER} ALL=(ALL) NOPASSWD: ALL\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        format!("/etc/sudoers.d/{USER}"),
        std::fs::Permissions::from_mode(0o440),
    )
    .unwrap();
    let home = format!("/home/{USER}");
    let ssh_dir = format!("{home}/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::copy(key_pub, format!("{ssh_dir}/authorized_keys")).unwrap();
    run(Command::new("chown").args(["-R", &format!("{USER}:{USER}"), &ssh_dir]));
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new("id").args(["-u", USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(dir: &Path, port: u16) -> Sshd {
    let host_key = dir.join("host_key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key));
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
        .args(["-o", "ListenAddress=127.0.0.1", "-o", "UsePAM=yes"])
        .args([
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
        ])
        .arg("-o")
        .arg(format!("HostKey={}", host_key.display()))
        .arg("-o")
        .arg(format!("PidFile={}", dir.join("sshd.pid").display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("sshd starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd(child)
}

fn names(ancestry: &Value) -> Vec<String> {
    ancestry
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ssh_then_sudo_is_attributed_to_the_ssh_user() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let uid = prepare_user(&key.with_extension("pub"));
    let port = free_port();
    let _sshd = start_sshd(dir.path(), port);

    let daemon = Daemon::start("").expect("daemon starts");
    let out = Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .args(["-p", &port.to_string(), "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg(format!("{USER}@127.0.0.1"))
        .arg("/usr/bin/id > /dev/null; sudo -n /usr/bin/cat /etc/shadow > /dev/null; exit 0")
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
    );
    // The connection is closed; give sshd a moment to end the session's last process.
    std::thread::sleep(Duration::from_millis(500));
    let events = daemon.stop().expect("daemon stops");
    let ours: Vec<Value> = events
        .iter()
        .filter(|e| e["process"]["loginuid"] == uid)
        .cloned()
        .collect();
    assert!(!ours.is_empty(), "no events with the SSH user's login uid");

    // One session, entered by SSH from loopback, attributed to the user.
    let starts = of_type(&ours, "session_start");
    assert_eq!(starts.len(), 1, "{starts:?}");
    let start = starts[0];
    assert_eq!(start["entry"], "ssh", "{start}");
    assert_eq!(start["login_user"], USER);
    assert_eq!(start["ssh"]["source_address"], "127.0.0.1", "{start}");
    assert_eq!(start["ssh"]["server_port"], port);

    // The command under sudo runs as root and is attributed to the SSH user, with its ancestry.
    let cat = of_type(&ours, "exec")
        .into_iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/usr/bin/cat")
        .expect("exec of cat under sudo");
    assert_eq!(cat["process"]["euser"], "root");
    assert_eq!(cat["process"]["login_user"], USER);
    let chain = names(&cat["ancestry"]);
    let pos = |n: &str| chain.iter().position(|x| x == n);
    let (sshd, sudo, cat_at) = (
        pos("sshd"),
        chain.iter().rposition(|x| x == "sudo"),
        pos("cat"),
    );
    assert!(
        sshd.is_some() && sudo.is_some() && sshd < sudo && sudo < cat_at,
        "ancestry sshd → … → sudo → cat: {chain:?}"
    );
    assert!(chain.iter().any(|x| x == "bash"), "{chain:?}");
    // sudo is a setuid binary: the exec that gained root is recorded.
    assert!(
        of_type(&ours, "priv")
            .iter()
            .any(|p| p["op"] == "exec" && p["gained_root"] == true),
        "setuid exec of sudo"
    );
    let shadow_len = std::fs::metadata("/etc/shadow").unwrap().len();
    assert!(of_type(&ours, "file_read")
        .iter()
        .any(|r| r["path"] == "/etc/shadow" && r["bytes"].as_u64() == Some(shadow_len)));

    // The session ended when the connection closed.
    let ends = of_type(&ours, "session_end");
    assert_eq!(
        ends.len(),
        1,
        "session_end after the connection closed: {ends:?}"
    );
    assert_eq!(ends[0]["session"], start["session"]);
    assert!(ends[0]["counts"]["commands"].as_u64().unwrap() >= 3);
}
