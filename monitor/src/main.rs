//! `vigil`: the daemon and its command-line tools.

use std::{path::PathBuf, process::ExitCode};

mod rules_cli;

use clap::{Parser, Subcommand};
use vigil::{
    config::{Config, LogFormat},
    pipeline::{run_daemon, RunOptions},
    query::{self, parse_time, SessionFilter},
};

/// Exit status for a query: 0, or 2 with the message on stderr.
fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::from(2)
        }
    }
}

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
    /// List login sessions recorded in the spool, with what each did.
    Sessions {
        #[command(flatten)]
        store: StoreArgs,
        /// Only sessions of this login user (name or uid).
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this host.
        #[arg(long)]
        host: Option<String>,
        /// Only sessions active since this time (RFC 3339, or a duration ago such as 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only sessions started before this time.
        #[arg(long)]
        until: Option<String>,
        /// Only sessions of this person (name or email in the identity mapping).
        #[arg(long)]
        person: Option<String>,
        /// Only sessions of people in this peer group (identity mapping).
        #[arg(long)]
        peer_group: Option<String>,
        /// Only sessions whose risk score reached this (0-100).
        #[arg(long)]
        min_risk: Option<u32>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List alerts: which rule fired, when, in which session, why and on what evidence.
    Alerts {
        #[command(flatten)]
        store: StoreArgs,
        /// Only alerts of this login user (name or uid).
        #[arg(long)]
        user: Option<String>,
        /// Only alerts raised on this host.
        #[arg(long)]
        host: Option<String>,
        /// Only alerts of this session (session ids are per host: combine with --host in a
        /// fleet's ClickHouse).
        #[arg(long)]
        session: Option<u32>,
        /// Only alerts of this rule (its id).
        #[arg(long)]
        rule: Option<String>,
        /// Only alerts of this severity or higher.
        #[arg(long, value_enum)]
        min_severity: Option<vigil::detect::rules::Severity>,
        /// Only alerts since this time (RFC 3339, or a duration ago such as 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only alerts until this time.
        #[arg(long)]
        until: Option<String>,
        /// JSON output (each alert whole).
        #[arg(long)]
        json: bool,
    },
    /// Fleet-wide anomalies from the baselines in ClickHouse: first-seen binaries, hosts,
    /// destinations, sensitive paths and hours, read volume far above a user's norm, binaries
    /// unique in a peer group.
    Anomalies {
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
    },
    /// Show one session: its timeline of commands, files, connections and privilege changes,
    /// and its process tree.
    Session {
        #[command(flatten)]
        session: SessionRef,
        #[command(flatten)]
        store: StoreArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Play a session's terminal in real time (scaled by --speed), with what it did shown as
    /// markers. Recorded output is filtered so that it can only draw.
    Replay {
        #[command(flatten)]
        session: SessionRef,
        #[command(flatten)]
        store: StoreArgs,
        /// Playback speed factor (2 plays twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Pauses longer than this many seconds are shortened to it.
        #[arg(long, default_value_t = 2.0)]
        max_idle: f64,
        /// Print everything at once, without waiting.
        #[arg(long)]
        instant: bool,
        /// Do not show commands, files, connections and privilege changes as markers.
        #[arg(long)]
        no_markers: bool,
    },
    /// Export a session: asciicast v2 (plays in asciinema) or its full JSON timeline.
    Export {
        #[command(flatten)]
        session: SessionRef,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value = "asciicast")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// HTML report of the privileged sessions of a period (who, when, from where, what they ran
    /// as root, files, connections, how to replay each), for audit evidence.
    Report {
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
    },
    /// Ingest benchmark body (run by `cargo xtask bench ingest`).
    #[command(hide = true)]
    BenchIngest {
        #[arg(long)]
        spool: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Configuration whose clickhouse: section to ship to (optional).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay benchmark set-up (run by `cargo xtask bench replay`): one long session in a spool.
    #[command(hide = true)]
    BenchSession {
        #[arg(long)]
        spool: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
    },
    /// Spool tools.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// ClickHouse schema tools.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Detection rules: list those in force, check files, import Sigma rules.
    Rules {
        #[command(subcommand)]
        command: rules_cli::RulesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Which session: its id, and its host where the store holds several hosts' sessions.
#[derive(clap::Args, Clone)]
struct SessionRef {
    /// The session id, as `vigil sessions` lists it.
    id: u32,
    /// The session's host. Session ids are numbered per host: needed when ClickHouse holds a
    /// session with this id from several hosts.
    #[arg(long)]
    host: Option<String>,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Configuration file whose spool.dir to read.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Read this spool directory (overrides the configuration).
    #[arg(long)]
    spool: Option<PathBuf>,
}

/// Where queries read from.
enum Store {
    Spool(PathBuf),
    ClickHouse(Box<vigil::store::ClickHouseConfig>),
}

impl StoreArgs {
    fn config(&self) -> Result<Config, String> {
        match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string()),
            None => Config::from_env().map_err(|e| e.to_string()),
        }
    }

    /// ClickHouse when configured, unless --spool asks for a spool; the spool otherwise.
    fn store(&self) -> Result<Store, String> {
        if let Some(dir) = &self.spool {
            return Ok(Store::Spool(dir.clone()));
        }
        let config = self.config()?;
        Ok(match config.clickhouse.url {
            Some(_) => Store::ClickHouse(Box::new(config.clickhouse)),
            None => Store::Spool(config.spool.dir),
        })
    }
}

/// Prints `value` as pretty JSON on standard output (the `--json` form of the listings).
fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn resolve_user(arg: &str) -> Result<u32, String> {
    if let Ok(uid) = arg.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(arg) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named `{arg}` on this host")),
        Err(e) => Err(format!("cannot look up user `{arg}`: {e}")),
    }
}

/// `vigil sessions` arguments.
struct SessionsQuery {
    user: Option<String>,
    host: Option<String>,
    since: Option<String>,
    until: Option<String>,
    person: Option<String>,
    peer_group: Option<String>,
    min_risk: Option<u32>,
}

/// Where a session came from, for one table cell.
fn origin_text(s: &query::SessionSummary) -> String {
    let entry = s.entry.clone().unwrap_or_else(|| "?".into());
    match &s.ssh {
        Some(o) => format!("{entry} {}:{}", o.source_address, o.source_port),
        None => entry,
    }
}

fn ancestry_text(a: &[vigil::event::Ancestor]) -> String {
    a.iter()
        .map(|x| x.name.escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

fn run_sessions(store: &StoreArgs, q: SessionsQuery, json: bool) -> Result<(), String> {
    let now = vigil::decode::Clock::now().wall_ns(vigil::decode::Clock::mono_now_ns());
    let filter = SessionFilter {
        loginuid: q.user.as_deref().map(resolve_user).transpose()?,
        host: q.host,
        session: None,
        since_ns: q.since.map(|t| parse_time(&t, now)).transpose()?,
        until_ns: q.until.map(|t| parse_time(&t, now)).transpose()?,
        person: q.person,
        peer_group: q.peer_group,
        min_risk: q.min_risk,
    };
    let list = match store.store()? {
        Store::Spool(dir) => {
            let (list, damage) = query::sessions(&dir, &filter).map_err(|e| e.to_string())?;
            warn_damage(&damage);
            list
        }
        Store::ClickHouse(ch) => {
            block_on(vigil::store::sessions(&ch, &filter))?.map_err(|e| e.to_string())?
        }
    };
    if json {
        return print_json(&list);
    }
    println!(
        "{:>8}  {:<16} {:<12} {:<20} {:<26} {:<30} {:<30} {:>6} {:>6} {:>12} {:>5} {:>5}",
        "SESSION",
        "HOST",
        "USER",
        "PERSON",
        "ORIGIN",
        "FIRST",
        "LAST",
        "CMDS",
        "FILES",
        "BYTES READ",
        "CONN",
        "PRIV"
    );
    for s in list {
        let user = s.user.clone().unwrap_or_else(|| s.loginuid.to_string());
        let person = s
            .identity
            .as_ref()
            .map(|i| i.person.clone())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>8}  {:<16} {:<12} {:<20} {:<26} {:<30} {:<30} {:>6} {:>6} {:>12} {:>5} {:>5}{}",
            s.session,
            // Session ids are per host: the host says which one `vigil session --host` wants.
            s.host.as_deref().unwrap_or("-").escape_debug().to_string(),
            user,
            person,
            origin_text(&s),
            s.first,
            s.last,
            s.commands,
            s.files_opened,
            s.bytes_read,
            s.connections,
            s.privilege_changes,
            match (s.gained_root, s.risk) {
                (_, Some(r)) => format!("  RISK {r}: {}", s.risk_reasons.join("; ")),
                (true, None) => "  gained root".into(),
                (false, None) => String::new(),
            }
        );
    }
    Ok(())
}

fn run_alerts(store: &StoreArgs, filter: &query::AlertFilter, json: bool) -> Result<(), String> {
    let (alerts, damage) = match store.store()? {
        Store::Spool(dir) => query::alerts(&dir, filter).map_err(|e| e.to_string())?,
        Store::ClickHouse(ch) => {
            block_on(vigil::store::alerts(&ch, filter))?.map_err(|e| e.to_string())?
        }
    };
    warn_damage(&damage);
    if json {
        return print_json(&alerts);
    }
    println!(
        "{:<30}  {:<16} {:>8}  {:<12} {:<9} {:<10} {:>4}  {:<30} EVIDENCE",
        "TIME", "HOST", "SESSION", "USER", "SEVERITY", "TECHNIQUE", "RISK", "RULE"
    );
    for e in &alerts {
        let vigil::event::EventBody::Alert(a) = &e.body else {
            continue;
        };
        let user = e
            .process
            .login_user
            .clone()
            .or_else(|| e.process.loginuid.map(|u| u.to_string()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<30}  {:<16} {:>8}  {:<12} {:<9} {:<10} {:>4}  {:<30} {}",
            e.time,
            a.host.escape_debug().to_string(),
            e.process
                .sessionid
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            user,
            a.severity,
            a.technique,
            a.session_risk,
            a.rule,
            // The evidence quotes recorded data: keep control characters off the terminal.
            a.evidence.escape_debug()
        );
    }
    Ok(())
}

/// `vigil anomalies` arguments.
struct AnomaliesQuery {
    config: Option<PathBuf>,
    since: String,
    learning: String,
    kinds: Vec<String>,
    factor: f64,
    min_bytes: u64,
    min_days: u32,
    sql: bool,
    json: bool,
}

fn run_anomalies(q: AnomaliesQuery) -> Result<(), String> {
    let AnomaliesQuery {
        config,
        since,
        learning,
        kinds,
        factor,
        min_bytes,
        min_days,
        sql,
        json,
    } = q;
    use vigil::store::anomalies::{AnomalyParams, QUERIES};
    if let Some(k) = kinds.iter().find(|k| !QUERIES.iter().any(|q| q.kind == *k)) {
        let known: Vec<&str> = QUERIES.iter().map(|q| q.kind).collect();
        return Err(format!("--kind {k}: not one of {}", known.join(", ")));
    }
    if sql {
        for q in QUERIES {
            if kinds.is_empty() || kinds.contains(&q.kind.to_string()) {
                println!("-- {}: {}\n{};\n", q.kind, q.about, q.sql);
            }
        }
        return Ok(());
    }
    if !(factor.is_finite() && factor >= 1.0) {
        return Err(format!("--factor {factor} must be a number of at least 1"));
    }
    let now = vigil::decode::Clock::now().wall_ns(vigil::decode::Clock::mono_now_ns());
    let learning_ns = humantime::parse_duration(&learning)
        .map_err(|e| format!("--learning {learning}: {e}"))?
        .as_nanos()
        .min(i64::MAX as u128) as i64;
    let params = AnomalyParams {
        since_ns: parse_time(&since, now)?,
        learning_ns,
        factor,
        min_bytes,
        min_days,
    };
    let store = StoreArgs {
        config,
        spool: None,
    };
    let cfg = store.config()?;
    if cfg.clickhouse.url.is_none() {
        return Err(
            "fleet-wide anomalies are queried in ClickHouse: set clickhouse.url \
             (on a single host the daemon scores its own baselines as anomaly-* alerts)"
                .into(),
        );
    }
    let rows = block_on(vigil::store::anomalies::run(
        &cfg.clickhouse,
        &kinds,
        &params,
    ))?
    .map_err(|e| e.to_string())?;
    if json {
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
            r.user.escape_debug(),
            r.kind,
            r.value.escape_debug(),
            r.detail.escape_debug()
        );
    }
    Ok(())
}

/// One session's timeline from the configured store, and a name for that store.
fn load_timeline(
    store: &StoreArgs,
    which: &SessionRef,
) -> Result<(query::Timeline, String), String> {
    let id = which.id;
    let (timeline, source) = match store.store()? {
        Store::Spool(dir) => {
            let source = format!("the spool at {}", dir.display());
            let this_host = vigil::store::host_name();
            if let Some(host) = which.host.as_ref().filter(|h| **h != this_host) {
                return Err(format!(
                    "{source} holds this host's sessions ({this_host}), not {host}'s: read \
                     ClickHouse for other hosts"
                ));
            }
            (query::session(&dir, id).map_err(|e| e.to_string())?, source)
        }
        Store::ClickHouse(ch) => {
            let source = format!("ClickHouse database {}", ch.database);
            let host = session_host(&ch, which, &source)?;
            let (events, damage) = block_on(vigil::store::session_events(&ch, &host, id))?
                .map_err(|e| e.to_string())?;
            // The summary of this one session, filtered in the query rather than by listing
            // every session of the host.
            let filter = SessionFilter {
                host: Some(host.clone()),
                session: Some(id),
                ..Default::default()
            };
            let summary = block_on(vigil::store::sessions(&ch, &filter))?
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|s| s.session == id);
            (
                query::Timeline {
                    summary,
                    events,
                    damage,
                },
                source,
            )
        }
    };
    if timeline.summary.is_none() {
        return Err(format!("no session {id} in {source}"));
    }
    Ok((timeline, source))
}

/// The host of the session `which` names in ClickHouse. Session ids are numbered per host, so
/// an id that several hosts have needs `--host`; one that a single host has needs nothing.
fn session_host(
    ch: &vigil::store::ClickHouseConfig,
    which: &SessionRef,
    source: &str,
) -> Result<String, String> {
    let hosts = block_on(vigil::store::session_hosts(ch, which.id))?.map_err(|e| e.to_string())?;
    let id = which.id;
    match (&which.host, hosts.as_slice()) {
        (Some(host), _) if hosts.contains(host) => Ok(host.clone()),
        (Some(host), []) => Err(format!("no session {id} on {host} in {source}")),
        (Some(host), others) => Err(format!(
            "no session {id} on {host} in {source} (hosts with a session {id}: {})",
            others.join(", ")
        )),
        (None, []) => Err(format!("no session {id} in {source}")),
        (None, [one]) => Ok(one.clone()),
        (None, several) => Err(format!(
            "session {id} exists on {} hosts in {source} ({}): name one with --host",
            several.len(),
            several.join(", ")
        )),
    }
}

/// Prints on standard error what a read found damaged (output stays clean for pipes): the
/// answer may be incomplete, and the reader must know.
fn warn_damage(damage: &[vigil::event::Event]) {
    const SHOWN: usize = 5;
    for d in damage.iter().take(SHOWN) {
        eprintln!("vigil: warning: {}", query::describe(d));
    }
    if damage.len() > SHOWN {
        eprintln!(
            "vigil: warning: and {} more loss records",
            damage.len() - SHOWN
        );
    }
}

fn run_session(store: &StoreArgs, which: &SessionRef, json: bool) -> Result<(), String> {
    let (timeline, _) = load_timeline(store, which)?;
    if json {
        return print_json(&timeline);
    }
    if let Some(s) = &timeline.summary {
        println!(
            "session {} on {} of {} ({}), {} → {}{}",
            s.session,
            s.host.clone().unwrap_or_default(),
            s.user.clone().unwrap_or_default(),
            s.loginuid,
            s.first,
            s.ended.clone().unwrap_or_else(|| s.last.clone()),
            if s.ended.is_some() {
                ""
            } else {
                " (not ended)"
            }
        );
        if let Some(i) = &s.identity {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            println!(
                "person  {} <{}>, team {}, role {}, peer group {}",
                i.person,
                opt(&i.email),
                opt(&i.team),
                opt(&i.role),
                opt(&i.peer_group)
            );
        }
        println!("entry   {}", origin_text(s));
        if let Some(o) = &s.ssh {
            println!(
                "ssh     from {} port {} to port {}, {} {}",
                o.source_address,
                o.source_port,
                o.server_port,
                o.auth_method
                    .clone()
                    .unwrap_or_else(|| "auth unknown".into()),
                o.key_fingerprint.clone().unwrap_or_default()
            );
        }
        if !s.ancestry.is_empty() {
            println!("via     {}", ancestry_text(&s.ancestry));
        }
        if let Some(r) = s.risk {
            println!("risk    {r}/100: {}", s.risk_reasons.join("; "));
        }
    }
    for d in &timeline.damage {
        println!("warning: {}", query::describe(d));
    }
    println!("\nprocess tree:\n{}", query::process_tree(&timeline.events));
    println!("timeline:");
    let id = |n: u32, name: &Option<String>| match name {
        Some(name) => format!("{n}({name})"),
        None => n.to_string(),
    };
    for e in &timeline.events {
        let ancestry = match &e.body {
            vigil::event::EventBody::Exec(x) if !x.ancestry.is_empty() => {
                format!("   [{}]", ancestry_text(&x.ancestry))
            }
            _ => String::new(),
        };
        println!(
            "{}  pid {:>7} uid {:<12} euid {:<12}  {}{ancestry}",
            e.time,
            e.process.pid,
            id(e.process.uid, &e.process.user),
            id(e.process.euid, &e.process.euser),
            query::describe(e)
        );
    }
    Ok(())
}

fn recording(store: &StoreArgs, which: &SessionRef) -> Result<vigil::replay::Recording, String> {
    let id = which.id;
    let (timeline, source) = load_timeline(store, which)?;
    let rec =
        vigil::replay::Recording::from_events(timeline.summary.as_ref(), id, &timeline.events);
    if !rec.has_output() {
        eprintln!(
            "vigil: session {id} in {source} has no recorded terminal output (no terminal, or \
             tty_output not in capture.events); showing its markers only"
        );
    }
    for d in &timeline.damage {
        eprintln!("vigil: warning: {}", query::describe(d));
    }
    Ok(rec)
}

fn run_replay(
    store: &StoreArgs,
    which: &SessionRef,
    opts: vigil::replay::PlayOptions,
) -> Result<(), String> {
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(format!("--speed {} must be a positive number", opts.speed));
    }
    let rec = recording(store, which)?;
    let stdout = std::io::stdout();
    vigil::replay::play(&rec, &opts, &mut stdout.lock())
        .map_err(|e| format!("cannot write the replay: {e}"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// asciicast v2, as asciinema plays it.
    Asciicast,
    /// The full timeline: summary, every event, damage notes.
    Json,
}

fn run_export(
    store: &StoreArgs,
    which: &SessionRef,
    format: ExportFormat,
    output: Option<PathBuf>,
) -> Result<(), String> {
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = vigil::progress::Progress::new("export");
    let id = which.id;
    progress.note(&format!("reading session {id}"));
    let written = match format {
        ExportFormat::Asciicast => {
            let rec = recording(store, which)?;
            progress.note(&format!("writing {} frames", rec.frames.len()));
            vigil::replay::write_asciicast(&rec, &mut out)
        }
        ExportFormat::Json => {
            let (timeline, _) = load_timeline(store, which)?;
            progress.note(&format!("writing {} events", timeline.events.len()));
            serde_json::to_writer(&mut out, &timeline)
                .map_err(std::io::Error::other)
                .and_then(|_| writeln!(out))
                .and_then(|_| out.flush())
        }
    };
    progress.done();
    written.map_err(|e| format!("cannot write the export: {e}"))?;
    if let Some(path) = output {
        eprintln!("vigil: session {id} written to {}", path.display());
    }
    Ok(())
}

struct ReportArgs {
    since: String,
    until: Option<String>,
    host: Option<String>,
    output: Option<PathBuf>,
    json: bool,
}

fn run_report(store: &StoreArgs, args: ReportArgs) -> Result<(), String> {
    let now = vigil::decode::Clock::now().wall_ns(vigil::decode::Clock::mono_now_ns());
    let since_ns = parse_time(&args.since, now)?;
    let until_ns = match &args.until {
        Some(t) => parse_time(t, now)?,
        None => now,
    };
    if until_ns < since_ns {
        return Err(format!(
            "--until {} is before --since {}",
            vigil::decode::rfc3339(until_ns),
            vigil::decode::rfc3339(since_ns)
        ));
    }
    let filter = SessionFilter {
        host: args.host.clone(),
        since_ns: Some(since_ns),
        until_ns: Some(until_ns),
        ..Default::default()
    };
    let progress = vigil::progress::Progress::new("report");
    // Events keyed by (host, session): session ids are numbered per host.
    let (all, mut events, damage, source) = match store.store()? {
        Store::Spool(dir) => {
            progress.note("reading the spool");
            let (all, damage) = query::sessions(&dir, &filter).map_err(|e| e.to_string())?;
            let ids = all
                .iter()
                .filter(|s| vigil::report::is_privileged(s))
                .map(|s| s.session)
                .collect();
            // The second pass meets the same damage as the first: report it once.
            let (by_id, _) = query::events_of_sessions(&dir, &ids).map_err(|e| e.to_string())?;
            let host = vigil::store::host_name();
            let events = by_id
                .into_iter()
                .map(|(id, list)| ((host.clone(), id), list))
                .collect();
            (
                all,
                events,
                damage,
                format!("the spool at {}", dir.display()),
            )
        }
        Store::ClickHouse(ch) => {
            progress.note("listing sessions in ClickHouse");
            let all = block_on(vigil::store::sessions(&ch, &filter))?.map_err(|e| e.to_string())?;
            let privileged: Vec<(String, u32)> = all
                .iter()
                .filter(|s| vigil::report::is_privileged(s))
                .map(|s| (s.host.clone().unwrap_or_default(), s.session))
                .collect();
            let mut events = std::collections::BTreeMap::new();
            let mut damage = Vec::new();
            let total = privileged.len();
            for (i, (host, id)) in privileged.into_iter().enumerate() {
                progress.step(i + 1, total, "sessions read");
                let (list, lost) = block_on(vigil::store::session_events(&ch, &host, id))?
                    .map_err(|e| e.to_string())?;
                damage.extend(lost);
                events.insert((host, id), list);
            }
            (
                all,
                events,
                damage,
                format!("ClickHouse database {}", ch.database),
            )
        }
    };
    warn_damage(&damage);
    let sessions_in_period = all.len();
    let privileged = all
        .into_iter()
        .filter(vigil::report::is_privileged)
        .map(|s| {
            let key = (s.host.clone().unwrap_or_default(), s.session);
            let ev = events.remove(&key).unwrap_or_default();
            vigil::report::evidence(s, &ev)
        })
        .collect();
    let report = vigil::report::Report {
        since: vigil::decode::rfc3339(since_ns),
        until: vigil::decode::rfc3339(until_ns),
        generated: vigil::decode::rfc3339(now),
        source,
        sessions_in_period,
        privileged,
        warnings: damage.iter().map(query::describe).collect(),
    };
    let body = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    } else {
        vigil::report::render_html(&report)
    };
    progress.done();
    match &args.output {
        Some(path) => {
            std::fs::write(path, body)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
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

#[derive(Subcommand)]
enum SpoolCommand {
    /// What the spool holds: sequence range, events, and what was lost where.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn run_spool_stats(store: &StoreArgs) -> Result<(), String> {
    let dir = match &store.spool {
        Some(dir) => dir.clone(),
        None => store.config()?.spool.dir,
    };
    let stats = query::spool_stats(&dir).map_err(|e| e.to_string())?;
    print_json(&stats)
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or update the ClickHouse schema (versioned migrations; the daemon also does this
    /// at start).
    Migrate {
        /// Configuration file (its clickhouse: section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn run_migrate(config: Option<PathBuf>) -> Result<(), String> {
    let config = StoreArgs {
        config,
        spool: None,
    }
    .config()?;
    if config.clickhouse.url.is_none() {
        return Err("clickhouse.url is not set in the configuration: nothing to migrate".into());
    }
    eprintln!(
        "migrating ClickHouse database {} ...",
        config.clickhouse.database
    );
    let progress = vigil::progress::Progress::new("migrate");
    let applied = block_on(vigil::store::migrate_with_progress(
        &config.clickhouse,
        &mut |step, of, name| progress.note(&format!("{step}/{of} {name}")),
    ))?
    .map_err(|e| e.to_string())?;
    progress.done();
    if applied.is_empty() {
        println!("schema up to date");
    } else {
        println!("applied migrations {applied:?}");
    }
    Ok(())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the VIGIL_<SECTION>__<KEY> environment overrides)
    /// and report every problem with its location.
    Check { file: Option<PathBuf> },
    /// Print the effective configuration (default, file, environment) with secrets redacted.
    Show { file: Option<PathBuf> },
    /// Print the embedded default configuration.
    Default,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // Query commands end quietly when their reader goes away (`vigil session 7 | head`),
        // as Unix tools do. The daemon keeps SIGPIPE ignored and reports a closed output.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
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
                None => match Config::from_env() {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("vigil: {e}");
                        return ExitCode::from(2);
                    }
                },
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
        Command::Sessions {
            store,
            user,
            host,
            since,
            until,
            person,
            peer_group,
            min_risk,
            json,
        } => report(run_sessions(
            &store,
            SessionsQuery {
                user,
                host,
                since,
                until,
                person,
                peer_group,
                min_risk,
            },
            json,
        )),
        Command::Alerts {
            store,
            user,
            host,
            session,
            rule,
            min_severity,
            since,
            until,
            json,
        } => report((|| {
            let now = vigil::decode::Clock::now().wall_ns(vigil::decode::Clock::mono_now_ns());
            let filter = query::AlertFilter {
                loginuid: user.as_deref().map(resolve_user).transpose()?,
                session,
                host,
                rule,
                min_severity,
                since_ns: since.map(|t| parse_time(&t, now)).transpose()?,
                until_ns: until.map(|t| parse_time(&t, now)).transpose()?,
            };
            run_alerts(&store, &filter, json)
        })()),
        Command::Anomalies {
            config,
            since,
            learning,
            kinds,
            factor,
            min_bytes,
            min_days,
            sql,
            json,
        } => report(run_anomalies(AnomaliesQuery {
            config,
            since,
            learning,
            kinds,
            factor,
            min_bytes,
            min_days,
            sql,
            json,
        })),
        Command::Session {
            session,
            store,
            json,
        } => report(run_session(&store, &session, json)),
        Command::Replay {
            session,
            store,
            speed,
            max_idle,
            instant,
            no_markers,
        } => report(
            (if max_idle.is_finite() && max_idle >= 0.0 {
                Ok(())
            } else {
                Err(format!("--max-idle {max_idle} must be 0 or more seconds"))
            })
            .and_then(|_| {
                run_replay(
                    &store,
                    &session,
                    vigil::replay::PlayOptions {
                        speed,
                        max_idle: std::time::Duration::from_secs_f64(max_idle.min(1e9)),
                        instant,
                        markers: !no_markers,
                    },
                )
            }),
        ),
        Command::Export {
            session,
            store,
            format,
            output,
        } => report(run_export(&store, &session, format, output)),
        Command::BenchSession { spool, events } => report(
            vigil::bench::write_replay_session(&spool, events)
                .map(|n| println!("session {} with {n} events", vigil::bench::REPLAY_SESSION))
                .map_err(|e| format!("{e:#}")),
        ),
        Command::Report {
            store,
            since,
            until,
            host,
            output,
            json,
        } => report(run_report(
            &store,
            ReportArgs {
                since,
                until,
                host,
                output,
                json,
            },
        )),
        Command::Db {
            command: DbCommand::Migrate { config },
        } => report(run_migrate(config)),
        Command::Spool {
            command: SpoolCommand::Stats { store },
        } => report(run_spool_stats(&store)),
        Command::BenchIngest {
            spool,
            events,
            config,
        } => report((|| {
            let ch = match config {
                Some(_) => Some(
                    StoreArgs {
                        config,
                        spool: None,
                    }
                    .config()?
                    .clickhouse,
                ),
                None => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let r = rt
                .block_on(vigil::bench::ingest(&spool, events, ch))
                .map_err(|e| format!("{e:#}"))?;
            println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            Ok(())
        })()),
        Command::Rules { command } => report(rules_cli::run(command)),
        Command::Config { command } => match command {
            ConfigCommand::Check { file } => {
                let result = match &file {
                    Some(f) => Config::load(f),
                    None => Config::from_env(),
                };
                let name = file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "embedded default".into());
                match result {
                    Ok(_) => {
                        println!("{name}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(2)
                    }
                }
            }
            ConfigCommand::Show { file } => report((|| {
                let (text, origin) = match &file {
                    Some(f) => (
                        std::fs::read_to_string(f)
                            .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
                        f.display().to_string(),
                    ),
                    None => (String::new(), "embedded default".to_string()),
                };
                let yaml = Config::effective_yaml(&text, &origin, std::env::vars())
                    .map_err(|e| e.to_string())?;
                print!("{yaml}");
                Ok(())
            })()),
            ConfigCommand::Default => {
                print!("{}", vigil::config::DEFAULT_CONFIG);
                ExitCode::SUCCESS
            }
        },
    }
}
