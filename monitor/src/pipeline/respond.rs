//! The respond stage: between detect and the sinks. Every event goes on unchanged; an alert
//! whose rule asks for actions, a session whose risk reaches `respond.on_risk.threshold`, and an
//! exec of denied content become requests for the executor (`respond::act`), which runs on a
//! thread of its own. The stage only ever `try_send`s to it: a full queue is a `dropped`
//! response in the trail, never a wait.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{mpsc::TrySendError, Arc},
};

use std::os::unix::ffi::OsStrExt;

use tokio::sync::watch;

use super::batch;
use crate::{
    event::{Event, EventBody, Process, Requester, ResponseAction, ResponseEvent, ResponseOutcome},
    respond::{
        act::{denied_content, Job},
        ExeTarget, Request, RiskTrigger, Target,
    },
};

/// Processes whose loaded file the stage remembers at most.
const MAX_LOADED: usize = 65536;

pub struct Triggers {
    pub on_risk: RiskTrigger,
    /// Denied content hashes, as the executor publishes them.
    pub denied_hashes: watch::Receiver<Arc<BTreeSet<String>>>,
}

pub async fn run(
    mut rx: batch::Receiver,
    tx: batch::Sender,
    jobs: std::sync::mpsc::SyncSender<Job>,
    mut triggers: Triggers,
) -> anyhow::Result<()> {
    // Sessions whose threshold responses were asked for already (once per session).
    let mut crossed: HashSet<u32> = HashSet::new();
    // The file each process's last exec loaded (device, inode), for `deny_exec` of an alert on
    // a later event of it. Bounded: forgotten at exit, and all at once if it ever fills.
    let mut loaded: HashMap<u32, (String, u64)> = HashMap::new();
    let mut requests = Vec::new();
    while let Some(events) = rx.recv().await {
        let mut refusals: Vec<(usize, Event)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match &event.body {
                EventBody::Alert(a) => {
                    let file = loaded.get(&event.process.pid);
                    for &action in &a.actions {
                        requests.push(request_for(
                            event,
                            file,
                            action,
                            Requester::Rule,
                            format!("rule {}", a.rule),
                            a.title.clone(),
                        ));
                    }
                    if let (Some(threshold), Some(sid)) =
                        (triggers.on_risk.threshold, event.process.sessionid)
                    {
                        if a.session_risk >= threshold && crossed.insert(sid) {
                            for &action in &triggers.on_risk.actions {
                                requests.push(request_for(
                                    event,
                                    file,
                                    action,
                                    Requester::Risk,
                                    format!(
                                    "session risk {} reached respond.on_risk.threshold {threshold}",
                                    a.session_risk
                                ),
                                    a.reasons.join("; "),
                                ));
                            }
                        }
                    }
                }
                EventBody::Exec(x) => {
                    if let Some(exe) = &x.exe {
                        if loaded.len() >= MAX_LOADED {
                            loaded.clear();
                        }
                        loaded.insert(event.process.pid, (exe.file.dev.clone(), exe.file.ino));
                    }
                    let denied = triggers.denied_hashes.borrow_and_update().clone();
                    if !denied.is_empty() {
                        requests.extend(denied_content(event, &denied).map(Ok));
                    }
                }
                EventBody::Exit(_) => {
                    loaded.remove(&event.process.pid);
                }
                EventBody::SessionEnd(_) => {
                    if let Some(sid) = event.process.sessionid {
                        crossed.remove(&sid);
                    }
                }
                _ => {}
            }
            // Handed to the executor before the batch goes on: a response never waits on the sink.
            for request in requests.drain(..) {
                let refused = match request {
                    Err(refused) => Some(*refused),
                    Ok(request) => match jobs.try_send(Job {
                        request,
                        reply: None,
                    }) {
                        Ok(()) => None,
                        Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                            metrics::counter!("vigil_responses_total", "action" => job.request.action.as_str(), "outcome" => "dropped").increment(1);
                            Some(refusal(
                                &job.request,
                                Process::default(),
                                ResponseOutcome::Dropped,
                                "the respond queue was full: not carried out".into(),
                            ))
                        }
                    },
                };
                refusals.extend(refused.map(|r| (i, r)));
            }
        }
        let mut out = batch::with_inserted(events, refusals);
        batch::send_all(&tx, &mut out, "sink").await?;
    }
    Ok(())
}

/// The request `action` makes of the event an alert fired on, or its refusal when the event
/// has nothing the action could act on (a session action outside every session).
fn request_for(
    alert: &Event,
    loaded: Option<&(String, u64)>,
    action: ResponseAction,
    requester: Requester,
    requested_by: String,
    reason: String,
) -> Result<Request, Box<Event>> {
    use ResponseAction as A;
    let p = &alert.process;
    let target = match action {
        A::KillProcess => Some(Target::Process(p.pid)),
        A::KillSession | A::HoldSession | A::DenyConnect => p.sessionid.map(Target::Session),
        A::LockAccount => p.loginuid.map(|u| Target::Account(u.to_string())),
        // The file the kernel loaded, when the alert is on the exec itself; else the program's
        // canonical path as enrich found it.
        A::DenyExec => match loaded {
            Some((dev, ino)) => Some(Target::Exe(ExeTarget {
                file: Some((dev.clone(), *ino)),
                running_pid: Some(p.pid),
                ..Default::default()
            })),
            None => p.exe.as_ref().map(|exe| {
                Target::Exe(ExeTarget {
                    path: Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
                        exe.path.as_bytes(),
                    ))),
                    running_pid: Some(p.pid),
                    ..Default::default()
                })
            }),
        },
        _ => None,
    };
    let request = Request {
        action,
        target: target.clone().unwrap_or(Target::Process(p.pid)),
        requester,
        requested_by,
        reason,
    };
    match target {
        Some(_) => Ok(request),
        None => Err(Box::new(refusal(
            &request,
            p.clone(),
            ResponseOutcome::NotFound,
            format!("the event has no {action} target (outside every login session, or no program known)"),
        ))),
    }
}

fn refusal(request: &Request, process: Process, outcome: ResponseOutcome, detail: String) -> Event {
    crate::decode::daemon_event(
        process,
        EventBody::Response(ResponseEvent {
            action_id: format!("refused-{}", crate::decode::Clock::mono_now_ns()),
            action: request.action,
            target: format!("{:?}", request.target),
            requester: request.requester,
            requested_by: request.requested_by.clone(),
            reason: request.reason.clone(),
            outcome,
            detail,
            processes: 0,
            mechanism: None,
        }),
    )
}
