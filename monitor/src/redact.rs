//! Redaction: secrets typed in commands or shown on a terminal are replaced before an event
//! reaches any output (spool, ClickHouse, alerts, webhooks, reports), by a marker naming what
//! was removed (`[REDACTED:password_flag]`), each counted in `vigil_redactions_total`.
//!
//! What is looked at: every argument of an exec (alone, and with the one before it, for
//! `--password SECRET` and `curl -u user:SECRET`), and terminal bytes a line at a time — the
//! chunks of a line in progress are held per terminal until the line ends (or a short while
//! passes), because a shell echoes what is typed one keystroke per write. Patterns are data:
//! the built-in table below (password flags of common clients, bearer and basic tokens, cloud
//! access keys, private key blocks, credentials in URLs, connection strings and `NAME=value`
//! assignments of secret-looking names), and `redaction.patterns` in the configuration.
//!
//! Limits: a secret split over two lines of a terminal, or typed with editing keys in between,
//! is seen as what reached the terminal; a program's own secret files are not file contents
//! Vigil captures. The patterns favour leaving benign lines alone (the corpus test holds both).

use std::{collections::HashMap, time::Instant};

use regex::bytes::Regex;
use serde::Deserialize;

use crate::event::{Event, EventBody, RawBytes};

/// `redaction:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    pub enabled: bool,
    /// More patterns: a name and a regular expression whose group `secret` (or, without one,
    /// the whole match) is replaced.
    pub patterns: Vec<PatternConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub name: String,
    pub regex: String,
}

/// The built-in patterns: (name, regex). The group `secret` is what is replaced; `name`, when
/// present, is a variable name checked against [`NOT_SECRET_NAMES`].
const BUILTIN: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?P<secret>(?s:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*$))",
    ),
    (
        "password_flag",
        r"(?i)(?:^|[\s=])--?(?:password|passwd|pass|pwd|token|secret|api-?key|access-?key|auth-?token|client-?secret)[=:](?P<secret>[^\s'\x22]+)",
    ),
    (
        "mysql_password",
        r"(?:^|[\s/])(?:mysql|mariadb|mysqldump|mysqladmin|mysqlimport)\s(?:[^\n]*?\s)?-p(?P<secret>[^\s'\x22]+)",
    ),
    (
        "http_authorization",
        r"(?i)\b(?:authorization|proxy-authorization)\s*:\s*(?:bearer|basic|token|digest)\s+(?P<secret>[A-Za-z0-9\-._~+/=]+)",
    ),
    (
        "bearer_token",
        r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
    ),
    (
        "basic_auth",
        r"(?:^|[\s/'\x22])(?:curl|wget)\s(?:[^\n]*?\s)?(?:-u|--user)[ =]['\x22]?[^\s:'\x22@]+:(?P<secret>[^\s'\x22]+)",
    ),
    (
        "url_credentials",
        r"(?i)\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:(?P<secret>[^@\s/]+)@",
    ),
    (
        "aws_access_key_id",
        r"\b(?P<secret>(?:AKIA|ASIA)[0-9A-Z]{16})\b",
    ),
    (
        "github_token",
        r"\b(?P<secret>gh[pousr]_[A-Za-z0-9]{30,})\b",
    ),
    (
        "slack_token",
        r"\b(?P<secret>xox[abposr]-[A-Za-z0-9\-]{10,})",
    ),
    ("google_api_key", r"\b(?P<secret>AIza[0-9A-Za-z_\-]{35})"),
    (
        "secret_assignment",
        r"(?i)\b(?P<name>[A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY)[A-Z0-9_]*)\s*[=:]\s*['\x22]?(?P<secret>[^\s'\x22;$][^\s'\x22;]*)",
    ),
    (
        "connection_string",
        r"(?i)(?:^|[;\s])(?:pwd|password)\s*=\s*(?P<secret>[^;\s'\x22]+)",
    ),
];

/// Variable names that look secret but hold where a secret is, not the secret.
const NOT_SECRET_NAMES: &[&str] = &["_FILE", "_PATH", "_DIR", "_URL", "_ENV", "_NAME", "_ID"];

/// Arguments whose *next* argument is a secret.
const SECRET_NEXT: &[&str] = &[
    "--password",
    "--passwd",
    "--pass",
    "--token",
    "--secret",
    "--api-key",
    "--apikey",
    "--access-key",
    "--auth-token",
    "--client-secret",
];

#[derive(Debug, thiserror::Error)]
#[error("redaction pattern {name}: {source}")]
pub struct PatternError {
    name: String,
    #[source]
    source: regex::Error,
}

struct Pattern {
    name: String,
    regex: Regex,
}

/// The patterns in force.
pub struct Redactor {
    patterns: Vec<Pattern>,
    enabled: bool,
}

/// How a terminal's chunks of a line in progress wait.
const HOLD_BYTES: usize = 4096;
const HOLD_MS: u128 = 1000;

impl Redactor {
    pub fn new(cfg: &RedactionConfig) -> Result<Redactor, PatternError> {
        let mut patterns = Vec::new();
        for (name, re) in BUILTIN {
            patterns.push(Pattern {
                name: name.to_string(),
                regex: Regex::new(re).map_err(|source| PatternError {
                    name: name.to_string(),
                    source,
                })?,
            });
        }
        for p in &cfg.patterns {
            patterns.push(Pattern {
                name: p.name.clone(),
                regex: Regex::new(&p.regex).map_err(|source| PatternError {
                    name: p.name.clone(),
                    source,
                })?,
            });
        }
        Ok(Redactor {
            patterns,
            enabled: cfg.enabled,
        })
    }

    /// The built-in patterns alone (for the configuration's own display).
    pub fn builtin() -> Redactor {
        Redactor::new(&RedactionConfig {
            enabled: true,
            patterns: Vec::new(),
        })
        .unwrap_or(Redactor {
            patterns: Vec::new(),
            enabled: true,
        })
    }

    /// The byte ranges of `text` to replace, each with the pattern's name, in order and not
    /// overlapping.
    fn find(&self, text: &[u8]) -> Vec<(usize, usize, &str)> {
        let mut out: Vec<(usize, usize, &str)> = Vec::new();
        for p in &self.patterns {
            for caps in p.regex.captures_iter(text) {
                if let Some(name) = caps.name("name") {
                    let upper = name.as_bytes().to_ascii_uppercase();
                    if NOT_SECRET_NAMES
                        .iter()
                        .any(|s| upper.ends_with(s.as_bytes()))
                    {
                        continue;
                    }
                }
                let Some(m) = caps.name("secret").or_else(|| caps.get(0)) else {
                    continue;
                };
                if m.start() == m.end() {
                    continue;
                }
                out.push((m.start(), m.end(), p.name.as_str()));
            }
        }
        out.sort();
        let mut merged: Vec<(usize, usize, &str)> = Vec::new();
        for r in out {
            match merged.last_mut() {
                Some(last) if r.0 < last.1 => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// `text` with every secret replaced by its marker; `None` when there was nothing.
    pub fn redact_bytes(&self, text: &[u8]) -> Option<Vec<u8>> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for (start, end, name) in found {
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(marker(name).as_bytes());
            metrics::counter!("vigil_redactions_total", "pattern" => name.to_string()).increment(1);
            at = end;
        }
        out.extend_from_slice(&text[at..]);
        Some(out)
    }

    fn redact_raw(&self, raw: &mut RawBytes) {
        if let Some(new) = self.redact_bytes(&raw.0) {
            raw.0 = new;
        }
    }

    /// Redacts an exec's arguments (each alone, and a secret following its flag).
    fn redact_argv(&self, argv: &mut [RawBytes]) {
        // The whole command line first, for patterns that need the program's name
        // (`mysql ... -pSECRET`): arguments joined by spaces, mapped back to arguments.
        let joined: Vec<u8> = argv
            .iter()
            .map(|a| a.0.as_slice())
            .collect::<Vec<_>>()
            .join(&b' ');
        let found = self.find(&joined);
        if !found.is_empty() {
            let mut offset = 0;
            for arg in argv.iter_mut() {
                let (from, to) = (offset, offset + arg.0.len());
                offset = to + 1;
                let inside: Vec<(usize, usize, &str)> = found
                    .iter()
                    .filter(|(s, e, _)| *s < to && *e > from)
                    .map(|(s, e, n)| ((*s).max(from) - from, (*e).min(to) - from, *n))
                    .collect();
                if inside.is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                let mut at = 0;
                for (s, e, name) in inside {
                    out.extend_from_slice(&arg.0[at..s]);
                    out.extend_from_slice(marker(name).as_bytes());
                    metrics::counter!("vigil_redactions_total", "pattern" => name.to_string())
                        .increment(1);
                    at = e;
                }
                out.extend_from_slice(&arg.0[at..]);
                arg.0 = out;
            }
        }
        // A secret in the argument after its flag (`--password SECRET`, `-u user:SECRET`).
        let program = argv
            .first()
            .map(|a| a.0.rsplit(|b| *b == b'/').next().unwrap_or(&a.0).to_vec())
            .unwrap_or_default();
        for i in 1..argv.len() {
            let (before, after) = argv.split_at_mut(i);
            let flag = before[i - 1].0.as_slice();
            let next = &mut after[0].0;
            if next.starts_with(b"[REDACTED:") {
                continue;
            }
            let by_flag = SECRET_NEXT.iter().any(|f| f.as_bytes() == flag)
                || (flag == b"-p" && program.as_slice() == b"sshpass")
                || (flag == b"-a" && program.as_slice() == b"redis-cli");
            let user_pass = (flag == b"-u" || flag == b"--user")
                && (program.as_slice() == b"curl" || program.as_slice() == b"wget");
            if by_flag {
                *next = marker("password_flag").into_bytes();
                metrics::counter!("vigil_redactions_total", "pattern" => "password_flag")
                    .increment(1);
            } else if user_pass {
                if let Some(colon) = next.iter().position(|b| *b == b':') {
                    next.truncate(colon + 1);
                    next.extend_from_slice(marker("basic_auth").as_bytes());
                    metrics::counter!("vigil_redactions_total", "pattern" => "basic_auth")
                        .increment(1);
                }
            }
        }
    }

    /// Redacts one event that needs no terminal context (everything but terminal bytes).
    pub fn redact_event(&self, event: &mut Event) {
        if !self.enabled {
            return;
        }
        match &mut event.body {
            EventBody::Exec(x) => {
                self.redact_argv(&mut x.argv);
                self.redact_raw(&mut x.filename);
            }
            EventBody::TtyInput(t) | EventBody::TtyOutput(t) => self.redact_raw(&mut t.data),
            _ => {}
        }
    }
}

fn marker(name: &str) -> String {
    format!("[REDACTED:{name}]")
}

/// Terminal chunks held until their line ends, per terminal, so that a secret typed a
/// keystroke at a time is seen whole. Events of other kinds pass straight through.
#[derive(Default)]
pub struct TtyLines {
    /// Per terminal: since when, the chunks, and their bytes.
    held: HashMap<String, (Instant, Vec<Event>, usize)>,
}

impl TtyLines {
    /// Whether `push` would hold `event` for its line (terminal data, redaction on); every
    /// other event goes straight on.
    pub fn holds(redactor: &Redactor, event: &Event) -> bool {
        redactor.enabled && matches!(event.body, EventBody::TtyInput(_) | EventBody::TtyOutput(_))
    }

    /// Takes `event`; appends to `ready` the events ready to go on (possibly none, possibly
    /// several). Appended, not returned: nearly every event goes straight on, and a `Vec` of
    /// one per event was an allocation and two copies of it.
    pub fn push(&mut self, redactor: &Redactor, event: Event, ready: &mut Vec<Event>) {
        if !Self::holds(redactor, &event) {
            ready.push(event);
            return;
        }
        // Terminal data with redaction on (`holds`), from here on.
        let (tty, ends_line, len) = match &event.body {
            EventBody::TtyInput(t) | EventBody::TtyOutput(t) => (
                t.tty.clone(),
                t.data.0.iter().any(|b| *b == b'\n' || *b == b'\r'),
                t.data.0.len(),
            ),
            _ => {
                ready.push(event);
                return;
            }
        };
        let entry = self
            .held
            .entry(tty.clone())
            .or_insert_with(|| (Instant::now(), Vec::new(), 0));
        entry.1.push(event);
        entry.2 += len;
        if ends_line || entry.2 >= HOLD_BYTES {
            let events = self
                .held
                .remove(&tty)
                .map(|(_, e, _)| e)
                .unwrap_or_default();
            ready.extend(release(redactor, events));
        }
    }

    /// Lines held longer than a moment go on as they are (redacted as far as they go).
    pub fn expire(&mut self, redactor: &Redactor) -> Vec<Event> {
        let old: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (since, _, _))| since.elapsed().as_millis() >= HOLD_MS)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in old {
            if let Some((_, events, _)) = self.held.remove(&k) {
                out.extend(release(redactor, events));
            }
        }
        out
    }

    /// Everything held (at stop).
    pub fn drain(&mut self, redactor: &Redactor) -> Vec<Event> {
        let all: Vec<Vec<Event>> = self.held.drain().map(|(_, (_, e, _))| e).collect();
        all.into_iter()
            .flat_map(|events| release(redactor, events))
            .collect()
    }
}

/// Redacts held chunks of one terminal as the lines they make (each direction apart): a match
/// is replaced by its marker in the chunk where it starts and cut from the chunks after.
fn release(redactor: &Redactor, mut events: Vec<Event>) -> Vec<Event> {
    for output in [false, true] {
        let idx: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| match &e.body {
                EventBody::TtyOutput(_) => output,
                EventBody::TtyInput(_) => !output,
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        fn data(e: &mut Event) -> Option<&mut RawBytes> {
            match &mut e.body {
                EventBody::TtyInput(t) | EventBody::TtyOutput(t) => Some(&mut t.data),
                _ => None,
            }
        }
        let mut joined = Vec::new();
        let mut bounds = Vec::new();
        for &i in &idx {
            let Some(d) = data(&mut events[i]) else {
                continue;
            };
            bounds.push((joined.len(), joined.len() + d.0.len()));
            joined.extend_from_slice(&d.0);
        }
        let found = redactor.find(&joined);
        if found.is_empty() {
            continue;
        }
        for (k, &i) in idx.iter().enumerate() {
            let (from, to) = bounds[k];
            let Some(d) = data(&mut events[i]) else {
                continue;
            };
            let mut out = Vec::new();
            let mut at = from;
            for &(s, e, name) in &found {
                if e <= from || s >= to {
                    continue;
                }
                out.extend_from_slice(&joined[at.max(from)..s.max(from)]);
                if s >= from {
                    out.extend_from_slice(marker(name).as_bytes());
                    metrics::counter!("vigil_redactions_total", "pattern" => name.to_string())
                        .increment(1);
                }
                at = e.min(to);
            }
            out.extend_from_slice(&joined[at.max(from)..to]);
            d.0 = out;
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig {
            enabled: true,
            patterns: vec![PatternConfig {
                name: "ticket_secret".into(),
                regex: r"TICKET-(?P<secret>[0-9a-f]{12})".into(),
            }],
        })
        .unwrap()
    }

    /// (line, the secret in it) — every secret must be gone, everything else kept.
    pub const SECRETS: &[(&str, &str)] = &[
        ("mysql -u root -pS3cretPass1 prod", "S3cretPass1"),
        ("mysqldump --user=admin --password=Hunter2hunter2 db", "Hunter2hunter2"),
        ("psql postgres://app:pgPassw0rd@db.internal:5432/app", "pgPassw0rd"),
        ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc' https://api", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc"),
        ("curl -H \"Authorization: Basic YWRtaW46c2VjcmV0\" http://x", "YWRtaW46c2VjcmV0"),
        ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("git clone https://deploy:ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x/y", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("PGPASSWORD=pgsecret99 psql -h db", "pgsecret99"),
        ("Server=db;Database=app;User Id=sa;Password=Sql$erver1;", "Sql$erver1"),
        ("vault login -token=s.AbCdEf123456", "s.AbCdEf123456"),
        ("export GITHUB_TOKEN=gho_0123456789abcdefghijABCDEFGHIJ012345", "gho_0123456789abcdefghijABCDEFGHIJ012345"),
        ("slack: xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"),
        ("key AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA"),
        ("see TICKET-0123456789ab", "0123456789ab"),
        ("bash -c 'curl -s -u admin:curlpass77 http://x/'", "curlpass77"),
    ];

    pub const BENIGN: &[&str] = &[
        "ls --color=auto -la /etc",
        "git log --author=alice --since=2.weeks",
        "grep -r token src/ | wc -l",
        "export TOKEN_FILE=/run/secrets/token",
        "export PASSWORD_PATH=/etc/app/password",
        "cat /etc/passwd",
        "ssh -p 2222 admin@bastion",
        "mysql -u root -p prod",
        "docker run -p 8080:80 nginx",
        "echo $API_KEY",
        "curl https://example.com/api?page=2",
        "systemctl restart sshd",
        "openssl req -new -key server.key -out server.csr",
        "python3 -c 'print(1)'",
        "kubectl get secrets -n prod",
        "export PATH=/usr/local/bin:$PATH",
    ];

    #[test]
    fn the_corpus_secrets_go_and_the_benign_lines_stay() {
        let r = redactor();
        for (line, secret) in SECRETS {
            let out = r
                .redact_bytes(line.as_bytes())
                .unwrap_or_else(|| line.as_bytes().to_vec());
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains(secret), "{line:?} -> {text:?}");
            assert!(text.contains("[REDACTED:"), "{line:?} -> {text:?}");
        }
        for line in BENIGN {
            assert_eq!(
                r.redact_bytes(line.as_bytes()),
                None,
                "{line:?} was altered"
            );
        }
    }

    #[test]
    fn argv_secrets_after_their_flag_and_in_user_colon_password() {
        let r = redactor();
        let argv = |parts: &[&str]| -> Vec<RawBytes> {
            parts.iter().map(|p| RawBytes::from(*p)).collect()
        };
        let mut a = argv(&["/usr/bin/curl", "-u", "admin:curlpass1", "https://x"]);
        r.redact_argv(&mut a);
        assert_eq!(a[2].0, b"admin:[REDACTED:basic_auth]");
        let mut a = argv(&["tool", "--password", "flagpass22", "--verbose"]);
        r.redact_argv(&mut a);
        assert_eq!(a[2].0, b"[REDACTED:password_flag]");
        assert_eq!(a[3].0, b"--verbose");
        let mut a = argv(&["mysql", "-h", "db", "-pMyS3cret", "prod"]);
        r.redact_argv(&mut a);
        assert_eq!(a[3].0, b"-p[REDACTED:mysql_password]");
        let mut a = argv(&["mysql", "-u", "root", "-p", "prod"]);
        r.redact_argv(&mut a);
        assert_eq!(
            a[4].0, b"prod",
            "mysql -p prompts; its next argument is the database"
        );
        let mut a = argv(&["sshpass", "-p", "sshpass99", "ssh", "host"]);
        r.redact_argv(&mut a);
        assert_eq!(a[2].0, b"[REDACTED:password_flag]");
    }

    #[test]
    fn a_secret_typed_a_keystroke_at_a_time_is_redacted_across_chunks() {
        let r = redactor();
        let mut lines = TtyLines::default();
        let typed = "export AWS_SECRET_ACCESS_KEY=abcDEF123secret\r";
        let mut out = Vec::new();
        for c in typed.chars() {
            let mut e = crate::decode::daemon_event(
                Default::default(),
                EventBody::TtyOutput(crate::event::TtyEvent {
                    tty: "pts/9".into(),
                    data: RawBytes::from(c.to_string().as_str()),
                    total_bytes: 1,
                    truncated: false,
                    over_budget: false,
                    unreadable: false,
                    rows: 24,
                    cols: 80,
                    onlcr: true,
                    echo: true,
                }),
            );
            e.mono_ns = out.len() as u64;
            lines.push(&r, e, &mut out);
        }
        assert_eq!(
            out.len(),
            typed.len(),
            "every chunk goes on, once the line ends"
        );
        let shown: Vec<u8> = out
            .iter()
            .flat_map(|e| match &e.body {
                EventBody::TtyOutput(t) => t.data.0.clone(),
                _ => Vec::new(),
            })
            .collect();
        let shown = String::from_utf8_lossy(&shown);
        assert!(!shown.contains("abcDEF123secret"), "{shown}");
        assert_eq!(
            shown,
            "export AWS_SECRET_ACCESS_KEY=[REDACTED:secret_assignment]\r"
        );
    }
}
