//! The interactive benign corpus of the detection bench: privileged work as people do it, on
//! real terminals. Each session is a login session (the test helper's `login`, or a real sshd
//! login) whose shell runs on a pseudo-terminal and is typed to a line at a time (the helper's
//! `pty`): first logins, shells with history, editors, pagers, `top`, tmux, git over SSH, SSH
//! onward, package queries, sudo, ssh-agent, and credentials clients reading their own files.
//! Clients that cannot be installed here (the AWS CLI, helm, a docker-style client without its
//! daemon) are stand-ins installed as a dpkg package, so they are identified as the rules
//! identify any client: a packaged program at its own path.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{run_ok, SshFixture, USER};

/// The stand-in clients' package: installed for the bench, removed on drop.
pub struct Standins {
    pub bin_dir: PathBuf,
}

const STANDIN_PACKAGE: &str = "vigil-bench-standins";
const STANDIN_DIR: &str = "/opt/vigil-bench/bin";
const STANDIN_CLIENTS: [&str; 4] = ["aws", "helm", "docker", "kubectl"];

impl Standins {
    /// Builds and installs the package from `standin` (the `vigil-client-standin` binary).
    pub fn install(work: &Path, standin: &Path) -> Standins {
        let root = work.join("standin-pkg");
        let bin = root.join(STANDIN_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&bin).expect("package tree");
        std::fs::create_dir_all(root.join("DEBIAN")).expect("DEBIAN");
        let mut md5sums = String::new();
        for client in STANDIN_CLIENTS {
            let target = bin.join(client);
            std::fs::copy(standin, &target).expect("copy the stand-in");
            let out = run_ok(Command::new("md5sum").arg(&target));
            let digest = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            md5sums.push_str(&format!(
                "{digest}  {}/{client}\n",
                STANDIN_DIR.trim_start_matches('/')
            ));
        }
        std::fs::write(root.join("DEBIAN/md5sums"), md5sums).expect("md5sums");
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {STANDIN_PACKAGE}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: Vigil bench <bench@vigil.invalid>\nDescription: stand-ins for credentials clients (Vigil detection bench)\n"),
        )
        .expect("control");
        let deb = work.join("standins.deb");
        run_ok(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-b"])
                .arg(&root)
                .arg(&deb)
                .stdout(Stdio::null()),
        );
        run_ok(
            Command::new("dpkg")
                .arg("-i")
                .arg(&deb)
                .stdout(Stdio::null()),
        );
        Standins {
            bin_dir: PathBuf::from(STANDIN_DIR),
        }
    }
}

impl Drop for Standins {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", STANDIN_PACKAGE])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir("/opt/vigil-bench");
    }
}

/// Where an interactive session comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A new login session on a local terminal (the helper's `login`, then `pty`).
    Terminal,
    /// A real sshd login of the test user, on the terminal sshd allocates (`ssh -tt`).
    Sshd,
}

/// One interactive session: what is typed, line by line.
pub struct Interactive {
    pub name: String,
    pub entry: Entry,
    /// Lines typed to the shell at its prompt; a line that starts with GS (`\x1d`) is typed to
    /// the program in the foreground (an editor, pager, REPL) once it reads the terminal.
    pub keys: String,
    /// A home without shell history (a first login).
    pub fresh_home: bool,
}

fn session(name: &str, entry: Entry, keys: &str) -> Interactive {
    Interactive {
        name: name.to_string(),
        entry,
        keys: keys.to_string(),
        fresh_home: false,
    }
}

/// Whether `program` on PATH is a packaged program (the real client, where this host has it;
/// the stand-in is used otherwise).
fn packaged_on_path(program: &str) -> bool {
    let Ok(out) = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
    else {
        return false;
    };
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let Ok(real) = std::fs::canonicalize(&found) else {
        return false;
    };
    Command::new("dpkg")
        .arg("-S")
        .arg(real)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The corpus: each kind of work `copies` times (`n` in the keys is the copy's number).
pub fn corpus(ssh: &SshFixture, standins: &Standins, copies: usize) -> Vec<Interactive> {
    let port = ssh.port;
    let ssh_opts = "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";
    let bin = standins.bin_dir.display();
    let kinds: Vec<Interactive> = vec![
        Interactive {
            fresh_home: true,
            ..session("first login of a new account", Entry::Terminal, "uptime\nexit\n")
        },
        session("shell with history", Entry::Terminal, "ls\nhistory | tail -n 3\nexit\n"),
        session("editor saves a note", Entry::Terminal, "vi -u NONE ~/notes-{n}.txt\n\x1dihello\x1b:wq\nexit\n"),
        session("editor changes a config", Entry::Terminal, "vi -u NONE /tmp/vigil-bench-app-{n}.conf\n\x1dGoworkers = 4\x1b:wq\nrm -f /tmp/vigil-bench-app-{n}.conf\nexit\n"),
        session("pager and manual", Entry::Terminal, "less /etc/services\n\x1dq\nman -P cat ls > /dev/null 2>&1\nexit\n"),
        session("top", Entry::Terminal, "top\n\x1dq\nexit\n"),
        session("tmux inside the session", Entry::Terminal, "tmux -L vb{n} new-session -d 'sleep 1'\ntmux -L vb{n} ls\ntmux -L vb{n} kill-server\nexit\n"),
        session("git over SSH", Entry::Terminal, &format!("GIT_SSH_COMMAND='ssh -i ~/.ssh/id_ed25519 {ssh_opts}' git clone -q ssh://{USER}@127.0.0.1:{port}/home/{USER}/vigil-bench-repo.git /tmp/vigil-bench-clone-{{n}}\ngit -C /tmp/vigil-bench-clone-{{n}} log --oneline | head -n 1\nrm -rf /tmp/vigil-bench-clone-{{n}}\nexit\n")),
        session("SSH onward", Entry::Terminal, &format!("ssh -n -i ~/.ssh/id_ed25519 {ssh_opts} -p {port} {USER}@127.0.0.1 uptime\nexit\n")),
        session("package queries", Entry::Terminal, "dpkg -l bash | tail -n 1\napt-cache policy bash | head -n 3\ndpkg -S /bin/ls\nexit\n"),
        session("sudo", Entry::Terminal, "sudo -n true\nsudo -n -u nobody id -u\nexit\n"),
        session("ssh-agent", Entry::Terminal, "eval $(ssh-agent -s) > /dev/null\nssh-add -q ~/.ssh/id_ed25519\nssh-add -l > /dev/null\nssh-agent -k > /dev/null\nexit\n"),
        if packaged_on_path("kubectl") {
            session("kubectl reads its config", Entry::Terminal, "kubectl config view > /dev/null\nkubectl config current-context\nexit\n")
        } else {
            session("kubectl-style client reads its config", Entry::Terminal, &format!("{bin}/kubectl\nexit\n"))
        },
        session("aws-style client reads its credentials", Entry::Terminal, &format!("{bin}/aws\nexit\n")),
        session("helm-style client reads the kubeconfig", Entry::Terminal, &format!("{bin}/helm\nexit\n")),
        session("docker-style client reads its config", Entry::Terminal, &format!("{bin}/docker\nexit\n")),
        session("python REPL", Entry::Terminal, "python3\n\x1dprint(6 * 7)\n\x1dexit()\nexit\n"),
        session("crontab listed", Entry::Terminal, "crontab -l 2> /dev/null || echo none\nexit\n"),
        session("sshd login: first commands", Entry::Sshd, "uptime\nid\nexit\n"),
        session("sshd login: sudo and files", Entry::Sshd, "sudo -n true\nls -la\nexit\n"),
        session("sshd login: editor", Entry::Sshd, "vi -u NONE notes-{n}.txt\n\x1dihi\x1b:wq\nexit\n"),
        session("sshd login: top and pager", Entry::Sshd, "top\n\x1dq\nless /etc/services\n\x1dq\nexit\n"),
    ];
    let mut all = Vec::new();
    for n in 0..copies {
        for k in &kinds {
            all.push(Interactive {
                name: k.name.clone(),
                entry: k.entry,
                keys: k.keys.replace("{n}", &n.to_string()),
                fresh_home: k.fresh_home,
            });
        }
    }
    all
}

/// What the sessions need: the SSH key in each home (the clients read it), a kubeconfig, AWS
/// files, a bare repository for the test user to serve.
fn prepare_home(home: &Path, ssh: &SshFixture, fresh: bool) {
    let _ = std::fs::remove_dir_all(home);
    for d in [".ssh", ".kube", ".aws", ".docker"] {
        std::fs::create_dir_all(home.join(d)).expect("home");
    }
    std::fs::copy(&ssh.key, home.join(".ssh/id_ed25519")).expect("key");
    std::fs::write(
        home.join(".kube/config"),
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\ncontexts:\n- name: bench\n  context: {cluster: bench, user: bench}\nclusters:\n- name: bench\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: bench\n  user: {token: bench-token}\n",
    )
    .expect("kubeconfig");
    std::fs::write(home.join(".aws/config"), "[default]\nregion = eu-west-1\n").expect("aws");
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIABENCHBENCHBENCH\naws_secret_access_key = bench\n",
    )
    .expect("aws");
    std::fs::write(
        home.join(".docker/config.json"),
        "{\"auths\": {\"registry.example.com\": {\"auth\": \"YmVuY2g6YmVuY2g=\"}}}\n",
    )
    .expect("docker config");
    if !fresh {
        std::fs::write(home.join(".bash_history"), "ls\nuptime\ndf -h\n").expect("history");
    }
}

/// The test user's bare repository, served over its sshd (created once).
pub fn prepare_repo() {
    let repo = format!("/home/{USER}/vigil-bench-repo.git");
    if Path::new(&repo).exists() {
        return;
    }
    let work = format!("/home/{USER}/vigil-bench-repo-work");
    let _ = std::fs::remove_dir_all(&work);
    let git = |args: &[&str]| {
        run_ok(Command::new("git").args(args).stdout(Stdio::null()));
    };
    git(&["init", "-q", &work]);
    std::fs::write(format!("{work}/README"), "bench\n").expect("README");
    git(&["-C", &work, "add", "README"]);
    git(&[
        "-C",
        &work,
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@vigil.invalid",
        "commit",
        "-q",
        "-m",
        "first",
    ]);
    git(&["clone", "-q", "--bare", &work, &repo]);
    let _ = std::fs::remove_dir_all(&work);
    run_ok(Command::new("chown").args(["-R", &format!("{USER}:{USER}"), &repo]));
}

/// Runs `s` (as login uid `uid` for a terminal session; as the test user through sshd for an
/// sshd one), its home prepared in `home`. Returns whether the shell exited 0.
pub fn run(helper: &str, s: &Interactive, uid: u32, home: &Path, ssh: &SshFixture) -> bool {
    let mut command = Command::new(helper);
    match s.entry {
        Entry::Terminal => {
            prepare_home(home, ssh, s.fresh_home);
            command
                .args([
                    "login",
                    &uid.to_string(),
                    "--",
                    helper,
                    "pty",
                    "--shell",
                    "--",
                    "/bin/bash",
                    "-i",
                ])
                .env("HOME", home);
        }
        Entry::Sshd => {
            // The client runs outside every monitored session: the session is sshd's.
            command
                .args([
                    "login", "unset", "--", helper, "pty", "--", "ssh", "-tt", "-i",
                ])
                .arg(&ssh.key)
                .args(["-p", &ssh.port.to_string()])
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
                .args(["-o", "UserKnownHostsFile=/dev/null"])
                .arg(format!("{USER}@127.0.0.1"));
        }
    }
    command.env("TERM", "xterm");
    let Ok(mut child) = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(s.keys.as_bytes());
    }
    child.wait().is_ok_and(|st| st.success())
}
