//! raw_socket: a process in scope made a socket below the transport layer (raw IP, packet,
//! ICMP echo). What such a socket sends passes no connect or datagram hook: crafted packets,
//! ping tunnels; a packet socket reads every frame on an interface.

use aya_ebpf::helpers::bpf_probe_read_user;
use vigil_common::{kind, raw_socket, RawSocketRecord};

use crate::{
    emit::emit,
    kernel::{koff, read, socket_sock, Regs},
    scope,
};

/// `sys_exit` of socket(family, type, protocol), or, `via_socketcall`, of socketcall's
/// `SYS_SOCKET`, whose three arguments are u32s in user memory. A socket made is described by
/// the kernel's own object (the caller's memory can change after the kernel read it); a refused
/// one by what was asked. A subprogram, reading the arguments itself: the dispatcher's frame
/// stays as it was (its deepest chain is at the kernel's 512-byte limit).
#[inline(never)]
pub fn on_exit(regs: impl Regs, ret: i64, via_socketcall: bool) {
    let asked: [u32; 3] = if via_socketcall {
        unsafe { bpf_probe_read_user(regs.arg(1) as *const [u32; 3]) }.unwrap_or([0; 3])
    } else {
        [regs.arg(0) as u32, regs.arg(1) as u32, regs.arg(2) as u32]
    };
    let made = if ret >= 0 {
        let sk = socket_sock(regs.fd_file(ret as u32));
        if sk.is_null() {
            asked
        } else {
            let family = read::<u16>(sk, koff!(sock_family)).unwrap_or(0) as u32;
            // A packet socket keeps its protocol (the ethertype) in its own struct, not in
            // `sk_protocol` (0): the one asked for is reported.
            let protocol = if family == raw_socket::AF_PACKET {
                asked[2]
            } else {
                read::<u16>(sk, koff!(sock_protocol)).unwrap_or(0) as u32
            };
            [
                family,
                read::<u16>(sk, koff!(sock_type)).unwrap_or(0) as u32,
                protocol,
            ]
        }
    } else {
        asked
    };
    if !raw_socket::reported(made[0], made[1], made[2]) {
        return;
    }
    let Some((task, _)) = scope::check_at(kind::RAW_SOCKET, regs) else {
        return;
    };
    let ret = ret as i32;
    emit::<RawSocketRecord>(kind::RAW_SOCKET, task, |rec| unsafe {
        (*rec).family = made[0];
        (*rec).sock_type = made[1] & raw_socket::TYPE_MASK;
        (*rec).protocol = made[2];
        (*rec).ret = ret;
    });
}
