//! Everything that touches the kernel: checks at start, layouts found at run time (BTF member
//! offsets, tracepoint record formats), and loading and attaching the programs.

pub mod btf;
pub mod layout;
pub mod links;
pub mod loader;
pub mod respond;
pub mod tracefs;

#[cfg(test)]
mod stack_budget;

use std::path::PathBuf;

pub use loader::{KernelMonitor, LoadOptions, SysExitHook};

/// Why the kernel side cannot start, naming what is missing.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("vigil must run as root to load eBPF programs (effective uid is {euid}); run it with sudo or as a privileged service")]
    NotRoot { euid: u32 },
    #[error("the kernel exposes no BTF at {path} ({source}); Vigil needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel's BTF could not be read: {0}")]
    BadBtf(#[from] btf::BtfError),
    #[error("tracefs is not available: {detail}. Mount it with `mount -t tracefs tracefs /sys/kernel/tracing`")]
    NoTracefs { detail: String },
    #[error("required tracepoint {tracepoint} is unusable: {detail}")]
    MissingTracepoint { tracepoint: String, detail: String },
    #[error("kernel struct layout: {0}")]
    Layout(String),
}

/// Checks that we can load programs at all, before doing any work.
pub fn check_root() -> Result<(), PreflightError> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(PreflightError::NotRoot { euid });
    }
    Ok(())
}
