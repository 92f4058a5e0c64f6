//! The `vigil` command line: one file per command family, each taking its clap arguments as
//! they are parsed. Query commands read through [`SessionStore`], so none of them knows whether
//! the spool or ClickHouse answers.

mod anomalies;
mod baselines;
mod bench;
mod config;
mod db;
mod report;
mod respond;
mod rules;
mod run;
mod sessions;
mod verify;

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vigil::{
    config::{Config, ConfigError},
    event::{SelectorError, SessionSelector},
    store::{
        reader::{ClickHouseStore, ReadError, SessionStore, SpoolStore},
        StoreError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Stopped by a signal (Ctrl-C) after putting the terminal back: exit status 130, as a
    /// shell reports SIGINT.
    #[error("interrupted")]
    Interrupted,
    #[error("cannot handle signals: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// An argument's value is not usable (`--speed -1`, `--since yesterday-ish`).
    #[error("{flag}: {problem}")]
    BadArgument { flag: String, problem: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the {what}: {source}")]
    Output {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("no user named `{0}` on this host")]
    NoSuchUser(String),
    #[error("cannot look up user `{name}`: {source}")]
    UserLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Rules(#[from] vigil::detect::rules::RulesError),
    #[error(transparent)]
    Baseline(#[from] vigil::detect::baseline::BaselineError),
    /// Rules files with problems: each file's report, one after the other.
    #[error("{}", .0.join("\n"))]
    RulesCheck(Vec<String>),
    #[error("{0}")]
    SigmaExport(#[from] vigil::detect::sigma::SigmaExportError),
    /// Something this invocation needs is not configured (`clickhouse.url` for anomalies).
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error("{0:#}")]
    Daemon(anyhow::Error),
    /// `vigil respond`: the daemon could not be reached, refused, or did not carry it out.
    #[error("{0}")]
    Respond(String),
}

impl CliError {
    fn bad(flag: impl Into<String>, problem: impl Into<String>) -> CliError {
        CliError::BadArgument {
            flag: flag.into(),
            problem: problem.into(),
        }
    }

    fn output(what: &'static str) -> impl FnOnce(std::io::Error) -> CliError {
        move |source| CliError::Output { what, source }
    }
}

type CliResult = Result<(), CliError>;

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
    Run(run::RunArgs),
    /// List login sessions recorded in the spool, with what each did.
    Sessions(sessions::SessionsArgs),
    /// List alerts: which rule fired, when, in which session, why and on what evidence.
    Alerts(sessions::AlertsArgs),
    /// Fleet-wide anomalies from the baselines in ClickHouse: first-seen binaries, hosts,
    /// destinations, sensitive paths and hours, read volume far above a user's norm, binaries
    /// unique in a peer group.
    Anomalies(anomalies::AnomaliesArgs),
    /// Show one session: its timeline of commands, files, connections and privilege changes,
    /// and its process tree.
    Session(sessions::SessionArgs),
    /// Play a session's terminal in real time (scaled by --speed), with what it did shown as
    /// markers. Recorded output is filtered so that it can only draw.
    Replay(sessions::ReplayArgs),
    /// Export a session: asciicast v2 (plays in asciinema) or its full JSON timeline.
    Export(sessions::ExportArgs),
    /// HTML report of the privileged sessions of a period (who, when, from where, what they ran
    /// as root, files, connections, how to replay each), for audit evidence.
    Report(report::ReportArgs),
    /// Ingest benchmark body (run by `cargo xtask bench ingest`).
    #[command(hide = true)]
    BenchIngest(bench::BenchIngestArgs),
    /// Replay benchmark set-up (run by `cargo xtask bench replay`): one long session in a spool.
    #[command(hide = true)]
    BenchSession(bench::BenchSessionArgs),
    /// Overhead benchmark floor (run by `cargo xtask bench overhead`): an empty program on the
    /// daemon's syscall-exit hook, attached until SIGINT or SIGTERM.
    #[command(hide = true)]
    BenchFloor(bench::BenchFloorArgs),
    /// Spool tools.
    Spool {
        #[command(subcommand)]
        command: db::SpoolCommand,
    },
    /// Check the trail (a spool, or ClickHouse for every host) against its hash chain and
    /// signed checkpoints: edits, deletions, reordering, gaps, forged rows, silent hosts. Exit
    /// status 1 when anything is found.
    Verify(verify::VerifyArgs),
    /// This host's signing key.
    Key {
        #[command(subcommand)]
        command: verify::KeyCommand,
    },
    /// ClickHouse schema tools.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Detection rules: list those in force, check files, import Sigma rules.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// Act on this host through its daemon: kill a process or session, hold and release a
    /// session, deny a program or a session's connections, lock and unlock an account. Each is
    /// written into the trail with who asked (respond.mode: dry_run only says what it would do).
    Respond(respond::RespondArgs),
    /// Behavioural baselines: seed them from recorded events.
    Baselines {
        #[command(subcommand)]
        command: baselines::BaselinesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
}

/// Which session: its id as `vigil sessions` lists it, in full (`host/boot/id`) or short (`7`,
/// `3f2a9c1b/7`). Audit session ids restart at every boot and every host numbers its own; a
/// short id that several sessions share is refused with the candidates named.
#[derive(clap::Args, Clone)]
pub struct SessionRef {
    /// The session: `7`, `boot/7` or `host/boot/7` (KEY in `vigil sessions`).
    pub id: String,
    /// The session's host (the same as writing it in the id).
    #[arg(long)]
    pub host: Option<String>,
    /// The first characters of the session's boot id (the same as writing it in the id).
    #[arg(long)]
    pub boot: Option<String>,
}

impl SessionRef {
    pub fn selector(&self) -> Result<SessionSelector, CliError> {
        let parsed: SessionSelector = self.id.parse()?;
        Ok(parsed.with_flags(&self.id, self.host.clone(), self.boot.clone())?)
    }
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Configuration file whose spool.dir (or clickhouse:) to read.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read this spool directory (overrides the configuration).
    #[arg(long)]
    pub spool: Option<PathBuf>,
}

/// The configuration a command was pointed at, or the embedded default with the environment's
/// overrides.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, CliError> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    })
}

impl StoreArgs {
    /// ClickHouse when configured, unless --spool asks for a spool; the spool otherwise.
    pub fn open(&self) -> Result<Box<dyn SessionStore>, CliError> {
        if let Some(dir) = &self.spool {
            return Ok(Box::new(SpoolStore { dir: dir.clone() }));
        }
        let config = load_config(self.config.as_deref())?;
        Ok(match config.clickhouse.url {
            Some(_) => Box::new(ClickHouseStore::new(config.clickhouse)?),
            None => Box::new(SpoolStore {
                dir: config.spool.dir,
            }),
        })
    }
}

/// Prints `value` as pretty JSON on standard output (the `--json` form of the listings).
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> CliResult {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::other)
        .and_then(|_| writeln!(out))
        .map_err(CliError::output("JSON output"))
}

/// One runtime for an invocation that talks to ClickHouse outside a store.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

pub fn resolve_user(arg: &str) -> Result<u32, CliError> {
    if let Ok(uid) = arg.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(arg) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(CliError::NoSuchUser(vigil::present::terminal_str(arg))),
        Err(source) => Err(CliError::UserLookup {
            name: vigil::present::terminal_str(arg),
            source,
        }),
    }
}

/// Now, in wall-clock nanoseconds.
pub fn now_ns() -> i64 {
    vigil::decode::Clock::now().wall_ns(vigil::decode::Clock::mono_now_ns())
}

/// `--since`/`--until` of the listings: a period, either end open.
#[derive(clap::Args)]
pub struct PeriodArgs {
    /// Only what happened since this time (RFC 3339, or a duration ago such as 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only what happened until this time.
    #[arg(long)]
    pub until: Option<String>,
}

impl PeriodArgs {
    /// Both ends in nanoseconds; an end before its start is refused.
    pub fn resolve(&self, now: i64) -> Result<(Option<i64>, Option<i64>), CliError> {
        let since = self
            .since
            .as_deref()
            .map(|t| time_arg("--since", t, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|t| time_arg("--until", t, now))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            check_order(s, u)?;
        }
        Ok((since, until))
    }
}

/// `--until` may not be before `--since`: such a period holds nothing, and says the reader
/// mistyped one of them.
pub fn check_order(since_ns: i64, until_ns: i64) -> Result<(), CliError> {
    if until_ns < since_ns {
        return Err(CliError::bad(
            "--until",
            format!(
                "{} is before --since {}",
                vigil::decode::rfc3339(until_ns),
                vigil::decode::rfc3339(since_ns)
            ),
        ));
    }
    Ok(())
}

/// `--user`/`--host` of the listings: whose, and where.
#[derive(clap::Args)]
pub struct WhoArgs {
    /// Only those of this login user (name or uid, as recorded).
    #[arg(long)]
    pub user: Option<String>,
    /// Only those on this host.
    #[arg(long)]
    pub host: Option<String>,
}

/// `--flag TIME`: RFC 3339 or a duration ago.
pub fn time_arg(flag: &str, value: &str, now: i64) -> Result<i64, CliError> {
    vigil::query::parse_time(value, now).map_err(|problem| CliError::bad(flag, problem.to_string()))
}

/// Prints on standard error what a read found damaged (output stays clean for pipes): the
/// answer may be incomplete, and the reader must know.
pub fn warn_damage(damage: &[vigil::event::Event]) {
    const SHOWN: usize = 5;
    for d in damage.iter().take(SHOWN) {
        eprintln!("vigil: warning: {d}");
    }
    if damage.len() > SHOWN {
        eprintln!(
            "vigil: warning: and {} more loss records",
            damage.len() - SHOWN
        );
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // Query commands end quietly when their reader goes away (`vigil session 7 | head`),
        // as Unix tools do. The daemon keeps SIGPIPE ignored and reports a closed output.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run(args) => return run::run(args),
        Command::Sessions(args) => sessions::list(args),
        Command::Alerts(args) => sessions::alerts(args),
        Command::Anomalies(args) => anomalies::run(args),
        Command::Session(args) => sessions::show(args),
        Command::Replay(args) => sessions::replay(args),
        Command::Export(args) => sessions::export(args),
        Command::Report(args) => report::run(args),
        Command::BenchIngest(args) => bench::ingest(args),
        Command::BenchFloor(args) => bench::floor(args),
        Command::BenchSession(args) => bench::session(args),
        Command::Spool { command } => db::spool(command),
        Command::Db { command } => db::db(command),
        Command::Key { command } => verify::key(command),
        Command::Verify(args) => match verify::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Rules { command } => rules::run(command),
        Command::Baselines { command } => baselines::run(command),
        Command::Config { command } => config::run(command),
        Command::Respond(args) => respond::respond(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Interrupted) => {
            eprintln!("vigil: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            // An error may quote what it could not read (a session id, a stored value).
            eprintln!("vigil: {}", vigil::present::visible(&e.to_string()));
            ExitCode::from(2)
        }
    }
}
