//! Behavioural baselines: what each user (and each peer group) normally does on this host, learnt
//! from the event stream, and anomalies scored against it once the learning period is over.
//!
//! A profile holds the hours of the week the user is active, the binaries they run, the
//! destinations they connect to, the sensitive paths they touch, the hosts they use and the bytes
//! they read per day. A profile learns for `learning_period` from its first observation; after
//! that every event is scored (first-seen and rare activity, volume far above the norm, activity
//! at unusual hours) and then learnt too, so a first-seen binary is first-seen once.
//!
//! State is kept in a JSON file (written atomically, every `save_every` and at shutdown) so a
//! restart neither forgets the baselines nor starts learning again. Hours are UTC hours of the
//! week, Monday 00:00 first.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::rules::Severity;
use crate::event::{Event, EventBody};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    pub enabled: bool,
    /// Where the learnt state lives; empty: `baseline.json` in the spool directory.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How long a new profile only learns (`14d`, `36h`, ...).
    pub learning_period: String,
    /// How often the state is written (it is also written at shutdown).
    pub save_every: String,
    /// Paths counted as sensitive: a prefix, or with a leading `*` a fragment anywhere.
    pub sensitive_paths: Vec<String>,
    /// A day's reads are anomalous above this many times the user's daily mean ...
    pub volume_factor: f64,
    /// ... and above this many bytes.
    pub volume_min_bytes: u64,
    /// Days of history needed before volume is scored.
    pub volume_min_days: u32,
    /// A binary run once before is rare once the user has run this many commands.
    pub rare_min_commands: u64,
}

/// A duration setting that does not read as one, or is too short.
#[derive(Debug, thiserror::Error)]
pub enum DurationSettingError {
    #[error("`{text}`: {source}")]
    Unreadable {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("`{0}` is below 100ms")]
    TooShort(String),
}

fn parse_setting(text: &str) -> Result<Duration, DurationSettingError> {
    humantime::parse_duration(text).map_err(|source| DurationSettingError::Unreadable {
        text: text.to_string(),
        source,
    })
}

impl BaselineConfig {
    pub fn learning(&self) -> Result<Duration, DurationSettingError> {
        parse_setting(&self.learning_period)
    }

    pub fn save_interval(&self) -> Result<Duration, DurationSettingError> {
        let d = parse_setting(&self.save_every)?;
        if d < Duration::from_millis(100) {
            return Err(DurationSettingError::TooShort(self.save_every.clone()));
        }
        Ok(d)
    }

    pub fn state_path(&self, spool_dir: &Path) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| spool_dir.join("baseline.json"))
    }
}

/// A list of [`PathPattern`]s compiled once into one automaton: whether any matches a path is
/// one pass over it (every open is checked, and one `starts_with` or `contains` per pattern
/// was a measurable part of the daemon's time).
pub struct PathPatterns {
    automaton: aho_corasick::AhoCorasick,
    /// By pattern index: a prefix (must match at the start) or a fragment (anywhere).
    prefix: Vec<bool>,
}

impl PathPatterns {
    pub fn new(patterns: &[String]) -> Result<PathPatterns, aho_corasick::BuildError> {
        let parsed: Vec<PathPattern> = patterns.iter().map(|p| PathPattern::parse(p)).collect();
        Ok(PathPatterns {
            // Standard semantics: overlapping matches are all reported, so a fragment found
            // inside a longer pattern's match is not lost.
            automaton: aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(parsed.iter().map(|p| p.text()))?,
            prefix: parsed
                .iter()
                .map(|p| matches!(p, PathPattern::Prefix(_)))
                .collect(),
        })
    }

    /// Whether any pattern matches `path`, as [`PathPattern::matches`] says.
    pub fn matches(&self, path: &str) -> bool {
        self.automaton
            .find_overlapping_iter(path)
            .any(|m| m.start() == 0 || !self.prefix[m.pattern().as_usize()])
    }
}

/// One `sensitive_paths` entry: a prefix, or with a leading `*` a fragment anywhere. The one
/// reading of that notation, for the daemon's baselines and ClickHouse's fleet view alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPattern<'a> {
    Prefix(&'a str),
    Fragment(&'a str),
}

impl<'a> PathPattern<'a> {
    pub fn parse(pattern: &'a str) -> PathPattern<'a> {
        match pattern.strip_prefix('*') {
            Some(fragment) => PathPattern::Fragment(fragment),
            None => PathPattern::Prefix(pattern),
        }
    }

    fn text(self) -> &'a str {
        match self {
            PathPattern::Prefix(t) | PathPattern::Fragment(t) => t,
        }
    }

    pub fn matches(self, path: &str) -> bool {
        match self {
            PathPattern::Prefix(p) => path.starts_with(p),
            PathPattern::Fragment(f) => path.contains(f),
        }
    }
}

/// Entries kept per profile and dimension; beyond this nothing new is learnt (counted in
/// `vigil_baseline_full_total`), so a hostile user cannot grow the state without bound.
const MAX_ENTRIES: usize = 4096;
/// Days of read volume kept.
const VOLUME_DAYS: i64 = 60;
/// Alerts per anomaly kind and session (the risk counts once anyway).
const MAX_PER_SESSION: usize = 5;
const STATE_VERSION: u32 = 1;
const NS_PER_DAY: i64 = 86_400_000_000_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Wall time of the first observation (ns since the epoch).
    pub since_ns: i64,
    /// Commands per UTC hour of the week (Monday 00:00 = 0).
    pub hours: Vec<u64>,
    pub commands: u64,
    pub binaries: BTreeMap<String, u64>,
    pub destinations: BTreeMap<String, u64>,
    pub sensitive_paths: BTreeMap<String, u64>,
    pub hosts: BTreeMap<String, u64>,
    /// Bytes read per day (days since the epoch).
    pub daily_bytes: BTreeMap<i64, u64>,
}

impl Profile {
    fn new(now_ns: i64) -> Profile {
        Profile {
            since_ns: now_ns,
            hours: vec![0; 168],
            ..Default::default()
        }
    }

    fn ready(&self, now_ns: i64, learning: Duration) -> bool {
        now_ns.saturating_sub(self.since_ns) >= learning.as_nanos().min(i64::MAX as u128) as i64
    }

    /// The mean bytes read per active day before `today`, and how many such days.
    fn volume_norm(&self, today: i64) -> (f64, u32) {
        let past: Vec<u64> = self
            .daily_bytes
            .range(..today)
            .map(|(_, &b)| b)
            .filter(|&b| b > 0)
            .collect();
        if past.is_empty() {
            return (0.0, 0);
        }
        (
            past.iter().sum::<u64>() as f64 / past.len() as f64,
            past.len() as u32,
        )
    }
}

fn learn(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_ENTRIES {
        map.insert(key.to_string(), 1);
    } else {
        metrics::counter!("vigil_baseline_full_total").increment(1);
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    users: BTreeMap<String, Profile>,
    groups: BTreeMap<String, Profile>,
}

/// An anomaly found against a baseline, to become an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub id: &'static str,
    pub title: String,
    pub severity: Severity,
    pub risk: u32,
}

#[derive(Default)]
struct SessionView {
    // Shared, not owned: every fact of the session names them.
    user: Option<Arc<str>>,
    group: Option<Arc<str>>,
    /// (anomaly id, value) already reported, and reports per id.
    reported: HashSet<(&'static str, String)>,
    per_id: HashMap<&'static str, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline: {key}: {source}")]
    Config {
        key: &'static str,
        #[source]
        source: DurationSettingError,
    },
    #[error("baseline: detection.baseline.sensitive_paths: {0}")]
    SensitivePaths(#[source] aho_corasick::BuildError),
    /// Another process (a running daemon, another `vigil baselines learn`) holds the state.
    #[error(
        "the baseline state {path} is in use by another process (a running daemon?); stop it first"
    )]
    InUse { path: PathBuf },
    #[error("cannot lock the baseline state {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the baseline state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Baselines {
    cfg: BaselineConfig,
    sensitive: PathPatterns,
    learning: Duration,
    save_every: Duration,
    path: PathBuf,
    host: String,
    state: State,
    sessions: crate::IdMap<u32, SessionView>,
    dirty: bool,
    saved: Instant,
    /// Held while this holds the state: one writer per state file, or the last to save would
    /// silently undo what the other learnt.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// What [`Baselines::learn_history`] made of a recorded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Learnt {
    pub events: usize,
    /// Left out: recorded on another host (a host's baselines are its own).
    pub other_hosts: usize,
    /// User and peer-group profiles afterwards.
    pub profiles: usize,
}

/// Which of a user's facts an event carries.
enum Fact {
    /// A program run: its canonical path, and whether it is trusted to be what that path says
    /// (a packaged program at its own path: see `ProcessExe::trusted`).
    Binary {
        path: String,
        trusted: bool,
    },
    Destination(String),
    SensitivePath(String),
    Bytes(u64),
    Host,
}

impl Baselines {
    /// Loads the state at `cfg.state_path(spool_dir)`. A state file that cannot be read as
    /// state is set aside (renamed `.corrupt`) with an error logged, and learning starts over.
    pub fn open(
        cfg: BaselineConfig,
        spool_dir: &Path,
        host: String,
    ) -> Result<Self, BaselineError> {
        let learning = cfg.learning().map_err(|source| BaselineError::Config {
            key: "detection.baseline.learning_period",
            source,
        })?;
        let save_every = cfg
            .save_interval()
            .map_err(|source| BaselineError::Config {
                key: "detection.baseline.save_every",
                source,
            })?;
        let sensitive =
            PathPatterns::new(&cfg.sensitive_paths).map_err(BaselineError::SensitivePaths)?;
        let path = cfg.state_path(spool_dir);
        let lock = lock_state(&path)?;
        let state = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s)
                    if s.version == STATE_VERSION
                        && s.users
                            .values()
                            .chain(s.groups.values())
                            .all(|p| p.hours.len() == 168) =>
                {
                    tracing::info!(path = %path.display(), users = s.users.len(), groups = s.groups.len(), "baselines loaded");
                    s
                }
                other => {
                    let why = match other {
                        Ok(_) => "unknown version or shape".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let aside = path.with_extension("json.corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    metrics::counter!("vigil_baseline_state_corrupt_total").increment(1);
                    tracing::error!(path = %path.display(), aside = %aside.display(), "baseline state unreadable ({why}); kept aside, learning starts over");
                    State::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read the baseline state ({e}); learning starts over");
                State::default()
            }
        };
        Ok(Baselines {
            cfg,
            sensitive,
            learning,
            save_every,
            path,
            host,
            state: State {
                version: STATE_VERSION,
                ..state
            },
            sessions: Default::default(),
            dirty: false,
            saved: Instant::now(),
            _lock: lock,
        })
    }

    /// Learns from a recorded stream (a spool's, an export's), in the order given, through the
    /// path live events take, so seeded history is history the daemon could have seen. What it
    /// would have raised is not reported: it is the past.
    pub fn learn_history<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> Learnt {
        let mut learnt = Learnt::default();
        let mut discarded = Vec::new();
        for event in events {
            if !event.host.is_empty() && *event.host != *self.host {
                learnt.other_hosts += 1;
                continue;
            }
            learnt.events += 1;
            self.observe(event, &mut discarded);
            discarded.clear();
        }
        // Sessions the history left open are not this process's to carry on.
        self.sessions.clear();
        learnt.profiles = self.state.users.len() + self.state.groups.len();
        learnt
    }

    /// Scores `event` against its user's and peer group's baselines, then learns from it.
    pub fn observe(&mut self, event: &Event, out: &mut Vec<Anomaly>) {
        let (Some(sid), Some(loginuid)) = (event.process.sessionid, event.process.loginuid) else {
            return;
        };
        let view = self.sessions.entry(sid).or_default();
        match &event.body {
            EventBody::SessionStart(s) => {
                view.user = s.login_user.as_deref().map(Arc::from);
                view.group = s
                    .identity
                    .as_ref()
                    .and_then(|i| i.peer_group.as_deref())
                    .map(Arc::from);
            }
            EventBody::SessionEnd(_) => {
                self.sessions.remove(&sid);
                self.maybe_save();
                return;
            }
            _ => {}
        }
        let fact = match &event.body {
            EventBody::Exec(x) => Some(Fact::Binary {
                path: x.filename.lossy(),
                trusted: event.process.exe.as_ref().is_some_and(|e| e.trusted),
            }),
            EventBody::Connect(c)
                if c.family != crate::event::AddressFamily::Unix
                    && (c.result.ok() || c.result.error.as_deref() == Some("EINPROGRESS")) =>
            {
                c.address
                    .as_ref()
                    .map(|a| a.lossy())
                    .filter(|a| !a.starts_with("127.") && a != "::1")
                    .map(|a| {
                        Fact::Destination(match c.port {
                            Some(p) if a.contains(':') => format!("[{a}]:{p}"),
                            Some(p) => format!("{a}:{p}"),
                            None => a,
                        })
                    })
            }
            EventBody::Open(o) if o.result.ok() => {
                let p = o.path.text();
                self.sensitive
                    .matches(&p)
                    .then(|| Fact::SensitivePath(p.into_owned()))
            }
            EventBody::FileRead(r) if r.bytes > 0 => Some(Fact::Bytes(r.bytes)),
            EventBody::OpensFolded(f) if f.bytes > 0 => Some(Fact::Bytes(f.bytes)),
            EventBody::SessionStart(_) => Some(Fact::Host),
            _ => None,
        };
        let Some(fact) = fact else {
            return;
        };
        // Who it counts for, worked out once per session and only for events that are facts
        // (the login uid, and so the name, is the session's own).
        let view = self.sessions.entry(sid).or_default();
        let user: Arc<str> = view
            .user
            .get_or_insert_with(|| {
                event
                    .process
                    .login_user
                    .clone()
                    .unwrap_or_else(|| format!("uid:{loginuid}").into())
            })
            .clone();
        let group = view.group.clone();
        let now = event.time_ns;
        let found = self.score(&user, group.as_deref(), &fact, now);
        let view = self.sessions.entry(sid).or_default();
        for (a, value) in found {
            let n = view.per_id.entry(a.id).or_default();
            if *n < MAX_PER_SESSION && view.reported.insert((a.id, value)) {
                *n += 1;
                metrics::counter!("vigil_baseline_anomalies_total", "kind" => a.id).increment(1);
                out.push(a);
            }
        }
        let host = &self.host;
        let hour = hour_of_week(now);
        let learn_into = |p: &mut Profile| match &fact {
            Fact::Binary { path, .. } => {
                learn(&mut p.binaries, path);
                p.commands += 1;
                p.hours[hour] += 1;
            }
            Fact::Destination(d) => learn(&mut p.destinations, d),
            Fact::SensitivePath(s) => learn(&mut p.sensitive_paths, s),
            Fact::Host => learn(&mut p.hosts, host),
            Fact::Bytes(b) => {
                let day = now.div_euclid(NS_PER_DAY);
                *p.daily_bytes.entry(day).or_default() += b;
                while p.daily_bytes.len() > VOLUME_DAYS as usize {
                    p.daily_bytes.pop_first();
                }
            }
        };
        // Looked up before an entry is made: the key is allocated once per user, not per fact.
        for (profiles, name) in [
            (&mut self.state.users, Some(&user)),
            (&mut self.state.groups, group.as_ref()),
        ] {
            let Some(name) = name else { continue };
            match profiles.get_mut(&**name) {
                Some(p) => learn_into(p),
                None => learn_into(
                    profiles
                        .entry(name.to_string())
                        .or_insert_with(|| Profile::new(now)),
                ),
            }
        }
        self.dirty = true;
        self.maybe_save();
    }

    /// Anomalies of `fact` for `user` (with the value that makes each distinct).
    ///
    /// Scored against the user's own history once it has learnt for `learning_period`; before
    /// that (an account new to this host, or a colleague on a host they never used) against
    /// their peer group's, so a newcomer is not left unscored for weeks. What the peer group
    /// does is ordinary for each of its members: a binary, destination or sensitive path first
    /// seen for the user but known in the group is learnt without an alert.
    fn score(
        &self,
        user: &str,
        group: Option<&str>,
        fact: &Fact,
        now: i64,
    ) -> Vec<(Anomaly, String)> {
        let mut found = Vec::new();
        let ready = |p: &&Profile| p.ready(now, self.learning);
        let own = self.state.users.get(user).filter(ready);
        let peers = group.and_then(|g| self.state.groups.get(g).filter(ready).map(|p| (g, p)));
        let (profile, whose): (_, Cow<'_, str>) = match (own, peers) {
            (Some(p), _) => (p, user.into()),
            (None, Some((g, p))) => (
                p,
                format!("{user} (new here, against peer group {g})").into(),
            ),
            (None, None) => return found,
        };
        let is_own = own.is_some();
        type Known = fn(&Profile) -> &BTreeMap<String, u64>;
        let known = |dimension: Known, value: &str| {
            dimension(profile).contains_key(value)
                || peers.is_some_and(|(_, p)| dimension(p).contains_key(value))
        };
        let mut first_seen = |id: &'static str, what: &str, value: &str, dimension: Known, risk| {
            if !known(dimension, value) {
                found.push((
                    Anomaly {
                        id,
                        title: format!("First-seen {what} for {whose}: {value}"),
                        severity: Severity::Medium,
                        risk,
                    },
                    value.to_string(),
                ));
            }
        };
        match fact {
            Fact::Binary { path, trusted } => {
                // A packaged program at its own path that nobody in the peer group ran is new
                // but ordinary (a first `lsblk`, `stat`): learnt and counted, not alerted. A
                // program no package put there (copied, renamed, downloaded, built) is reported.
                if *trusted && !known(|p| &p.binaries, path) {
                    metrics::counter!("vigil_baseline_first_seen_packaged_total").increment(1);
                } else {
                    first_seen("anomaly-new-binary", "binary", path, |p| &p.binaries, 15);
                }
                if is_own
                    && profile.binaries.get(path) == Some(&1)
                    && profile.commands >= self.cfg.rare_min_commands
                {
                    found.push((
                        Anomaly {
                            id: "anomaly-rare-binary",
                            title: format!(
                                "Rare binary for {user}: {path} (once in {} commands)",
                                profile.commands
                            ),
                            severity: Severity::Low,
                            risk: 5,
                        },
                        path.clone(),
                    ));
                }
                let h = hour_of_week(now);
                let near = [(h + 167) % 168, h, (h + 1) % 168];
                if profile.commands > 0 && near.iter().all(|&i| profile.hours[i] == 0) {
                    found.push((
                        Anomaly {
                            id: "anomaly-off-hours",
                            title: format!(
                                "{whose} active outside their usual hours ({})",
                                hour_name(h)
                            ),
                            severity: Severity::Medium,
                            risk: 15,
                        },
                        String::new(),
                    ));
                }
            }
            Fact::Destination(d) => first_seen(
                "anomaly-new-destination",
                "destination",
                d,
                |p| &p.destinations,
                10,
            ),
            Fact::SensitivePath(s) => first_seen(
                "anomaly-new-sensitive-path",
                "sensitive path",
                s,
                |p| &p.sensitive_paths,
                15,
            ),
            // A peer group's daily total is its members' sum: no norm for one newcomer.
            Fact::Bytes(b) if is_own => {
                let day = now.div_euclid(NS_PER_DAY);
                let today = profile.daily_bytes.get(&day).copied().unwrap_or(0) + b;
                let (mean, days) = profile.volume_norm(day);
                let limit = (mean * self.cfg.volume_factor).max(self.cfg.volume_min_bytes as f64);
                if days >= self.cfg.volume_min_days && today as f64 > limit {
                    found.push((
                        Anomaly {
                            id: "anomaly-volume",
                            title: format!(
                                "{user} read {} today, {:.0}× their daily mean of {} ({days} days)",
                                human_bytes(today),
                                today as f64 / mean.max(1.0),
                                human_bytes(mean as u64)
                            ),
                            severity: Severity::High,
                            risk: 25,
                        },
                        day.to_string(),
                    ));
                }
            }
            Fact::Bytes(_) | Fact::Host => {}
        }
        found
    }

    fn maybe_save(&mut self) {
        if self.dirty && self.saved.elapsed() >= self.save_every {
            if let Err(e) = self.save() {
                tracing::error!("{e}");
            }
        }
    }

    /// Writes the state now: atomically and durably (written whole, fsync'd, renamed over the
    /// old one, the directory fsync'd), owner-only.
    pub fn save(&mut self) -> Result<(), BaselineError> {
        let err = |source| BaselineError::Write {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_vec(&self.state).map_err(|e| err(e.into()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        crate::durable::write_atomic(&self.path, &text).map_err(err)?;
        self.dirty = false;
        self.saved = Instant::now();
        metrics::gauge!("vigil_baseline_profiles")
            .set((self.state.users.len() + self.state.groups.len()) as f64);
        Ok(())
    }

    pub fn profile(&self, user: &str) -> Option<&Profile> {
        self.state.users.get(user)
    }
}

/// An exclusive lock on `<state>.lock` (created beside the state, owner-only).
fn lock_state(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BaselineError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let lock_path = path.with_extension("json.lock");
    let err = |source| BaselineError::Lock {
        path: lock_path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => BaselineError::InUse {
                path: path.to_path_buf(),
            },
            other => err(other.into()),
        },
    )
}

/// UTC hour of the week, Monday 00:00 = 0 (1970-01-01 was a Thursday).
fn hour_of_week(ns: i64) -> usize {
    let hours = ns.div_euclid(3_600_000_000_000);
    ((hours + 3 * 24).rem_euclid(168)) as usize
}

fn hour_name(h: usize) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    format!("{} {:02}:00 UTC", DAYS[h / 24], h % 24)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_of_the_week_start_on_monday_utc() {
        // 2026-11-23 was a Monday.
        let monday = 1_795_392_000i64 * 1_000_000_000;
        assert_eq!(hour_of_week(monday), 0);
        assert_eq!(hour_of_week(monday + 3_600_000_000_000 * 25), 25);
        assert_eq!(hour_name(25), "Tue 01:00 UTC");
        assert_eq!(hour_of_week(0), 3 * 24);
    }

    #[test]
    fn volume_norm_ignores_today_and_idle_days() {
        let mut p = Profile::new(0);
        p.daily_bytes.insert(10, 100);
        p.daily_bytes.insert(11, 300);
        p.daily_bytes.insert(12, 0);
        p.daily_bytes.insert(13, 1_000_000);
        assert_eq!(p.volume_norm(13), (200.0, 2));
    }

    use crate::event::{samples::sample, EventType, RawBytes};

    const DAY: i64 = NS_PER_DAY;

    fn config() -> BaselineConfig {
        crate::config::Config::embedded().detection.baseline
    }

    /// An event of `user` (login uid `uid`, in peer group "oncall") in session `sid` at `t`.
    fn at(mut e: Event, uid: u32, sid: u32, t: i64) -> Event {
        e.time_ns = t;
        e.process.loginuid = Some(uid);
        e.process.sessionid = Some(sid);
        e.process.login_user = Some(format!("u{uid}").into());
        if let EventBody::SessionStart(s) = &mut e.body {
            s.login_user = Some(format!("u{uid}"));
            s.loginuid = uid;
            s.session = sid;
        }
        e
    }

    fn exec(path: &str, trusted: bool) -> Event {
        let mut e = sample(EventType::Exec);
        if let EventBody::Exec(x) = &mut e.body {
            x.filename = RawBytes::from(path);
        }
        if let Some(exe) = &mut e.process.exe {
            std::sync::Arc::make_mut(exe).trusted = trusted;
        }
        e
    }

    /// A session of `uid` at `t` running `programs`; returns the anomaly ids raised.
    fn session(
        b: &mut Baselines,
        uid: u32,
        sid: u32,
        t: i64,
        programs: &[(&str, bool)],
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        b.observe(&at(sample(EventType::SessionStart), uid, sid, t), &mut out);
        for (i, (p, trusted)) in programs.iter().enumerate() {
            b.observe(&at(exec(p, *trusted), uid, sid, t + i as i64), &mut out);
        }
        b.observe(
            &at(sample(EventType::SessionEnd), uid, sid, t + 100),
            &mut out,
        );
        out.iter().map(|a| a.id).collect()
    }

    fn history(b: &mut Baselines, now: i64) {
        // Three weeks of two colleagues' work at this hour of the day.
        for day in (1..=21).rev() {
            let t = now - day * DAY;
            session(
                b,
                1,
                day as u32 * 10,
                t,
                &[("/usr/bin/df", true), ("/usr/bin/ps", true)],
            );
            session(
                b,
                2,
                day as u32 * 10 + 1,
                t,
                &[("/usr/bin/df", true), ("/usr/bin/lsblk", true)],
            );
        }
    }

    #[test]
    fn the_peer_group_makes_a_colleagues_binary_ordinary_and_an_unpackaged_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Baselines::open(config(), dir.path(), "h".into()).unwrap();
        let now = 1_795_392_000 * 1_000_000_000 + 10 * 3_600_000_000_000;
        history(&mut b, now);
        // A colleague's binary, and a packaged one nobody ran: learnt, not alerted.
        assert_eq!(
            session(
                &mut b,
                1,
                900,
                now,
                &[("/usr/bin/lsblk", true), ("/usr/bin/lscpu", true)]
            ),
            Vec::<&str>::new()
        );
        // A copy no package put there: reported, once.
        assert_eq!(
            session(
                &mut b,
                1,
                901,
                now,
                &[("/tmp/sweep", false), ("/tmp/sweep", false)]
            ),
            vec!["anomaly-new-binary"]
        );
    }

    #[test]
    fn a_newcomer_is_scored_against_the_peer_group_until_their_own_history_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Baselines::open(config(), dir.path(), "h".into()).unwrap();
        let now = 1_795_392_000 * 1_000_000_000 + 10 * 3_600_000_000_000;
        history(&mut b, now);
        // User 3 never worked on this host: the group's programs are ordinary for them ...
        assert_eq!(
            session(&mut b, 3, 910, now, &[("/usr/bin/df", true)]),
            Vec::<&str>::new()
        );
        // ... one nobody in the group runs is not, and the title says against whom.
        let mut out = Vec::new();
        b.observe(&at(sample(EventType::SessionStart), 3, 911, now), &mut out);
        b.observe(&at(exec("/tmp/probe", false), 3, 911, now + 1), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].title.contains("against peer group oncall"),
            "{}",
            out[0].title
        );
        // Without a peer group, a newcomer is only learnt.
        let mut c = Baselines::open(config(), &dir.path().join("other"), "h".into()).unwrap();
        assert_eq!(
            session(&mut c, 3, 920, now, &[("/tmp/probe", false)]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn one_process_holds_a_state_and_history_learns_through_the_live_path() {
        let dir = tempfile::tempdir().unwrap();
        let host = sample(EventType::Exec).host.to_string();
        let mut b = Baselines::open(config(), dir.path(), host.clone()).unwrap();
        assert!(matches!(
            Baselines::open(config(), dir.path(), host.clone()),
            Err(BaselineError::InUse { .. })
        ));
        let now = 1_795_392_000 * 1_000_000_000;
        let mut events = vec![
            at(sample(EventType::SessionStart), 1, 1, now - 20 * DAY),
            at(exec("/usr/bin/df", true), 1, 1, now - 20 * DAY + 1),
        ];
        let mut elsewhere = at(exec("/usr/bin/ps", true), 1, 1, now - 20 * DAY + 2);
        elsewhere.host = "other-host".into();
        events.push(elsewhere);
        let learnt = b.learn_history(&events);
        assert_eq!((learnt.events, learnt.other_hosts), (2, 1));
        let p = b.profile("u1").expect("learnt");
        assert_eq!(p.since_ns, now - 20 * DAY);
        assert!(p.binaries.contains_key("/usr/bin/df") && !p.binaries.contains_key("/usr/bin/ps"));
        b.save().unwrap();
        drop(b);
        // Released with it, and what was learnt is there for the next.
        let b = Baselines::open(config(), dir.path(), host).unwrap();
        assert!(b.profile("u1").is_some());
    }

    #[test]
    fn compiled_path_patterns_answer_as_each_pattern_does() {
        let patterns: Vec<String> = [
            "/etc/shadow",
            "/etc/ssh/",
            "/root/",
            "*/.ssh/",
            "*id_rsa",
            "/etc/",
            "*/etc/shadow",
            "",
            "*",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let paths = [
            "/etc/shadow",
            "/etc/shadow-",
            "/x/etc/shadow",
            "/home/a/.ssh/id_rsa",
            "/home/a/.ssh",
            "/root",
            "/root/.bashrc",
            "/var/etc/ssh/x",
            "/tmp/id_rsa.pub",
            "",
            "/",
            "etc/shadow",
            "/etc",
        ];
        for subset in 0..(1u32 << patterns.len()) {
            let some: Vec<String> = patterns
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, p)| p.clone())
                .collect();
            let compiled = PathPatterns::new(&some).unwrap();
            for path in paths {
                let each = some.iter().any(|p| PathPattern::parse(p).matches(path));
                assert_eq!(compiled.matches(path), each, "{some:?} on {path:?}");
            }
        }
        let listed = PathPatterns::new(&patterns[..4]).unwrap();
        assert!(listed.matches("/etc/ssh/sshd_config"));
        assert!(!listed.matches("/usr/etc/x"));
        // Nothing listed matches nothing.
        assert!(!PathPatterns::new(&[]).unwrap().matches("/etc/shadow"));
    }
}
