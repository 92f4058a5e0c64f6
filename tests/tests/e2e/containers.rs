//! Container and pod identity from the cgroup of each event, with real cgroups: a session moves
//! itself into a Kubernetes-style cgroup (as a container runtime would place it) and the commands
//! it runs there carry the container id and pod UID.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use vigil_e2e::{
    free_port, login_session, of_type, python, raw_bytes, require_root, run_ok, Daemon, KillOnDrop,
};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// Where cgroup2 is mounted (the unified hierarchy on hybrid hosts).
fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .expect("cgroup2 is mounted")
}

/// Removes the test's cgroups, innermost first, whatever happens to the test.
struct CgroupDirs(Vec<PathBuf>);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A Kubernetes-style cgroup for one container of one pod, as a container runtime makes it.
struct PodCgroup {
    container: String,
    pod_uid: String,
    path: PathBuf,
    _cleanup: CgroupDirs,
}

fn pod_cgroup(salt: u64) -> PodCgroup {
    let container = format!(
        "{:064x}",
        0xfeed_0000_0000_u64 + salt * 0x1_0000_0000 + std::process::id() as u64
    );
    let pod_uid = format!(
        "1b4e28ba-2fa1-11d2-883f-{salt:04x}{:08x}",
        std::process::id()
    );
    let mut dirs = Vec::new();
    let mut path = cgroup2_root();
    for part in [
        "kubepods.slice".to_string(),
        "kubepods-besteffort.slice".to_string(),
        format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
        format!("cri-containerd-{container}.scope"),
    ] {
        path = path.join(part);
        if !path.exists() {
            std::fs::create_dir(&path).expect("create cgroup");
            dirs.push(path.clone());
        }
    }
    PodCgroup {
        container,
        pod_uid,
        path,
        _cleanup: CgroupDirs(dirs),
    }
}

/// A login session that moves itself into the pod's cgroup and runs `/usr/bin/id` there; its
/// events (by login uid).
fn session_in_pod(daemon: Daemon, pod: &PodCgroup, loginuid: u32) -> Vec<serde_json::Value> {
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && /usr/bin/id > /dev/null; /bin/true",
        pod.path.display()
    );
    let status = login_session(HELPER, loginuid, &std::env::temp_dir(), &script);
    assert!(status.success(), "{script}: {status}");
    let events = daemon.stop().expect("daemon stops");
    events
        .into_iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .collect()
}

fn exec_of<'a>(events: &'a [serde_json::Value], path: &[u8]) -> &'a serde_json::Value {
    of_type(events, "exec")
        .into_iter()
        .find(|e| raw_bytes(&e["filename"]) == path)
        .unwrap_or_else(|| panic!("exec of {}", String::from_utf8_lossy(path)))
}

#[test]
fn commands_in_a_pod_carry_its_container_and_pod_ids() {
    require_root();
    let pod = pod_cgroup(1);
    // The kubelet's log directory of the pod names it.
    let pod_logs = tempfile::tempdir().unwrap();
    std::fs::create_dir(
        pod_logs
            .path()
            .join(format!("payments_api-7c9f8d-x2k4q_{}", pod.pod_uid)),
    )
    .unwrap();
    let daemon = Daemon::start(&format!(
        "identity:\n  pod_logs_dir: {}\n",
        pod_logs.path().display()
    ))
    .expect("daemon starts");
    let loginuid = 45_000 + std::process::id() % 4_000;
    let ours = session_in_pod(daemon, &pod, loginuid);
    let id = exec_of(&ours, b"/usr/bin/id");
    assert_eq!(
        id["process"]["container_id"],
        pod.container.as_str(),
        "{id}"
    );
    assert_eq!(id["process"]["pod_uid"], pod.pod_uid.as_str(), "{id}");
    assert_eq!(id["process"]["pod_namespace"], "payments", "{id}");
    assert_eq!(id["process"]["pod_name"], "api-7c9f8d-x2k4q", "{id}");
    // The shell's own exec happened before it moved: no container.
    let bash = exec_of(&ours, b"/bin/bash");
    assert!(bash["process"]["container_id"].is_null(), "{bash}");
}

/// Starts the pod-list endpoint (stopped whatever happens to the test): serves `dir`'s
/// pods.json with its server certificate for `token` on node `node-e2e`, at most `max_page` pods
/// a page, logging requests to `<name>.jsonl` in `dir`.
fn start_endpoint(dir: &Path, port: u16, token: &str, max_page: u32, name: &str) -> KillOnDrop {
    let ready = dir.join(format!("{name}.ready"));
    let endpoint = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pod_list_endpoint.py"))
        .args([
            "--port",
            &port.to_string(),
            "--token",
            token,
            "--node",
            "node-e2e",
        ])
        .args(["--max-page", &max_page.to_string()])
        .arg("--cert")
        .arg(dir.join("server.crt"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .arg("--pods")
        .arg(dir.join("pods.json"))
        .arg("--log")
        .arg(dir.join(format!("{name}.jsonl")))
        .arg("--ready-file")
        .arg(&ready)
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "endpoint not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint
}

/// Runs `openssl` with the whitespace-separated `args` in `dir`.
fn openssl(dir: &Path, args: &str) {
    run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace()),
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a self-signed CA
/// certificate as the server's own).
fn tls_files(dir: &Path) {
    const KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        dir,
        &format!("req -x509 {KEY} -keyout ca.key -out ca.crt -days 2 -subj /CN=e2e-kube-ca"),
    );
    openssl(
        dir,
        &format!("req {KEY} -keyout server.key -out server.csr -subj /CN=kube-apiserver"),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext",
    );
}

#[test]
fn pods_the_log_directory_does_not_name_are_named_by_the_api_server() {
    require_root();
    let pod = pod_cgroup(2);
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let token = format!("e2e-token-{}", std::process::id());
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    // Three pods on two nodes; ours comes on the second page (one item per page).
    let pods = serde_json::json!([
        {"uid": "0000-other-node", "name": "web-1", "namespace": "shop", "node": "node-other"},
        {"uid": "1111-first", "name": "db-0", "namespace": "storage", "node": "node-e2e"},
        {"uid": pod.pod_uid, "name": "ledger-6f7d9-q8w2z", "namespace": "finance", "node": "node-e2e"},
    ]);
    std::fs::write(dir.path().join("pods.json"), pods.to_string()).unwrap();
    let port = free_port();
    let log = dir.path().join("requests.jsonl");
    let endpoint = start_endpoint(dir.path(), port, &token, 1, "requests");
    let empty_logs = tempfile::tempdir().unwrap();
    let config = format!(
        "identity:\n  pod_logs_dir: {}\n  kubernetes_api:\n    mode: always\n    url: https://127.0.0.1:{port}\n    token_file: {}\n    ca_file: {}\n    refresh_seconds: 1\n",
        empty_logs.path().display(),
        dir.path().join("token").display(),
        dir.path().join("ca.crt").display(),
    );
    let wrapper = ["env".to_string(), "VIGIL_NODE_NAME=node-e2e".to_string()];
    let daemon = Daemon::start_wrapped(&wrapper, None, &config).expect("daemon starts");
    // The first listing runs at start; wait for it so the pod is known when the session runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no listing of the node's pods");
        std::thread::sleep(Duration::from_millis(50));
    }
    let loginuid = 49_000 + std::process::id() % 900;
    let ours = session_in_pod(daemon, &pod, loginuid);
    drop(endpoint);

    let id = exec_of(&ours, b"/usr/bin/id");
    assert_eq!(id["process"]["pod_uid"], pod.pod_uid.as_str(), "{id}");
    assert_eq!(id["process"]["pod_namespace"], "finance", "{id}");
    assert_eq!(id["process"]["pod_name"], "ledger-6f7d9-q8w2z", "{id}");
    // Every request: the token, this node only, answered; the listing followed `continue`.
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &requests {
        assert_eq!(r["authorization"], format!("Bearer {token}"), "{r}");
        assert_eq!(r["query"]["fieldSelector"], "spec.nodeName=node-e2e", "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }
    assert!(
        requests.iter().any(|r| r["query"]["continue"] == "1"),
        "{requests:?}"
    );

    // A CA the server's certificate does not chain to: the daemon still captures, and says why
    // it has no pod names.
    tls_files(empty_logs.path());
    let wrong_ca = format!(
        "identity:\n  kubernetes_api:\n    mode: always\n    url: https://127.0.0.1:{port}\n    token_file: {}\n    ca_file: {}\n",
        dir.path().join("token").display(),
        empty_logs.path().join("ca.crt").display(),
    );
    let endpoint = start_endpoint(dir.path(), port, &token, 500, "requests-2");
    let daemon = Daemon::start_wrapped(&wrapper, None, &wrong_ca).expect("daemon starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.stderr().contains("Kubernetes API") {
        assert!(Instant::now() < deadline, "no warning: {}", daemon.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = daemon.stderr();
    let ours = session_in_pod(daemon, &pod, loginuid + 1);
    drop(endpoint);
    assert!(
        stderr.contains(&format!("https://127.0.0.1:{port}/api/v1/pods")),
        "{stderr}"
    );
    let id = exec_of(&ours, b"/usr/bin/id");
    assert_eq!(id["process"]["pod_uid"], pod.pod_uid.as_str(), "{id}");
    assert!(id["process"]["pod_name"].is_null(), "{id}");

    // Refused at start, with the reason, when the API is required and its token is missing.
    let missing = "identity:\n  kubernetes_api:\n    mode: always\n    url: https://127.0.0.1:1\n    token_file: /nonexistent/vigil-token\n";
    let err = Daemon::start(missing).err().expect("refused").to_string();
    assert!(err.contains("/nonexistent/vigil-token"), "{err}");
}
