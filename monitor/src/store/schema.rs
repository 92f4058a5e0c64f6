//! The ClickHouse schema, as versioned migrations applied in order and recorded in
//! `schema_migrations`. Each migration is idempotent DDL, so a half-applied one can run again.
//!
//! Single node by default; with a cluster name, the same schema is created `ON CLUSTER` with
//! Replicated engines, plus `*_all` Distributed tables over them for queries and inserts.

use crate::detect::baseline::PathPattern;

/// How the schema is laid out.
#[derive(Debug, Clone)]
pub struct SchemaOptions {
    pub database: String,
    /// `ON CLUSTER` name; None for a single node.
    pub cluster: Option<String>,
    pub retention_days: u32,
    /// The configuration's `detection.baseline.sensitive_paths`: what the fleet-wide baseline
    /// counts as a sensitive path (a prefix, or with a leading `*` a fragment anywhere).
    pub sensitive_paths: Vec<String>,
}

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<Step>,
}

/// One statement of a migration, and the condition under which it runs: a query answering 1
/// or 0. Guards let a migration that rewrites tables run again after a half-applied attempt,
/// and do nothing on a database that already has the new layout.
pub struct Step {
    pub sql: String,
    pub only_if: Option<String>,
}

impl From<String> for Step {
    fn from(sql: String) -> Step {
        Step { sql, only_if: None }
    }
}

fn steps(sql: Vec<String>) -> Vec<Step> {
    sql.into_iter().map(Step::from).collect()
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
        let mut events = vec![self.events_table()];
        events.extend(self.distributed("events", "cityHash64(host, session_id)"));

        let mut sessions = vec![self.sessions_table(), self.sessions_view()];
        sessions.extend(self.distributed("sessions", "cityHash64(host, session_id)"));

        let mut alerts = vec![self.alerts_table()];
        alerts.extend(self.distributed("alerts", "cityHash64(host, session_id)"));

        let mut identity = vec![self.identity_table(), self.identity_view()];
        identity.extend(self.distributed("session_identity", "cityHash64(host, session_id)"));

        let alerts_feed = vec![self.alerts_view()];

        // Fleet-wide baselines: what each login user has done, by dimension, over every host.
        // The daemon scores its host against its own copy; these answer the same questions
        // across the fleet (see `vigil anomalies` and store/anomalies.rs).
        let mut baselines = vec![
            self.sensitive_paths_table(),
            self.user_baseline_table(),
            self.user_baseline_view(),
            self.user_daily_volume_table(),
            self.user_daily_volume_view(),
        ];
        baselines.extend(self.distributed("user_baseline", "cityHash64(user)"));
        baselines.extend(self.distributed("user_daily_volume", "cityHash64(user)"));

        [
            (1, "events", events),
            (2, "sessions", sessions),
            (3, "alerts", alerts),
            (4, "session_identity", identity),
            (5, "alerts_feed", alerts_feed),
            (6, "baselines", baselines),
        ]
        .into_iter()
        .map(|(version, name, sql)| Migration {
            version,
            name,
            statements: steps(sql),
        })
        .chain([
            Migration {
                version: 7,
                name: "session_key",
                statements: self.session_key_migration(),
            },
            Migration {
                version: 8,
                name: "quarantine",
                statements: steps(
                    [self.quarantine_table()]
                        .into_iter()
                        .chain(self.distributed("quarantine", "cityHash64(host)"))
                        .collect(),
                ),
            },
            Migration {
                version: 9,
                name: "append_only_trail",
                statements: self.append_only_migration(),
            },
            Migration {
                version: 10,
                name: "host_keys",
                statements: steps(vec![self.host_keys_table()]),
            },
            Migration {
                version: 11,
                name: "folded_reads",
                // Bytes read through opens the kernel folded count as read (sessions_mv
                // summed file_read rows only). Rows already aggregated keep what they had.
                statements: steps(vec![
                    format!(
                        "DROP VIEW IF EXISTS `{}`.`sessions_mv`{}",
                        self.database,
                        self.on_cluster()
                    ),
                    self.sessions_view(),
                ]),
            },
            Migration {
                version: 12,
                name: "events_without_user_projection",
                // The `by_user` projection (`SELECT *` ordered by login uid) stored every event
                // a second time, 35% of the table's bytes (BENCHMARKS.md), and no query of
                // Vigil's reads events by user: listings go through `sessions`, timelines by
                // the session key, which is the table's own order.
                statements: steps(vec![format!(
                    "ALTER TABLE `{}`.`events`{} DROP PROJECTION IF EXISTS by_user",
                    self.database,
                    self.on_cluster()
                )]),
            },
        ])
        .collect()
    }

    /// The event stream: one row per event, keyed by session (host, boot, audit session id).
    /// Append-only (plain MergeTree): a row inserted later with the same key is another row,
    /// never a replacement, and `vigil verify` sees both. `epoch`, `seq` and `chain` are the
    /// spool's (see `crate::spool::frame`); `detail` is the record's payload byte for byte, so
    /// the chain can be recomputed from the rows.
    fn events_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`events`{oc} (
    host LowCardinality(String),
    boot_id LowCardinality(String),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    epoch LowCardinality(String),
    chain FixedString(32),
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
    detail String CODEC(ZSTD(3))
) ENGINE = {engine}
PARTITION BY toDate(time)
ORDER BY (host, boot_id, session_id, time, seq)
TTL {ttl}
SETTINGS non_replicated_deduplication_window = 1000, deduplicate_merge_projection_mode = 'rebuild'",
            engine = self.engine("MergeTree", "events"),
            ttl = self.ttl()
        )
    }

    /// One row per session, updated as it evolves (fed by `sessions_mv`).
    fn sessions_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`sessions`{oc} (
    host LowCardinality(String),
    boot_id LowCardinality(String),
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
ORDER BY (host, boot_id, session_id)
SETTINGS non_replicated_deduplication_window = 1000",
            engine = self.engine("AggregatingMergeTree", "sessions")
        )
    }

    /// Fed by every insert into events. Re-sent batches carry the same deduplication token and
    /// are skipped here as well.
    fn sessions_view(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`sessions_mv`{oc} TO `{db}`.`sessions` AS
SELECT host, boot_id, session_id,
    any(loginuid) AS loginuid,
    min(time) AS first_seen,
    max(time) AS last_seen,
    count() AS events,
    countIf(type = 'exec') AS commands,
    countIf(type = 'open' AND ret >= 0) AS files_opened,
    sumIf(bytes, type IN ('file_read', 'opens_folded')) AS bytes_read,
    countIf(type = 'connect') AS connections,
    countIf(type = 'priv') AS privilege_changes,
    max(gained_root) AS gained_root
FROM `{db}`.`events`
WHERE session_id != 0
GROUP BY host, boot_id, session_id"
        )
    }

    fn alerts_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`alerts`{oc} (
    host LowCardinality(String),
    boot_id LowCardinality(String),
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
        )
    }

    /// Alerts from the event stream into `alerts` (the detail JSON holds the whole alert).
    fn alerts_view(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`alerts_mv`{oc} TO `{db}`.`alerts` AS
SELECT host, boot_id, time,
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
        )
    }

    /// Who, how and from where, one row per session from its start and end events. A table of
    /// its own rather than more columns of `sessions`: two views inserting into one table with
    /// the same deduplication token could drop each other's blocks on resend.
    fn identity_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`session_identity`{oc} (
    host LowCardinality(String),
    boot_id LowCardinality(String),
    session_id UInt32,
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
ORDER BY (host, boot_id, session_id)
SETTINGS non_replicated_deduplication_window = 1000",
            engine = self.engine("AggregatingMergeTree", "session_identity")
        )
    }

    fn identity_view(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`session_identity_mv`{oc} TO `{db}`.`session_identity` AS
SELECT host, boot_id, session_id,
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
GROUP BY host, boot_id, session_id"
        )
    }

    fn user_baseline_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
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
        )
    }

    /// One row per (user, dimension, value) an event shows: the binary and the host of a
    /// command and its UTC hour of the week (Monday 00:00 = 0), the destination of an outbound
    /// connection, a sensitive path opened (the patterns in `sensitive_paths`, which `migrate`
    /// keeps equal to the configuration's `detection.baseline.sensitive_paths`).
    fn user_baseline_view(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
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
GROUP BY user, dimension, value",
            user = BASELINE_USER,
            sensitive = sensitive_path_condition(&self.sensitive_paths),
        )
    }

    fn user_daily_volume_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
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
        )
    }

    fn user_daily_volume_view(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`user_daily_volume_mv`{oc} TO `{db}`.`user_daily_volume` AS
SELECT {user} AS user, toDate(time) AS day, host,
    sum(bytes) AS bytes, count() AS reads
FROM `{db}`.`events`
WHERE type = 'file_read' AND session_id != 0 AND loginuid != 4294967295
GROUP BY user, day, host",
            user = BASELINE_USER,
        )
    }

    /// Spool records that passed their checksum but did not decode as events (written by a newer
    /// daemon, say): kept as they were, with why, never dropped on the way (see the shipper).
    fn quarantine_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`quarantine`{oc} (
    host LowCardinality(String),
    seq UInt64,
    epoch LowCardinality(String),
    chain FixedString(32),
    received DateTime64(3, 'UTC') DEFAULT now64(3),
    reason String,
    payload String CODEC(ZSTD(3))
) ENGINE = {engine}
ORDER BY (host, seq)
SETTINGS non_replicated_deduplication_window = 1000",
            engine = self.engine("MergeTree", "quarantine")
        )
    }

    /// The sensitive-path patterns the fleet-wide baseline counts: written by `migrate` from
    /// the configuration in force (not frozen in a migration), read by `user_baseline_mv`.
    fn sensitive_paths_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`sensitive_paths`{oc} (
    pattern String,
    match Enum8('prefix' = 1, 'fragment' = 2)
) ENGINE = {engine}
ORDER BY pattern",
            engine = self.engine("ReplacingMergeTree", "sensitive_paths")
        )
    }

    /// Statements that rebuild the fleet-wide baseline view for this configuration's sensitive
    /// paths and record them in `sensitive_paths` (what `migrate` runs when the recorded list
    /// is not the configuration's). Events inserted while the view is rebuilt are not counted
    /// into the baseline; the events themselves are all kept.
    pub fn sensitive_paths_sync(&self) -> Vec<String> {
        let db = &self.database;
        let oc = self.on_cluster();
        let mut out = vec![
            format!("DROP VIEW IF EXISTS `{db}`.`user_baseline_mv`{oc}"),
            self.user_baseline_view(),
            format!("TRUNCATE TABLE IF EXISTS `{db}`.`sensitive_paths`{oc}"),
        ];
        if !self.sensitive_paths.is_empty() {
            let rows = self
                .sensitive_paths
                .iter()
                .map(|p| match PathPattern::parse(p) {
                    PathPattern::Fragment(f) => format!("({}, 'fragment')", sql_string(f)),
                    PathPattern::Prefix(p) => format!("({}, 'prefix')", sql_string(p)),
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!(
                "INSERT INTO `{db}`.`sensitive_paths` (pattern, match) VALUES {rows}"
            ));
        }
        out
    }

    /// The list `sensitive_paths` holds, as the configuration writes it, sorted: compared with
    /// the configuration's (sorted) to decide whether the view must be rebuilt.
    pub fn recorded_sensitive_paths_query(&self) -> String {
        format!(
            "SELECT if(match = 'fragment', concat('*', pattern), pattern) AS p FROM `{}`.`sensitive_paths` ORDER BY p",
            self.database
        )
    }

    /// Migration 7: the session key (host, boot id, session id) in every table and key. A
    /// database made by migrations 1-6 of an older Vigil has `events`, `sessions` and
    /// `session_identity` ordered by (host, session_id), which merges the sessions of two boots
    /// (audit ids restart at 1). Every step is guarded so that a database that already has the
    /// new layout (made by this Vigil's migrations 1-6) is left as it is, and an attempt cut
    /// short runs again.
    ///
    /// What it does to an old database: the views are dropped; the three tables are renamed
    /// `*_before_v7` (kept, never dropped: they are evidence) and made anew; every event is
    /// copied with the boot id its session's start event recorded (`session_identity`), which
    /// feeds the new `sessions`, `session_identity` and `alerts` through the views. `alerts` is
    /// emptied first and refilled from the same copy (it holds nothing the events do not).
    /// Run it with shippers stopped: an insert while the views are down reaches `events` only.
    fn session_key_migration(&self) -> Vec<Step> {
        let db = &self.database;
        let oc = self.on_cluster();
        let old_layout = |table: &str| {
            format!(
                "SELECT count() > 0 FROM system.tables WHERE database = '{db}' AND name = '{table}' \
                 AND position(sorting_key, 'boot_id') = 0"
            )
        };
        let guarded = |sql: String, only_if: String| Step {
            sql,
            only_if: Some(only_if),
        };
        let views = VIEWS_ON_EVENTS;
        let mut out: Vec<Step> = Vec::new();
        // 1. Views off, old tables aside (only where the old layout is found).
        let tables = ["events", "sessions", "session_identity"];
        let any_old_layout = format!(
            "SELECT count() > 0 FROM system.tables WHERE database = '{db}' \
             AND name IN ('events', 'sessions', 'session_identity') \
             AND position(sorting_key, 'boot_id') = 0"
        );
        for view in views {
            out.push(guarded(
                format!("DROP VIEW IF EXISTS `{db}`.`{view}`{oc}"),
                any_old_layout.clone(),
            ));
        }
        for table in tables {
            if self.cluster.is_some() {
                out.push(guarded(
                    format!("DROP TABLE IF EXISTS `{db}`.`{table}_all`{oc}"),
                    old_layout(table),
                ));
            }
            out.push(guarded(
                format!("RENAME TABLE `{db}`.`{table}` TO `{db}`.`{table}_before_v7`{oc}"),
                old_layout(table),
            ));
        }
        // 2. The new layout, and the views on it.
        if self.cluster.is_some() {
            out.push(Step::from(format!(
                "DROP TABLE IF EXISTS `{db}`.`alerts_all`{oc}"
            )));
        }
        out.push(Step::from(format!(
            "ALTER TABLE `{db}`.`alerts`{oc} ADD COLUMN IF NOT EXISTS boot_id LowCardinality(String) AFTER host"
        )));
        let mut create = vec![
            self.events_table(),
            self.sessions_table(),
            self.identity_table(),
            self.sensitive_paths_table(),
        ];
        // 3. The copy, while the old events are still aside (then they are marked copied).
        let copy = format!(
            "INSERT INTO `{db}`.`events` ({PRE_V9_EVENT_COLUMNS})
SELECT e.host, ifNull(b.boot_id, '') AS boot_id, e.seq, e.time, e.mono_ns, e.type, e.session_id,
    e.loginuid, e.pid, e.tid, e.ppid, e.uid, e.euid, e.gid, e.cgroup_id, e.comm, e.path, e.argv,
    e.bytes, e.port, e.ret, e.gained_root, e.summary, e.detail
FROM `{db}`.`events_before_v7` AS e
LEFT JOIN (
    SELECT host, session_id, max(boot_id) AS boot_id
    FROM `{db}`.`session_identity_before_v7` GROUP BY host, session_id
) AS b ON e.host = b.host AND e.session_id = b.session_id
SETTINGS join_use_nulls = 1"
        );
        let pending_copy = format!(
            "SELECT count() > 0 FROM system.tables WHERE database = '{db}' AND name = 'events_before_v7' \
             AND comment != 'copied'"
        );
        for view in [
            self.sessions_view(),
            self.identity_view(),
            self.alerts_view(),
            self.user_baseline_view(),
            self.user_daily_volume_view(),
        ] {
            create.push(view);
        }
        for table in ["events", "sessions", "session_identity", "alerts"] {
            create.extend(self.distributed(table, "cityHash64(host, session_id)"));
        }
        out.extend(create.into_iter().map(Step::from));
        out.push(guarded(
            format!("TRUNCATE TABLE `{db}`.`alerts`{oc}"),
            pending_copy.clone(),
        ));
        out.push(guarded(copy, pending_copy.clone()));
        out.push(guarded(
            format!("ALTER TABLE `{db}`.`events_before_v7`{oc} MODIFY COMMENT 'copied'"),
            pending_copy,
        ));
        out
    }

    /// Migration 9: `events` and `quarantine` append-only, with the chain's columns. Tables made
    /// by an earlier release (ReplacingMergeTree, no chain) are renamed `*_before_v9` (kept:
    /// they are evidence) and copied into the new layout with an empty epoch, which `vigil
    /// verify` reports as unchained. The views on `events` are dropped first and made again
    /// after the copy, so the copy is not counted twice in what they feed. Every step is
    /// guarded: a new database, or an attempt cut short, runs only what is left.
    fn append_only_migration(&self) -> Vec<Step> {
        let db = &self.database;
        let oc = self.on_cluster();
        let replacing = |table: &str| {
            format!(
                "SELECT count() > 0 FROM system.tables WHERE database = '{db}' AND name = '{table}' \
                 AND engine LIKE '%ReplacingMergeTree'"
            )
        };
        let pending_copy = |table: &str| {
            format!(
                "SELECT count() > 0 FROM system.tables WHERE database = '{db}' \
                 AND name = '{table}_before_v9' AND comment != 'copied'"
            )
        };
        let guarded = |sql: String, only_if: String| Step {
            sql,
            only_if: Some(only_if),
        };
        let mut out = Vec::new();
        for view in VIEWS_ON_EVENTS {
            out.push(guarded(
                format!("DROP VIEW IF EXISTS `{db}`.`{view}`{oc}"),
                replacing("events"),
            ));
        }
        for (table, columns, create) in [
            ("events", PRE_V9_EVENT_COLUMNS, self.events_table()),
            (
                "quarantine",
                PRE_V9_QUARANTINE_COLUMNS,
                self.quarantine_table(),
            ),
        ] {
            if self.cluster.is_some() {
                out.push(guarded(
                    format!("DROP TABLE IF EXISTS `{db}`.`{table}_all`{oc}"),
                    replacing(table),
                ));
            }
            out.push(guarded(
                format!("RENAME TABLE `{db}`.`{table}` TO `{db}`.`{table}_before_v9`{oc}"),
                replacing(table),
            ));
            out.push(Step::from(create));
            out.push(guarded(
                format!(
                    "INSERT INTO `{db}`.`{table}` ({columns}) SELECT {columns} FROM `{db}`.`{table}_before_v9`"
                ),
                pending_copy(table),
            ));
            out.push(guarded(
                format!("ALTER TABLE `{db}`.`{table}_before_v9`{oc} MODIFY COMMENT 'copied'"),
                pending_copy(table),
            ));
        }
        out.extend(
            [
                self.sessions_view(),
                self.identity_view(),
                self.alerts_view(),
                self.user_baseline_view(),
                self.user_daily_volume_view(),
            ]
            .into_iter()
            .map(Step::from),
        );
        out.extend(
            self.distributed("events", "cityHash64(host, session_id)")
                .into_iter()
                .chain(self.distributed("quarantine", "cityHash64(host)"))
                .map(Step::from),
        );
        out
    }

    /// Hosts' public keys, registered by an administrator (`vigil db register-key`): what
    /// `vigil verify` checks checkpoints against. Daemons may not write here.
    fn host_keys_table(&self) -> String {
        let (db, oc) = (&self.database, self.on_cluster());
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`host_keys`{oc} (
    host LowCardinality(String),
    key String,
    registered DateTime64(3, 'UTC') DEFAULT now64(3),
    registered_by String DEFAULT currentUser(),
    note String
) ENGINE = {engine}
ORDER BY (host, registered)",
            engine = self.engine("MergeTree", "host_keys")
        )
    }

    /// What a daemon may do in ClickHouse, and nothing more: insert its rows, and read which
    /// schema version it is talking to. Schema, retention, the fleet's sensitive paths and the
    /// host keys belong to the administrator (`vigil db migrate`, `vigil db register-key`).
    pub fn daemon_grants(&self) -> Vec<Grant> {
        [
            (Privilege::Insert, "events"),
            (Privilege::Insert, "quarantine"),
            (Privilege::Select, "schema_migrations"),
        ]
        .into_iter()
        .map(|(privilege, table)| Grant {
            privilege,
            database: self.database.clone(),
            table: table.to_string(),
        })
        .collect()
    }

    /// The SQL an administrator runs to create the daemons' insert-only user and an auditors'
    /// read-only user (`vigil db grants`).
    pub fn grants_sql(&self, writer: &str, auditor: &str) -> Vec<String> {
        let db = &self.database;
        let oc = self.on_cluster();
        let mut out = vec![
            format!(
                "CREATE USER IF NOT EXISTS `{writer}`{oc} IDENTIFIED WITH sha256_password BY '<daemon password>'"
            ),
            format!(
                "CREATE USER IF NOT EXISTS `{auditor}`{oc} IDENTIFIED WITH sha256_password BY '<auditor password>'"
            ),
        ];
        for g in self.daemon_grants() {
            out.push(format!(
                "GRANT{oc} {} ON `{}`.`{}` TO `{writer}`",
                g.privilege.sql(),
                g.database,
                g.table
            ));
        }
        out.push(format!("GRANT{oc} SELECT ON `{db}`.* TO `{auditor}`"));
        out
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

/// The views fed by inserts into `events`.
const VIEWS_ON_EVENTS: [&str; 5] = [
    "sessions_mv",
    "session_identity_mv",
    "alerts_mv",
    "user_baseline_mv",
    "user_daily_volume_mv",
];

/// The columns of `events` and `quarantine` before migration 9 (what its copy moves).
const PRE_V9_EVENT_COLUMNS: &str = "host, boot_id, seq, time, mono_ns, type, session_id, \
    loginuid, pid, tid, ppid, uid, euid, gid, cgroup_id, comm, path, argv, bytes, port, ret, \
    gained_root, summary, detail";
const PRE_V9_QUARANTINE_COLUMNS: &str = "host, seq, received, reason, payload";

/// What a ClickHouse user may do to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    Insert,
    Select,
}

impl Privilege {
    pub fn sql(self) -> &'static str {
        match self {
            Privilege::Insert => "INSERT",
            Privilege::Select => "SELECT",
        }
    }
}

/// One privilege on one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub privilege: Privilege,
    pub database: String,
    pub table: String,
}

/// Who a fleet-wide baseline row is about: the login user's recorded name, or `uid:N`.
const BASELINE_USER: &str = "if(JSONExtractString(detail, 'process', 'login_user') != '', \
    JSONExtractString(detail, 'process', 'login_user'), concat('uid:', toString(loginuid)))";

/// "`path` is sensitive" in ClickHouse, from the configured patterns (a prefix, or with a
/// leading `*` a fragment anywhere), quoted. Written into the view itself rather than read from
/// a table by a subquery: a subquery in a materialized view stopped every view of the insert
/// under chdb, silently. `false` when the list is empty.
fn sensitive_path_condition(patterns: &[String]) -> String {
    if patterns.is_empty() {
        return "false".into();
    }
    patterns
        .iter()
        .map(|p| match PathPattern::parse(p) {
            PathPattern::Fragment(f) => format!("position(path, {}) > 0", sql_string(f)),
            PathPattern::Prefix(p) => format!("startsWith(path, {})", sql_string(p)),
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
            sensitive_paths: Vec::new(),
        };
        let all: Vec<String> = opts
            .bootstrap()
            .into_iter()
            .chain(
                opts.migrations()
                    .into_iter()
                    .flat_map(|m| m.statements)
                    .map(|s| s.sql),
            )
            .collect();
        // Inserts go to the local tables of the node that runs them; everything else is DDL.
        for stmt in all.iter().filter(|s| !s.starts_with("INSERT")) {
            assert!(stmt.contains("ON CLUSTER `prod`"), "{stmt}");
            assert!(!stmt.contains("ENGINE = MergeTree"), "{stmt}");
        }
        assert!(all.iter().any(|s| s.contains(
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/vigil/events', '{replica}')"
        )));
        assert!(all
            .iter()
            .any(|s| s.contains("`events_all`") && s.contains("Distributed(`prod`")));
        assert!(all.iter().any(|s| s.contains("INTERVAL 30 DAY")));
    }

    #[test]
    fn the_fleet_sensitive_paths_are_written_from_the_configuration_quoted() {
        let opts = SchemaOptions {
            database: "vigil".into(),
            cluster: None,
            retention_days: 30,
            sensitive_paths: vec!["/etc/shadow".into(), "*/.ssh/".into()],
        };
        let sync = opts.sensitive_paths_sync();
        assert_eq!(sync[0], "DROP VIEW IF EXISTS `vigil`.`user_baseline_mv`");
        assert!(sync[1].contains("startsWith(path, '/etc/shadow') OR position(path, '/.ssh/') > 0"));
        assert!(
            sync[3].ends_with("VALUES ('/etc/shadow', 'prefix'), ('/.ssh/', 'fragment')"),
            "{}",
            sync[3]
        );
        let none = SchemaOptions {
            sensitive_paths: Vec::new(),
            ..opts
        };
        assert_eq!(none.sensitive_paths_sync().len(), 3);
        assert!(none
            .user_baseline_view()
            .contains("type = 'open' AND ret >= 0 AND (false)"));
        assert_eq!(sql_string(r"it's a\b"), r"'it\'s a\\b'");
    }

    #[test]
    fn every_session_table_is_keyed_by_host_boot_and_session() {
        let opts = SchemaOptions {
            database: "vigil".into(),
            cluster: None,
            retention_days: 30,
            sensitive_paths: Vec::new(),
        };
        for ddl in [
            opts.events_table(),
            opts.sessions_table(),
            opts.identity_table(),
        ] {
            assert!(ddl.contains("ORDER BY (host, boot_id, session_id"), "{ddl}");
        }
        for view in [opts.sessions_view(), opts.identity_view()] {
            assert!(
                view.contains("GROUP BY host, boot_id, session_id"),
                "{view}"
            );
        }
        assert!(opts.alerts_view().contains("SELECT host, boot_id, time"));
    }

    #[test]
    fn single_node_schema_has_no_cluster_clauses() {
        let opts = SchemaOptions {
            database: "vigil".into(),
            cluster: None,
            retention_days: 90,
            sensitive_paths: Vec::new(),
        };
        for m in opts.migrations() {
            for stmt in m.statements {
                assert!(
                    !stmt.sql.contains("ON CLUSTER") && !stmt.sql.contains("Replicated"),
                    "{}",
                    stmt.sql
                );
            }
        }
        let versions: Vec<u32> = opts.migrations().iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}
