//! ClickHouse storage: configuration, migrations, the row shape of events, and the shipper that
//! moves events from the spool to ClickHouse (see [`shipper`]).

pub mod anomalies;
pub mod reader;
pub mod schema;
pub mod shipper;

use std::{borrow::Cow, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventBody};
use schema::SchemaOptions;

/// `clickhouse:` in the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// `http://host:8123`; null: no shipping, the spool is the store.
    pub url: Option<String>,
    pub database: String,
    pub user: String,
    /// Prefer `password_file` or the VIGIL_CLICKHOUSE_PASSWORD environment variable.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Create the schema `ON CLUSTER` this cluster, with Replicated engines and Distributed
    /// tables.
    pub cluster: Option<String>,
    pub retention_days: u32,
    /// A batch is sent when it holds this many events, or after `batch_ms`.
    pub batch_rows: usize,
    pub batch_ms: u64,
    /// Longest wait between retries while ClickHouse is away.
    pub retry_max_ms: u64,
}

impl std::fmt::Debug for ClickHouseConfig {
    // By hand so that no password ever reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("cluster", &self.cluster)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse is not configured (clickhouse.url is null)")]
    NotConfigured,
    #[error("cannot read the ClickHouse password from {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the ClickHouse schema is at version {have} and this Vigil needs {need}: an \
         administrator runs `vigil db migrate` (daemons never change the schema)"
    )]
    SchemaBehind { have: u32, need: u32 },
    #[error("ClickHouse at {url}: {source}")]
    ClickHouse {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The spool could not be read while a batch was being sent (the shipper tries again).
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The task waiting for ClickHouse's answer to a batch ended without one (it panicked).
    #[error("the ClickHouse shipper's insert task ended without an answer: {0}")]
    Shipper(String),
}

impl ClickHouseConfig {
    fn password(&self) -> Result<String, StoreError> {
        if let Ok(p) = std::env::var("VIGIL_CLICKHOUSE_PASSWORD") {
            return Ok(p);
        }
        if let Some(path) = &self.password_file {
            return std::fs::read_to_string(path)
                .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|source| StoreError::PasswordFile {
                    path: path.clone(),
                    source,
                });
        }
        Ok(self.password.clone().unwrap_or_default())
    }

    /// The schema for this ClickHouse, with the fleet-wide baseline counting `sensitive_paths`.
    pub fn schema(&self, sensitive_paths: &[String]) -> SchemaOptions {
        SchemaOptions {
            database: self.database.clone(),
            cluster: self.cluster.clone(),
            retention_days: self.retention_days,
            sensitive_paths: sensitive_paths.to_vec(),
        }
    }

    /// A client for the configured database (`with_database = false`: the server default, for
    /// creating it).
    pub fn client(&self, with_database: bool) -> Result<clickhouse::Client, StoreError> {
        let url = self.url.clone().ok_or(StoreError::NotConfigured)?;
        let mut client = clickhouse::Client::default()
            .with_url(url)
            .with_user(&self.user)
            .with_password(self.password()?)
            .with_compression(clickhouse::Compression::Lz4);
        if with_database {
            client = client.with_database(&self.database);
        }
        Ok(client)
    }

    pub fn error(&self, source: clickhouse::error::Error) -> StoreError {
        StoreError::ClickHouse {
            url: self.url.clone().unwrap_or_default(),
            source,
        }
    }
}

/// Applies the migrations not yet applied; returns the versions it applied. Also sets the
/// fleet-wide baseline's sensitive paths to `sensitive_paths` (the configuration's
/// `detection.baseline.sensitive_paths`) and retention to `clickhouse.retention_days`.
///
/// The administrator's tool (`vigil db migrate`, with the administrator's credentials): a
/// daemon never runs it. Root on one host could otherwise delete the whole fleet's history
/// (`retention_days: 1`) or empty the fleet's sensitive paths from that host's configuration.
pub async fn migrate(
    cfg: &ClickHouseConfig,
    sensitive_paths: &[String],
) -> Result<Vec<u32>, StoreError> {
    migrate_with_progress(cfg, sensitive_paths, &mut |_, _, _| {}).await
}

/// The schema version this Vigil needs (its last migration).
pub fn schema_version() -> u32 {
    SchemaOptions {
        database: String::new(),
        cluster: None,
        retention_days: 1,
        sensitive_paths: Vec::new(),
    }
    .migrations()
    .last()
    .map(|m| m.version)
    .unwrap_or(0)
}

/// What a daemon does instead of migrating: checks that the schema it will insert into is the
/// one it needs, with its own (insert-only) credentials.
pub async fn check_schema(cfg: &ClickHouseConfig) -> Result<u32, StoreError> {
    let db = cfg.client(true)?;
    let have: u32 = db
        .query("SELECT toUInt32(max(version)) FROM schema_migrations")
        .fetch_one()
        .await
        .map_err(|e| cfg.error(e))?;
    let need = schema_version();
    if have < need {
        return Err(StoreError::SchemaBehind { have, need });
    }
    Ok(have)
}

/// As [`migrate`], calling `progress(step, of, migration name)` before each migration.
pub async fn migrate_with_progress(
    cfg: &ClickHouseConfig,
    sensitive_paths: &[String],
    progress: &mut (dyn FnMut(usize, usize, &str) + Send),
) -> Result<Vec<u32>, StoreError> {
    let opts = cfg.schema(sensitive_paths);
    let server = cfg.client(false)?;
    for stmt in opts.bootstrap() {
        server
            .query(&stmt)
            .execute()
            .await
            .map_err(|e| cfg.error(e))?;
    }
    let db = cfg.client(true)?;
    let applied: Vec<u32> = db
        .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all::<u32>()
        .await
        .map_err(|e| cfg.error(e))?;
    let mut done = Vec::new();
    let pending: Vec<_> = opts
        .migrations()
        .into_iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    let total = pending.len();
    for (i, m) in pending.into_iter().enumerate() {
        progress(i + 1, total, m.name);
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying ClickHouse migration"
        );
        for step in &m.statements {
            if let Some(condition) = &step.only_if {
                let wanted: u8 = db
                    .query(condition)
                    .fetch_one()
                    .await
                    .map_err(|e| cfg.error(e))?;
                if wanted == 0 {
                    continue;
                }
            }
            db.query(&step.sql)
                .execute()
                .await
                .map_err(|e| cfg.error(e))?;
        }
        db.query("INSERT INTO schema_migrations (version, name) SELECT {v:UInt32}, {n:String}")
            .param("v", m.version)
            .param("n", m.name)
            .execute()
            .await
            .map_err(|e| cfg.error(e))?;
        done.push(m.version);
    }
    // The fleet-wide baseline counts the configuration's sensitive paths: the view is rebuilt
    // when the list it was built from (recorded in `sensitive_paths`) is another.
    let recorded: Vec<String> = db
        .query(&opts.recorded_sensitive_paths_query())
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    let mut wanted = opts.sensitive_paths.clone();
    wanted.sort();
    if recorded != wanted {
        tracing::info!(
            patterns = wanted.len(),
            "fleet-wide sensitive paths set from the configuration"
        );
        for stmt in opts.sensitive_paths_sync() {
            db.query(&stmt).execute().await.map_err(|e| cfg.error(e))?;
        }
    }
    // Retention follows the administrator's configuration.
    for table in ["events", "alerts"] {
        db.query(&format!("ALTER TABLE `{table}` MODIFY TTL {}", opts.ttl()))
            .execute()
            .await
            .map_err(|e| cfg.error(e))?;
    }
    Ok(done)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TrailRow {
    host: String,
    epoch: String,
    seq: u64,
    chain: [u8; 32],
    detail: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HostKeyRow {
    host: String,
    key: String,
}

/// A quarantined record as `vigil db quarantine` lists it.
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize, PartialEq, Eq)]
pub struct QuarantineListing {
    pub host: String,
    pub seq: u64,
    pub epoch: String,
    /// When ClickHouse took it, milliseconds since the epoch.
    pub received_ms: i64,
    /// Why it did not decode.
    pub reason: String,
    /// The record's bytes, base64, as shipped.
    pub payload: String,
}

/// The records held in `quarantine` (of `host`, or every host), oldest first.
pub async fn quarantined(
    cfg: &ClickHouseConfig,
    host: Option<&str>,
) -> Result<Vec<QuarantineListing>, StoreError> {
    cfg.client(true)?
        .query(
            "SELECT host, seq, epoch, toUnixTimestamp64Milli(received) AS received_ms, reason,
                payload
             FROM quarantine
             WHERE {host:String} = '' OR host = {host:String}
             ORDER BY received_ms, host, seq",
        )
        .param("host", host.unwrap_or_default())
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct QuarantineCount {
    host: String,
    count: u64,
}

/// A loss record per host with records in `quarantine` (of `host`, or every host): what the
/// readers warn of with their answer, since those records are in no listing or timeline.
pub async fn quarantine_damage(
    cfg: &ClickHouseConfig,
    host: Option<&str>,
) -> Result<Vec<Event>, StoreError> {
    let counts: Vec<QuarantineCount> = cfg
        .client(true)?
        .query(
            "SELECT host, count() AS count FROM quarantine
             WHERE {host:String} = '' OR host = {host:String}
             GROUP BY host ORDER BY host",
        )
        .param("host", host.unwrap_or_default())
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    Ok(counts
        .into_iter()
        .map(|c| {
            crate::spool::loss(
                crate::event::LossStage::Clickhouse,
                c.count,
                format!(
                    "{} records of host {} are in quarantine (they did not decode when shipped) \
                     and in no listing or timeline; `vigil db quarantine` shows them",
                    c.count,
                    crate::present::terminal_str(&c.host)
                ),
            )
        })
        .collect())
}

/// Every host ClickHouse holds rows or a registered key for.
pub async fn trail_hosts(cfg: &ClickHouseConfig) -> Result<Vec<String>, StoreError> {
    cfg.client(true)?
        .query(
            "SELECT DISTINCT host FROM (SELECT host FROM events UNION ALL SELECT host FROM \
             quarantine UNION ALL SELECT host FROM host_keys) ORDER BY host",
        )
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))
}

/// One host's rows of `events` and `quarantine`, as `vigil verify` checks them.
pub async fn host_trail(
    cfg: &ClickHouseConfig,
    host: &str,
) -> Result<crate::trail::verify::HostTrail, StoreError> {
    use base64::Engine as _;
    let db = cfg.client(true)?;
    let mut trail = crate::trail::verify::HostTrail::default();
    let mut cursor = db
        .query(
            "SELECT host, epoch, seq, chain, detail FROM events WHERE host = ? ORDER BY epoch, seq",
        )
        .bind(host)
        .fetch::<TrailRow>()
        .map_err(|e| cfg.error(e))?;
    while let Some(row) = cursor.next().await.map_err(|e| cfg.error(e))? {
        trail.records.push(crate::trail::verify::TrailRecord {
            host: row.host,
            source: format!("events row seq {} epoch {}", row.seq, row.epoch),
            epoch: row.epoch,
            seq: row.seq,
            chain: (row.chain != [0u8; 32]).then_some(row.chain),
            payload: row.detail.into_bytes(),
        });
    }
    let mut cursor = db
        .query("SELECT host, epoch, seq, chain, payload AS detail FROM quarantine WHERE host = ?")
        .bind(host)
        .fetch::<TrailRow>()
        .map_err(|e| cfg.error(e))?;
    while let Some(row) = cursor.next().await.map_err(|e| cfg.error(e))? {
        match base64::engine::general_purpose::STANDARD.decode(&row.detail) {
            Ok(payload) => trail.records.push(crate::trail::verify::TrailRecord {
                host: row.host,
                source: format!("quarantine row seq {} epoch {}", row.seq, row.epoch),
                epoch: row.epoch,
                seq: row.seq,
                chain: (row.chain != [0u8; 32]).then_some(row.chain),
                payload,
            }),
            Err(e) => trail.damage.push((
                row.epoch,
                format!(
                    "quarantine row seq {}: payload is not base64 ({e})",
                    row.seq
                ),
            )),
        }
    }
    Ok(trail)
}

/// The registered public keys (`host_keys`), by host.
pub async fn host_keys(
    cfg: &ClickHouseConfig,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, StoreError> {
    let rows: Vec<HostKeyRow> = cfg
        .client(true)?
        .query("SELECT host, key FROM host_keys ORDER BY host, registered")
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in rows {
        out.entry(r.host).or_default().push(r.key);
    }
    Ok(out)
}

/// Registers `key` as `host`'s (an administrator's act: daemons may not write `host_keys`).
pub async fn register_key(
    cfg: &ClickHouseConfig,
    host: &str,
    key: &crate::trail::PublicKey,
    note: &str,
) -> Result<(), StoreError> {
    cfg.client(true)?
        .query("INSERT INTO host_keys (host, key, note) SELECT ?, ?, ?")
        .bind(host)
        .bind(key.to_string())
        .bind(note)
        .execute()
        .await
        .map_err(|e| cfg.error(e))
}

/// Where a row sits in its host's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedRecord<'a> {
    pub seq: u64,
    /// The epoch in hex (made once per batch: every record of a batch has the same one).
    pub epoch: &'a str,
    /// All zero for records of a format-1 spool segment (unchained).
    pub chain: [u8; 32],
}

/// One row of `events`: the fields people filter on, flattened, and the whole event as JSON in
/// `detail` (lossless: non-UTF-8 bytes stay base64 there).
///
/// Borrowed from the spool record and the decoded event it is made of: the shipper streams one
/// row at a time into the insert, and a copy of each string per row was a third of its
/// allocations.
#[derive(Debug, Clone, clickhouse::Row, Serialize, PartialEq)]
pub struct EventRow<'a> {
    pub host: &'a str,
    pub boot_id: &'a str,
    pub seq: u64,
    /// The spool's chain epoch (hex) and the chain after this record: `vigil verify`
    /// recomputes it from `detail`.
    pub epoch: &'a str,
    pub chain: [u8; 32],
    /// DateTime64(9): nanoseconds since the epoch.
    pub time: i64,
    pub mono_ns: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: u32,
    pub loginuid: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub argv: Vec<Cow<'a, str>>,
    pub bytes: u64,
    pub port: u16,
    pub ret: i64,
    pub gained_root: bool,
    pub summary: String,
    pub detail: &'a str,
}

impl<'a> EventRow<'a> {
    /// `host` is the shipping daemon's: a row names the host that sent it, whatever the event
    /// says (an event carrying another host's name is stored under the sender's). `detail` is
    /// the record's payload, byte for byte (the chain is computed over it).
    pub fn new(
        host: &'a str,
        record: &ChainedRecord<'a>,
        event: &'a Event,
        detail: &'a str,
    ) -> EventRow<'a> {
        let p = &event.process;
        let (path, argv, bytes, port, ret, gained_root) = match &event.body {
            EventBody::Exec(x) => (
                x.filename.text(),
                x.argv.iter().map(|a| a.text()).collect(),
                0,
                0,
                0,
                false,
            ),
            EventBody::Open(o) => (o.path.text(), Vec::new(), 0, 0, o.result.ret, false),
            // The new name is the row's `path`; the source is in its `argv`.
            EventBody::Link(l) => (
                l.path.text(),
                if l.source.0.is_empty() {
                    Vec::new()
                } else {
                    vec![l.source.text()]
                },
                0,
                0,
                l.result.ret,
                false,
            ),
            EventBody::FileRead(r) => (
                r.path.as_ref().map(|p| p.text()).unwrap_or_default(),
                Vec::new(),
                r.bytes,
                0,
                0,
                false,
            ),
            EventBody::Connect(c) => (
                c.address.as_ref().map(|a| a.text()).unwrap_or_default(),
                Vec::new(),
                0,
                c.port.unwrap_or(0),
                c.result.ret,
                false,
            ),
            EventBody::Priv(x) => (
                Cow::Borrowed(""),
                Vec::new(),
                0,
                0,
                x.result.ret,
                x.gained_root,
            ),
            EventBody::Exit(x) => (
                Cow::Borrowed(""),
                Vec::new(),
                0,
                0,
                x.exit_code.unwrap_or(0) as i64,
                false,
            ),
            EventBody::Loss(l) => (Cow::Borrowed(""), Vec::new(), l.count, 0, 0, false),
            EventBody::Alert(a) => (
                Cow::Borrowed(a.rule.as_str()),
                Vec::new(),
                0,
                0,
                a.session_risk as i64,
                false,
            ),
            EventBody::TtyOutput(t) | EventBody::TtyInput(t) => (
                Cow::Borrowed(t.tty.as_str()),
                Vec::new(),
                t.total_bytes,
                0,
                0,
                false,
            ),
            EventBody::Response(r) => (
                Cow::Borrowed(r.target.as_str()),
                Vec::new(),
                r.processes as u64,
                0,
                0,
                false,
            ),
            // The row's `gained_root` feeds the session's (`sessions_mv`): a session already root
            // when first seen counts as one that gained it in view, in ClickHouse as in the spool.
            EventBody::SessionStart(s) => {
                (Cow::Borrowed(""), Vec::new(), 0, 0, 0, s.root_when_seen)
            }
            EventBody::IoUring(u) => (Cow::Borrowed(""), Vec::new(), 0, 0, u.result.ret, false),
            EventBody::RawSocket(r) => (
                Cow::Borrowed(r.family.as_str()),
                Vec::new(),
                r.protocol as u64,
                0,
                r.result.ret,
                false,
            ),
            // The row's `path` names the operation and its `bytes` the target, as `bpf` rows do.
            EventBody::ProcessAccess(a) => (
                Cow::Borrowed(a.operation.as_str()),
                Vec::new(),
                a.target_pid as u64,
                0,
                a.result.ret,
                false,
            ),
            EventBody::Bpf(b) => (
                Cow::Borrowed(b.command.as_str()),
                Vec::new(),
                b.object_id.unwrap_or(0) as u64,
                0,
                b.result.ret,
                false,
            ),
            EventBody::CompatSyscall(c) => (
                Cow::Borrowed(c.syscall.as_deref().unwrap_or_default()),
                Vec::new(),
                0,
                0,
                c.result.ret,
                false,
            ),
            EventBody::OpensFolded(f) => (
                f.path.as_ref().map(|p| p.text()).unwrap_or_default(),
                Vec::new(),
                f.bytes,
                0,
                0,
                false,
            ),
            EventBody::Fork(_)
            | EventBody::SessionEnd(_)
            | EventBody::Checkpoint(_)
            | EventBody::Tamper(_) => (Cow::Borrowed(""), Vec::new(), 0, 0, 0, false),
        };
        EventRow {
            host,
            boot_id: &event.boot_id,
            seq: record.seq,
            epoch: record.epoch,
            chain: record.chain,
            time: event.time_ns,
            mono_ns: event.mono_ns,
            kind: event.body.type_name(),
            session_id: p.sessionid.unwrap_or(0),
            loginuid: p.loginuid.unwrap_or(u32::MAX),
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            euid: p.euid,
            gid: p.gid,
            cgroup_id: p.cgroup_id,
            comm: p.comm.text(),
            path,
            argv,
            bytes,
            port,
            ret,
            gained_root,
            summary: event.to_string(),
            detail,
        }
    }
}

/// A spool record the shipper could not decode as an event, kept as it was (`quarantine`).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize, PartialEq)]
pub struct QuarantineRow {
    pub host: String,
    pub seq: u64,
    pub epoch: String,
    pub chain: [u8; 32],
    /// Why it did not decode (the decoder's error).
    pub reason: String,
    /// The record's bytes, base64 (they need not be text).
    pub payload: String,
}

impl QuarantineRow {
    pub fn new(
        host: &str,
        record: &ChainedRecord<'_>,
        error: &dyn std::fmt::Display,
        payload: &[u8],
    ) -> Self {
        use base64::Engine as _;
        QuarantineRow {
            host: host.to_string(),
            seq: record.seq,
            epoch: record.epoch.to_string(),
            chain: record.chain,
            reason: error.to_string(),
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SessionRow {
    host: String,
    boot_id: String,
    session_id: u32,
    loginuid: u32,
    first: i64,
    last: i64,
    events: u64,
    commands: u64,
    files_opened: u64,
    bytes_read: u64,
    connections: u64,
    privilege_changes: u64,
    gained_root: bool,
    login_user: String,
    entry: String,
    source_address: String,
    source_port: u16,
    server_port: u16,
    auth_method: String,
    key_fingerprint: String,
    person: String,
    email: String,
    team: String,
    role: String,
    peer_group: String,
    ancestry: String,
    ended: i64,
    risk: f32,
    risk_reasons: Vec<String>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl SessionRow {
    fn into_summary(self) -> crate::query::SessionSummary {
        let ssh = (!self.source_address.is_empty()).then(|| crate::event::SshOrigin {
            source_address: self.source_address,
            source_port: self.source_port,
            server_port: self.server_port,
            auth_method: non_empty(self.auth_method),
            key_fingerprint: non_empty(self.key_fingerprint),
        });
        let identity = (!self.person.is_empty()).then(|| crate::directory::CorporateIdentity {
            person: self.person,
            email: non_empty(self.email),
            team: non_empty(self.team),
            role: non_empty(self.role),
            peer_group: non_empty(self.peer_group),
        });
        let key = crate::event::SessionKey {
            host: self.host.as_str().into(),
            boot_id: self.boot_id.as_str().into(),
            session: self.session_id,
        };
        crate::query::SessionSummary {
            session: self.session_id,
            key: key.to_string(),
            host: self.host,
            boot_id: self.boot_id,
            loginuid: self.loginuid,
            // The name recorded with the session; a uid is never looked up where it is read.
            user: non_empty(self.login_user),
            first: crate::decode::rfc3339(self.first),
            last: crate::decode::rfc3339(self.last),
            first_ns: self.first,
            last_ns: self.last,
            counts: crate::event::SessionCounts {
                events: self.events,
                commands: self.commands,
                files_opened: self.files_opened,
                bytes_read: self.bytes_read,
                connections: self.connections,
                privilege_changes: self.privilege_changes,
            },
            gained_root: self.gained_root,
            ttys: Default::default(),
            // A word this reader does not know (a newer daemon's) reads as no entry.
            entry: crate::event::SessionEntry::from_word(&self.entry),
            ssh,
            identity,
            ancestry: serde_json::from_str(&self.ancestry).unwrap_or_default(),
            ended: (self.ended > 0).then(|| crate::decode::rfc3339(self.ended)),
            risk: (self.risk > 0.0 || !self.risk_reasons.is_empty()).then_some(self.risk as u32),
            risk_reasons: self.risk_reasons,
        }
    }
}

/// `vigil sessions` from ClickHouse. Every filter value goes to the server as a query parameter.
pub async fn sessions(
    cfg: &ClickHouseConfig,
    filter: &crate::query::SessionFilter,
) -> Result<Vec<crate::query::SessionSummary>, StoreError> {
    let selector = filter.session.as_ref();
    let session = selector.map(|s| i64::from(s.session)).unwrap_or(-1);
    let boot = selector.and_then(|s| s.boot.clone()).unwrap_or_default();
    // --host and the selector's host are one filter; the CLI refuses a disagreement.
    let host = selector
        .and_then(|s| s.host.clone())
        .or_else(|| filter.host.clone())
        .unwrap_or_default();
    let rows: Vec<SessionRow> = cfg
        .client(true)?
        .query(
            "SELECT s.host AS host, s.boot_id AS boot_id, s.session_id AS session_id,
                s.loginuid AS loginuid,
                s.first AS first, s.last AS last, s.events AS events, s.commands AS commands,
                s.files_opened AS files_opened, s.bytes_read AS bytes_read,
                s.connections AS connections, s.privilege_changes AS privilege_changes,
                s.gained_root AS gained_root,
                i.login_user AS login_user, i.entry AS entry,
                i.source_address AS source_address, i.source_port AS source_port,
                i.server_port AS server_port, i.auth_method AS auth_method,
                i.key_fingerprint AS key_fingerprint, i.person AS person, i.email AS email,
                i.team AS team, i.role AS role, i.peer_group AS peer_group,
                i.ancestry AS ancestry, i.ended AS ended,
                a.max_risk AS risk, a.risk_reasons AS risk_reasons
             FROM (
                SELECT host, boot_id, session_id, any(loginuid) AS loginuid,
                    toUnixTimestamp64Nano(min(first_seen)) AS first,
                    toUnixTimestamp64Nano(max(last_seen)) AS last,
                    sum(events) AS events, sum(commands) AS commands,
                    sum(files_opened) AS files_opened, sum(bytes_read) AS bytes_read,
                    sum(connections) AS connections, sum(privilege_changes) AS privilege_changes,
                    max(gained_root) AS gained_root
                FROM sessions
                WHERE ({session:Int64} < 0 OR session_id = {session:Int64})
                    AND ({host:String} = '' OR host = {host:String})
                    AND ({boot:String} = '' OR ({boot:String} = '-' AND boot_id = '')
                         OR ({boot:String} != '-' AND startsWith(boot_id, {boot:String})))
                GROUP BY host, boot_id, session_id
             ) AS s
             LEFT JOIN (
                SELECT host, boot_id, session_id, max(login_user) AS login_user,
                    max(entry) AS entry,
                    max(source_address) AS source_address, max(source_port) AS source_port,
                    max(server_port) AS server_port, max(auth_method) AS auth_method,
                    max(key_fingerprint) AS key_fingerprint, max(person) AS person,
                    max(email) AS email, max(team) AS team, max(role) AS role,
                    max(peer_group) AS peer_group, max(ancestry) AS ancestry,
                    toUnixTimestamp64Nano(max(ended)) AS ended
                FROM session_identity
                GROUP BY host, boot_id, session_id
             ) AS i ON s.host = i.host AND s.boot_id = i.boot_id AND s.session_id = i.session_id
             LEFT JOIN (
                SELECT host, boot_id, session_id, max(risk) AS max_risk,
                    argMax(reasons, risk) AS risk_reasons
                FROM alerts
                GROUP BY host, boot_id, session_id
             ) AS a ON s.host = a.host AND s.boot_id = a.boot_id AND s.session_id = a.session_id
             WHERE ({uid:Int64} < 0 OR s.loginuid = {uid:Int64})
                AND ({since:Int64} = 0 OR s.last >= {since:Int64})
                AND ({until:Int64} = 0 OR s.first <= {until:Int64})
                AND ({person:String} = '' OR lower(i.person) = lower({person:String})
                     OR lower(i.email) = lower({person:String}))
                AND ({peer_group:String} = '' OR lower(i.peer_group) = lower({peer_group:String}))
                AND a.max_risk >= {min_risk:Float32}
             ORDER BY s.first, s.host, s.boot_id, s.session_id",
        )
        .param("uid", filter.loginuid.map(i64::from).unwrap_or(-1))
        .param("host", host)
        .param("boot", boot)
        .param("session", session)
        .param("since", filter.since_ns.unwrap_or(0))
        .param("until", filter.until_ns.unwrap_or(0))
        .param("person", filter.person.clone().unwrap_or_default())
        .param("peer_group", filter.peer_group.clone().unwrap_or_default())
        .param("min_risk", filter.min_risk.unwrap_or(0) as f32)
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    Ok(rows.into_iter().map(SessionRow::into_summary).collect())
}

/// `vigil alerts` from ClickHouse: the stored alerts (each its whole alert event) matching
/// `filter`, oldest first, and a loss record for stored rows that did not decode. The same
/// filter as the spool's is applied to what comes back, so both stores answer alike.
pub async fn alerts(
    cfg: &ClickHouseConfig,
    filter: &crate::query::AlertFilter,
) -> Result<crate::query::WithDamage<Vec<Event>>, StoreError> {
    let details: Vec<DetailRow> = cfg
        .client(true)?
        .query(
            "SELECT host, boot_id, detail FROM alerts FINAL
             WHERE ({uid:Int64} < 0 OR loginuid = {uid:Int64})
                AND ({host:String} = '' OR host = {host:String})
                AND ({session:Int64} < 0
                     OR (session_id = {session:Int64} AND boot_id = {boot:String}))
                AND ({rule:String} = '' OR rule = {rule:String})
                AND ({since:Int64} = 0 OR time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC'))
                AND ({until:Int64} = 0 OR time <= fromUnixTimestamp64Nano({until:Int64}, 'UTC'))
             ORDER BY time, alert_id",
        )
        .param("uid", filter.loginuid.map(i64::from).unwrap_or(-1))
        .param(
            "host",
            filter
                .session
                .as_ref()
                .map(|k| k.host.to_string())
                .or_else(|| filter.host.clone())
                .unwrap_or_default(),
        )
        .param(
            "session",
            filter
                .session
                .as_ref()
                .map(|k| i64::from(k.session))
                .unwrap_or(-1),
        )
        .param(
            "boot",
            filter
                .session
                .as_ref()
                .map(|k| k.boot_id.to_string())
                .unwrap_or_default(),
        )
        .param("rule", filter.rule.clone().unwrap_or_default())
        .param("since", filter.since_ns.unwrap_or(0))
        .param("until", filter.until_ns.unwrap_or(0))
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    let (mut alerts, damage) = events_from_details("alerts", &details);
    alerts.retain(|e| filter.matches(e));
    Ok((alerts, damage))
}

/// One session's events from ClickHouse, in time order, and a loss record for stored rows that
/// did not decode. `events` is append-only: a batch shipped twice is collapsed (the same
/// record, byte for byte), but two different rows under one sequence are both shown — a row
/// inserted to replace a command does not hide it (and `vigil verify` names it).
pub async fn session_events(
    cfg: &ClickHouseConfig,
    key: &crate::event::SessionKey,
) -> Result<crate::query::WithDamage<Vec<Event>>, StoreError> {
    let details: Vec<DetailRow> = cfg
        .client(true)?
        .query(
            "SELECT host, boot_id, detail FROM events
             WHERE host = {host:String} AND boot_id = {boot:String} AND session_id = {id:UInt32}
             ORDER BY time, seq
             LIMIT 1 BY epoch, seq, chain, cityHash64(detail)",
        )
        .param("host", key.host.as_ref())
        .param("boot", key.boot_id.as_ref())
        .param("id", key.session)
        .fetch_all()
        .await
        .map_err(|e| cfg.error(e))?;
    Ok(events_from_details("events", &details))
}

/// A stored event: the host and boot its row is stored under, and the event as JSON.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct DetailRow {
    host: String,
    boot_id: String,
    detail: String,
}

/// Events from their `detail` JSON column. A row that does not decode (written by a newer
/// daemon, or damaged) is not dropped silently: the rows left out come back as one loss record,
/// with the first decoding error, for the reader to show.
fn events_from_details(table: &str, details: &[DetailRow]) -> crate::query::WithDamage<Vec<Event>> {
    let mut events = Vec::with_capacity(details.len());
    let mut undecodable = 0u64;
    let mut first_error = None;
    for row in details {
        match serde_json::from_str::<Event>(&row.detail) {
            // The row's columns are what ClickHouse keys and filters on: the event says the same
            // (rows shipped before events carried their host and boot say it only there).
            Ok(mut event) => {
                event.host = row.host.as_str().into();
                event.boot_id = row.boot_id.as_str().into();
                events.push(event)
            }
            Err(e) => {
                undecodable += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let damage = first_error
        .map(|e| {
            crate::spool::loss(
                crate::event::LossStage::Clickhouse,
                undecodable,
                format!(
                    "{undecodable} stored rows of `{table}` left out: their detail does not \
                     decode (written by a newer daemon, or damaged; first error: {e})"
                ),
            )
        })
        .into_iter()
        .collect();
    (events, damage)
}
