//! `vigil run`: the daemon.

use std::{path::PathBuf, process::ExitCode};

use vigil::{
    config::{Config, LogFormat},
    pipeline::{run_daemon, RunOptions},
};

use super::load_config;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Configuration file (YAML), layered over the embedded default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Also append events to this file (overrides output.file).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Do not write events to standard output.
    #[arg(long)]
    no_stdout: bool,
    /// Write the daemon's pid to this file once capture has started.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colour only for a person at a terminal, never into files and journals.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The daemon's own exit status: 2 for a configuration it refuses, 1 for a failure once
/// running (systemd and the kubelet restart it on either).
pub fn run(a: RunArgs) -> ExitCode {
    let mut config = match load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil: {e}");
            return ExitCode::from(2);
        }
    };
    if a.output.is_some() {
        config.output.file = a.output;
    }
    if a.no_stdout {
        config.output.stdout = false;
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_daemon(
        config,
        RunOptions {
            ready_file: a.ready_file,
        },
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}
