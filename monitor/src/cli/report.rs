//! `vigil report`: the privileged sessions of a period as audit evidence.

use std::{collections::BTreeSet, path::PathBuf};

use vigil::query::SessionFilter;

use super::{now_ns, time_arg, warn_damage, CliError, CliResult, StoreArgs};

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Start of the period (RFC 3339, or a duration ago such as 7d).
    #[arg(long)]
    since: String,
    /// End of the period (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only sessions on this host.
    #[arg(long)]
    host: Option<String>,
    /// Write the report here (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The report's data as JSON instead of HTML.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ReportArgs) -> CliResult {
    let now = now_ns();
    let since_ns = time_arg("--since", &a.since, now)?;
    let until_ns = match &a.until {
        Some(t) => time_arg("--until", t, now)?,
        None => now,
    };
    super::check_order(since_ns, until_ns)?;
    let filter = SessionFilter {
        host: a.host.clone(),
        since_ns: Some(since_ns),
        until_ns: Some(until_ns),
        ..Default::default()
    };
    let progress = vigil::progress::Progress::new("report");
    let store = a.store.open()?;
    progress.note(&format!("listing sessions in {}", store.source()));
    let (all, mut damage) = store.sessions(&filter)?;
    // Evidence keyed by the whole session key: ids repeat across hosts and boots.
    let keys: BTreeSet<_> = all
        .iter()
        .filter(|s| vigil::report::is_privileged(s))
        .map(|s| s.session_key())
        .collect();
    progress.note(&format!("reading {} privileged sessions", keys.len()));
    let (mut events, lost) = store.events_of(&keys)?;
    // The spool's second pass meets the same damage as the first: report each once.
    for d in lost {
        if !damage.contains(&d) {
            damage.push(d);
        }
    }
    warn_damage(&damage);
    let sessions_in_period = all.len();
    let privileged = all
        .into_iter()
        .filter(vigil::report::is_privileged)
        .map(|s| {
            let ev = events.remove(&s.session_key()).unwrap_or_default();
            vigil::report::evidence(s, &ev)
        })
        .collect();
    let report = vigil::report::Report {
        since: vigil::decode::rfc3339(since_ns),
        until: vigil::decode::rfc3339(until_ns),
        generated: vigil::decode::rfc3339(now),
        source: store.source(),
        sessions_in_period,
        privileged,
        warnings: damage.iter().map(|d| d.to_string()).collect(),
    };
    let body = if a.json {
        serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::output("report")(std::io::Error::other(e)))?
    } else {
        vigil::report::render_html(&report)
    };
    progress.done();
    match &a.output {
        Some(path) => {
            std::fs::write(path, body).map_err(|source| CliError::WriteFile {
                path: path.clone(),
                source,
            })?;
            eprintln!(
                "vigil: report of {} privileged sessions written to {}",
                report.privileged.len(),
                path.display()
            );
        }
        None => println!("{body}"),
    }
    Ok(())
}
