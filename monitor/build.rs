//! Builds the kernel programs (`monitor-ebpf`) for bpfel-unknown-none with the nightly toolchain,
//! the aya-template way; the object is embedded in the `vigil` binary.

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("monitor/ has a parent")?;
    let ebpf_dir = workspace.join("monitor-ebpf");

    // `cargo xtask setup` installs bpf-linker under .tools/; make it visible to the nested build
    // so a plain `cargo build` works too once setup has run.
    let linker_bin = workspace.join(".tools/bpf-linker/bin");
    if linker_bin.join("bpf-linker").exists() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![linker_bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        let joined = std::env::join_paths(dirs).context("PATH with .tools/bpf-linker/bin")?;
        std::env::set_var("PATH", joined);
        println!(
            "cargo:rerun-if-changed={}",
            linker_bin.join("bpf-linker").display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("common/src").display()
    );

    let root_dir = ebpf_dir
        .to_str()
        .context("monitor-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
