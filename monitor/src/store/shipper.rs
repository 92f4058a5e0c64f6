//! Ships events from the spool to ClickHouse.
//!
//! It reads the spool from one past the last acknowledged sequence, sends batches (by size or
//! age), and acknowledges a batch only once ClickHouse has taken it. Before sending, the batch's
//! sequence range is written to `acks/clickhouse.inflight`; after a failure or a restart the same
//! range is sent again with the same `insert_deduplication_token`, so ClickHouse keeps one copy
//! (in `events` and in the `sessions` view alike). While ClickHouse is away the shipper retries
//! with backoff and the spool absorbs what arrives; capture never waits for it.
//!
//! The daemon never changes the schema: it checks, with its insert-only credentials, that the
//! schema is the version it needs, and waits (the spool holding everything) until an
//! administrator has run `vigil db migrate`. Each row carries its record's epoch, sequence and
//! chain; deduplication tokens name the epoch, so the batches of a spool made anew never repeat
//! an earlier spool's tokens (ClickHouse would silently discard them).
//!
//! A record that passed the spool's checksum but does not decode as an event (written by a
//! newer daemon before a rollback, say) is not dropped: it goes to the `quarantine` table as it
//! was, with the reason, in the same batch, and is counted (`vigil_clickhouse_quarantined_total`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{check_schema, ChainedRecord, ClickHouseConfig, EventRow, QuarantineRow, StoreError};
use crate::{
    event::Event,
    spool::{AckFile, Chain, Epoch, ReadNote, SpoolReader},
};

const CONSUMER: &str = "clickhouse";

/// The range being sent, kept on disk until acknowledged.
struct Inflight {
    path: PathBuf,
}

impl Inflight {
    fn new(spool: &Path) -> Inflight {
        Inflight {
            path: spool.join("acks").join(format!("{CONSUMER}.inflight")),
        }
    }

    fn load(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let (from, to) = text.trim().split_once('-')?;
        Some((from.parse().ok()?, to.parse().ok()?))
    }

    /// Atomically and durably (see `crate::durable`): after a power loss it names the batch
    /// that was being sent, or none, never half of one.
    fn store(&self, from: u64, to: u64) -> std::io::Result<()> {
        crate::durable::write_atomic(&self.path, format!("{from}-{to}\n").as_bytes())
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn batch_token(host: &str, epoch: &str, from: u64, to: u64) -> String {
    format!("vigil:{host}:{epoch}:{from}-{to}")
}

async fn insert<R>(
    cfg: &ClickHouseConfig,
    client: &clickhouse::Client,
    table: &str,
    rows: &[R],
    token: &str,
) -> Result<(), StoreError>
where
    R: clickhouse::RowOwned,
    for<'a> R: clickhouse::RowWrite<Value<'a> = R>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client
        .insert::<R>(table)
        .await
        .map_err(|e| cfg.error(e))?
        .with_setting("insert_deduplication_token", token)
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
    for row in rows {
        insert.write(row).await.map_err(|e| cfg.error(e))?;
    }
    insert.end().await.map_err(|e| cfg.error(e))
}

/// Sleeps for `d` unless shutdown comes first; true when shutting down.
async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// What the shipper reports to the health endpoint and the lag gauges.
#[derive(Debug, Default)]
pub struct ShipperStatus {
    /// The next spool sequence to ship (everything below is in ClickHouse).
    pub next_seq: std::sync::atomic::AtomicU64,
    /// When a batch was last acknowledged (ms since the epoch; 0: never).
    pub last_ack_unix_ms: std::sync::atomic::AtomicU64,
    /// The last failure, cleared by the next success.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl ShipperStatus {
    fn failed(&self, e: &dyn std::fmt::Display) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_string());
        }
    }

    fn acked(&self, next: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.next_seq.store(next, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_ack_unix_ms.store(now, Relaxed);
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = None;
        }
    }
}

/// Records read from the spool for one step of a batch, their payloads in one reused buffer.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    records: Vec<(u64, Epoch, Option<Chain>, std::ops::Range<usize>)>,
}

/// Records read from the spool per step of a batch: enough to keep the client's buffer full,
/// few enough that a chunk is a few hundred kilobytes.
const CHUNK_RECORDS: usize = 1024;

/// What one batch put into ClickHouse.
struct Shipped {
    rows: u64,
    quarantined: u64,
}

/// Sends records `from..=to` of the spool: each decoded and streamed into the `events` insert
/// as it is read, the ones that do not decode into `quarantine` after it. Both inserts carry the
/// batch's deduplication token, so a batch sent again after a failure is kept once.
async fn ship(
    cfg: &ClickHouseConfig,
    client: &clickhouse::Client,
    host: &str,
    reader: &mut SpoolReader,
    chunk: &mut Chunk,
    from: u64,
    to: u64,
) -> Result<Shipped, StoreError> {
    let mut events: Option<clickhouse::insert::Insert<EventRow<'static>>> = None;
    let mut quarantined: Vec<QuarantineRow> = Vec::new();
    let mut token: Option<String> = None;
    let mut epoch_hex = (Epoch::default(), String::new());
    let mut rows = 0u64;
    while reader.next_seq() <= to {
        chunk.bytes.clear();
        chunk.records.clear();
        let want = (to + 1 - reader.next_seq()).min(CHUNK_RECORDS as u64) as usize;
        let notes = reader.read_with(want, |r| {
            let at = chunk.bytes.len();
            chunk.bytes.extend_from_slice(r.payload);
            chunk
                .records
                .push((r.seq, r.epoch, r.chain, at..chunk.bytes.len()));
        })?;
        for note in notes {
            let ReadNote::Gap { from, to, reason } = note;
            tracing::warn!(from, to, %reason, "spool gap while shipping");
            metrics::counter!("vigil_clickhouse_spool_gaps_total").increment(1);
        }
        if chunk.records.is_empty() {
            break; // the rest of the batch is gone (reported as a gap)
        }
        for (seq, epoch, chain, range) in &chunk.records {
            if *seq > to {
                break; // past the batch (a gap moved the reader on): the next batch's
            }
            if epoch_hex.1.is_empty() || epoch_hex.0 != *epoch {
                epoch_hex = (*epoch, epoch.hex());
            }
            // The token names the batch's first epoch: a spool made anew never repeats the
            // tokens of an earlier one (ClickHouse would silently discard its batches).
            let token = token.get_or_insert_with(|| batch_token(host, &epoch_hex.1, from, to));
            let place = ChainedRecord {
                seq: *seq,
                epoch: &epoch_hex.1,
                chain: chain.map(|c| c.0).unwrap_or_default(),
            };
            let payload = &chunk.bytes[range.clone()];
            // `detail` must be the payload byte for byte (the chain is computed over it), so
            // only a payload that is UTF-8 goes there; JSON from serde always is.
            let detail = match std::str::from_utf8(payload) {
                Ok(detail) => detail,
                Err(_) => {
                    quarantined.push(QuarantineRow::new(host, &place, &"not UTF-8", payload));
                    continue;
                }
            };
            let event = match Event::from_json(payload) {
                Ok(event) => event,
                Err(e) => {
                    quarantined.push(QuarantineRow::new(host, &place, &e, payload));
                    continue;
                }
            };
            let insert = match events.as_mut() {
                Some(insert) => insert,
                None => events.insert(
                    client
                        .insert::<EventRow<'static>>("events")
                        .await
                        .map_err(|e| cfg.error(e))?
                        .with_setting("insert_deduplication_token", token.as_str())
                        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1"),
                ),
            };
            insert
                .write(&EventRow::new(host, &place, &event, detail))
                .await
                .map_err(|e| cfg.error(e))?;
            rows += 1;
        }
        if chunk.records.last().is_some_and(|r| r.0 >= to) {
            break;
        }
    }
    if let Some(insert) = events {
        insert.end().await.map_err(|e| cfg.error(e))?;
    }
    if !quarantined.is_empty() {
        tracing::warn!(
            count = quarantined.len(),
            first_seq = quarantined[0].seq,
            reason = %quarantined[0].reason,
            "spool records that do not decode as events go to the quarantine table"
        );
        let token = token.unwrap_or_else(|| batch_token(host, &epoch_hex.1, from, to));
        insert(
            cfg,
            client,
            "quarantine",
            &quarantined,
            &format!("{token}:q"),
        )
        .await?;
    }
    Ok(Shipped {
        rows,
        quarantined: quarantined.len() as u64,
    })
}

/// Runs until shutdown. On shutdown it makes one last attempt to ship what the spool holds.
/// `spool_position` is the spool writer's next sequence, to publish the lag (events written but
/// not yet in ClickHouse).
pub async fn run(
    cfg: ClickHouseConfig,
    spool: PathBuf,
    host: String,
    spool_position: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    status: std::sync::Arc<ShipperStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let retry_max = Duration::from_millis(cfg.retry_max_ms.max(100));
    let mut backoff = Duration::from_millis(100);
    // The schema first; until ClickHouse answers with the version this daemon needs, keep
    // trying (the spool holds everything).
    loop {
        match check_schema(&cfg).await {
            Ok(version) => {
                tracing::info!(version, "ClickHouse schema checked");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ship to ClickHouse yet; events stay in the spool");
                metrics::counter!("vigil_clickhouse_errors_total").increment(1);
                status.failed(&e);
                if sleep_or_stop(backoff, &mut shutdown).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(retry_max);
            }
        }
    }
    let client = cfg.client(true)?;
    let ack = AckFile::new(&spool, CONSUMER);
    status
        .next_seq
        .store(ack.next(), std::sync::atomic::Ordering::Relaxed);
    let inflight = Inflight::new(&spool);
    // Two readers over the same spool: `probe` runs ahead and decides where a batch ends without
    // copying anything; `reader` then streams the batch's records into the insert. The batch is
    // never held whole in memory (only one chunk of records and the client's send buffer), so
    // batches can be as large as ClickHouse wants them.
    let mut reader = SpoolReader::new(&spool, ack.next());
    let mut probe = SpoolReader::new(&spool, ack.next());
    // A batch that was being sent when we stopped goes again, exactly as it was.
    let mut resend = inflight
        .load()
        .filter(|(from, _)| *from == reader.next_seq());
    let batch_age = Duration::from_millis(cfg.batch_ms);
    let mut chunk = Chunk::default();
    let mut stopping = false;
    loop {
        let from = reader.next_seq();
        let to = match resend {
            Some((_, to)) => {
                probe = SpoolReader::new(&spool, to + 1);
                to
            }
            None => {
                // What the spool holds from `from` on, up to a batch (gaps are reported by the
                // streaming reader, not here, so each is reported once).
                let (mut count, mut last) = (0usize, None);
                let started = Instant::now();
                loop {
                    probe.read_with(cfg.batch_rows - count, |r| {
                        count += 1;
                        last = Some(r.seq);
                    })?;
                    if count >= cfg.batch_rows || (count > 0 && started.elapsed() >= batch_age) {
                        break;
                    }
                    if stopping {
                        break;
                    }
                    if sleep_or_stop(Duration::from_millis(50), &mut shutdown).await {
                        stopping = true;
                    }
                }
                match last {
                    Some(last) => last,
                    None => return Ok(()), // stopping, nothing left
                }
            }
        };
        inflight.store(from, to)?;
        let mut attempt_backoff = Duration::from_millis(100);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sent = Instant::now();
            let outcome = ship(&cfg, &client, &host, &mut reader, &mut chunk, from, to).await;
            match outcome {
                Ok(shipped) => {
                    metrics::counter!("vigil_clickhouse_quarantined_total")
                        .increment(shipped.quarantined);
                    metrics::counter!("vigil_clickhouse_rows_total").increment(shipped.rows);
                    metrics::counter!("vigil_clickhouse_batches_total").increment(1);
                    metrics::histogram!("vigil_clickhouse_insert_seconds")
                        .record(sent.elapsed().as_secs_f64());
                    break;
                }
                Err(e) => {
                    metrics::counter!("vigil_clickhouse_errors_total").increment(1);
                    status.failed(&e);
                    tracing::warn!(error = %e, from, to, "shipping a batch failed; will retry the same batch");
                    // The same records again, from the spool: the reader starts over at `from`.
                    reader = SpoolReader::new(&spool, from);
                    // While stopping, give up after a short while: the batch stays in flight on
                    // disk and goes first at the next start.
                    if stopping && Instant::now() > deadline {
                        return Ok(());
                    }
                    if sleep_or_stop(attempt_backoff, &mut shutdown).await {
                        stopping = true;
                    }
                    attempt_backoff = (attempt_backoff * 2).min(retry_max);
                }
            }
        }
        ack.ack(to)?;
        status.acked(to + 1);
        if reader.next_seq() != to + 1 {
            // The spool changed between the probe and the send (it deleted records when full):
            // the next batch starts right after this one's range, whatever the reader skipped.
            reader = SpoolReader::new(&spool, to + 1);
        }
        inflight.clear();
        resend = None;
        metrics::gauge!("vigil_clickhouse_acked_seq").set(to as f64);
        // The lag gauges are computed at each scrape from `status` (see health.rs), so they
        // also move while ClickHouse is away.
        let _ = &spool_position;
    }
}
