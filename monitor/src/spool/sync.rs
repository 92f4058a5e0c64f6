//! fsync off the writing thread.
//!
//! An `fdatasync` of a second's worth of spool (up to a few hundred MB in a storm) blocks for
//! tens to hundreds of milliseconds; done inline it was a third of the writer's wall time, and
//! every event behind it waited. The writer hands the file (shared, so a rotated segment stays
//! open until its data is on disk) and the sequence the sync covers to one thread of its own,
//! and learns the outcome later: a sequence counts as durable only once its sync has returned,
//! in order, so the promise ("records before N survive a power loss") is the same as before.

use std::{
    fs::File,
    sync::{
        mpsc::{self, Receiver, SyncSender, TryRecvError},
        Arc,
    },
    thread::JoinHandle,
};

/// Syncs queued and not yet done before `submit` waits (backpressure on the writer; one per
/// rotation plus the timer's, so only a disk far slower than the writer reaches it).
const QUEUE: usize = 4;

struct SyncJob {
    file: Arc<File>,
    /// Every record before this sequence was written to `file` (or to an earlier segment
    /// queued before it) when the job was queued.
    upto: u64,
    /// Test hook: report an I/O error instead of syncing.
    fail: bool,
}

/// The outcome of one sync, in the order they were queued.
#[derive(Debug)]
pub(super) struct SyncDone {
    pub upto: u64,
    pub result: std::io::Result<()>,
}

fn run(job: SyncJob) -> SyncDone {
    let result = if job.fail {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    } else {
        job.file.sync_data()
    };
    SyncDone {
        upto: job.upto,
        result,
    }
}

pub(super) struct Syncer {
    jobs: Option<SyncSender<SyncJob>>,
    done: Option<Receiver<SyncDone>>,
    thread: Option<JoinHandle<()>>,
    /// Outcomes of syncs run inline (no thread could be started, or it has gone).
    inline: Vec<SyncDone>,
    in_flight: usize,
}

impl Syncer {
    pub fn start() -> Syncer {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<SyncJob>(QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("vigil-fsync".into())
            .spawn(move || {
                for job in jobs_rx {
                    if done_tx.send(run(job)).is_err() {
                        return;
                    }
                }
            });
        let thread = spawned
            .inspect_err(|e| tracing::warn!(error = %e, "no fsync thread: the spool syncs inline"))
            .ok();
        Syncer {
            jobs: thread.is_some().then_some(jobs_tx),
            done: thread.is_some().then_some(done_rx),
            thread,
            inline: Vec::new(),
            in_flight: 0,
        }
    }

    /// Syncs queued whose outcome has not been collected yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight + self.inline.len()
    }

    /// Queues a sync of `file` covering records before `upto` (waits while `QUEUE` are queued).
    pub fn submit(&mut self, file: Arc<File>, upto: u64, fail: bool) {
        let job = SyncJob { file, upto, fail };
        let job = match &self.jobs {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    return;
                }
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // The thread is gone: sync here, in order after what it finished.
        self.jobs = None;
        let finished = self.wait_all();
        self.inline.extend(finished);
        self.inline.push(run(job));
    }

    /// Outcomes ready now, oldest first.
    pub fn poll(&mut self) -> Vec<SyncDone> {
        self.collect(false)
    }

    /// Waits for every queued sync, oldest first.
    pub fn wait_all(&mut self) -> Vec<SyncDone> {
        self.collect(true)
    }

    fn collect(&mut self, wait: bool) -> Vec<SyncDone> {
        let mut out = std::mem::take(&mut self.inline);
        while self.in_flight > 0 {
            let Some(rx) = &self.done else { break };
            let next = if wait {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match next {
                Ok(d) => {
                    self.in_flight -= 1;
                    out.push(d);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    out.push(self.lost_thread());
                    break;
                }
            }
        }
        out
    }

    /// The thread ended with syncs outstanding (it panicked): their outcome is unknown, which
    /// the writer must treat as a failed sync, not as success (the outcome returned, in order
    /// after those that came back).
    fn lost_thread(&mut self) -> SyncDone {
        tracing::error!(
            outstanding = self.in_flight,
            "the fsync thread ended; the spool syncs inline"
        );
        self.jobs = None;
        self.done = None;
        self.in_flight = 0;
        SyncDone {
            upto: u64::MAX,
            result: Err(std::io::Error::other("the fsync thread ended")),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and end.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
