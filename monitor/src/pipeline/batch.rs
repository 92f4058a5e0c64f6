//! What one stage hands the next: a batch of events, in order.
//!
//! A channel of single events costs, per event, a send and a receive (atomics, a semaphore
//! permit, a possible wake-up of the other thread) and two moves of the event (about 1 KiB)
//! through the channel's own slots; under a storm that was a fifth of the daemon's CPU. A batch
//! moves as one pointer-sized `Vec`, so those costs are paid once per batch. A stage forwards
//! what it made of one batch as soon as it is done with it: batching adds no wait.

use tokio::sync::mpsc;

use crate::event::Event;

/// Events in order, as handed between stages (at most [`MAX`] each).
pub type Batch = Vec<Event>;

/// The most events a batch carries: bounds what one hand-over holds and how long the next
/// stage works before it can answer a stop.
pub const MAX: usize = 256;

/// The sending half of a stage's input.
pub type Sender = mpsc::Sender<Batch>;
/// The receiving half of a stage's input.
pub type Receiver = mpsc::Receiver<Batch>;

/// The next stage is gone: it stopped (or failed) before this one.
#[derive(Debug, thiserror::Error)]
#[error("the {0} stage stopped")]
pub struct Closed(pub &'static str);

/// A channel holding at most about `events` events (`pipeline.channel_capacity`): that many
/// divided into full batches, and never fewer than four batches, so that a stage can fill one
/// while the next works on another.
pub fn channel(events: usize) -> (Sender, Receiver) {
    mpsc::channel((events / MAX).max(4))
}

/// Sends everything in `events` (leaving it empty), in batches of at most [`MAX`], waiting
/// while the next stage is full: backpressure, never loss.
pub async fn send_all(tx: &Sender, events: &mut Batch, next: &'static str) -> Result<(), Closed> {
    if events.is_empty() {
        return Ok(());
    }
    if events.len() <= MAX {
        let batch = std::mem::replace(events, Vec::with_capacity(MAX));
        return tx.send(batch).await.map_err(|_| Closed(next));
    }
    // Each event moved once, into its chunk.
    let mut rest = events.drain(..);
    loop {
        let chunk: Batch = rest.by_ref().take(MAX).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        tx.send(chunk).await.map_err(|_| Closed(next))?;
    }
}

/// `events` with each of `extra` placed right after the event at its index (indices rising, as
/// a stage finds them), e.g. the alerts an event raised. Nothing moves when `extra` is empty,
/// which is nearly always: a stage forwards the batch it received as it is.
pub fn with_inserted(events: Batch, extra: Vec<(usize, Event)>) -> Batch {
    if extra.is_empty() {
        return events;
    }
    let mut out = Vec::with_capacity(events.len() + extra.len());
    let mut extra = extra.into_iter().peekable();
    for (i, event) in events.into_iter().enumerate() {
        out.push(event);
        while let Some((_, e)) = extra.next_if(|(at, _)| *at <= i) {
            out.push(e);
        }
    }
    out.extend(extra.map(|(_, e)| e));
    out
}

/// One event on its own (the daemon's own reports: checkpoints, losses, responses).
pub async fn send_one(tx: &Sender, event: Event, next: &'static str) -> Result<(), Closed> {
    tx.send(vec![event]).await.map_err(|_| Closed(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> Batch {
        (0..n)
            .map(|i| {
                let mut e = crate::decode::daemon_event(
                    Default::default(),
                    crate::event::EventBody::Loss(crate::event::LossEvent {
                        stage: crate::event::LossStage::Decode,
                        kind: None,
                        count: 1,
                        reason: String::new(),
                    }),
                );
                e.mono_ns = i as u64;
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn every_event_arrives_in_order_in_batches_no_larger_than_max() {
        let (tx, mut rx) = channel(64 * 1024);
        for n in [0, 1, MAX, MAX + 1, 3 * MAX + 7] {
            let mut out = events(n);
            send_all(&tx, &mut out, "next").await.unwrap();
            assert!(out.is_empty());
            let mut got = Vec::new();
            while got.len() < n {
                let batch = rx.recv().await.unwrap();
                assert!(!batch.is_empty() && batch.len() <= MAX);
                got.extend(batch);
            }
            assert!(rx.try_recv().is_err(), "nothing more than was sent");
            let order: Vec<u64> = got.iter().map(|e| e.mono_ns).collect();
            assert_eq!(order, (0..n as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn inserted_events_follow_the_event_they_belong_to() {
        let batch = events(4);
        let mut extra = events(3);
        for (e, n) in extra.iter_mut().zip([100, 101, 300]) {
            e.mono_ns = n;
        }
        let extra: Vec<(usize, Event)> = [1, 1, 3].into_iter().zip(extra).collect();
        let order: Vec<u64> = with_inserted(batch, extra)
            .iter()
            .map(|e| e.mono_ns)
            .collect();
        assert_eq!(order, [0, 1, 100, 101, 2, 3, 300]);
        assert_eq!(with_inserted(events(2), Vec::new()).len(), 2);
    }

    #[tokio::test]
    async fn a_stopped_stage_is_an_error_naming_it() {
        let (tx, rx) = channel(1);
        drop(rx);
        let err = send_all(&tx, &mut events(3), "sink").await.unwrap_err();
        assert_eq!(err.to_string(), "the sink stage stopped");
    }
}
