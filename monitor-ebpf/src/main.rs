//! Vigil's kernel programs.
//!
//! One module per event source; every program asks [`scope::check`] first, so processes outside the
//! monitored sessions pay one policy lookup, one task read and one per-CPU counter increment, and
//! emit nothing. Records follow the schema in `vigil-common`.
#![no_std]
#![no_main]
// atomic_xadd: the bpf target has no core::sync::atomic (max atomic width 0), but the instruction
// set has atomic add, which the intrinsic lowers to.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod compat;
mod connect;
mod emit;
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
