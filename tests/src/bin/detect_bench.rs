//! `cargo xtask bench detect`: every attack scenario (each built-in detection, several ways) and
//! a set of benign administration sessions, run as real login sessions on the real kernel
//! under the real daemon. Prints the detection rate and the false-positive alerts per 100
//! benign sessions, per detection, and fails when a target is missed: every scenario detected,
//! at most 1 false-positive alert per 100 benign sessions.

use std::{collections::BTreeMap, process::ExitCode};

use serde_json::Value;
use vigil_e2e::{ensure_user, login_session, of_type, require_root, scenarios::Fixtures, Daemon};

#[derive(Default)]
struct Row {
    technique: String,
    scenarios: usize,
    detected: usize,
    false_positives: usize,
    missed: Vec<String>,
}

fn main() -> ExitCode {
    require_root();
    ensure_user();
    let benign_count: usize = std::env::args()
        .skip_while(|a| a != "--benign")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Fixtures::start(dir.path());
    let attacks = fixtures.attacks(true);
    let evasions = fixtures.evasions();
    let benign = fixtures.benign(benign_count);
    let spool = dir.path().join("spool");
    let daemon = match Daemon::start_with_spool(Some(&spool), "") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("detect bench: the daemon did not start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // The test helper is built beside this binary.
    let helper = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vigil-test-helper")))
        .filter(|p| p.exists());
    let Some(helper) = helper else {
        eprintln!(
            "detect bench: vigil-test-helper not found beside this binary (cargo xtask build)"
        );
        return ExitCode::FAILURE;
    };
    let helper = helper.to_string_lossy().into_owned();
    let base = 50_000u32;
    let started = std::time::Instant::now();
    for (i, s) in attacks.iter().enumerate() {
        login_session(&helper, base + i as u32, &fixtures.home, &s.script);
    }
    let evasion_base = base + 5_000;
    for (i, e) in evasions.iter().enumerate() {
        login_session(
            &helper,
            evasion_base + i as u32,
            &fixtures.home,
            &e.scenario.script,
        );
    }
    let benign_base = base + 10_000;
    for (i, script) in benign.iter().enumerate() {
        login_session(&helper, benign_base + i as u32, &fixtures.home, script);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let elapsed = started.elapsed();
    let events = match daemon.stop() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("detect bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    drop(fixtures);
    let alerts = of_type(&events, "alert");
    let uid = |a: &Value| a["process"]["loginuid"].as_u64().unwrap_or(0) as u32;

    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (i, s) in attacks.iter().enumerate() {
        let row = rows.entry(s.rule.to_string()).or_default();
        row.technique = s.technique.to_string();
        row.scenarios += 1;
        let hit = alerts
            .iter()
            .any(|a| uid(a) == base + i as u32 && a["rule"] == s.rule);
        if hit {
            row.detected += 1;
        } else {
            row.missed.push(s.name.clone());
        }
    }
    let benign_range = benign_base..benign_base + benign.len() as u32;
    let mut fp_total = 0;
    for a in alerts.iter().filter(|a| benign_range.contains(&uid(a))) {
        let rule = a["rule"].as_str().unwrap_or("?").to_string();
        let row = rows.entry(rule).or_default();
        if row.technique.is_empty() {
            row.technique = a["technique"].as_str().unwrap_or("").to_string();
        }
        row.false_positives += 1;
        fp_total += 1;
    }

    // The benign sessions did run: their commands are in the stream.
    let benign_commands = of_type(&events, "exec")
        .iter()
        .filter(|e| benign_range.contains(&uid(e)))
        .count();
    let per100 = |n: usize| n as f64 * 100.0 / benign.len().max(1) as f64;
    println!(
        "{:<30} {:<10} {:>9} {:>9} {:>9} {:>12}",
        "DETECTION", "TECHNIQUE", "SCENARIOS", "DETECTED", "RATE", "FP/100 BENIGN"
    );
    let (mut scenarios, mut detected) = (0, 0);
    for (rule, r) in &rows {
        scenarios += r.scenarios;
        detected += r.detected;
        let rate = if r.scenarios == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", r.detected as f64 * 100.0 / r.scenarios as f64)
        };
        println!(
            "{:<30} {:<10} {:>9} {:>9} {:>9} {:>12.2}{}",
            rule,
            r.technique,
            r.scenarios,
            r.detected,
            rate,
            per100(r.false_positives),
            if r.missed.is_empty() {
                String::new()
            } else {
                format!("   missed: {}", r.missed.join(", "))
            }
        );
    }
    // The evasion suite, per class: the alert, its technique and the canonical path it names.
    let mut classes: BTreeMap<&str, (usize, usize, Vec<String>)> = BTreeMap::new();
    for (i, e) in evasions.iter().enumerate() {
        let row = classes.entry(e.class.name()).or_default();
        row.0 += 1;
        let mine: Vec<&Value> = alerts
            .iter()
            .filter(|a| uid(a) == evasion_base + i as u32)
            .copied()
            .collect();
        let caught = mine.iter().any(|a| {
            a["rule"] == e.scenario.rule
                && a["technique"] == e.scenario.technique
                && e.path
                    .is_none_or(|p| a["evidence"].as_str().is_some_and(|ev| ev.contains(p)))
        }) && e.also.is_none_or(|r| mine.iter().any(|a| a["rule"] == r));
        if caught {
            row.1 += 1;
        } else {
            row.2.push(e.scenario.name.clone());
        }
    }
    println!(
        "\n{:<34} {:>9} {:>9} {:>7}",
        "EVASION CLASS", "VARIANTS", "DETECTED", "RATE"
    );
    let (mut variants, mut evaded_caught) = (0, 0);
    for (class, (n, caught, missed)) in &classes {
        variants += n;
        evaded_caught += caught;
        println!(
            "{:<34} {:>9} {:>9} {:>6.0}%{}",
            class,
            n,
            caught,
            *caught as f64 * 100.0 / (*n).max(1) as f64,
            if missed.is_empty() {
                String::new()
            } else {
                format!("   missed: {}", missed.join(", "))
            }
        );
    }
    let fp100 = per100(fp_total);
    println!(
        "\n{} attack scenarios, {} detected ({:.1}%); {} benign sessions ({} commands), {} false-positive alerts ({:.2} per 100); {:.1} s",
        scenarios,
        detected,
        detected as f64 * 100.0 / scenarios.max(1) as f64,
        benign.len(),
        benign_commands,
        fp_total,
        fp100,
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "detect",
            "scenarios": scenarios,
            "detected": detected,
            "benign_sessions": benign.len(),
            "benign_commands": benign_commands,
            "false_positive_alerts": fp_total,
            "false_positives_per_100": fp100,
            "evasion_variants": variants,
            "evasion_detected": evaded_caught,
        })
    );
    let ok = detected == scenarios && evaded_caught == variants && fp100 <= 1.0;
    println!(
        "targets (every scenario and evasion variant detected, <= 1 false positive per 100 benign sessions): {}",
        if ok { "met" } else { "MISSED" }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
