//! Ships events from the spool to ClickHouse.
//!
//! It reads the spool from one past the last acknowledged sequence, sends batches (by size or
//! age), and acknowledges a batch only once ClickHouse has taken it. Before sending, the batch's
//! sequence range is written to `acks/clickhouse.inflight`; after a failure or a restart the same
//! range is sent again with the same `insert_deduplication_token`, so ClickHouse keeps one copy
//! (in `events` and in the `sessions` view alike). While ClickHouse is away the shipper retries
//! with backoff and the spool absorbs what arrives; capture never waits for it.
//!
//! A batch is streamed: its records are read from the spool, decoded and written into the
//! insert a chunk at a time, never held whole. Two batches are in flight at most: while
//! ClickHouse takes one, the next is read and sent (the shipper and the server work at the same
//! time instead of taking turns). Acknowledgements stay in order; when one batch fails, every
//! unacknowledged range is sent again as it was, in order, with its own token. That a batch sent
//! again is kept once rests on ClickHouse's per-block deduplication: a server forms blocks from
//! the rows it parses (about a million rows or 256 MiB by default, far above a batch), the same
//! rows always into the same blocks, and a body cut short fails to parse instead of becoming a
//! block of its own (`deploy/dev/chdb_http.py` does the same).
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
    collections::VecDeque,
    ops::ControlFlow,
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

/// The ranges being sent (at most `IN_FLIGHT`, oldest first), kept on disk until acknowledged.
struct Inflight {
    path: PathBuf,
}

/// Batches sent and not yet acknowledged, at most.
const IN_FLIGHT: usize = 2;

impl Inflight {
    fn new(spool: &Path) -> Inflight {
        Inflight {
            path: spool.join("acks").join(format!("{CONSUMER}.inflight")),
        }
    }

    /// The ranges recorded, as long as they follow each other from `next` on (one line each;
    /// a file of one range is what an earlier Vigil wrote). Anything else names nothing that
    /// can be sent again exactly, and is left out.
    fn load(&self, next: u64) -> Vec<(u64, u64)> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut expect = next;
        for line in text.lines() {
            let Some((from, to)) = line.trim().split_once('-') else {
                break;
            };
            let (Ok(from), Ok(to)) = (from.parse::<u64>(), to.parse::<u64>()) else {
                break;
            };
            if from != expect || to < from {
                break;
            }
            ranges.push((from, to));
            expect = to + 1;
        }
        ranges
    }

    /// Atomically and durably (see `crate::durable`): after a power loss it names the batches
    /// that were being sent, or none, never half of one.
    fn store(&self, ranges: impl Iterator<Item = (u64, u64)>) -> std::io::Result<()> {
        let text: String = ranges.map(|(from, to)| format!("{from}-{to}\n")).collect();
        if text.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            return Ok(());
        }
        crate::durable::write_atomic(&self.path, text.as_bytes())
    }
}

fn batch_token(host: &str, epoch: &str, from: u64, to: u64) -> String {
    format!("vigil:{host}:{epoch}:{from}-{to}")
}

/// The insert into `table` in `slot`, opened with the batch's deduplication token at its first
/// row (a batch with no row for a table sends that table nothing).
async fn opened<'s, R: clickhouse::RowWrite>(
    slot: &'s mut Option<clickhouse::insert::Insert<R>>,
    cfg: &ClickHouseConfig,
    client: &clickhouse::Client,
    table: &str,
    token: &str,
) -> Result<&'s mut clickhouse::insert::Insert<R>, StoreError> {
    let insert = match slot.take() {
        Some(insert) => insert,
        None => client
            .insert::<R>(table)
            .await
            .map_err(|e| cfg.error(e))?
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1"),
    };
    Ok(slot.insert(insert))
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
/// few enough that a chunk is a few hundred kilobytes; and at most about this many bytes of them
/// (a record can be megabytes: a long argv, a terminal's output).
const CHUNK_RECORDS: usize = 1024;
const CHUNK_BYTES: usize = 1 << 20;

/// What one batch put into ClickHouse.
struct Shipped {
    rows: u64,
    quarantined: u64,
}

/// A batch whose rows are all written: what is left is for ClickHouse to take it.
struct Sending {
    events: Option<clickhouse::insert::Insert<EventRow<'static>>>,
    /// Records that did not decode, streamed into `quarantine` as they come (a spool written by
    /// a newer daemon can be nothing else, and a batch of them held in memory would be large).
    quarantine: Option<clickhouse::insert::Insert<QuarantineRow>>,
    rows: u64,
    quarantined: u64,
    /// The first one's sequence and reason, for the log.
    first_quarantined: Option<(u64, String)>,
}

impl Sending {
    /// Ends both inserts: ClickHouse answers once the batch is in `events` and its views, and
    /// in `quarantine`.
    async fn finish(self, cfg: ClickHouseConfig) -> Result<Shipped, StoreError> {
        if let Some(insert) = self.events {
            insert.end().await.map_err(|e| cfg.error(e))?;
        }
        if let Some(insert) = self.quarantine {
            insert.end().await.map_err(|e| cfg.error(e))?;
        }
        if let Some((first_seq, reason)) = &self.first_quarantined {
            tracing::warn!(
                count = self.quarantined,
                first_seq,
                %reason,
                "spool records that do not decode as events went to the quarantine table"
            );
        }
        Ok(Shipped {
            rows: self.rows,
            quarantined: self.quarantined,
        })
    }
}

/// Reads records `from..=to` of the spool and writes each, decoded, into the `events` insert as
/// it is read, and each that does not decode into the `quarantine` insert. Both carry the batch's
/// deduplication token (`:q` after it for quarantine), so a batch sent again is kept once.
async fn send(
    cfg: &ClickHouseConfig,
    client: &clickhouse::Client,
    host: &str,
    reader: &mut SpoolReader,
    chunk: &mut Chunk,
    (from, to): (u64, u64),
) -> Result<Sending, StoreError> {
    let mut sending = Sending {
        events: None,
        quarantine: None,
        rows: 0,
        quarantined: 0,
        first_quarantined: None,
    };
    // The batch's token, and the one its quarantine insert carries.
    let mut tokens: Option<(String, String)> = None;
    let mut epoch_hex = (Epoch::default(), String::new());
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
            if chunk.bytes.len() >= CHUNK_BYTES {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
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
            let (token, quarantine_token) = tokens.get_or_insert_with(|| {
                let token = batch_token(host, &epoch_hex.1, from, to);
                (token.clone(), format!("{token}:q"))
            });
            let place = ChainedRecord {
                seq: *seq,
                epoch: &epoch_hex.1,
                chain: chain.map(|c| c.0).unwrap_or_default(),
            };
            let payload = &chunk.bytes[range.clone()];
            // `detail` must be the payload byte for byte (the chain is computed over it), so
            // only a payload that is UTF-8 goes there; JSON from serde always is.
            let decoded = match std::str::from_utf8(payload) {
                Ok(detail) => Event::from_json(payload)
                    .map(|event| (event, detail))
                    .map_err(|e| e.to_string()),
                Err(_) => Err("not UTF-8".to_string()),
            };
            match decoded {
                Ok((event, detail)) => {
                    let insert = opened(&mut sending.events, cfg, client, "events", token).await?;
                    insert
                        .write(&EventRow::new(host, &place, &event, detail))
                        .await
                        .map_err(|e| cfg.error(e))?;
                    sending.rows += 1;
                }
                Err(reason) => {
                    let row = QuarantineRow::new(host, &place, &reason, payload);
                    let insert = opened(
                        &mut sending.quarantine,
                        cfg,
                        client,
                        "quarantine",
                        quarantine_token,
                    )
                    .await?;
                    insert.write(&row).await.map_err(|e| cfg.error(e))?;
                    sending.quarantined += 1;
                    sending.first_quarantined.get_or_insert((*seq, reason));
                }
            }
        }
        if chunk.records.last().is_some_and(|r| r.0 >= to) {
            break;
        }
    }
    Ok(sending)
}

/// A batch sent, ClickHouse's answer pending.
struct InFlight {
    range: (u64, u64),
    started: Instant,
    answer: tokio::task::JoinHandle<Result<Shipped, StoreError>>,
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
    // copying anything; `reader` then streams the batch's records into the insert.
    let mut reader = SpoolReader::new(&spool, ack.next());
    let mut probe = SpoolReader::new(&spool, ack.next());
    // Batches that were being sent when we stopped go again first, exactly as they were.
    let mut resend: VecDeque<(u64, u64)> = inflight.load(ack.next()).into();
    let mut sent: VecDeque<InFlight> = VecDeque::new();
    let mut plan = Plan::default();
    let mut chunk = Chunk::default();
    let mut attempt_backoff = Duration::from_millis(100);
    let mut stopping = false;
    let mut failing_since: Option<Instant> = None;
    loop {
        // The next batch: one to send again, or what the spool holds from `from` on.
        let range = match resend.pop_front() {
            Some((from, to)) => {
                // As far as the spool holds it: a range past the spool's end (spool data a
                // power cut took while the in-flight file survived, or an edited file) is cut
                // to what is there, so what is acknowledged is what was sent; ranges after it
                // lie beyond the end too.
                let mut held = None;
                let mut check = SpoolReader::new(&spool, from);
                let len = usize::try_from(to - from).unwrap_or(usize::MAX);
                check.read_with(len.saturating_add(1), |r| {
                    if r.seq <= to {
                        held = Some(r.seq);
                    }
                    if r.seq >= to {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
                if held != Some(to) {
                    tracing::warn!(
                        from,
                        to,
                        held,
                        "a batch to send again is not all in the spool; sending what it holds"
                    );
                    resend.clear();
                }
                probe = SpoolReader::new(&spool, held.map_or(from, |end| end + 1));
                plan = Plan::default();
                held.map(|end| (from, end))
            }
            None => loop {
                // Gaps are reported by the streaming reader, not here, so once each.
                probe.read_with(cfg.batch_rows - plan.count, |r| {
                    plan.count += 1;
                    plan.last = Some(r.seq);
                    ControlFlow::Continue(())
                })?;
                let since = *plan.since.get_or_insert_with(Instant::now);
                let full = plan.count >= cfg.batch_rows;
                let aged = plan.count > 0 && since.elapsed() >= Duration::from_millis(cfg.batch_ms);
                if full || aged || (stopping && plan.count > 0) {
                    let to = plan.last.take().unwrap_or_default();
                    plan = Plan::default();
                    break Some((reader.next_seq(), to));
                }
                // Not a batch yet: take ClickHouse's answers meanwhile (the plan is kept).
                if !sent.is_empty() || stopping {
                    break None;
                }
                if sleep_or_stop(Duration::from_millis(50), &mut shutdown).await {
                    stopping = true;
                }
            },
        };
        let mut failure = false;
        if let Some(range) = range {
            // On disk in the order sent: a restart sends them again in that order.
            inflight.store(unacknowledged(&sent, Some(range), &resend))?;
            let started = Instant::now();
            match send(&cfg, &client, &host, &mut reader, &mut chunk, range).await {
                Ok(sending) => {
                    let answer = tokio::spawn(sending.finish(cfg.clone()));
                    sent.push_back(InFlight {
                        range,
                        started,
                        answer,
                    });
                    if reader.next_seq() != range.1 + 1 {
                        // The spool changed between the probe and the send (it deleted records
                        // when full): the next batch starts right after this one's range.
                        reader = SpoolReader::new(&spool, range.1 + 1);
                    }
                }
                Err(e) => {
                    // Never sent whole: it goes again, after the ones sent before it.
                    let mut again = call_back(&mut sent).await;
                    again.push(range);
                    failed(&e, again, &mut resend, &status, &inflight);
                    failure = true;
                }
            }
        }
        // Take answers: the oldest once the most that may be in flight are, and every one when
        // there is nothing more to send yet.
        while !failure && (sent.len() >= IN_FLIGHT || (range.is_none() && !sent.is_empty())) {
            let Some(batch) = sent.pop_front() else {
                break;
            };
            let answer = match batch.answer.await {
                Ok(answer) => answer,
                Err(e) => Err(StoreError::Shipper(e.to_string())),
            };
            match answer {
                Ok(shipped) => {
                    metrics::counter!("vigil_clickhouse_quarantined_total")
                        .increment(shipped.quarantined);
                    metrics::counter!("vigil_clickhouse_rows_total").increment(shipped.rows);
                    metrics::counter!("vigil_clickhouse_batches_total").increment(1);
                    metrics::histogram!("vigil_clickhouse_insert_seconds")
                        .record(batch.started.elapsed().as_secs_f64());
                    let to = batch.range.1;
                    ack.ack(to)?;
                    status.acked(to + 1);
                    metrics::gauge!("vigil_clickhouse_acked_seq").set(to as f64);
                    inflight.store(unacknowledged(&sent, None, &resend))?;
                    attempt_backoff = Duration::from_millis(100);
                    failing_since = None;
                }
                Err(e) => {
                    // The oldest failed: it goes again first, then every one sent after it.
                    let mut again = vec![batch.range];
                    again.extend(call_back(&mut sent).await);
                    failed(&e, again, &mut resend, &status, &inflight);
                    failure = true;
                    break;
                }
            }
        }
        if failure {
            // Send again from the first range not acknowledged, after a wait.
            reader = SpoolReader::new(&spool, resend[0].0);
            if retry_or_stop(
                &mut attempt_backoff,
                retry_max,
                &mut failing_since,
                &mut stopping,
                &mut shutdown,
            )
            .await
            {
                return Ok(());
            }
            continue;
        }
        if range.is_none() && sent.is_empty() && stopping {
            return Ok(()); // stopping, nothing left
        }
        // The lag gauges are computed at each scrape from `status` (see health.rs), so they
        // also move while ClickHouse is away.
        let _ = &spool_position;
    }
}

/// Where the next batch ends, as far as the probe has read: kept while the shipper takes
/// answers, so a batch is still as full (or as old) as configured.
#[derive(Default)]
struct Plan {
    count: usize,
    last: Option<u64>,
    since: Option<Instant>,
}

/// Every range not yet acknowledged, in the order sent: those in flight, the one being sent,
/// those to send again.
fn unacknowledged<'a>(
    sent: &'a VecDeque<InFlight>,
    sending: Option<(u64, u64)>,
    resend: &'a VecDeque<(u64, u64)>,
) -> impl Iterator<Item = (u64, u64)> + 'a {
    sent.iter()
        .map(|b| b.range)
        .chain(sending)
        .chain(resend.iter().copied())
}

/// Calls back every batch in flight (their answers no longer matter: they go again, in order)
/// and returns their ranges in the order they were sent.
async fn call_back(sent: &mut VecDeque<InFlight>) -> Vec<(u64, u64)> {
    let mut ranges = Vec::with_capacity(sent.len());
    for batch in sent.drain(..) {
        batch.answer.abort();
        let _ = batch.answer.await;
        ranges.push(batch.range);
    }
    ranges
}

/// A batch failed: reported, and `again` (every range not acknowledged, in the order sent) goes
/// first, before whatever was already to be sent again.
fn failed(
    e: &StoreError,
    again: Vec<(u64, u64)>,
    resend: &mut VecDeque<(u64, u64)>,
    status: &ShipperStatus,
    inflight: &Inflight,
) {
    metrics::counter!("vigil_clickhouse_errors_total").increment(1);
    status.failed(e);
    let (from, to) = (again[0].0, again[again.len() - 1].1);
    tracing::warn!(error = %e, from, to, "shipping to ClickHouse failed; what is not acknowledged goes again, as it was");
    for range in again.into_iter().rev() {
        resend.push_front(range);
    }
    if let Err(e) = inflight.store(unacknowledged(&VecDeque::new(), None, resend)) {
        tracing::warn!(error = %e, "cannot record the batches to send again");
    }
}

/// Waits before sending again (doubling, up to `retry_max`). True when the shipper should stop:
/// stopping and still failing after a short while (what was in flight stays recorded on disk
/// and goes first at the next start).
async fn retry_or_stop(
    backoff: &mut Duration,
    retry_max: Duration,
    failing_since: &mut Option<Instant>,
    stopping: &mut bool,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let since = *failing_since.get_or_insert_with(Instant::now);
    if *stopping && since.elapsed() > Duration::from_secs(5) {
        return true;
    }
    if sleep_or_stop(*backoff, shutdown).await {
        *stopping = true;
    }
    *backoff = (*backoff * 2).min(retry_max);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inflight_file_names_ranges_that_follow_on_from_the_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acks")).unwrap();
        let inflight = Inflight::new(dir.path());
        assert_eq!(inflight.load(0), vec![]);
        inflight.store([(10, 19), (20, 25)].into_iter()).unwrap();
        assert_eq!(inflight.load(10), vec![(10, 19), (20, 25)]);
        // Behind or past the acknowledgement: nothing of it can be sent again as it was.
        assert_eq!(inflight.load(11), vec![]);
        assert_eq!(inflight.load(20), vec![]);
        // An earlier Vigil's one range.
        std::fs::write(&inflight.path, "10-19\n").unwrap();
        assert_eq!(inflight.load(10), vec![(10, 19)]);
        // A range that does not follow the one before it ends the list; so does damage.
        std::fs::write(&inflight.path, "10-19\n21-30\n").unwrap();
        assert_eq!(inflight.load(10), vec![(10, 19)]);
        std::fs::write(&inflight.path, "10-19\n20-2x\n").unwrap();
        assert_eq!(inflight.load(10), vec![(10, 19)]);
        std::fs::write(&inflight.path, "10-9\n").unwrap();
        assert_eq!(inflight.load(10), vec![]);
        // Nothing in flight: no file.
        inflight.store(std::iter::empty()).unwrap();
        assert!(!inflight.path.exists());
    }
}
