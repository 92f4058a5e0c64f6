//! Redaction end to end: a session on a real terminal types and runs commands holding secrets;
//! none of them reaches the spool, ClickHouse (chdb), an alert, a webhook body, the session
//! view or the report, and the benign lines of the same session are kept as they were.

use std::{process::Command, time::Duration};

use vigil_e2e::{free_port, require_root, vigil_bin, ClickHouse, Daemon, WebhookReceiver};

const HELPER: &str = env!("CARGO_BIN_EXE_vigil-test-helper");

/// Secrets as the session uses them (argv and terminal), and the secret part of each.
const SECRETS: &[&str] = &[
    "Hunter2hunter2",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "pgPassw0rd",
    "curlpass77",
    "AKIAIOSFODNN7EXAMPLE",
    "typedTokenValue99",
];

/// Lines of the same session that must stay as they are.
const BENIGN: &[&str] = &[
    "--color=auto",
    "export PATH=/usr/local/bin:$PATH",
    "TOKEN_FILE=/run/t",
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_reach_no_output_and_benign_lines_stay() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start_migrated(&dir.path().join("ch"), free_port()).expect("ClickHouse");
    // A webhook receiver recording every body.
    let receiver = WebhookReceiver::start(dir.path(), "hook-secret", 0).expect("receiver");
    let (port, log) = (receiver.port, receiver.log.clone());
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, "hook-secret\n").unwrap();
    // A rule that fires on the commands holding secrets, so alerts carry them as evidence.
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: e2e-true-with-arguments\n    title: true run with arguments\n    technique: T1059\n    severity: critical\n    risk: 5\n    when: type == \"exec\" and filename endswith \"/true\"\n",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let daemon = Daemon::start_with_spool(
        Some(&spool),
        &format!(
            "{}detection:\n  rules_files: [{}]\nalerts:\n  webhooks:\n    - url: http://127.0.0.1:{port}/hook\n      secret_file: {}\n      min_severity: low\n      max_per_minute: 1000\n      dedup_seconds: 0\n",
            ch.config_yaml(),
            rules.display(),
            secret_file.display()
        ),
    )
    .expect("daemon starts");
    let loginuid = 65_000 + std::process::id() % 500;
    // On a real terminal (script gives the session one): secrets in argv, printed to the
    // terminal, and typed as keystrokes echoed one at a time.
    let inner = "/bin/true --color=auto; \
        /bin/true --password=Hunter2hunter2; \
        /bin/true -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig'; \
        /bin/true postgres://app:pgPassw0rd@db:5432/app; \
        /usr/bin/curl -s -u admin:curlpass77 http://127.0.0.1:1/ ; \
        printf 'export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\\n'; \
        printf 'key id AKIAIOSFODNN7EXAMPLE\\n'; \
        printf 'export PATH=/usr/local/bin:$PATH\\nTOKEN_FILE=/run/t\\n'; \
        for c in A P I _ T O K E N = t y p e d T o k e n V a l u e 9 9; do printf %s $c; sleep 0.01; done; printf '\\r\\n'";
    let status = Command::new(HELPER)
        .args([
            "login",
            &loginuid.to_string(),
            "--",
            "/usr/bin/script",
            "-qec",
        ])
        .arg(inner)
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = daemon.scrape().expect("metrics");
    daemon.stop().expect("daemon stops");
    receiver.stop();
    let redactions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_redactions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(redactions >= 6.0, "redactions counted: {redactions}");

    // The spool, byte for byte.
    let mut spooled = Vec::new();
    for entry in std::fs::read_dir(&spool).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            spooled.extend(std::fs::read(&p).unwrap());
        }
    }
    // ClickHouse, every table the rows reach.
    let mut stored = Vec::new();
    for table in ["events", "alerts", "sessions", "session_identity"] {
        stored.extend(
            ch.query(&format!("SELECT * FROM {table} FORMAT JSONEachRow"))
                .unwrap()
                .into_bytes(),
        );
    }
    let webhooks = std::fs::read(&log).unwrap_or_default();
    let report = Command::new(vigil_bin())
        .args(["report", "--since", "1h", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let sessions = Command::new(vigil_bin())
        .args(["alerts", "--json", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    for (name, bytes) in [
        ("spool", &spooled),
        ("ClickHouse", &stored),
        ("webhooks", &webhooks),
        ("report", &report.stdout),
        ("alerts", &sessions.stdout),
    ] {
        assert!(!bytes.is_empty(), "{name} is empty");
        for secret in SECRETS {
            assert!(!contains(bytes, secret), "{name} holds {secret}");
        }
    }
    assert!(contains(&spooled, "[REDACTED:"), "nothing was marked");
    assert!(
        contains(&webhooks, "[REDACTED:"),
        "the webhook saw no marker"
    );
    for line in BENIGN {
        assert!(
            contains(&spooled, line),
            "benign {line:?} was altered or lost"
        );
    }
    ch.stop().unwrap();
}
