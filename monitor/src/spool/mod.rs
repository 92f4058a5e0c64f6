//! The durable local spool: every event is appended here first, as the embedded default store
//! and as the buffer that shipping to ClickHouse reads from.
//!
//! On disk: a directory (owner-only) of segment files `seg-<first seq, 20 digits>.log`, each a
//! header and records framed as [`frame`] describes, every record hash-chained to the one before
//! it. Sequence numbers are contiguous and never reused: not after a crash, not after damage,
//! not after the spool was found behind what was already shipped (that starts a new chain epoch,
//! and the sequence goes on past the acknowledgement).
//!
//! Consumers (the ClickHouse shipper) record the last sequence they have acknowledged in
//! `acks/<name>`. The spool is bounded: when it would grow past `max_bytes`, or the disk is full,
//! the configured policy either deletes the oldest segment or refuses new events, and what is
//! lost that way is written down as a `loss` event in the spool itself.
//!
//! What the writer promises: data reaches the disk by fsync on a timer, at every rotation (with
//! the directory, so a new segment's name survives too), and at stop; acknowledgement and
//! in-flight files are replaced atomically and durably ([`crate::durable`]). At start, recovery
//! cuts only a torn tail (the daemon killed mid-write); damage anywhere else is skipped with a
//! loss record, and every intact record after it is kept. fsyncs run on a thread of their own
//! (`sync.rs`), and the sink drives the writer through [`SpoolThread`] (`writer.rs`).

pub mod frame;
mod reader;
mod sync;
mod writer;

use std::{
    fs::File,
    io::Write,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;

use frame::{list_segments, scan, segment_name, ScanEnd, Scanned, SegmentFile, SegmentHeader};
pub use frame::{Chain, Epoch};
pub use reader::{read_all, AckFile, ReadNote, SpoolItem, SpoolReader, SpoolRecord};
pub use writer::{Closed, SpoolThread};

use crate::{
    durable,
    event::{CheckpointEvent, CheckpointReason, Event, EventBody, LossEvent, LossStage},
    trail::{Counters, Signer},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (its unacknowledged events are lost, and recorded as such).
    DropOldest,
    /// Refuse new events until space is freed (they are lost, and recorded as such).
    StopAccepting,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// fsync at most this often (the OS has every flushed batch already; fsync guards against
    /// power loss, not against the daemon being killed).
    pub fsync_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool {path}: not a Vigil spool segment ({detail})")]
    NotASegment { path: PathBuf, detail: String },
    #[error("spool: an event could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("spool: its writer thread ended unexpectedly (it panicked)")]
    WriterEnded,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Events held in memory when the disk refuses them, before new ones are refused too.
const PENDING_MAX: usize = 8 << 20;

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes it holds, counting those still pending in memory.
    bytes: u64,
    /// Records in it (the last one's sequence is `first_seq + records - 1` when the segment has
    /// no gaps; `last_seq` is kept for the ones that do).
    records: u64,
    last_seq: Option<u64>,
    /// Records in it that are loss records, and the sum of their counts: deleting the segment
    /// carries those counts forward into the next loss record, so the loss records on disk
    /// always add up to every event ever dropped.
    loss_records: u64,
    carried: u64,
}

/// The count of a loss record, or None for any other event (a cheap check first: most
/// records are not loss records).
fn loss_count(payload: &[u8]) -> Option<u64> {
    // Every record written and read passes here: a SIMD substring search, not a window scan,
    // with its searcher built once (building it was 2% of appending).
    static MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"type\":\"loss\""));
    MARK.find(payload)?;
    let event: Event = serde_json::from_slice(payload).ok()?;
    match event.body {
        EventBody::Loss(l) => Some(l.count),
        _ => None,
    }
}

/// What the spool did that a caller may want to count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolCounters {
    pub appended: u64,
    pub dropped: u64,
    pub bytes: u64,
}

/// Why new events are being refused, for the loss record written when room returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    SpoolFull,
    DiskFull,
    TooLarge,
}

/// What opening the spool found: the epoch the chain continues in (and why it began, when it
/// began now), and what recovery did.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    pub epoch: Epoch,
    pub epoch_began: Option<String>,
    pub recovered: Vec<String>,
    /// The start checkpoint, as written (for copies off the host).
    pub start_checkpoint: Option<Event>,
}

/// The writing side. One writer per spool directory.
pub struct Spool {
    cfg: SpoolConfig,
    segments: Vec<Segment>,
    /// Shared with the fsync thread, which may still be syncing it after a rotation.
    current: Option<Arc<File>>,
    /// Whole record frames appended but not yet written to `current` (written at `flush`, or
    /// kept while the disk is full).
    pending: Vec<u8>,
    /// A new segment must be started before the next record (the last one ends in damage, or
    /// an fsync of it failed).
    rotate_next: bool,
    next_seq: u64,
    epoch: Epoch,
    chain: Chain,
    /// The chain's digests of the processes written last (see `frame`).
    process_digests: frame::ProcessDigests,
    opened: Opened,
    signer: Option<Signer>,
    /// Events refused and not yet written down as a loss record.
    refused: u64,
    /// A failed fsync, to be written down with the next record.
    sync_failure: Option<String>,
    refusal: Option<Refusal>,
    /// When the last sync was queued.
    last_fsync: Instant,
    /// The first sequence not yet known to be on disk (its fsync has returned).
    unsynced_from: u64,
    /// The first sequence no queued sync covers.
    sync_queued_to: u64,
    syncer: sync::Syncer,
    /// When the age gauge was last published.
    age_published: Instant,
    counters: SpoolCounters,
    /// `next_seq`, readable by other threads (the shipper measures its lag against it).
    position: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Test hook: fsyncs that fail before one succeeds again.
    #[cfg(test)]
    fail_syncs: u32,
}

pub fn loss(stage: LossStage, count: u64, reason: String) -> Event {
    crate::decode::daemon_event(
        Default::default(),
        EventBody::Loss(LossEvent {
            stage,
            kind: None,
            count,
            reason,
        }),
    )
}

/// A segment as the writer's recovery found it.
struct Recovered {
    segment: Segment,
    header: SegmentHeader,
    last_chain: Option<Chain>,
    end: ScanEnd,
    /// A loss record for damage before the end (records after it are intact).
    damage: Option<Event>,
}

fn recover_segment(path: &Path, first_seq: u64) -> Result<Option<Recovered>, SpoolError> {
    let Some(mut seg) = SegmentFile::open(path, first_seq)? else {
        return Ok(None);
    };
    let mut segment = Segment {
        first_seq,
        path: path.to_path_buf(),
        bytes: 0,
        records: 0,
        last_seq: None,
        loss_records: 0,
        carried: 0,
    };
    let mut last_chain = None;
    let mut damage = Vec::new();
    let mut missing = 0u64;
    let mut expected = first_seq;
    let end = scan(&mut seg, |item| match item {
        Scanned::Record {
            seq,
            chain,
            payload,
            ..
        } => {
            missing += seq - expected;
            expected = seq + 1;
            segment.records += 1;
            segment.last_seq = Some(seq);
            last_chain = chain;
            if let Some(count) = loss_count(payload) {
                segment.loss_records += 1;
                segment.carried += count;
            }
        }
        Scanned::Damage { from, to } => damage.push((from, to)),
    })?;
    segment.bytes = seg.file_len()?;
    let damage = (!damage.is_empty()).then(|| {
        let stretches: Vec<String> = damage.iter().map(|(a, b)| format!("{a}..{b}")).collect();
        loss(
            LossStage::Spool,
            missing,
            format!(
                "segment {}: damaged at bytes {} ({missing} records unreadable); every whole \
                 record after the damage is kept",
                path.display(),
                stretches.join(", ")
            ),
        )
    });
    Ok(Some(Recovered {
        segment,
        header: seg.header,
        last_chain,
        end,
        damage,
    }))
}

impl Spool {
    /// Opens (or creates) the spool; recovery losses and a new epoch are written into it.
    /// `signer` signs its checkpoints (none: checkpoints are not written, the chain still is).
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        Spool::open_signed(cfg, None)
    }

    pub fn open_signed(cfg: SpoolConfig, signer: Option<Signer>) -> Result<Spool, SpoolError> {
        durable::private_dir(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let acks = cfg.dir.join("acks");
        durable::private_dir(&acks).map_err(io_err(&acks))?;
        let mut segments = Vec::new();
        let mut recovered = Vec::new();
        let mut notes = Vec::new();
        let listed = list_segments(&cfg.dir)?;
        let last_index = listed.len().saturating_sub(1);
        let mut tail: Option<(SegmentHeader, Option<Chain>, ScanEnd)> = None;
        for (i, (first_seq, path)) in listed.into_iter().enumerate() {
            durable::private_file(&path).map_err(io_err(&path))?;
            let found = match recover_segment(&path, first_seq) {
                Ok(Some(found)) => found,
                Ok(None) | Err(SpoolError::NotASegment { .. }) => {
                    let aside = path.with_extension("corrupt");
                    std::fs::rename(&path, &aside).map_err(io_err(&path))?;
                    let note = format!(
                        "segment {} unreadable (no valid header); moved to {}",
                        path.display(),
                        aside.display()
                    );
                    notes.push(note.clone());
                    recovered.push(loss(LossStage::Spool, 0, note));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Recovered {
                mut segment,
                header,
                last_chain,
                end,
                damage,
            } = found;
            if let Some(event) = damage {
                if let EventBody::Loss(l) = &event.body {
                    notes.push(l.reason.clone());
                }
                recovered.push(event);
            }
            match end {
                ScanEnd::Torn { from } if i == last_index => {
                    // The daemon was killed mid-write: the record never finished, nobody read
                    // it. This is the only thing recovery ever cuts.
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(from).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                    let note = format!(
                        "segment {}: torn record at offset {from} (a write cut short); {} bytes \
                         after it cut off",
                        path.display(),
                        segment.bytes - from
                    );
                    segment.bytes = from;
                    notes.push(note.clone());
                    recovered.push(loss(LossStage::Spool, 0, note));
                }
                ScanEnd::Torn { from } | ScanEnd::DamagedTail { from } => {
                    let note = format!(
                        "segment {}: no whole record from offset {from} to its end ({} bytes \
                         kept as they are)",
                        path.display(),
                        segment.bytes - from
                    );
                    notes.push(note.clone());
                    recovered.push(loss(LossStage::Spool, 0, note));
                }
                ScanEnd::Clean { .. } => {}
            }
            tail = Some((header, last_chain, end));
            segments.push(segment);
        }
        // Where the sequence and the chain go on.
        let spool_next = segments
            .iter()
            .rev()
            .find_map(|s| s.last_seq.map(|l| l + 1))
            .or_else(|| segments.last().map(|s| s.first_seq))
            .unwrap_or(0);
        let acked_next = AckFile::all(&cfg.dir).into_iter().map(|(_, n)| n).max();
        let mut epoch_began = None;
        let (epoch, chain, next_seq) = match (&tail, acked_next) {
            (Some((_, _, _)), Some(acked)) if acked > spool_next => {
                epoch_began = Some(format!(
                    "the spool ends at sequence {spool_next} but {acked} had been shipped: \
                     records {spool_next}..{acked} are no longer here (lost before they reached \
                     the disk, or removed)",
                ));
                let e = Epoch::random()?;
                (e, Chain::genesis(&e), acked)
            }
            (Some((header, last_chain, _)), _) if header.format == frame::Format::V2 => (
                header.epoch,
                last_chain.unwrap_or(header.prev_chain),
                spool_next,
            ),
            (Some(_), _) => {
                epoch_began =
                    Some("the spool was written by an older Vigil, without a chain".into());
                let e = Epoch::random()?;
                (
                    e,
                    Chain::genesis(&e),
                    spool_next.max(acked_next.unwrap_or(0)),
                )
            }
            (None, Some(acked)) => {
                epoch_began = Some(format!(
                    "the spool holds no segment but {acked} records had been shipped from it: \
                     it was emptied or lost"
                ));
                let e = Epoch::random()?;
                (e, Chain::genesis(&e), acked)
            }
            (None, None) => {
                epoch_began = Some(
                    "a new spool: the first start here, or the spool directory was removed".into(),
                );
                let e = Epoch::random()?;
                (e, Chain::genesis(&e), 0)
            }
        };
        let rotate_next = epoch_began.is_some()
            || matches!(
                tail,
                Some((h, _, end)) if h.format != frame::Format::V2 || !matches!(end, ScanEnd::Clean { .. })
            );
        if let Some(why) = &epoch_began {
            notes.push(format!("new chain epoch {epoch}: {why}"));
        }
        let mut spool = Spool {
            cfg,
            segments,
            current: None,
            pending: Vec::with_capacity(1 << 20),
            rotate_next,
            next_seq,
            epoch,
            chain,
            process_digests: Default::default(),
            opened: Opened {
                epoch,
                epoch_began: epoch_began.clone(),
                recovered: notes,
                start_checkpoint: None,
            },
            signer,
            refused: 0,
            sync_failure: None,
            refusal: None,
            last_fsync: Instant::now(),
            unsynced_from: next_seq,
            sync_queued_to: next_seq,
            syncer: sync::Syncer::start(),
            age_published: Instant::now()
                .checked_sub(Duration::from_secs(2))
                .unwrap_or_else(Instant::now),
            counters: SpoolCounters::default(),
            position: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next_seq)),
            #[cfg(test)]
            fail_syncs: 0,
        };
        spool.counters.bytes = spool.segments.iter().map(|s| s.bytes).sum();
        if spool.signer.is_some() {
            spool.opened.start_checkpoint =
                spool.checkpoint(CheckpointReason::Start, Counters::new())?;
        }
        for event in recovered {
            tracing::warn!(?event.body, "spool recovery");
            spool.append(&event)?;
        }
        spool.flush()?;
        Ok(spool)
    }

    /// What opening found.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn position(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.position.clone()
    }

    /// Appends a signed checkpoint of the chain so far, and returns it as written (nothing
    /// without a signer).
    pub fn checkpoint(
        &mut self,
        reason: CheckpointReason,
        counters: Counters,
    ) -> Result<Option<Event>, SpoolError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let c = CheckpointEvent {
            reason,
            epoch: self.epoch.hex(),
            covers_seq: self.covered(),
            chain: self.chain.hex(),
            key: String::new(),
            signature: String::new(),
            epoch_began: match reason {
                CheckpointReason::Start => self.opened.epoch_began.clone(),
                _ => None,
            },
            counters,
        };
        let mut event = crate::decode::daemon_event(Default::default(), EventBody::Checkpoint(c));
        event.host = signer.host.as_str().into();
        let time_ns = event.time_ns;
        if let EventBody::Checkpoint(c) = &mut event.body {
            signer.sign(time_ns, c);
        }
        let payload = serde_json::to_vec(&event)?;
        // A checkpoint is never refused for room: it is what says what was lost.
        self.write_record(&payload, None)?;
        Ok(Some(event))
    }

    /// The last record of this epoch, if it has one.
    fn covered(&self) -> Option<u64> {
        (self.chain != Chain::genesis(&self.epoch)).then(|| self.next_seq - 1)
    }

    fn min_acked(&self) -> Option<u64> {
        AckFile::all(&self.cfg.dir)
            .into_iter()
            .map(|(_, next)| next.saturating_sub(1))
            .min()
    }

    /// Writes what is pending to the current segment. On a full disk the bytes stay pending
    /// (what could not be written is retried at the next flush, from where it stopped).
    fn write_pending(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.cfg.dir.clone();
        let Some(mut file) = self.current.as_deref() else {
            return Ok(());
        };
        let mut written = 0;
        let result = loop {
            if written == self.pending.len() {
                break Ok(());
            }
            match file.write(&self.pending[written..]) {
                Ok(0) => break Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..written);
        match result {
            Ok(()) => Ok(()),
            Err(e) if durable::is_disk_full(&e) => Err(SpoolError::Io { path, source: e }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Queues an fsync of the current segment covering every record written so far (its
    /// outcome is taken up by `settle_syncs`).
    fn queue_sync(&mut self) {
        let Some(file) = self.current.as_ref() else {
            return;
        };
        #[cfg(test)]
        let fail = if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            true
        } else {
            false
        };
        #[cfg(not(test))]
        let fail = false;
        self.syncer.submit(file.clone(), self.next_seq, fail);
        self.sync_queued_to = self.next_seq;
        self.last_fsync = Instant::now();
    }

    /// Records written and not yet known to be on disk.
    #[cfg(test)]
    fn unsynced(&self) -> u64 {
        self.next_seq - self.unsynced_from
    }

    /// Takes up the outcome of finished syncs (all queued ones when `wait`).
    fn settle_syncs(&mut self, wait: bool) {
        let done = if wait {
            self.syncer.wait_all()
        } else {
            self.syncer.poll()
        };
        for d in done {
            let upto = d.upto.min(self.next_seq);
            match d.result {
                Ok(()) => self.unsynced_from = self.unsynced_from.max(upto),
                Err(e) => {
                    // After a failed fsync the kernel may already have dropped the dirty pages:
                    // the records since the last good fsync may not survive a power loss. Say so
                    // in the trail (with the next record), and write on in a fresh segment
                    // rather than trust this file.
                    metrics::counter!("vigil_spool_fsync_errors_total").increment(1);
                    let from = self.unsynced_from;
                    tracing::error!(error = %e, from, to = upto, "spool fsync failed");
                    self.rotate_next = true;
                    self.unsynced_from = self.unsynced_from.max(upto);
                    self.sync_failure = Some(format!(
                        "fsync of the spool failed ({e}): records {from}..{upto} may not survive \
                         a power loss; writing on in a new segment"
                    ));
                }
            }
        }
    }

    /// Starts a new segment at `next_seq`. On a full disk the current one (if any) goes on.
    fn open_segment(&mut self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(segment_name(self.next_seq));
        if path.exists() {
            // A segment of this name exists already (it ends in damage and holds no record
            // past it): keep it as it was, beside.
            let aside = path.with_extension("damaged");
            std::fs::rename(&path, &aside).map_err(io_err(&path))?;
            if let Some(s) = self.segments.iter_mut().find(|s| s.path == path) {
                s.path = aside;
            }
        }
        let header = SegmentHeader {
            format: frame::Format::V2,
            first_seq: self.next_seq,
            epoch: self.epoch,
            prev_chain: self.chain,
        };
        let created = durable::open_append(&path).and_then(|mut f| {
            f.write_all(&header.encode())?;
            durable::sync_dir(&self.cfg.dir)?;
            Ok(f)
        });
        let f = match created {
            Ok(f) => f,
            Err(e) if durable::is_disk_full(&e) && self.current.is_some() => {
                let _ = std::fs::remove_file(&path);
                self.rotate_next = true;
                return Ok(());
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        self.segments.push(Segment {
            first_seq: self.next_seq,
            path,
            bytes: frame::SEGMENT_HEADER,
            records: 0,
            last_seq: None,
            loss_records: 0,
            carried: 0,
        });
        self.counters.bytes += frame::SEGMENT_HEADER;
        self.current = Some(Arc::new(f));
        self.rotate_next = false;
        Ok(())
    }

    /// Closes the current segment durably and starts the next. While the disk refuses what is
    /// pending, the current segment goes on (in memory) instead.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        if self.current.is_some() {
            match self.write_pending() {
                Ok(()) => {}
                Err(SpoolError::Io { source, .. }) if durable::is_disk_full(&source) => {
                    self.rotate_next = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            self.queue_sync();
        }
        self.open_segment()
    }

    fn drop_oldest(&mut self) -> Result<bool, SpoolError> {
        if self.segments.len() < 2 {
            return Ok(false);
        }
        let oldest = self.segments.remove(0);
        std::fs::remove_file(&oldest.path).map_err(io_err(&oldest.path))?;
        self.counters.bytes -= oldest.bytes;
        let acked = self.min_acked();
        let last = oldest.last_seq;
        let unshipped_records = match (last, acked) {
            (None, _) => 0,
            (Some(last), Some(a)) if last <= a => 0,
            (Some(last), Some(a)) if a >= oldest.first_seq => last - a,
            _ => oldest.records,
        };
        let events = unshipped_records.min(oldest.records - oldest.loss_records);
        let count = events + oldest.carried;
        if events > 0 {
            self.counters.dropped += events;
            metrics::counter!("vigil_spool_dropped_total").increment(events);
        }
        if count > 0 {
            let reason = format!(
                "spool full ({} bytes): oldest segment deleted, events {}..={} not yet shipped \
                 ({events} events, and {} recorded as lost before)",
                self.cfg.max_bytes,
                oldest.first_seq,
                last.unwrap_or(oldest.first_seq),
                oldest.carried
            );
            tracing::warn!("{reason}");
            self.write_loss(count, reason)?;
        }
        Ok(true)
    }

    fn make_room(&mut self, need: u64) -> Result<bool, SpoolError> {
        while self.counters.bytes + need > self.cfg.max_bytes {
            match self.cfg.when_full {
                WhenFull::StopAccepting => return Ok(false),
                WhenFull::DropOldest => {
                    if !self.drop_oldest()? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// `process`: where the payload's process part is, when the caller knows (else it is
    /// found by reading the payload).
    fn write_record(
        &mut self,
        payload: &[u8],
        process: Option<Range<usize>>,
    ) -> Result<u64, SpoolError> {
        let frame_len = frame::RECORD_HEADER + payload.len() as u64;
        let needs_new = self.current.is_none()
            || self.rotate_next
            || self
                .segments
                .last()
                .is_some_and(|s| s.bytes + frame_len > self.cfg.segment_bytes && s.records > 0);
        if needs_new {
            self.rotate()?;
        }
        let seq = self.push_frame(payload, process);
        if let Some(reason) = self.sync_failure.take() {
            let note = serde_json::to_vec(&loss(LossStage::Spool, 0, reason))?;
            self.push_frame(&note, None);
        }
        Ok(seq)
    }

    /// Chains and frames one record into the current segment's pending bytes.
    fn push_frame(&mut self, payload: &[u8], process: Option<Range<usize>>) -> u64 {
        let frame_len = frame::RECORD_HEADER + payload.len() as u64;
        let seq = self.next_seq;
        let chain = match process.or_else(|| frame::process_span(payload)) {
            Some(span) => {
                let digest = self.process_digests.digest(&payload[span.clone()]);
                self.chain.next_with(seq, payload, span, &digest)
            }
            None => self.chain.next_whole(seq, payload),
        };
        self.pending
            .extend_from_slice(&frame::encode_record(seq, &chain, payload));
        self.pending.extend_from_slice(payload);
        if let Some(seg) = self.segments.last_mut() {
            seg.bytes += frame_len;
            seg.records += 1;
            seg.last_seq = Some(seq);
            if let Some(count) = loss_count(payload) {
                seg.loss_records += 1;
                seg.carried += count;
            }
        }
        self.chain = chain;
        self.counters.bytes += frame_len;
        self.counters.appended += 1;
        self.next_seq += 1;
        self.position
            .store(self.next_seq, std::sync::atomic::Ordering::Relaxed);
        seq
    }

    fn refuse(&mut self, why: Refusal) {
        self.refused += 1;
        self.refusal.get_or_insert(why);
        self.counters.dropped += 1;
        metrics::counter!("vigil_spool_dropped_total").increment(1);
    }

    /// Appends one serialized event.
    pub fn append_json(&mut self, payload: &[u8]) -> Result<Option<u64>, SpoolError> {
        self.append_event_json(payload, None)
    }

    /// Appends one serialized event whose process part is `payload[process]` when given (as
    /// `frame::process_span` would find it; the event writer knows it without reading).
    pub fn append_event_json(
        &mut self,
        payload: &[u8],
        process: Option<Range<usize>>,
    ) -> Result<Option<u64>, SpoolError> {
        if payload.len() as u64 > frame::MAX_PAYLOAD as u64 {
            self.refuse(Refusal::TooLarge);
            return Ok(None);
        }
        if self.pending.len() >= PENDING_MAX {
            // The disk has refused what is pending for a while: refuse, and count.
            self.refuse(Refusal::DiskFull);
            return Ok(None);
        }
        let need = frame::RECORD_HEADER + payload.len() as u64;
        if self.refused > 0 && self.make_room(frame::RECORD_HEADER + 512 + need)? {
            self.write_refused()?;
        }
        if !self.make_room(need)? {
            self.refuse(Refusal::SpoolFull);
            return Ok(None);
        }
        let seq = self.write_record(payload, process)?;
        if self.pending.len() >= 1 << 20 {
            self.flush_pending()?;
        }
        Ok(Some(seq))
    }

    fn write_loss(&mut self, count: u64, reason: String) -> Result<u64, SpoolError> {
        let payload = serde_json::to_vec(&loss(LossStage::Spool, count, reason))?;
        self.write_record(&payload, None)
    }

    fn write_refused(&mut self) -> Result<(), SpoolError> {
        let reason = match self.refusal.unwrap_or(Refusal::SpoolFull) {
            Refusal::SpoolFull => format!(
                "spool full ({} bytes): new events refused",
                self.cfg.max_bytes
            ),
            Refusal::DiskFull => {
                "the disk under the spool was full: new events refused".to_string()
            }
            Refusal::TooLarge => format!("events larger than {} bytes refused", frame::MAX_PAYLOAD),
        };
        self.write_loss(self.refused, reason)?;
        self.refused = 0;
        self.refusal = None;
        Ok(())
    }

    pub fn append(&mut self, event: &Event) -> Result<Option<u64>, SpoolError> {
        let payload = serde_json::to_vec(event)?;
        self.append_json(&payload)
    }

    /// Writes pending records; a full disk applies `when_full` (drop the oldest segment and try
    /// again, or keep them pending and refuse new events once too much waits).
    fn flush_pending(&mut self) -> Result<(), SpoolError> {
        loop {
            match self.write_pending() {
                Ok(()) => return Ok(()),
                Err(SpoolError::Io { source, .. }) if durable::is_disk_full(&source) => {
                    metrics::counter!("vigil_spool_disk_full_total").increment(1);
                    // (drop_oldest never takes the segment being written.)
                    if self.cfg.when_full == WhenFull::DropOldest && self.drop_oldest()? {
                        continue;
                    }
                    tracing::warn!(
                        pending = self.pending.len(),
                        "the disk under the spool is full; events wait in memory"
                    );
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.flush_pending()?;
        self.settle_syncs(false);
        // One timer sync at a time: a disk slower than the timer is not queued up further.
        if self.pending.is_empty()
            && self.sync_queued_to < self.next_seq
            && self.syncer.in_flight() == 0
            && self.last_fsync.elapsed() >= Duration::from_millis(self.cfg.fsync_interval_ms)
        {
            self.queue_sync();
        }
        if let Some(reason) = self.sync_failure.take() {
            self.write_loss(0, reason)?;
            self.flush_pending()?;
        }
        metrics::gauge!("vigil_spool_bytes").set(self.counters.bytes as f64);
        metrics::gauge!("vigil_spool_pending_bytes").set(self.pending.len() as f64);
        if self.age_published.elapsed() >= Duration::from_secs(1) {
            self.age_published = Instant::now();
            let oldest = self.segments.first().and_then(|s| {
                let m = std::fs::metadata(&s.path).ok()?;
                m.created().or_else(|_| m.modified()).ok()
            });
            let age = oldest
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics::gauge!("vigil_spool_age_seconds").set(age);
            metrics::gauge!("vigil_spool_segments").set(self.segments.len() as f64);
        }
        Ok(())
    }

    /// Stops cleanly: what was refused is written down, a stop checkpoint signed, everything
    /// written and fsync'd.
    pub fn close(mut self, counters: Counters) -> Result<Option<Event>, SpoolError> {
        if self.refused > 0 {
            self.write_refused()?;
        }
        let stop = self.checkpoint(CheckpointReason::Stop, counters)?;
        self.flush_pending()?;
        self.sync_all()?;
        self.finish_pending_report();
        Ok(stop)
    }

    /// Syncs everything written and waits for it; a failed sync is written down (and that
    /// record synced in turn, once).
    fn sync_all(&mut self) -> Result<(), SpoolError> {
        self.queue_sync();
        self.settle_syncs(true);
        if let Some(reason) = self.sync_failure.take() {
            self.write_loss(0, reason)?;
            self.flush_pending()?;
            self.queue_sync();
            self.settle_syncs(true);
            self.sync_failure = None;
        }
        Ok(())
    }

    /// Logs (and counts) what could never reach the disk, at the very end.
    fn finish_pending_report(&mut self) {
        if !self.pending.is_empty() {
            metrics::counter!("vigil_spool_unwritten_bytes_total")
                .increment(self.pending.len() as u64);
            tracing::error!(
                bytes = self.pending.len(),
                "the disk under the spool stayed full: these last events never reached it"
            );
            self.pending.clear();
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.refused > 0 {
            let _ = self.write_refused();
        }
        let _ = self.flush_pending();
        let _ = self.sync_all();
        self.finish_pending_report();
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::unix::fs::PermissionsExt};

    use super::*;
    use crate::event::{ForkEvent, Process};

    fn cfg(dir: &Path, max_bytes: u64, when_full: WhenFull) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 4096,
            max_bytes,
            when_full,
            fsync_interval_ms: 0,
        }
    }

    fn event(n: u32) -> Event {
        crate::decode::daemon_event(
            Process {
                pid: n,
                ..Default::default()
            },
            EventBody::Fork(ForkEvent { child_pid: n }),
        )
    }

    /// (seq, child pid) of every fork event, and every other record (losses, damage).
    fn read_back(dir: &Path) -> (Vec<(u64, u32)>, Vec<Event>) {
        let mut events = Vec::new();
        let mut losses = Vec::new();
        read_all(dir, 0, |item| match item {
            SpoolItem::Event { seq, event } => match event.body {
                EventBody::Fork(f) => events.push((seq, f.child_pid)),
                _ => losses.push(*event),
            },
            SpoolItem::Damaged(e) => losses.push(*e),
        })
        .unwrap();
        (events, losses)
    }

    fn reasons(losses: &[Event]) -> Vec<String> {
        losses
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Loss(l) => Some(l.reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn write(dir: &Path, n: u32, segment_bytes: u64) {
        let mut s = Spool::open(SpoolConfig {
            segment_bytes,
            ..cfg(dir, 1 << 30, WhenFull::DropOldest)
        })
        .unwrap();
        for i in 0..n {
            s.append(&event(i)).unwrap();
        }
        s.flush().unwrap();
    }

    #[test]
    fn appends_survive_reopen_with_contiguous_sequences() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 100, 4096);
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(s.next_seq(), 100);
        assert!(s.opened().epoch_began.is_none(), "the chain goes on");
        s.append(&event(100)).unwrap();
        s.flush().unwrap();
        let (events, losses) = read_back(dir.path());
        assert!(losses.is_empty(), "{losses:?}");
        let expected: Vec<(u64, u32)> = (0..=100).map(|n| (n as u64, n)).collect();
        assert_eq!(events, expected);
        assert!(
            list_segments(dir.path()).unwrap().len() > 1,
            "small segments rotate"
        );
    }

    #[test]
    fn every_record_is_chained_to_the_one_before_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 60, 4096);
        write(dir.path(), 60, 4096);
        let mut prev: Option<Chain> = None;
        let mut records = 0;
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 2);
        for (first, path) in segments {
            let mut seg = SegmentFile::open(&path, first).unwrap().unwrap();
            let mut chain = seg.header.prev_chain;
            match prev {
                None => assert_eq!(chain, Chain::genesis(&seg.header.epoch)),
                Some(p) => assert_eq!(chain, p, "{}", path.display()),
            }
            scan(&mut seg, |item| {
                let Scanned::Record {
                    seq,
                    chain: c,
                    payload,
                    ..
                } = item
                else {
                    panic!("damage")
                };
                chain = chain.next(seq, payload);
                assert_eq!(c, Some(chain));
                records += 1;
            })
            .unwrap();
            prev = Some(chain);
        }
        assert_eq!(records, 120);
    }

    #[test]
    fn torn_tail_is_cut_and_written_down() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 5, 1 << 20);
        let (_, last) = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        f.write_all(b"VRC2\x00\x01\x00\x00\x01\x02").unwrap(); // part of a record header
        drop(f);
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(s.next_seq(), 6, "5 records and the loss record");
        s.append(&event(5)).unwrap();
        drop(s);
        let (events, losses) = read_back(dir.path());
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        let reasons = reasons(&losses);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("torn record"), "{}", reasons[0]);
    }

    /// The case: one flipped byte in the last segment. Recovery keeps every intact
    /// record after it, reports the damage, and never gives the lost record's number again.
    #[test]
    fn a_flipped_byte_in_the_last_segment_loses_one_record_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 2000, 64 << 20);
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(segs.len(), 1);
        let mut bytes = std::fs::read(&segs[0].1).unwrap();
        let mid = bytes.len() / 3;
        bytes[mid] ^= 0x20;
        std::fs::write(&segs[0].1, bytes).unwrap();
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(
            s.next_seq(),
            2000 + 1,
            "2000 records, a loss record, no number reused"
        );
        assert_eq!(s.opened().recovered.len(), 1, "{:?}", s.opened().recovered);
        assert_eq!(s.append(&event(2000)).unwrap(), Some(2001));
        drop(s);
        let (events, losses) = read_back(dir.path());
        assert_eq!(events.len(), 2000, "1999 of the first 2000 and the new one");
        assert_eq!(events.iter().filter(|e| e.1 < 2000).count(), 1999);
        assert_eq!(events.last().unwrap(), &(2001, 2000));
        let seqs: std::collections::BTreeSet<u64> = events.iter().map(|e| e.0).collect();
        assert_eq!(seqs.len(), events.len(), "no sequence twice");
        let reasons = reasons(&losses);
        assert!(reasons.iter().any(|r| r.contains("damaged")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("missing")), "{reasons:?}");
    }

    #[test]
    fn damage_in_a_middle_segment_skips_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 200, 4096);
        let segs = list_segments(dir.path()).unwrap();
        assert!(segs.len() >= 3);
        let mut bytes = std::fs::read(&segs[0].1).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&segs[0].1, bytes).unwrap();
        let (events, losses) = read_back(dir.path());
        assert_eq!(events.len(), 199, "{:?}", reasons(&losses));
        assert!(!reasons(&losses).is_empty());
        // Reopening writes the damage down (200) and goes on after it.
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(s.append(&event(200)).unwrap(), Some(201));
    }

    #[test]
    fn a_deleted_middle_segment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 200, 4096);
        let segs = list_segments(dir.path()).unwrap();
        std::fs::remove_file(&segs[1].1).unwrap();
        let (events, losses) = read_back(dir.path());
        let missing = segs[2].0 - segs[1].0;
        assert_eq!(events.len() as u64, 200 - missing);
        let reasons = reasons(&losses);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains(&format!("records {}..{} missing", segs[1].0, segs[2].0)));
    }

    #[test]
    fn a_spool_behind_its_acknowledgement_starts_a_new_epoch_past_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 50, 1 << 20);
        let before = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest))
            .unwrap()
            .epoch();
        AckFile::new(dir.path(), "clickhouse").ack(79).unwrap();
        // As after a power loss that kept the acknowledgement but not the last records.
        let s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_ne!(s.epoch(), before);
        let why = s.opened().epoch_began.clone().unwrap();
        assert!(why.contains("50..80"), "{why}");
        assert_eq!(s.next_seq(), 80);
        // The spool wiped whole (acknowledgements too) also begins an epoch, and says so.
        drop(s);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert!(s
            .opened()
            .epoch_began
            .as_deref()
            .unwrap()
            .contains("new spool"));
    }

    /// A spool of 1 MiB segments holding ten events, not yet flushed.
    fn ten_in_one_segment(dir: &Path) -> Spool {
        let mut s = Spool::open(SpoolConfig {
            segment_bytes: 1 << 20,
            ..cfg(dir, 1 << 30, WhenFull::DropOldest)
        })
        .unwrap();
        for i in 0..10 {
            s.append(&event(i)).unwrap();
        }
        s
    }

    #[test]
    fn a_failed_fsync_is_written_down_and_writing_goes_on_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ten_in_one_segment(dir.path());
        s.fail_syncs = 1;
        s.flush().unwrap();
        // The sync runs on its own thread: wait for its outcome, as a later flush would find it.
        s.settle_syncs(true);
        assert!(
            s.sync_failure
                .as_deref()
                .is_some_and(|r| r.contains("records 0..10")),
            "{:?}",
            s.sync_failure
        );
        s.append(&event(10)).unwrap();
        s.flush().unwrap();
        drop(s);
        let (events, losses) = read_back(dir.path());
        assert_eq!(events.len(), 11);
        let reasons = reasons(&losses);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("fsync of the spool failed") && r.contains("records 0..10")),
            "{reasons:?}"
        );
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn records_count_as_durable_only_when_their_fsync_has_returned() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ten_in_one_segment(dir.path());
        s.flush().unwrap();
        assert_eq!(s.sync_queued_to, 10, "the timer queued a sync of all ten");
        s.settle_syncs(true);
        assert_eq!(s.unsynced(), 0);
        // A segment rotated out is synced on the thread too, and counts once that returns.
        for i in 10..20 {
            s.append(&event(i)).unwrap();
        }
        s.rotate_next = true;
        s.append(&event(20)).unwrap();
        s.settle_syncs(true);
        assert_eq!(
            s.unsynced_from, 20,
            "the rotated segment's records are on disk"
        );
        drop(s);
        assert_eq!(read_back(dir.path()).0.len(), 21);
    }

    #[test]
    fn spool_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
        write(&spool, 10, 4096);
        AckFile::new(&spool, "clickhouse").ack(3).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool), 0o700);
        assert_eq!(mode(&spool.join("acks")), 0o700);
        assert_eq!(mode(&spool.join("acks/clickhouse")), 0o600);
        for (_, seg) in list_segments(&spool).unwrap() {
            assert_eq!(mode(&seg), 0o600, "{}", seg.display());
        }
    }

    #[test]
    fn drop_oldest_writes_down_exactly_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(dir.path(), 16 * 1024, WhenFull::DropOldest)).unwrap();
        for n in 0..1000 {
            s.append(&event(n)).unwrap();
        }
        s.flush().unwrap();
        let counters = s.counters();
        assert!(counters.dropped > 0);
        assert!(counters.bytes <= 16 * 1024);
        drop(s);
        let (events, losses) = read_back(dir.path());
        // Exact: the events on disk plus the counts of the loss records on disk are every event
        // appended, and the counter says the same.
        let recorded: u64 = losses
            .iter()
            .map(|l| match &l.body {
                EventBody::Loss(l) => l.count,
                _ => 0,
            })
            .sum();
        assert_eq!(events.len() as u64 + recorded, 1000);
        assert_eq!(recorded, counters.dropped);
        assert_eq!(events.last().unwrap().1, 999);
        let first_kept = events.first().unwrap().1;
        assert!(events.iter().map(|e| e.1).eq(first_kept..1000));
    }

    #[test]
    fn stop_accepting_refuses_and_records_the_count_when_room_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(dir.path(), 8 * 1024, WhenFull::StopAccepting)).unwrap();
        let mut accepted = 0;
        for n in 0..500 {
            if s.append(&event(n)).unwrap().is_some() {
                accepted += 1;
            }
        }
        let refused = 500 - accepted;
        assert!(refused > 0);
        assert_eq!(s.counters().dropped, refused);
        s.cfg.max_bytes = 1 << 30;
        s.append(&event(1000)).unwrap();
        drop(s);
        let (events, losses) = read_back(dir.path());
        assert_eq!(events.len() as u64, accepted + 1);
        let EventBody::Loss(l) = &losses.last().unwrap().body else {
            panic!()
        };
        assert_eq!(l.count, refused);
    }

    #[test]
    fn reader_follows_appends_across_segments_and_resumes_from_an_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        let mut reader = SpoolReader::new(dir.path(), 0);
        let mut got = Vec::new();
        for round in 0..5u32 {
            for n in round * 50..(round + 1) * 50 {
                spool.append(&event(n)).unwrap();
            }
            spool.flush().unwrap();
            let notes = reader.read(1000, &mut got).unwrap();
            assert!(notes.is_empty(), "{notes:?}");
        }
        let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
        assert_eq!(seqs, (0..250).collect::<Vec<_>>());
        let ack = AckFile::new(dir.path(), "test");
        ack.ack(99).unwrap();
        let mut resumed = SpoolReader::new(dir.path(), ack.next());
        let mut rest = Vec::new();
        resumed.read(10, &mut rest).unwrap();
        assert_eq!(
            rest.iter().map(|g| g.seq).collect::<Vec<_>>(),
            (100..110).collect::<Vec<_>>()
        );
    }

    /// Borrowed reading stops right after the record the caller breaks on, and the next read
    /// starts at the record after it: nothing is skipped or handed over twice.
    #[test]
    fn reading_borrowed_records_stops_where_asked_and_goes_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        for n in 0..20u32 {
            spool.append(&event(n)).unwrap();
        }
        spool.flush().unwrap();
        let mut reader = SpoolReader::new(dir.path(), 0);
        let mut seen = Vec::new();
        let notes = reader
            .read_with(100, |r| {
                seen.push((r.seq, Event::from_json(r.payload).unwrap().mono_ns));
                if r.seq == 6 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..7).collect::<Vec<_>>()
        );
        assert_eq!(reader.next_seq(), 7);
        let mut rest = Vec::new();
        reader.read(100, &mut rest).unwrap();
        assert_eq!(
            rest.iter().map(|g| g.seq).collect::<Vec<_>>(),
            (7..20).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reader_reports_damage_and_reads_past_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 300, 1 << 20);
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let mut reader = SpoolReader::new(dir.path(), 0);
        let mut got = Vec::new();
        let notes = reader.read(1000, &mut got).unwrap();
        assert_eq!(got.len(), 299);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let ReadNote::Gap { from, to, .. } = &notes[0];
        assert_eq!(to - from, 1);
    }
}
