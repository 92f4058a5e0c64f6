//! `vigil db migrate` and `vigil spool stats`: the stores' own tools.

use std::path::PathBuf;

use clap::Subcommand;

use super::{load_config, print_json, runtime, CliError, CliResult, StoreArgs};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or update the ClickHouse schema (versioned migrations; the daemon also does this
    /// at start), and set the fleet-wide sensitive paths from the configuration.
    Migrate {
        /// Configuration file (its clickhouse: section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum SpoolCommand {
    /// What the spool holds: sequence range, events, and what was lost where.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn db(command: DbCommand) -> CliResult {
    let DbCommand::Migrate { config } = command;
    let config = load_config(config.as_deref())?;
    if config.clickhouse.url.is_none() {
        return Err(CliError::NotConfigured(
            "clickhouse.url is not set in the configuration: nothing to migrate",
        ));
    }
    eprintln!(
        "migrating ClickHouse database {} ...",
        config.clickhouse.database
    );
    let progress = vigil::progress::Progress::new("migrate");
    let applied = runtime()?.block_on(vigil::store::migrate_with_progress(
        &config.clickhouse,
        &config.detection.baseline.sensitive_paths,
        vigil::store::Migrator::Administrator,
        &mut |step, of, name| progress.note(&format!("{step}/{of} {name}")),
    ))?;
    progress.done();
    if applied.is_empty() {
        println!("schema up to date");
    } else {
        println!("applied migrations {applied:?}");
    }
    Ok(())
}

pub fn spool(command: SpoolCommand) -> CliResult {
    let SpoolCommand::Stats { store } = command;
    let dir = match &store.spool {
        Some(dir) => dir.clone(),
        None => load_config(store.config.as_deref())?.spool.dir,
    };
    let stats = vigil::query::spool_stats(&dir).map_err(vigil::store::reader::ReadError::from)?;
    print_json(&stats)
}
