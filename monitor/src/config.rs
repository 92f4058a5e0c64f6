//! Daemon configuration: one YAML document, with the embedded default as the base.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use vigil_common::{kind_bit, scope, Policy, EXEC_ARGV_MAX};

use crate::event::EventType;

pub const DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// Every problem found, each with its location (`file: key: message`, one per line).
    #[error("{}", problems.iter().map(|p| format!("{origin}: {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One problem in a configuration: where (a key path, and the line when it is known) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Environment variables that override configuration keys: `VIGIL_<SECTION>__<KEY>` (a double
/// underscore between levels; `VIGIL_CLICKHOUSE__URL`, `VIGIL_CAPTURE__MAX_ARGV_BYTES`), the
/// value read as YAML (`true`, `4096`, `[exec, open]`).
pub const ENV_PREFIX: &str = "VIGIL_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    LoginSessions,
    All,
}

/// `capture.syscall_hook`: the program every followed syscall's exit goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallHook {
    /// The cheapest the kernel accepts: fexit on each followed syscall's entry function, else
    /// the BTF-typed `sys_exit` tracepoint, else the raw one.
    Auto,
    /// The BTF-typed tracepoint where the kernel accepts it, else the raw one (never fexit).
    BtfTracepoint,
    /// The raw tracepoint only (what runs where the kernel refuses the typed one).
    RawTracepoint,
}

impl SyscallHook {
    /// The cheapest kernel hook this setting lets the daemon try.
    pub fn cheapest(self) -> crate::kernel::SysExitHook {
        use crate::kernel::SysExitHook;
        match self {
            SyscallHook::Auto => SysExitHook::Fexit,
            SyscallHook::BtfTracepoint => SysExitHook::BtfTracepoint,
            SyscallHook::RawTracepoint => SysExitHook::RawTracepoint,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    pub scope: Scope,
    pub syscall_hook: SyscallHook,
    /// Kinds the kernel emits (`EventType::captured`; the daemon's own kinds are refused).
    pub events: Vec<EventType>,
    pub max_argv_bytes: u32,
    pub resolve_relative_opens: bool,
    /// Walk every opened file's and executable's path from the kernel's own objects.
    pub canonical_paths: bool,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u32,
    pub poll_interval_ms: u64,
    /// Most bytes kept per terminal write or read.
    pub max_tty_bytes: u32,
    /// Terminal bytes kept per session, in MiB; beyond it only lengths are recorded.
    pub max_tty_session_mib: u32,
    /// Routine and repeated read-only opens counted in the kernel (`opens_folded`).
    pub fold: FoldConfig,
}

/// `capture.fold`: see `monitor-ebpf/src/fold.rs` for what is folded and what never is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldConfig {
    pub enabled: bool,
    /// Files, and directories whose files (to [`crate::fold_files::MAX_DEPTH`] levels down)
    /// are routine: registered at start by device, inode and change time.
    pub routine: Vec<PathBuf>,
    /// Re-opens of a file within this long after the open that was sent are counted in it.
    pub repeat_window_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub channel_capacity: usize,
    pub stats_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub stdout: bool,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// CSV or YAML export from the identity provider (username → person, email, team, role,
    /// peer group).
    pub mapping_file: Option<PathBuf>,
    /// sshd logs to take key fingerprints from (missing files are skipped).
    pub sshd_logs: Vec<PathBuf>,
    /// The kubelet's pod log directory, which names the node's pods by UID.
    pub pod_logs_dir: PathBuf,
    /// In a container: where the host's /etc is mounted, for host user and group names.
    pub host_etc: Option<PathBuf>,
    /// Where the host's root file system is seen: the programs processes run are checked
    /// there, the watched files' inodes looked up (`/` on a plain host).
    pub host_root: PathBuf,
    /// Pod names from the Kubernetes API server, for pods the log directory does not name.
    pub kubernetes_api: crate::kube_api::KubernetesApiConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Use the built-in rules (a file's rule with the same id replaces one).
    pub builtin_rules: bool,
    /// Your rules files (YAML), reloaded when they change.
    pub rules_files: Vec<PathBuf>,
    /// Per-user and per-peer-group behavioural baselines.
    pub baseline: crate::detect::baseline::BaselineConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub webhooks: Vec<crate::detect::webhook::WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub capture: CaptureConfig,
    pub identity: IdentityConfig,
    pub detection: DetectionConfig,
    pub alerts: AlertsConfig,
    pub pipeline: PipelineConfig,
    pub spool: crate::spool::SpoolConfig,
    pub integrity: crate::trail::IntegrityConfig,
    pub respond: crate::respond::RespondConfig,
    pub redaction: crate::redact::RedactionConfig,
    pub clickhouse: crate::store::ClickHouseConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// Overlays `over` onto `base`, key by key (mappings merge, everything else replaces).
///
/// By hand rather than with figment (which layers a file and `VIGIL_` variables the same way):
/// every problem here is reported with its file, line and key path and every unknown key with
/// the nearest known one, for which the layers must stay YAML values whose keys can be found in
/// the text again; figment's merged profile keeps the source of a value but not its line. The
/// same fifteen lines coalesce Helm values in xtask/src/deploy.rs: xtask cannot link this crate,
/// whose build script needs the bpf-linker that xtask installs.
fn merge(base: &mut yaml_serde::Value, over: yaml_serde::Value) {
    match (base, over) {
        (yaml_serde::Value::Mapping(b), yaml_serde::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Reports keys of `over` that `base` (the embedded default, which names every setting) does not
/// have, with their line in `text` when found there.
fn unknown_keys(
    base: &yaml_serde::Value,
    over: &yaml_serde::Value,
    prefix: &str,
    text: &str,
    problems: &mut Vec<Problem>,
) {
    let (Some(b), Some(o)) = (base.as_mapping(), over.as_mapping()) else {
        return;
    };
    for (k, v) in o {
        let name = match k.as_str() {
            Some(n) => n.to_string(),
            None => format!("{k:?}"),
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match b.get(k) {
            // Free-form mappings in the default (none yet) would be empty and skipped.
            Some(bv) if bv.as_mapping().is_some_and(|m| !m.is_empty()) => {
                unknown_keys(bv, v, &path, text, problems)
            }
            Some(_) => {}
            None => {
                let known: Vec<&str> = b.keys().filter_map(|k| k.as_str()).collect();
                let hint = known
                    .iter()
                    .min_by_key(|c| crate::detect::expr::strsim(&name, c))
                    .filter(|c| crate::detect::expr::strsim(&name, c) <= 3)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                problems.push(Problem {
                    line: line_of_key(text, &path),
                    key: path,
                    message: format!("unknown setting{hint}; known here: {}", known.join(", ")),
                });
            }
        }
    }
}

/// Replaces the values of secret keys (`password`, `secret`, `token`) for display.
fn redact(value: &mut yaml_serde::Value) {
    // A string anywhere may be a URL with credentials in it (`https://user:pass@host`), or
    // hold a secret the redaction patterns know: the same patterns as for events.
    if let yaml_serde::Value::String(text) = value {
        let patterns = crate::redact::Redactor::builtin();
        if let Some(clean) = patterns.redact_bytes(text.as_bytes()) {
            *text = String::from_utf8_lossy(&clean).into_owned();
        }
        return;
    }
    if let Some(map) = value.as_mapping_mut() {
        for (k, v) in map.iter_mut() {
            let secret = k
                .as_str()
                .is_some_and(|k| ["password", "secret", "token"].contains(&k));
            if secret && !v.is_null() {
                *v = yaml_serde::Value::String("<redacted>".into());
            } else {
                redact(v);
            }
        }
    } else if let Some(list) = value.as_sequence_mut() {
        list.iter_mut().for_each(redact);
    }
}

/// An environment override that names no setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum OverrideError {
    #[error("names no setting")]
    Empty,
    #[error("`{0}` is below a setting that is not a section")]
    NotASection(String),
    #[error("`{0}` is not a setting")]
    Unknown(String),
}

/// Sets `keys` (a path of lower-case names) in `value` to `new`, for an environment override;
/// only settings the default has can be set.
fn set_path(
    value: &mut yaml_serde::Value,
    keys: &[String],
    new: yaml_serde::Value,
) -> Result<(), OverrideError> {
    let Some((first, rest)) = keys.split_first() else {
        return Err(OverrideError::Empty);
    };
    let Some(map) = value.as_mapping_mut() else {
        return Err(OverrideError::NotASection(first.clone()));
    };
    let Some(slot) = map.get_mut(first.as_str()) else {
        return Err(OverrideError::Unknown(first.clone()));
    };
    if rest.is_empty() {
        merge(slot, new);
        Ok(())
    } else {
        set_path(slot, rest, new)
    }
}

/// The line (1-based) where the dotted `key` is written in a YAML `text`: each level's name
/// found in turn, deeper indented than its parent. Best effort, for messages.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for part in key.split('.') {
        let at = lines.iter().enumerate().skip(from).find_map(|(i, l)| {
            let trimmed = l.trim_start();
            let ind = l.len() - trimmed.len();
            let deeper = indent.is_none_or(|p| ind > p);
            (deeper && (trimmed.starts_with(&format!("{part}:")))).then_some((i, ind))
        })?;
        from = at.0 + 1;
        indent = Some(at.1);
        found = Some(at.0 + 1);
    }
    found
}

impl Config {
    /// The embedded default.
    pub fn embedded() -> Config {
        // The embedded default is part of the binary and covered by tests; failing here is a
        // build defect, not bad input.
        Config::from_yaml(DEFAULT_CONFIG, "embedded default")
            .expect("embedded default config is valid")
    }

    /// Reads a config file, layered over the embedded default, with the process's
    /// `VIGIL_<SECTION>__<KEY>` environment overrides on top.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// The embedded default with the environment's overrides.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_yaml_with_env("", "embedded default", std::env::vars())
    }

    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, origin, std::iter::empty())
    }

    /// `text` (named `origin` in messages) over the embedded default, then `env` overrides.
    /// Every problem is reported, each with its location.
    pub fn from_yaml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let value = Config::layered(text, origin, env)?;
        let config: Config = yaml_serde::from_value(value).map_err(|e| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        let problems = config.problems(text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.into(),
                problems,
            })
        }
    }

    /// The effective configuration as YAML (default, file, environment), with every secret
    /// value replaced, for `vigil config show`.
    pub fn effective_yaml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, ConfigError> {
        let mut value = Config::layered(text, origin, env)?;
        redact(&mut value);
        yaml_serde::to_string(&value).map_err(|e| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })
    }

    fn layered(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<yaml_serde::Value, ConfigError> {
        let parse = |t: &str, origin: &str| {
            yaml_serde::from_str::<yaml_serde::Value>(t).map_err(|e| ConfigError::Parse {
                origin: origin.into(),
                message: e.to_string(),
            })
        };
        let mut value = parse(DEFAULT_CONFIG, "embedded default")?;
        let over = parse(text, origin)?;
        let mut problems = Vec::new();
        if !over.is_null() {
            if !over.is_mapping() {
                return Err(ConfigError::Parse {
                    origin: origin.into(),
                    message: "the configuration must be a YAML mapping".into(),
                });
            }
            unknown_keys(&value, &over, "", text, &mut problems);
            merge(&mut value, over);
        }
        for (name, raw) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Variables without a level separator (VIGIL_CLICKHOUSE_PASSWORD, VIGIL_BIN) are
            // not overrides.
            if !path.contains("__") {
                continue;
            }
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            let shown = format!("{} (environment {name})", keys.join("."));
            let parsed: yaml_serde::Value = match yaml_serde::from_str(&raw) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(Problem {
                        key: shown,
                        line: None,
                        message: format!("not a YAML value: {e}"),
                    });
                    continue;
                }
            };
            if let Err(e) = set_path(&mut value, &keys, parsed) {
                problems.push(Problem {
                    key: shown,
                    line: None,
                    message: e.to_string(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                problems,
            });
        }
        Ok(value)
    }

    /// Every problem of a parsed configuration, located by key (and by line in `text`, the
    /// file's text, where the key is written there).
    fn problems(&self, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut invalid = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_string(),
                line: line_of_key(text, key),
                message,
            })
        };
        let c = &self.capture;
        if c.max_argv_bytes == 0 || c.max_argv_bytes > EXEC_ARGV_MAX {
            invalid(
                "capture.max_argv_bytes",
                format!("{} is out of range 1..={EXEC_ARGV_MAX}", c.max_argv_bytes),
            );
        }
        if !c.ring_buffer_bytes.is_power_of_two() || c.ring_buffer_bytes < 64 * 1024 {
            invalid(
                "capture.ring_buffer_bytes",
                format!(
                    "{} must be a power of two of at least 65536",
                    c.ring_buffer_bytes
                ),
            );
        }
        if c.wakeup_bytes == 0 || c.wakeup_bytes > c.ring_buffer_bytes / 2 {
            invalid(
                "capture.wakeup_bytes",
                format!(
                    "{} is out of range 1..={} (half of capture.ring_buffer_bytes)",
                    c.wakeup_bytes,
                    c.ring_buffer_bytes / 2
                ),
            );
        }
        if !(1..=10_000).contains(&c.poll_interval_ms) {
            invalid(
                "capture.poll_interval_ms",
                format!("{} is out of range 1..=10000", c.poll_interval_ms),
            );
        }
        if c.max_tty_bytes == 0 || c.max_tty_bytes as usize >= vigil_common::TTY_DATA_CAP {
            invalid(
                "capture.max_tty_bytes",
                format!(
                    "{} is out of range 1..={}",
                    c.max_tty_bytes,
                    vigil_common::TTY_DATA_CAP - 1
                ),
            );
        }
        if c.fold.repeat_window_ms > 60_000 {
            invalid(
                "capture.fold.repeat_window_ms",
                format!("{} is above 60000", c.fold.repeat_window_ms),
            );
        }
        for path in c.fold.routine.iter().filter(|p| !p.is_absolute()) {
            invalid(
                "capture.fold.routine",
                format!("{} is not an absolute path", path.display()),
            );
        }
        if c.fold.enabled && !c.events.contains(&EventType::Open) {
            invalid(
                "capture.fold.enabled",
                "folds opens, but capture.events does not capture `open`".to_string(),
            );
        }
        if c.max_tty_session_mib > 4 * 1024 * 1024 {
            invalid(
                "capture.max_tty_session_mib",
                format!("{} is above 4194304", c.max_tty_session_mib),
            );
        }
        for t in c.events.iter().filter(|t| t.record_kind().is_none()) {
            invalid(
                "capture.events",
                format!(
                    "`{t}` is made by the daemon, not captured; capture one of {}",
                    EventType::captured()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if c.events.is_empty() {
            invalid("capture.events", "lists no event kind".into());
        }
        if self.pipeline.channel_capacity == 0 || self.pipeline.channel_capacity > 16 * 1024 * 1024
        {
            invalid(
                "pipeline.channel_capacity",
                format!(
                    "{} is out of range 1..=16777216",
                    self.pipeline.channel_capacity
                ),
            );
        }
        if self.pipeline.stats_interval_ms < 10 {
            invalid(
                "pipeline.stats_interval_ms",
                format!(
                    "{} is below the 10 ms minimum",
                    self.pipeline.stats_interval_ms
                ),
            );
        }
        let sp = &self.spool;
        if sp.segment_bytes < 4096 || sp.segment_bytes > 1 << 32 {
            invalid(
                "spool.segment_bytes",
                format!("{} is out of range 4096..=4294967296", sp.segment_bytes),
            );
        }
        if sp.max_bytes < 2 * sp.segment_bytes {
            invalid(
                "spool.max_bytes",
                format!(
                    "{} must hold at least two segments ({} bytes)",
                    sp.max_bytes,
                    2 * sp.segment_bytes
                ),
            );
        }
        if sp.dir.as_os_str().is_empty() {
            invalid("spool.dir", "is empty".into());
        }
        let ch = &self.clickhouse;
        if let Some(url) = &ch.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                invalid(
                    "clickhouse.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
        }
        if ch.database.is_empty()
            || !ch
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            invalid(
                "clickhouse.database",
                format!("`{}` must be letters, digits and underscores", ch.database),
            );
        }
        if ch.retention_days == 0 {
            invalid("clickhouse.retention_days", "must be at least 1".into());
        }
        if ch.batch_rows == 0 || ch.batch_rows > 1_000_000 {
            invalid(
                "clickhouse.batch_rows",
                format!("{} is out of range 1..=1000000", ch.batch_rows),
            );
        }
        if ch.password.is_some() && ch.password_file.is_some() {
            invalid(
                "clickhouse.password",
                "set either password or password_file, not both".into(),
            );
        }
        if let Some(path) = &self.identity.mapping_file {
            if let Err(e) = crate::directory::Directory::load(path) {
                invalid("identity.mapping_file", e.to_string());
            }
        }
        if let Err(e) =
            crate::detect::rules::load(self.detection.builtin_rules, &self.detection.rules_files)
        {
            invalid("detection.rules_files", format!("\n{e}"));
        }
        let k = &self.identity.kubernetes_api;
        if k.refresh_seconds == 0 {
            invalid(
                "identity.kubernetes_api.refresh_seconds",
                "must be at least 1".into(),
            );
        }
        if let Some(url) = &k.url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                invalid(
                    "identity.kubernetes_api.url",
                    format!("`{url}` is not an http(s) URL"),
                );
            }
        }
        let b = &self.detection.baseline;
        if let Err(e) = b.learning() {
            invalid("detection.baseline.learning_period", e.to_string());
        }
        for (key, message) in self.integrity.problems() {
            invalid(&key, message);
        }
        for (key, message) in self.respond.problems() {
            invalid(&key, message);
        }
        if let Err(e) = crate::redact::Redactor::new(&self.redaction) {
            invalid("redaction.patterns", e.to_string());
        }
        if let Err(e) = b.save_interval() {
            invalid("detection.baseline.save_every", e.to_string());
        }
        if !(b.volume_factor.is_finite() && b.volume_factor >= 1.0) {
            invalid(
                "detection.baseline.volume_factor",
                format!("{} must be a number of at least 1", b.volume_factor),
            );
        }
        if let Some(p) = b
            .sensitive_paths
            .iter()
            .find(|p| p.trim_start_matches('*').is_empty())
        {
            invalid(
                "detection.baseline.sensitive_paths",
                format!("`{p}` would match every path"),
            );
        }
        for (i, w) in self.alerts.webhooks.iter().enumerate() {
            if let Err(e) = w.check() {
                invalid("alerts.webhooks", format!("[{i}]: {e}"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            invalid(
                "log.level",
                format!("`{}` is not a log filter", self.log.level),
            );
        }
        problems
    }

    /// The kernel policy this configuration asks for.
    pub fn policy(&self) -> Policy {
        let c = &self.capture;
        Policy {
            scope: match c.scope {
                Scope::LoginSessions => scope::LOGIN_SESSIONS,
                Scope::All => scope::ALL,
            },
            kinds: c
                .events
                .iter()
                .filter_map(|t| t.record_kind())
                .fold(0, |acc, k| acc | kind_bit(k as u16))
                // Folded opens are opens: the kind goes with `open` whenever folding is on.
                | if c.fold.enabled {
                    kind_bit(vigil_common::kind::OPENS_FOLDED)
                } else {
                    0
                },
            max_argv_bytes: c.max_argv_bytes,
            resolve_relative_opens: u32::from(c.resolve_relative_opens),
            wakeup_bytes: c.wakeup_bytes,
            max_tty_bytes: c.max_tty_bytes,
            tty_session_budget_kib: c.max_tty_session_mib.saturating_mul(1024),
            canonical_paths: u32::from(c.canonical_paths),
            fold_opens: u32::from(c.fold.enabled),
            fold_repeat_window_ms: c.fold.repeat_window_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_common::kind;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        assert_eq!(c.capture.scope, Scope::LoginSessions);
        assert!(c.output.stdout);
        let p = c.policy();
        assert_eq!(p.scope, scope::LOGIN_SESSIONS);
        assert_ne!(p.kinds & kind_bit(kind::EXEC), 0);
    }

    #[test]
    fn partial_file_overrides_only_its_keys() {
        let c = Config::from_yaml(
            "capture:\n  max_argv_bytes: 100\noutput:\n  file: /tmp/x.jsonl\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.capture.max_argv_bytes, 100);
        assert_eq!(c.capture.ring_buffer_bytes, 16 * 1024 * 1024);
        assert_eq!(
            c.output.file.as_deref(),
            Some(std::path::Path::new("/tmp/x.jsonl"))
        );
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = Config::from_yaml("capture:\n  max_argv_bytes: 0\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("my.yaml") && e.contains("capture.max_argv_bytes"),
            "{e}"
        );
        let e = Config::from_yaml("capture:\n  scop: all\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("my.yaml: line 2: capture.scop: unknown setting (did you mean `scope`?)"),
            "{e}"
        );
        let e = Config::from_yaml("capture:\n  ring_buffer_bytes: 1000\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("power of two"), "{e}");
        let e = Config::from_yaml("- a\n- b\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping"), "{e}");
        let e = Config::from_yaml("capture: [\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("my.yaml"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let text = "capture:\n  max_argv_bytes: 0\n  ring_buffer_bytes: 1000\nspool:\n  dir: \"\"\nclickhouse:\n  url: ftp://x\n  database: \"bad-name\"\ndetection:\n  baseline:\n    learning_period: soon\n";
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(text, "c.yaml") else {
            panic!("accepted")
        };
        let keys: Vec<(&str, Option<usize>)> =
            problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("capture.max_argv_bytes", Some(2)),
                ("capture.ring_buffer_bytes", Some(3)),
                // A consequence of the ring buffer's size; the default is not in the file.
                ("capture.wakeup_bytes", None),
                ("spool.dir", Some(5)),
                ("clickhouse.url", Some(7)),
                ("clickhouse.database", Some(8)),
                ("detection.baseline.learning_period", Some(11)),
            ],
            "{problems:#?}"
        );
        // Unknown keys are all reported too, before anything else.
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::from_yaml("capture:\n  scop: all\nmetrix:\n  listen: null\n", "c.yaml")
        else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[1].key, "metrix");
        assert!(problems[1].message.contains("did you mean `metrics`"));
    }

    #[test]
    fn respond_settings_are_checked() {
        let text = "respond:\n  mode: enforce\n  max_actions_per_minute: 0\n  on_risk:\n    threshold: 150\n    actions: [release_session]\n  deny_exec:\n    paths: [relative/bin]\n    sha256: [nothex]\n  control_socket: here.sock\n";
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(text, "c.yaml") else {
            panic!("accepted")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "respond.on_risk.threshold",
                "respond.on_risk.actions",
                "respond.max_actions_per_minute",
                "respond.deny_exec.sha256",
                "respond.deny_exec.paths",
                "respond.control_socket"
            ],
            "{problems:#?}"
        );
        let Err(e) = Config::from_yaml("respond:\n  mode: yolo\n", "c.yaml") else {
            panic!("accepted")
        };
        let e = e.to_string();
        assert!(e.contains("yolo") && e.contains("dry_run"), "{e}");
        // The default changes nothing.
        let c = Config::from_yaml("", "c.yaml").unwrap();
        assert_eq!(c.respond.mode, crate::event::RespondMode::DryRun);
    }

    #[test]
    fn environment_overrides_keys_and_names_itself_in_errors() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = Config::from_yaml_with_env(
            "capture:\n  max_argv_bytes: 100\n",
            "c.yaml",
            env(&[
                ("VIGIL_CAPTURE__MAX_ARGV_BYTES", "200"),
                ("VIGIL_CLICKHOUSE__URL", "http://ch:8123"),
                ("VIGIL_CAPTURE__EVENTS", "[exec, open]"),
                ("VIGIL_BIN", "/not/an/override"),
                ("VIGIL_CLICKHOUSE_PASSWORD", "read by the store, not here"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.capture.max_argv_bytes, 200);
        assert_eq!(c.clickhouse.url.as_deref(), Some("http://ch:8123"));
        assert_eq!(c.capture.events, vec![EventType::Exec, EventType::Open]);
        let e = Config::from_yaml_with_env(
            "",
            "c.yaml",
            env(&[
                ("VIGIL_CAPTUR__SCOPE", "all"),
                ("VIGIL_CAPTURE__MAX_ARGV_BYTES", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("captur.scope (environment VIGIL_CAPTUR__SCOPE): `captur` is not a setting"),
            "{e}"
        );
    }

    #[test]
    fn shown_configuration_hides_secrets() {
        let shown = Config::effective_yaml(
            "clickhouse:\n  url: http://ch:8123\n  password: hunter2\nalerts:\n  webhooks:\n    - url: https://hook:urlsecret9@hooks.example/x\n      secret_env: X\n",
            "c.yaml",
            vec![("VIGIL_CLICKHOUSE__USER".to_string(), "vigil".to_string())],
        )
        .unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            !shown.contains("urlsecret9"),
            "credentials inside a URL: {shown}"
        );
        assert!(
            shown.contains("https://hook:[REDACTED:url_credentials]@hooks.example/x"),
            "{shown}"
        );
        assert!(shown.contains("password: <redacted>"), "{shown}");
        assert!(shown.contains("user: vigil"), "{shown}");
    }
}
