//! Real logins. SSH: sshd (Debian's, with its PAM stack setting the audit login uid) on a
//! loopback port, a test user with a key, commands over SSH, under sudo and under `sudo su -`.
//! The session is attributed to the SSH user, entered by ssh from 127.0.0.1 with the key's
//! fingerprint, carries the user's corporate identity, has the ancestry through sshd, sudo and
//! su, ends when the connection closes, and is found by the queries. Cron: Debian's cron daemon
//! runs a job of the test user in a session of its own, entered by cron.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use vigil_e2e::{ensure_user, of_type, raw_bytes, require_root, run_ok, vigil_bin, Daemon, USER};

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
    let ssh = vigil_e2e::SshFixture::start(dir.path());
    let (key, uid, port) = (ssh.key.clone(), ssh.uid, ssh.port);

    let mapping = dir.path().join("people.csv");
    std::fs::write(
        &mapping,
        format!(
            "username,person,email,team,role,peer_group\n\
             {USER},Erin Example,erin@example.com,platform,sre,sre-oncall\n\
             someone-else,Sam Other,sam@example.com,data,analyst,\n"
        ),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(
        Some(&spool),
        &format!(
            "identity:\n  mapping_file: {}\n  sshd_logs: [{}]\n",
            mapping.display(),
            dir.path().join("sshd.log").display()
        ),
    )
    .expect("daemon starts");
    let out = ssh
        .client()
        .arg(
            "/usr/bin/id > /dev/null; sudo -n /usr/bin/cat /etc/shadow > /dev/null; \
             sudo -n su - root -c '/usr/bin/head -c 1 /etc/gshadow > /dev/null'; exit 0",
        )
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
    // The key's fingerprint, from sshd's log line for this connection.
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"));
    assert_eq!(
        start["ssh"]["key_fingerprint"],
        fingerprint.as_str(),
        "{start}"
    );
    assert_eq!(start["ssh"]["auth_method"], "publickey");
    // The corporate identity from the mapping file.
    assert_eq!(start["identity"]["person"], "Erin Example", "{start}");
    assert_eq!(start["identity"]["email"], "erin@example.com");
    assert_eq!(start["identity"]["peer_group"], "sre-oncall");

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
    // The su path: `sudo su - root -c …` runs head as root, still attributed to the SSH user,
    // with su in its ancestry after sudo.
    let head = of_type(&ours, "exec")
        .into_iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/usr/bin/head")
        .expect("exec of head under su");
    assert_eq!(head["process"]["euid"], 0);
    assert_eq!(head["process"]["login_user"], USER);
    let chain = names(&head["ancestry"]);
    let sudo = chain.iter().position(|x| x == "sudo");
    let su = chain.iter().rposition(|x| x == "su");
    assert!(sudo.is_some() && su.is_some() && sudo < su, "{chain:?}");
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

    // The queries show who, from where, and how; and filter by person and peer group.
    let sessions = |args: &[&str]| -> Vec<Value> {
        let out = Command::new(vigil_bin())
            .args(["sessions", "--json", "--spool"])
            .arg(&spool)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let by_person = sessions(&["--person", "erin example"]);
    assert_eq!(by_person.len(), 1, "{by_person:?}");
    let s = &by_person[0];
    assert_eq!(s["session"], start["session"]);
    assert_eq!(s["entry"], "ssh");
    assert_eq!(s["ssh"]["key_fingerprint"], fingerprint.as_str());
    assert_eq!(s["identity"]["team"], "platform");
    assert!(s["ended"].is_string(), "{s}");
    assert!(names(&s["ancestry"]).iter().any(|n| n == "sshd"));
    assert_eq!(sessions(&["--person", "erin@example.com"]).len(), 1);
    assert_eq!(sessions(&["--peer-group", "SRE-oncall"]).len(), 1);
    assert!(sessions(&["--peer-group", "data"]).is_empty());
    assert!(sessions(&["--person", "Sam Other"]).is_empty());

    let out = Command::new(vigil_bin())
        .arg("session")
        .arg(start["session"].to_string())
        .arg("--spool")
        .arg(&spool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("person  Erin Example <erin@example.com>"),
        "{text}"
    );
    assert!(text.contains("ssh     from 127.0.0.1 port"), "{text}");
    assert!(text.contains(&fingerprint), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("/usr/bin/head") && l.contains("sudo → su")),
        "{text}"
    );

    // The audit report lists the session as privileged, with what ran as root and how to
    // replay it, and renders in a real browser.
    let report = dir.path().join("report.html");
    let out = Command::new(vigil_bin())
        .args(["report", "--since", "1h", "--spool"])
        .arg(&spool)
        .arg("-o")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    let id = start["session"].to_string();
    let key = format!(
        "{}/{}/{id}",
        vigil::event::host_name(),
        &vigil_e2e::boot_id()[..8]
    );
    for needle in [
        format!("vigil replay {key}"),
        "Erin Example".to_string(),
        "/usr/bin/cat /etc/shadow".to_string(),
        "/usr/bin/head -c 1 /etc/gshadow".to_string(),
        fingerprint.clone(),
    ] {
        assert!(html.contains(&needle), "{needle} not in the report");
    }
    // Session ids are numbered per host: another host's session is not in this host's spool.
    let out = Command::new(vigil_bin())
        .args(["session", &id, "--host", "elsewhere", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("no session elsewhere/*/{id} in the spool")),
        "{out:?}"
    );
    vigil_e2e::browser_check(
        &report,
        "report.png",
        &[&format!("vigil replay {key}"), "Erin Example"],
    );
}

/// Kills the cron daemon the test started (none when the host already runs one).
struct Cron(Option<Child>);

impl Drop for Cron {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("crontab").args(["-u", USER, "-r"]).output();
    }
}

#[test]
fn a_cron_job_is_a_session_entered_by_cron() {
    require_root();
    let uid = ensure_user();
    let nonce = format!("{}-{}", std::process::id(), rand_suffix());
    let marker = format!("/home/{USER}/cron-ran-{nonce}");
    let dir = tempfile::tempdir().unwrap();
    let tab = dir.path().join("crontab");
    std::fs::write(
        &tab,
        format!("* * * * * /usr/bin/id > /dev/null; /bin/cat /etc/hostname > {marker}\n"),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tab, std::fs::Permissions::from_mode(0o644)).unwrap();
    run_ok(Command::new("crontab").args(["-u", USER]).arg(&tab));

    let daemon = Daemon::start("").expect("daemon starts");
    let running = Command::new("pgrep")
        .args(["-x", "cron"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let _cron = Cron(if running {
        None
    } else {
        Some(
            Command::new("/usr/sbin/cron")
                .arg("-f")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cron starts (cargo xtask setup installs it)"),
        )
    });
    // Cron runs jobs at the start of each minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    while !Path::new(&marker).exists() {
        assert!(
            Instant::now() < deadline,
            "the cron job did not run in 150 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let events = daemon.stop().expect("daemon stops");
    let _ = std::fs::remove_file(&marker);

    let starts: Vec<&Value> = of_type(&events, "session_start")
        .into_iter()
        .filter(|e| e["loginuid"] == uid && e["entry"] == "cron")
        .collect();
    assert!(!starts.is_empty(), "no cron session of the test user");
    let session = &starts[0]["session"];
    assert!(names(&starts[0]["ancestry"]).iter().any(|n| n == "cron"));
    let in_session: Vec<Value> = events
        .iter()
        .filter(|e| e["process"]["sessionid"] == *session)
        .cloned()
        .collect();
    let cat = of_type(&in_session, "exec")
        .into_iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/bin/cat")
        .expect("the job's cat");
    assert_eq!(cat["process"]["user"], USER);
    assert!(names(&cat["ancestry"]).iter().any(|n| n == "cron"));
    let ends = of_type(&in_session, "session_end");
    assert_eq!(ends.len(), 1, "the job's session ends with it: {ends:?}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}
