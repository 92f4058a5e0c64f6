//! Enrich stage: joins read volumes to the path of their open, and flushes the read volume of
//! files a process still held when it exited.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use vigil_common::OpenFileKey;

use super::PipelineStats;
use crate::{
    event::{Event, EventBody, FileReadEvent, RawBytes, ReadVolumeReason},
    kernel::KernelMonitor,
};

/// How often processes that vanished without an exit event (lost) are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct OpenFile {
    open_mono_ns: u64,
    path: RawBytes,
}

/// Files the kernel is counting reads for, as known from open events.
#[derive(Default)]
pub struct Enricher {
    open: HashMap<OpenFileKey, OpenFile>,
}

impl Enricher {
    /// Handles one event; appends it, and any events it causes, to `out` in order.
    pub fn process(
        &mut self,
        mut event: Event,
        kernel: Option<&Mutex<KernelMonitor>>,
        out: &mut Vec<Event>,
    ) {
        let tgid = event.process.pid;
        match &mut event.body {
            EventBody::Open(open) if open.result.ok() => {
                let key = OpenFileKey {
                    tgid,
                    fd: open.result.ret as u32,
                };
                self.open.insert(
                    key,
                    OpenFile {
                        open_mono_ns: event.mono_ns,
                        path: open.path.clone(),
                    },
                );
            }
            EventBody::FileRead(read) => {
                let key = OpenFileKey { tgid, fd: read.fd };
                if let Some(file) = self.open.get(&key) {
                    if file.open_mono_ns == read.open_mono_ns {
                        read.path = Some(file.path.clone());
                        self.open.remove(&key);
                    }
                }
            }
            EventBody::Exit(_) => {
                if let Some(kernel) = kernel {
                    self.flush_process(tgid, &event, ReadVolumeReason::Exit, kernel, out);
                }
            }
            _ => {}
        }
        out.push(event);
    }

    /// Reports and forgets the read volume of every file `tgid` still has open.
    fn flush_process(
        &mut self,
        tgid: u32,
        at: &Event,
        reason: ReadVolumeReason,
        kernel: &Mutex<KernelMonitor>,
        out: &mut Vec<Event>,
    ) {
        let keys: Vec<OpenFileKey> = self
            .open
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect();
        let Ok(mut kernel) = kernel.lock() else {
            return;
        };
        for key in keys {
            let Some(file) = self.open.remove(&key) else {
                continue;
            };
            if let Some(stats) = kernel.take_open_file(key) {
                // Never read (as the kernel reports at close), or a later open of the same fd
                // whose event has not arrived yet.
                if stats.reads == 0 || stats.open_ktime_ns != file.open_mono_ns {
                    continue;
                }
                let mut flushed = at.clone();
                flushed.body = EventBody::FileRead(FileReadEvent {
                    fd: key.fd,
                    path: Some(file.path),
                    bytes: stats.bytes,
                    reads: stats.reads,
                    open_mono_ns: stats.open_ktime_ns,
                    reason,
                });
                out.push(flushed);
            }
        }
    }

    /// Flushes files of processes that no longer exist (their exit event was lost or filtered).
    fn sweep(&mut self, kernel: &Mutex<KernelMonitor>, out: &mut Vec<Event>) {
        let mut gone: Vec<u32> = self
            .open
            .keys()
            .map(|k| k.tgid)
            .filter(|tgid| !std::path::Path::new(&format!("/proc/{tgid}")).exists())
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for tgid in gone {
            let at = process_marker(tgid);
            self.flush_process(tgid, &at, ReadVolumeReason::Exit, kernel, out);
        }
    }

    /// At shutdown: every volume still counted goes out, so nothing read is unreported.
    pub fn flush_all(&mut self, kernel: &Mutex<KernelMonitor>, out: &mut Vec<Event>) {
        let mut tgids: Vec<u32> = self.open.keys().map(|k| k.tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        for tgid in tgids {
            let at = process_marker(tgid);
            self.flush_process(tgid, &at, ReadVolumeReason::Shutdown, kernel, out);
        }
    }
}

pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    kernel: Arc<Mutex<KernelMonitor>>,
    stats: Arc<PipelineStats>,
) -> anyhow::Result<()> {
    let mut enricher = Enricher::default();
    let mut out = Vec::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.tick().await;
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                enricher.process(event, Some(&kernel), &mut out);
            }
            _ = sweep.tick() => enricher.sweep(&kernel, &mut out),
        }
        for event in out.drain(..) {
            stats.enriched.inc();
            if tx.send(event).await.is_err() {
                anyhow::bail!("the sink stage stopped");
            }
        }
    }
    enricher.flush_all(&kernel, &mut out);
    for event in out.drain(..) {
        if tx.send(event).await.is_err() {
            anyhow::bail!("the sink stage stopped");
        }
    }
    Ok(())
}

/// A stand-in event for a process known only by its id (flushes without an exit event).
fn process_marker(tgid: u32) -> Event {
    let process = crate::event::Process {
        pid: tgid,
        tid: tgid,
        ..Default::default()
    };
    crate::decode::daemon_event(
        process,
        EventBody::Fork(crate::event::ForkEvent { child_pid: 0 }),
    )
}
