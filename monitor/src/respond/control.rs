//! The control socket: how `vigil respond` asks the running daemon for a response.
//!
//! A unix stream socket, owner-only in an owner-only directory; one JSON line each way per
//! connection. Who asks is what the kernel says of the peer (`SO_PEERCRED`), never what the
//! request claims: that uid and pid go into the trail as the requester, and a peer that is not
//! root is refused whatever the file's mode.

use std::{path::Path, sync::mpsc::TrySendError, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{oneshot, watch},
};

use super::{act::Job, Request, Target};
use crate::event::{Requester, ResponseAction, ResponseEvent};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a peer may take to send its request.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// How long a request may wait for the executor before the answer is "still queued".
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What `vigil respond` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlRequest {
    pub action: ResponseAction,
    pub target: Target,
    #[serde(default)]
    pub reason: String,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    Response(ResponseEvent),
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the daemon at {path}: {source} (is `vigil run` running here, with this respond.control_socket?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon at {path}: {source}")]
    Exchange {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's answer is not understood: {0}")]
    Answer(String),
}

/// Binds the socket (replacing a stale one), owner-only.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bind_err = |source| ControlError::Bind {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::durable::private_dir(dir).map_err(bind_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(bind_err)?,
        Ok(_) => {
            return Err(bind_err(std::io::Error::other(
                "exists and is not a socket: not replaced",
            )))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves requests until `stop`, handing each to the executor's queue.
pub async fn serve(
    listener: UnixListener,
    jobs: std::sync::mpsc::SyncSender<Job>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut names = crate::identity::UserNames::new(None);
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => {
                // Gone with the daemon: `vigil respond` then says no daemon listens.
                if let Some(path) = listener.local_addr().ok().and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf)) {
                    let _ = std::fs::remove_file(path);
                }
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket: {e}");
                    continue;
                }
            },
        };
        let (uid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.pid().unwrap_or(0) as u32),
            Err(e) => {
                tracing::warn!("control socket: no peer credentials: {e}");
                continue;
            }
        };
        let who = format!(
            "uid {uid} ({}) pid {pid}",
            names.name(uid).unwrap_or_else(|| "?".into())
        );
        let jobs = jobs.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, uid, who, jobs).await {
                tracing::warn!("control socket: {e}");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    uid: u32,
    who: String,
    jobs: std::sync::mpsc::SyncSender<Job>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    // A peer that connects and never finishes its line would otherwise hold a sender of the
    // executor's queue, and with it the daemon's shutdown.
    match tokio::time::timeout(REQUEST_WITHIN, reader.read_until(b'\n', &mut line)).await {
        Ok(read) => {
            read?;
        }
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within 10 s",
            ))
        }
    }
    let reply = if uid != 0 {
        ControlReply::Refused(format!(
            "{who} is not root: only root may ask for responses"
        ))
    } else {
        match serde_json::from_slice::<ControlRequest>(&line) {
            Err(e) => ControlReply::Refused(format!("not a request: {e}")),
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                let job = Job {
                    request: Request {
                        action: req.action,
                        target: req.target,
                        requester: Requester::Operator,
                        requested_by: who,
                        reason: req.reason,
                    },
                    reply: Some(tx),
                };
                // Dropped at once: the executor ends when every sender is gone.
                let sent = jobs.try_send(job);
                drop(jobs);
                match sent {
                    Err(TrySendError::Full(_)) => {
                        ControlReply::Refused("the respond queue is full; try again".into())
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        ControlReply::Refused("the daemon is stopping".into())
                    }
                    Ok(()) => match tokio::time::timeout(ANSWER_WITHIN, rx).await {
                        Ok(Ok(r)) => ControlReply::Response(r),
                        Ok(Err(_)) => ControlReply::Refused("the daemon is stopping".into()),
                        Err(_) => ControlReply::Refused(
                            "no answer within 30 s; the request is still queued and will be in the trail".into(),
                        ),
                    },
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends one request and waits for the answer (the `vigil respond` side).
pub fn ask(path: &Path, request: &ControlRequest) -> Result<ControlReply, ControlError> {
    use std::io::{BufRead, Read, Write};
    let name = path.display().to_string();
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: name.clone(),
            source,
        })?;
    let exchange = |source| ControlError::Exchange {
        path: name.clone(),
        source,
    };
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Answer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(exchange)?;
    stream
        .set_read_timeout(Some(ANSWER_WITHIN + Duration::from_secs(5)))
        .map_err(exchange)?;
    let mut answer = Vec::new();
    std::io::BufReader::new(stream)
        .take(1 << 20)
        .read_until(b'\n', &mut answer)
        .map_err(exchange)?;
    serde_json::from_slice(&answer).map_err(|e| ControlError::Answer(e.to_string()))
}
