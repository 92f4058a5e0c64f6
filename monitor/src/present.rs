//! What people read: text made safe for a terminal.
//!
//! Everything an insider controls (argv, paths, terminal output, user and host names, SSH
//! fields, rule titles built from them) reaches auditors' terminals through the CLI. One byte of
//! `ESC` in a file name can move the cursor, rewrite the line above, retitle the window or (OSC 52)
//! write to the auditor's clipboard; a bidi override can make `gpj.exe` read `exe.jpg`. Every
//! CLI output of recorded text goes through [`terminal_text`]: control characters (C0, DEL, C1),
//! bidi and other invisible format characters are shown as `\u{…}` escapes and bytes that are not
//! UTF-8 as `\xNN`, so what was recorded is shown, visibly, and nothing drives the terminal.
//!
//! Hand-written rather than `str::escape_debug` alone: that also escapes quotes and backslashes,
//! which are printable and part of what people need to read verbatim, and it cannot see
//! invalid UTF-8.

use std::fmt::Write as _;

/// `bytes` as text a terminal shows and does not act on.
pub fn terminal_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_safe(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `text` as a terminal shows it and does not act on it.
pub fn terminal_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_safe(&mut out, text);
    out
}

fn push_safe(out: &mut String, text: &str) {
    // Printable ASCII, nearly all of what is recorded, is copied a run at a time; the
    // per-character test (`escape_debug`'s tables) is only for the rest. Every summary the
    // ClickHouse shipper writes passes here.
    let mut rest = text;
    while !rest.is_empty() {
        let plain = rest
            .bytes()
            .take_while(|b| (0x20..0x7f).contains(b))
            .count();
        out.push_str(&rest[..plain]);
        rest = &rest[plain..];
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            if is_shown(c) {
                out.push(c);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            rest = chars.as_str();
        }
    }
}

/// Printable and not a format character that changes how other text is shown.
fn is_shown(c: char) -> bool {
    if matches!(c, '"' | '\'' | '\\') {
        return true;
    }
    // escape_debug leaves exactly the printable characters alone; it escapes controls, the
    // bidi controls, zero-width and other invisible format characters.
    let mut e = c.escape_debug();
    e.next() == Some(c) && e.next().is_none()
}

/// `text` as one word of a POSIX shell command line (for commands a report suggests).
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@=+,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", terminal_str(text).replace('\'', r"'\''"))
    }
}

/// `text` with everything that would act on a terminal shown as escapes, line breaks and tabs
/// kept: for whole outputs (a listing, a report page) whose fields were not escaped one by one.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_shown(c) || c == '\n' || c == '\t' {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    out
}

/// True when `text` would act on a terminal or hide how it reads: what a hostile-string test
/// asserts no CLI output contains.
pub fn drives_terminal(text: &str) -> bool {
    text.chars().any(|c| !is_shown(c) && c != '\n' && c != '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run-at-a-time copy of printable ASCII escapes exactly what the per-character test
    /// escapes, around and between every kind of character.
    #[test]
    fn the_ascii_fast_path_escapes_what_the_per_character_test_does() {
        let by_char = |text: &str| -> String {
            let mut out = String::new();
            for c in text.chars() {
                if is_shown(c) {
                    out.push(c);
                } else {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
            out
        };
        let mut chars: Vec<char> = (0u32..0x3000).filter_map(char::from_u32).collect();
        chars.extend(['\u{202e}', '\u{200b}', '\u{feff}', '\u{1f600}', '\u{e0041}']);
        for c in chars {
            for text in [
                c.to_string(),
                format!("ab{c}"),
                format!("{c}cd"),
                format!("a{c}b{c}{c}\x1b[31mc"),
            ] {
                assert_eq!(terminal_str(&text), by_char(&text), "{:x}", c as u32);
            }
        }
        assert_eq!(
            terminal_str("ls -la\x1b]0;x\x07"),
            "ls -la\\u{1b}]0;x\\u{7}"
        );
    }

    #[test]
    fn controls_bidi_and_bad_bytes_are_shown_not_obeyed() {
        let hostile = b"a\x1b]52;c;ZXZpbA==\x07b\xe2\x80\xaec\x9bd\xff\"q'\\";
        let shown = terminal_text(hostile);
        assert_eq!(
            shown,
            "a\\u{1b}]52;c;ZXZpbA==\\u{7}b\\u{202e}c\\x9bd\\xff\"q'\\"
        );
        assert!(!drives_terminal(&shown));
        assert!(drives_terminal("x\u{1b}[2J"));
        assert!(drives_terminal("x\u{2066}y"));
        assert!(drives_terminal("x\u{9b}y"));
        assert!(!drives_terminal("plain ünïcode 文字 \"quoted\"\n"));
        assert_eq!(terminal_str("é\u{200b}"), "é\\u{200b}");
    }

    #[test]
    fn shell_words_are_quoted_when_they_need_it() {
        assert_eq!(shell_word("web-1.example.com"), "web-1.example.com");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("x';rm -rf /;'"), r"'x'\'';rm -rf /;'\'''");
        assert_eq!(shell_word("$(id)"), "'$(id)'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("h\u{1b}"), "'h\\u{1b}'");
    }
}
