//! The `entry-check` object: every program of the daemon's object (src/main.rs) and the twins
//! of its fexit programs (src/entry_twins.rs), for the unit test that puts them through the
//! verifier where the kernel refuses fexit. Never embedded in the daemon.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod compat;
mod connect;
mod emit;
mod entry_twins;
mod exec;
mod exit;
mod fold;
mod fork;
mod io_uring;
mod kernel;
mod maps;
mod open;
mod privs;
mod read;
mod respond;
mod scope;
mod syscalls;
mod tail;
mod tty;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: every index is masked or checked before use.
    loop {}
}

// bpf_probe_read_kernel and bpf_send_signal are GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
