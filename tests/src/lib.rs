//! Harness for Vigil's end-to-end tests on the real kernel: starts the real `vigil` daemon,
//! waits until its programs are attached, and collects what it wrote.
//!
//! These tests load eBPF programs and so must run as root; run them with `cargo xtask test`.

pub mod anomaly;
pub mod interactive;
pub mod scenarios;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// Fails the test with a clear message when not root: skipping would prove nothing.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests load eBPF programs and must run as root (cargo xtask test as root)"
    );
}

/// The daemon binary: $VIGIL_BIN (set by `cargo xtask test`) or target/release/vigil.
pub fn vigil_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vigil")
}

/// The real spool writer on `dir` (to write what a daemon would have: an earlier boot's
/// records, a newer daemon's), with room to spare and refusing rather than dropping when full.
pub fn spool_writer(dir: &Path) -> vigil::spool::Spool {
    vigil::spool::Spool::open(vigil::spool::SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        when_full: vigil::spool::WhenFull::StopAccepting,
        fsync_interval_ms: 0,
    })
    .expect("spool opens")
}

/// This boot's id, as the daemon stamps it on every event.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_string()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running `vigil run`.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub events_path: PathBuf,
    pub metrics_port: u16,
}

impl Daemon {
    /// Starts the daemon with `extra_yaml` layered over a test configuration (events to a file,
    /// metrics on a free port) and waits until capture runs.
    pub fn start(extra_yaml: &str) -> Result<Daemon> {
        Daemon::start_with_spool(None, extra_yaml)
    }

    /// As [`Daemon::start`], with the spool in `spool` (to restart on a previous one).
    pub fn start_with_spool(spool: Option<&Path>, extra_yaml: &str) -> Result<Daemon> {
        Daemon::start_wrapped(&[], spool, extra_yaml)
    }

    /// As [`Daemon::start_with_spool`], started through `wrapper` (a command such as
    /// `setpriv ...` that then runs the daemon).
    pub fn start_wrapped(
        wrapper: &[String],
        spool: Option<&Path>,
        extra_yaml: &str,
    ) -> Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("vigil-e2e-").tempdir()?;
        let events_path = dir.path().join("events.jsonl");
        let spool_dir = spool
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("spool"));
        // A test that configures the spool itself brings its own `spool:` block (with `dir`).
        let spool_block = if extra_yaml.lines().any(|l| l.starts_with("spool:")) {
            String::new()
        } else {
            format!("spool:\n  dir: {}\n", spool_dir.display())
        };
        // Its own control socket, never the host's default (a real daemon may be listening).
        let respond_block = if extra_yaml.lines().any(|l| l.starts_with("respond:")) {
            String::new()
        } else {
            format!(
                "respond:\n  control_socket: {}\n",
                dir.path().join("control.sock").display()
            )
        };
        // Counters read ten times a second, unless the test sets the pipeline up itself.
        let pipeline_block = if extra_yaml.lines().any(|l| l.starts_with("pipeline:")) {
            ""
        } else {
            "pipeline:\n  stats_interval_ms: 100\n"
        };
        let ready = dir.path().join("ready");
        let metrics_port = free_port();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "output:\n  stdout: false\n  file: {}\n{spool_block}{respond_block}metrics:\n  listen: 127.0.0.1:{metrics_port}\n{pipeline_block}{extra_yaml}",
                events_path.display()
            ),
        )?;
        let bin = vigil_bin();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it with cargo xtask build)",
                    bin.display()
                )
            })?;
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            events_path,
            metrics_port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("vigil exited early ({status}): {}", daemon.stderr());
            }
            if Instant::now() > deadline {
                bail!("vigil did not become ready in 60 s: {}", daemon.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// The daemon's pid (the wrapper, if any, has exec'd into it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The Prometheus exposition, scraped over HTTP like Prometheus would.
    pub fn scrape(&self) -> Result<String> {
        let (status, body) = self.get("/metrics")?;
        if status != 200 {
            bail!("metrics endpoint answered {status}: {body}");
        }
        Ok(body)
    }

    /// GET `path` on the daemon's HTTP endpoint: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("not an HTTP answer")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Value of one sample, e.g. `vigil_kernel_events_total{kind="exec",outcome="lost"}`.
    pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let labelled = series.as_bytes().get(name.len()) == Some(&b'{');
                if !series.starts_with(name) || !(labelled || series.len() == name.len()) {
                    return None;
                }
                labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                    .then(|| value.parse().ok())
                    .flatten()
            })
    }

    /// Kills the daemon with SIGKILL: no drain, no flush beyond what it already handed the OS.
    pub fn kill(mut self) -> Result<()> {
        let mut child = self.child.take().context("daemon already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops the daemon as Ctrl-C would, waits for its drain, and returns every event written.
    pub fn stop(self) -> Result<Vec<Value>> {
        self.stop_with_log().map(|(events, _)| events)
    }

    /// As [`Daemon::stop`], with the daemon's log.
    pub fn stop_with_log(mut self) -> Result<(Vec<Value>, String)> {
        let mut child = self.child.take().context("daemon already stopped")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "vigil did not stop within 60 s of SIGINT: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            bail!("vigil exited with {status}: {}", self.stderr());
        }
        Ok((read_events(&self.events_path)?, self.stderr()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read_events(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line: {l}")))
        .collect()
}

/// The bytes of a `RawBytes` field: a JSON string, or `{"base64": ...}` for non-UTF-8.
pub fn raw_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => {
            use base64::Engine as _;
            let text = o.get("base64").and_then(Value::as_str).unwrap_or("");
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// The project's Python (a venv made by `cargo xtask setup`): $VIGIL_PYTHON or .tools/venv.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python")
}

/// A running ClickHouse-compatible endpoint over chdb (deploy/dev/chdb_http.py): the real
/// ClickHouse engine, with its data in `data` so it can be stopped and started again.
pub struct ClickHouse {
    child: Option<Child>,
    pub data: PathBuf,
    pub port: u16,
}

/// The administrator: schema, migrations, key registration, and the CLI's reads.
pub const CLICKHOUSE_USER: &str = "vigil";
pub const CLICKHOUSE_PASSWORD: &str = "e2e-secret";
/// The daemons' user: only the grants `vigil db grants` names (insert-only).
pub const WRITER_USER: &str = "vigil_writer";
pub const WRITER_PASSWORD: &str = "e2e-writer-secret";

impl ClickHouse {
    /// Starts the endpoint with the administrator and the daemons' insert-only user, whose
    /// grants are what `vigil db grants --json` says (the same definition the docs and the
    /// chart print).
    pub fn start(data: &Path, port: u16) -> Result<ClickHouse> {
        let ready = data.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/chdb_http.py");
        let grants = Command::new(vigil_bin())
            .args(["db", "grants", "--json"])
            .output()
            .context("vigil db grants")?;
        if !grants.status.success() {
            bail!(
                "vigil db grants: {}",
                String::from_utf8_lossy(&grants.stderr)
            );
        }
        let grants: serde_json::Value = serde_json::from_slice(&grants.stdout)?;
        let users = data.with_extension("users.json");
        std::fs::write(
            &users,
            serde_json::to_vec(&serde_json::json!({
                WRITER_USER: { "password": WRITER_PASSWORD, "grants": grants }
            }))?,
        )?;
        let child = Command::new(python())
            .arg(server)
            .arg("--data")
            .arg(data)
            .args(["--port", &port.to_string()])
            .args(["--user", CLICKHOUSE_USER, "--password", CLICKHOUSE_PASSWORD])
            .arg("--users")
            .arg(&users)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start chdb_http.py with {}", python().display()))?;
        let mut ch = ClickHouse {
            child: Some(child),
            data: data.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = ch.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("chdb_http.py exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!("chdb_http.py not ready in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ch)
    }

    /// As [`ClickHouse::start`], with the schema made by the administrator's `vigil db
    /// migrate` (daemons never make it).
    pub fn start_migrated(data: &Path, port: u16) -> Result<ClickHouse> {
        let ch = ClickHouse::start(data, port)?;
        let config = data.with_extension("admin.yaml");
        std::fs::write(&config, ch.admin_config_yaml())?;
        let out = Command::new(vigil_bin())
            .args(["db", "migrate", "--config"])
            .arg(&config)
            .output()?;
        if !out.status.success() {
            bail!("vigil db migrate: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(ch)
    }

    /// The `clickhouse:` configuration of a daemon: the insert-only user.
    pub fn config_yaml(&self) -> String {
        format!(
            "clickhouse:\n  url: http://127.0.0.1:{}\n  user: {WRITER_USER}\n  password: {WRITER_PASSWORD}\n  batch_ms: 100\n  retry_max_ms: 500\n",
            self.port
        )
    }

    /// The `clickhouse:` configuration of the administrator (migrations, keys, reading).
    pub fn admin_config_yaml(&self) -> String {
        format!(
            "clickhouse:\n  url: http://127.0.0.1:{}\n  user: {CLICKHOUSE_USER}\n  password: {CLICKHOUSE_PASSWORD}\n  batch_ms: 100\n  retry_max_ms: 500\n",
            self.port
        )
    }

    /// Runs one SQL statement over HTTP (with curl, as an operator would) in the `vigil`
    /// database and returns its output.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.query_at("?database=vigil", sql)
    }

    /// As [`ClickHouse::query`], in the server's default database (to create `vigil`).
    pub fn query_server(&self, sql: &str) -> Result<String> {
        self.query_at("", sql)
    }

    /// As [`ClickHouse::query`], as another user.
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> Result<String> {
        self.query_with("?database=vigil", user, password, sql)
    }

    fn query_at(&self, params: &str, sql: &str) -> Result<String> {
        self.query_with(params, CLICKHOUSE_USER, CLICKHOUSE_PASSWORD, sql)
    }

    fn query_with(&self, params: &str, user: &str, password: &str, sql: &str) -> Result<String> {
        let mut child = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", "@-", "-u"])
            .arg(format!("{user}:{password}"))
            .arg(format!("http://127.0.0.1:{}/{params}", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run curl")?;
        child
            .stdin
            .take()
            .context("curl stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{sql}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops it (SIGTERM) and waits, at most 30 s: the endpoint can deadlock inside chdb while
    /// it closes with a query in flight; it is then killed (said on stderr), as a crashed server
    /// would be, which the tests that restart it on the same data must survive anyway.
    pub fn stop(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if std::time::Instant::now() > deadline {
                    eprintln!("chdb endpoint did not stop within 30 s of SIGTERM: killed");
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where tests leave files for people to look at (screenshots): target/test-artifacts.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Opens `page` in headless Chromium (Debian's, installed by `cargo xtask setup`): the DOM it
/// built must hold every one of `texts`, and a screenshot goes to the test artifacts as
/// `screenshot`. Returns the screenshot's path.
pub fn browser_check(page: &Path, screenshot: &str, texts: &[&str]) -> PathBuf {
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs (cargo xtask setup installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for t in texts {
        assert!(dom.contains(t), "{t} not in the page Chromium rendered");
    }
    let shot = artifacts_dir().join(screenshot);
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1600",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot looks empty"
    );
    shot
}

/// The unprivileged test user (`vigil-e2e`).
pub const USER: &str = "vigil-e2e";

/// Runs `cmd` to its end, failing the test (with the command and its stderr) unless it
/// succeeds; returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A helper process a test started (an endpoint, sshd, the daemon under a FIFO), killed and
/// reaped however the test ends, panics included.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test user (created once and left in place), allowed to sudo without a password.
pub fn ensure_user() -> u32 {
    if Command::new("id")
        .arg(USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        run_ok(Command::new("useradd").args(["-m", "-s", "/bin/bash", USER]));
    }
    // Not locked (sshd refuses keys for "!" passwords), but no password either.
    run_ok(Command::new("usermod").args(["-p", "*", USER]));
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
    let out = Command::new("id").args(["-u", USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `script` with bash in a new login session of `loginuid` through the test helper
/// (`helper`: its path, `env!("CARGO_BIN_EXE_vigil-test-helper")`), HOME in `home`, and waits
/// for it, returning the script's exit status (the helper's failing to run fails the test).
pub fn login_session(
    helper: &str,
    loginuid: u32,
    home: &Path,
    script: &str,
) -> std::process::ExitStatus {
    let status = Command::new(helper)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            "/bin/bash",
            "-c",
            script,
        ])
        .env("HOME", home)
        // Scripts that need one of the helper's precise actions run it by this name.
        .env("VIGIL_TEST_HELPER", helper)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("test helper runs");
    assert!(status.code().is_some(), "{script}: {status}");
    status
}

/// `tests/webhook_receiver.py` on a free port, recording every POST it gets in `log` (its
/// headers, body, whether the signature holds); the first `fail_first` are answered 500.
pub struct WebhookReceiver {
    child: KillOnDrop,
    pub port: u16,
    pub log: PathBuf,
}

impl WebhookReceiver {
    pub fn start(dir: &Path, secret: &str, fail_first: u32) -> Result<WebhookReceiver> {
        let port = free_port();
        let log = dir.join("received.jsonl");
        let ready = dir.join("receiver.ready");
        let child = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook_receiver.py"))
            .args(["--port", &port.to_string(), "--secret", secret])
            .args(["--fail-first", &fail_first.to_string()])
            .arg("--log")
            .arg(&log)
            .arg("--ready-file")
            .arg(&ready)
            .spawn()
            .context("cannot start webhook_receiver.py")?;
        let child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("webhook receiver not ready in 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(WebhookReceiver { child, port, log })
    }

    /// Every POST recorded so far.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops it; what it recorded stays in `log`.
    pub fn stop(self) {
        drop(self.child);
    }
}

/// Real sshd for the login tests: Debian's, with its PAM stack, on a loopback port.
/// The test user (see [`ensure_user`]) with `key` authorized for SSH.
pub fn prepare_ssh_user(key_pub: &Path) -> u32 {
    let uid = ensure_user();
    let home = format!("/home/{USER}");
    let ssh_dir = format!("{home}/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::copy(key_pub, format!("{ssh_dir}/authorized_keys")).unwrap();
    run_ok(Command::new("chown").args(["-R", &format!("{USER}:{USER}"), &ssh_dir]));
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    uid
}

pub fn start_sshd(dir: &Path, port: u16) -> KillOnDrop {
    let host_key = dir.join("host_key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key),
    );
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
    KillOnDrop(child)
}

/// A real sshd on a loopback port and the test user with a fresh key authorized for it.
pub struct SshFixture {
    /// The client's private key.
    pub key: PathBuf,
    pub uid: u32,
    pub port: u16,
    pub sshd: KillOnDrop,
}

impl SshFixture {
    pub fn start(dir: &Path) -> SshFixture {
        let key = dir.join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
        );
        let uid = prepare_ssh_user(&key.with_extension("pub"));
        let port = free_port();
        let sshd = start_sshd(dir, port);
        SshFixture {
            key,
            uid,
            port,
            sshd,
        }
    }
}

impl SshFixture {
    /// `ssh` as the test user to this sshd with the fixture's key, non-interactive, not checking
    /// the host key; the remote command is the caller's.
    pub fn client(&self) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string(), "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=5"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .arg(format!("{USER}@127.0.0.1"));
        c
    }
}
