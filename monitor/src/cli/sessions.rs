//! `vigil sessions`, `session`, `replay`, `export` and `alerts`: what security reads, from
//! whichever store the configuration names.

use std::{io::Write as _, path::PathBuf};

use vigil::{
    event::{Ancestor, EventBody},
    query::{self, AlertFilter, SessionFilter, SessionSummary},
};

use super::{
    now_ns, print_json, resolve_user, warn_damage, CliError, CliResult, PeriodArgs, SessionRef,
    StoreArgs, WhoArgs,
};

#[derive(clap::Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    who: WhoArgs,
    // Sessions active in the period: the last event since `--since`, the first until `--until`.
    #[command(flatten)]
    period: PeriodArgs,
    /// Only sessions of this person (name or email in the identity mapping).
    #[arg(long)]
    person: Option<String>,
    /// Only sessions of people in this peer group (identity mapping).
    #[arg(long)]
    peer_group: Option<String>,
    /// Only sessions whose risk score reached this (0-100); without a value, the review
    /// threshold calibrated on the detection bench (vigil::query::REVIEW_MIN_RISK).
    #[arg(long, num_args = 0..=1, value_name = "RISK")]
    min_risk: Option<Option<u32>>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Where a session came from, for one table cell.
fn origin_text(s: &SessionSummary) -> String {
    let entry = s.entry.map(|e| e.as_str()).unwrap_or("?").to_string();
    match &s.ssh {
        Some(o) => format!("{entry} {}:{}", o.source_address, o.source_port),
        None => entry,
    }
}

fn ancestry_text(a: &[Ancestor]) -> String {
    a.iter()
        .map(|x| cell(&x.name))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// A recorded name for a table cell: escaped, since it came from a monitored host.
fn cell(s: &str) -> String {
    vigil::present::terminal_str(s)
}

pub fn list(a: SessionsArgs) -> CliResult {
    let (since_ns, until_ns) = a.period.resolve(now_ns())?;
    let filter = SessionFilter {
        loginuid: a.who.user.as_deref().map(resolve_user).transpose()?,
        host: a.who.host,
        session: None,
        since_ns,
        until_ns,
        person: a.person,
        peer_group: a.peer_group,
        min_risk: a
            .min_risk
            .map(|r| r.unwrap_or(vigil::query::REVIEW_MIN_RISK)),
    };
    let (list, damage) = a.store.open()?.sessions(&filter)?;
    warn_damage(&damage);
    if a.json {
        return print_json(&list);
    }
    let mut out = std::io::stdout().lock();
    let mut lines = vec![format!(
        "{:<28}  {:<12} {:<20} {:<26} {:<30} {:<30} {:>6} {:>6} {:>12} {:>5} {:>5}",
        "KEY (host/boot/session)",
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
    )];
    for s in list {
        let user = s.user.clone().unwrap_or_else(|| s.loginuid.to_string());
        let person = s
            .identity
            .as_ref()
            .map(|i| i.person.clone())
            .unwrap_or_else(|| "-".into());
        lines.push(format!(
            "{:<28}  {:<12} {:<20} {:<26} {:<30} {:<30} {:>6} {:>6} {:>12} {:>5} {:>5}{}",
            // The key is what `vigil session` takes back: ids repeat across hosts and boots.
            cell(&s.key),
            cell(&user),
            cell(&person),
            cell(&origin_text(&s)),
            s.first,
            s.last,
            s.counts.commands,
            s.counts.files_opened,
            s.counts.bytes_read,
            s.counts.connections,
            s.counts.privilege_changes,
            match (s.gained_root, s.risk) {
                (_, Some(r)) => format!("  RISK {r}: {}", cell(&s.risk_reasons.join("; "))),
                (true, None) => "  gained root".into(),
                (false, None) => String::new(),
            }
        ));
    }
    for line in lines {
        writeln!(out, "{}", vigil::present::visible(&line)).map_err(CliError::output("listing"))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    who: WhoArgs,
    /// Only alerts of this session (`7`, `boot/7` or `host/boot/7`, as `vigil sessions` lists
    /// it; a short id several sessions share is refused with the candidates named).
    #[arg(long)]
    session: Option<String>,
    /// Only alerts of this rule (its id).
    #[arg(long)]
    rule: Option<String>,
    /// Only alerts of this severity or higher.
    #[arg(long, value_enum)]
    min_severity: Option<vigil::detect::rules::Severity>,
    #[command(flatten)]
    period: PeriodArgs,
    /// One line per alert; by default the alerts of one rule in one session are one line
    /// (how many, the first and the last), so a noisy session does not bury the others.
    #[arg(long)]
    each: bool,
    /// JSON output (each alert whole).
    #[arg(long)]
    json: bool,
}

pub fn alerts(a: AlertsArgs) -> CliResult {
    let (since_ns, until_ns) = a.period.resolve(now_ns())?;
    let store = a.store.open()?;
    let session = match &a.session {
        Some(id) => {
            let selector = SessionRef {
                id: id.clone(),
                host: a.who.host.clone(),
                boot: None,
            }
            .selector()?;
            Some(store.resolve(&selector)?.session_key())
        }
        None => None,
    };
    let filter = AlertFilter {
        loginuid: a.who.user.as_deref().map(resolve_user).transpose()?,
        session,
        host: a.who.host,
        rule: a.rule,
        min_severity: a.min_severity,
        since_ns,
        until_ns,
    };
    let (alerts, damage) = store.alerts(&filter)?;
    warn_damage(&damage);
    if a.json {
        return print_json(&alerts);
    }
    let groups = query::group_alerts(&alerts, a.each);
    let mut lines = vec![format!(
        "{:<30}  {:<30}  {:>5}  {:<28} {:<12} {:<9} {:<10} {:>4}  {:<30} EVIDENCE",
        "FIRST",
        "LAST",
        "COUNT",
        "SESSION (host/boot/session)",
        "USER",
        "SEVERITY",
        "TECHNIQUE",
        "RISK",
        "RULE"
    )];
    for g in &groups {
        let e = g.first;
        let EventBody::Alert(al) = &e.body else {
            continue;
        };
        let user = e
            .process
            .login_user
            .as_deref()
            .map(str::to_string)
            .or_else(|| e.process.loginuid.map(|u| u.to_string()))
            .unwrap_or_else(|| "-".into());
        lines.push(format!(
            "{:<30}  {:<30}  {:>5}  {:<28} {:<12} {:<9} {:<10} {:>4}  {:<30} {}",
            e.time,
            g.last_time,
            g.count,
            e.session_key()
                .map(|k| cell(&k.to_string()))
                .unwrap_or_else(|| "-".into()),
            cell(&user),
            al.severity,
            cell(&al.technique),
            g.session_risk,
            cell(&al.rule),
            // The evidence quotes recorded data: keep control characters off the terminal.
            cell(&al.evidence)
        ));
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{}", vigil::present::visible(&line)).map_err(CliError::output("listing"))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SessionArgs {
    #[command(flatten)]
    session: SessionRef,
    #[command(flatten)]
    store: StoreArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// List the kernel's folds of routine opens (loader, locale files) one line each; by
    /// default the timeline counts them in one line at its end.
    #[arg(long)]
    all: bool,
}

pub fn show(a: SessionArgs) -> CliResult {
    let timeline = a.store.open()?.timeline(&a.session.selector()?)?;
    if a.json {
        return print_json(&timeline);
    }
    let mut o: Vec<String> = Vec::new();
    if let Some(s) = &timeline.summary {
        o.push(format!(
            "session {} of {} ({}), {} → {}{}",
            cell(&s.key),
            cell(s.user.as_deref().unwrap_or("?")),
            s.loginuid,
            s.first,
            s.ended.clone().unwrap_or_else(|| s.last.clone()),
            if s.ended.is_some() {
                ""
            } else {
                " (not ended)"
            }
        ));
        o.push(format!(
            "host    {}, boot {}",
            cell(&s.host),
            cell(&s.boot_id)
        ));
        if let Some(i) = &s.identity {
            let opt = |v: &Option<String>| cell(v.as_deref().unwrap_or("-"));
            o.push(format!(
                "person  {} <{}>, team {}, role {}, peer group {}",
                cell(&i.person),
                opt(&i.email),
                opt(&i.team),
                opt(&i.role),
                opt(&i.peer_group)
            ));
        }
        o.push(format!("entry   {}", cell(&origin_text(s))));
        if let Some(ssh) = &s.ssh {
            o.push(format!(
                "ssh     from {} port {} to port {}, {} {}",
                cell(&ssh.source_address),
                ssh.source_port,
                ssh.server_port,
                cell(ssh.auth_method.as_deref().unwrap_or("auth unknown")),
                cell(ssh.key_fingerprint.as_deref().unwrap_or_default())
            ));
        }
        if !s.ancestry.is_empty() {
            o.push(format!("via     {}", ancestry_text(&s.ancestry)));
        }
        if let Some(r) = s.risk {
            o.push(format!(
                "risk    {r}/100: {}",
                cell(&s.risk_reasons.join("; "))
            ));
        }
    }
    for d in &timeline.damage {
        o.push(format!("warning: {d}"));
    }
    o.push(format!(
        "\nprocess tree:\n{}",
        query::process_tree(&timeline.events)
    ));
    o.push("timeline:".into());
    let id = |n: u32, name: &Option<std::sync::Arc<str>>| match name {
        Some(name) => format!("{n}({})", cell(name)),
        None => n.to_string(),
    };
    let mut routine = (0u64, 0u64); // (folds, opens) not listed
    for e in &timeline.events {
        if let EventBody::OpensFolded(f) = &e.body {
            if f.fold == vigil::event::FoldKind::Routine && !a.all {
                routine.0 += 1;
                routine.1 += f.opens;
                continue;
            }
        }
        let ancestry = match &e.body {
            EventBody::Exec(x) if !x.ancestry.is_empty() => {
                format!("   [{}]", ancestry_text(&x.ancestry))
            }
            _ => String::new(),
        };
        o.push(format!(
            "{}  pid {:>7} uid {:<12} euid {:<12}  {e}{ancestry}",
            e.time,
            e.process.pid,
            id(e.process.uid, &e.process.user),
            id(e.process.euid, &e.process.euser),
        ));
    }
    if routine.0 > 0 {
        o.push(format!(
            "({} routine opens (loader, locale) in {} programs not listed; --all lists them)",
            routine.1, routine.0
        ));
    }
    let mut out = std::io::stdout().lock();
    for line in o {
        writeln!(out, "{}", vigil::present::visible(&line))
            .map_err(CliError::output("timeline"))?;
    }
    Ok(())
}

/// The recording of the session `which` names, with what could not be recorded said on stderr.
fn recording(store: &StoreArgs, which: &SessionRef) -> Result<vigil::replay::Recording, CliError> {
    let store = store.open()?;
    let timeline = store.timeline(&which.selector()?)?;
    let summary = timeline.summary.as_ref();
    let session = summary.map(|s| s.session).unwrap_or_default();
    let rec = vigil::replay::Recording::from_events(summary, session, &timeline.events);
    if !rec.has_output() {
        eprintln!(
            "vigil: session {} in {} has no recorded terminal output (no terminal, or \
             tty_output not in capture.events); showing its markers only",
            summary.map(|s| cell(&s.key)).unwrap_or_default(),
            store.source()
        );
    }
    warn_damage(&timeline.damage);
    Ok(rec)
}

#[derive(clap::Args)]
pub struct ReplayArgs {
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
}

pub fn replay(a: ReplayArgs) -> CliResult {
    if !(a.speed.is_finite() && a.speed > 0.0) {
        return Err(CliError::bad(
            "--speed",
            format!("{} must be a positive number", a.speed),
        ));
    }
    if !(a.max_idle.is_finite() && a.max_idle >= 0.0) {
        return Err(CliError::bad(
            "--max-idle",
            format!("{} must be 0 or more seconds", a.max_idle),
        ));
    }
    let opts = vigil::replay::PlayOptions {
        speed: a.speed,
        max_idle: std::time::Duration::from_secs_f64(a.max_idle.min(1e9)),
        instant: a.instant,
        markers: !a.no_markers,
    };
    let rec = recording(&a.store, &a.session)?;
    // Ctrl-C (or a terminal closing, or a kill) stops the replay at the next frame or within
    // 50 ms of a wait, and the terminal is restored before exiting.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, stop.clone()).map_err(CliError::Signal)?;
    }
    match vigil::replay::play(&rec, &opts, &mut std::io::stdout().lock(), &stop)
        .map_err(CliError::output("replay"))?
    {
        vigil::replay::Played::Whole => Ok(()),
        vigil::replay::Played::Interrupted => Err(CliError::Interrupted),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// asciicast v2, as asciinema plays it.
    Asciicast,
    /// The full timeline: summary, every event, damage notes.
    Json,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    session: SessionRef,
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, value_enum, default_value = "asciicast")]
    format: ExportFormat,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn export(a: ExportArgs) -> CliResult {
    let mut out: Box<dyn std::io::Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| CliError::WriteFile {
                path: path.clone(),
                source,
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = vigil::progress::Progress::new("export");
    progress.note(&format!("reading session {}", cell(&a.session.id)));
    let written = match a.format {
        ExportFormat::Asciicast => {
            let rec = recording(&a.store, &a.session)?;
            progress.note(&format!("writing {} frames", rec.frames.len()));
            vigil::replay::write_asciicast(&rec, &mut out)
        }
        ExportFormat::Json => {
            let timeline = a.store.open()?.timeline(&a.session.selector()?)?;
            progress.note(&format!("writing {} events", timeline.events.len()));
            serde_json::to_writer(&mut out, &timeline)
                .map_err(std::io::Error::other)
                .and_then(|_| writeln!(out))
                .and_then(|_| out.flush())
        }
    };
    progress.done();
    written.map_err(CliError::output("export"))?;
    if let Some(path) = a.output {
        eprintln!(
            "vigil: session {} written to {}",
            cell(&a.session.id),
            path.display()
        );
    }
    Ok(())
}
