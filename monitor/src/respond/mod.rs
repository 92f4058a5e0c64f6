//! Responses: stopping an insider in the act — kill a process or a session, hold a session,
//! deny a program or the network, lock an account — from a rule's `actions:`, from a session's
//! risk reaching `respond.on_risk.threshold`, or by hand (`vigil respond`, over the daemon's
//! control socket).
//!
//! Safety comes before effect, in this order, for every request: the target must exist; a
//! protected account (`respond.protected_accounts`, every uid below `min_lockable_uid` for
//! locks) or program (`respond.protected_programs`, init, the daemon) is never touched; an
//! automatic request beyond `max_actions_per_minute` is refused; in `dry_run` mode nothing is
//! changed and the response says what would have been. Every request ends as a `response` event
//! in the trail (and at the webhooks), whatever its outcome.
//!
//! The work runs on a thread of its own ([`act::Executor`]) behind a bounded queue that the
//! pipeline only ever `try_send`s to: a slow `usermod` never holds capture back, and a full queue
//! is a `dropped` response, written down.

pub mod act;
pub mod control;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::event::{Requester, RespondMode, ResponseAction};

/// `respond:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    pub mode: RespondMode,
    /// Accounts no response touches (break-glass accounts), by name.
    pub protected_accounts: Vec<String>,
    /// Programs no response touches, by path (resolved to the file: a copy elsewhere is not
    /// protected). init and the daemon itself always are.
    pub protected_programs: Vec<PathBuf>,
    /// Accounts below this uid (system accounts) are never locked.
    pub min_lockable_uid: u32,
    /// Automatic responses (rules, thresholds) carried out per minute at most; manual ones are
    /// not limited.
    pub max_actions_per_minute: u32,
    /// Responses when a session's risk reaches a threshold (once per session).
    pub on_risk: RiskTrigger,
    /// Programs denied from the start, by path or by SHA-256 of their content.
    pub deny_exec: DenyExecConfig,
    /// Where `vigil respond` reaches the daemon (owner-only).
    pub control_socket: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskTrigger {
    /// null: no threshold.
    pub threshold: Option<u32>,
    pub actions: Vec<ResponseAction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyExecConfig {
    pub paths: Vec<PathBuf>,
    pub sha256: Vec<String>,
}

impl RespondConfig {
    /// What is wrong with it, by key.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(t) = self.on_risk.threshold {
            if !(1..=100).contains(&t) {
                out.push((
                    "respond.on_risk.threshold".into(),
                    format!("{t} must be between 1 and 100 (session risk is 0-100)"),
                ));
            }
            if self.on_risk.actions.is_empty() {
                out.push((
                    "respond.on_risk.actions".into(),
                    "a threshold needs at least one action".into(),
                ));
            }
        }
        if let Some(a) = self.on_risk.actions.iter().find(|a| !a.restricts()) {
            out.push((
                "respond.on_risk.actions".into(),
                format!("`{a}` lifts a response; a threshold may only restrict"),
            ));
        }
        if self.max_actions_per_minute == 0 {
            out.push((
                "respond.max_actions_per_minute".into(),
                "must be at least 1".into(),
            ));
        }
        for h in &self.deny_exec.sha256 {
            if !is_sha256(h) {
                out.push((
                    "respond.deny_exec.sha256".into(),
                    format!("`{}` is not 64 hex digits", h.escape_debug()),
                ));
            }
        }
        for p in &self.deny_exec.paths {
            if !p.is_absolute() {
                out.push((
                    "respond.deny_exec.paths".into(),
                    format!("`{}` is not an absolute path", p.display()),
                ));
            }
        }
        if !self.control_socket.is_absolute() {
            out.push((
                "respond.control_socket".into(),
                format!(
                    "`{}` is not an absolute path",
                    self.control_socket.display()
                ),
            ));
        }
        out
    }
}

/// The executor's saved state (what is in force), beside the spool directory: not in it, where
/// a wiped spool would take it along.
pub fn state_path(spool_dir: &std::path::Path) -> PathBuf {
    spool_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join("respond-state.json")
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a response acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Process(u32),
    /// An audit session id of this boot.
    Session(u32),
    /// An account by name or uid.
    Account(String),
    /// A program: the file at a path, the file the kernel reported (dev, ino), or a content hash.
    Exe(ExeTarget),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The kernel's identity of the file (from an exec event): `major:minor` and inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<(String, u64)>,
    /// A process running it, killed as the program is denied (a copy found by its hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_pid: Option<u32>,
}

/// One response asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub action: ResponseAction,
    pub target: Target,
    pub requester: Requester,
    pub requested_by: String,
    #[serde(default)]
    pub reason: String,
}

impl Request {
    /// Whether the rate limit applies (rules and thresholds; not people or the configuration).
    pub fn automatic(&self) -> bool {
        matches!(self.requester, Requester::Rule | Requester::Risk)
    }

    /// The action and target kind agree (`kill_session` takes a session, …).
    pub fn check_shape(&self) -> Result<(), ShapeError> {
        use ResponseAction as A;
        let ok = matches!(
            (&self.target, self.action),
            (Target::Process(_), A::KillProcess)
                | (
                    Target::Session(_),
                    A::KillSession
                        | A::HoldSession
                        | A::ReleaseSession
                        | A::DenyConnect
                        | A::AllowConnect,
                )
                | (Target::Account(_), A::LockAccount | A::UnlockAccount)
                | (Target::Exe(_), A::DenyExec | A::AllowExec)
        );
        if ok {
            Ok(())
        } else {
            Err(ShapeError {
                action: self.action,
                target: match self.target {
                    Target::Process(_) => "a process",
                    Target::Session(_) => "a session",
                    Target::Account(_) => "an account",
                    Target::Exe(_) => "a program",
                },
            })
        }
    }
}

/// A request whose action does not take its kind of target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} does not act on {target}")]
pub struct ShapeError {
    pub action: ResponseAction,
    pub target: &'static str,
}
