//! The audit report: privileged sessions in a period, as one self-contained HTML page an auditor
//! can file as evidence (SOC 2 CC6/CC7, ISO 27001 A.8.2/A.8.15): who, when, from where, what
//! they ran as root, what they read and changed, where they connected, and how to replay each.
//!
//! Everything recorded is escaped by the template engine (maud); the page has no scripts and no
//! external resources.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

use crate::{
    event::{Event, EventBody},
    query::SessionSummary,
};

/// A session is privileged when it logged in as root, gained root (sudo, su, setuid exec), or ran
/// as root already when first seen (`gained_root` says both: see `SessionStartEvent`).
pub fn is_privileged(s: &SessionSummary) -> bool {
    s.loginuid == 0 || s.gained_root
}

#[derive(Debug, Clone, Serialize)]
pub struct RootCommand {
    pub time: String,
    pub argv: String,
    /// The path of processes above it (`sshd → bash → sudo → cat`).
    pub via: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionEvidence {
    pub summary: SessionSummary,
    pub root_commands: Vec<RootCommand>,
    /// Files read, with bytes, most bytes first.
    pub files_read: Vec<(String, u64)>,
    /// Files opened for writing.
    pub files_written: Vec<String>,
    pub connections: Vec<String>,
    pub privilege_changes: Vec<String>,
    /// Responses to the session (kills, holds, denials, locks; dry runs and refusals too).
    pub responses: Vec<String>,
    /// Risk score and its reasons, when detection scored the session.
    pub risk: Option<(f64, Vec<String>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    pub generated: String,
    pub source: String,
    pub sessions_in_period: usize,
    pub privileged: Vec<SessionEvidence>,
    /// Damage the store reported while the report was read (losses, rows that did not
    /// decode): the evidence may be incomplete, and the report says so.
    pub warnings: Vec<String>,
}

/// The page anchor of a session: ids are numbered per host and boot, so both are part of it.
fn anchor(s: &SessionSummary) -> String {
    format!(
        "session-{}-{}-{}",
        s.host,
        crate::event::short_boot(&s.boot_id),
        s.session
    )
}

use crate::present::shell_word;

fn text(b: &crate::event::RawBytes) -> String {
    crate::present::terminal_text(b.as_bytes())
}

/// What a privileged session did, from its events.
pub fn evidence(summary: SessionSummary, events: &[Event]) -> SessionEvidence {
    use std::collections::{BTreeMap, BTreeSet};
    let mut root_commands = Vec::new();
    let mut read: BTreeMap<String, u64> = BTreeMap::new();
    let mut written = BTreeSet::new();
    let mut connections = BTreeSet::new();
    let mut privilege_changes = Vec::new();
    let mut responses = Vec::new();
    for e in events {
        match &e.body {
            EventBody::Exec(x) if e.process.euid == 0 => root_commands.push(RootCommand {
                time: e.time.clone(),
                argv: x.argv.iter().map(text).collect::<Vec<_>>().join(" "),
                via: via(&x.ancestry),
            }),
            EventBody::FileRead(r) => {
                if let Some(p) = &r.path {
                    *read.entry(text(p)).or_default() += r.bytes;
                }
            }
            // What the repeats of an open read is read from that file all the same.
            EventBody::OpensFolded(f) if f.bytes > 0 => {
                if let Some(p) = &f.path {
                    *read.entry(text(p)).or_default() += f.bytes;
                }
            }
            EventBody::Open(o) if o.result.ok() && o.access != crate::event::Access::Read => {
                written.insert(text(&o.path));
            }
            EventBody::Connect(c) if c.family != crate::event::AddressFamily::Unix => {
                let dest = match c.port {
                    Some(p) => format!("{}:{p}", c.address.as_ref().map(text).unwrap_or_default()),
                    None => c.address.as_ref().map(text).unwrap_or_default(),
                };
                connections.insert(format!(
                    "{dest}{}",
                    if c.result.ok() { "" } else { " (failed)" }
                ));
            }
            EventBody::Priv(p) => privilege_changes.push(format!(
                "{} {} uid {}→{} euid {}→{}{}",
                e.time,
                p.op,
                p.old.uid,
                p.new.uid,
                p.old.euid,
                p.new.euid,
                if p.gained_root { " (gained root)" } else { "" }
            )),
            EventBody::Response(r) => responses.push(format!(
                "{} {} {}: {} — {} (asked by {} {})",
                e.time, r.action, r.target, r.outcome, r.detail, r.requester, r.requested_by
            )),
            _ => {}
        }
    }
    let summary_risk = summary
        .risk
        .map(|r| (r as f64, summary.risk_reasons.clone()));
    let mut files_read: Vec<(String, u64)> = read.into_iter().collect();
    files_read.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    SessionEvidence {
        summary,
        root_commands,
        files_read,
        files_written: written.into_iter().collect(),
        connections: connections.into_iter().collect(),
        privilege_changes,
        responses,
        risk: summary_risk,
    }
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
.meta { color: #555; margin-bottom: 1.5em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; }
th, td { border: 1px solid #ccd; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #eef; }
section { border-top: 3px solid #335; margin-top: 2em; padding-top: .5em; }
code { font: 12px ui-monospace, monospace; word-break: break-all; }
.none { color: #888; font-style: italic; }
.warning { border: 2px solid #b50; background: #fff4ec; padding: .5em .8em; margin-bottom: 1.5em; }
.replay { background: #f4f4f8; padding: .4em .6em; display: inline-block; }
@media print { section { page-break-inside: avoid; } }
";

fn list(items: &[String]) -> Markup {
    html! {
        @if items.is_empty() { span.none { "none" } }
        @else { ul { @for i in items { li { code { (i) } } } } }
    }
}

pub fn render_html(r: &Report) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Vigil privileged session report " (r.since) " – " (r.until) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Privileged session report" }
                div.meta {
                    "Period " strong { (r.since) } " to " strong { (r.until) } ". "
                    "Generated " (r.generated) " from " (r.source) ". "
                    (r.privileged.len()) " privileged of " (r.sessions_in_period) " sessions in the period."
                }
                @if !r.warnings.is_empty() {
                    div.warning {
                        strong { "The store reported damage while this report was read; the evidence may be incomplete:" }
                        ul { @for w in &r.warnings { li { (w) } } }
                    }
                }
                table id="summary" {
                    thead { tr {
                        th { "Session" } th { "Host" } th { "Who" } th { "From" }
                        th { "Start" } th { "End" } th { "Root commands" } th { "Risk" }
                    } }
                    tbody {
                        @for s in &r.privileged {
                            tr {
                                td { a href=(format!("#{}", anchor(&s.summary))) { (s.summary.key) } }
                                td { (s.summary.host) }
                                td { (who(&s.summary)) }
                                td { (origin(&s.summary)) }
                                td { (s.summary.first) }
                                td { (s.summary.ended.clone().unwrap_or_else(|| "still open".into())) }
                                td { (s.root_commands.len()) }
                                td { (risk(s)) }
                            }
                        }
                    }
                }
                @if r.privileged.is_empty() { p.none { "No privileged sessions in this period." } }
                @for s in &r.privileged {
                    section id=(anchor(&s.summary)) {
                        h2 { "Session " (s.summary.key) " — " (who(&s.summary)) }
                        table {
                            tr { th { "Host" } td { (s.summary.host) } }
                            tr { th { "Login user" } td { (s.summary.user.clone().unwrap_or_else(|| s.summary.loginuid.to_string())) " (uid " (s.summary.loginuid) ")" } }
                            @if let Some(i) = &s.summary.identity {
                                tr { th { "Person" } td { (i.person) @if let Some(e) = &i.email { " <" (e) ">" } @if let Some(t) = &i.team { ", team " (t) } @if let Some(g) = &i.peer_group { ", peer group " (g) } } }
                            }
                            tr { th { "Entry" } td { (origin(&s.summary)) } }
                            @if let Some(o) = &s.summary.ssh {
                                tr { th { "SSH" } td { "from " (o.source_address) " port " (o.source_port) ", " (o.auth_method.clone().unwrap_or_else(|| "method unknown".into())) " " code { (o.key_fingerprint.clone().unwrap_or_default()) } } }
                            }
                            tr { th { "Time" } td { (s.summary.first) " to " (s.summary.ended.clone().unwrap_or_else(|| s.summary.last.clone())) } }
                            tr { th { "Activity" } td { (s.summary.counts.commands) " commands, " (s.summary.counts.files_opened) " files opened, " (s.summary.counts.bytes_read) " bytes read, " (s.summary.counts.connections) " connections, " (s.summary.counts.privilege_changes) " privilege changes" } }
                            tr { th { "Risk" } td { (risk(s)) } }
                            tr { th { "Replay" } td { code.replay { "vigil replay " (shell_word(&s.summary.key)) } " or " code.replay { "vigil export " (shell_word(&s.summary.key)) " --format asciicast -o session-" (s.summary.session) ".cast" } } }
                        }
                        h3 { "Commands run as root" }
                        @if s.root_commands.is_empty() { p.none { "none" } } @else {
                            table.commands {
                                thead { tr { th { "Time" } th { "Command" } th { "Via" } } }
                                tbody { @for c in &s.root_commands { tr { td { (c.time) } td { code { (c.argv) } } td { (c.via) } } } }
                            }
                        }
                        h3 { "Privilege changes" }
                        (list(&s.privilege_changes))
                        h3 { "Files read" }
                        @if s.files_read.is_empty() { p.none { "none" } } @else {
                            table { thead { tr { th { "File" } th { "Bytes" } } }
                                tbody { @for (f, b) in &s.files_read { tr { td { code { (f) } } td { (b) } } } } }
                        }
                        h3 { "Files written" }
                        (list(&s.files_written))
                        h3 { "Network connections" }
                        (list(&s.connections))
                        h3 { "Responses" }
                        (list(&s.responses))
                    }
                }
            }
        }
    };
    // maud escapes HTML; what it leaves (controls, bidi overrides that make `gpj.exe` read
    // `exe.jpg`, zero-width characters) is shown as escapes, in every field at once.
    crate::present::visible(&page.into_string())
}

/// The nearest processes above a command: enough to see sudo or su, not the whole host tree.
fn via(ancestry: &[crate::event::Ancestor]) -> String {
    const SHOWN: usize = 6;
    let names: Vec<&str> = ancestry.iter().map(|a| a.name.as_str()).collect();
    let start = names.len().saturating_sub(SHOWN);
    let mut text = names[start..].join(" → ");
    if start > 0 {
        text.insert_str(0, "… → ");
    }
    text
}

fn who(s: &SessionSummary) -> String {
    let user = s.user.clone().unwrap_or_else(|| s.loginuid.to_string());
    match &s.identity {
        Some(i) => format!("{} ({user})", i.person),
        None => user,
    }
}

fn origin(s: &SessionSummary) -> String {
    let entry = s.entry.map(|e| e.as_str()).unwrap_or("unknown");
    match &s.ssh {
        Some(o) => format!("{entry} from {}:{}", o.source_address, o.source_port),
        None => entry.to_string(),
    }
}

fn risk(s: &SessionEvidence) -> String {
    match &s.risk {
        Some((score, reasons)) => format!("{score:.0}: {}", reasons.join("; ")),
        None => "not scored".into(),
    }
}
