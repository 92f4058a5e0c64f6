//! connect: outbound connections with their destination (IPv4, IPv6, unix), reported at exit with
//! the result. The sockaddr is read at exit from the caller's buffer, which the kernel has just
//! copied (so the page is present); the arguments come from the saved user registers. A unix
//! socket connected by path also gets the file the kernel connected to, walked from the peer
//! socket's bound path: the name in `sun_path` may be a symlink, relative, or behind a bind
//! mount.

use aya_ebpf::helpers::{bpf_probe_read_user, generated};
use core::ffi::c_void;
use vigil_common::{
    kind, ConnectRecord, FileId, PathWalk, CONNECT_FIXED_SIZE, CONNECT_TAIL_CAP, CONNECT_TAIL_SPAN,
    UNIX_PATH_MAX,
};

use crate::{
    emit::send_prefix,
    kernel::{fd_file, fill_header, inode_id, koff, process_root, read_ptr, Ptr, Regs},
    maps::{scratch, CONNECT_SCRATCH},
    scope,
    tail::Tail,
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `SYS_CONNECT` of include/uapi/linux/net.h: socketcall's number for connect.
const SYS_CONNECT: u64 = 3;

/// `sys_exit` of connect (fd, sockaddr pointer and length from the saved user registers), or,
/// `via_socketcall`, of the 32-bit ABI's socketcall(call, args): for `SYS_CONNECT` the same
/// three are u32s in user memory (read after the call, as a native connect's address is). A
/// function of its own: the peer's path walk would otherwise be inlined into the syscall exit
/// program beside the open's.
#[inline(never)]
pub fn on_exit(regs: impl Regs, ret: i64, via_socketcall: bool) {
    let args = if via_socketcall {
        if regs.arg(0) != SYS_CONNECT {
            return;
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
        (*rec)._pad = 0;
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
    rec.peer = FileId::default();
    rec.peer_path = PathWalk::UNAVAILABLE;
    let Some(mut tail) = Tail::<{ CONNECT_TAIL_SPAN - 1 }>::new(rec.tail.as_mut_ptr()) else {
        return;
    };
    if family == AF_UNIX && ret == 0 && policy.canonical_paths != 0 {
        // file → struct socket → sock (a unix_sock) → its peer, bound at `path`.
        let sock = read_ptr(fd_file(task, args[0] as u32), koff!(file_private_data));
        let sk = read_ptr(sock, koff!(socket_sk));
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
