//! Hidden bodies of `cargo xtask bench ingest` and `bench replay`.

use std::path::PathBuf;

use super::{load_config, CliError, CliResult};

#[derive(clap::Args)]
pub struct BenchIngestArgs {
    #[arg(long)]
    spool: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Spool rounds, the median reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Configuration whose clickhouse: section to ship to (optional).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BenchSessionArgs {
    #[arg(long)]
    spool: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    events: u64,
}

#[derive(clap::Args)]
pub struct BenchFloorArgs {
    /// Written once the program is attached.
    #[arg(long)]
    ready_file: PathBuf,
}

pub fn floor(a: BenchFloorArgs) -> CliResult {
    let program = vigil::kernel::loader::FloorProgram::attach()
        .map_err(|e| CliError::Daemon(anyhow::Error::new(e)))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| CliError::Daemon(anyhow::Error::new(e)))?;
    }
    // "<pid> <hook> <datagram hooks>", whole or not at all: the bench reads the hooks as soon as
    // the file exists.
    let partial = a.ready_file.with_extension("partial");
    std::fs::write(
        &partial,
        format!(
            "{} {} {}\n",
            std::process::id(),
            program.hook,
            program.datagram_hooks.join(",")
        ),
    )
    .and_then(|()| std::fs::rename(&partial, &a.ready_file))
    .map_err(|e| CliError::Daemon(anyhow::Error::new(e)))?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(program);
    Ok(())
}

pub fn ingest(a: BenchIngestArgs) -> CliResult {
    let ch = match &a.config {
        Some(path) => Some(load_config(Some(path))?.clickhouse),
        None => None,
    };
    // The daemon's shape: two workers, as the shipper runs in production.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let r = rt
        .block_on(vigil::bench::ingest(&a.spool, a.events, a.rounds, ch))
        .map_err(CliError::Daemon)?;
    println!(
        "{}",
        serde_json::to_string(&r).map_err(|e| CliError::Daemon(e.into()))?
    );
    Ok(())
}

pub fn session(a: BenchSessionArgs) -> CliResult {
    let n = vigil::bench::write_replay_session(&a.spool, a.events).map_err(CliError::Daemon)?;
    println!("session {} with {n} events", vigil::bench::REPLAY_SESSION);
    Ok(())
}
