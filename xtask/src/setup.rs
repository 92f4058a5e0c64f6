//! Installs what a fresh machine of the project's kind lacks, following ../shared/TOOLCHAIN.md:
//! the nightly's rust-src (for -Z build-std=core) and bpf-linker built against the nightly's own
//! LLVM, under the git-ignored .tools/. Each step checks first, so a ready machine pays a few
//! milliseconds.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace;

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

fn tools_bin() -> PathBuf {
    workspace().join(".tools/bpf-linker/bin")
}

/// PATH with .tools/bpf-linker/bin first.
pub fn path_with_tools() -> OsString {
    let mut dirs = vec![tools_bin()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything: the build tools, then what the tests and benchmarks use.
pub fn setup() -> Result<()> {
    setup_build()?;
    ensure_python_venv()?;
    ensure_debian_packages(DEBIAN_PACKAGES)?;
    Ok(())
}

/// What building the daemon needs, and nothing else (a container image build runs only this).
pub fn setup_build() -> Result<()> {
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()
}

/// Debian packages the end-to-end tests use: a real sshd and sudo for login sessions.
const DEBIAN_PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "sudo",
    "cron",
    "chromium",
    "curl",
    // The detection scenarios attach a debugger (cargo xtask bench detect).
    "gdb",
    // setcap, for the file-capability scenarios.
    "libcap2-bin",
    // Certificates for the HTTPS endpoint of the Kubernetes API lookup test.
    "openssl",
    // The detection bench's interactive corpus (and its slice in the suite): what people run on
    // a terminal. kubectl is used where it is packaged, a stand-in otherwise.
    "tmux",
    "vim",
    "less",
    "man-db",
    "procps",
    "git",
];

/// The peers the overhead benchmark measures Vigil against (installed by the bench, not by
/// setup: the test suite does not need them).
pub const PEER_PACKAGES: &[&str] = &["auditd", "bpftrace"];

/// Installs whichever of `packages` is missing (nothing to do, and fast, when all are there).
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing Debian packages {missing:?}");
    crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The project's Python interpreter (a venv under .tools/ with tests/requirements.txt).
pub fn python() -> PathBuf {
    workspace().join(".tools/venv/bin/python")
}

/// A program installed in that venv.
pub fn venv_bin(name: &str) -> PathBuf {
    workspace().join(".tools/venv/bin").join(name)
}

/// A venv with the pinned Python packages (chdb for a real ClickHouse engine in tests). The
/// requirements file is copied into the venv once installed; an identical copy means done.
fn ensure_python_venv() -> Result<()> {
    let requirements = workspace().join("tests/requirements.txt");
    let wanted = std::fs::read(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let venv = workspace().join(".tools/venv");
    let stamp = venv.join("vigil-requirements.txt");
    if python().exists() && std::fs::read(&stamp).ok().as_deref() == Some(&wanted[..]) {
        return Ok(());
    }
    eprintln!("xtask setup: installing the Python test packages into .tools/venv");
    if !python().exists() {
        crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("python3 -m venv failed (Debian: apt-get install python3-venv)")?;
    }
    crate::run(
        Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    std::fs::write(&stamp, &wanted)?;
    Ok(())
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
        .context("the nightly toolchain is needed to build the kernel programs (rustup toolchain install nightly)")?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    crate::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
}

fn ensure_bpf_linker() -> Result<()> {
    let linker = tools_bin().join("bpf-linker");
    if let Ok(out) = Command::new(&linker)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        {
            return Ok(());
        }
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM (about a minute)");
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = sysroot.join("lib");
    let llvm_so = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so"))
        .with_context(|| format!("the nightly ships no libLLVM.so in {}", lib.display()))?;
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV reports no LLVM version")?
        .to_string();

    // bpf-linker's build looks for lib/libLLVM.so under LLVM_PREFIX: point one at the nightly's.
    let prefix = workspace().join(".tools/llvm-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(prefix.join("lib"))?;
    std::os::unix::fs::symlink(lib.join(&llvm_so), prefix.join("lib/libLLVM.so"))
        .context("cannot link the nightly's libLLVM")?;
    let root = workspace().join(".tools/bpf-linker");
    let result = crate::run(
        Command::new("cargo")
            .args([
                "+stable",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{llvm_major}")])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            .env(
                "RUSTFLAGS",
                format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
            ),
    );
    let _ = std::fs::remove_dir_all(&prefix);
    result
}
