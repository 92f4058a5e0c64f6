//! `vigil anomalies`: fleet-wide anomalies from the baselines in ClickHouse.

use std::path::PathBuf;

use vigil::store::anomalies::{AnomalyParams, QUERIES};

use super::{load_config, now_ns, print_json, runtime, time_arg, CliError, CliResult};

#[derive(clap::Args)]
pub struct AnomaliesArgs {
    /// Configuration file (its clickhouse: section is used).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Report what first happened since this time (RFC 3339, or a duration ago such as 1d).
    #[arg(long, default_value = "1d")]
    since: String,
    /// A user's first this-long of history only teaches (14d, 36h, ...).
    #[arg(long, default_value = "14d")]
    learning: String,
    /// Only these kinds (repeatable): new-binary, new-host, new-destination,
    /// new-sensitive-path, new-hour-of-week, volume, peer-unique-binary.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Volume: a day above this many times the user's daily mean ...
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// ... and above this many bytes ...
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    min_bytes: u64,
    /// ... with at least this many earlier active days.
    #[arg(long, default_value_t = 3)]
    min_days: u32,
    /// Print the queries (to run in clickhouse-client or Grafana) instead of running them.
    #[arg(long)]
    sql: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

pub fn run(a: AnomaliesArgs) -> CliResult {
    if let Some(k) = a
        .kinds
        .iter()
        .find(|k| !QUERIES.iter().any(|q| q.kind == *k))
    {
        let known: Vec<&str> = QUERIES.iter().map(|q| q.kind).collect();
        return Err(CliError::bad(
            "--kind",
            format!(
                "{}: not one of {}",
                vigil::present::terminal_str(k),
                known.join(", ")
            ),
        ));
    }
    if a.sql {
        for q in QUERIES {
            if a.kinds.is_empty() || a.kinds.iter().any(|k| k == q.kind) {
                println!("-- {}: {}\n{};\n", q.kind, q.about, q.sql);
            }
        }
        return Ok(());
    }
    if !(a.factor.is_finite() && a.factor >= 1.0) {
        return Err(CliError::bad(
            "--factor",
            format!("{} must be a number of at least 1", a.factor),
        ));
    }
    let now = now_ns();
    let learning_ns = humantime::parse_duration(&a.learning)
        .map_err(|e| {
            CliError::bad(
                "--learning",
                format!("{}: {e}", vigil::present::terminal_str(&a.learning)),
            )
        })?
        .as_nanos()
        .min(i64::MAX as u128) as i64;
    let params = AnomalyParams {
        since_ns: time_arg("--since", &a.since, now)?,
        learning_ns,
        factor: a.factor,
        min_bytes: a.min_bytes,
        min_days: a.min_days,
    };
    let cfg = load_config(a.config.as_deref())?;
    if cfg.clickhouse.url.is_none() {
        return Err(CliError::NotConfigured(
            "fleet-wide anomalies are queried in ClickHouse: set clickhouse.url \
             (on a single host the daemon scores its own baselines as anomaly-* alerts)",
        ));
    }
    let rows = runtime()?.block_on(vigil::store::anomalies::run(
        &cfg.clickhouse,
        &a.kinds,
        &params,
    ))?;
    if a.json {
        return print_json(&rows);
    }
    println!(
        "{:<30}  {:<16} {:<20} {:<40} DETAIL",
        "FIRST SEEN", "USER", "KIND", "VALUE"
    );
    for r in rows {
        println!(
            "{:<30}  {:<16} {:<20} {:<40} {}",
            vigil::decode::rfc3339(r.first_seen),
            vigil::present::terminal_str(&r.user),
            r.kind,
            vigil::present::terminal_str(&r.value),
            vigil::present::terminal_str(&r.detail)
        );
    }
    Ok(())
}
