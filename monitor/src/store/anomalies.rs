//! Fleet-wide anomaly queries over the baseline tables (`user_baseline`, `user_daily_volume`,
//! fed by materialized views from `events`). Each is plain SQL with `{name:Type}` parameters, so
//! the same text runs in `clickhouse-client`, Grafana or `vigil anomalies` (`--sql` prints them).
//!
//! Parameters: `since` (ns since the epoch: report what first happened after it), `learning`
//! (ns: a user's first `learning` of history only teaches), `factor`, `min_bytes` and
//! `min_days` for volume.

use serde::{Deserialize, Serialize};

use super::{ClickHouseConfig, StoreError};

/// One anomaly query: its name, what it finds, and its SQL.
pub struct AnomalyQuery {
    pub kind: &'static str,
    pub about: &'static str,
    pub sql: &'static str,
}

/// Something a user did for the first time, after their learning period: `dimension` is
/// `binary`, `host`, `destination`, `sensitive_path` or `hour_of_week`.
const FIRST_SEEN: &str = "SELECT b.user AS user, concat('new-', replaceAll(b.dimension, '_', '-')) AS kind,
    b.value AS value, toUnixTimestamp64Nano(b.first) AS first_seen,
    concat('first seen ', toString(b.first), ', ', toString(b.events), ' times since; user known since ',
        toString(u.since)) AS detail
FROM (
    SELECT user, dimension, value, min(first_seen) AS first, sum(events) AS events
    FROM user_baseline
    WHERE dimension = {dimension:String}
    GROUP BY user, dimension, value
    HAVING first >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')
) AS b
INNER JOIN (
    SELECT user, min(first_seen) AS since FROM user_baseline GROUP BY user
) AS u ON b.user = u.user
WHERE toUnixTimestamp64Nano(b.first) - toUnixTimestamp64Nano(u.since) >= {learning:Int64}
ORDER BY first_seen";

/// Days on which a user read far more than their mean over the 30 days before.
const VOLUME: &str = "SELECT t.user AS user, 'volume' AS kind, toString(t.day) AS value,
    toUnixTimestamp64Nano(toDateTime64(t.day, 9, 'UTC')) AS first_seen,
    concat(toString(t.bytes), ' bytes read, ', toString(round(t.bytes / avg(p.bytes), 1)),
        'x the mean of ', toString(count()), ' previous active days') AS detail
FROM (
    SELECT user, day, sum(bytes) AS bytes FROM user_daily_volume
    GROUP BY user, day
    HAVING day >= toDate(fromUnixTimestamp64Nano({since:Int64}, 'UTC'))
) AS t
INNER JOIN (
    SELECT user, day, sum(bytes) AS bytes FROM user_daily_volume GROUP BY user, day
) AS p ON p.user = t.user
WHERE p.day < t.day AND p.day >= t.day - 30 AND p.bytes > 0
GROUP BY t.user, t.day, t.bytes
HAVING count() >= {min_days:UInt32} AND t.bytes > greatest(toFloat64({min_bytes:UInt64}), {factor:Float64} * avg(p.bytes))
ORDER BY first_seen";

/// Binaries first run after `since` by a user whom no one else in their peer group (identity
/// mapping) has been seen running.
const PEER_UNIQUE: &str = "WITH members AS (
    SELECT lu AS user, any(pg) AS peer_group FROM (
        SELECT max(login_user) AS lu, max(peer_group) AS pg
        FROM session_identity GROUP BY host, session_id
    ) WHERE pg != '' AND lu != '' GROUP BY lu
)
SELECT b.user AS user, 'peer-unique-binary' AS kind, b.value AS value,
    toUnixTimestamp64Nano(b.first) AS first_seen,
    concat('no one else in peer group ', g.peer_group, ' (', toString(gs.size), ' members) ran it') AS detail
FROM (
    SELECT user, value, min(first_seen) AS first FROM user_baseline
    WHERE dimension = 'binary' GROUP BY user, value
    HAVING first >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')
) AS b
INNER JOIN members AS g ON g.user = b.user
INNER JOIN (SELECT peer_group, count() AS size FROM members GROUP BY peer_group) AS gs
    ON gs.peer_group = g.peer_group
INNER JOIN (
    SELECT ub.value AS value, gm.peer_group AS peer_group, uniqExact(ub.user) AS users
    FROM user_baseline AS ub
    INNER JOIN members AS gm ON gm.user = ub.user
    WHERE ub.dimension = 'binary'
    GROUP BY value, peer_group
) AS pv ON pv.value = b.value AND pv.peer_group = g.peer_group
WHERE gs.size > 1 AND pv.users = 1
ORDER BY first_seen";

pub const QUERIES: &[AnomalyQuery] = &[
    AnomalyQuery {
        kind: "new-binary",
        about: "a binary a user ran for the first time after their learning period",
        sql: FIRST_SEEN,
    },
    AnomalyQuery {
        kind: "new-host",
        about: "a host a user used for the first time",
        sql: FIRST_SEEN,
    },
    AnomalyQuery {
        kind: "new-destination",
        about: "an address:port a user connected to for the first time",
        sql: FIRST_SEEN,
    },
    AnomalyQuery {
        kind: "new-sensitive-path",
        about: "a sensitive path a user opened for the first time",
        sql: FIRST_SEEN,
    },
    AnomalyQuery {
        kind: "new-hour-of-week",
        about: "activity in a UTC hour of the week (Monday 00:00 = 0) the user was never active in",
        sql: FIRST_SEEN,
    },
    AnomalyQuery {
        kind: "volume",
        about: "a day's reads far above the user's mean over the 30 days before",
        sql: VOLUME,
    },
    AnomalyQuery {
        kind: "peer-unique-binary",
        about: "a binary no one else in the user's peer group runs",
        sql: PEER_UNIQUE,
    },
];

/// One anomaly found.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize, PartialEq)]
pub struct AnomalyRow {
    pub user: String,
    pub kind: String,
    pub value: String,
    /// ns since the epoch.
    pub first_seen: i64,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct AnomalyParams {
    pub since_ns: i64,
    pub learning_ns: i64,
    pub factor: f64,
    pub min_bytes: u64,
    pub min_days: u32,
}

/// Runs the queries of `kinds` (all when empty).
pub async fn run(
    cfg: &ClickHouseConfig,
    kinds: &[String],
    p: &AnomalyParams,
) -> Result<Vec<AnomalyRow>, StoreError> {
    let client = cfg.client(true)?;
    let mut out = Vec::new();
    for q in QUERIES {
        if !kinds.is_empty() && !kinds.iter().any(|k| k == q.kind) {
            continue;
        }
        let mut query = client.query(q.sql).param("since", p.since_ns);
        query = match q.kind {
            "volume" => query
                .param("factor", p.factor)
                .param("min_bytes", p.min_bytes)
                .param("min_days", p.min_days),
            "peer-unique-binary" => query,
            kind => query
                .param(
                    "dimension",
                    kind.trim_start_matches("new-").replace('-', "_"),
                )
                .param("learning", p.learning_ns),
        };
        let rows: Vec<AnomalyRow> = query.fetch_all().await.map_err(|e| cfg.error(e))?;
        out.extend(rows);
    }
    Ok(out)
}
