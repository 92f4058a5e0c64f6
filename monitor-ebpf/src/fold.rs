//! Folding: read-only opens counted in the kernel instead of sent one record each.
//!
//! Half of a session's opens are the dynamic loader and locale files (`sudo true` alone opens
//! forty), and a loop over one file sends one record per turn; each record costs the path walk,
//! the ring buffer, the daemon, the spool and a ClickHouse row. Two folds, both per process in
//! [`FOLDS`], both sent as [`FoldedRecord`]s so nothing is dropped, only counted:
//!
//! - **routine**: files the daemon registered at start ([`FOLD_ROUTINE`], by device and inode,
//!   with the change time they had then). Identity, not names: a file renamed or hard-linked
//!   into a routine directory, written, or replaced has another inode or change time, and is
//!   sent as any open. Sent once per exec (before the new program's record) and at exit.
//! - **repeat**: a read-only open of a file this process opened, and had sent, less than the
//!   window ago is counted in that open's slot ([`FOLD_SLOTS`] files per process); the slot is
//!   sent when its window ends and another open of the file is sent, when another file needs
//!   the slot, at exec and at exit. The first open always goes out, so rules and the timeline
//!   see the file; the record says how many more times it was opened and read.
//!
//! A folded open's reads go into its fold too. While the process has fewer than [`HELD_FDS`]
//! folded fds open, the fd is held in its fold entry ([`HeldFd`]) and its reads counted there,
//! so a folded open, its reads and its close cost lookups only: no `OPEN_FILES` entry is
//! inserted and deleted. Beyond that, the fd is followed in `OPEN_FILES` as any open.
//!
//! Never folded: writes, opens of the files the daemon watches ([`FOLD_NEVER`]: the sensitive
//! paths, kept fresh by the daemon), opens a response acted on, and any open when the process's
//! fold table has no room (it is then sent: costs, never loss). Threads of one process share
//! the counts; their increments are atomic, the first/last times are not.

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use vigil_common::{fold, kind, FileId, FileReadStats, FoldCount, FoldFileKey, FoldedRecord};

use crate::{
    emit::emit,
    kernel::{current_task, current_tgid, fd_file, Ptr},
    maps::{
        FoldState, HeldFd, RepeatSlot, FOLDS, FOLD_NEVER, FOLD_ROUTINE, FOLD_SLOTS, FOLD_ZERO,
        HELD_FDS,
    },
    open::report_read_volume,
};

/// [`decide`]'s answer: send the open.
pub const SEND: u64 = 0;
/// [`decide`]'s answer: counted as a routine open. Any other answer is a repeat, counted in the
/// slot of the open sent at that `ktime_ns` (never 0 or 1), with [`HELD`] maybe set.
pub const ROUTINE: u64 = 1;
/// Set in [`decide`]'s answer when the folded open's fd is held in the fold entry (its reads
/// are counted there; see [`HeldFd`]). Clear: the caller follows the fd in `OPEN_FILES`.
pub const HELD: u64 = 1 << 63;
/// The fd [`decide`] is given when the open's reads are not followed: nothing is held.
pub const NO_FD: u32 = u32::MAX;

const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_PATH: u32 = 0o10000000;

/// Decides for a successful open of `file` (identity `id`) with `flags` (the low half of
/// `flags_fd`; the fd it returned in the high half, or [`NO_FD`]), at `now`: counted, or sent.
/// An open that is sent and may repeat takes a slot now (what the slot counted before is sent
/// first), with `now` as its origin: the caller gives the open record that time. A counted
/// open's fd is held when there is room ([`HELD`]). Not inlined, and one scalar out: the open
/// program's path walk after it is verified once, not once per way this went (and a BPF call
/// takes five arguments, hence the pair).
#[inline(never)]
pub fn decide(file: Ptr, id: &FileId, flags_fd: u64, window_ms: u32, now: u64) -> u64 {
    let flags = flags_fd as u32;
    let fd = (flags_fd >> 32) as u32;
    if flags & (O_ACCMODE | O_CREAT | O_TRUNC | O_PATH) != 0 {
        return SEND;
    }
    let key = FoldFileKey {
        ino: id.ino,
        dev: id.dev,
        _pad: 0,
    };
    if unsafe { FOLD_NEVER.get(key) }.is_some() {
        return SEND;
    }
    let tgid = current_tgid();
    let state = match FOLDS.get_ptr_mut(tgid) {
        Some(s) => s,
        None => {
            let Some(zero) = FOLD_ZERO.get(0) else {
                return SEND;
            };
            if FOLDS.insert(tgid, zero, 0).is_err() {
                return SEND;
            }
            match FOLDS.get_ptr_mut(tgid) {
                Some(s) => s,
                None => return SEND,
            }
        }
    };
    let state = unsafe { &mut *state };
    if let Some(registered) = unsafe { FOLD_ROUTINE.get(key) } {
        if registered.ctime_sec == id.ctime_sec && registered.ctime_nsec == nsec(id.ctime_nsec) {
            add_open(&mut state.routine, now);
            return ROUTINE | hold(state, fd, file, fold::ROUTINE, 0);
        }
    }
    let window = window_ms as u64 * 1_000_000;
    // The slot of this file, or the one to take: a free one, else the oldest.
    let mut take = 0usize;
    let mut oldest = u64::MAX;
    for i in 0..FOLD_SLOTS {
        let slot = &mut state.slots[i];
        if slot.origin_ktime_ns != 0 && same_file(&slot.file, id) {
            if now.wrapping_sub(slot.origin_ktime_ns) < window {
                add_open(&mut slot.count, now);
                let origin = slot.origin_ktime_ns;
                return origin | hold(state, fd, file, fold::REPEAT, origin);
            }
            // The window is over: this open is sent and starts the next one.
            take = i;
            break;
        }
        if slot.origin_ktime_ns < oldest {
            oldest = slot.origin_ktime_ns;
            take = i;
        }
    }
    if let Some(slot) = state.slots.get_mut(take) {
        send_slot(current_task(), slot);
        slot.file = *id;
        slot.origin_ktime_ns = now;
        slot.count = FoldCount::default();
    }
    SEND
}

/// Holds `fd` (opened as `file`, folded as `how` into the slot of `origin`) in the fold entry;
/// [`HELD`], or 0 when there is no fd to hold or no room. An entry still there for the same fd
/// (closed without `close(2)`: `close_range`, a ring's close) is let go first.
#[inline(always)]
fn hold(state: &mut FoldState, fd: u32, file: Ptr, how: u32, origin: u64) -> u64 {
    if fd == NO_FD {
        return 0;
    }
    let stale = held_at(state, fd);
    if let Some(i) = stale {
        let_go(state, i);
    }
    let free = stale.or_else(|| (0..HELD_FDS).find(|&i| state.held[i].fd_plus_one == 0));
    let Some(held) = free.and_then(|i| state.held.get_mut(i)) else {
        return 0;
    };
    *held = HeldFd {
        fd_plus_one: fd.wrapping_add(1),
        _pad: 0,
        file: file as u64,
        stats: FileReadStats {
            bytes: 0,
            reads: 0,
            open_ktime_ns: origin,
            fold: how,
            _pad: 0,
        },
    };
    HELD
}

/// A read of `bytes` from `fd`, when the fd is held in the current process's fold entry.
#[inline(always)]
pub fn count_read(fd: u32, bytes: u64) -> bool {
    let Some(state) = FOLDS.get_ptr_mut(current_tgid()) else {
        return false;
    };
    let state = unsafe { &mut *state };
    let Some(held) = held_at(state, fd).and_then(|i| state.held.get_mut(i)) else {
        return false;
    };
    // Threads of one process may read the same fd at once.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut held.stats.bytes, bytes);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut held.stats.reads, 1);
    }
    true
}

/// `fd` is closed (or replaced): if the current process's fold entry holds it, its reads go into
/// their fold and the entry is free.
#[inline(always)]
pub fn release_fd(fd: u32) {
    let Some(state) = FOLDS.get_ptr_mut(current_tgid()) else {
        return;
    };
    let state = unsafe { &mut *state };
    if let Some(i) = held_at(state, fd) {
        let_go(state, i);
    }
}

/// The index of `fd` among the fold entry's held fds.
#[inline(always)]
fn held_at(state: &FoldState, fd: u32) -> Option<usize> {
    let number = fd.wrapping_add(1);
    (0..HELD_FDS).find(|&i| state.held[i].fd_plus_one == number)
}

/// Frees held entry `i`: what was read through it goes into its fold, or, when that fold is no
/// longer counting (sent at an exec since), out as the read volume of the open it belongs to.
/// Read in place, not copied: see `kernel::Span` for why stack counts.
#[inline(always)]
fn let_go(state: &mut FoldState, i: usize) {
    let FoldState {
        routine,
        slots,
        held,
    } = state;
    let Some(held) = held.get_mut(i) else {
        return;
    };
    if held.fd_plus_one == 0 {
        return;
    }
    if held.stats.reads != 0 && !absorb_into(routine, slots, &held.stats) {
        report_read_volume(current_task(), held.fd_plus_one - 1, &held.stats);
    }
    held.fd_plus_one = 0;
}

/// Reads of a folded open's fd, at its close: into its fold if that is still counting, else
/// false (the caller sends them as the read volume of the open they belong to). Inlined: its
/// caller is the deepest subprogram of the open path, and its frame would come on top.
#[inline(always)]
pub fn absorb_reads(stats: &FileReadStats) -> bool {
    let Some(state) = FOLDS.get_ptr_mut(current_tgid()) else {
        return false;
    };
    let state = unsafe { &mut *state };
    absorb_into(&mut state.routine, &mut state.slots, stats)
}

/// [`absorb_reads`] into a fold entry's counts.
#[inline(always)]
fn absorb_into(
    routine: &mut FoldCount,
    slots: &mut [RepeatSlot; FOLD_SLOTS],
    stats: &FileReadStats,
) -> bool {
    let count = if stats.fold == fold::ROUTINE {
        routine
    } else {
        let mut found = None;
        for slot in slots.iter_mut() {
            if slot.origin_ktime_ns == stats.open_ktime_ns && slot.origin_ktime_ns != 0 {
                found = Some(&mut slot.count);
                break;
            }
        }
        match found {
            Some(c) => c,
            None => return false,
        }
    };
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut count.reads, stats.reads);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut count.bytes, stats.bytes);
    }
    true
}

/// Sends everything the process counted: at exec (before the new program's record; counting
/// starts again) and at exit (the entry goes).
#[inline(never)]
pub fn flush(task: Ptr, exiting: bool) {
    let tgid = current_tgid();
    let Some(state) = FOLDS.get_ptr_mut(tgid) else {
        return;
    };
    let state = unsafe { &mut *state };
    // Held fds first, so their reads count in what goes out now: at exit every one; at an exec
    // those that no longer refer to the file they were opened as (closed on exec). The others
    // stay open in the new program, still counted.
    for i in 0..HELD_FDS {
        let number = state.held[i].fd_plus_one;
        if number != 0 && (exiting || fd_file(task, number - 1) as u64 != state.held[i].file) {
            let_go(state, i);
        }
    }
    // Reads of a routine fd held across an exec count even when the new program has opened
    // no routine file yet.
    if state.routine.opens != 0 || state.routine.reads != 0 {
        send(task, fold::ROUTINE, 0, &FileId::default(), &state.routine);
        state.routine = FoldCount::default();
    }
    for slot in state.slots.iter_mut() {
        send_slot(task, slot);
        // After an exec the slots start empty: the new program's first open of a file is sent.
        *slot = RepeatSlot::default();
    }
    if exiting {
        let _ = FOLDS.remove(tgid);
    }
}

/// Sends what a slot counted, if anything, and empties its count.
#[inline(always)]
fn send_slot(task: Ptr, slot: &mut RepeatSlot) {
    if slot.count.opens == 0 {
        return;
    }
    send(
        task,
        fold::REPEAT,
        slot.origin_ktime_ns,
        &slot.file,
        &slot.count,
    );
    slot.count = FoldCount::default();
}

/// One `FoldedRecord`. Not inlined: [`flush`] sends up to five, and [`decide`] one, and each
/// inlined copy kept its own stack (see `kernel::Span` for why stack counts).
#[inline(never)]
fn send(task: Ptr, how: u32, origin_ktime_ns: u64, file: &FileId, count: &FoldCount) {
    emit::<FoldedRecord>(kind::OPENS_FOLDED, task, |rec| unsafe {
        (*rec).fold = how;
        (*rec)._pad = 0;
        (*rec).origin_ktime_ns = origin_ktime_ns;
        (*rec).file = *file;
        (*rec).count = *count;
    });
}

#[inline(always)]
fn add_open(count: &mut FoldCount, now: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut count.opens, 1) };
    if count.first_ktime_ns == 0 {
        count.first_ktime_ns = now;
    }
    count.last_ktime_ns = now;
}

#[inline(always)]
fn same_file(a: &FileId, b: &FileId) -> bool {
    a.ino == b.ino
        && a.dev == b.dev
        && a.ctime_sec == b.ctime_sec
        && nsec(a.ctime_nsec) == nsec(b.ctime_nsec)
}

/// The nanoseconds of an inode's change time: since 6.13 its top bit marks a timestamp that was
/// queried (multigrain), which `stat` does not show; nanoseconds never reach bit 30.
#[inline(always)]
fn nsec(raw: u32) -> u32 {
    raw & 0x3fff_ffff
}
