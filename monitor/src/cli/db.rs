//! `vigil db migrate` and `vigil spool stats`: the stores' own tools.

use std::path::PathBuf;

use clap::Subcommand;

use super::{load_config, print_json, runtime, CliError, CliResult, StoreArgs};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or update the ClickHouse schema (versioned migrations), and set retention and the
    /// fleet-wide sensitive paths from the configuration. The administrator's tool, with the
    /// administrator's credentials: daemons never change the schema.
    Migrate {
        /// Configuration file (its clickhouse: section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the SQL that creates the daemons' insert-only user and an auditors' read-only
    /// user with their grants (or, with --json, the grants alone).
    Grants {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The daemons' user.
        #[arg(long, default_value = "vigil_writer")]
        writer: String,
        /// The auditors' (read-only) user.
        #[arg(long, default_value = "vigil_auditor")]
        auditor: String,
        #[arg(long)]
        json: bool,
    },
    /// Register a host's public key (`vigil key show` on the host prints it): what `vigil
    /// verify` checks the host's checkpoints against.
    RegisterKey {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        host: String,
        /// `ed25519:<base64>`.
        key: String,
        /// Why (a ticket, who checked it).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List the spool records ClickHouse holds in quarantine: shipped, but not decodable as
    /// events (a newer daemon wrote them before a rollback, or they are damaged), with why.
    Quarantine {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this host's.
        #[arg(long)]
        host: Option<String>,
        /// JSON, each record with its bytes (base64).
        #[arg(long)]
        json: bool,
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
    let config = match command {
        DbCommand::Migrate { config } => config,
        DbCommand::Quarantine { config, host, json } => {
            let config = load_config(config.as_deref())?;
            if config.clickhouse.url.is_none() {
                return Err(CliError::NotConfigured(
                    "clickhouse.url is not set in the configuration: no quarantine to read",
                ));
            }
            let rows = runtime()?.block_on(vigil::store::quarantined(
                &config.clickhouse,
                host.as_deref(),
            ))?;
            if json {
                return print_json(&rows);
            }
            println!(
                "{:<24} {:<20} {:>10} {:>8}  REASON",
                "RECEIVED", "HOST", "SEQ", "BYTES"
            );
            for r in &rows {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&r.payload)
                    .map(|b| b.len().to_string())
                    .unwrap_or_else(|_| "?".into());
                // Host and reason come from a monitored host's records: escaped.
                let line = format!(
                    "{:<24} {:<20} {:>10} {:>8}  {}",
                    vigil::decode::rfc3339(r.received_ms.saturating_mul(1_000_000)),
                    vigil::present::terminal_str(&r.host),
                    r.seq,
                    bytes,
                    vigil::present::terminal_str(&r.reason)
                );
                println!("{line}");
            }
            eprintln!("{} records in quarantine", rows.len());
            return Ok(());
        }
        DbCommand::Grants {
            config,
            writer,
            auditor,
            json,
        } => {
            let config = load_config(config.as_deref())?;
            let schema = config
                .clickhouse
                .schema(&config.detection.baseline.sensitive_paths);
            if json {
                return print_json(&schema.daemon_grants());
            }
            for stmt in schema.grants_sql(&writer, &auditor) {
                println!("{stmt};");
            }
            return Ok(());
        }
        DbCommand::RegisterKey {
            config,
            host,
            key,
            note,
        } => {
            let config = load_config(config.as_deref())?;
            let key = vigil::trail::PublicKey::parse(&key).map_err(|e| CliError::BadArgument {
                flag: "KEY".into(),
                problem: e.to_string(),
            })?;
            if config.clickhouse.url.is_none() {
                return Err(CliError::NotConfigured(
                    "clickhouse.url is not set in the configuration: nowhere to register",
                ));
            }
            runtime()?.block_on(vigil::store::register_key(
                &config.clickhouse,
                &host,
                &key,
                &note,
            ))?;
            println!("registered {key} for host {host}");
            return Ok(());
        }
    };
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
