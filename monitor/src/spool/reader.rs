//! The reading side of the spool: every record once (`read_all`, for queries), following the
//! writer (`SpoolReader`, for the shipper), and the consumers' acknowledgements. Readers report
//! what they could not read — damage anywhere, missing segments, records a segment should hold
//! and does not — as loss records or gap notes; they never stop at damage.

use std::{
    ops::ControlFlow,
    path::{Path, PathBuf},
};

use super::{
    frame::{list_segments, scan, At, Chain, Epoch, Scanned, SegmentFile},
    io_err, loss, SpoolError,
};
use crate::event::Event;

/// One thing `read_all` found.
#[derive(Debug)]
pub enum SpoolItem {
    Event {
        seq: u64,
        event: Box<Event>,
    },
    /// Something could not be read: a loss record saying what and where.
    Damaged(Box<Event>),
}

fn damaged(reason: String, count: u64) -> SpoolItem {
    SpoolItem::Damaged(Box::new(loss(
        crate::event::LossStage::Spool,
        count,
        reason,
    )))
}

/// Reads every record of the spool in `dir` from `from_seq` on. Damage, records that are not
/// events, segments missing between others and a damaged last segment are reported as
/// `Damaged` items (a torn tail of the last segment, which the writer cuts at its next start,
/// is not damage).
pub fn read_all(
    dir: &Path,
    from_seq: u64,
    mut each: impl FnMut(SpoolItem),
) -> Result<(), SpoolError> {
    let listed = list_segments(dir)?;
    let count = listed.len();
    let mut expected: Option<u64> = None;
    for (i, (first_seq, path)) in listed.iter().enumerate() {
        if let Some((next_first, _)) = listed.get(i + 1) {
            if *next_first <= from_seq {
                continue;
            }
        }
        let mut seg = match SegmentFile::open(path, *first_seq) {
            Ok(Some(seg)) => seg,
            Ok(None) => continue, // being created
            Err(SpoolError::NotASegment { detail, .. }) => {
                each(damaged(
                    format!("segment {} unreadable: {detail}", path.display()),
                    0,
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = expected {
            if *first_seq > want && *first_seq > from_seq {
                each(damaged(
                    format!(
                        "records {want}..{first_seq} missing: no segment holds them (segment {} \
                         starts at {first_seq})",
                        path.display()
                    ),
                    first_seq - want.max(from_seq),
                ));
            }
        }
        let mut bad_json = 0u64;
        let mut damage = Vec::new();
        let mut next = expected.unwrap_or(*first_seq).max(*first_seq);
        let end = scan(&mut seg, |item| match item {
            Scanned::Record { seq, payload, .. } => {
                if seq > next && seq > from_seq {
                    damage.push(format!(
                        "records {next}..{seq} missing from segment {}",
                        path.display()
                    ));
                }
                next = seq + 1;
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
            }
            Scanned::Damage { from, to } => damage.push(format!(
                "segment {}: bytes {from}..{to} damaged (skipped; the records after them are read)",
                path.display()
            )),
        })?;
        expected = Some(next);
        for reason in damage {
            each(damaged(reason, 0));
        }
        let last = i + 1 == count;
        if let Some(from) = end.damage_from(last) {
            each(damaged(
                format!(
                    "segment {}: no whole record from offset {from} to its end",
                    path.display()
                ),
                0,
            ));
        }
        if bad_json > 0 {
            each(damaged(
                format!(
                    "segment {}: {bad_json} records are not events",
                    path.display()
                ),
                bad_json,
            ));
        }
    }
    Ok(())
}

/// One record as `SpoolReader` delivers it: where it sits in the chain, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub epoch: Epoch,
    /// `None` in format-1 segments.
    pub chain: Option<Chain>,
    pub payload: Vec<u8>,
}

/// One record as `SpoolReader::read_with` hands it over, its payload borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub epoch: Epoch,
    pub chain: Option<Chain>,
    pub payload: &'a [u8],
}

/// Follows the spool as it is written, from one sequence on.
pub struct SpoolReader {
    dir: PathBuf,
    next_seq: u64,
    current: Option<(SegmentFile, u64)>,
    /// Where damage was last reported, so a damaged tail is reported once, not at every poll.
    reported: Option<(u64, u64)>,
}

/// Something the reader could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadNote {
    /// Records `from..to` cannot be read (`from == to`: damage whose extent is not known yet).
    Gap { from: u64, to: u64, reason: String },
}

impl SpoolReader {
    pub fn new(dir: &Path, from_seq: u64) -> SpoolReader {
        SpoolReader {
            dir: dir.to_path_buf(),
            next_seq: from_seq,
            current: None,
            reported: None,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Opens the segment holding `next_seq` and skips to it; false when it is not there yet.
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
        let mut seg = match SegmentFile::open(path, *first_seq) {
            Ok(Some(seg)) => seg,
            Ok(None) => return Ok(false),
            Err(SpoolError::NotASegment { detail, .. }) => {
                // Unreadable as a whole: everything up to the next segment is gone.
                let next = listed.iter().map(|s| s.0).find(|f| *f > *first_seq);
                let Some(next) = next else { return Ok(false) };
                notes.push(ReadNote::Gap {
                    from: self.next_seq,
                    to: next,
                    reason: format!("segment {} unreadable: {detail}", path.display()),
                });
                self.next_seq = next;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut offset = seg.header.format.segment_header();
        // Skip the records before `next_seq` (the writer never skips a sequence, so these
        // are contiguous unless the segment is damaged, when the first record at or past it
        // is found instead).
        loop {
            match seg.at(offset)? {
                At::Record { seq, end, .. } if seq < self.next_seq => offset = end,
                At::Record { .. } => break,
                At::Incomplete | At::Corrupt => match seg.resync(offset, self.next_seq)? {
                    Some(next) => offset = next,
                    None => break,
                },
            }
        }
        self.current = Some((seg, offset));
        Ok(true)
    }

    /// Appends up to `max` records to `out`, and says what it skipped.
    pub fn read(
        &mut self,
        max: usize,
        out: &mut Vec<SpoolRecord>,
    ) -> Result<Vec<ReadNote>, SpoolError> {
        self.read_with(max, |r| {
            out.push(SpoolRecord {
                seq: r.seq,
                epoch: r.epoch,
                chain: r.chain,
                payload: r.payload.to_vec(),
            });
            ControlFlow::Continue(())
        })
    }

    /// Hands up to `max` records to `each`, borrowed from the reader's window (no copy of the
    /// payload: the shipper decodes and forwards each one in place), until `each` says
    /// `Break` (after that record), and says what it skipped.
    pub fn read_with(
        &mut self,
        max: usize,
        mut each: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<ReadNote>, SpoolError> {
        let mut notes = Vec::new();
        let mut taken = 0;
        while taken < max {
            if self.current.is_none() && !self.open_current(&mut notes)? {
                break;
            }
            let Some((seg, offset)) = self.current.as_mut() else {
                break;
            };
            let epoch = seg.header.epoch;
            let bad = match seg.at(*offset)? {
                At::Record {
                    seq,
                    chain,
                    payload,
                    end,
                } if seq >= self.next_seq => {
                    let flow = each(RecordRef {
                        seq,
                        epoch,
                        chain,
                        payload,
                    });
                    if seq > self.next_seq {
                        notes.push(ReadNote::Gap {
                            from: self.next_seq,
                            to: seq,
                            reason: format!("records missing from segment {}", seg.path.display()),
                        });
                    }
                    *offset = end;
                    self.next_seq = seq + 1;
                    taken += 1;
                    if flow.is_break() {
                        break;
                    }
                    continue;
                }
                At::Record { .. } | At::Corrupt => true,
                At::Incomplete => false,
            };
            // Not a good record here. A whole record further on in this segment means damage
            // in between; a later segment means the rest of this one is damage (the writer
            // never leaves a partial record behind a rotation); otherwise this is the tail
            // being written.
            let (first_seq, at) = (seg.header.first_seq, *offset);
            if let Some(next) = seg.resync(at, self.next_seq)? {
                *offset = next;
                if let At::Record { seq, .. } = seg.at(next)? {
                    if seq > self.next_seq {
                        notes.push(ReadNote::Gap {
                            from: self.next_seq,
                            to: seq,
                            reason: format!("segment {first_seq} damaged at offset {at}"),
                        });
                        self.next_seq = seq;
                    }
                }
                continue;
            }
            let next_first = list_segments(&self.dir)?
                .into_iter()
                .map(|s| s.0)
                .find(|f| *f > first_seq);
            match next_first {
                Some(next) => {
                    if next > self.next_seq {
                        notes.push(ReadNote::Gap {
                            from: self.next_seq,
                            to: next,
                            reason: format!("segment {first_seq} damaged at offset {at}"),
                        });
                    }
                    self.next_seq = self.next_seq.max(next);
                    self.current = None;
                }
                None => {
                    if bad && self.reported != Some((first_seq, at)) {
                        self.reported = Some((first_seq, at));
                        notes.push(ReadNote::Gap {
                            from: self.next_seq,
                            to: self.next_seq,
                            reason: format!("segment {first_seq} damaged at offset {at}"),
                        });
                    }
                    break;
                }
            }
        }
        Ok(notes)
    }
}

/// A consumer's acknowledged position, kept in `acks/<name>` (replaced atomically and
/// durably: an acknowledgement that survives a power loss its segments did not is how a
/// restarted spool knows it is behind).
pub struct AckFile {
    path: PathBuf,
}

impl AckFile {
    pub fn new(dir: &Path, consumer: &str) -> AckFile {
        AckFile {
            path: dir.join("acks").join(consumer),
        }
    }

    /// Every consumer's next sequence (one past what it acknowledged).
    pub fn all(dir: &Path) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(dir.join("acks")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                if name.contains('.') {
                    return None; // `*.inflight`, `*.tmp`
                }
                let next = AckFile::new(dir, &name).next();
                (next > 0).then_some((name, next))
            })
            .collect()
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
            crate::durable::private_dir(parent).map_err(io_err(parent))?;
        }
        crate::durable::write_atomic(&self.path, format!("{seq}\n").as_bytes())
            .map_err(io_err(&self.path))
    }
}
