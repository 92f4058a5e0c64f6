//! How an event reads to a person: one line, the same in `vigil session`, replay markers,
//! alert evidence, warnings and the `summary` column of ClickHouse.

use std::fmt::{self, Write as _};

use super::{Event, EventBody, FoldKind, RawBytes};

fn bytes_text(b: &RawBytes) -> String {
    crate::present::terminal_text(b.as_bytes())
}

impl fmt::Display for Event {
    /// One line describing the event for people. Recorded bytes are escaped: the line goes to
    /// terminals, and what a process wrote or named must not drive them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fields the daemon copied from elsewhere (user and host names, SSH fields, titles,
        // a stored alert's evidence) are recorded data too: the whole line is made safe.
        f.write_str(&crate::present::terminal_str(&line(self)))
    }
}

fn line(e: &Event) -> String {
    match &e.body {
        EventBody::Exec(x) => {
            let argv: Vec<String> = x.argv.iter().map(bytes_text).collect();
            let mut line = format!("exec   {}", argv.join(" "));
            if x.argv_truncated {
                line.push_str(" …[argv truncated]");
            }
            if let Some(cwd) = &x.cwd {
                let _ = write!(line, "   (cwd {})", bytes_text(cwd));
            }
            line
        }
        EventBody::Exit(x) => match (x.exit_code, x.signal) {
            (Some(c), _) => format!("exit   code {c}"),
            (_, Some(s)) => format!(
                "exit   signal {s}{}",
                if x.core_dumped { " (core)" } else { "" }
            ),
            _ => "exit".into(),
        },
        EventBody::Fork(f) => format!("fork   child {}", f.child_pid),
        EventBody::RawSocket(r) => format!(
            "socket {} {} protocol {}{}",
            r.family_number
                .map(|n| format!("family {n}"))
                .unwrap_or_else(|| r.family.to_string()),
            r.socket_type_number
                .map(|n| format!("type {n}"))
                .unwrap_or_else(|| r.socket_type.to_string()),
            r.protocol,
            failed(&r.result)
        ),
        EventBody::Link(l) if l.operation == super::LinkOp::Unlink => format!(
            "unlink {}{}",
            bytes_text(&l.path),
            failed(&l.result)
        ),
        EventBody::Link(l) => format!(
            "{:<6} {} -> {}{}{}",
            l.operation.as_str(),
            bytes_text(&l.source),
            bytes_text(&l.path),
            if l.path != l.requested_path && !l.requested_path.0.is_empty() {
                format!(" (as {})", bytes_text(&l.requested_path))
            } else {
                String::new()
            },
            failed(&l.result)
        ),
        EventBody::ProcessAccess(a) => format!(
            "{} pid {}{}{}",
            a.operation,
            a.target_pid,
            match (a.target_in_session, a.target_session) {
                (true, _) => " (this session)".to_string(),
                (false, Some(other)) => format!(" (session {other})"),
                (false, None) if a.result.ok() => " (outside every session)".to_string(),
                (false, None) => String::new(),
            },
            failed(&a.result)
        ),
        EventBody::Bpf(b) => format!(
            "bpf    {}{}{}",
            if b.command == super::BpfCommand::Other {
                format!("command {}", b.command_number)
            } else {
                b.command.to_string()
            },
            match (b.object, b.object_id) {
                (Some(o), Some(id)) => format!(" {o} id {id}"),
                _ => String::new(),
            },
            failed(&b.result)
        ),
        EventBody::CompatSyscall(c) => format!(
            "abi32  32-bit syscall {} ({}){}",
            c.syscall.as_deref().unwrap_or("unknown"),
            c.nr,
            failed(&c.result)
        ),
        EventBody::IoUring(u) => format!(
            "uring  ring of {} entries set up{}",
            u.entries,
            failed(&u.result)
        ),
        EventBody::Open(o) => format!(
            "open   {} ({}){}",
            bytes_text(&o.path),
            o.access,
            failed(&o.result)
        ),
        EventBody::FileRead(r) => format!(
            "read   {} bytes from {} ({} reads)",
            r.bytes,
            r.path
                .as_ref()
                .map(bytes_text)
                .unwrap_or_else(|| format!("fd {}", r.fd)),
            r.reads
        ),
        EventBody::OpensFolded(f) => {
            let what = match (f.fold, &f.path) {
                (FoldKind::Repeat, Some(path)) => format!("{} more opens of {}", f.opens, bytes_text(path)),
                (FoldKind::Repeat, None) => format!("{} more opens of one file", f.opens),
                (FoldKind::Routine, _) => format!("{} routine opens (loader, locale)", f.opens),
            };
            format!("folded {what}, {} bytes in {} reads", f.bytes, f.reads)
        }
        EventBody::Connect(c) => format!(
            "conn   {} {}{}{}{}{}{}",
            c.family,
            c.address.as_ref().map(bytes_text).unwrap_or_default(),
            c.requested_address
                .as_ref()
                .filter(|r| Some(*r) != c.address.as_ref())
                .map(|r| format!(" (asked as {})", bytes_text(r)))
                .unwrap_or_default(),
            c.port.map(|p| format!(" port {p}")).unwrap_or_default(),
            if c.opened_by_send {
                " (opened by a send: TCP Fast Open)"
            } else if c.datagram {
                " (UDP datagram, no connect)"
            } else {
                ""
            },
            if c.address_rewritten {
                " (ADDRESS BUFFER REWRITTEN during the call)"
            } else {
                ""
            },
            failed(&c.result)
        ),
        EventBody::Priv(p) => format!(
            "priv   {} uid {}→{} euid {}→{}{}{}",
            p.op,
            p.old.uid,
            p.new.uid,
            p.old.euid,
            p.new.euid,
            if p.gained_root { " GAINED ROOT" } else { "" },
            failed(&p.result)
        ),
        EventBody::Loss(l) => format!("LOSS   {} events at {}: {}", l.count, l.stage, l.reason),
        EventBody::Tamper(t) => format!("TAMPER {}: {}", t.check, t.detail),
        EventBody::Response(r) => format!(
            "RESPOND {} {} ({} {}): {} — {}",
            r.action, r.target, r.requester, r.requested_by, r.outcome, r.detail
        ),
        EventBody::Checkpoint(c) => format!(
            "CHECK  {} of epoch {} through {}{}",
            c.reason,
            c.epoch.get(..8).unwrap_or(&c.epoch),
            c.covers_seq
                .map(|s| format!("record {s}"))
                .unwrap_or_else(|| "its start".into()),
            c.epoch_began
                .as_deref()
                .map(|w| format!(" (new epoch: {w})"))
                .unwrap_or_default()
        ),
        EventBody::SessionStart(s) => format!(
            "START  session {} of {} via {}{}{}",
            s.session,
            s.login_user.clone().unwrap_or_else(|| s.loginuid.to_string()),
            s.entry,
            s.ssh
                .as_ref()
                .map(|o| format!(" from {}:{}", o.source_address, o.source_port))
                .unwrap_or_default(),
            if s.root_when_seen {
                " (already root when first seen)"
            } else {
                ""
            }
        ),
        EventBody::Alert(a) => format!(
            "ALERT  [{}] {} ({}, {}): {} — session risk {}",
            a.severity, a.title, a.rule, a.technique, a.evidence, a.session_risk
        ),
        EventBody::TtyOutput(t) | EventBody::TtyInput(t) => format!(
            "{}  {} bytes on {}{}",
            if matches!(e.body, EventBody::TtyOutput(_)) {
                "tty>  "
            } else {
                "tty<  "
            },
            t.total_bytes,
            t.tty,
            if t.over_budget {
                " (session budget spent: not kept)"
            } else if t.truncated {
                " (cut)"
            } else {
                ""
            }
        ),
        EventBody::SessionEnd(s) => format!(
            "END    session {} after {} ms: {} commands, {} files, {} bytes read, {} connections, {} privilege changes",
            s.session,
            s.duration_ms,
            s.counts.commands,
            s.counts.files_opened,
            s.counts.bytes_read,
            s.counts.connections,
            s.counts.privilege_changes
        ),
    }
}

/// " failed: <error>" for a call that failed, nothing for one that succeeded.
fn failed(result: &super::SyscallResult) -> String {
    result
        .error
        .as_deref()
        .map(|e| format!(" failed: {e}"))
        .unwrap_or_default()
}
