// The modules and items of a kernel object, shared by its two roots: `main.rs` (the daemon's
// object) and `entry_check.rs` (the tests' object, with the fexit programs' twins).

mod bpf;
mod compat;
mod connect;
mod emit;
mod exec;
mod exit;
mod fold;
mod fork;
mod io_uring;
mod kernel;
mod link;
mod maps;
mod open;
mod privs;
mod process_access;
mod read;
mod respond;
mod scope;
mod socket;
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
