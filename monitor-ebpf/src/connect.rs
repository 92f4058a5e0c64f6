//! connect: outbound connections with their destination (IPv4, IPv6, unix), reported at exit with
//! the result; the arguments come from the saved user registers.
//!
//! An IP destination is the one the kernel copied and connected to: the cgroup
//! `connect4`/`connect6` hook keeps it for the thread ([`note_destination`]) and the exit takes
//! it. The caller's buffer, read at exit, is only compared with it: another thread of the
//! caller can rewrite the buffer while the call runs, and a destination read from it would be
//! whatever the caller chose to show (the record then says it was rewritten). Where the hook is
//! not attached (no cgroup v2, or detached until the daemon attaches it again) the buffer is
//! all there is.
//!
//! A unix socket connected by path gets the file the kernel connected to, walked from the peer
//! socket's bound path: the name in `sun_path` may be a symlink, relative, or behind a bind
//! mount.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    programs::SockAddrContext,
};
use core::ffi::c_void;
use vigil_common::{
    kind, ConnectDest, ConnectRecord, DatagramDest, DatagramDests, DatagramKey, FileId, PathWalk,
    CONNECT_ADDR_KERNEL, CONNECT_ADDR_REWRITTEN, CONNECT_AT_SEND, CONNECT_DATAGRAM,
    CONNECT_FIXED_SIZE, CONNECT_TAIL_CAP, CONNECT_TAIL_SPAN, DATAGRAM_DESTS_PER_SOCKET,
    UNIX_PATH_MAX,
};

use crate::{
    emit::{emit_fixed, send_prefix},
    kernel::{
        current_tgid, fd_file, fill_header, inode_id, koff, process_root, read_ptr, socket_sock,
        Ptr, Regs,
    },
    maps::{scratch, CONNECT_DEST, CONNECT_SCRATCH, DATAGRAM_DESTS},
    scope,
    tail::Tail,
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// socketcall's call numbers (include/uapi/linux/net.h): socket (dispatched to `socket` before
/// this module, see `syscalls`), connect, and the sends that can connect a socket (TCP Fast
/// Open).
pub const SYS_SOCKET: u64 = 1;
const SYS_CONNECT: u64 = 3;
const SYS_SENDTO: u64 = 11;
const SYS_SENDMSG: u64 = 16;
const SYS_SENDMMSG: u64 = 20;

/// `cgroup/connect4` (`V6` false) or `cgroup/connect6`, in the connecting thread: keeps the
/// destination the kernel copied from the caller (`user_*`) for the thread's `connect` exit.
/// Programs of descendant cgroups run before this one (attached at the root), so what they
/// rewrote is seen rewritten; a program attached at the root after this one could still
/// rewrite it afterwards (see the README's limits). Nothing is kept for a process outside every
/// session.
#[inline(always)]
pub fn note_destination<const V6: bool>(ctx: &SockAddrContext) {
    if !scope::may_be_in_scope() {
        return;
    }
    let _ = CONNECT_DEST.insert(bpf_get_current_pid_tgid(), kernel_destination::<V6>(ctx), 0);
}

/// The destination in a cgroup `sock_addr` hook's context (`V6`: a `*6` hook), as the kernel
/// copied it from the caller.
#[inline(always)]
fn kernel_destination<const V6: bool>(ctx: &SockAddrContext) -> ConnectDest {
    let sa = ctx.sock_addr;
    // SAFETY: the context the kernel passed. Each hook reads only its own family's fields, at
    // their own size: the verifier refuses `user_ip6` to a `connect4` program.
    unsafe {
        let mut addr = [0u8; 16];
        if V6 {
            let w = (*sa).user_ip6;
            addr[..4].copy_from_slice(&w[0].to_ne_bytes());
            addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
            addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
            addr[12..].copy_from_slice(&w[3].to_ne_bytes());
        } else {
            addr[..4].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        }
        ConnectDest {
            sk: (*sa).__bindgen_anon_1.sk as u64,
            family: if V6 { AF_INET6 } else { AF_INET },
            // Network byte order in the low 16 bits.
            port: u16::from_be((*sa).user_port as u16),
            _pad: 0,
            addr,
        }
    }
}

/// `cgroup/sendmsg4` (`V6` false) or `cgroup/sendmsg6`: a UDP datagram addressed by its sender
/// (`sendto`/`sendmsg` with an address, no connect(2)), at the destination the kernel copied.
/// Reported from here, not from the send's exit: one `sendmmsg` can address several
/// destinations, and the exit would see only the last. Only the first datagram of a socket in
/// a process to each destination is reported (see `CONNECT_DATAGRAM`), as a connected socket's
/// later sends are not. `allowed`: the hook's verdict (a session denied the network has its
/// datagrams refused, reported as `-EPERM`).
#[inline(always)]
pub fn on_datagram<const V6: bool>(ctx: &SockAddrContext, allowed: bool) {
    if !scope::may_be_in_scope() {
        return;
    }
    let dest = kernel_destination::<V6>(ctx);
    let seen = DatagramDest {
        addr: words(&dest.addr).into(),
        port_family: dest.port as u32 | (dest.family as u32) << 16,
        _pad: 0,
    };
    let key = DatagramKey {
        // SAFETY: the hook's own context, as the helper takes it.
        cookie: unsafe { generated::bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) },
        tgid: current_tgid(),
        _pad: 0,
    };
    // Looked up before the scope: only a process in scope makes an entry, so a datagram to a
    // destination already reported costs one lookup, not two.
    let known = DATAGRAM_DESTS.get_ptr_mut(key);
    if known.is_some_and(|k| already_sent_to(unsafe { &*k }, &seen)) {
        return;
    }
    let Some((task, _)) = scope::check(kind::CONNECT) else {
        return;
    };
    remember_datagram(&key, known, seen);
    const EPERM: i32 = 1;
    emit_fixed::<ConnectRecord, CONNECT_FIXED_SIZE>(kind::CONNECT, task, |rec| unsafe {
        (*rec).fd = -1;
        (*rec).ret = if allowed { 0 } else { -EPERM };
        (*rec).family = dest.family;
        (*rec).port = dest.port;
        (*rec).addr_len = 0;
        (*rec).flags = CONNECT_ADDR_KERNEL | CONNECT_DATAGRAM;
        (*rec).addr = dest.addr;
        (*rec).unix_path = [0; UNIX_PATH_MAX];
        (*rec)._pad2 = 0;
        (*rec).peer = FileId::default();
        (*rec).peer_path = PathWalk::UNAVAILABLE;
    });
}

/// Whether the socket and process of `seen` were already reported sending to `dest`.
#[inline(always)]
fn already_sent_to(seen: &DatagramDests, dest: &DatagramDest) -> bool {
    // Word by word: a derived comparison of the arrays may become a `bcmp` the target lacks.
    seen.dests.iter().any(|d| {
        d.addr[0] == dest.addr[0] && d.addr[1] == dest.addr[1] && d.port_family == dest.port_family
    })
}

/// Remembers `dest`, new for the socket and process of `key` (whose entry is `known`, if
/// any): in a free slot, else over the oldest. A full table (a map error) remembers nothing:
/// the next datagram there is reported again, never lost.
#[inline(always)]
fn remember_datagram(key: &DatagramKey, known: Option<*mut DatagramDests>, dest: DatagramDest) {
    let Some(seen) = known else {
        let mut fresh = DatagramDests::default();
        fresh.dests[0] = dest;
        fresh.next = 1;
        let _ = DATAGRAM_DESTS.insert(key, fresh, 0);
        return;
    };
    // SAFETY: the map's own value; threads of one process sending on one socket at once may
    // both find a destination new (two records, not none).
    let seen = unsafe { &mut *seen };
    let slot = seen.next as usize % DATAGRAM_DESTS_PER_SOCKET;
    if let Some(d) = seen.dests.get_mut(slot) {
        *d = dest;
    }
    seen.next = (slot as u32 + 1) % DATAGRAM_DESTS_PER_SOCKET as u32;
}

/// `sys_exit` of connect (fd, sockaddr pointer and length from the saved user registers), or,
/// `via_socketcall`, of the 32-bit ABI's socketcall(call, args): for `SYS_CONNECT` the same
/// three are u32s in user memory (read after the call, as a native connect's address is). A
/// function of its own: the peer's path walk would otherwise be inlined into the syscall exit
/// program beside the open's.
#[inline(never)]
pub fn on_exit(regs: impl Regs, ret: i64, via_socketcall: bool) {
    let args = if via_socketcall {
        match regs.arg(0) {
            SYS_CONNECT => {}
            SYS_SENDTO | SYS_SENDMSG | SYS_SENDMMSG => {
                // The fd is the first of the call's arguments in user memory.
                let fd = unsafe { bpf_probe_read_user(regs.arg(1) as *const u32) };
                if let Ok(fd) = fd {
                    on_send_exit(regs, ret, fd);
                }
                return;
            }
            _ => return,
        }
        let a: [u32; 3] = unsafe { bpf_probe_read_user(regs.arg(1) as *const [u32; 3]) }
            .unwrap_or([u32::MAX, 0, 0]);
        [a[0] as u64, a[1] as u64, a[2] as u64]
    } else {
        [regs.arg(0), regs.arg(1), regs.arg(2)]
    };
    let Some((task, policy)) = scope::check_at(kind::CONNECT, regs) else {
        return;
    };
    let Some(rec) = scratch(&CONNECT_SCRATCH) else {
        return;
    };
    let ret = ret as i32;
    let addr = args[1] as *const u8;
    let addr_len = args[2] as u32;
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }.unwrap_or(0);
    let rec: *mut ConnectRecord = rec;
    unsafe {
        (*rec).fd = args[0] as i32;
        (*rec).ret = ret;
        (*rec).family = family;
        (*rec).addr_len = if addr_len > u16::MAX as u32 {
            u16::MAX
        } else {
            addr_len as u16
        };
        (*rec).flags = 0;
        (*rec)._pad2 = 0;
        (*rec).port = 0;
        (*rec).addr = [0; 16];
        (*rec).unix_path = [0; UNIX_PATH_MAX];
        match family {
            AF_INET => {
                let port: u16 =
                    bpf_probe_read_user(addr.wrapping_add(2) as *const u16).unwrap_or(0);
                (*rec).port = u16::from_be(port);
                let ip: [u8; 4] =
                    bpf_probe_read_user(addr.wrapping_add(4) as *const [u8; 4]).unwrap_or([0; 4]);
                (*rec).addr = [
                    ip[0], ip[1], ip[2], ip[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ];
            }
            AF_INET6 => {
                let port: u16 =
                    bpf_probe_read_user(addr.wrapping_add(2) as *const u16).unwrap_or(0);
                (*rec).port = u16::from_be(port);
                (*rec).addr =
                    bpf_probe_read_user(addr.wrapping_add(8) as *const [u8; 16]).unwrap_or([0; 16]);
            }
            AF_UNIX => {
                // sun_path follows the 2-byte family; only addrlen - 2 bytes of it are the caller's.
                let mut n = addr_len.saturating_sub(2);
                if n > UNIX_PATH_MAX as u32 {
                    n = UNIX_PATH_MAX as u32;
                }
                let n = n & 0x7f;
                if n > 0 {
                    generated::bpf_probe_read_user(
                        core::ptr::addr_of_mut!((*rec).unix_path) as *mut c_void,
                        n,
                        addr.wrapping_add(2) as *const c_void,
                    );
                }
            }
            _ => {}
        }
    }
    let rec = unsafe { &mut *rec };
    let family = kept_destination()
        .and_then(|kept| take_kernel_destination(kept, task, args[0] as u32, rec, true))
        .unwrap_or(family);
    rec.peer = FileId::default();
    rec.peer_path = PathWalk::UNAVAILABLE;
    let Some(mut tail) = Tail::<{ CONNECT_TAIL_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };
    if family == AF_UNIX && ret == 0 && policy.canonical_paths != 0 {
        // file → struct socket → sock (a unix_sock) → its peer, bound at `path`.
        let sk = socket_sock(fd_file(task, args[0] as u32));
        let peer: Ptr = read_ptr(sk, koff!(unix_sock_peer));
        if !peer.is_null() {
            let bound = peer.wrapping_add(koff!(unix_sock_path));
            let dentry = read_ptr(bound, koff!(path_dentry));
            if !dentry.is_null() {
                rec.peer = inode_id(read_ptr(dentry, koff!(dentry_inode)));
                rec.peer_path = tail.path(bound, process_root(task));
            }
        }
    }
    // Masked, not compared: the verifier keeps a mask's bound through register copies.
    let used = tail.pos() as usize & (CONNECT_TAIL_CAP - 1);
    let size = CONNECT_FIXED_SIZE + used;
    fill_header(&mut rec.header, kind::CONNECT, size as u32, task);
    send_prefix(rec, size, kind::CONNECT);
}

/// `sys_exit` of sendto, sendmsg or sendmmsg on socket `fd`: a send with `MSG_FASTOPEN`
/// connects a TCP socket with no connect(2) (TCP Fast Open), and its cgroup connect hook kept
/// the destination; reported as a connect. Any other send finds nothing kept: one lookup.
#[inline(never)]
pub fn on_send_exit(regs: impl Regs, ret: i64, fd: u32) {
    let Some(kept) = kept_destination() else {
        return;
    };
    let Some((task, _)) = scope::check_at(kind::CONNECT, regs) else {
        return;
    };
    let Some(rec) = scratch(&CONNECT_SCRATCH) else {
        return;
    };
    rec.fd = fd as i32;
    // The send's byte count is not a connect's result: connected (or under way) is 0.
    rec.ret = if ret < 0 { ret as i32 } else { 0 };
    rec.family = 0;
    rec.port = 0;
    rec.addr_len = 0;
    rec.flags = CONNECT_AT_SEND;
    rec._pad2 = 0;
    rec.addr = [0; 16];
    rec.peer = FileId::default();
    rec.peer_path = PathWalk::UNAVAILABLE;
    // (`unix_path` is left as it is: it is not read for an IP family.)
    if take_kernel_destination(kept, task, fd, rec, false).is_none() {
        return;
    }
    fill_header(
        &mut rec.header,
        kind::CONNECT,
        CONNECT_FIXED_SIZE as u32,
        task,
    );
    send_prefix(rec, CONNECT_FIXED_SIZE, kind::CONNECT);
}

/// The destination [`note_destination`] kept for this thread (`None`: it kept nothing), with
/// its key: looked up once, then taken or dropped by [`take_kernel_destination`].
#[inline(always)]
fn kept_destination() -> Option<(u64, &'static ConnectDest)> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the map's own value, read before `take_kernel_destination` removes the entry.
    CONNECT_DEST.get_ptr(key).map(|p| (key, unsafe { &*p }))
}

/// Puts the `kept` destination (the one the kernel copied for this call) in `rec`; with
/// `from_buffer`, in place of the caller's buffer read at exit, saying whether that buffer
/// differed. Its family, or `None` when it was kept for another socket than `fd`'s (a stale
/// entry). The entry is removed either way.
#[inline(always)]
fn take_kernel_destination(
    (key, dest): (u64, &ConnectDest),
    task: Ptr,
    fd: u32,
    rec: &mut ConnectRecord,
    from_buffer: bool,
) -> Option<u16> {
    // The socket this call connected: an entry left by another call of the thread (one io_uring
    // made) names another.
    let sk = socket_sock(fd_file(task, fd));
    let ours = !sk.is_null() && sk as u64 == dest.sk;
    let family = if ours {
        let same = rec.family == dest.family
            && rec.port == dest.port
            && words(&rec.addr) == words(&dest.addr);
        rec.flags |= CONNECT_ADDR_KERNEL;
        if from_buffer && !same {
            rec.flags |= CONNECT_ADDR_REWRITTEN;
        }
        rec.family = dest.family;
        rec.port = dest.port;
        rec.addr = dest.addr;
        // (What the buffer put in `unix_path`, had it said AF_UNIX, is not read for an IP
        // family.)
        Some(dest.family)
    } else {
        None
    };
    let _ = CONNECT_DEST.remove(key);
    family
}

/// An address as two words: compared without a byte loop (or a `bcmp` the target lacks).
#[inline(always)]
fn words(addr: &[u8; 16]) -> (u64, u64) {
    // SAFETY: 16 bytes, read unaligned.
    unsafe {
        (
            core::ptr::read_unaligned(addr.as_ptr() as *const u64),
            core::ptr::read_unaligned(addr.as_ptr().add(8) as *const u64),
        )
    }
}
