//! Capture stage: drains the kernel ring buffer, decodes each record once, and sends the events
//! on. When the next stage is slow, this stage waits: the ring buffer absorbs the burst and the
//! kernel counts whatever it cannot hold as lost, so backpressure never drops silently.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{batch, PipelineStats};
use crate::{
    decode::{decode, Clock},
    event::{Event, EventBody, LossEvent},
};

/// Records taken from the ring buffer before they are handed on (bounds memory per wake-up).
const BATCH: usize = 4096;

pub async fn run(
    ring: RingBuf<MapData>,
    clock: Clock,
    poll_interval: std::time::Duration,
    tx: batch::Sender,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as the
    // RingBuf lives, and the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the kernel ring buffer: {e}"))?;
    let mut records = Records::default();
    let mut stopping = false;
    // The kernel wakes us only once enough is waiting; the tick picks up a quiet stream.
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !stopping {
            tokio::select! {
                _ = tick.tick() => drain(fd.get_mut(), &clock, &mut records, &stats),
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    let ring = guard.get_inner_mut();
                    drain(ring, &clock, &mut records, &stats);
                    if records.count < BATCH {
                        guard.clear_ready();
                    }
                }
                _ = shutdown.changed() => {
                    stopping = true;
                }
            }
        }
        if stopping {
            // Final drain: everything already in the ring buffer goes out.
            loop {
                drain(fd.get_mut(), &clock, &mut records, &stats);
                if records.count == 0 {
                    return Ok(());
                }
                records.send(&tx).await?;
            }
        }
        records.send(&tx).await?;
    }
}

/// Decoded events waiting to go on, already cut into batches as they are decoded (each event
/// is written once, into the batch it travels in).
#[derive(Default)]
struct Records {
    full: Vec<batch::Batch>,
    current: batch::Batch,
    count: usize,
}

impl Records {
    fn push(&mut self, event: Event) {
        if self.current.len() == batch::MAX {
            self.full.push(std::mem::take(&mut self.current));
        }
        if self.current.capacity() == 0 {
            self.current.reserve_exact(batch::MAX);
        }
        self.current.push(event);
        self.count += 1;
    }

    async fn send(&mut self, tx: &batch::Sender) -> Result<(), batch::Closed> {
        self.full.push(std::mem::take(&mut self.current));
        self.count = 0;
        for mut events in self.full.drain(..) {
            batch::send_all(tx, &mut events, "enrich").await?;
        }
        Ok(())
    }
}

/// Decodes what the ring buffer holds into `records`, up to [`BATCH`]; a record that does not
/// decode becomes a loss event in its place (counted and written down, never skipped).
fn drain(ring: &mut RingBuf<MapData>, clock: &Clock, records: &mut Records, stats: &PipelineStats) {
    while records.count < BATCH {
        let Some(item) = ring.next() else {
            break;
        };
        let event = match decode(&item, clock) {
            Ok(event) => {
                stats.decoded.inc();
                event
            }
            Err(e) => {
                stats.decode_errors.inc();
                tracing::warn!(error = %e, "kernel record rejected");
                metrics::counter!("vigil_decode_errors_total", "reason" => e.label()).increment(1);
                loss_event(LossEvent {
                    stage: crate::event::LossStage::Decode,
                    kind: None,
                    count: 1,
                    reason: e.to_string(),
                })
            }
        };
        records.push(event);
    }
}

/// A daemon-made event reporting loss, stamped now.
pub fn loss_event(loss: LossEvent) -> Event {
    crate::decode::daemon_event(Default::default(), EventBody::Loss(loss))
}
