//! `vigil respond`: asks the daemon on this host for a response, over its control socket. The
//! daemon carries it out (or, in dry-run mode, says what it would do), writes it into the trail
//! with who asked, and answers; the command prints the answer and exits 0 only when the response
//! was carried out or dry-run.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vigil::{
    event::{Origin, ResponseAction, ResponseOutcome},
    respond::{
        control::{ask, ControlReply, ControlRequest},
        ExeTarget, Target,
    },
};

use super::{load_config, CliError, CliResult, SessionRef};

#[derive(Args)]
pub struct RespondArgs {
    #[command(subcommand)]
    command: RespondCommand,
    /// Why (written into the trail with the response).
    #[arg(long, global = true, default_value = "")]
    reason: String,
    /// Configuration file whose respond.control_socket to use.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The daemon's control socket (overrides the configuration).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum RespondCommand {
    /// SIGKILL one process.
    KillProcess { pid: u32 },
    /// SIGKILL every process of a session (also those that left it), and any it forks.
    KillSession(SessionRef),
    /// Stop every process of a session until `release` or `kill-session`.
    Hold(SessionRef),
    /// Continue a held session.
    Release(SessionRef),
    /// Refuse a session's outbound connections (EPERM).
    DenyConnect(SessionRef),
    /// Allow a session's connections again.
    AllowConnect(SessionRef),
    /// Kill a program at exec, before its first instruction: the file at a path (whatever
    /// name reaches it), or any file with this content.
    DenyExec(ExeArgs),
    /// Lift a deny-exec.
    AllowExec(ExeArgs),
    /// Lock an account's password, expire it and kill its sessions.
    Lock { user: String },
    /// Unlock an account and remove its expiry.
    Unlock { user: String },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ExeArgs {
    /// The program's path.
    #[arg(long)]
    path: Option<PathBuf>,
    /// SHA-256 of the program's content (64 hex digits).
    #[arg(long)]
    sha256: Option<String>,
}

impl ExeArgs {
    fn target(&self) -> Result<Target, CliError> {
        if let Some(h) = &self.sha256 {
            if !vigil::respond::is_sha256(h) {
                return Err(CliError::bad("--sha256", "64 hex digits"));
            }
        }
        if let Some(p) = &self.path {
            if !p.is_absolute() {
                return Err(CliError::bad("--path", "give an absolute path"));
            }
        }
        Ok(Target::Exe(ExeTarget {
            path: self.path.clone(),
            sha256: self.sha256.as_ref().map(|h| h.to_ascii_lowercase()),
            ..Default::default()
        }))
    }
}

/// A session of this host and boot: a selector naming another host or boot is refused here,
/// since only this host's daemon can act, and only on processes of this boot.
fn live_session(s: &SessionRef) -> Result<Target, CliError> {
    let sel = s.selector()?;
    let origin = Origin::this_process();
    if let Some(host) = &sel.host {
        if **host != *origin.host {
            return Err(CliError::bad(
                "session",
                format!(
                    "`{}` is on host {}; this is {}: run vigil respond there",
                    vigil::present::terminal_str(&s.id),
                    vigil::present::terminal_str(host),
                    origin.host
                ),
            ));
        }
    }
    if let Some(boot) = &sel.boot {
        if !origin.boot_id.starts_with(boot.as_str()) {
            return Err(CliError::bad(
                "session",
                format!(
                    "`{}` is of boot {}, not this boot ({}): its processes are gone",
                    vigil::present::terminal_str(&s.id),
                    vigil::present::terminal_str(boot),
                    vigil::event::short_boot(&origin.boot_id)
                ),
            ));
        }
    }
    Ok(Target::Session(sel.session))
}

pub fn respond(a: RespondArgs) -> CliResult {
    use RespondCommand as C;
    use ResponseAction as A;
    let (action, target) = match &a.command {
        C::KillProcess { pid } => (A::KillProcess, Target::Process(*pid)),
        C::KillSession(s) => (A::KillSession, live_session(s)?),
        C::Hold(s) => (A::HoldSession, live_session(s)?),
        C::Release(s) => (A::ReleaseSession, live_session(s)?),
        C::DenyConnect(s) => (A::DenyConnect, live_session(s)?),
        C::AllowConnect(s) => (A::AllowConnect, live_session(s)?),
        C::DenyExec(e) => (A::DenyExec, e.target()?),
        C::AllowExec(e) => (A::AllowExec, e.target()?),
        C::Lock { user } => (A::LockAccount, Target::Account(user.clone())),
        C::Unlock { user } => (A::UnlockAccount, Target::Account(user.clone())),
    };
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => load_config(a.config.as_deref())?.respond.control_socket,
    };
    let reply = ask(
        &socket,
        &ControlRequest {
            action,
            target,
            reason: a.reason.clone(),
        },
    )
    .map_err(|e| CliError::Respond(e.to_string()))?;
    if a.json {
        super::print_json(&reply)?;
    }
    match reply {
        ControlReply::Refused(why) => Err(CliError::Respond(format!(
            "the daemon refused: {}",
            vigil::present::terminal_str(&why)
        ))),
        ControlReply::Response(r) => {
            if !a.json {
                println!(
                    "{} {}: {} — {}",
                    r.action,
                    vigil::present::terminal_str(&r.target),
                    r.outcome,
                    vigil::present::terminal_str(&r.detail)
                );
            }
            match r.outcome {
                ResponseOutcome::Done | ResponseOutcome::DryRun => Ok(()),
                other => Err(CliError::Respond(format!("not carried out: {other}"))),
            }
        }
    }
}
