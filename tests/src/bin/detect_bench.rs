//! `cargo xtask bench detect`: every attack scenario (each built-in detection, several ways),
//! the evasion variants, scripted benign administration sessions and an interactive benign
//! corpus on real terminals (`vigil_e2e::interactive`), run as real login sessions on the real
//! kernel under the real daemon; then a population's learnt baselines against held-back benign
//! variation and insider behaviours (`vigil_e2e::anomaly`). Prints detection rates, false
//! alerts per 100 benign sessions (scripted and interactive apart), precision and recall of the
//! anomaly alerts per kind, and the distribution of session risk with the review threshold it
//! gives; fails when a target is missed.
//!
//! `--benign N` scripted sessions (200), `--interactive-copies K` of each interactive kind (5).

use std::{collections::BTreeMap, process::ExitCode};

use serde_json::Value;
use vigil_e2e::{
    anomaly::{self, Expect, Population},
    ensure_user,
    interactive::{self, Entry, Standins},
    login_session, of_type, require_root,
    scenarios::Fixtures,
    Daemon, SshFixture,
};

#[derive(Default)]
struct Row {
    technique: String,
    scenarios: usize,
    detected: usize,
    false_positives: usize,
    missed: Vec<String>,
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn uid(a: &Value) -> u32 {
    a["process"]["loginuid"].as_u64().unwrap_or(0) as u32
}

fn sid(a: &Value) -> u64 {
    a["process"]["sessionid"].as_u64().unwrap_or(0)
}

fn rule(a: &Value) -> &str {
    a["rule"].as_str().unwrap_or("?")
}

/// The highest session risk among `alerts` (0 when none).
fn risk_of<'a>(alerts: impl Iterator<Item = &'a &'a Value>) -> u64 {
    alerts
        .filter_map(|a| a["session_risk"].as_u64())
        .max()
        .unwrap_or(0)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("detect bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    require_root();
    ensure_user();
    let benign_count = arg("--benign", 200);
    let copies = arg("--interactive-copies", 5);
    let dir = tempfile::tempdir()?;
    // The test helper and the client stand-in are built beside this binary.
    let beside = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(name)))
            .filter(|p| p.exists())
            .ok_or_else(|| {
                anyhow::anyhow!("{name} not found beside this binary (cargo xtask build)")
            })
    };
    let helper = beside("vigil-test-helper")?.to_string_lossy().into_owned();
    let fixtures = Fixtures::start(dir.path());
    let attacks = fixtures.attacks(true);
    let evasions = fixtures.evasions();
    let benign = fixtures.benign(benign_count);
    let ssh = SshFixture::start(dir.path());
    interactive::prepare_repo();
    let standins = Standins::install(dir.path(), &beside("vigil-client-standin")?);
    let corpus = interactive::corpus(&ssh, &standins, copies);
    let population = Population::create(dir.path(), 53_000, &fixtures.outbound_ip);
    let identity = format!(
        "identity:\n  mapping_file: {}\n",
        population.mapping.display()
    );

    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(Some(&spool), &identity)?;
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
    let interactive_base = base + 20_000;
    let mut shells_failed = Vec::new();
    for (i, s) in corpus.iter().enumerate() {
        let home = dir.path().join(format!("ihome-{i}"));
        if !interactive::run(&helper, s, interactive_base + i as u32, &home, &ssh) {
            shells_failed.push(s.name.clone());
        }
    }
    for (uid, script) in population.usual_sessions() {
        login_session(&helper, uid, &fixtures.home, &script);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = daemon.stop()?;
    let elapsed = started.elapsed();
    drop(standins);

    // The population's weeks of history, learnt through the daemon's learning path; then the
    // test phase live, against it.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let history = population.write_history(&events, now_ns);
    let state = dir.path().join("baseline.json");
    let baseline_yaml = format!(
        "detection:\n  baseline:\n    enabled: true\n    learning_period: 14d\n    state_file: {}\n",
        state.display()
    );
    let learn_config = dir.path().join("learn.yaml");
    std::fs::write(
        &learn_config,
        format!(
            "spool:\n  dir: {}\n{baseline_yaml}",
            dir.path().join("learn-spool").display()
        ),
    )?;
    let learnt = std::process::Command::new(vigil_e2e::vigil_bin())
        .args(["baselines", "learn", "--json", "--config"])
        .arg(&learn_config)
        .arg(&history)
        .output()?;
    anyhow::ensure!(
        learnt.status.success(),
        "vigil baselines learn failed: {}",
        String::from_utf8_lossy(&learnt.stderr)
    );
    let learnt: Value = serde_json::from_slice(&learnt.stdout)?;
    let cases = population.cases();
    let population_size = population.size();
    let daemon = Daemon::start_with_spool(
        Some(&dir.path().join("spool-test")),
        &format!("{identity}{baseline_yaml}"),
    )?;
    for (i, c) in cases.iter().enumerate() {
        c.run(&helper, &fixtures.home, i);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let test_events = daemon.stop()?;
    drop(fixtures);
    drop(population);

    let alerts = of_type(&events, "alert");
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (i, s) in attacks.iter().enumerate() {
        let row = rows.entry(s.rule.to_string()).or_default();
        row.technique = s.technique.to_string();
        row.scenarios += 1;
        if alerts
            .iter()
            .any(|a| uid(a) == base + i as u32 && a["rule"] == s.rule)
        {
            row.detected += 1;
        } else {
            row.missed.push(s.name.clone());
        }
    }
    let benign_range = benign_base..benign_base + benign.len() as u32;
    let mut fp_total = 0;
    for a in alerts.iter().filter(|a| benign_range.contains(&uid(a))) {
        let row = rows.entry(rule(a).to_string()).or_default();
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
    let per100 = |n: usize, of: usize| n as f64 * 100.0 / of.max(1) as f64;
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
            per100(r.false_positives, benign.len()),
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

    // The interactive corpus: terminal sessions by their login uid, sshd ones (the test user's,
    // including those git and onward SSH opened) by their session.
    let interactive_range = interactive_base..interactive_base + corpus.len() as u32;
    let sshd_sessions: Vec<u64> = of_type(&events, "session_start")
        .iter()
        .filter(|e| uid(e) == ssh.uid)
        .map(|e| sid(e))
        .collect();
    let terminal_sessions = corpus.iter().filter(|s| s.entry == Entry::Terminal).count();
    let interactive_sessions = terminal_sessions + sshd_sessions.len();
    let is_interactive = |a: &Value| interactive_range.contains(&uid(a)) || uid(a) == ssh.uid;
    let mut interactive_fp: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| is_interactive(a)) {
        let kind = if uid(a) == ssh.uid {
            "an sshd session".to_string()
        } else {
            corpus[(uid(a) - interactive_base) as usize].name.clone()
        };
        interactive_fp
            .entry(rule(a).to_string())
            .or_default()
            .push(kind);
    }
    let interactive_fp_total: usize = interactive_fp.values().map(Vec::len).sum();
    // Each terminal session really ran on its terminal: its commands carry the tty.
    let execs = of_type(&events, "exec");
    for (i, s) in corpus.iter().enumerate() {
        let u = interactive_base + i as u32;
        if s.entry == Entry::Terminal && !execs.iter().any(|e| uid(e) == u && e["tty"].is_string())
        {
            shells_failed.push(format!("{} (no command on a terminal)", s.name));
        }
    }
    println!(
        "\nINTERACTIVE CORPUS: {} sessions ({} on local terminals, {} sshd logins), {} kinds; shells that failed: {}",
        interactive_sessions,
        terminal_sessions,
        sshd_sessions.len(),
        corpus.len() / copies.max(1),
        if shells_failed.is_empty() { "none".to_string() } else { shells_failed.join(", ") }
    );
    for (rule, kinds) in &interactive_fp {
        println!(
            "  false alert {rule}: {} ({})",
            kinds.len(),
            kinds.join(", ")
        );
    }

    // Anomalies: per kind, against what each test session is.
    let case_of = anomaly::case_sessions(&test_events, cases.len());
    let test_alerts = of_type(&test_events, "alert");
    let anomaly_alerts: Vec<&&Value> = test_alerts
        .iter()
        .filter(|a| rule(a).starts_with("anomaly-"))
        .collect();
    #[derive(Default)]
    struct KindRow {
        insiders: usize,
        detected: usize,
        alerts: usize,
        true_alerts: usize,
        missed: Vec<String>,
    }
    let mut kinds: BTreeMap<String, KindRow> = BTreeMap::new();
    let mut false_anomalies: Vec<String> = Vec::new();
    let benign_cases = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Benign(_)))
        .count();
    let unfound = cases.len() - case_of.len();
    for (i, c) in cases.iter().enumerate() {
        let mine: Vec<&&&Value> = anomaly_alerts
            .iter()
            .filter(|a| case_of.get(&sid(a)) == Some(&i))
            .collect();
        if let Expect::Insider(kind) = c.expect {
            let row = kinds.entry(kind.to_string()).or_default();
            row.insiders += 1;
            if mine.iter().any(|a| rule(a) == kind) {
                row.detected += 1;
            } else {
                row.missed.push(c.user.clone());
            }
        }
        for a in mine {
            let row = kinds.entry(rule(a).to_string()).or_default();
            row.alerts += 1;
            match c.expect {
                Expect::Insider(kind) if kind == rule(a) => row.true_alerts += 1,
                Expect::Benign(why) => false_anomalies.push(format!(
                    "{} in \"{why}\" ({}): {}",
                    rule(a),
                    c.user,
                    a["title"].as_str().unwrap_or("")
                )),
                Expect::Insider(_) => {}
            }
        }
    }
    println!(
        "\nANOMALIES: {} users in {} peer groups, {} days of history ({} events learnt, {} profiles); {} test sessions ({} benign, {} insider{})",
        population_size,
        anomaly::GROUPS.len(),
        anomaly::HISTORY_DAYS,
        learnt["events"],
        learnt["profiles"],
        cases.len(),
        benign_cases,
        cases.len() - benign_cases,
        if unfound > 0 { format!("; {unfound} not found in the stream") } else { String::new() }
    );
    println!(
        "{:<28} {:>9} {:>9} {:>8} {:>8} {:>10}",
        "KIND", "INSIDERS", "DETECTED", "RECALL", "ALERTS", "PRECISION"
    );
    let mut anomaly_ok = unfound == 0;
    for (kind, r) in &kinds {
        let recall = r.detected as f64 * 100.0 / r.insiders.max(1) as f64;
        let precision = r.true_alerts as f64 * 100.0 / r.alerts.max(1) as f64;
        if r.insiders > 0 && r.detected < r.insiders {
            anomaly_ok = false;
        }
        println!(
            "{:<28} {:>9} {:>9} {:>7.0}% {:>8} {:>9.0}%{}",
            kind,
            r.insiders,
            r.detected,
            recall,
            r.alerts,
            precision,
            if r.missed.is_empty() {
                String::new()
            } else {
                format!("   missed: {}", r.missed.join(", "))
            }
        );
    }
    let false_anomaly100 = per100(false_anomalies.len(), benign_cases);
    println!(
        "false anomaly alerts: {} in {} benign sessions ({:.2} per 100)",
        false_anomalies.len(),
        benign_cases,
        false_anomaly100
    );
    for f in &false_anomalies {
        println!("  {f}");
    }

    // Session risk, benign against malicious, and the review threshold it gives.
    let mut benign_risk: Vec<(String, u64)> = Vec::new();
    let mut malicious_risk: Vec<(String, u64)> = Vec::new();
    let by_uid = |u: u32| risk_of(alerts.iter().filter(|a| uid(a) == u));
    for (i, s) in attacks.iter().enumerate() {
        malicious_risk.push((format!("attack {}", s.name), by_uid(base + i as u32)));
    }
    for (i, e) in evasions.iter().enumerate() {
        malicious_risk.push((
            format!("evasion {}", e.scenario.name),
            by_uid(evasion_base + i as u32),
        ));
    }
    for i in 0..benign.len() {
        benign_risk.push((format!("scripted {i}"), by_uid(benign_base + i as u32)));
    }
    for (i, s) in corpus.iter().enumerate() {
        if s.entry == Entry::Terminal {
            benign_risk.push((s.name.clone(), by_uid(interactive_base + i as u32)));
        }
    }
    for s in &sshd_sessions {
        let r = risk_of(alerts.iter().filter(|a| sid(a) == *s));
        benign_risk.push((format!("sshd session {s}"), r));
    }
    for (s, &i) in &case_of {
        let r = risk_of(test_alerts.iter().filter(|a| sid(a) == *s));
        let c = &cases[i];
        match c.expect {
            Expect::Benign(why) => benign_risk.push((format!("{} {why}", c.user), r)),
            Expect::Insider(kind) => malicious_risk.push((format!("{} {kind}", c.user), r)),
        }
    }
    let threshold = print_risk(&benign_risk, &malicious_risk);

    let fp100 = per100(fp_total, benign.len());
    let interactive100 = per100(interactive_fp_total, interactive_sessions);
    println!(
        "\n{} attack scenarios, {} detected ({:.1}%); {} scripted benign sessions ({} commands), {} false alerts ({:.2} per 100); {} interactive sessions, {} false alerts ({:.2} per 100); {:.1} s",
        scenarios,
        detected,
        detected as f64 * 100.0 / scenarios.max(1) as f64,
        benign.len(),
        benign_commands,
        fp_total,
        fp100,
        interactive_sessions,
        interactive_fp_total,
        interactive100,
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
            "interactive_sessions": interactive_sessions,
            "interactive_false_alerts": interactive_fp_total,
            "interactive_false_per_100": interactive100,
            "evasion_variants": variants,
            "evasion_detected": evaded_caught,
            "anomaly_benign_sessions": benign_cases,
            "anomaly_false_alerts": false_anomalies.len(),
            "anomaly_false_per_100": false_anomaly100,
            "review_threshold": threshold,
        })
    );
    let ok = detected == scenarios
        && evaded_caught == variants
        && fp100 <= 1.0
        && interactive100 <= 1.0
        && shells_failed.is_empty()
        && anomaly_ok
        && false_anomaly100 <= 1.0
        && threshold == Some(vigil::query::REVIEW_MIN_RISK as u64);
    println!(
        "targets (every scenario, evasion variant and insider behaviour detected; <= 1 false alert per 100 scripted, interactive and baseline-benign sessions; the review threshold the distribution gives is vigil's default --min-risk, {}): {}",
        vigil::query::REVIEW_MIN_RISK,
        if ok { "met" } else { "MISSED" }
    );
    Ok(ok)
}

/// Prints the distribution of session risk (a table and bars) and returns the review
/// threshold it gives: the lowest multiple of 5 that at most 1% of benign sessions reach (None
/// when none keeps them under it).
fn print_risk(benign: &[(String, u64)], malicious: &[(String, u64)]) -> Option<u64> {
    let names = |v: &[(String, u64)], t: u64, above: bool| -> Vec<String> {
        v.iter()
            .filter(|(_, r)| (*r >= t) == above)
            .map(|(n, r)| format!("{n} ({r})"))
            .collect()
    };
    let benign: Vec<u64> = benign.iter().map(|(_, r)| *r).collect();
    let all_malicious = malicious;
    let malicious: Vec<u64> = malicious.iter().map(|(_, r)| *r).collect();
    const BUCKETS: [(u64, u64); 8] = [
        (0, 0),
        (1, 9),
        (10, 19),
        (20, 29),
        (30, 39),
        (40, 59),
        (60, 99),
        (100, 100),
    ];
    println!(
        "\nSESSION RISK: {} benign, {} malicious sessions",
        benign.len(),
        malicious.len()
    );
    println!(
        "{:<9} {:>7} {:>9}   (bars: share of each kind)",
        "RISK", "BENIGN", "MALICIOUS"
    );
    let bar = |n: usize, of: usize, c: char| {
        std::iter::repeat_n(c, (n * 40).div_ceil(of.max(1))).collect::<String>()
    };
    for (lo, hi) in BUCKETS {
        let b = benign.iter().filter(|r| (lo..=hi).contains(*r)).count();
        let m = malicious.iter().filter(|r| (lo..=hi).contains(*r)).count();
        let label = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        println!(
            "{label:<9} {b:>7} {m:>9}   {}|{}",
            bar(b, benign.len(), 'b'),
            bar(m, malicious.len(), 'M')
        );
    }
    // In steps of 5, so one session more or less does not move it.
    let threshold = (5..=100u64)
        .step_by(5)
        .find(|t| benign.iter().filter(|r| **r >= *t).count() * 100 <= benign.len());
    if let Some(t) = threshold {
        let caught = malicious.iter().filter(|r| **r >= t).count();
        let benign_over = benign.iter().filter(|r| **r >= t).count();
        println!(
            "review threshold {t}: {caught} of {} malicious sessions reach it ({:.1}%), {benign_over} of {} benign ({:.2}%)",
            malicious.len(),
            caught as f64 * 100.0 / malicious.len().max(1) as f64,
            benign.len(),
            benign_over as f64 * 100.0 / benign.len().max(1) as f64
        );
        let under = names(all_malicious, t, false);
        if !under.is_empty() {
            println!("  malicious sessions under it: {}", under.join(", "));
        }
    }
    threshold
}
