//! `cargo xtask bench overhead`: workload storms with the monitor off and on, interleaved over
//! rounds, for a monitored login session and for an unmonitored process. Prints the median
//! on/off time ratio per workload and the events captured versus expected.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use crate::{vigil_bin, workspace};

#[derive(Subcommand)]
pub enum Which {
    /// Capture overhead per workload, monitored and unmonitored.
    Overhead {
        /// Rounds (each runs every workload with the monitor off and on).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Scale the iteration counts (1.0 = default sizes).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Overhead { rounds, scale } => overhead(rounds, scale),
    }
}

fn helper_bin() -> PathBuf {
    workspace().join("target/release/vigil-test-helper")
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Monitored,
    Unmonitored,
}

struct Workload {
    name: &'static str,
    storm: &'static str,
    count: u64,
    /// Ratio target (on/off median) for the monitored and unmonitored contexts.
    target: [f64; 2],
}

/// A running daemon for one "on" phase.
struct Monitor {
    child: Child,
    dir: PathBuf,
}

impl Monitor {
    fn start(dir: &Path) -> Result<Monitor> {
        let events = dir.join("events.jsonl");
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&events);
        let _ = std::fs::remove_file(&ready);
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "output:\n  stdout: false\n  file: {}\nspool:\n  dir: {}\nmetrics:\n  listen: null\nlog:\n  level: warn\n",
                events.display(),
                dir.join("spool").display()
            ),
        )?;
        let child = Command::new(vigil_bin())
            .args(["run", "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("cannot start vigil")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("vigil not ready in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Monitor {
            child,
            dir: dir.to_path_buf(),
        })
    }

    /// Stops the daemon and returns its events (as parsed JSON).
    fn stop(mut self) -> Result<Vec<serde_json::Value>> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            bail!("vigil exited with {status}: {log}");
        }
        let text = std::fs::read_to_string(self.dir.join("events.jsonl"))?;
        text.lines()
            .map(|l| serde_json::from_str(l).context("bad event line"))
            .collect()
    }
}

fn loginuid_for(ctx: Context) -> String {
    match ctx {
        Context::Monitored => "42424".into(),
        Context::Unmonitored => "unset".into(),
    }
}

/// Runs one storm in a fresh helper process in `ctx`; returns elapsed seconds.
fn storm(ctx: Context, w: &Workload, count: u64, target: &str) -> Result<f64> {
    let out = Command::new(helper_bin())
        .args(["login", &loginuid_for(ctx), "--"])
        .arg(helper_bin())
        .args(["storm", w.storm, &count.to_string(), target])
        .output()
        .context("cannot run vigil-test-helper")?;
    if !out.status.success() {
        bail!(
            "storm {} failed: {}",
            w.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ns: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("storm output")?;
    Ok(ns / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Events a monitored storm must produce, counted from the daemon output.
fn captured(events: &[serde_json::Value], storm: &str, file: &str, port: u16) -> u64 {
    let ours = events.iter().filter(|e| e["process"]["loginuid"] == 42424);
    ours.filter(|e| match storm {
        "exec" => e["type"] == "exec" && e["filename"] == "/bin/true",
        "open-read" => e["type"] == "file_read" && e["path"] == file && e["bytes"] == 4096,
        "connect" => e["type"] == "connect" && e["port"] == port,
        _ => false,
    })
    .count() as u64
}

fn overhead(rounds: usize, scale: f64) -> Result<()> {
    if !nix_is_root() {
        bail!("the overhead benchmark loads the kernel programs: run it as root");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("data.bin");
    std::fs::write(&file, vec![7u8; 4096])?;
    let file = file.to_string_lossy().into_owned();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // A deep accept queue and an accept loop that does nothing else: a full queue drops SYNs,
    // and each retransmit costs the client a second, which would swamp what is measured.
    // SAFETY: listen(2) on a socket we own; calling it again only changes the backlog.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) } != 0 {
        bail!("listen: {}", std::io::Error::last_os_error());
    }
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let addr = format!("127.0.0.1:{port}");
    let scaled = |n: u64| ((n as f64 * scale).round() as u64).max(10);
    let workloads = [
        Workload {
            name: "exec",
            storm: "exec",
            count: scaled(1500),
            target: [1.05, 1.02],
        },
        Workload {
            name: "open+read",
            storm: "open-read",
            count: scaled(60000),
            target: [1.15, 1.02],
        },
        Workload {
            name: "connect",
            storm: "connect",
            count: scaled(10000),
            target: [1.10, 1.02],
        },
    ];
    let contexts = [Context::Monitored, Context::Unmonitored];
    // ratios[workload][context] over rounds
    let mut ratios = vec![vec![Vec::new(); 2]; workloads.len()];
    let mut captured_total = vec![0u64; workloads.len()];
    let mut expected_total = vec![0u64; workloads.len()];
    let mut unmonitored_leaks = 0u64;

    let target_of = |w: &Workload| -> String {
        match w.storm {
            "exec" => "/bin/true".into(),
            "open-read" => file.clone(),
            _ => addr.clone(),
        }
    };
    // Warm caches once.
    for w in &workloads {
        storm(Context::Unmonitored, w, w.count / 10 + 1, &target_of(w))?;
    }
    for round in 0..rounds {
        // Alternate which phase goes first, so drift over time does not favour one.
        let phases: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut times = vec![[[0.0f64; 2]; 2]; workloads.len()]; // [w][ctx][on]
        for on in phases {
            let monitor = if on {
                Some(Monitor::start(&dir)?)
            } else {
                None
            };
            for (wi, w) in workloads.iter().enumerate() {
                for (ci, ctx) in contexts.iter().enumerate() {
                    times[wi][ci][on as usize] = storm(*ctx, w, w.count, &target_of(w))?;
                }
            }
            if let Some(m) = monitor {
                let events = m.stop()?;
                for (wi, w) in workloads.iter().enumerate() {
                    captured_total[wi] += captured(&events, w.storm, &file, port);
                    expected_total[wi] += w.count;
                }
                unmonitored_leaks += events
                    .iter()
                    .filter(|e| e["process"]["loginuid"].is_null() && e["type"] != "loss")
                    .count() as u64;
            }
        }
        for (wi, w) in workloads.iter().enumerate() {
            for ci in 0..2 {
                let [off, on] = times[wi][ci];
                eprintln!(
                    "  {:<10} {:<11} off {:>8.4} s  on {:>8.4} s",
                    w.name,
                    if ci == 0 { "monitored" } else { "unmonitored" },
                    off,
                    on
                );
                ratios[wi][ci].push(on / off);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }

    println!("Vigil capture overhead: median time ratio monitor on / off over {rounds} interleaved rounds");
    println!(
        "{:<11} {:>10} {:>14} {:>8} {:>16} {:>8} {:>22}",
        "workload",
        "iterations",
        "monitored",
        "target",
        "unmonitored",
        "target",
        "captured/expected"
    );
    let mut all_ok = true;
    for (wi, w) in workloads.iter().enumerate() {
        let m = median(&mut ratios[wi][0]);
        let u = median(&mut ratios[wi][1]);
        let ok = m <= w.target[0] && u <= w.target[1] && captured_total[wi] == expected_total[wi];
        all_ok &= ok;
        println!(
            "{:<11} {:>10} {:>14.3} {:>8} {:>16.3} {:>8} {:>14}/{:<7} {}",
            w.name,
            w.count,
            m,
            format!("≤{:.2}", w.target[0]),
            u,
            format!("≤{:.2}", w.target[1]),
            captured_total[wi],
            expected_total[wi],
            if ok { "ok" } else { "MISSED" }
        );
    }
    println!("events from unmonitored processes: {unmonitored_leaks} (expected 0)");
    let _ = std::fs::remove_dir_all(&dir);
    if !all_ok || unmonitored_leaks != 0 {
        println!("some targets missed (see above)");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
