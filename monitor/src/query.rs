//! Session queries for security teams, over the local spool: `vigil sessions` lists login
//! sessions with what they did, `vigil session <id>` shows one as a time-ordered timeline with its
//! process tree.
//!
//! A session is identified by its [`SessionKey`] (host, boot id, audit session id): ids restart
//! at every boot, so two boots' session 1 are two sessions even in one spool.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
};

use serde::Serialize;

use crate::{
    directory::CorporateIdentity,
    event::{Ancestor, Event, EventBody, SessionCounts, SessionKey, SessionSelector, SshOrigin},
    spool::{read_all, SpoolError, SpoolItem},
};

/// Which sessions to list.
#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    /// Login uid of the session.
    pub loginuid: Option<u32>,
    /// Host name (a spool holds this host only).
    pub host: Option<String>,
    /// The sessions this names only (an id, with or without its host and boot).
    pub session: Option<SessionSelector>,
    /// Sessions active at or after this wall-clock time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Sessions that started at or before this time.
    pub until_ns: Option<i64>,
    /// Sessions of this person (name or email in the identity mapping; case does not matter).
    pub person: Option<String>,
    /// Sessions of people in this peer group.
    pub peer_group: Option<String>,
    /// Sessions whose risk reached at least this.
    pub min_risk: Option<u32>,
}

impl SessionFilter {
    /// Whether a session's corporate identity passes the person and peer-group filters.
    pub fn identity_matches(&self, identity: Option<&CorporateIdentity>) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let person_ok = self.person.as_deref().is_none_or(|want| {
            identity.is_some_and(|i| {
                same(&i.person, want) || i.email.as_deref().is_some_and(|e| same(e, want))
            })
        });
        let group_ok = self.peer_group.as_deref().is_none_or(|want| {
            identity.is_some_and(|i| i.peer_group.as_deref().is_some_and(|g| same(g, want)))
        });
        person_ok && group_ok
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionSummary {
    /// The audit session id: with `host` and `boot_id`, the session's key.
    pub session: u32,
    pub host: String,
    /// Empty for sessions recorded before boot ids were kept.
    pub boot_id: String,
    /// `host/boot/session`, as `vigil session` takes it back.
    pub key: String,
    pub loginuid: u32,
    /// The login user's name as recorded on the host (never looked up where it is read: a uid
    /// can belong to someone else there).
    pub user: Option<String>,
    pub first: String,
    pub last: String,
    pub first_ns: i64,
    pub last_ns: i64,
    /// What it did (`events`, `commands`, `files_opened`, `bytes_read`, `connections`,
    /// `privilege_changes`), counted by [`SessionCounts::count`].
    #[serde(flatten)]
    pub counts: SessionCounts,
    /// It ran as root: gained root in view (a set*id call, a setuid exec), or was root already
    /// when first seen.
    pub gained_root: bool,
    pub ttys: BTreeSet<String>,
    /// How the session was entered, from its start event.
    pub entry: Option<crate::event::SessionEntry>,
    pub ssh: Option<SshOrigin>,
    /// The login user's corporate identity (identity mapping file).
    pub identity: Option<CorporateIdentity>,
    /// The processes above the session's first process.
    pub ancestry: Vec<Ancestor>,
    /// When its last process exited; None while it is still going (or its end was not seen).
    pub ended: Option<String>,
    /// Risk (0-100) from detection, with the reasons; None when no rule matched.
    pub risk: Option<u32>,
    pub risk_reasons: Vec<String>,
}

impl SessionSummary {
    pub fn session_key(&self) -> SessionKey {
        SessionKey {
            host: self.host.as_str().into(),
            boot_id: self.boot_id.as_str().into(),
            session: self.session,
        }
    }
}

/// Everything in the spool that belongs to a login session, with the damage notes. A spool
/// holds one host's events: records written before events carried their host get this one's.
fn session_events(
    spool: &Path,
    mut keep: impl FnMut(&SessionKey, &Event) -> bool,
) -> Result<(Vec<Event>, Vec<Event>), SpoolError> {
    let this_host: std::sync::Arc<str> = crate::event::Origin::this_process().host.clone();
    let mut events = Vec::new();
    let mut damage = Vec::new();
    read_all(spool, 0, |item| match item {
        SpoolItem::Event { mut event, .. } => {
            if event.host.is_empty() {
                event.host = this_host.clone();
            }
            if let Some(key) = event.session_key() {
                if keep(&key, &event) {
                    events.push(*event);
                }
            } else if matches!(event.body, EventBody::Loss(_)) {
                damage.push(*event);
            }
        }
        SpoolItem::Damaged(event) => damage.push(*event),
    })?;
    Ok((events, damage))
}

/// What a read of a store found, and the damage seen on the way: loss records (kernel or
/// spool losses, rows that did not decode) that say the answer may be incomplete.
pub type WithDamage<T> = (T, Vec<Event>);

/// The session risk a reviewer starts from (`vigil sessions --min-risk` without a value): the
/// lowest that at most 1% of the detection bench's benign sessions reach, scripted, interactive
/// and against learnt baselines alike (`cargo xtask bench detect` prints the distribution and
/// fails when it no longer gives this).
pub const REVIEW_MIN_RISK: u32 = 5;

/// Lists the sessions in the spool matching `filter`, oldest first.
pub fn sessions(
    spool: &Path,
    filter: &SessionFilter,
) -> Result<WithDamage<Vec<SessionSummary>>, SpoolError> {
    let (events, damage) = session_events(spool, |key, e| {
        filter.session.as_ref().is_none_or(|s| s.matches(key))
            && filter.host.as_deref().is_none_or(|h| *key.host == *h)
            && (filter.loginuid.is_none() || e.process.loginuid == filter.loginuid)
    })?;
    let mut listed: Vec<SessionSummary> = summaries(&events)
        .into_values()
        .filter(|s| filter.identity_matches(s.identity.as_ref()))
        .filter(|s| filter.min_risk.is_none_or(|m| s.risk.unwrap_or(0) >= m))
        .filter(|s| filter.since_ns.is_none_or(|t| s.last_ns >= t))
        .filter(|s| filter.until_ns.is_none_or(|t| s.first_ns <= t))
        .collect();
    // Oldest first, as ClickHouse lists them; the key breaks ties the same way there.
    listed.sort_by(|a, b| (a.first_ns, &a.key).cmp(&(b.first_ns, &b.key)));
    Ok((listed, damage))
}

/// The summary of each session among `events`.
pub fn summaries(events: &[Event]) -> BTreeMap<SessionKey, SessionSummary> {
    let mut by_session: BTreeMap<SessionKey, SessionSummary> = BTreeMap::new();
    for e in events {
        let Some(key) = e.session_key() else {
            continue;
        };
        let s = by_session
            .entry(key)
            .or_insert_with_key(|key| SessionSummary {
                session: key.session,
                host: key.host.to_string(),
                boot_id: key.boot_id.to_string(),
                key: key.to_string(),
                loginuid: e.process.loginuid.unwrap_or(u32::MAX),
                user: None,
                first: e.time.clone(),
                last: e.time.clone(),
                first_ns: e.time_ns,
                last_ns: e.time_ns,
                counts: SessionCounts::default(),
                gained_root: false,
                ttys: BTreeSet::new(),
                entry: None,
                ssh: None,
                identity: None,
                ancestry: Vec::new(),
                ended: None,
                risk: None,
                risk_reasons: Vec::new(),
            });
        if e.time_ns < s.first_ns {
            s.first_ns = e.time_ns;
            s.first = e.time.clone();
        }
        if e.time_ns > s.last_ns {
            s.last_ns = e.time_ns;
            s.last = e.time.clone();
        }
        s.counts.count(e);
        if s.user.is_none() {
            s.user = e.process.login_user.as_deref().map(str::to_string);
        }
        match &e.body {
            EventBody::Exec(x) => {
                if let Some(t) = &x.tty {
                    s.ttys.insert(t.clone());
                }
            }
            EventBody::Priv(p) => s.gained_root |= p.gained_root,
            EventBody::SessionStart(start) => {
                s.gained_root |= start.root_when_seen;
                s.entry = Some(start.entry);
                s.ssh = start.ssh.clone();
                s.identity = start.identity.clone();
                s.ancestry = start.ancestry.clone();
                if s.user.is_none() {
                    s.user = start.login_user.clone();
                }
            }
            EventBody::SessionEnd(_) => s.ended = Some(e.time.clone()),
            EventBody::Alert(a) if s.risk.is_none_or(|r| a.session_risk >= r) => {
                s.risk = Some(a.session_risk);
                s.risk_reasons = a.reasons.clone();
            }
            _ => {}
        }
    }
    by_session
}

/// Which alerts to list.
#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    pub loginuid: Option<u32>,
    pub host: Option<String>,
    pub session: Option<SessionKey>,
    pub rule: Option<String>,
    pub min_severity: Option<crate::detect::rules::Severity>,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
}

impl AlertFilter {
    pub fn matches(&self, e: &Event) -> bool {
        let EventBody::Alert(a) = &e.body else {
            return false;
        };
        self.loginuid.is_none_or(|u| e.process.loginuid == Some(u))
            && self.host.as_deref().is_none_or(|h| *e.host == *h)
            && self
                .session
                .as_ref()
                .is_none_or(|s| e.session_key().as_ref() == Some(s))
            && self.rule.as_deref().is_none_or(|r| a.rule == r)
            && self.min_severity.is_none_or(|m| a.severity >= m)
            && self.since_ns.is_none_or(|t| e.time_ns >= t)
            && self.until_ns.is_none_or(|t| e.time_ns <= t)
    }
}

/// The alerts of one rule in one session: the first's details, how many, the last's time, the
/// highest session risk they reached.
pub struct AlertGroup<'a> {
    pub first: &'a Event,
    pub last_time: &'a str,
    pub count: usize,
    pub session_risk: u32,
}

/// `alerts` grouped by session and rule, in the order of each group's first alert; with
/// `each`, every alert is a group of its own.
pub fn group_alerts(alerts: &[Event], each: bool) -> Vec<AlertGroup<'_>> {
    let mut groups: Vec<AlertGroup> = Vec::new();
    let mut index: std::collections::HashMap<(Option<SessionKey>, &str), usize> =
        std::collections::HashMap::new();
    for e in alerts {
        let EventBody::Alert(al) = &e.body else {
            continue;
        };
        let key = (e.session_key(), al.rule.as_str());
        if let Some(g) = index.get(&key).filter(|_| !each).map(|&i| &mut groups[i]) {
            g.count += 1;
            g.last_time = &e.time;
            g.session_risk = g.session_risk.max(al.session_risk);
            continue;
        }
        index.insert(key, groups.len());
        groups.push(AlertGroup {
            first: e,
            last_time: &e.time,
            count: 1,
            session_risk: al.session_risk,
        });
    }
    groups
}

/// The alerts in the spool matching `filter`, oldest first.
pub fn alerts(spool: &Path, filter: &AlertFilter) -> Result<WithDamage<Vec<Event>>, SpoolError> {
    let (mut events, damage) = session_events(spool, |_, e| filter.matches(e))?;
    events.sort_by_key(|e| e.time_ns);
    Ok((events, damage))
}

/// The events of each of `sessions`, in time order, in one pass over the spool.
pub fn events_of_sessions(
    spool: &Path,
    sessions: &BTreeSet<SessionKey>,
) -> Result<WithDamage<BTreeMap<SessionKey, Vec<Event>>>, SpoolError> {
    let (events, damage) = session_events(spool, |key, _| sessions.contains(key))?;
    let mut by: BTreeMap<SessionKey, Vec<Event>> = BTreeMap::new();
    for e in events {
        if let Some(key) = e.session_key() {
            by.entry(key).or_default().push(e);
        }
    }
    for v in by.values_mut() {
        v.sort_by_key(|e| e.mono_ns);
    }
    Ok((by, damage))
}

/// One session in time order.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub summary: Option<SessionSummary>,
    pub events: Vec<Event>,
    /// Spool damage found while reading (loss records): a timeline may be incomplete.
    pub damage: Vec<Event>,
}

fn bytes_text(b: &crate::event::RawBytes) -> String {
    crate::present::terminal_text(b.as_bytes())
}

/// The process tree of a timeline: each process with the commands it ran, children indented.
pub fn process_tree(events: &[Event]) -> String {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut commands: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in events {
        let pid = e.process.pid;
        parent.entry(pid).or_insert(e.process.ppid);
        match &e.body {
            EventBody::Fork(f) => {
                parent.insert(f.child_pid, pid);
            }
            EventBody::Exec(x) => {
                let argv: Vec<String> = x.argv.iter().map(bytes_text).collect();
                commands.entry(pid).or_default().push(argv.join(" "));
            }
            _ => {}
        }
    }
    let pids: BTreeSet<u32> = parent.keys().copied().collect();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (&pid, &pp) in &parent {
        if pids.contains(&pp) && pp != pid {
            children.entry(pp).or_default().push(pid);
        } else {
            roots.push(pid);
        }
    }
    let mut out = String::new();
    fn walk(
        pid: u32,
        depth: usize,
        children: &BTreeMap<u32, Vec<u32>>,
        commands: &BTreeMap<u32, Vec<String>>,
        out: &mut String,
        seen: &mut BTreeSet<u32>,
    ) {
        if !seen.insert(pid) || depth > 64 {
            return;
        }
        let cmds = commands
            .get(&pid)
            .map(|c| c.join(" → "))
            .unwrap_or_default();
        let _ = writeln!(out, "{}{pid} {cmds}", "  ".repeat(depth));
        for &c in children.get(&pid).into_iter().flatten() {
            walk(c, depth + 1, children, commands, out, seen);
        }
    }
    let mut seen = BTreeSet::new();
    for r in roots {
        walk(r, 0, &children, &commands, &mut out, &mut seen);
    }
    out
}

/// A time argument that names no time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeArgError {
    #[error("`{0}` is before 1970")]
    BeforeEpoch(String),
    #[error("`{0}` is neither a time (2026-11-25T10:00:00Z) nor a duration ago (2h, 3d)")]
    Unreadable(String),
}

/// Parses a time argument: RFC 3339 (`2026-11-25T10:00:00Z`), or a duration ago (`2h`, `3d`).
pub fn parse_time(arg: &str, now_ns: i64) -> Result<i64, TimeArgError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(arg) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .map_err(|_| TimeArgError::BeforeEpoch(arg.to_string()));
    }
    match humantime::parse_duration(arg) {
        Ok(d) => Ok(now_ns - d.as_nanos() as i64),
        Err(_) => Err(TimeArgError::Unreadable(arg.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{samples::sample, EventType};

    #[test]
    fn times_parse_absolute_and_relative() {
        let now = 1_800_000_000_000_000_000;
        assert_eq!(parse_time("2h", now).unwrap(), now - 7_200_000_000_000);
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", now).unwrap(),
            1_767_225_600_000_000_000
        );
        assert_eq!(
            parse_time("yesterday-ish", now),
            Err(TimeArgError::Unreadable("yesterday-ish".into()))
        );
    }
    #[test]
    fn the_readme_states_the_review_threshold_the_code_uses() {
        let readme = include_str!("../../README.md");
        let stated = format!("`--min-risk` alone: the review threshold, {REVIEW_MIN_RISK},");
        assert!(
            readme.replace('\n', " ").contains(&stated),
            "README.md must say {stated:?}"
        );
    }

    fn alert(session: u32, rule: &str, time: &str, risk: u32) -> Event {
        let mut e = sample(EventType::Alert);
        e.process.sessionid = Some(session);
        e.time = time.to_string();
        if let EventBody::Alert(al) = &mut e.body {
            al.rule = rule.to_string();
            al.session_risk = risk;
        }
        e
    }

    #[test]
    fn alerts_of_one_rule_in_one_session_are_one_group() {
        let alerts = vec![
            alert(7, "noisy", "t1", 10),
            alert(8, "quiet", "t2", 40),
            alert(7, "noisy", "t3", 30),
            alert(7, "other", "t4", 35),
            alert(7, "noisy", "t5", 35),
        ];
        let groups = group_alerts(&alerts, false);
        let seen: Vec<(u32, &str, usize, &str, &str, u32)> = groups
            .iter()
            .map(|g| {
                let EventBody::Alert(al) = &g.first.body else {
                    unreachable!("only alerts are grouped")
                };
                (
                    g.first.process.sessionid.unwrap_or(0),
                    al.rule.as_str(),
                    g.count,
                    g.first.time.as_str(),
                    g.last_time,
                    g.session_risk,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (7, "noisy", 3, "t1", "t5", 35),
                (8, "quiet", 1, "t2", "t2", 40),
                (7, "other", 1, "t4", "t4", 35),
            ]
        );
        // `--each`: every alert its own line, in order, with its own risk.
        let each: Vec<(&str, usize, u32)> = group_alerts(&alerts, true)
            .iter()
            .map(|g| (g.first.time.as_str(), g.count, g.session_risk))
            .collect();
        assert_eq!(
            each,
            vec![
                ("t1", 1, 10),
                ("t2", 1, 40),
                ("t3", 1, 30),
                ("t4", 1, 35),
                ("t5", 1, 35)
            ]
        );
    }
}

/// What the spool holds: `vigil spool stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpoolStats {
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub events: u64,
    pub loss_records: u64,
    /// Sum of the counts of loss records, by the stage that lost them (`spool`, `kernel`, ...).
    pub lost: BTreeMap<crate::event::LossStage, u64>,
    pub damaged: u64,
}

pub fn spool_stats(spool: &Path) -> Result<SpoolStats, SpoolError> {
    let mut st = SpoolStats::default();
    read_all(spool, 0, |item| match item {
        SpoolItem::Event { seq, event } => {
            st.first_seq.get_or_insert(seq);
            st.last_seq = Some(seq);
            match event.body {
                EventBody::Loss(l) => {
                    st.loss_records += 1;
                    *st.lost.entry(l.stage).or_default() += l.count;
                }
                _ => st.events += 1,
            }
        }
        SpoolItem::Damaged(_) => st.damaged += 1,
    })?;
    Ok(st)
}
