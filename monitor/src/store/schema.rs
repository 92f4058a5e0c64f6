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
        assert_eq!(versions, vec![1, 2, 3]);
    }
}
