//! `vigil baselines learn`: seed a host's behavioural baselines from recorded events, so a
//! daemon on a new or rebuilt host (or a bench's simulated weeks) does not start learning from
//! nothing. The events go through the daemon's own learning path.

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
};

use clap::Subcommand;
use vigil::{detect::baseline::Baselines, event::Event};

use super::{load_config, print_json, CliError, CliResult};

#[derive(Subcommand)]
pub enum BaselinesCommand {
    /// Learn from recorded events (JSON Lines, as the daemon's `output.file` writes them), in
    /// time order, into the configuration's baseline state. The daemon using that state must
    /// be stopped (it holds a lock on it). Events of other hosts are left out and counted.
    Learn {
        /// Configuration file (its detection.baseline and spool.dir are used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Event files (JSON Lines).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: BaselinesCommand) -> CliResult {
    match command {
        BaselinesCommand::Learn {
            config,
            files,
            json,
        } => learn(config.as_deref(), &files, json),
    }
}

/// Every event of `path`; a line that is not one is refused with its number (nothing is learnt
/// from a file that is only partly understood).
fn read_events(path: &Path, into: &mut Vec<Event>) -> CliResult {
    let read_err = |source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str::<Event>(&line).map_err(|e| {
            CliError::bad(
                "FILES",
                format!("{}:{}: not an event: {e}", path.display(), i + 1),
            )
        })?;
        into.push(event);
    }
    Ok(())
}

fn learn(config: Option<&Path>, files: &[PathBuf], json: bool) -> CliResult {
    let config = load_config(config)?;
    if !config.detection.baseline.enabled {
        return Err(CliError::NotConfigured(
            "detection.baseline.enabled is false: there are no baselines to learn into",
        ));
    }
    let mut events = Vec::new();
    for f in files {
        read_events(f, &mut events)?;
    }
    // Stable: events of one instant keep their recorded order.
    events.sort_by_key(|e| e.time_ns);
    let host = vigil::event::Origin::this_process().host.to_string();
    let mut baselines = Baselines::open(config.detection.baseline, &config.spool.dir, host)?;
    let learnt = baselines.learn_history(&events);
    baselines.save()?;
    if json {
        return print_json(&learnt);
    }
    println!(
        "learnt from {} events ({} of other hosts left out); {} profiles",
        learnt.events, learnt.other_hosts, learnt.profiles
    );
    Ok(())
}
