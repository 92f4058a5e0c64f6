//! Sink stage: events as JSON Lines, to standard output and/or a file. Runs on its own thread so
//! blocking writes never stall the async stages; flushes whenever it has caught up.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::PipelineStats;
use crate::event::{Event, EventBody, EventWriter};

/// Every output of the pipeline: the spool (durable, first) and the JSON Lines outputs.
pub struct JsonLinesSink {
    spool: Option<crate::spool::SpoolThread>,
    stdout: Option<BufWriter<std::io::Stdout>>,
    file: Option<(PathBuf, BufWriter<File>)>,
    line: Vec<u8>,
    /// Writes each event's JSON, reusing its process's part from the process's last event.
    writer: EventWriter,
    /// The last heartbeat's counters: the stop checkpoint carries them (with the pipeline's
    /// own, read fresh), so that no counter seems to go backwards at the end of a run.
    last_counters: crate::trail::Counters,
    /// Webhooks that take a copy of every checkpoint (`alerts.webhooks[].checkpoints`).
    checkpoint_hooks: Option<crate::detect::webhook::Webhooks>,
}

impl JsonLinesSink {
    pub fn open(
        spool: Option<crate::spool::Spool>,
        stdout: bool,
        file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let file = match file {
            Some(path) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open output file {}: {e}", path.display())
                    })?;
                Some((path.to_path_buf(), BufWriter::with_capacity(256 * 1024, f)))
            }
            None => None,
        };
        let spool = spool.map(crate::spool::SpoolThread::start).transpose()?;
        Ok(JsonLinesSink {
            spool,
            stdout: stdout.then(|| BufWriter::with_capacity(256 * 1024, std::io::stdout())),
            file,
            line: Vec::with_capacity(4096),
            writer: EventWriter::new(),
            last_counters: Default::default(),
            checkpoint_hooks: None,
        })
    }

    /// Sends a copy of every checkpoint (the start one first) to these webhooks.
    pub fn with_checkpoint_hooks(mut self, hooks: crate::detect::webhook::Webhooks) -> Self {
        if let Some(start) = self
            .spool
            .as_ref()
            .and_then(|s| s.opened().start_checkpoint.clone())
        {
            hooks.offer_checkpoint(&start);
        }
        self.checkpoint_hooks = Some(hooks);
        self
    }

    pub fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        // A heartbeat is signed by the spool, which alone knows the chain it vouches for.
        if let (EventBody::Checkpoint(c), Some(spool)) = (&event.body, &mut self.spool) {
            let sealed = spool.checkpoint(c.reason, c.counters.clone())?;
            self.last_counters = c.counters.clone();
            if let (Some(hooks), Some(sealed)) = (&self.checkpoint_hooks, &sealed) {
                hooks.offer_checkpoint(sealed);
            }
            return Ok(());
        }
        self.line.clear();
        let process = self.writer.write(&mut self.line, event)?;
        if let Some(spool) = &mut self.spool {
            spool.append_json(&self.line, Some(process))?;
        }
        self.line.push(b'\n');
        if let Some(out) = &mut self.stdout {
            out.write_all(&self.line)?;
        }
        if let Some((path, out)) = &mut self.file {
            out.write_all(&self.line)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(spool) = &mut self.spool {
            spool.flush()?;
        }
        if let Some(out) = &mut self.stdout {
            out.flush()?;
        }
        if let Some((path, out)) = &mut self.file {
            out.flush()
                .map_err(|e| anyhow::anyhow!("flushing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Blocking loop: runs until every sender is gone, then flushes.
pub fn run(
    mut rx: super::batch::Receiver,
    mut sink: JsonLinesSink,
    stats: Arc<PipelineStats>,
) -> anyhow::Result<()> {
    while let Some(events) = rx.blocking_recv() {
        write_all(&mut sink, &events, &stats)?;
        // Drain what is already queued before paying for a flush.
        while let Ok(events) = rx.try_recv() {
            write_all(&mut sink, &events, &stats)?;
        }
        sink.flush()?;
    }
    sink.flush()?;
    if let Some(spool) = sink.spool.take() {
        let mut counters = std::mem::take(&mut sink.last_counters);
        counters.extend(stats.counters());
        let closed = spool.close(counters)?;
        let c = closed.counters;
        tracing::info!(
            appended = c.appended,
            dropped = c.dropped,
            bytes = c.bytes,
            "spool counters"
        );
        if let (Some(stop), Some(hooks)) = (&closed.stop, &sink.checkpoint_hooks) {
            hooks.offer_checkpoint(stop);
        }
    }
    Ok(())
}

fn write_all(
    sink: &mut JsonLinesSink,
    events: &[Event],
    stats: &PipelineStats,
) -> anyhow::Result<()> {
    for event in events {
        sink.write(event)?;
        stats.written.inc();
        metrics::counter!("vigil_events_written_total", "type" => event.body.type_name())
            .increment(1);
    }
    Ok(())
}
