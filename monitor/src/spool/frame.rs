//! The spool's on-disk format, written once: segment headers, record frames, the hash chain,
//! and a reader of one segment that finds its way past damage.
//!
//! ```text
//! segment (format 2): "VIGSPL02" | u64 first seq | [16] epoch | [32] chain before the first record
//! record  (format 2): "VRC2" | u32 payload length | u32 CRC-32 | u64 seq | [32] chain | payload
//! ```
//!
//! `chain(n) = SHA-256(chain(n-1) | seq(n) little-endian | payload(n))`, and an epoch's chain
//! starts at `SHA-256("vigil-chain-v1" | epoch)`. The CRC covers everything after it (seq, chain,
//! payload): it finds accidents; the chain, with signed checkpoints (see `crate::trail`), finds
//! edits. The record magic lets a reader find the next whole record after damage instead of
//! giving up on the rest of the segment. A payload is JSON (non-UTF-8 bytes are base64, control
//! bytes escaped), so a hostile argument cannot plant a record frame inside a payload: a frame's
//! length field holds a zero byte, which JSON never writes raw.
//!
//! Format 1 segments (`VIGSPL01`, 16-byte record headers, no chain, no magic) written by an older
//! Vigil are still read; `vigil verify` reports them as unchained.

use std::{
    fs::File,
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

    /// The chain after a record of `seq` holding `payload`.
    pub fn next(&self, seq: u64, payload: &[u8]) -> Chain {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(seq.to_le_bytes());
        h.update(payload);
        Chain(h.finalize().into())
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
