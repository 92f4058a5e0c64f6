//! Progress of long CLI operations (migrations, exports, reports), on standard error and only
//! when it is a terminal, so that scripts and pipes get clean output. Written here rather than
//! with indicatif: three kinds of one-line message need neither its draw thread nor templates.

use std::io::{IsTerminal, Write};

pub struct Progress {
    what: &'static str,
    enabled: bool,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        Progress {
            what,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn note(&self, message: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K{}: {message}", self.what);
            let _ = std::io::stderr().flush();
        }
    }

    pub fn step(&self, done: usize, total: usize, unit: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K{}: {done}/{total} {unit}", self.what);
            let _ = std::io::stderr().flush();
        }
    }

    pub fn done(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}
