//! Daemon configuration: one YAML document, with the embedded default as the base.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use vigil_common::{kind, kind_bit, scope, Policy, EXEC_ARGV_MAX};

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
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    LoginSessions,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Exec,
    Exit,
    Fork,
    Open,
    FileRead,
    Connect,
    Priv,
    /// What the session's terminals showed.
    TtyOutput,
    /// What was typed at them (never while echo is off).
    TtyInput,
}

impl EventKind {
    fn kernel_kind(self) -> u16 {
        match self {
            EventKind::Exec => kind::EXEC,
            EventKind::Exit => kind::EXIT,
            EventKind::Fork => kind::FORK,
            EventKind::Open => kind::OPEN,
            EventKind::FileRead => kind::FILE_READ,
            EventKind::Connect => kind::CONNECT,
            EventKind::Priv => kind::PRIV,
            EventKind::TtyOutput => kind::TTY_OUT,
            EventKind::TtyInput => kind::TTY_IN,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    pub scope: Scope,
    pub events: Vec<EventKind>,
    pub max_argv_bytes: u32,
    pub resolve_relative_opens: bool,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u32,
    pub poll_interval_ms: u64,
    /// Most bytes kept per terminal write or read.
    pub max_tty_bytes: u32,
    /// Terminal bytes kept per session, in MiB; beyond it only lengths are recorded.
    pub max_tty_session_mib: u32,
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
    pub clickhouse: crate::store::ClickHouseConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// Overlays `over` onto `base`, key by key (mappings merge, everything else replaces).
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
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

impl Config {
    /// The embedded default.
    pub fn embedded() -> Config {
        // The embedded default is part of the binary and covered by tests; failing here is a
        // build defect, not bad input.
        Config::from_yaml(DEFAULT_CONFIG, "embedded default")
            .expect("embedded default config is valid")
    }

    /// Reads a config file, layered over the embedded default.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parse = |t: &str, origin: &str| {
            serde_yaml::from_str::<serde_yaml::Value>(t).map_err(|e| ConfigError::Parse {
                origin: origin.into(),
                message: e.to_string(),
            })
        };
        let mut value = parse(DEFAULT_CONFIG, "embedded default")?;
        let over = parse(text, origin)?;
        if !over.is_null() {
            if !over.is_mapping() {
                return Err(ConfigError::Parse {
                    origin: origin.into(),
                    message: "the configuration must be a YAML mapping".into(),
                });
            }
            merge(&mut value, over);
        }
        let config: Config = serde_yaml::from_value(value).map_err(|e| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            origin: origin.into(),
            key,
            message,
        };
        let c = &self.capture;
        if c.max_argv_bytes == 0 || c.max_argv_bytes > EXEC_ARGV_MAX {
            return Err(invalid(
                "capture.max_argv_bytes",
                format!("{} is out of range 1..={EXEC_ARGV_MAX}", c.max_argv_bytes),
            ));
        }
        if !c.ring_buffer_bytes.is_power_of_two() || c.ring_buffer_bytes < 64 * 1024 {
            return Err(invalid(
                "capture.ring_buffer_bytes",
                format!(
                    "{} must be a power of two of at least 65536",
                    c.ring_buffer_bytes
                ),
            ));
        }
        if c.wakeup_bytes == 0 || c.wakeup_bytes > c.ring_buffer_bytes / 2 {
            return Err(invalid(
                "capture.wakeup_bytes",
                format!(
                    "{} is out of range 1..={} (half of capture.ring_buffer_bytes)",
                    c.wakeup_bytes,
                    c.ring_buffer_bytes / 2
                ),
            ));
        }
        if !(1..=10_000).contains(&c.poll_interval_ms) {
            return Err(invalid(
                "capture.poll_interval_ms",
                format!("{} is out of range 1..=10000", c.poll_interval_ms),
            ));
        }
        if c.max_tty_bytes == 0 || c.max_tty_bytes as usize >= vigil_common::TTY_DATA_CAP {
            return Err(invalid(
                "capture.max_tty_bytes",
                format!(
                    "{} is out of range 1..={}",
                    c.max_tty_bytes,
                    vigil_common::TTY_DATA_CAP - 1
                ),
            ));
        }
        if c.max_tty_session_mib > 4 * 1024 * 1024 {
            return Err(invalid(
                "capture.max_tty_session_mib",
                format!("{} is above 4194304", c.max_tty_session_mib),
            ));
        }
        if c.events.is_empty() {
            return Err(invalid("capture.events", "lists no event kind".into()));
        }
        if self.pipeline.channel_capacity == 0 || self.pipeline.channel_capacity > 16 * 1024 * 1024
        {
            return Err(invalid(
                "pipeline.channel_capacity",
                format!(
                    "{} is out of range 1..=16777216",
                    self.pipeline.channel_capacity
                ),
            ));
        }
        if self.pipeline.stats_interval_ms < 10 {
            return Err(invalid(
                "pipeline.stats_interval_ms",
                format!(
                    "{} is below the 10 ms minimum",
                    self.pipeline.stats_interval_ms
                ),
            ));
        }
        let sp = &self.spool;
        if sp.segment_bytes < 4096 || sp.segment_bytes > 1 << 32 {
            return Err(invalid(
                "spool.segment_bytes",
                format!("{} is out of range 4096..=4294967296", sp.segment_bytes),
            ));
        }
        if sp.max_bytes < 2 * sp.segment_bytes {
            return Err(invalid(
                "spool.max_bytes",
                format!(
                    "{} must hold at least two segments ({} bytes)",
                    sp.max_bytes,
                    2 * sp.segment_bytes
                ),
            ));
        }
        if sp.dir.as_os_str().is_empty() {
            return Err(invalid("spool.dir", "is empty".into()));
        }
        let ch = &self.clickhouse;
        if let Some(url) = &ch.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "clickhouse.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        if ch.database.is_empty()
            || !ch
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                "clickhouse.database",
                format!("`{}` must be letters, digits and underscores", ch.database),
            ));
        }
        if ch.retention_days == 0 {
            return Err(invalid(
                "clickhouse.retention_days",
                "must be at least 1".into(),
            ));
        }
        if ch.batch_rows == 0 || ch.batch_rows > 1_000_000 {
            return Err(invalid(
                "clickhouse.batch_rows",
                format!("{} is out of range 1..=1000000", ch.batch_rows),
            ));
        }
        if ch.password.is_some() && ch.password_file.is_some() {
            return Err(invalid(
                "clickhouse.password",
                "set either password or password_file, not both".into(),
            ));
        }
        if let Some(path) = &self.identity.mapping_file {
            if let Err(e) = crate::directory::Directory::load(path) {
                return Err(invalid("identity.mapping_file", e.to_string()));
            }
        }
        if let Err(e) =
            crate::detect::rules::load(self.detection.builtin_rules, &self.detection.rules_files)
        {
            return Err(invalid("detection.rules_files", format!("\n{e}")));
        }
        let b = &self.detection.baseline;
        b.learning()
            .map_err(|e| invalid("detection.baseline.learning_period", e))?;
        b.save_interval()
            .map_err(|e| invalid("detection.baseline.save_every", e))?;
        if !(b.volume_factor.is_finite() && b.volume_factor >= 1.0) {
            return Err(invalid(
                "detection.baseline.volume_factor",
                format!("{} must be a number of at least 1", b.volume_factor),
            ));
        }
        if let Some(p) = b
            .sensitive_paths
            .iter()
            .find(|p| p.trim_start_matches('*').is_empty())
        {
            return Err(invalid(
                "detection.baseline.sensitive_paths",
                format!("`{p}` would match every path"),
            ));
        }
        for (i, w) in self.alerts.webhooks.iter().enumerate() {
            if let Err(e) = w.check() {
                return Err(invalid("alerts.webhooks", format!("[{i}]: {e}")));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a log filter", self.log.level),
            ));
        }
        Ok(())
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
                .fold(0, |acc, k| acc | kind_bit(k.kernel_kind())),
            max_argv_bytes: c.max_argv_bytes,
            resolve_relative_opens: u32::from(c.resolve_relative_opens),
            wakeup_bytes: c.wakeup_bytes,
            max_tty_bytes: c.max_tty_bytes,
            tty_session_budget_kib: c.max_tty_session_mib.saturating_mul(1024),
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(e.contains("unknown field `scop`"), "{e}");
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
}
