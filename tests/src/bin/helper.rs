//! `vigil-test-helper`: small, precise actions for the end-to-end tests and benchmarks, so that
//! what the kernel sees is exactly what a test asserts.
//!
//! ```text
//! vigil-test-helper login <loginuid|unset> -- CMD...   set our audit loginuid, new session, exec CMD
//! vigil-test-helper setuid <uid> -- CMD...             setuid(uid), then exec CMD
//! vigil-test-helper connect <ip:port>                  TCP connect (IPv4 or IPv6) and close
//! vigil-test-helper connect-unix <path>                unix stream connect and close
//! vigil-test-helper fast-open <ip:port>                TCP Fast Open: a socket connected by its
//!                                                       first send (sendto with MSG_FASTOPEN),
//!                                                       no connect(2)
//! vigil-test-helper datagrams [--mmsg] <ip:port>...  one UDP datagram to each address in order,
//!                                                       no connect(2): sendto on one unconnected
//!                                                       socket per family; with --mmsg the IPv4
//!                                                       ones all in one sendmmsg call. Prints
//!                                                       `ok` or the errno name per datagram
//! vigil-test-helper bpf-map-fd <name>                 what `bpftool map show name <name>` does,
//!                                                       by raw bpf(2) calls: every map id in
//!                                                       turn (MAP_GET_NEXT_ID), an fd of each
//!                                                       (MAP_GET_FD_BY_ID), its name
//!                                                       (OBJ_GET_INFO_BY_FD); prints the id of
//!                                                       the last map so named
//! vigil-test-helper ptrace-seize <pid>                 ptrace(PTRACE_SEIZE) of pid (it keeps
//!                                                       running), then exit, which detaches it
//! vigil-test-helper vm-rewrite <pid>                   8 bytes at the top of pid's stack (the
//!                                                       end of its environment, never written
//!                                                       after exec) read with process_vm_readv
//!                                                       and written back with process_vm_writev:
//!                                                       a write into another process that
//!                                                       changes nothing
//! vigil-test-helper connect-race <ip:port> <decoy ip:port> <n>
//!                                                       n IPv4 connects through one sockaddr
//!                                                       that a second thread keeps rewriting
//!                                                       between the two addresses; prints, per
//!                                                       attempt, `ok` or the errno name
//! vigil-test-helper read-exit <path> <n>               read n bytes, exit without closing
//! vigil-test-helper hold-open <path> <n> <procs>       procs children each open path n times and
//!                                                       read a byte from each; all exit together
//!                                                       with their files open
//! vigil-test-helper storm <exec|open-read|connect|udp> <count> <target>
//!                                                       timed loop; prints elapsed nanoseconds
//! vigil-test-helper int80 open <path>                  open and read path through the 32-bit
//!                                                       syscall ABI (int 0x80): open, read, close
//! vigil-test-helper int80 openat <dir> <name>          the same with openat from a directory fd
//! vigil-test-helper int80 connect-unix <path>          socketcall(SYS_SOCKET), socketcall(SYS_CONNECT)
//! vigil-test-helper int80 fast-open <ipv4:port>        socketcall(SYS_SOCKET), then
//!                                                       socketcall(SYS_SENDTO, MSG_FASTOPEN)
//! vigil-test-helper int80 bpf-next-map               bpf(BPF_MAP_GET_NEXT_ID) through int 0x80
//! vigil-test-helper int80 raw-socket                 socketcall(SYS_SOCKET) of a raw ICMP socket
//! vigil-test-helper int80 ptrace-seize <pid>           ptrace(PTRACE_SEIZE) of pid through int 0x80
//! vigil-test-helper int80 rename <from> <to>         rename(2) through int 0x80
//! vigil-test-helper by-handle <path>                   open and read path through a file handle:
//!                                                       name_to_handle_at, then open_by_handle_at
//!                                                       on its directory's mount (no path)
//! vigil-test-helper pty [--shell] -- CMD...            CMD on a new terminal (its controlling
//!                                                       tty, in a new session), typed to: each
//!                                                       line of our stdin once its output
//!                                                       settled; exits with CMD's status. With
//!                                                       --shell CMD is an interactive shell: a
//!                                                       line is typed once the shell reads at
//!                                                       its prompt, a line starting with GS
//!                                                       (0x1d) once a program it started reads
//!                                                       the terminal
//! ```

use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
    time::Instant,
};

fn usage() -> ExitCode {
    eprintln!("usage: see the doc comment of tests/src/bin/helper.rs");
    ExitCode::from(2)
}

fn exec_rest(rest: &[String]) -> ExitCode {
    let Some((prog, args)) = rest.split_first() else {
        return usage();
    };
    let err = Command::new(prog).args(args).exec();
    eprintln!("vigil-test-helper: cannot exec {prog}: {err}");
    ExitCode::from(127)
}

fn after_dashes(args: &[String]) -> &[String] {
    match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => &[],
    }
}

fn set_loginuid(value: &str) -> std::io::Result<()> {
    let raw = if value == "unset" {
        "4294967295".to_string()
    } else {
        value.to_string()
    };
    std::fs::write("/proc/self/loginuid", raw)
}

fn storm(kind: &str, count: u64, target: &str) -> Result<u128, String> {
    let start = Instant::now();
    match kind {
        "exec" => {
            for _ in 0..count {
                let status = Command::new(target)
                    .status()
                    .map_err(|e| format!("exec {target}: {e}"))?;
                if !status.success() {
                    return Err(format!("{target} failed: {status}"));
                }
            }
        }
        "open-read" => {
            let mut buf = vec![0u8; 64 * 1024];
            for _ in 0..count {
                let mut f =
                    std::fs::File::open(target).map_err(|e| format!("open {target}: {e}"))?;
                while f.read(&mut buf).map_err(|e| e.to_string())? > 0 {}
            }
        }
        "connect" => {
            for _ in 0..count {
                let mut s = std::net::TcpStream::connect(target)
                    .map_err(|e| format!("connect {target}: {e}"))?;
                let _ = s.write_all(b"x");
                // Close with a reset: thousands of TIME_WAIT sockets would exhaust the ephemeral
                // ports and turn the storm into a measurement of port search.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                let _ =
                    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger);
            }
        }
        "udp" => {
            // Datagrams addressed with no connect(2): what a service's metrics or DNS client
            // does, and what the cgroup sendmsg hooks see.
            let s = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
            for _ in 0..count {
                s.send_to(b"x", target)
                    .map_err(|e| format!("send to {target}: {e}"))?;
            }
        }
        other => return Err(format!("unknown storm `{other}`")),
    }
    Ok(start.elapsed().as_nanos())
}

/// One UDP datagram to each of `to`, in order, with no connect(2); with `mmsg` the IPv4 ones in a
/// single sendmmsg call (one call, several destinations). One line per datagram: `ok` or the
/// errno's name.
fn datagrams(to: &[std::net::SocketAddr], mmsg: bool) -> Result<(), String> {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    let v4 = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let v6 = UdpSocket::bind("[::]:0").map_err(|e| format!("bind [::]: {e}"))?;
    let outcome = |r: std::io::Result<usize>| match r {
        Ok(_) => println!("ok"),
        Err(e) => println!(
            "{:?}",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
        ),
    };
    if mmsg {
        let dests: Vec<[u8; 16]> = to
            .iter()
            .filter_map(|a| match a {
                SocketAddr::V4(a) => Some(sockaddr_in(*a)),
                SocketAddr::V6(_) => None,
            })
            .collect();
        let mut data = *b"d";
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: each header points at its own address and the one iovec, all alive across
        // the call.
        let mut msgs: Vec<libc::mmsghdr> = dests
            .iter()
            .map(|d| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = d.as_ptr() as *mut libc::c_void;
                m.msg_hdr.msg_namelen = 16;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let sent =
            unsafe { libc::sendmmsg(v4.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if sent < 0 {
            return Err(format!("sendmmsg: {}", std::io::Error::last_os_error()));
        }
        for i in 0..msgs.len() {
            println!("{}", if (i as i32) < sent { "ok" } else { "unsent" });
        }
    }
    for addr in to {
        match addr {
            SocketAddr::V4(_) if mmsg => {}
            SocketAddr::V4(_) => outcome(v4.send_to(b"d", addr)),
            SocketAddr::V6(_) => outcome(v6.send_to(b"d", addr)),
        }
    }
    Ok(())
}

/// The id of the last map named `name`, found as an insider with root would reach the monitor's
/// maps: by id, with raw bpf(2) calls (numbers and layouts of include/uapi/linux/bpf.h).
/// `ptrace-seize`: the attach that makes this process pid's tracer, without stopping it.
fn ptrace_seize(pid: libc::pid_t) -> Result<(), String> {
    // SAFETY: PTRACE_SEIZE reads neither addr nor data (no options asked for).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r != 0 {
        return Err(format!("PTRACE_SEIZE: {}", nix::errno::Errno::last()));
    }
    Ok(())
}

/// `vm-rewrite`: the last 8 bytes of pid's stack mapping, read and written back unchanged.
fn vm_rewrite(pid: libc::pid_t) -> Result<(), String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
    let end = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| l.split(['-', ' ']).nth(1))
        .and_then(|end| u64::from_str_radix(end, 16).ok())
        .ok_or("no [stack] in its maps")?;
    let mut bytes = [0u8; 8];
    let local = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: (end - 8) as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: the local iovec covers `bytes` exactly; the remote one is the other process's.
    let read = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if read != 8 {
        return Err(format!("process_vm_readv: {}", nix::errno::Errno::last()));
    }
    // SAFETY: as above; the bytes written are the ones just read there.
    let written = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if written != 8 {
        return Err(format!("process_vm_writev: {}", nix::errno::Errno::last()));
    }
    Ok(())
}

fn bpf_map_fd(name: &str) -> Result<u32, String> {
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: bpf(2) reads and writes at most `attr.len()` bytes of `attr`, and writes
    // through the `info` pointer inside it only as many bytes as `info_len` says.
    let bpf = |cmd: libc::c_long, attr: &mut [u8; 64]| unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len())
    };
    let mut found = None;
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 64];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(BPF_MAP_GET_NEXT_ID, &mut attr) != 0 {
            break; // ENOENT: no more
        }
        id = u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]);
        let mut attr = [0u8; 64];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        let fd = bpf(BPF_MAP_GET_FD_BY_ID, &mut attr);
        if fd < 0 {
            continue; // gone meanwhile
        }
        // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        let mut info = [0u8; 80];
        let mut attr = [0u8; 64];
        attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        let ok = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0;
        // SAFETY: `fd` came from the call above and is closed once.
        unsafe { libc::close(fd as i32) };
        let named = &info[24..40];
        if ok && named.split(|&b| b == 0).next() == Some(name.as_bytes()) {
            found = Some(id);
        }
    }
    found.ok_or_else(|| format!("no map named {name}"))
}

/// Connects a TCP socket to `addr` with its first send, as TCP Fast Open does (the kernel
/// sends the SYN from `sendto`; without a cookie yet, the data follows the handshake).
fn fast_open(addr: std::net::SocketAddr) -> Result<(), String> {
    use nix::sys::socket::{
        socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike,
    };
    use std::os::fd::AsRawFd;
    let (v4, v6);
    let (family, to): (_, &dyn SockaddrLike) = match addr {
        std::net::SocketAddr::V4(a) => {
            v4 = SockaddrIn::from(a);
            (AddressFamily::Inet, &v4)
        }
        std::net::SocketAddr::V6(a) => {
            v6 = SockaddrIn6::from(a);
            (AddressFamily::Inet6, &v6)
        }
    };
    let fd = socket(family, SockType::Stream, SockFlag::empty(), None)
        .map_err(|e| format!("socket: {e}"))?;
    // nix has no MSG_FASTOPEN: libc's sendto, with nix's address.
    let data = b"x";
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            to.as_ptr(),
            to.len(),
        )
    };
    if sent < 0 {
        return Err(format!(
            "sendto MSG_FASTOPEN: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the calling thread on `core` only (best effort: a machine of one core races less).
fn pin_to_core(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The head of a `sockaddr_in` (family, port, address) as one word, so the rewriting thread
/// swaps whole addresses.
fn sockaddr_head(addr: std::net::SocketAddrV4) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&sockaddr_in(addr)[..8]);
    u64::from_ne_bytes(head)
}

/// `addr` as the kernel reads a `sockaddr_in` (nix's, as bytes).
fn sockaddr_in(addr: std::net::SocketAddrV4) -> [u8; 16] {
    use nix::sys::socket::SockaddrLike;
    let sa = nix::sys::socket::SockaddrIn::from(addr);
    // SAFETY: a `sockaddr_in` is 16 bytes, which `len` says.
    assert_eq!(sa.len() as usize, 16);
    unsafe { std::ptr::read_unaligned(sa.as_ptr() as *const [u8; 16]) }
}

/// What an insider does to put a harmless destination in a monitor that reads the caller's
/// buffer after the call: the kernel copies the address at entry, and another thread writes the
/// decoy there while the connect runs. One attempt per new socket; each line says whether the
/// kernel connected (`ok`: the real address, the only one listening) or not.
fn connect_race(real: std::net::SocketAddrV4, decoy: std::net::SocketAddrV4, n: u32) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    #[repr(C, align(8))]
    struct SockaddrIn {
        head: AtomicU64,
        zero: AtomicU64,
    }
    static BUF: SockaddrIn = SockaddrIn {
        head: AtomicU64::new(0),
        zero: AtomicU64::new(0),
    };
    static DONE: AtomicBool = AtomicBool::new(false);
    let (real_head, decoy_head) = (sockaddr_head(real), sockaddr_head(decoy));
    BUF.head.store(real_head, Ordering::SeqCst);
    // The two threads on two cores, so the buffer changes while the call runs (a loopback
    // connect does not sleep: on one core the rewriting thread would only run between calls).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin_to_core(0);
    let flipper = std::thread::spawn(move || {
        pin_to_core(cores.saturating_sub(1));
        while !DONE.load(Ordering::Relaxed) {
            // Each address held about as long as the other (a few hundred nanoseconds, less
            // than a loopback connect takes).
            for head in [decoy_head, real_head] {
                BUF.head.store(head, Ordering::Relaxed);
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
            }
        }
    });
    let mut out = std::io::stdout().lock();
    for _ in 0..n {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            let _ = writeln!(out, "socket {}", std::io::Error::last_os_error());
            continue;
        }
        let ret = unsafe {
            libc::connect(
                fd,
                std::ptr::addr_of!(BUF) as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let outcome = if ret == 0 {
            "ok".to_string()
        } else {
            format!("{:?}", nix::errno::Errno::last())
        };
        unsafe { libc::close(fd) };
        let _ = writeln!(out, "{outcome}");
    }
    DONE.store(true, Ordering::Relaxed);
    let _ = flipper.join();
}

fn hold_open(path: &str, n: u64, processes: u64) -> Result<(), String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut child = Command::new(&exe)
            .args(["hold-open-child", path, &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a child: {e}"))?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        children.push((child, std::io::BufReader::new(stdout)));
    }
    for (child, out) in &mut children {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "holding" {
            let _ = child.kill();
            return Err(format!("a child did not hold its files: {line:?}"));
        }
    }
    let mut failed = 0;
    for (mut child, _) in children {
        drop(child.stdin.take());
        if !child.wait().map_err(|e| e.to_string())?.success() {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} children failed"));
    }
    Ok(())
}

/// Who a line of keys is typed to (`pty --shell`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The shell, at its prompt.
    Shell,
    /// A program the shell started, reading the terminal itself (an editor, pager, REPL).
    Program,
}

/// How long a session on `pty` may take, typing and all (a loaded machine is slow, not stuck).
const TYPING_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Marks a line typed to the program in the foreground rather than to the shell.
const TO_PROGRAM: u8 = 0x1d;

/// Whether `reader` is reading the terminal now: the foreground process group is the shell's
/// (or not) and the terminal is in non-canonical mode, as readline and full-screen programs
/// set it. A program that sets up its terminal discards what was typed before (sudo's relay,
/// vi), so keys wait for it. The master answers for the terminal's foreground group and modes.
fn reading(master: &std::fs::File, shell: nix::unistd::Pid, reader: Reader) -> bool {
    let Ok(foreground) = nix::unistd::tcgetpgrp(master) else {
        return false;
    };
    let Ok(modes) = nix::sys::termios::tcgetattr(master) else {
        return false;
    };
    let raw = !modes
        .local_flags
        .contains(nix::sys::termios::LocalFlags::ICANON);
    raw && ((foreground == shell) == (reader == Reader::Shell))
}

/// Runs `rest` on a new pseudo-terminal and types `keys` into it a line at a time, each once the
/// terminal has been quiet for a moment and, with `shell`, once the line's reader reads the
/// terminal (a program that sets up its terminal flushes what was typed ahead, as it would a
/// person's; a loaded machine can start it later than any quiet period). Returns the program's
/// exit status.
fn pty(rest: &[String], shell: bool, keys: &[u8]) -> Result<std::process::ExitStatus, String> {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt as _;
    let Some((prog, args)) = rest.split_first() else {
        return Err("pty: no command".into());
    };
    // A terminal of a size (full-screen programs such as top wait for one otherwise).
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pair = nix::pty::openpty(Some(&size), None).map_err(|e| format!("openpty: {e}"))?;
    let slave = std::fs::File::from(pair.slave);
    let mut command = Command::new(prog);
    command
        .args(args)
        .stdin(slave.try_clone().map_err(|e| e.to_string())?)
        .stdout(slave.try_clone().map_err(|e| e.to_string())?)
        .stderr(slave.try_clone().map_err(|e| e.to_string())?);
    // SAFETY: only async-signal-safe calls between fork and exec: setsid and an ioctl on fd 0.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    drop(slave);
    let mut master = std::fs::File::from(pair.master);
    let deadline = Instant::now() + TYPING_LIMIT;
    let mut buf = [0u8; 4096];
    // Reads what the terminal shows until it has been quiet for `quiet_ms`; false once the
    // terminal is gone (every process holding it has exited).
    let mut settle = |master: &mut std::fs::File, quiet_ms: u16| -> bool {
        loop {
            let mut fds = [nix::poll::PollFd::new(
                master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(quiet_ms)) {
                Ok(0) => return true,
                Ok(_) => match master.read(&mut buf) {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                },
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    };
    let shell_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut open = settle(&mut master, 150);
    for line in keys.split_inclusive(|&b| b == b'\n') {
        let (reader, line) = match line.split_first() {
            Some((&TO_PROGRAM, rest)) => (Reader::Program, rest),
            _ => (Reader::Shell, line),
        };
        while open && shell && !reading(&master, shell_pid, reader) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let to = if reader == Reader::Shell {
                    "the shell"
                } else {
                    "a program"
                };
                return Err(format!(
                    "{to} was not reading the terminal for {:?} within {} s",
                    String::from_utf8_lossy(line),
                    TYPING_LIMIT.as_secs()
                ));
            }
            open = settle(&mut master, 50);
        }
        if !open {
            break;
        }
        if master.write_all(line).is_err() {
            break;
        }
        open = settle(&mut master, 150);
    }
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            // Whatever it printed last, read so nothing blocks on a full terminal.
            settle(&mut master, 50);
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{prog} still running after {} s of typing",
                TYPING_LIMIT.as_secs()
            ));
        }
        if !settle(&mut master, 50) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    match cmd.as_str() {
        "login" => {
            let Some(uid) = args.get(1) else {
                return usage();
            };
            if let Err(e) = set_loginuid(uid) {
                eprintln!("vigil-test-helper: cannot set loginuid to {uid}: {e}");
                return ExitCode::from(1);
            }
            // A new session, as a login would start; fails harmlessly if already a leader.
            let _ = nix::unistd::setsid();
            // With a terminal on stdin, make it the session's controlling terminal, as login
            // and sshd do (fails harmlessly otherwise).
            // SAFETY: TIOCSCTTY on fd 0 with an integer argument; no memory is passed.
            unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            exec_rest(after_dashes(&args))
        }
        "setuid" => {
            let Some(uid) = args.get(1).and_then(|u| u.parse::<u32>().ok()) else {
                return usage();
            };
            if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)) {
                eprintln!("vigil-test-helper: setuid({uid}): {e}");
                return ExitCode::from(1);
            }
            let rest = after_dashes(&args);
            if rest.is_empty() {
                ExitCode::SUCCESS
            } else {
                exec_rest(rest)
            }
        }
        "connect" => {
            let Some(addr) = args.get(1) else {
                return usage();
            };
            match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: connect {addr}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "fast-open" => {
            let Some(addr) = args.get(1).and_then(|a| a.parse().ok()) else {
                return usage();
            };
            match fast_open(addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: fast-open {addr}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "bpf-map-fd" => {
            let Some(name) = args.get(1) else {
                return usage();
            };
            match bpf_map_fd(name) {
                Ok(id) => {
                    println!("{id}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil-test-helper: bpf-map-fd: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "ptrace-seize" | "vm-rewrite" => {
            let Some(pid) = args.get(1).and_then(|p| p.parse().ok()) else {
                return usage();
            };
            let done = if cmd == "ptrace-seize" {
                ptrace_seize(pid)
            } else {
                vm_rewrite(pid)
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: {cmd} {pid}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "datagrams" => {
            let mmsg = args.get(1).is_some_and(|a| a == "--mmsg");
            let to: Result<Vec<std::net::SocketAddr>, _> = args[1 + mmsg as usize..]
                .iter()
                .map(|a| a.parse())
                .collect();
            let Ok(to) = to else {
                return usage();
            };
            match datagrams(&to, mmsg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: datagrams: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "connect-race" => {
            let (Some(real), Some(decoy), Some(n)) = (
                args.get(1).and_then(|a| a.parse().ok()),
                args.get(2).and_then(|a| a.parse().ok()),
                args.get(3).and_then(|n| n.parse::<u32>().ok()),
            ) else {
                return usage();
            };
            connect_race(real, decoy, n);
            ExitCode::SUCCESS
        }
        "read-exit" => {
            // Read N bytes of a file and exit without closing it: the read volume must still be
            // reported, at exit.
            let (Some(path), Some(n)) = (
                args.get(1),
                args.get(2).and_then(|n| n.parse::<usize>().ok()),
            ) else {
                return usage();
            };
            let mut buf = vec![0u8; n];
            match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut buf).map(|_| f)) {
                Ok(f) => {
                    std::mem::forget(f);
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("vigil-test-helper: read {path}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "stamp-open" => {
            // For `cargo xtask bench respond`: prints CLOCK_MONOTONIC (ns) the instant before
            // opening `path`, then waits to be killed (a response's latency is measured from
            // the stamp to the process's death).
            let Some(path) = args.get(1) else {
                return usage();
            };
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map(|t| t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
                .unwrap_or(0);
            {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{now}");
                let _ = out.flush();
            }
            let _ = std::fs::File::open(path);
            std::thread::sleep(std::time::Duration::from_secs(30));
            ExitCode::SUCCESS
        }
        "hold-open" => {
            // More files open and read at once than the kernel side's open-file table holds:
            // `processes` children (a process may hold only so many fds) each open and read
            // `n`, then all exit together once every one of them holds its files.
            let (Some(path), Some(n), Some(processes)) = (
                args.get(1),
                args.get(2).and_then(|n| n.parse::<u64>().ok()),
                args.get(3).and_then(|n| n.parse::<u64>().ok()),
            ) else {
                return usage();
            };
            match hold_open(path, n, processes) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: hold-open: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "hold-open-child" => {
            let (Some(path), Some(n)) =
                (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
            else {
                return usage();
            };
            let mut files = Vec::new();
            for _ in 0..n {
                let mut byte = [0u8; 1];
                match std::fs::File::open(path).and_then(|mut f| f.read(&mut byte).map(|_| f)) {
                    Ok(f) => files.push(f),
                    Err(e) => {
                        eprintln!("vigil-test-helper: open {path}: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            // Ready; hold everything until the parent closes our stdin, then exit with the
            // files still open (their read volumes are reported at exit).
            println!("holding");
            let _ = std::io::stdout().flush();
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0)
        }
        "connect-unix" => {
            let Some(path) = args.get(1) else {
                return usage();
            };
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: connect {path}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "by-handle" => {
            let Some(path) = args.get(1) else {
                return usage();
            };
            match read_by_handle(path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil-test-helper: by-handle {path}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "int80" => match int80::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil-test-helper: int80: {e}");
                ExitCode::from(1)
            }
        },
        "pty" => {
            let mut keys = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut keys) {
                eprintln!("vigil-test-helper: pty: cannot read the keys: {e}");
                return ExitCode::from(1);
            }
            let shell = args.get(1).is_some_and(|a| a == "--shell");
            match pty(after_dashes(&args), shell, &keys) {
                Ok(status) => ExitCode::from(status.code().unwrap_or(128) as u8),
                Err(e) => {
                    eprintln!("vigil-test-helper: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "storm" => {
            let (Some(kind), Some(count), Some(target)) = (
                args.get(1),
                args.get(2).and_then(|c| c.parse().ok()),
                args.get(3),
            ) else {
                return usage();
            };
            match storm(kind, count, target) {
                Ok(ns) => {
                    println!("{ns}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil-test-helper: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => usage(),
    }
}

/// Syscalls through the 32-bit ABI from this 64-bit process, as an insider would make them to
/// get past a monitor that follows only the native numbers. Pointers must be below 4 GiB (the
/// kernel reads the registers' low halves): everything passed lives in one `MAP_32BIT` page.
#[cfg(target_arch = "x86_64")]
/// Opens `path` the way no path is named at the open: its handle first (`name_to_handle_at`),
/// then `open_by_handle_at` on a directory of the same mount, and reads it to the end.
fn read_by_handle(path: &str) -> Result<(), String> {
    use std::{ffi::CString, io::Read, os::fd::FromRawFd};
    /// `MAX_HANDLE_SZ` of include/linux/exportfs.h.
    const MAX_HANDLE_SZ: usize = 128;
    #[repr(C)]
    struct Handle {
        head: libc::file_handle,
        bytes: [u8; MAX_HANDLE_SZ],
    }
    let name = CString::new(path).map_err(|e| e.to_string())?;
    let dir = std::path::Path::new(path)
        .parent()
        .ok_or("the path has no directory")?;
    // SAFETY: zeroed is a valid `file_handle` with room after it; the kernel writes at most
    // `handle_bytes` bytes of handle.
    let mut handle: Handle = unsafe { std::mem::zeroed() };
    handle.head.handle_bytes = MAX_HANDLE_SZ as u32;
    let mut mount_id = 0;
    // SAFETY: valid C string, handle buffer and out-pointer.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            name.as_ptr(),
            &mut handle.head,
            &mut mount_id,
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mount = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: an fd we own and the handle the kernel just filled.
    let fd = unsafe {
        libc::open_by_handle_at(
            std::os::fd::AsRawFd::as_raw_fd(&mount),
            &mut handle.head,
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(format!(
            "open_by_handle_at: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the fd was just opened and is owned here only.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut content = Vec::new();
    file.read_to_end(&mut content).map_err(|e| e.to_string())?;
    Ok(())
}

mod int80 {
    // The i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl).
    const READ: u32 = 3;
    const OPEN: u32 = 5;
    const CLOSE: u32 = 6;
    const SOCKETCALL: u32 = 102;
    const OPENAT: u32 = 295;
    const SYS_SOCKET: u32 = 1;
    const SYS_CONNECT: u32 = 3;
    const SYS_SENDTO: u32 = 11;
    const BPF: u32 = 357;
    const PTRACE: u32 = 26;
    const PTRACE_SEIZE: u32 = 0x4206;
    const RENAME: u32 = 38;
    const BPF_MAP_GET_NEXT_ID: u32 = 12;

    /// One `int 0x80`: eax the number, ebx, ecx, edx the arguments (esi, edi zero); the result
    /// in eax.
    fn syscall(nr: u32, a: u32, b: u32, c: u32) -> i32 {
        let ret: u64;
        // SAFETY: a syscall with integer arguments; pointers among them point into the page
        // `Low` owns. rbx is reserved by the compiler, so it is swapped in and out around the
        // call. The kernel may clear r8-r11 on the way back; r12-r15 are declared for safety.
        unsafe {
            core::arch::asm!(
                "xchg {a}, rbx",
                "int 0x80",
                "xchg {a}, rbx",
                a = inout(reg) a as u64 => _,
                inlateout("rax") nr as u64 => ret,
                in("rcx") b as u64,
                in("rdx") c as u64,
                // The fourth and fifth arguments, unused here, are zero (not what the registers
                // held): ptrace(PTRACE_SEIZE) refuses options it does not know.
                in("rsi") 0u64,
                in("rdi") 0u64,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            );
        }
        ret as u32 as i32
    }

    fn check(what: &str, ret: i32) -> Result<u32, String> {
        if ret < 0 {
            Err(format!(
                "{what}: {}",
                std::io::Error::from_raw_os_error(-ret)
            ))
        } else {
            Ok(ret as u32)
        }
    }

    /// A page below 4 GiB, written from its start.
    struct Low {
        base: *mut u8,
        used: usize,
    }

    impl Low {
        fn new() -> Result<Self, String> {
            // SAFETY: an anonymous private mapping; checked for failure below.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(format!(
                    "mmap MAP_32BIT: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Low {
                base: base as *mut u8,
                used: 0,
            })
        }

        /// Copies `bytes` in (8-byte aligned) and returns their 32-bit address.
        fn put(&mut self, bytes: &[u8]) -> Result<u32, String> {
            let at = self.used.div_ceil(8) * 8;
            if at + bytes.len() > 4096 {
                return Err("arguments exceed one page".into());
            }
            // SAFETY: within the page, which nothing else references.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(at), bytes.len())
            };
            self.used = at + bytes.len();
            Ok(self.base as u32 + at as u32)
        }

        fn c_string(&mut self, s: &str) -> Result<u32, String> {
            let mut b = s.as_bytes().to_vec();
            b.push(0);
            self.put(&b)
        }
    }

    impl Drop for Low {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`.
            unsafe { libc::munmap(self.base as *mut libc::c_void, 4096) };
        }
    }

    fn read_all(low: &mut Low, fd: u32) -> Result<(), String> {
        let buf = low.put(&[0u8; 512])?;
        while check("read", syscall(READ, fd, buf, 512))? > 0 {}
        check("close", syscall(CLOSE, fd, 0, 0)).map(|_| ())
    }

    pub fn run(args: &[String]) -> Result<(), String> {
        let mut low = Low::new()?;
        match args {
            [op, path] if op == "open" => {
                let p = low.c_string(path)?;
                let fd = check(
                    &format!("open {path}"),
                    syscall(OPEN, p, libc::O_RDONLY as u32, 0),
                )?;
                read_all(&mut low, fd)
            }
            [op, dir, name] if op == "openat" => {
                let d = low.c_string(dir)?;
                let dirfd = check(
                    &format!("open {dir}"),
                    syscall(OPEN, d, (libc::O_RDONLY | libc::O_DIRECTORY) as u32, 0),
                )?;
                let n = low.c_string(name)?;
                let fd = check(
                    &format!("openat {name}"),
                    syscall(OPENAT, dirfd, n, libc::O_RDONLY as u32),
                )?;
                read_all(&mut low, fd)?;
                check("close", syscall(CLOSE, dirfd, 0, 0)).map(|_| ())
            }
            [op, from, to] if op == "rename" => {
                let f = low.c_string(from)?;
                let t = low.c_string(to)?;
                check(&format!("rename {from} {to}"), syscall(RENAME, f, t, 0)).map(|_| ())
            }
            [op, path] if op == "connect-unix" => {
                let words =
                    |w: [u32; 3]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                let sa = low.put(&words([libc::AF_UNIX as u32, libc::SOCK_STREAM as u32, 0]))?;
                let fd = check("socket", syscall(SOCKETCALL, SYS_SOCKET, sa, 0))?;
                let mut addr = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
                addr.extend_from_slice(path.as_bytes());
                addr.push(0);
                let len = addr.len() as u32;
                let a = low.put(&addr)?;
                let ca = low.put(&words([fd, a, len]))?;
                check(
                    &format!("connect {path}"),
                    syscall(SOCKETCALL, SYS_CONNECT, ca, 0),
                )?;
                check("close", syscall(CLOSE, fd, 0, 0)).map(|_| ())
            }
            [op, to] if op == "fast-open" => {
                // TCP Fast Open through socketcall(SYS_SENDTO): a connect with no connect call,
                // in the ABI whose arguments are words in user memory.
                let to: std::net::SocketAddrV4 =
                    to.parse().map_err(|e| format!("{to}: {e}"))?;
                let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                let sa = low.put(&words(&[libc::AF_INET as u32, libc::SOCK_STREAM as u32, 0]))?;
                let fd = check("socket", syscall(SOCKETCALL, SYS_SOCKET, sa, 0))?;
                let a = low.put(&super::sockaddr_in(to))?;
                let data = low.put(b"x")?;
                let args = low.put(&words(&[fd, data, 1, libc::MSG_FASTOPEN as u32, a, 16]))?;
                check(
                    &format!("sendto MSG_FASTOPEN {to}"),
                    syscall(SOCKETCALL, SYS_SENDTO, args, 0),
                )?;
                check("close", syscall(CLOSE, fd, 0, 0)).map(|_| ())
            }
            [op] if op == "raw-socket" => {
                // socketcall(SYS_SOCKET, [AF_INET, SOCK_RAW, IPPROTO_ICMP]): a raw socket made
                // through the multiplexer, its arguments words in user memory.
                let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                let sa = low.put(&words(&[
                    libc::AF_INET as u32,
                    libc::SOCK_RAW as u32,
                    libc::IPPROTO_ICMP as u32,
                ]))?;
                let fd = check("socket", syscall(SOCKETCALL, SYS_SOCKET, sa, 0))?;
                check("close", syscall(CLOSE, fd, 0, 0)).map(|_| ())
            }
            [op, pid] if op == "ptrace-seize" => {
                // ptrace(PTRACE_SEIZE, pid) through the 32-bit ABI; exiting detaches.
                let pid: u32 = pid.parse().map_err(|_| format!("not a pid: {pid}"))?;
                check("ptrace", syscall(PTRACE, PTRACE_SEIZE, pid, 0)).map(|_| ())
            }
            [op] if op == "bpf-next-map" => {
                // bpf(BPF_MAP_GET_NEXT_ID) through the 32-bit ABI: the first map id on the host.
                let attr = low.put(&[0u8; 16])?;
                check("bpf", syscall(BPF, BPF_MAP_GET_NEXT_ID, attr, 16)).map(|_| ())
            }
            _ => Err(
                "usage: int80 open <path> | openat <dir> <name> | connect-unix <path> | fast-open <ipv4:port> | bpf-next-map | raw-socket | ptrace-seize <pid>"
                    .into(),
            ),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod int80 {
    pub fn run(_args: &[String]) -> Result<(), String> {
        Err("the 32-bit syscall ABI is only exercised on x86_64".into())
    }
}
