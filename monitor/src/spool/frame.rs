//! The spool's on-disk format, written once: segment headers, record frames, the hash chain,
//! and a reader of one segment that finds its way past damage.
//!
//! ```text
//! segment (format 2): "VIGSPL02" | u64 first seq | [16] epoch | [32] chain before the first record
//! record  (format 2): "VRC2" | u32 payload length | u32 CRC-32 | u64 seq | [32] chain | payload
//! ```
//!
//! An epoch's chain starts at `SHA-256("vigil-chain-v1" | epoch)`, and for a record whose
//! payload has a top-level `process` member (its value's bytes `P`, at byte offset `at`):
//!
//! ```text
//! chain(n) = SHA-256(chain(n-1) | seq(n) | 0x00 | u32 at | u32 len(P) | SHA-256(P)
//!                    | payload(n) before P | payload(n) after P)          (little-endian)
//! ```
//!
//! and `SHA-256(chain(n-1) | seq(n) | payload(n))` for a payload without one. A process's part
//! is the same on each of its events (ids, names, program: half of an open's record), so the
//! writer hashes it once per process and the chain per record covers the rest and that digest.
//! The per-record hash was a sixth of the daemon's work; this halves it. Every byte is still
//! bound: `at`, the length and the digest fix `P`, the rest is hashed as it is. Records of
//! segments written before (by Vigil up to this rule) were chained whole; a verifier accepts
//! either form (`Chain::links`). The two cannot stand in for each other: after `chain | seq`
//! the split input holds 0x00, and a payload beginning with 0x00 (never JSON) is refused, so
//! the split input of one record can never be passed off as another's whole payload.
//!
//! The CRC covers everything after it (seq, chain, payload): it finds accidents; the chain,
//! with signed checkpoints (see `crate::trail`), finds edits. The record magic lets a reader find the next whole record after damage instead of
//! giving up on the rest of the segment. A payload is JSON (non-UTF-8 bytes are base64, control
//! bytes escaped), so a hostile argument cannot plant a record frame inside a payload: a frame's
//! length field holds a zero byte, which JSON never writes raw.
//!
//! Format 1 segments (`VIGSPL01`, 16-byte record headers, no chain, no magic) written by an older
//! Vigil are still read; `vigil verify` reports them as unchained.

use std::{
    fs::File,
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{io_err, SpoolError};

pub const SEGMENT_MAGIC_V1: &[u8; 8] = b"VIGSPL01";
pub const SEGMENT_MAGIC: &[u8; 8] = b"VIGSPL02";
pub const RECORD_MAGIC: &[u8; 4] = b"VRC2";
pub const SEGMENT_HEADER_V1: u64 = 16;
pub const SEGMENT_HEADER: u64 = 64;
pub const RECORD_HEADER_V1: u64 = 16;
pub const RECORD_HEADER: u64 = 52;
/// Larger payloads are corruption, not events (an exec record decodes to well under this).
pub const MAX_PAYLOAD: u32 = 4 * 1024 * 1024;
/// How much of a segment a reader holds at once.
const WINDOW: usize = 1 << 20;

/// The hash chain's value after a record (or an epoch's starting value).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Chain(pub [u8; 32]);

impl Chain {
    /// Where the chain of `epoch` starts.
    pub fn genesis(epoch: &Epoch) -> Chain {
        let mut h = Sha256::new();
        h.update(b"vigil-chain-v1");
        h.update(epoch.0);
        Chain(h.finalize().into())
    }

    /// The chain after a record of `seq` holding `payload`, its process part found by reading
    /// it (`process_span`).
    pub fn next(&self, seq: u64, payload: &[u8]) -> Chain {
        self.next_at(seq, payload, process_span(payload))
    }

    /// The chain after a record whose process part, if it has one, is `payload[span]`.
    fn next_at(&self, seq: u64, payload: &[u8], span: Option<Range<usize>>) -> Chain {
        match span {
            Some(span) => {
                let digest = ProcessDigest::of(&payload[span.clone()]);
                self.next_with(seq, payload, span, &digest)
            }
            None => self.next_whole(seq, payload),
        }
    }

    /// The chain after a record whose process part is `payload[span]`, hashed as `digest`:
    /// the writer's fast path, where both are known. `span` must be what `process_span` finds
    /// (the event writer's test checks it is), or the record will not verify.
    pub fn next_with(
        &self,
        seq: u64,
        payload: &[u8],
        span: Range<usize>,
        digest: &ProcessDigest,
    ) -> Chain {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(seq.to_le_bytes());
        h.update([0u8]);
        h.update((span.start as u32).to_le_bytes());
        h.update((span.len() as u32).to_le_bytes());
        h.update(digest.0);
        h.update(&payload[..span.start]);
        h.update(&payload[span.end..]);
        Chain(h.finalize().into())
    }

    /// The chain over the whole payload: records without a process part, and every record of
    /// a segment written before processes were hashed apart.
    pub fn next_whole(&self, seq: u64, payload: &[u8]) -> Chain {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(seq.to_le_bytes());
        h.update(payload);
        Chain(h.finalize().into())
    }

    /// Whether `chain` is the chain after a record of `seq` holding `payload`, by today's rule
    /// or by the whole-payload rule of records written before it.
    pub fn links(&self, seq: u64, payload: &[u8], chain: Chain) -> bool {
        // Else the split input of a record (0x00, offsets, the process's digest, the rest)
        // would verify as a payload of its own: the record with its process cut out.
        if payload.first() == Some(&0) {
            return false;
        }
        // (The payload read once: by the whole-payload rule too when it has a process part.)
        let span = process_span(payload);
        let split = span.is_some();
        self.next_at(seq, payload, span) == chain
            || (split && self.next_whole(seq, payload) == chain)
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Chain> {
        let bytes = hex::decode(text).ok()?;
        Some(Chain(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({})", &self.hex()[..16])
    }
}

/// SHA-256 of a record's process part, as the chain takes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProcessDigest(pub [u8; 32]);

impl ProcessDigest {
    pub fn of(process: &[u8]) -> ProcessDigest {
        ProcessDigest(Sha256::digest(process).into())
    }
}

/// Where a payload's process part is: the bytes of the value of its top-level `process` key,
/// when the payload is a JSON object (its first byte `{`) with exactly one. What the chain's reader (`vigil
/// verify`) goes by, so it alone defines the span; the writer's knowledge of where it wrote
/// the process must agree with it.
pub fn process_span(payload: &[u8]) -> Option<Range<usize>> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        process: Option<&'a serde_json::value::RawValue>,
    }
    if payload.first() != Some(&b'{') {
        // (serde would also read a struct from an array.)
        return None;
    }
    let top: Top<'_> = serde_json::from_slice(payload).ok()?;
    let raw = top.process?.get().as_bytes();
    // The value borrows from `payload` (a `&RawValue` is never a copy), so its offset is
    // where it points.
    let at = (raw.as_ptr() as usize).checked_sub(payload.as_ptr() as usize)?;
    (at + raw.len() <= payload.len()).then_some(at..at + raw.len())
}

/// A few processes' parts and their digests, the most recent kept: a session's busy processes
/// interleave, and each part is hashed once while it is kept.
#[derive(Default)]
pub struct ProcessDigests {
    kept: Vec<(Vec<u8>, ProcessDigest)>,
    next: usize,
}

impl ProcessDigests {
    const KEPT: usize = 8;

    pub fn digest(&mut self, process: &[u8]) -> ProcessDigest {
        if let Some((_, d)) = self.kept.iter().find(|(p, _)| p == process) {
            return *d;
        }
        let d = ProcessDigest::of(process);
        if self.kept.len() < Self::KEPT {
            self.kept.push((process.to_vec(), d));
        } else {
            let slot = &mut self.kept[self.next];
            slot.0.clear();
            slot.0.extend_from_slice(process);
            slot.1 = d;
            self.next = (self.next + 1) % Self::KEPT;
        }
        d
    }
}

/// One unbroken run of a spool's chain: a new one begins when a spool is created, and when a
/// daemon finds its spool behind what it had already shipped (see `Spool::open`). Random, so
/// that sequence numbers and deduplication tokens of two epochs never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Epoch(pub [u8; 16]);

impl Epoch {
    pub fn random() -> Result<Epoch, SpoolError> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| SpoolError::Io {
            path: PathBuf::from("getrandom"),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Epoch(id))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Epoch> {
        let bytes = hex::decode(text).ok()?;
        Some(Epoch(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch({})", self.hex())
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Written by an older Vigil: no chain, no record magic.
    V1,
    V2,
}

impl Format {
    pub fn segment_header(self) -> u64 {
        match self {
            Format::V1 => SEGMENT_HEADER_V1,
            Format::V2 => SEGMENT_HEADER,
        }
    }
    pub fn record_header(self) -> u64 {
        match self {
            Format::V1 => RECORD_HEADER_V1,
            Format::V2 => RECORD_HEADER,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub format: Format,
    pub first_seq: u64,
    /// Format 1 segments have none (all zero).
    pub epoch: Epoch,
    /// The chain before this segment's first record: the previous segment's last record's, or
    /// the epoch's genesis.
    pub prev_chain: Chain,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER as usize] {
        let mut out = [0u8; SEGMENT_HEADER as usize];
        out[..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        out[16..32].copy_from_slice(&self.epoch.0);
        out[32..64].copy_from_slice(&self.prev_chain.0);
        out
    }
}

/// A record's frame, ready to write before its payload.
pub fn encode_record(seq: u64, chain: &Chain, payload: &[u8]) -> [u8; RECORD_HEADER as usize] {
    let mut h = [0u8; RECORD_HEADER as usize];
    h[..4].copy_from_slice(RECORD_MAGIC);
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..52].copy_from_slice(&chain.0);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[12..]);
    crc.update(payload);
    h[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// What a segment holds at one offset.
pub enum At<'a> {
    Record {
        seq: u64,
        /// `None` in format 1 segments.
        chain: Option<Chain>,
        payload: &'a [u8],
        /// Offset just past it.
        end: u64,
    },
    /// Not all of a record is there: being written, or torn.
    Incomplete,
    /// Whole but wrong: a bad magic, an impossible length, a checksum mismatch.
    Corrupt,
}

/// One segment file opened for reading, through a window of its bytes.
pub struct SegmentFile {
    pub path: PathBuf,
    pub header: SegmentHeader,
    file: File,
    window: Vec<u8>,
    window_start: u64,
}

impl SegmentFile {
    /// Opens `path`, whose name says it starts at `first_seq`; `Ok(None)` while its header is
    /// not yet all written (a segment being created).
    pub fn open(path: &Path, first_seq: u64) -> Result<Option<SegmentFile>, SpoolError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut seg = SegmentFile {
            path: path.to_path_buf(),
            header: SegmentHeader {
                format: Format::V2,
                first_seq,
                epoch: Epoch::default(),
                prev_chain: Chain::default(),
            },
            file,
            window: Vec::new(),
            window_start: 0,
        };
        let not_a_segment = |detail: String| SpoolError::NotASegment {
            path: path.to_path_buf(),
            detail,
        };
        let Some(magic) = seg.bytes(0, 8)? else {
            return Ok(None);
        };
        let format = match magic {
            m if m == SEGMENT_MAGIC => Format::V2,
            m if m == SEGMENT_MAGIC_V1 => Format::V1,
            _ => return Err(not_a_segment("missing or wrong header".into())),
        };
        let Some(h) = seg.bytes(0, format.segment_header() as usize)? else {
            return Ok(None);
        };
        let header_seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let mut header = SegmentHeader {
            format,
            first_seq: header_seq,
            epoch: Epoch::default(),
            prev_chain: Chain::default(),
        };
        if format == Format::V2 {
            header.epoch = Epoch(h[16..32].try_into().unwrap_or_default());
            header.prev_chain = Chain(h[32..64].try_into().unwrap_or_default());
        }
        if header_seq != first_seq {
            return Err(not_a_segment(format!(
                "header says first sequence {header_seq}, name says {first_seq}"
            )));
        }
        seg.header = header;
        Ok(Some(seg))
    }

    pub fn file_len(&self) -> Result<u64, SpoolError> {
        Ok(self.file.metadata().map_err(io_err(&self.path))?.len())
    }

    /// `n` bytes at `offset`, or `None` when the file does not (yet) hold them all.
    fn bytes(&mut self, offset: u64, n: usize) -> Result<Option<&[u8]>, SpoolError> {
        let have = offset >= self.window_start
            && offset + n as u64 <= self.window_start + self.window.len() as u64;
        if !have {
            self.window.resize(n.max(WINDOW), 0);
            let mut filled = 0;
            while filled < self.window.len() {
                match self
                    .file
                    .read_at(&mut self.window[filled..], offset + filled as u64)
                {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(&self.path)(e)),
                }
            }
            self.window.truncate(filled);
            self.window_start = offset;
            if filled < n {
                return Ok(None);
            }
        }
        let start = (offset - self.window_start) as usize;
        Ok(Some(&self.window[start..start + n]))
    }

    /// The record at `offset`.
    pub fn at(&mut self, offset: u64) -> Result<At<'_>, SpoolError> {
        let format = self.header.format;
        let head = format.record_header();
        let Some(h) = self.bytes(offset, head as usize)? else {
            return Ok(At::Incomplete);
        };
        let (len, sum, seq, chain) = match format {
            Format::V2 => {
                if &h[..4] != RECORD_MAGIC {
                    return Ok(At::Corrupt);
                }
                (
                    u32::from_le_bytes(h[4..8].try_into().unwrap_or_default()),
                    u32::from_le_bytes(h[8..12].try_into().unwrap_or_default()),
                    u64::from_le_bytes(h[12..20].try_into().unwrap_or_default()),
                    Some(Chain(h[20..52].try_into().unwrap_or_default())),
                )
            }
            Format::V1 => (
                u32::from_le_bytes(h[..4].try_into().unwrap_or_default()),
                u32::from_le_bytes(h[4..8].try_into().unwrap_or_default()),
                u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()),
                None,
            ),
        };
        if len > MAX_PAYLOAD {
            return Ok(At::Corrupt);
        }
        let total = head + len as u64;
        let Some(all) = self.bytes(offset, total as usize)? else {
            return Ok(At::Incomplete);
        };
        let covered = match format {
            Format::V2 => &all[12..],
            Format::V1 => &all[8..],
        };
        if crc32fast::hash(covered) != sum {
            return Ok(At::Corrupt);
        }
        Ok(At::Record {
            seq,
            chain,
            payload: &all[head as usize..],
            end: offset + total,
        })
    }

    /// The offset of the first whole record after `offset` whose sequence is at least
    /// `min_seq`, looking as far as the file goes now; `None` if there is none (format 1
    /// segments have no record magic to look for).
    pub fn resync(&mut self, offset: u64, min_seq: u64) -> Result<Option<u64>, SpoolError> {
        if self.header.format == Format::V1 {
            return Ok(None);
        }
        let len = self.file_len()?;
        let mut from = offset + 1;
        let finder = memchr::memmem::Finder::new(RECORD_MAGIC);
        while from + RECORD_HEADER <= len {
            let n = ((len - from) as usize).min(WINDOW);
            let Some(chunk) = self.bytes(from, n)? else {
                return Ok(None);
            };
            let hits: Vec<u64> = finder.find_iter(chunk).map(|i| from + i as u64).collect();
            for candidate in hits {
                if let At::Record { seq, .. } = self.at(candidate)? {
                    if seq >= min_seq {
                        return Ok(Some(candidate));
                    }
                }
            }
            // Overlap by the magic's length less one, so a magic across chunks is found.
            from += (n as u64)
                .saturating_sub(RECORD_MAGIC.len() as u64 - 1)
                .max(1);
        }
        Ok(None)
    }
}

/// One thing a scan of a segment met.
pub enum Scanned<'a> {
    Record {
        seq: u64,
        chain: Option<Chain>,
        payload: &'a [u8],
        offset: u64,
    },
    /// Bytes `from..to` held no whole record; the scan went on at `to`.
    Damage { from: u64, to: u64 },
}

/// How a scan of a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// At the end of the file, after a whole record.
    Clean { end: u64 },
    /// The file ends inside a record (a write cut short): everything from `from` on.
    Torn { from: u64 },
    /// From `from` to the end there is no whole record, though something complete is there.
    DamagedTail { from: u64 },
}

impl ScanEnd {
    /// Where a reader's damage begins, if the end is damage: a torn tail of the last segment is
    /// the record being written (or cut at the writer's next start), not damage.
    pub fn damage_from(self, last_segment: bool) -> Option<u64> {
        match self {
            ScanEnd::Clean { .. } => None,
            ScanEnd::Torn { .. } if last_segment => None,
            ScanEnd::Torn { from } | ScanEnd::DamagedTail { from } => Some(from),
        }
    }
}

/// Reads `seg` from its first record, calling `each` for every whole record and every damaged
/// stretch that has whole records after it.
pub fn scan(
    seg: &mut SegmentFile,
    mut each: impl FnMut(Scanned<'_>),
) -> Result<ScanEnd, SpoolError> {
    let len = seg.file_len()?;
    let mut offset = seg.header.format.segment_header();
    let mut expected = seg.header.first_seq;
    loop {
        if offset >= len {
            return Ok(ScanEnd::Clean { end: offset });
        }
        let incomplete = match seg.at(offset)? {
            At::Record {
                seq,
                chain,
                payload,
                end,
            } if seq >= expected => {
                each(Scanned::Record {
                    seq,
                    chain,
                    payload,
                    offset,
                });
                expected = seq + 1;
                offset = end;
                continue;
            }
            At::Record { .. } | At::Corrupt => false,
            At::Incomplete => true,
        };
        match seg.resync(offset, expected)? {
            Some(next) => {
                each(Scanned::Damage {
                    from: offset,
                    to: next,
                });
                offset = next;
            }
            None if incomplete => return Ok(ScanEnd::Torn { from: offset }),
            None => return Ok(ScanEnd::DamagedTail { from: offset }),
        }
    }
}

/// Segment files of `dir`, by first sequence.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
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

pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{samples::sample, EventType, EventWriter};

    fn written(t: EventType) -> (Vec<u8>, Range<usize>) {
        let mut out = Vec::new();
        let span = EventWriter::new().write(&mut out, &sample(t)).unwrap();
        (out, span)
    }

    fn prev() -> Chain {
        Chain::genesis(&Epoch([7; 16]))
    }

    /// The writer's fast path and the reader's are the same chain, and it binds the process
    /// part (through its digest) as it binds the rest.
    #[test]
    fn a_process_hashed_apart_is_still_bound() {
        let (payload, span) = written(EventType::Open);
        let digest = ProcessDigests::default().digest(&payload[span.clone()]);
        let chain = prev().next_with(41, &payload, span.clone(), &digest);
        assert_eq!(chain, prev().next(41, &payload));
        assert!(prev().links(41, &payload, chain));
        assert!(!prev().links(42, &payload, chain));
        assert_ne!(chain, prev().next_whole(41, &payload));
        // One byte changed anywhere: inside the process, before it, after it.
        for at in [span.start + 8, 12, payload.len() - 3] {
            let mut edited = payload.clone();
            edited[at] = if edited[at] == b'1' { b'2' } else { b'1' };
            assert!(!prev().links(41, &edited, chain), "byte {at}");
        }
        // Another process's part in its place.
        let (other, other_span) = written(EventType::Exit);
        let mut swapped = payload[..span.start].to_vec();
        swapped.extend_from_slice(&other[other_span]);
        swapped.extend_from_slice(&payload[span.end..]);
        if swapped != payload {
            assert!(!prev().links(41, &swapped, chain));
        }
    }

    /// Records chained whole (before processes were hashed apart) verify as they did.
    #[test]
    fn records_chained_whole_still_link() {
        let (payload, _) = written(EventType::Exec);
        let whole = prev().next_whole(3, &payload);
        assert!(prev().links(3, &payload, whole));
        let mut edited = payload.clone();
        edited[20] ^= 1;
        assert!(!prev().links(3, &edited, whole));
    }

    /// The split input of a record does not verify as a payload of its own (it would be the
    /// record with its process cut out, and readable by nothing).
    #[test]
    fn the_split_input_is_not_a_payload() {
        let (payload, span) = written(EventType::Open);
        let digest = ProcessDigest::of(&payload[span.clone()]);
        let chain = prev().next_with(9, &payload, span.clone(), &digest);
        let mut split = vec![0u8];
        split.extend_from_slice(&(span.start as u32).to_le_bytes());
        split.extend_from_slice(&(span.len() as u32).to_le_bytes());
        split.extend_from_slice(&digest.0);
        split.extend_from_slice(&payload[..span.start]);
        split.extend_from_slice(&payload[span.end..]);
        assert_eq!(
            prev().next_whole(9, &split),
            chain,
            "the forgery is built right"
        );
        assert!(!prev().links(9, &split, chain));
    }

    /// What counts as the process part: the top-level key's value only, once.
    #[test]
    fn the_process_span_is_the_top_level_value() {
        let p = br#"{"a":{"process":{"x":1}},"process":{"pid":1,"s":"}\""},"b":2}"#;
        let span = process_span(p).unwrap();
        assert_eq!(&p[span], br#"{"pid":1,"s":"}\""}"#);
        assert_eq!(process_span(br#"{"a":{"process":{}}}"#), None);
        assert_eq!(process_span(br#"{"process":{},"process":{}}"#), None);
        assert_eq!(process_span(b"not json"), None);
        assert_eq!(process_span(br#"[{"process":{}}]"#), None);
    }

    /// The digests kept are the processes' own, revisited after being replaced.
    #[test]
    fn kept_digests_are_each_processs_own() {
        let mut kept = ProcessDigests::default();
        let parts: Vec<Vec<u8>> = (0..20).map(|i| format!("{{\"pid\":{i}}}").into()).collect();
        for _ in 0..2 {
            for p in &parts {
                assert!(kept.digest(p) == ProcessDigest::of(p));
            }
        }
    }
}
