//! `vigil`: the daemon and its command-line tools.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vigil::{
    config::{Config, LogFormat},
    pipeline::{run_daemon, RunOptions},
};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Kernel-level privileged-session monitor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel programs and stream events (JSON Lines) until Ctrl-C.
    Run {
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
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report the first problem with its location.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            output,
            no_stdout,
            ready_file,
        } => {
            let mut config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("vigil: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::embedded(),
            };
            if output.is_some() {
                config.output.file = output;
            }
            if no_stdout {
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
            match runtime.block_on(run_daemon(config, RunOptions { ready_file })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { command } => match command {
            ConfigCommand::Check { file } => match Config::load(&file) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil: {e}");
                    ExitCode::from(2)
                }
            },
            ConfigCommand::Default => {
                print!("{}", vigil::config::DEFAULT_CONFIG);
                ExitCode::SUCCESS
            }
        },
    }
}
