//! Maps shared by the programs. Sizes here are defaults; the daemon may resize the ring buffer.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use vigil_common::{
    counter, ConnectDest, ConnectRecord, CredIds, DatagramDests, DatagramKey, ExecRecord, FileId,
    FileReadStats, FoldCount, FoldFileCtime, FoldFileKey, LinkRecord, LinkTouched, OpenFileKey,
    OpenRecord, Policy, ScopeEntry, TtyRecord,
};

/// Every record goes out through this ring buffer.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// The scoping policy: a single entry written by the daemon.
#[map]
pub static POLICY: Array<Policy> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `counter::index(kind, outcome)`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::SLOTS, 0);

/// Non-zero once some process may have written a login uid (see `scope::enter`): until then a
/// process without one cannot be in scope by lineage, and its events skip the `SCOPE` lookup.
/// Only ever set (by the kernel programs, or by the daemon at start); the daemon treats a reset
/// as tampering.
#[map]
pub static LOGINUID_OPENED: Array<u32> = Array::with_max_entries(1, 0);

/// Processes never monitored, whatever their session (the daemon itself).
#[map]
pub static IGNORED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(64, 0);

/// The session of every process in scope, by tgid (see `scope`). Sized for every pid the kernel
/// can hand out (`pid_max` is at most 2^22) and allocated as entries arrive, so no number of
/// processes fills it and lets a child out of scope; every process exit removes its entry.
#[map]
pub static SCOPE: HashMap<u32, ScopeEntry> = HashMap::with_max_entries(1 << 22, BPF_F_NO_PREALLOC);
const BPF_F_NO_PREALLOC: u32 = 1;

/// Read volume of files opened by monitored processes, until close (or the daemon's exit flush).
/// A plain hash map, not LRU: when full, new opens are counted as lost rather than silently
/// evicting the counts of files still open.
#[map]
pub static OPEN_FILES: HashMap<OpenFileKey, FileReadStats> = HashMap::with_max_entries(65536, 0);

/// The open (its `ktime_ns`) that created each `struct file` a monitored process opened. Reads
/// through another fd of the same open file description (`cat < file` after the shell's dup2, a
/// child's inherited fd) are attributed to that open through it. LRU: an entry outlives its file
/// (nothing reports the final release), so the oldest give way; a lost entry only loses that
/// attribution, never an event already counted.
#[map]
pub static FILE_ORIGIN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// The destination the kernel copied at each thread's last `connect` (its cgroup hook), until
/// the call's exit reports it: the caller's buffer, read then, may have been rewritten by
/// another thread during the call. By thread id (a thread is in one call at a time); LRU, so an
/// entry no exit takes (a connect that io_uring made for the thread) makes room for the next.
#[map]
pub static CONNECT_DEST: LruHashMap<u64, ConnectDest> = LruHashMap::with_max_entries(4096, 0);

/// The destinations each socket was reported sending datagrams to, per process (see
/// `CONNECT_DATAGRAM`). LRU: a socket evicted here reports its next datagram to any destination
/// again (more records, never fewer).
#[map]
pub static DATAGRAM_DESTS: LruHashMap<DatagramKey, DatagramDests> =
    LruHashMap::with_max_entries(8192, 0);

/// Credentials of a thread at the entry of a call that may change them (the set*id family,
/// execve), kept until its exit. A thread is in one syscall at a time, so one entry per thread.
/// A plain hash map, not LRU, so nothing in flight is evicted; every thread exit removes its
/// entry, and a full map is counted as lost privilege events.
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// The inodes whose change time each thread's call that names a file set so far (see
/// `link`), by thread id, until the call's exit sends them. LRU: an entry no exit takes (a
/// thread killed in the call) makes room for the next.
#[map]
pub static LINK_TOUCHED: LruHashMap<u32, LinkTouched> = LruHashMap::with_max_entries(4096, 0);

/// What each process folded (see `fold`), by tgid; every exit removes its entry. Allocated as
/// processes open files; when full, opens are sent rather than folded.
#[map]
pub static FOLDS: HashMap<u32, FoldState> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// One zeroed `FoldState`, never written: what a new `FOLDS` entry is inserted from (the
/// value is too large for the BPF stack beside the open program's).
#[map]
pub static FOLD_ZERO: Array<FoldState> = Array::with_max_entries(1, 0);

/// Routine files, as the daemon registered them at start: their change time then.
#[map]
pub static FOLD_ROUTINE: HashMap<FoldFileKey, FoldFileCtime> = HashMap::with_max_entries(16384, 0);

/// Files never folded (the daemon's watched files), by device and inode.
#[map]
pub static FOLD_NEVER: HashMap<FoldFileKey, u8> = HashMap::with_max_entries(8192, 0);

/// Files per process whose repeated opens fold at once.
pub const FOLD_SLOTS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct RepeatSlot {
    pub file: FileId,
    /// `ktime_ns` of the open that was sent; 0 for a free slot.
    pub origin_ktime_ns: u64,
    pub count: FoldCount,
}

/// Fds of folded opens per process whose reads its `FOLDS` entry counts itself; a folded open
/// beyond them is followed in `OPEN_FILES` as any open.
pub const HELD_FDS: usize = 4;

/// An fd of a folded open, held in the process's fold entry: its reads are counted here instead
/// of in an `OPEN_FILES` entry, so a folded open, read and closed, inserts and deletes nothing.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct HeldFd {
    /// The fd plus one; 0 for a free entry.
    pub fd_plus_one: u32,
    pub _pad: u32,
    /// The `struct file` it was opened as: at an exec, an fd that no longer refers to it (closed
    /// on exec) is let go, so a later fd of that number is not counted under it.
    pub file: u64,
    pub stats: FileReadStats,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FoldState {
    pub routine: FoldCount,
    pub slots: [RepeatSlot; FOLD_SLOTS],
    pub held: [HeldFd; HELD_FDS],
}

/// Scratch space for the large records, built here and sent as their used prefix. One slot per
/// CPU, indexed by CPU id (the daemon sizes them to the possible CPUs): per-CPU maps cap values
/// at 32 KiB, smaller than an exec record. Tracing programs run with migration disabled and do
/// not nest on a CPU, so a slot has one writer at a time.
#[map]
pub static EXEC_SCRATCH: Array<ExecRecord> = Array::with_max_entries(1, 0);
#[map]
pub static OPEN_SCRATCH: Array<OpenRecord> = Array::with_max_entries(1, 0);
#[map]
pub static LINK_SCRATCH: Array<LinkRecord> = Array::with_max_entries(1, 0);
#[map]
pub static TTY_SCRATCH: Array<TtyRecord> = Array::with_max_entries(1, 0);
#[map]
pub static CONNECT_SCRATCH: Array<ConnectRecord> = Array::with_max_entries(1, 0);

/// The largest `kernel::Span`: the inode's head.
pub const SPAN_MAX: usize = vigil_common::INODE_SPAN;
const _: () = assert!(vigil_common::FILE_SPAN <= SPAN_MAX);

/// Where `kernel::Span` copies a kernel struct's head, per CPU (see there).
#[map]
pub static SPAN_SCRATCH: PerCpuArray<[u8; SPAN_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// The write position of the record being built on this CPU (see `tail::Tail`).
#[map]
pub static TAIL_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Processes that sent their `compat_syscall` event (by tgid). LRU: a forgotten one sends
/// another, which only says more.
#[map]
pub static COMPAT_SEEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// The bpf(2) commands each process has reported once (bit `cmd`), by tgid. LRU: a forgotten
/// process reports its commands again, which only says more.
#[map]
pub static BPF_SEEN: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Terminal bytes copied per audit session, against `Policy::tty_session_budget_kib`. LRU: a
/// forgotten session starts a fresh budget, which only lets more through.
#[map]
pub static TTY_BUDGET: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

// The slot is memory the kernel owns, not borrowed from `map`; see the doc comment above for
// why one writer at a time holds.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub fn scratch<T>(map: &'static Array<T>) -> Option<&'static mut T> {
    let cpu = unsafe { aya_ebpf::helpers::generated::bpf_get_smp_processor_id() };
    map.get_ptr_mut(cpu).map(|p| unsafe { &mut *p })
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// Syscall number at entry; the exit program checks it matches its own.
    pub nr: u32,
    pub _pad: u32,
    pub args: [u64; 4],
    /// Credentials at entry (privilege-changing calls and execve).
    pub old: CredIds,
}

#[inline(always)]
pub fn count(kind: u16, outcome: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter::index(kind, outcome)) {
        // Per-CPU slot: no other CPU touches it, and programs do not preempt each other on a CPU.
        unsafe { *slot += 1 };
    }
}

/// Ring buffer flags for a record: wake the daemon only as the backlog crosses
/// `Policy::wakeup_bytes`. Below it the daemon's drain timer collects; far above it the daemon
/// has been woken already, and waking it again for every record (an irq_work each) would make a
/// slow or stopped daemon slow down every monitored process.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    /// Width of the crossing band: more than the largest record, so a crossing is never skipped.
    const BAND: u64 = 64 * 1024;
    let threshold = POLICY.get(0).map(|p| p.wakeup_bytes).unwrap_or(0) as u64;
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    if waiting >= threshold && waiting < threshold + BAND {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}
