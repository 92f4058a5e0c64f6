//! Stats task: reads the kernel's per-CPU counters, publishes them as metrics, and turns any new
//! kernel-side loss into a loss record in the event stream itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::watch;
use vigil_common::{kind, RecordKind};

use super::{capture::loss_event, PipelineStats};
use crate::{
    event::{Event, EventType, LossEvent},
    kernel::loader::{KernelCounters, KindCounters},
};

/// The metrics label and loss-record kind of a kernel record kind (`unknown` for a number the
/// counters map holds a slot for but no kind uses).
pub fn kind_name(k: u16) -> &'static str {
    RecordKind::from_u16(k)
        .map(|r| EventType::from_record_kind(r).name())
        .unwrap_or("unknown")
}

/// How often the stage looks at the counters, and how often it asks for a signed heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub stats: Duration,
    pub checkpoint: Duration,
}

/// The counters a heartbeat carries: the pipeline's and the kernel's, summed over kinds.
fn heartbeat_counters(
    stats: &PipelineStats,
    kernel: &[(u16, KindCounters)],
) -> crate::trail::Counters {
    let mut out = stats.counters();
    for (_, c) in kernel {
        for (name, value) in c.outcomes() {
            *out.entry(format!("kernel_{name}")).or_default() += value;
        }
    }
    out
}

/// An event saying the daemon's check of itself failed.
pub fn tamper_event(check: crate::event::TamperCheck, detail: String) -> Event {
    crate::decode::daemon_event(
        Default::default(),
        crate::event::EventBody::Tamper(crate::event::TamperEvent { check, detail }),
    )
}

/// Kernel counters lower than before (each kind, each outcome).
fn went_back(before: &[(u16, KindCounters)], now: &[(u16, KindCounters)]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, b) in before {
        let Some((_, n)) = now.iter().find(|(nk, _)| nk == k) else {
            continue;
        };
        for ((name, was), (_, is)) in b.outcomes().into_iter().zip(n.outcomes()) {
            if is < was {
                out.push(format!("{} {name}: {was} then {is}", kind_name(*k)));
            }
        }
    }
    out
}

pub async fn run(
    kernel: KernelCounters,
    tx: super::batch::Sender,
    tamper: super::batch::Sender,
    intervals: Intervals,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
) -> anyhow::Result<()> {
    // Per kind, the losses already written down: (ring buffer full, kernel table full).
    let mut seen_lost: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut ticker = tokio::time::interval(intervals.stats);
    let mut heartbeat = tokio::time::interval(intervals.checkpoint);
    heartbeat.tick().await; // the spool signed one at start
    let mut previous: Vec<(u16, KindCounters)> = Vec::new();
    let mut last_tick = std::time::Instant::now();
    // A gap this much longer than the interval means the daemon did not run meanwhile.
    let suspended_after = (intervals.stats * 5).max(Duration::from_secs(3));
    loop {
        let (last, beat) = tokio::select! {
            _ = ticker.tick() => (false, false),
            _ = heartbeat.tick() => (false, true),
            _ = shutdown.changed() => (true, false),
        };
        let gap = last_tick.elapsed();
        last_tick = std::time::Instant::now();
        if gap > suspended_after {
            let detail = format!(
                "the daemon did not run for {:.1} s (its counters are read every {} ms): stopped, \
                 frozen or starved; what the kernel could not hand it meanwhile is counted as lost",
                gap.as_secs_f64(),
                intervals.stats.as_millis()
            );
            tracing::error!("{detail}");
            // Waited for, as every other report of this loop: a full channel must not drop it.
            let event = tamper_event(crate::event::TamperCheck::Suspended, detail);
            super::batch::send_one(&tamper, event, "detect").await?;
        }
        let counters = kernel.read()?;
        let back = went_back(&previous, &counters);
        if !back.is_empty() {
            let detail = format!("kernel counters went backwards: {}", back.join("; "));
            tracing::error!("{detail}");
            // Waited for, as every other report of this loop: a full channel must not drop it.
            let event = tamper_event(crate::event::TamperCheck::CountersReset, detail);
            super::batch::send_one(&tamper, event, "detect").await?;
            // Losses are counted from the new values on.
            seen_lost.clear();
        }
        previous = counters.clone();
        if beat {
            let event = crate::decode::daemon_event(
                Default::default(),
                crate::event::EventBody::Checkpoint(crate::event::CheckpointEvent {
                    reason: crate::event::CheckpointReason::Heartbeat,
                    epoch: String::new(),
                    covers_seq: None,
                    chain: String::new(),
                    key: String::new(),
                    signature: String::new(),
                    epoch_began: None,
                    counters: heartbeat_counters(&stats, &counters),
                }),
            );
            super::batch::send_one(&tx, event, "sink").await?;
        }
        for (k, c) in &counters {
            publish(*k, c);
            let (ring_before, table_before) = seen_lost.entry(*k).or_insert((0, 0));
            let losses = [
                (c.lost, ring_before, "the kernel ring buffer was full"),
                (c.untracked, table_before, untracked_reason(*k)),
            ];
            for (now, before, reason) in losses {
                if now <= *before {
                    continue;
                }
                let count = now - *before;
                *before = now;
                tracing::warn!(kind = kind_name(*k), count, "{reason}");
                let event = loss_event(LossEvent {
                    stage: crate::event::LossStage::Kernel,
                    kind: RecordKind::from_u16(*k).map(EventType::from_record_kind),
                    count,
                    reason: reason.into(),
                });
                super::batch::send_one(&tx, event, "sink").await?;
            }
        }
        metrics::gauge!("vigil_pipeline_decoded").set(stats.decoded.get() as f64);
        metrics::gauge!("vigil_pipeline_written").set(stats.written.get() as f64);
        if last {
            for (k, c) in &counters {
                tracing::info!(
                    kind = kind_name(*k),
                    emitted = c.emitted,
                    filtered = c.filtered,
                    lost = c.lost,
                    truncated = c.truncated,
                    untracked = c.untracked,
                    "kernel counters"
                );
            }
            return Ok(());
        }
    }
}

/// Why events of kind `k` could not be followed when a kernel table was full.
fn untracked_reason(k: u16) -> &'static str {
    match k {
        kind::FILE_READ => {
            "the kernel's open-file table was full; read volumes of these opens are not counted"
        }
        kind::PRIV => {
            "the kernel's table of pending privilege changes was full; these changes are not seen"
        }
        _ => "a kernel table was full",
    }
}

fn publish(k: u16, c: &KindCounters) {
    let name = kind_name(k);
    for (outcome, value) in c.outcomes() {
        metrics::counter!("vigil_kernel_events_total", "kind" => name, "outcome" => outcome)
            .absolute(value);
    }
}
