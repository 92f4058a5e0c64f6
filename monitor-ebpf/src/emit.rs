//! Sending records: fixed-size ones reserved in the ring buffer, and the used prefix of those built in scratch space.

use vigil_common::{counter, EventHeader};

use crate::{
    kernel::{fill_header, Ptr},
    maps::{count, wakeup_flags, EVENTS},
};

/// Reserves a `T` in the ring buffer, fills its header (every record starts with an
/// `EventHeader`), lets `fill` write every other field, and submits it. A full ring buffer is
/// counted as a lost `kind` event.
#[inline(always)]
pub fn emit<T: 'static>(kind: u16, task: Ptr, fill: impl FnOnce(*mut T)) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(kind, counter::LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    fill_header(
        rec as *mut EventHeader,
        kind,
        core::mem::size_of::<T>() as u32,
        task,
    );
    fill(rec);
    entry.submit(wakeup_flags());
    count(kind, counter::EMITTED);
}

/// [`emit`] of only the first `N` bytes of a `T`, its fixed part (a record whose tail this one
/// leaves empty): `fill` must write no field past them.
#[inline(always)]
pub fn emit_fixed<T: 'static, const N: usize>(kind: u16, task: Ptr, fill: impl FnOnce(*mut T)) {
    const { assert!(N <= core::mem::size_of::<T>()) };
    let Some(mut entry) = EVENTS.reserve::<[u8; N]>(0) else {
        count(kind, counter::LOST);
        return;
    };
    let rec = entry.as_mut_ptr() as *mut T;
    fill_header(rec as *mut EventHeader, kind, N as u32, task);
    fill(rec);
    entry.submit(wakeup_flags());
    count(kind, counter::EMITTED);
}

/// Sends the first `size` bytes of a record built in scratch space (`size` already bounded by
/// the caller's mask) and counts it as emitted or lost.
#[inline(always)]
pub fn send_prefix<T>(rec: &T, size: usize, kind: u16) {
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const T as *const u8, size) };
    match EVENTS.output::<[u8]>(bytes, wakeup_flags()) {
        Ok(()) => count(kind, counter::EMITTED),
        Err(_) => count(kind, counter::LOST),
    }
}
