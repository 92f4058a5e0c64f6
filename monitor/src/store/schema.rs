//! The ClickHouse schema, as versioned migrations applied in order and recorded in
//! `schema_migrations`. Each migration is idempotent DDL, so a half-applied one can run again.
//!
//! Single node by default; with a cluster name, the same schema is created `ON CLUSTER` with
//! Replicated engines, plus `*_all` Distributed tables over them for queries and inserts.

/// How the schema is laid out.
#[derive(Debug, Clone)]
pub struct SchemaOptions {
    pub database: String,
    /// `ON CLUSTER` name; None for a single node.
    pub cluster: Option<String>,
    pub retention_days: u32,
}

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<String>,
}

impl SchemaOptions {
    fn on_cluster(&self) -> String {
        self.cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER `{c}`"))
            .unwrap_or_default()
    }

    /// `kind` is `MergeTree`, `ReplacingMergeTree` or `AggregatingMergeTree`.
    fn engine(&self, kind: &str, table: &str) -> String {
        match &self.cluster {
            None => kind.to_string(),
            Some(_) => format!(
                "Replicated{kind}('/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}')",
                db = self.database
            ),
        }
    }

    fn distributed(&self, table: &str, sharding: &str) -> Vec<String> {
        match &self.cluster {
            None => Vec::new(),
            Some(c) => vec![format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`{table}_all`{oc} AS `{db}`.`{table}` \
                 ENGINE = Distributed(`{c}`, `{db}`, `{table}`, {sharding})",
                db = self.database,
                oc = self.on_cluster()
            )],
        }
    }

    pub fn ttl(&self) -> String {
        format!("toDateTime(time) + INTERVAL {} DAY", self.retention_days)
    }

    /// Every migration, oldest first.
    pub fn migrations(&self) -> Vec<Migration> {
        let db = &self.database;
        let oc = self.on_cluster();
        let mut events = vec![format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`events`{oc} (
    host LowCardinality(String),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    time DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    mono_ns UInt64 CODEC(Delta, ZSTD(1)),
    type LowCardinality(String),
    session_id UInt32,
    loginuid UInt32,
    pid UInt32,
    tid UInt32,
    ppid UInt32,
    uid UInt32,
    euid UInt32,
    gid UInt32,
    cgroup_id UInt64,
    comm LowCardinality(String),
    path String CODEC(ZSTD(1)),
    argv Array(String) CODEC(ZSTD(1)),
    bytes UInt64,
    port UInt16,
    ret Int64,
    gained_root Bool,
    summary String CODEC(ZSTD(1)),
    detail String CODEC(ZSTD(3)),
    PROJECTION by_user (SELECT * ORDER BY loginuid, time)
) ENGINE = {engine}
PARTITION BY toDate(time)
ORDER BY (host, session_id, time, seq)
TTL {ttl}
SETTINGS non_replicated_deduplication_window = 1000, deduplicate_merge_projection_mode = 'rebuild'",
            engine = self.engine("ReplacingMergeTree", "events"),
            ttl = self.ttl()
        )];
        events.extend(self.distributed("events", "cityHash64(host, session_id)"));

        let mut sessions = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`sessions`{oc} (
    host LowCardinality(String),
    session_id UInt32,
    loginuid SimpleAggregateFunction(any, UInt32),
    first_seen SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    events SimpleAggregateFunction(sum, UInt64),
    commands SimpleAggregateFunction(sum, UInt64),
    files_opened SimpleAggregateFunction(sum, UInt64),
    bytes_read SimpleAggregateFunction(sum, UInt64),
    connections SimpleAggregateFunction(sum, UInt64),
    privilege_changes SimpleAggregateFunction(sum, UInt64),
    gained_root SimpleAggregateFunction(max, Bool)
) ENGINE = {engine}
PARTITION BY toYYYYMM(first_seen)
ORDER BY (host, session_id)
SETTINGS non_replicated_deduplication_window = 1000",
                engine = self.engine("AggregatingMergeTree", "sessions")
            ),
            // Fed by every insert into events: one row per session, updated as it evolves.
            // Re-sent batches carry the same deduplication token and are skipped here as well.
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`sessions_mv`{oc} TO `{db}`.`sessions` AS
SELECT host, session_id,
    any(loginuid) AS loginuid,
    min(time) AS first_seen,
    max(time) AS last_seen,
    count() AS events,
    countIf(type = 'exec') AS commands,
    countIf(type = 'open' AND ret >= 0) AS files_opened,
    sumIf(bytes, type = 'file_read') AS bytes_read,
    countIf(type = 'connect') AS connections,
    countIf(type = 'priv') AS privilege_changes,
    max(gained_root) AS gained_root
FROM `{db}`.`events`
WHERE session_id != 0
GROUP BY host, session_id"
            ),
        ];
        sessions.extend(self.distributed("sessions", "cityHash64(host, session_id)"));

        let mut alerts = vec![format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`alerts`{oc} (
    host LowCardinality(String),
    time DateTime64(9, 'UTC'),
    alert_id UUID,
    session_id UInt32,
    loginuid UInt32,
    rule LowCardinality(String),
    technique LowCardinality(String),
    severity LowCardinality(String),
    risk Float32,
    reasons Array(String),
    evidence_seqs Array(UInt64),
    detail String CODEC(ZSTD(3))
) ENGINE = {engine}
PARTITION BY toDate(time)
ORDER BY (host, time, alert_id)
TTL {ttl}",
            engine = self.engine("ReplacingMergeTree", "alerts"),
            ttl = self.ttl()
        )];
        alerts.extend(self.distributed("alerts", "cityHash64(host, session_id)"));

        // Who, how and from where, one row per session from its start and end events. A table of
        // its own rather than more columns of `sessions`: two views inserting into one table with
        // the same deduplication token could drop each other's blocks on resend.
        let mut identity = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`session_identity`{oc} (
    host LowCardinality(String),
    session_id UInt32,
    boot_id SimpleAggregateFunction(max, String),
    login_user SimpleAggregateFunction(max, String),
    entry SimpleAggregateFunction(max, String),
    source_address SimpleAggregateFunction(max, String),
    source_port SimpleAggregateFunction(max, UInt16),
    server_port SimpleAggregateFunction(max, UInt16),
    auth_method SimpleAggregateFunction(max, String),
    key_fingerprint SimpleAggregateFunction(max, String),
    person SimpleAggregateFunction(max, String),
    email SimpleAggregateFunction(max, String),
    team SimpleAggregateFunction(max, String),
    role SimpleAggregateFunction(max, String),
    peer_group SimpleAggregateFunction(max, String),
    ancestry SimpleAggregateFunction(max, String),
    started SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    ended SimpleAggregateFunction(max, DateTime64(9, 'UTC'))
) ENGINE = {engine}
ORDER BY (host, session_id)
SETTINGS non_replicated_deduplication_window = 1000",
                engine = self.engine("AggregatingMergeTree", "session_identity")
            ),
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`session_identity_mv`{oc} TO `{db}`.`session_identity` AS
SELECT host, session_id,
    max(JSONExtractString(detail, 'boot_id')) AS boot_id,
    max(JSONExtractString(detail, 'login_user')) AS login_user,
    max(JSONExtractString(detail, 'entry')) AS entry,
    max(JSONExtractString(detail, 'ssh', 'source_address')) AS source_address,
    max(toUInt16(JSONExtractUInt(detail, 'ssh', 'source_port'))) AS source_port,
    max(toUInt16(JSONExtractUInt(detail, 'ssh', 'server_port'))) AS server_port,
    max(JSONExtractString(detail, 'ssh', 'auth_method')) AS auth_method,
    max(JSONExtractString(detail, 'ssh', 'key_fingerprint')) AS key_fingerprint,
    max(JSONExtractString(detail, 'identity', 'person')) AS person,
    max(JSONExtractString(detail, 'identity', 'email')) AS email,
    max(JSONExtractString(detail, 'identity', 'team')) AS team,
    max(JSONExtractString(detail, 'identity', 'role')) AS role,
    max(JSONExtractString(detail, 'identity', 'peer_group')) AS peer_group,
    max(if(type = 'session_start', JSONExtractRaw(detail, 'ancestry'), '')) AS ancestry,
    max(if(type = 'session_start', time, toDateTime64(0, 9, 'UTC'))) AS started,
    max(if(type = 'session_end', time, toDateTime64(0, 9, 'UTC'))) AS ended
FROM `{db}`.`events`
WHERE type IN ('session_start', 'session_end') AND session_id != 0
GROUP BY host, session_id"
            ),
        ];
        identity.extend(self.distributed("session_identity", "cityHash64(host, session_id)"));

        // Alerts from the event stream into `alerts` (the detail JSON holds the whole alert).
        let alerts_feed = vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`alerts_mv`{oc} TO `{db}`.`alerts` AS
SELECT host, time,
    toUUIDOrZero(JSONExtractString(detail, 'alert_id')) AS alert_id,
    session_id, loginuid,
    JSONExtractString(detail, 'rule') AS rule,
    JSONExtractString(detail, 'technique') AS technique,
    JSONExtractString(detail, 'severity') AS severity,
    toFloat32(JSONExtractUInt(detail, 'session_risk')) AS risk,
    JSONExtract(detail, 'reasons', 'Array(String)') AS reasons,
    [toUInt64(seq)] AS evidence_seqs,
    detail
FROM `{db}`.`events`
WHERE type = 'alert'"
        )];

        // Fleet-wide baselines: what each login user has done, by dimension, over every host.
        // The daemon scores its host against its own copy; these answer the same questions
        // across the fleet (see `vigil anomalies` and store/anomalies.rs).
        let user = "if(JSONExtractString(detail, 'process', 'login_user') != '', \
            JSONExtractString(detail, 'process', 'login_user'), concat('uid:', toString(loginuid)))";
        let sensitive = sensitive_path_condition();
        let mut baselines = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`user_baseline`{oc} (
    user LowCardinality(String),
    dimension LowCardinality(String),
    value String CODEC(ZSTD(1)),
    first_seen SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    events SimpleAggregateFunction(sum, UInt64)
) ENGINE = {engine}
ORDER BY (user, dimension, value)
TTL toDateTime(last_seen) + INTERVAL {days} DAY",
                engine = self.engine("AggregatingMergeTree", "user_baseline"),
                days = self.retention_days
            ),
            // One row per (user, dimension, value) an event shows: the binary and the host of a
            // command and its UTC hour of the week (Monday 00:00 = 0), the destination of an
            // outbound connection, a sensitive path opened (the daemon's default list).
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`user_baseline_mv`{oc} TO `{db}`.`user_baseline` AS
SELECT user, d.1 AS dimension, d.2 AS value,
    min(time) AS first_seen, max(time) AS last_seen, count() AS events
FROM (
    SELECT {user} AS user, time,
        arrayJoin(multiIf(
            type = 'exec', [('binary', path), ('host', host),
                ('hour_of_week', toString((toDayOfWeek(time) - 1) * 24 + toHour(time)))],
            type = 'connect' AND (ret >= 0 OR ret = -115) AND port != 0
                AND NOT startsWith(path, '127.') AND path != '::1',
                [('destination', if(position(path, ':') > 0,
                    concat('[', path, ']:', toString(port)), concat(path, ':', toString(port))))],
            type = 'open' AND ret >= 0 AND ({sensitive}),
                [('sensitive_path', path)],
            [])) AS d
    FROM `{db}`.`events`
    WHERE session_id != 0 AND loginuid != 4294967295 AND type IN ('exec', 'connect', 'open')
)
GROUP BY user, dimension, value"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`user_daily_volume`{oc} (
    user LowCardinality(String),
    day Date,
    host LowCardinality(String),
    bytes SimpleAggregateFunction(sum, UInt64),
    reads SimpleAggregateFunction(sum, UInt64)
) ENGINE = {engine}
ORDER BY (user, day, host)
TTL day + INTERVAL {days} DAY",
                engine = self.engine("AggregatingMergeTree", "user_daily_volume"),
                days = self.retention_days
            ),
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`user_daily_volume_mv`{oc} TO `{db}`.`user_daily_volume` AS
SELECT {user} AS user, toDate(time) AS day, host,
    sum(bytes) AS bytes, count() AS reads
FROM `{db}`.`events`
WHERE type = 'file_read' AND session_id != 0 AND loginuid != 4294967295
GROUP BY user, day, host"
            ),
        ];
        baselines.extend(self.distributed("user_baseline", "cityHash64(user)"));
        baselines.extend(self.distributed("user_daily_volume", "cityHash64(user)"));

        vec![
            Migration {
                version: 1,
                name: "events",
                statements: events,
            },
            Migration {
                version: 2,
                name: "sessions",
                statements: sessions,
            },
            Migration {
                version: 3,
                name: "alerts",
                statements: alerts,
            },
            Migration {
                version: 4,
                name: "session_identity",
                statements: identity,
            },
            Migration {
                version: 5,
                name: "alerts_feed",
                statements: alerts_feed,
            },
            Migration {
                version: 6,
                name: "baselines",
                statements: baselines,
            },
        ]
    }

    /// Creates the database and the migrations ledger.
    pub fn bootstrap(&self) -> Vec<String> {
        let db = &self.database;
        let oc = self.on_cluster();
        vec![
            format!("CREATE DATABASE IF NOT EXISTS `{db}`{oc}"),
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`schema_migrations`{oc} (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = {engine} ORDER BY version",
                engine = self.engine("ReplacingMergeTree", "schema_migrations")
            ),
        ]
    }
}

/// "`path` is sensitive" in ClickHouse, built from the daemon's own default patterns
/// (`detection.baseline.sensitive_paths` of the embedded configuration: a prefix, or with a
/// leading `*` a fragment anywhere), so the fleet-wide view and each daemon count the same paths.
fn sensitive_path_condition() -> String {
    crate::config::Config::embedded()
        .detection
        .baseline
        .sensitive_paths
        .iter()
        .map(|p| match p.strip_prefix('*') {
            Some(fragment) => format!("position(path, {}) > 0", sql_string(fragment)),
            None => format!("startsWith(path, {})", sql_string(p)),
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A ClickHouse string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_schema_uses_replicated_engines_and_distributed_tables() {
        let opts = SchemaOptions {
            database: "vigil".into(),
            cluster: Some("prod".into()),
            retention_days: 30,
        };
        let all: Vec<String> = opts
            .bootstrap()
            .into_iter()
            .chain(opts.migrations().into_iter().flat_map(|m| m.statements))
            .collect();
        for stmt in &all {
            assert!(stmt.contains("ON CLUSTER `prod`"), "{stmt}");
            assert!(!stmt.contains("ENGINE = MergeTree"), "{stmt}");
        }
        assert!(all.iter().any(|s| s.contains(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/vigil/events', '{replica}')"
        )));
        assert!(all
            .iter()
            .any(|s| s.contains("`events_all`") && s.contains("Distributed(`prod`")));
        assert!(all.iter().any(|s| s.contains("INTERVAL 30 DAY")));
    }

    #[test]
    fn the_fleet_sensitive_paths_are_the_daemons_defaults_quoted() {
        let condition = sensitive_path_condition();
        assert!(
            condition.contains("startsWith(path, '/etc/shadow')"),
            "{condition}"
        );
        assert!(
            condition.contains("position(path, '/.ssh/') > 0"),
            "{condition}"
        );
        assert_eq!(sql_string(r"it's a\b"), r"'it\'s a\\b'");
    }

    #[test]
    fn single_node_schema_has_no_cluster_clauses() {
        let opts = SchemaOptions {
            database: "vigil".into(),
            cluster: None,
            retention_days: 90,
        };
        for m in opts.migrations() {
            for stmt in m.statements {
                assert!(
                    !stmt.contains("ON CLUSTER") && !stmt.contains("Replicated"),
                    "{stmt}"
                );
            }
        }
        let versions: Vec<u32> = opts.migrations().iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
    }
}
