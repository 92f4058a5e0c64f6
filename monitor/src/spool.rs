//! The durable local spool: every event is appended here first, as the embedded default store
//! and as the buffer that shipping to ClickHouse reads from.
//!
//! On disk: a directory of segment files `seg-<first seq, 20 digits>.log`, each a 16-byte header
//! (`VIGSPL01` + first sequence number) followed by records:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of (seq, payload) | u64 seq | payload (one event, JSON)
//! ```
//!
//! Sequence numbers are contiguous across segments. Consumers (the ClickHouse shipper) record the
//! last sequence they have acknowledged in `acks/<name>`, so a restarted daemon resumes where it
//! stopped. The spool is bounded: when it would grow past `max_bytes`, the configured policy
//! either deletes the oldest segment or refuses new events, and what is lost that way is written
//! down as a `loss` event in the spool itself. A torn tail (the daemon killed mid-write) is cut
//! off at start; a corrupt record is skipped to the end of its segment, with a loss record, and
//! never stops the reader.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::event::{Event, EventBody, LossEvent};

const MAGIC: &[u8; 8] = b"VIGSPL01";
const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: u64 = 16;
/// Larger payloads are corruption, not events (an exec record decodes to well under this).
const MAX_PAYLOAD: u32 = 4 * 1024 * 1024;

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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
    /// Records in it that are loss records, and the sum of their counts: deleting the segment
    /// carries those counts forward into the next loss record, so the loss records on disk
    /// always add up to every event ever dropped.
    loss_records: u64,
    carried: u64,
}

/// The count of a loss record, or None for any other event (a cheap check first: most
/// records are not loss records).
fn loss_count(payload: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"type\":\"loss\"";
    // Every record written and read passes here: a SIMD substring search, not a window scan.
    memchr::memmem::find(payload, MARK)?;
    let event: Event = serde_json::from_slice(payload).ok()?;
    match event.body {
        EventBody::Loss(l) => Some(l.count),
        _ => None,
    }
}

impl Segment {
    fn last_seq(&self) -> Option<u64> {
        (self.records > 0).then(|| self.first_seq + self.records - 1)
    }
}

/// What the spool did that a caller may want to count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolCounters {
    pub appended: u64,
    pub dropped: u64,
    pub bytes: u64,
}

/// The writing side. One writer per spool directory.
pub struct Spool {
    cfg: SpoolConfig,
    segments: Vec<Segment>,
    current: Option<BufWriter<File>>,
    next_seq: u64,
    /// Events refused (stop_accepting) and not yet written down as a loss record.
    refused: u64,
    last_fsync: Instant,
    /// When the age gauge was last published.
    age_published: Instant,
    counters: SpoolCounters,
    /// `next_seq`, readable by other threads (the shipper measures its lag against it).
    position: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Result of scanning one segment.
struct Scan {
    records: u64,
    /// Offset just past the last whole, valid record.
    valid_end: u64,
    /// Why the scan stopped early, if it did.
    damage: Option<String>,
}

/// Reads records of `path` from its start, calling `each` for every valid one.
fn scan_segment(
    path: &Path,
    first_seq: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<Scan, SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    if r.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
        return Err(SpoolError::NotASegment {
            path: path.to_path_buf(),
            detail: "missing or wrong header".into(),
        });
    }
    let header_seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if header_seq != first_seq {
        return Err(SpoolError::NotASegment {
            path: path.to_path_buf(),
            detail: format!("header says first sequence {header_seq}, name says {first_seq}"),
        });
    }
    let mut pos = SEGMENT_HEADER;
    let mut records = 0u64;
    let mut payload = Vec::new();
    loop {
        if pos == len {
            return Ok(Scan {
                records,
                valid_end: pos,
                damage: None,
            });
        }
        let mut rh = [0u8; RECORD_HEADER as usize];
        if pos + RECORD_HEADER > len || r.read_exact(&mut rh).is_err() {
            return Ok(Scan {
                records,
                valid_end: pos,
                damage: Some(format!("truncated record header at offset {pos}")),
            });
        }
        let plen = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]);
        let sum = u32::from_le_bytes([rh[4], rh[5], rh[6], rh[7]]);
        let seq = u64::from_le_bytes(rh[8..16].try_into().unwrap_or_default());
        if plen > MAX_PAYLOAD || pos + RECORD_HEADER + plen as u64 > len {
            return Ok(Scan {
                records,
                valid_end: pos,
                damage: Some(format!(
                    "record at offset {pos} claims {plen} bytes past the end"
                )),
            });
        }
        payload.resize(plen as usize, 0);
        if r.read_exact(&mut payload).is_err() {
            return Ok(Scan {
                records,
                valid_end: pos,
                damage: Some(format!("unreadable record at offset {pos}")),
            });
        }
        if crc(seq, &payload) != sum || seq != first_seq + records {
            return Ok(Scan {
                records,
                valid_end: pos,
                damage: Some(format!("checksum or sequence mismatch at offset {pos}")),
            });
        }
        each(seq, &payload);
        records += 1;
        pos += RECORD_HEADER + plen as u64;
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        else {
            continue;
        };
        if let Ok(first) = num.parse::<u64>() {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A loss record: `count` events lost at `stage`, and why (also what a reader reports as damage).
pub fn loss(stage: &str, count: u64, reason: String) -> Event {
    crate::decode::daemon_event(
        Default::default(),
        EventBody::Loss(LossEvent {
            stage: stage.into(),
            kind: None,
            count,
            reason,
        }),
    )
}

impl Spool {
    /// Opens (creating if needed) the spool, recovering from a crash: a torn tail of the last
    /// segment is cut off and written down as a loss record.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(cfg.dir.join("acks")).map_err(io_err(&cfg.dir))?;
        let mut segments = Vec::new();
        let mut recovered = Vec::new();
        let listed = list_segments(&cfg.dir)?;
        let last_index = listed.len().saturating_sub(1);
        for (i, (first_seq, path)) in listed.into_iter().enumerate() {
            let (mut loss_records, mut carried) = (0u64, 0u64);
            let scan = match scan_segment(&path, first_seq, |_, payload| {
                if let Some(count) = loss_count(payload) {
                    loss_records += 1;
                    carried += count;
                }
            }) {
                Ok(scan) => scan,
                Err(SpoolError::NotASegment { detail, .. }) => {
                    // Not ours or destroyed header: set it aside rather than delete evidence.
                    let aside = path.with_extension("corrupt");
                    std::fs::rename(&path, &aside).map_err(io_err(&path))?;
                    recovered.push(loss(
                        "spool",
                        0,
                        format!(
                            "segment {} unreadable ({detail}); moved to {}",
                            path.display(),
                            aside.display()
                        ),
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Damage inside an older segment is left for readers to report each time they
            // read it; only a torn write at the very end is cut off (once), so that appends
            // continue cleanly.
            if let (Some(damage), true) = (&scan.damage, i == last_index) {
                let len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(scan.valid_end).map_err(io_err(&path))?;
                recovered.push(loss(
                    "spool",
                    0,
                    format!(
                        "segment {}: {damage}; {} bytes after it cut off",
                        path.display(),
                        len - scan.valid_end
                    ),
                ));
            }
            segments.push(Segment {
                first_seq,
                path,
                bytes: scan.valid_end,
                records: scan.records,
                loss_records,
                carried,
            });
        }
        let next_seq = segments
            .last()
            .map(|s| s.first_seq + s.records)
            .unwrap_or(0);
        let mut spool = Spool {
            cfg,
            segments,
            current: None,
            next_seq,
            refused: 0,
            last_fsync: Instant::now(),
            age_published: Instant::now()
                .checked_sub(Duration::from_secs(2))
                .unwrap_or_else(Instant::now),
            counters: SpoolCounters::default(),
            position: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next_seq)),
        };
        spool.counters.bytes = spool.segments.iter().map(|s| s.bytes).sum();
        for event in recovered {
            tracing::warn!(?event.body, "spool recovery");
            spool.append(&event)?;
        }
        Ok(spool)
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A live view of `next_seq` for other threads.
    pub fn position(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.position.clone()
    }

    /// The smallest sequence every consumer has acknowledged (None when there is no consumer).
    fn min_acked(&self) -> Option<u64> {
        let dir = self.cfg.dir.join("acks");
        let mut min: Option<u64> = None;
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let acked = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            if let Some(a) = acked {
                min = Some(min.map_or(a, |m| m.min(a)));
            }
        }
        min
    }

    fn open_segment(&mut self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(segment_name(self.next_seq));
        let existing = self.segments.last().filter(|s| s.path == path).is_some();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if !existing {
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&self.next_seq.to_le_bytes());
            f.write_all(&header).map_err(io_err(&path))?;
            self.segments.push(Segment {
                first_seq: self.next_seq,
                path,
                bytes: SEGMENT_HEADER,
                records: 0,
                loss_records: 0,
                carried: 0,
            });
            self.counters.bytes += SEGMENT_HEADER;
        }
        self.current = Some(BufWriter::with_capacity(1 << 20, f));
        Ok(())
    }

    /// Makes room for `need` more bytes; returns false when the policy refuses the event.
    fn make_room(&mut self, need: u64) -> Result<bool, SpoolError> {
        while self.counters.bytes + need > self.cfg.max_bytes {
            match self.cfg.when_full {
                WhenFull::StopAccepting => return Ok(false),
                WhenFull::DropOldest => {
                    // Never the segment being written: a spool of one segment refuses instead.
                    if self.segments.len() < 2 {
                        return Ok(false);
                    }
                    let oldest = self.segments.remove(0);
                    std::fs::remove_file(&oldest.path).map_err(io_err(&oldest.path))?;
                    self.counters.bytes -= oldest.bytes;
                    // Events (not loss records) of the segment that no consumer has taken.
                    let acked = self.min_acked();
                    let unshipped_records = match (oldest.last_seq(), acked) {
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
                            "spool full ({} bytes): oldest segment deleted, events {}..={} not yet \
                             shipped ({events} events, and {} recorded as lost before)",
                            self.cfg.max_bytes,
                            oldest.first_seq,
                            oldest.last_seq().unwrap_or(oldest.first_seq),
                            oldest.carried
                        );
                        tracing::warn!("{reason}");
                        self.write_loss(count, reason)?;
                    }
                }
            }
        }
        Ok(true)
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        let needs_new = self.current.is_none()
            || self.segments.last().is_some_and(|s| {
                s.bytes + RECORD_HEADER + payload.len() as u64 > self.cfg.segment_bytes
                    && s.records > 0
            });
        if needs_new {
            if let Some(mut w) = self.current.take() {
                w.flush().map_err(io_err(&self.cfg.dir))?;
            }
            self.open_segment()?;
        }
        let seq = self.next_seq;
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let path = self.cfg.dir.clone();
        let w = self.current.as_mut().ok_or_else(|| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other("no open segment"),
        })?;
        let mut header = [0u8; RECORD_HEADER as usize];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&crc(seq, payload).to_le_bytes());
        header[8..].copy_from_slice(&seq.to_le_bytes());
        w.write_all(&header).map_err(io_err(&path))?;
        w.write_all(payload).map_err(io_err(&path))?;
        let written = RECORD_HEADER + payload.len() as u64;
        if let Some(seg) = self.segments.last_mut() {
            seg.bytes += written;
            seg.records += 1;
            if let Some(count) = loss_count(payload) {
                seg.loss_records += 1;
                seg.carried += count;
            }
        }
        self.counters.bytes += written;
        self.counters.appended += 1;
        self.next_seq += 1;
        self.position
            .store(self.next_seq, std::sync::atomic::Ordering::Relaxed);
        Ok(seq)
    }

    /// Appends one event (already serialized as JSON). Returns its sequence number, or None when
    /// the spool is full and refuses it (the refusal is counted and written down later).
    pub fn append_json(&mut self, payload: &[u8]) -> Result<Option<u64>, SpoolError> {
        if payload.len() as u64 > MAX_PAYLOAD as u64 {
            self.refused += 1;
            return Ok(None);
        }
        let need = RECORD_HEADER + payload.len() as u64;
        if self.refused > 0 && self.make_room(RECORD_HEADER + 512 + need)? {
            // Write down what was refused as soon as there is room for the record saying so.
            self.write_refused()?;
        }
        if !self.make_room(need)? {
            self.refused += 1;
            self.counters.dropped += 1;
            metrics::counter!("vigil_spool_dropped_total").increment(1);
            return Ok(None);
        }
        self.write_record(payload).map(Some)
    }

    fn write_loss(&mut self, count: u64, reason: String) -> Result<u64, SpoolError> {
        let payload = serde_json::to_vec(&loss("spool", count, reason))?;
        self.write_record(&payload)
    }

    fn write_refused(&mut self) -> Result<(), SpoolError> {
        let reason = format!(
            "spool full ({} bytes): new events refused",
            self.cfg.max_bytes
        );
        self.write_loss(self.refused, reason)?;
        self.refused = 0;
        Ok(())
    }

    pub fn append(&mut self, event: &Event) -> Result<Option<u64>, SpoolError> {
        let payload = serde_json::to_vec(event)?;
        self.append_json(&payload)
    }

    /// Hands buffered records to the OS (a killed daemon loses nothing flushed), and fsyncs when
    /// the interval has passed.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.clone();
        if let Some(w) = self.current.as_mut() {
            w.flush().map_err(io_err(&path))?;
            if self.last_fsync.elapsed() >= Duration::from_millis(self.cfg.fsync_interval_ms) {
                w.get_ref().sync_data().map_err(io_err(&path))?;
                self.last_fsync = Instant::now();
            }
        }
        metrics::gauge!("vigil_spool_bytes").set(self.counters.bytes as f64);
        if self.age_published.elapsed() >= Duration::from_secs(1) {
            self.age_published = Instant::now();
            // The age of the oldest data the spool holds: its first segment's creation.
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
}

impl Drop for Spool {
    fn drop(&mut self) {
        // What was refused and not yet written down goes in now, past the bound if need be: a
        // small overflow rather than a silent loss.
        if self.refused > 0 {
            let _ = self.write_refused();
        }
        if let Some(w) = self.current.as_mut() {
            let _ = w.flush();
            let _ = w.get_ref().sync_data();
        }
    }
}

/// One item read back from the spool.
#[derive(Debug)]
pub enum SpoolItem {
    Event {
        seq: u64,
        event: Box<Event>,
    },
    /// A damaged stretch, reported as a loss event (never an error that stops the reader).
    Damaged(Box<Event>),
}

/// Reads every event in the spool, in sequence order, from `from_seq` on.
pub fn read_all(
    dir: &Path,
    from_seq: u64,
    mut each: impl FnMut(SpoolItem),
) -> Result<(), SpoolError> {
    let listed = list_segments(dir)?;
    let firsts: BTreeMap<u64, PathBuf> = listed.into_iter().collect();
    let next_firsts: Vec<u64> = firsts.keys().copied().skip(1).collect();
    for (i, (first_seq, path)) in firsts.iter().enumerate() {
        // Skip segments that end before from_seq.
        if let Some(next) = next_firsts.get(i) {
            if *next <= from_seq {
                continue;
            }
        }
        let mut bad_json = 0u64;
        let scan = match scan_segment(path, *first_seq, |seq, payload| {
            if seq < from_seq {
                return;
            }
            match serde_json::from_slice::<Event>(payload) {
                Ok(event) => each(SpoolItem::Event {
                    seq,
                    event: Box::new(event),
                }),
                Err(_) => bad_json += 1,
            }
        }) {
            Ok(scan) => scan,
            Err(SpoolError::NotASegment { detail, .. }) => {
                each(SpoolItem::Damaged(Box::new(loss(
                    "spool",
                    0,
                    format!("segment {} unreadable: {detail}", path.display()),
                ))));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(damage) = scan.damage {
            // The writer cuts torn tails at start; damage a live writer has not reached yet is
            // the tail being written, anything else is corruption.
            let live_tail = i + 1 == firsts.len();
            if !live_tail {
                each(SpoolItem::Damaged(Box::new(loss(
                    "spool",
                    0,
                    format!(
                        "segment {}: {damage}; rest of the segment skipped",
                        path.display()
                    ),
                ))));
            }
        }
        if bad_json > 0 {
            each(SpoolItem::Damaged(Box::new(loss(
                "spool",
                bad_json,
                format!(
                    "segment {}: {bad_json} records are not events",
                    path.display()
                ),
            ))));
        }
    }
    Ok(())
}

/// Follows the spool from a sequence number, record by record, for a consumer (the ClickHouse
/// shipper): keeps its place between calls, moves on to the next segment when one is complete,
/// and treats an incomplete record at the very end as "not written yet".
pub struct SpoolReader {
    dir: PathBuf,
    next_seq: u64,
    /// Open segment: its first sequence, the file, and the offset of the record `next_seq`.
    current: Option<(u64, BufReader<File>, u64)>,
}

/// What a read found besides records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadNote {
    /// Events `from..to` are no longer in the spool (deleted when it was full, or damaged).
    Gap { from: u64, to: u64, reason: String },
}

impl SpoolReader {
    pub fn new(dir: &Path, from_seq: u64) -> SpoolReader {
        SpoolReader {
            dir: dir.to_path_buf(),
            next_seq: from_seq,
            current: None,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Opens the segment holding `next_seq` and positions on it. None when it is not written yet.
    fn open_current(&mut self, notes: &mut Vec<ReadNote>) -> Result<bool, SpoolError> {
        let listed = list_segments(&self.dir)?;
        let Some(first) = listed.first().map(|s| s.0) else {
            return Ok(false);
        };
        if self.next_seq < first {
            notes.push(ReadNote::Gap {
                from: self.next_seq,
                to: first,
                reason: "deleted from the spool before being read".into(),
            });
            self.next_seq = first;
        }
        let Some((first_seq, path)) = listed.iter().rev().find(|(f, _)| *f <= self.next_seq) else {
            return Ok(false);
        };
        let file = File::open(path).map_err(io_err(path))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut offset = SEGMENT_HEADER;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        if r.read_exact(&mut header).is_err() {
            return Ok(false); // being created
        }
        // Skip to next_seq (once, when the reader starts inside a segment).
        let mut seq = *first_seq;
        while seq < self.next_seq {
            let mut rh = [0u8; RECORD_HEADER as usize];
            if r.read_exact(&mut rh).is_err() {
                return Ok(false);
            }
            let plen = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]) as u64;
            if std::io::copy(&mut (&mut r).take(plen), &mut std::io::sink())
                .map_err(io_err(path))?
                != plen
            {
                return Ok(false);
            }
            offset += RECORD_HEADER + plen;
            seq += 1;
        }
        self.current = Some((*first_seq, r, offset));
        Ok(true)
    }

    /// Appends up to `max` records available now to `out` as (seq, payload).
    pub fn read(
        &mut self,
        max: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<Vec<ReadNote>, SpoolError> {
        let mut notes = Vec::new();
        let mut taken = 0;
        while taken < max {
            if self.current.is_none() && !self.open_current(&mut notes)? {
                break;
            }
            let Some((first_seq, r, offset)) = self.current.as_mut() else {
                break;
            };
            let mut rh = [0u8; RECORD_HEADER as usize];
            let complete = match r.read_exact(&mut rh) {
                Ok(()) => {
                    let plen = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]);
                    let sum = u32::from_le_bytes([rh[4], rh[5], rh[6], rh[7]]);
                    let seq = u64::from_le_bytes(rh[8..16].try_into().unwrap_or_default());
                    let mut payload = vec![0u8; plen.min(MAX_PAYLOAD) as usize];
                    if plen <= MAX_PAYLOAD && r.read_exact(&mut payload).is_ok() {
                        if crc(seq, &payload) == sum && seq == self.next_seq {
                            *offset += RECORD_HEADER + plen as u64;
                            out.push((seq, payload));
                            self.next_seq += 1;
                            taken += 1;
                            continue;
                        }
                        Some(false) // whole but wrong: damage
                    } else {
                        None // not all there
                    }
                }
                Err(_) => None,
            };
            // Not a good record here. If a later segment exists, this one is finished: what is
            // left of it is damage (the writer never leaves a partial record behind a rotation).
            let first_seq = *first_seq;
            let offset = *offset;
            let next_first = list_segments(&self.dir)?
                .into_iter()
                .map(|s| s.0)
                .find(|f| *f > first_seq);
            match (complete, next_first) {
                (_, Some(next)) => {
                    if next > self.next_seq {
                        notes.push(ReadNote::Gap {
                            from: self.next_seq,
                            to: next,
                            reason: format!("segment {first_seq} damaged at offset {offset}"),
                        });
                    }
                    self.next_seq = next;
                    self.current = None;
                }
                (Some(false), None) => {
                    // Damage in the segment being written; the writer will have cut it at its
                    // next start. Report once and stop reading this segment for now.
                    notes.push(ReadNote::Gap {
                        from: self.next_seq,
                        to: self.next_seq,
                        reason: format!("segment {first_seq} damaged at offset {offset}"),
                    });
                    self.current = None;
                    break;
                }
                (_, None) => {
                    // The tail being written: wait at the same place for the rest of it.
                    if let Some((_, r, offset)) = self.current.as_mut() {
                        if r.seek(SeekFrom::Start(*offset)).is_err() {
                            self.current = None;
                        }
                    }
                    break;
                }
            }
        }
        Ok(notes)
    }
}

/// A consumer's acknowledged position, kept in `acks/<name>` (written atomically).
pub struct AckFile {
    path: PathBuf,
}

impl AckFile {
    pub fn new(dir: &Path, consumer: &str) -> AckFile {
        AckFile {
            path: dir.join("acks").join(consumer),
        }
    }

    /// The next sequence to ship (one past the last acknowledged), 0 when nothing was.
    pub fn next(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|acked| acked + 1)
            .unwrap_or(0)
    }

    /// Records that everything up to and including `seq` is acknowledged.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{seq}\n")).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ForkEvent, Process};

    fn cfg(dir: &Path, max_bytes: u64, when_full: WhenFull) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 4096,
            max_bytes,
            when_full,
            fsync_interval_ms: 1000,
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

    #[test]
    fn appends_survive_reopen_with_contiguous_sequences() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
            for n in 0..100 {
                assert_eq!(s.append(&event(n)).unwrap(), Some(n as u64));
            }
            s.flush().unwrap();
        }
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(s.next_seq(), 100);
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
    fn torn_tail_is_cut_and_written_down() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
            for n in 0..5 {
                s.append(&event(n)).unwrap();
            }
        }
        let (_, last) = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap(); // half a record header
        drop(f);
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        s.append(&event(5)).unwrap();
        drop(s);
        let (events, losses) = read_back(dir.path());
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(losses.len(), 1);
        let EventBody::Loss(l) = &losses[0].body else {
            panic!()
        };
        assert!(l.reason.contains("truncated record header"), "{}", l.reason);
    }

    #[test]
    fn corrupt_record_skips_the_rest_of_its_segment_with_a_loss_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
            for n in 0..200 {
                s.append(&event(n)).unwrap();
            }
        }
        let segs = list_segments(dir.path()).unwrap();
        assert!(segs.len() >= 3);
        // Flip a byte in the middle of the first segment's payloads.
        let mut bytes = std::fs::read(&segs[0].1).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&segs[0].1, bytes).unwrap();
        let (events, losses) = read_back(dir.path());
        assert_eq!(losses.len(), 1, "{losses:?}");
        // Everything from the second segment on is intact.
        let second_first = segs[1].0;
        assert!(events.iter().any(|e| e.0 == second_first));
        assert_eq!(events.last().unwrap().1, 199);
        // Reopening for writing does not crash and keeps appending.
        let mut s = Spool::open(cfg(dir.path(), 1 << 30, WhenFull::DropOldest)).unwrap();
        assert_eq!(s.append(&event(200)).unwrap(), Some(200));
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
        // The newest events survive, contiguously.
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
        // Room returns (a consumer shipped and the operator raised the bound): the next append
        // first writes down how many were refused.
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
        let cfg = SpoolConfig {
            dir: dir.path().to_path_buf(),
            segment_bytes: 4096,
            max_bytes: 1 << 30,
            when_full: WhenFull::DropOldest,
            fsync_interval_ms: 1000,
        };
        let mut spool = Spool::open(cfg).unwrap();
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
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (0..250).collect::<Vec<_>>());
        // A consumer that acknowledged 99 resumes at 100, mid-segment.
        let ack = AckFile::new(dir.path(), "test");
        ack.ack(99).unwrap();
        let mut resumed = SpoolReader::new(dir.path(), ack.next());
        let mut rest = Vec::new();
        resumed.read(10, &mut rest).unwrap();
        assert_eq!(
            rest.iter().map(|g| g.0).collect::<Vec<_>>(),
            (100..110).collect::<Vec<_>>()
        );
    }
}
