//! `vigil verify`: is the trail what the hosts wrote? And `vigil key`: this host's public key.

use std::path::PathBuf;

use vigil::trail::{
    verify::{self, Report, Trust},
    HostKey, PublicKey,
};

use super::{load_config, now_ns, print_json, runtime, CliError, CliResult};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Configuration file (its spool.dir, clickhouse: and integrity: sections are used).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Verify this spool directory (the default when ClickHouse is not configured).
    #[arg(long, conflicts_with = "clickhouse")]
    spool: Option<PathBuf>,
    /// Verify what ClickHouse holds, for every host (or --host).
    #[arg(long)]
    clickhouse: bool,
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Exit status: 0 when the trail verifies, 1 when something was found, 2 on errors.
pub fn run(args: VerifyArgs) -> Result<bool, CliError> {
    let config = load_config(args.config.as_deref())?;
    let mut keys: std::collections::BTreeMap<String, Vec<PublicKey>> = Default::default();
    for (host, key) in &config.integrity.trusted_keys {
        // Checked when the configuration was loaded.
        if let Ok(k) = PublicKey::parse(key) {
            keys.entry(host.clone()).or_default().push(k);
        }
    }
    let use_clickhouse =
        args.clickhouse || (args.spool.is_none() && config.clickhouse.url.is_some());
    let mut report = Report::default();
    let mut notes = Vec::new();
    if use_clickhouse {
        if config.clickhouse.url.is_none() {
            return Err(CliError::NotConfigured(
                "--clickhouse: clickhouse.url is not set in the configuration",
            ));
        }
        let ch = &config.clickhouse;
        let rt = runtime()?;
        for (host, registered) in rt.block_on(vigil::store::host_keys(ch))? {
            for key in registered {
                match PublicKey::parse(&key) {
                    Ok(k) => keys.entry(host.clone()).or_default().push(k),
                    Err(e) => notes.push(format!("host_keys: {host}: {e}")),
                }
            }
        }
        let trust = trust(&config, keys);
        let hosts = match &args.host {
            Some(h) => vec![h.clone()],
            None => rt.block_on(vigil::store::trail_hosts(ch))?,
        };
        for host in hosts {
            let trail = rt.block_on(vigil::store::host_trail(ch, &host))?;
            verify::verify_host(&host, trail, &trust, &mut report);
        }
    } else {
        let dir = args
            .spool
            .clone()
            .unwrap_or_else(|| config.spool.dir.clone());
        let trails = verify::spool_trails(&dir).map_err(vigil::store::reader::ReadError::from)?;
        // A spool read where it was written may be checked against the key beside it when no
        // key is pinned: that proves the spool agrees with this host's key, no more.
        let local = config.integrity.key_path(&config.spool.dir);
        if keys.is_empty() {
            if let Ok(key) = HostKey::load_existing(&local) {
                let host = vigil::event::Origin::this_process().host.to_string();
                notes.push(format!(
                    "no key pinned (integrity.trusted_keys) or registered: checked against this \
                     host's own key file {}, which proves consistency with it, not authenticity",
                    local.display()
                ));
                keys.entry(host).or_default().push(key.public());
            }
        }
        let trust = trust(&config, keys);
        for (host, trail) in trails {
            if args.host.as_ref().is_some_and(|h| h != &host) {
                continue;
            }
            verify::verify_host(&host, trail, &trust, &mut report);
        }
    }
    if args.json {
        print_json(
            &serde_json::json!({ "report": report, "notes": notes, "clean": report.clean() }),
        )?;
    } else {
        for n in &notes {
            eprintln!("note: {n}");
        }
        print!("{}", verify::render(&report));
    }
    Ok(report.clean())
}

fn trust(
    config: &vigil::config::Config,
    keys: std::collections::BTreeMap<String, Vec<PublicKey>>,
) -> Trust {
    Trust {
        keys,
        now_ns: now_ns(),
        silent_after_ns: config.integrity.silent_after_ms as i64 * 1_000_000,
    }
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Print this host's public key (made at the daemon's first start), to register it.
    Show {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub fn key(command: KeyCommand) -> CliResult {
    let KeyCommand::Show { config } = command;
    let config = load_config(config.as_deref())?;
    let path = config.integrity.key_path(&config.spool.dir);
    let key = HostKey::load_existing(&path).map_err(|e| CliError::ReadFile {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    println!("{}", key.public());
    Ok(())
}
