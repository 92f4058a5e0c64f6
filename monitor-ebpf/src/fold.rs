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
//! Never folded: writes, opens of the files the daemon watches ([`FOLD_NEVER`]: the sensitive
//! paths, kept fresh by the daemon), opens a response acted on, and any open when the process's
//! fold table has no room (it is then sent: costs, never loss). Threads of one process share
//! the counts; their increments are atomic, the first/last times are not.

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use vigil_common::{fold, kind, FileId, FileReadStats, FoldCount, FoldFileKey, FoldedRecord};

use crate::{
    emit::emit,
    kernel::{current_tgid, Ptr},
    maps::{RepeatSlot, FOLDS, FOLD_NEVER, FOLD_ROUTINE, FOLD_SLOTS, FOLD_ZERO},
};

/// [`decide`]'s answer: send the open.
pub const SEND: u64 = 0;
/// [`decide`]'s answer: counted as a routine open. Any other answer is a repeat, counted in the
/// slot of the open sent at that `ktime_ns` (never 0 or 1).
pub const ROUTINE: u64 = 1;

const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_PATH: u32 = 0o10000000;

/// Decides for a successful open of a file (identity `id`) with `flags`, at `now`: counted, or
/// sent. An open that is sent and may repeat takes a slot now (what the slot counted before is
/// sent first), with `now` as its origin: the caller gives the open record that time. Not
/// inlined, and one scalar out: the open program's path walk after it is verified once, not
/// once per way this went.
#[inline(never)]
pub fn decide(task: Ptr, id: &FileId, flags: u32, window_ms: u32, now: u64) -> u64 {
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
            return ROUTINE;
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
                return slot.origin_ktime_ns;
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
        send_slot(task, slot);
        slot.file = *id;
        slot.origin_ktime_ns = now;
        slot.count = FoldCount::default();
    }
    SEND
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
    let count = if stats.fold == fold::ROUTINE {
        &mut state.routine
    } else {
        let mut found = None;
        for slot in state.slots.iter_mut() {
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
    if state.routine.opens != 0 {
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
