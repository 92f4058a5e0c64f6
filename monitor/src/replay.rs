//! Session replay for auditors: the terminal output of a session, in time, with what it did
//! (commands, file accesses, connections, privilege changes) as markers; and its export as an
//! asciicast v2 recording.
//!
//! Recorded output is hostile input: whatever a session printed reaches the auditor's terminal
//! only through [`SafeTerminal`], which lets drawing through and drops every sequence that would
//! act on the viewer instead (clipboard writes, titles, hyperlinks, queries the terminal answers,
//! mode changes that alter its input, device control strings).

use std::{
    io::Write,
    time::{Duration, Instant},
};

use serde::Serialize;
use vte::{Params, Parser, Perform};

use crate::{
    event::{Event, EventBody, TtyEvent},
    query::SessionSummary,
};

// ---------------------------------------------------------------------------------------------
// Safe rendering

/// Filters terminal output down to drawing. Stateful: a sequence split across two writes is
/// recognised whole.
pub struct SafeTerminal {
    parser: Parser,
    sink: Filtered,
}

#[derive(Default)]
struct Filtered {
    out: Vec<u8>,
    /// What was removed, by kind, for the auditor (a session that tried to write the viewer's
    /// clipboard is itself worth a look).
    removed: std::collections::BTreeMap<&'static str, u64>,
}

impl Default for SafeTerminal {
    fn default() -> Self {
        SafeTerminal {
            parser: Parser::new(),
            sink: Filtered::default(),
        }
    }
}

impl SafeTerminal {
    /// The drawing part of `bytes`, appended to `out`.
    pub fn filter(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.parser.advance(&mut self.sink, bytes);
        out.append(&mut self.sink.out);
    }

    /// Sequences removed so far, by kind.
    pub fn removed(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.sink.removed
    }
}

/// `CSI ? Pm h/l` modes that only change how things are drawn.
const DRAWING_PRIVATE_MODES: &[u16] = &[5, 6, 7, 12, 25, 47, 1047, 1048, 1049];
/// CSI finals (no intermediates) that move the cursor, erase, scroll, insert or set attributes.
const DRAWING_CSI: &[char] = &[
    'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'f', 'd', 'e', 'a', '`', 'J', 'K', 'X', '@', 'P', 'L',
    'M', 'S', 'T', 'm', 'r', 's', 'u', 'b', 'g', 'I', 'Z',
];

impl Filtered {
    fn drop(&mut self, what: &'static str) {
        *self.removed.entry(what).or_default() += 1;
    }

    fn emit_csi(&mut self, params: &Params, intermediates: &[u8], action: char) {
        self.out.extend_from_slice(b"\x1b[");
        self.out.extend_from_slice(intermediates);
        for (i, param) in params.iter().enumerate() {
            if i > 0 {
                self.out.push(b';');
            }
            for (j, sub) in param.iter().enumerate() {
                if j > 0 {
                    self.out.push(b':');
                }
                self.out.extend_from_slice(sub.to_string().as_bytes());
            }
        }
        let mut buf = [0u8; 4];
        self.out
            .extend_from_slice(action.encode_utf8(&mut buf).as_bytes());
    }
}

impl Perform for Filtered {
    fn print(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.out
            .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            // BS, HT, LF, VT, FF, CR, SO, SI: cursor movement and character sets.
            0x08..=0x0f => self.out.push(byte),
            0x07 => self.drop("bell"),
            _ => self.drop("control character"),
        }
    }

    fn hook(&mut self, _params: &Params, _intermediates: &[u8], _ignore: bool, _action: char) {
        self.drop("device control string");
    }

    fn osc_dispatch(&mut self, params: &[&[u8]], _bell_terminated: bool) {
        let what = match params.first().copied() {
            Some(b"0" | b"1" | b"2") => "title change (OSC 0/1/2)",
            Some(b"8") => "hyperlink (OSC 8)",
            Some(b"52") => "clipboard access (OSC 52)",
            Some(b"4" | b"10" | b"11" | b"12" | b"104" | b"110" | b"111") => {
                "colour change or query (OSC 4/10/11)"
            }
            _ => "operating system command (OSC)",
        };
        self.drop(what);
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        if ignore {
            self.drop("malformed control sequence");
            return;
        }
        let allowed = match intermediates {
            [] => match action {
                'h' | 'l' => params.iter().all(|p| p == [4]),
                c => DRAWING_CSI.contains(&c),
            },
            [b'?'] if matches!(action, 'h' | 'l') => params
                .iter()
                .all(|p| p.len() == 1 && DRAWING_PRIVATE_MODES.contains(&p[0])),
            // DECSCUSR (cursor shape).
            [b' '] => action == 'q',
            _ => false,
        };
        if allowed {
            self.emit_csi(params, intermediates, action);
        } else {
            self.drop(match action {
                'n' | 'c' | 'x' => "terminal query (DSR/DA)",
                't' => "window operation",
                'h' | 'l' => "mode change acting on input (mouse, paste, keys)",
                'p' => "terminal reset or request",
                _ => "control sequence",
            });
        }
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], ignore: bool, byte: u8) {
        if ignore {
            self.drop("malformed escape sequence");
            return;
        }
        match (intermediates, byte) {
            // Save/restore cursor, index, next line, tab set, reverse index.
            ([], b'7' | b'8' | b'D' | b'E' | b'H' | b'M') => {
                self.out.extend_from_slice(&[0x1b, byte]);
            }
            // Full reset: drawn as what it does to the screen, without resetting the viewer.
            ([], b'c') => {
                self.out.extend_from_slice(b"\x1b[0m\x1b[H\x1b[2J");
                self.drop("terminal reset (RIS, drawn as a clear)");
            }
            // Character sets G0-G3.
            ([b'(' | b')' | b'*' | b'+'], b'0' | b'A' | b'B') => {
                self.out.push(0x1b);
                self.out.extend_from_slice(intermediates);
                self.out.push(byte);
            }
            ([b'#'], b'8') => self.out.extend_from_slice(b"\x1b#8"),
            _ => self.drop("escape sequence"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recordings

/// What happens at one moment of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FrameKind {
    /// Bytes the terminal received (newline translation applied), not yet made safe.
    Output {
        bytes: Vec<u8>,
    },
    /// Something the session did, for the auditor.
    Marker {
        text: String,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// Nanoseconds since the recording's first event.
    pub offset_ns: u64,
    #[serde(flatten)]
    pub kind: FrameKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    pub session: u32,
    pub host: Option<String>,
    pub user: Option<String>,
    /// Wall-clock time (ns since the epoch) of offset 0.
    pub start_ns: i64,
    pub start: String,
    /// Window size at the start, when the terminal knew it.
    pub cols: u16,
    pub rows: u16,
    pub frames: Vec<Frame>,
    /// Terminal bytes the session produced that were not recorded (cut or over budget).
    pub missing_bytes: u64,
}

/// Terminal bytes as the terminal received them: with OPOST|ONLCR the line discipline sends
/// "\r\n" for each "\n".
fn as_received(t: &TtyEvent) -> Vec<u8> {
    let data = &t.data.0;
    if !t.onlcr {
        return data.clone();
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Reads every program does as it starts (shared libraries, locales, terminfo): not worth a
/// marker each.
fn routine_read(path: &[u8]) -> bool {
    let p = String::from_utf8_lossy(path);
    p.contains(".so")
        || [
            "/usr/share/locale/",
            "/usr/lib/locale/",
            "/lib/terminfo/",
            "/usr/share/terminfo/",
        ]
        .iter()
        .any(|prefix| p.starts_with(prefix))
}

/// Whether an event becomes a marker in replay.
fn marker(e: &Event) -> Option<String> {
    let text = match &e.body {
        EventBody::Exec(_)
        | EventBody::Connect(_)
        | EventBody::Priv(_)
        | EventBody::Alert(_)
        | EventBody::Response(_) => e.to_string(),
        EventBody::FileRead(r) if !r.path.as_ref().is_some_and(|p| routine_read(&p.0)) => {
            e.to_string()
        }
        EventBody::Open(o) if o.access != crate::event::Access::Read && o.result.ok() => {
            e.to_string()
        }
        _ => return None,
    };
    let who = match (&e.body, &e.process.euser, e.process.euid) {
        // The daemon acted, not the session's process.
        (EventBody::Response(_), _, _) => "vigil".to_string(),
        (_, Some(name), _) => name.to_string(),
        (_, None, euid) => euid.to_string(),
    };
    // One line, whatever the event held.
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let clock = e.time.get(11..23).unwrap_or(&e.time);
    Some(format!("{clock} as {who}: {text}"))
}

impl Recording {
    /// The recording of a session from its events, in time order.
    pub fn from_events(summary: Option<&SessionSummary>, session: u32, events: &[Event]) -> Self {
        let start_mono = events.first().map(|e| e.mono_ns).unwrap_or(0);
        let start_ns = events.first().map(|e| e.time_ns).unwrap_or(0);
        let mut rec = Recording {
            session,
            host: summary.map(|s| s.host.clone()),
            user: summary.and_then(|s| s.user.clone()),
            start_ns,
            start: events.first().map(|e| e.time.clone()).unwrap_or_default(),
            cols: 0,
            rows: 0,
            frames: Vec::new(),
            missing_bytes: 0,
        };
        let mut size = (0u16, 0u16);
        for e in events {
            let offset_ns = e.mono_ns.saturating_sub(start_mono);
            let tty = match &e.body {
                EventBody::TtyOutput(t) => Some(t),
                // Echoed input was on the screen.
                EventBody::TtyInput(t) if t.echo => Some(t),
                _ => None,
            };
            if let Some(t) = tty {
                if t.cols != 0 && t.rows != 0 && (t.cols, t.rows) != size {
                    if size == (0, 0)
                        && rec
                            .frames
                            .iter()
                            .all(|f| !matches!(f.kind, FrameKind::Output { .. }))
                    {
                        (rec.cols, rec.rows) = (t.cols, t.rows);
                    } else {
                        rec.frames.push(Frame {
                            offset_ns,
                            kind: FrameKind::Resize {
                                cols: t.cols,
                                rows: t.rows,
                            },
                        });
                    }
                    size = (t.cols, t.rows);
                }
                let missing = t.total_bytes.saturating_sub(t.data.0.len() as u64);
                if missing > 0 {
                    rec.missing_bytes += missing;
                    rec.frames.push(Frame {
                        offset_ns,
                        kind: FrameKind::Marker {
                            text: format!(
                                "{missing} bytes of terminal {} not recorded ({})",
                                if matches!(e.body, EventBody::TtyOutput(_)) {
                                    "output"
                                } else {
                                    "input"
                                },
                                if t.over_budget {
                                    "session budget spent"
                                } else {
                                    "cut at capture.max_tty_bytes"
                                }
                            ),
                        },
                    });
                }
                if !t.data.0.is_empty() {
                    rec.frames.push(Frame {
                        offset_ns,
                        kind: FrameKind::Output {
                            bytes: as_received(t),
                        },
                    });
                }
            } else if let Some(text) = marker(e) {
                rec.frames.push(Frame {
                    offset_ns,
                    kind: FrameKind::Marker { text },
                });
            }
        }
        rec
    }

    pub fn has_output(&self) -> bool {
        self.frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::Output { .. }))
    }
}

// ---------------------------------------------------------------------------------------------
// Playing

#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// 2.0 plays twice as fast.
    pub speed: f64,
    /// Pauses longer than this (recorded time) are cut to it.
    pub max_idle: Duration,
    /// No waiting at all.
    pub instant: bool,
    pub markers: bool,
}

/// Waits before each frame: the recorded gap, idle gaps cut to `max_idle`, divided by `speed`.
pub fn schedule(frames: &[Frame], opts: &PlayOptions) -> Vec<Duration> {
    let mut last = 0u64;
    frames
        .iter()
        .map(|f| {
            let gap = Duration::from_nanos(f.offset_ns.saturating_sub(last));
            last = f.offset_ns;
            if opts.instant {
                Duration::ZERO
            } else {
                gap.min(opts.max_idle).div_f64(opts.speed)
            }
        })
        .collect()
}

/// Undoes what recorded output may have left set, so that what follows is seen as written:
/// attributes (invisible text, colours), the character set (DEC line drawing turns letters into
/// lines), insert mode, origin mode and the scroll region.
const RESET_DRAWING: &[u8] = b"\x1b[0m\x1b(B\x0f\x1b[4l\x1b[?6l\x1b[r";

/// What replay leaves the viewer's terminal as: every drawing mode recorded output may set (see
/// `DRAWING_PRIVATE_MODES`) back to its default, the main screen, the cursor shown.
pub const RESTORE_TERMINAL: &[u8] =
    b"\x1b[0m\x1b(B\x0f\x1b[4l\x1b[r\x1b[?5l\x1b[?6l\x1b[?7h\x1b[?12l\x1b[?47l\x1b[?1047l\x1b[?1049l\x1b[?25h";

/// Marker line as drawn in replay: on a line of its own, in reverse video, after a reset of
/// everything the recording may have set, so recorded output cannot hide or disguise it.
fn marker_line(text: &str) -> Vec<u8> {
    // The text is ours but holds recorded argv and paths: shown, never obeyed.
    let clean = crate::present::terminal_str(text);
    let mut line = RESET_DRAWING.to_vec();
    line.extend_from_slice(format!("\r\n\x1b[7m[vigil {clean}]\x1b[0m\r\n").as_bytes());
    line
}

/// How a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Played {
    /// Every frame was drawn.
    Whole,
    /// `stop` was set (Ctrl-C) before the end: the terminal was restored all the same.
    Interrupted,
}

/// How often a wait between frames looks at `stop`.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Plays a recording to `out`, made safe, in real time (scaled), until its end or until `stop`
/// is set; either way the viewer's terminal is restored (`RESTORE_TERMINAL`) before it returns,
/// since the recording may have left it on the alternate screen, with the cursor hidden or in
/// line-drawing characters.
pub fn play(
    rec: &Recording,
    opts: &PlayOptions,
    out: &mut impl Write,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<Played> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut safe = SafeTerminal::default();
    let waits = schedule(&rec.frames, opts);
    let started = Instant::now();
    let mut due = Duration::ZERO;
    let mut buf = Vec::new();
    for (frame, wait) in rec.frames.iter().zip(waits) {
        due += wait;
        if !wait.is_zero() {
            out.flush()?;
            while let Some(left) = due.checked_sub(started.elapsed()) {
                if stop.load(Relaxed) {
                    break;
                }
                std::thread::sleep(left.min(STOP_POLL));
            }
        }
        if stop.load(Relaxed) {
            if opts.markers {
                out.write_all(&marker_line("replay interrupted"))?;
            }
            out.write_all(RESTORE_TERMINAL)?;
            out.flush()?;
            return Ok(Played::Interrupted);
        }
        match &frame.kind {
            FrameKind::Output { bytes } => safe.filter(bytes, &mut buf),
            FrameKind::Marker { text } if opts.markers => buf.extend(marker_line(text)),
            FrameKind::Resize { cols, rows } if opts.markers => {
                buf.extend(marker_line(&format!("terminal resized to {cols}x{rows}")))
            }
            _ => {}
        }
        out.write_all(&buf)?;
        buf.clear();
    }
    if opts.markers && !safe.removed().is_empty() {
        let list: Vec<String> = safe
            .removed()
            .iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect();
        out.write_all(&marker_line(&format!(
            "removed from the recorded output: {}",
            list.join(", ")
        )))?;
    }
    out.write_all(RESTORE_TERMINAL)?;
    out.flush()?;
    Ok(Played::Whole)
}

// ---------------------------------------------------------------------------------------------
// asciicast v2

/// Writes the recording as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
/// a header line, then `[time, "o", text]` output, `[time, "m", label]` markers and
/// `[time, "r", "COLSxROWS"]` resizes. Output is made safe as for replay.
pub fn write_asciicast(rec: &Recording, out: &mut impl Write) -> std::io::Result<()> {
    let title = format!(
        "vigil session {} on {} ({})",
        rec.session,
        rec.host.as_deref().unwrap_or("?"),
        rec.user.as_deref().unwrap_or("?")
    );
    let header = serde_json::json!({
        "version": 2,
        "width": if rec.cols == 0 { 80 } else { rec.cols },
        "height": if rec.rows == 0 { 24 } else { rec.rows },
        "timestamp": rec.start_ns / 1_000_000_000,
        "title": title,
        "env": {"TERM": "xterm-256color"},
    });
    writeln!(out, "{header}")?;
    let mut safe = SafeTerminal::default();
    let mut buf = Vec::new();
    for f in &rec.frames {
        let t = f.offset_ns as f64 / 1e9;
        let line = match &f.kind {
            FrameKind::Output { bytes } => {
                safe.filter(bytes, &mut buf);
                if buf.is_empty() {
                    continue;
                }
                // SafeTerminal emits whole UTF-8 characters only.
                let text = String::from_utf8_lossy(&buf).into_owned();
                buf.clear();
                serde_json::json!([t, "o", text])
            }
            FrameKind::Marker { text } => serde_json::json!([t, "m", text]),
            FrameKind::Resize { cols, rows } => {
                serde_json::json!([t, "r", format!("{cols}x{rows}")])
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_replay_stops_in_its_wait_and_restores_the_terminal() {
        let frame = |offset_ns, bytes: &[u8]| Frame {
            offset_ns,
            kind: FrameKind::Output {
                bytes: bytes.to_vec(),
            },
        };
        let rec = Recording {
            session: 1,
            host: None,
            user: None,
            start_ns: 0,
            start: String::new(),
            cols: 80,
            rows: 24,
            // The alternate screen, no cursor, line drawing; then an hour's wait.
            frames: vec![
                frame(0, b"\x1b[?1049h\x1b[?25l\x1b(0qqq"),
                frame(3_600_000_000_000, b"never drawn"),
            ],
            missing_bytes: 0,
        };
        let opts = PlayOptions {
            speed: 1.0,
            max_idle: Duration::from_secs(3600),
            instant: false,
            markers: true,
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        let mut out = Vec::new();
        assert_eq!(
            play(&rec, &opts, &mut out, &stop).unwrap(),
            Played::Interrupted
        );
        setter.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.ends_with(RESTORE_TERMINAL));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("replay interrupted") && !text.contains("never drawn"));
    }

    fn safe(bytes: &[u8]) -> (Vec<u8>, Vec<&'static str>) {
        let mut s = SafeTerminal::default();
        let mut out = Vec::new();
        s.filter(bytes, &mut out);
        (out, s.removed().keys().copied().collect())
    }

    #[test]
    fn drawing_passes_through_unchanged() {
        let drawing = "plain text ünïcode\r\n\x1b[1;31mred\x1b[0m \x1b[2J\x1b[10;5H\x1b[0K\x1b[?25l\x1b[?1049h\x1b(0q\x1b(B\x1b7\x1b8\t\x08";
        let (out, removed) = safe(drawing.as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), drawing);
        assert!(removed.is_empty(), "{removed:?}");
    }

    #[test]
    fn sequences_acting_on_the_viewer_are_removed() {
        let hostile = concat!(
            "a\x1b]52;c;cm0gLXJmIC8K\x07", // clipboard write
            "b\x1b]0;fake title\x1b\\",    // title
            "c\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\", // hyperlink
            "d\x1b[6n",                    // cursor position report
            "e\x1b[c\x1b[>c",              // device attributes
            "f\x1b[21t",                   // report window title
            "g\x1b[?1000h\x1b[?2004h",     // mouse, bracketed paste
            "h\x1bP$q\"p\x1b\\",           // DECRQSS
            "i\x07\x1b[4i",                // bell, media copy
        );
        let (out, removed) = safe(hostile.as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), "abclinkdefghi");
        for what in [
            "clipboard access (OSC 52)",
            "title change (OSC 0/1/2)",
            "hyperlink (OSC 8)",
            "terminal query (DSR/DA)",
            "window operation",
            "mode change acting on input (mouse, paste, keys)",
            "device control string",
            "bell",
        ] {
            assert!(removed.contains(&what), "{what}: {removed:?}");
        }
    }

    #[test]
    fn a_sequence_split_across_writes_is_still_caught() {
        let mut s = SafeTerminal::default();
        let mut out = Vec::new();
        s.filter(b"x\x1b]5", &mut out);
        s.filter(b"2;c;AAAA\x07y", &mut out);
        assert_eq!(out, b"xy");
    }

    #[test]
    fn reset_is_drawn_as_a_clear() {
        let (out, _) = safe(b"\x1bc");
        assert_eq!(out, b"\x1b[0m\x1b[H\x1b[2J");
    }

    #[test]
    fn idle_gaps_are_cut_and_speed_divides() {
        let frame = |ms: u64| Frame {
            offset_ns: ms * 1_000_000,
            kind: FrameKind::Marker {
                text: String::new(),
            },
        };
        let frames = [frame(0), frame(100), frame(10_100), frame(10_300)];
        let opts = PlayOptions {
            speed: 2.0,
            max_idle: Duration::from_secs(1),
            instant: false,
            markers: true,
        };
        let ms: Vec<u128> = schedule(&frames, &opts)
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [0, 50, 500, 100]);
        let instant = PlayOptions {
            instant: true,
            ..opts
        };
        assert!(schedule(&frames, &instant).iter().all(|d| d.is_zero()));
    }
}
