//! The spool's writer on a thread of its own.
//!
//! Appending a record is chain hashing (SHA-256 over the payload, its process part hashed once
//! per process), a checksum, framing and writing: about as much work as serializing the event in the first place. The sink serializes
//! on its thread and hands the bytes over in batches; this thread appends them in order, so the
//! two halves overlap on two cores instead of adding up on one. Sequence numbers and the chain
//! are unchanged (one writer, records in the order handed over); a checkpoint waits for every
//! record handed over before it, so it vouches for exactly what the caller wrote.

use std::{
    ops::Range,
    sync::mpsc::{self, Receiver, Sender, SyncSender},
    thread::JoinHandle,
};

use super::{Opened, Spool, SpoolCounters, SpoolError};
use crate::{
    event::{CheckpointReason, Event},
    trail::Counters,
};

/// Records per batch handed to the thread (one channel operation each, not one per record).
const BATCH_RECORDS: usize = 256;
/// Batches waiting for the thread before the caller waits (backpressure: a slow disk stalls
/// the sink, which the pipeline's bounded channels and loss counts take up, never memory).
const QUEUE: usize = 8;

/// Serialized records, back to back.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Each record's process part, within the record, when the caller knew it.
    processes: Vec<Option<Range<usize>>>,
}

impl Batch {
    fn records(&self) -> impl Iterator<Item = (&[u8], Option<Range<usize>>)> {
        let mut start = 0;
        self.ends
            .iter()
            .zip(&self.processes)
            .map(move |(&end, process)| {
                let r = &self.bytes[start..end];
                start = end;
                (r, process.clone())
            })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.processes.clear();
    }
}

enum Job {
    Append(Batch),
    Flush,
    Checkpoint(CheckpointReason, Counters),
    Close(Counters),
}

enum Reply {
    Checkpoint(Option<Event>),
    Closed {
        stop: Option<Event>,
        counters: SpoolCounters,
    },
}

/// What closing the spool wrote and counted.
pub struct Closed {
    /// The signed stop checkpoint, as written.
    pub stop: Option<Event>,
    /// The spool's counters just before it closed.
    pub counters: SpoolCounters,
}

/// The calling side: the sink's handle on a spool written by its own thread.
pub struct SpoolThread {
    jobs: Option<SyncSender<Job>>,
    replies: Receiver<Reply>,
    /// Emptied batches coming back, reused (no allocation per batch).
    empties: Receiver<Batch>,
    batch: Batch,
    opened: Opened,
    thread: Option<JoinHandle<Result<(), SpoolError>>>,
}

fn serve(
    mut spool: Spool,
    jobs: Receiver<Job>,
    replies: Sender<Reply>,
    empties: Sender<Batch>,
) -> Result<(), SpoolError> {
    for job in jobs {
        match job {
            Job::Append(mut batch) => {
                for (record, process) in batch.records() {
                    spool.append_event_json(record, process)?;
                }
                batch.clear();
                let _ = empties.send(batch);
            }
            Job::Flush => spool.flush()?,
            Job::Checkpoint(reason, counters) => {
                let sealed = spool.checkpoint(reason, counters)?;
                let _ = replies.send(Reply::Checkpoint(sealed));
            }
            Job::Close(counters) => {
                let before = spool.counters();
                let stop = spool.close(counters)?;
                let _ = replies.send(Reply::Closed {
                    stop,
                    counters: before,
                });
                return Ok(());
            }
        }
    }
    // The handle went away without closing: the spool's Drop writes and syncs what it holds.
    Ok(())
}

impl SpoolThread {
    pub fn start(spool: Spool) -> Result<SpoolThread, SpoolError> {
        let opened = spool.opened().clone();
        let dir = spool.cfg.dir.clone();
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(QUEUE);
        let (replies_tx, replies_rx) = mpsc::channel();
        let (empties_tx, empties_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vigil-spool".into())
            .spawn(move || serve(spool, jobs_rx, replies_tx, empties_tx))
            .map_err(|source| SpoolError::Io { path: dir, source })?;
        Ok(SpoolThread {
            jobs: Some(jobs_tx),
            replies: replies_rx,
            empties: empties_rx,
            batch: Batch::default(),
            opened,
            thread: Some(thread),
        })
    }

    /// What opening the spool found.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Hands one serialized event to the writer (in a batch; written by the next `flush` at
    /// the latest). `process`: where its process part is, when known (see
    /// `Spool::append_event_json`).
    pub fn append_json(
        &mut self,
        payload: &[u8],
        process: Option<Range<usize>>,
    ) -> Result<(), SpoolError> {
        self.batch.bytes.extend_from_slice(payload);
        self.batch.ends.push(self.batch.bytes.len());
        self.batch.processes.push(process);
        if self.batch.ends.len() >= BATCH_RECORDS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<(), SpoolError> {
        if self.batch.ends.is_empty() {
            return Ok(());
        }
        let next = self.empties.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        self.send(Job::Append(full))
    }

    fn send(&mut self, job: Job) -> Result<(), SpoolError> {
        let sent = match &self.jobs {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// Why the thread ended early (its error, or that it panicked).
    fn failure(&mut self) -> SpoolError {
        self.jobs = None;
        let ended = self.thread.take().map(|t| t.join());
        match ended {
            Some(Ok(Err(e))) => e,
            _ => SpoolError::WriterEnded,
        }
    }

    fn reply(&mut self) -> Result<Reply, SpoolError> {
        match self.replies.recv() {
            Ok(r) => Ok(r),
            Err(_) => Err(self.failure()),
        }
    }

    /// Hands over what is batched and asks the writer to write (and, on its timer, sync).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.send_batch()?;
        self.send(Job::Flush)
    }

    /// Signs a checkpoint after every record handed over so far.
    pub fn checkpoint(
        &mut self,
        reason: CheckpointReason,
        counters: Counters,
    ) -> Result<Option<Event>, SpoolError> {
        self.send_batch()?;
        self.send(Job::Checkpoint(reason, counters))?;
        match self.reply()? {
            Reply::Checkpoint(sealed) => Ok(sealed),
            Reply::Closed { .. } => Err(SpoolError::WriterEnded),
        }
    }

    /// Writes everything handed over, the stop checkpoint, syncs, and ends the thread.
    pub fn close(mut self, counters: Counters) -> Result<Closed, SpoolError> {
        self.send_batch()?;
        self.send(Job::Close(counters))?;
        let closed = match self.reply()? {
            Reply::Closed { stop, counters } => Closed { stop, counters },
            Reply::Checkpoint(_) => return Err(SpoolError::WriterEnded),
        };
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(SpoolError::WriterEnded),
                Ok(Ok(())) => {}
            }
        }
        Ok(closed)
    }
}

impl Drop for SpoolThread {
    fn drop(&mut self) {
        // Not closed (an error elsewhere): what is batched still goes to the disk.
        let _ = self.send_batch();
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
