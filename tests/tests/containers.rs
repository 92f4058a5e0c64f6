//! Container and pod identity from the cgroup of each event, with real cgroups: a session moves
//! itself into a Kubernetes-style cgroup (as a container runtime would place it) and the commands
//! it runs there carry the container id and pod UID.

use std::{path::PathBuf, process::Command};

use vigil_e2e::{of_type, raw_bytes, require_root, Daemon};

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

#[test]
fn commands_in_a_pod_carry_its_container_and_pod_ids() {
    require_root();
    let container = format!("{:064x}", 0xfeed_0000_0000_u64 + std::process::id() as u64);
    let pod_uid = format!("1b4e28ba-2fa1-11d2-883f-{:012x}", std::process::id());
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
    let _cleanup = CgroupDirs(dirs);

    // The kubelet's log directory of the pod names it.
    let pod_logs = tempfile::tempdir().unwrap();
    std::fs::create_dir(
        pod_logs
            .path()
            .join(format!("payments_api-7c9f8d-x2k4q_{pod_uid}")),
    )
    .unwrap();
    let daemon = Daemon::start(&format!(
        "identity:\n  pod_logs_dir: {}\n",
        pod_logs.path().display()
    ))
    .expect("daemon starts");
    let loginuid = 45_000 + std::process::id() % 4_000;
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && /usr/bin/id > /dev/null; /bin/true",
        path.display()
    );
    let status = Command::new(HELPER)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            "/bin/bash",
            "-c",
            &script,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let events = daemon.stop().expect("daemon stops");
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e["process"]["loginuid"] == loginuid)
        .cloned()
        .collect();
    let execs = of_type(&ours, "exec");
    let id = execs
        .iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/usr/bin/id")
        .expect("exec of id");
    assert_eq!(id["process"]["container_id"], container.as_str(), "{id}");
    assert_eq!(id["process"]["pod_uid"], pod_uid.as_str(), "{id}");
    assert_eq!(id["process"]["pod_namespace"], "payments", "{id}");
    assert_eq!(id["process"]["pod_name"], "api-7c9f8d-x2k4q", "{id}");
    // The shell's own exec happened before it moved: no container.
    let bash = execs
        .iter()
        .find(|e| raw_bytes(&e["filename"]) == b"/bin/bash")
        .expect("exec of bash");
    assert!(bash["process"]["container_id"].is_null(), "{bash}");
}
