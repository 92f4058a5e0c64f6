//! `cargo xtask`: set-up, build, run, test and benchmark tasks for Vigil.
//!
//! Every command runs `setup` first, which installs what a fresh machine lacks and is a fast
//! no-op when everything is there.

mod bench;
mod deploy;
mod peers;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Vigil development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the nightly rust-src and bpf-linker (into .tools/) if missing.
    Setup,
    /// Build the daemon (with its kernel programs) and the test helpers, release profile.
    Build,
    /// Build, then run the daemon on the embedded default configuration (Ctrl-C to stop).
    /// Arguments after `--` go to `vigil run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lint (fmt, clippy) and run the whole test suite, including the root-only kernel tests.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// fmt and clippy only.
    Lint,
    /// Check deploy/ offline: render the Helm chart, validate every manifest against the
    /// Kubernetes schemas, check the rendered daemon configuration, the systemd unit, the
    /// Dockerfile and the Grafana dashboard.
    DeployCheck {
        /// Regenerate deploy/kubernetes/vigil.yaml from the chart.
        #[arg(long)]
        write: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A cargo command in the workspace, with .tools/bpf-linker on PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd.env("PATH", setup::path_with_tools());
    cmd
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

const BUILD_ARGS: [&str; 7] = [
    "build",
    "--release",
    "-p",
    "vigil",
    "-p",
    "vigil-e2e",
    "--bins",
];

pub fn build() -> Result<()> {
    run(cargo().args(BUILD_ARGS))
}

/// A release binary of the workspace, where cargo puts it (`CARGO_TARGET_DIR` when set).
pub fn release_bin(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("release")
        .join(name)
}

pub fn vigil_bin() -> PathBuf {
    release_bin("vigil")
}

fn lint() -> Result<()> {
    check_format()?;
    lint_kernel_crate()?;
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// `cargo fmt --check` of the workspace and of the kernel crate, which is not a workspace
/// member (`--all` does not reach it). The kernel crate's two roots `include!` `programs.rs`,
/// whose modules `cargo fmt` therefore never sees: rustfmt is given that file itself.
fn check_format() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "fmt",
        "--manifest-path",
        "monitor-ebpf/Cargo.toml",
        "--check",
    ]))?;
    run(Command::new("rustfmt")
        .current_dir(workspace())
        .env("PATH", setup::path_with_tools())
        .args([
            "--check",
            "--edition",
            "2021",
            "monitor-ebpf/src/programs.rs",
        ]))
}

/// The kernel crate is no_std for the bpf target: it is linted there, with the nightly.
fn lint_kernel_crate() -> Result<()> {
    let mut nightly = Command::new("rustup");
    nightly
        .current_dir(workspace().join("monitor-ebpf"))
        .env("PATH", setup::path_with_tools())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["run", "nightly", "cargo", "clippy", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]);
    run(&mut nightly)
}

/// How long each step of a task took, printed as it goes and once more at the end: CI's time
/// budget is watched by step, not guessed from the total.
struct Steps {
    started: std::time::Instant,
    last: std::time::Instant,
    done: Vec<(&'static str, std::time::Duration)>,
}

impl Steps {
    fn new() -> Steps {
        let now = std::time::Instant::now();
        Steps {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    fn finished(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        let took = now - self.last;
        self.last = now;
        eprintln!("xtask: {step} took {:.0} s", took.as_secs_f64());
        self.done.push((step, took));
    }

    fn summary(&self) {
        let steps: Vec<String> = self
            .done
            .iter()
            .map(|(step, took)| format!("{step} {:.0} s", took.as_secs_f64()))
            .collect();
        eprintln!(
            "xtask: {} in {:.0} s",
            steps.join(", "),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Lints the workspace's crates while they are compiled for the tests, instead of in a check
/// build of their own: clippy-driver as the workspace's compiler wrapper with `-D warnings`
/// handed over the way `cargo clippy` hands it (`CLIPPY_ARGS`, `__CLIPPY_HACKERY__`-separated).
/// `cargo clippy --all-targets` compiled every dependency a second time in check mode, which was
/// a sixth of CI's time. The builds below compile lib, bins and every test target of each crate,
/// which is what `--all-targets` lints (there are no benches or examples). Dependencies are not
/// linted either way; clippy-driver leaves codegen to rustc, so the binaries the end-to-end tests
/// run behave as the ones `cargo xtask build` makes.
struct Linted(Option<PathBuf>);

impl Linted {
    fn new(lint: bool) -> Result<Linted> {
        if !lint {
            return Ok(Linted(None));
        }
        // The clippy-driver of the toolchain whose cargo runs this task.
        let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        let beside = cargo.with_file_name("clippy-driver");
        let driver = if beside.is_file() {
            beside
        } else {
            let out = Command::new("rustup")
                .args(["which", "clippy-driver"])
                .output()
                .context("cannot run `rustup which clippy-driver`")?;
            if !out.status.success() {
                bail!("no clippy-driver: `rustup component add clippy`");
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        Ok(Linted(Some(driver)))
    }

    fn cargo(&self) -> Command {
        let mut cmd = cargo();
        if let Some(driver) = &self.0 {
            cmd.env("RUSTC_WORKSPACE_WRAPPER", driver);
            cmd.env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
        }
        cmd
    }
}

fn test(filter: Option<String>, no_lint: bool) -> Result<()> {
    let mut steps = Steps::new();
    if !no_lint {
        check_format()?;
        lint_kernel_crate()?;
        steps.finished("fmt and kernel crate lint");
    }
    let linted = Linted::new(!no_lint)?;
    run(linted.cargo().args(BUILD_ARGS))?;
    steps.finished(if no_lint { "build" } else { "build and clippy" });
    // Unit and property tests of every crate, then the end-to-end tests on the real kernel, one
    // at a time: each starts its own daemon, and the loss and detach checks want the host quiet.
    let mut unit = linted.cargo();
    unit.args(["test", "--release", "--workspace", "--exclude", "vigil-e2e"]);
    if let Some(f) = &filter {
        unit.arg(f);
    }
    run(&mut unit)?;
    steps.finished("unit tests");
    // The ClickHouse-compatible endpoint over chdb, checked with the official Python client.
    let mut pytest = Command::new(setup::python());
    pytest
        .current_dir(workspace())
        .args(["-m", "pytest", "-q", "tests/clickhouse"]);
    if let Some(f) = &filter {
        pytest.args(["-k", f]);
    }
    let status = pytest.status().context("cannot start pytest")?;
    // Exit 5 is "no test selected", which a filter for Rust tests makes normal.
    if !(status.success() || filter.is_some() && status.code() == Some(5)) {
        bail!("{pytest:?} failed: {status}");
    }
    steps.finished("endpoint tests");
    // deploy/: the chart, the manifests, the rendered configuration, unit, image, dashboard.
    if filter.is_none() {
        deploy::check(false)?;
        steps.finished("deploy check");
    }
    let mut e2e = linted.cargo();
    e2e.args(["test", "--release", "-p", "vigil-e2e"]);
    if let Some(f) = &filter {
        e2e.arg(f);
    }
    e2e.args(["--", "--test-threads=1"]);
    e2e.env("VIGIL_BIN", vigil_bin());
    e2e.env("VIGIL_PYTHON", setup::python());
    run(&mut e2e)?;
    steps.finished("end-to-end tests");
    steps.summary();
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Each task installs what it needs: building needs the toolchain only.
    let setup_started = std::time::Instant::now();
    match cli.command {
        Task::Build | Task::Run { .. } | Task::Lint => setup::setup_build()?,
        _ => setup::setup()?,
    }
    eprintln!(
        "xtask: setup took {:.0} s",
        setup_started.elapsed().as_secs_f64()
    );
    match cli.command {
        Task::Setup => Ok(()),
        Task::Build => build(),
        Task::DeployCheck { write } => {
            build()?;
            deploy::check(write)
        }
        Task::Run { args } => {
            build()?;
            let mut cmd = Command::new(vigil_bin());
            cmd.arg("run").args(args);
            // Become the daemon, so Ctrl-C reaches it alone and the shell waits for its drain.
            use std::os::unix::process::CommandExt as _;
            let err = cmd.exec();
            Err(err).with_context(|| format!("cannot start {}", vigil_bin().display()))
        }
        Task::Test { filter, no_lint } => test(filter, no_lint),
        Task::Lint => lint(),
        Task::Bench { which } => {
            build()?;
            bench::run(which)
        }
    }
}
