//! The anomaly part of the detection bench: a population of users in peer groups whose weeks
//! of history are learnt before a test phase of held-back benign variation and insider
//! behaviours, each scored by the real daemon against the learnt baselines.
//!
//! The history is real: each user's usual sessions are run as login sessions on the real
//! kernel under the daemon, and the recorded events are laid out over four simulated weeks
//! (each copy of a session moved to a day and an hour of that user's habits) and learnt through
//! the daemon's own learning path (`vigil baselines learn`). The test sessions then run live,
//! now, against that state: the hours of each user's habits are chosen relative to the hour the
//! bench runs at.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::run_ok;

/// What a test session is, and what it should raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Benign: no anomaly alert.
    Benign(&'static str),
    /// An insider behaviour: this anomaly kind.
    Insider(&'static str),
}

/// One member of the population and their part in the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Hoarder,
    SensitiveTree,
    NewDestination,
    NightWorker,
    PeerUniqueBinary,
    /// Usually works hours before the bench's hour, now and then at it (a late evening).
    Ordinary,
    /// No history on this host: a colleague's usual host, new to them.
    Newcomer,
    NewcomerTool,
}

const ROLES: [Role; 8] = [
    Role::Hoarder,
    Role::SensitiveTree,
    Role::NewDestination,
    Role::NightWorker,
    Role::PeerUniqueBinary,
    Role::Ordinary,
    Role::Newcomer,
    Role::NewcomerTool,
];
pub const GROUPS: [&str; 3] = ["sre", "dba", "dev"];
pub const HISTORY_DAYS: i64 = 28;
const HOUR_NS: i64 = 3_600_000_000_000;
const DAY_NS: i64 = 24 * HOUR_NS;
const HOARD_BYTES: u64 = 300 << 20;

struct Member {
    name: String,
    uid: u32,
    group: &'static str,
    role: Role,
}

impl Member {
    fn has_history(&self) -> bool {
        !matches!(self.role, Role::Newcomer | Role::NewcomerTool)
    }

    /// Hour offsets (from the bench's hour) of this member's habits, one per simulated day.
    fn hour_offset(&self, day: i64) -> i64 {
        match self.role {
            Role::NightWorker => 6 + day % 3,
            Role::Ordinary if day % 4 == 0 => 0,
            Role::Ordinary => -6 + day % 3,
            _ => day % 3 - 1,
        }
    }
}

/// One test session.
pub struct Case {
    pub expect: Expect,
    pub user: String,
    script: String,
    uid: u32,
}

/// The population (accounts, the identity mapping) and the fixtures of its work; accounts and
/// fixtures removed on drop.
pub struct Population {
    members: Vec<Member>,
    pub mapping: PathBuf,
    work: PathBuf,
    ports: BTreeMap<&'static str, u16>,
    new_port: u16,
    address: String,
    _listeners: Vec<TcpListener>,
}

/// Where the bench's fixtures live outside its work directory (a sensitive tree under /root,
/// a tool no package installed, a large file to hoard).
const VAULT: &str = "/root/vigil-bench-vault";
const TOOLS: &str = "/tmp/vigil-bench-tools";
const HOARD: &str = "/tmp/vigil-bench-hoard";

fn listener() -> TcpListener {
    let l = TcpListener::bind("0.0.0.0:0").expect("bind");
    let l2 = l.try_clone().expect("listener");
    std::thread::spawn(move || for _c in l2.incoming() {});
    l
}

impl Population {
    /// Accounts in the population.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Creates the accounts (uids from `base_uid`) and fixtures; `address`: a non-loopback
    /// address of this host, where the usual (and the new) destinations listen.
    pub fn create(work: &Path, base_uid: u32, address: &str) -> Population {
        let mut members = Vec::new();
        let mut mapping = String::from("username,person,email,team,role,peer_group\n");
        for (g, group) in GROUPS.iter().enumerate() {
            for (r, role) in ROLES.iter().enumerate() {
                let uid = base_uid + (g * ROLES.len() + r) as u32;
                let name = format!("vb-{group}-{r}");
                let exists = Command::new("id")
                    .arg(&name)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !exists {
                    run_ok(Command::new("useradd").args([
                        "-M",
                        "-N",
                        "-s",
                        "/bin/bash",
                        "-u",
                        &uid.to_string(),
                        &name,
                    ]));
                }
                mapping.push_str(&format!(
                    "{name},Bench {name},{name}@bench.invalid,{group},{role:?},{group}\n"
                ));
                members.push(Member {
                    name,
                    uid,
                    group,
                    role: *role,
                });
            }
        }
        let mapping_path = work.join("identity.csv");
        std::fs::write(&mapping_path, mapping).expect("identity mapping");
        std::fs::create_dir_all(VAULT).expect("vault");
        std::fs::write(format!("{VAULT}/ledger.csv"), "account,amount\n1,100\n").expect("ledger");
        std::fs::create_dir_all(TOOLS).expect("tools");
        std::fs::copy("/usr/bin/find", format!("{TOOLS}/sweep")).expect("copy find");
        std::fs::copy("/usr/bin/stat", format!("{TOOLS}/probe")).expect("copy stat");
        let hoard = std::fs::File::create(HOARD).expect("hoard");
        hoard.set_len(HOARD_BYTES).expect("hoard size");
        let listeners: Vec<TcpListener> = (0..4).map(|_| listener()).collect();
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port()).unwrap_or(0);
        let ports = BTreeMap::from([("sre", port(0)), ("dba", port(1)), ("dev", port(2))]);
        let new_port = port(3);
        Population {
            members,
            mapping: mapping_path,
            work: work.to_path_buf(),
            ports,
            new_port,
            address: address.to_string(),
            _listeners: listeners,
        }
    }

    fn tasks(&self, group: &str) -> Vec<String> {
        let port = self.ports.get(group).copied().unwrap_or(0);
        let ip = &self.address;
        let mut tasks: Vec<String> = match group {
            "sre" => vec![
                "systemctl is-active cron > /dev/null 2>&1; true".into(),
                "journalctl -n 20 --no-pager > /dev/null 2>&1; true".into(),
                "df -h > /dev/null".into(),
                "ps aux > /dev/null".into(),
                "cat /etc/ssh/sshd_config > /dev/null".into(),
            ],
            "dba" => vec![
                "sha256sum /etc/hosts > /dev/null".into(),
                "sort /etc/passwd | head -n 3 > /dev/null".into(),
                "tar czf /tmp/vigil-bench-dump-$$.tgz -C /etc hostname 2>/dev/null; rm -f /tmp/vigil-bench-dump-$$.tgz".into(),
                "du -sh /var/log > /dev/null 2>&1; true".into(),
            ],
            _ => vec![
                "git --version > /dev/null".into(),
                "make --version > /dev/null".into(),
                "python3 -c 'print(1)' > /dev/null".into(),
                "grep -c root /etc/passwd > /dev/null".into(),
            ],
        };
        tasks.push(format!("exec 3<>/dev/tcp/{ip}/{port}; exec 3>&-"));
        tasks.extend(
            [
                "ls -la /etc > /dev/null",
                "uptime > /dev/null",
                "id > /dev/null",
            ]
            .map(String::from),
        );
        tasks
    }

    /// Each member's usual sessions, to be recorded for the history: (uid, script).
    pub fn usual_sessions(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for m in self.members.iter().filter(|m| m.has_history()) {
            let mut tasks = self.tasks(m.group);
            if m.role == Role::Hoarder {
                // Their own habit, which a colleague may pick up (a binary the group knows).
                tasks.push("stat /etc/hostname > /dev/null".into());
            }
            out.push((m.uid, tasks.join("; ")));
            tasks.reverse();
            out.push((m.uid, tasks.join("; ")));
        }
        out
    }

    /// Lays the recorded usual sessions (`events`: the daemon's whole stream) over the weeks
    /// before `now_ns`, at each member's hours; returns the history file.
    pub fn write_history(&self, events: &[Value], now_ns: i64) -> PathBuf {
        let hour = now_ns.div_euclid(HOUR_NS) * HOUR_NS;
        // Recorded sessions per member: sessionid -> events, in order.
        let mut by_user: BTreeMap<u32, BTreeMap<u64, Vec<&Value>>> = BTreeMap::new();
        for e in events {
            let (Some(uid), Some(sid)) = (
                e["process"]["loginuid"].as_u64(),
                e["process"]["sessionid"].as_u64(),
            ) else {
                continue;
            };
            if e["type"] == "alert" || !self.members.iter().any(|m| m.uid as u64 == uid) {
                continue;
            }
            by_user
                .entry(uid as u32)
                .or_default()
                .entry(sid)
                .or_default()
                .push(e);
        }
        let path = self.work.join("history.jsonl");
        let mut out = String::new();
        for m in self.members.iter().filter(|m| m.has_history()) {
            let Some(sessions) = by_user.get(&m.uid) else {
                panic!(
                    "no recorded session of {} to build its history from",
                    m.name
                );
            };
            let sessions: Vec<&Vec<&Value>> = sessions.values().collect();
            for day in 1..=HISTORY_DAYS {
                let recorded = sessions[day as usize % sessions.len()];
                let first = recorded
                    .iter()
                    .filter_map(|e| e["time_ns"].as_i64())
                    .min()
                    .unwrap_or(0);
                let at =
                    hour + m.hour_offset(day) * HOUR_NS - day * DAY_NS + 5 * 60 * 1_000_000_000;
                for e in recorded {
                    let mut e = (*e).clone();
                    let t = e["time_ns"].as_i64().unwrap_or(first) - first + at;
                    e["time_ns"] = t.into();
                    e["time"] = vigil::decode::rfc3339(t).into();
                    out.push_str(&e.to_string());
                    out.push('\n');
                }
            }
        }
        std::fs::write(&path, out).expect("history");
        path
    }

    /// The test phase: held-back benign variation, then the insider behaviours.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        let mut add = |m: &Member, expect: Expect, script: String| {
            cases.push(Case {
                expect,
                user: m.name.clone(),
                script,
                uid: m.uid,
            })
        };
        for m in &self.members {
            let tasks = self.tasks(m.group);
            let n = tasks.len();
            if m.role != Role::NightWorker && m.role != Role::NewcomerTool {
                // Ordinary days: a different few of the usual tasks each time.
                for k in 0..4 {
                    let some: Vec<&str> = (0..3)
                        .map(|i| tasks[(k * 2 + i * 3) % n].as_str())
                        .collect();
                    let why = if m.role == Role::Newcomer {
                        "usual work of the peer group, on a host new to them"
                    } else if m.role == Role::Ordinary {
                        "usual work, late in the evening"
                    } else {
                        "usual work"
                    };
                    add(m, Expect::Benign(why), some.join("; "));
                }
            }
            let usual = tasks[0].clone();
            match m.role {
                Role::Ordinary => {
                    add(
                        m,
                        Expect::Benign("a binary a colleague runs"),
                        format!("{usual}; stat /etc/hostname > /dev/null"),
                    );
                    add(
                        m,
                        Expect::Benign("a new but ordinary (packaged) binary"),
                        format!("{usual}; lscpu > /dev/null"),
                    );
                }
                Role::Hoarder => add(
                    m,
                    Expect::Insider("anomaly-volume"),
                    format!("{usual}; dd if={HOARD} of=/dev/null bs=1M 2>/dev/null"),
                ),
                Role::SensitiveTree => add(
                    m,
                    Expect::Insider("anomaly-new-sensitive-path"),
                    format!("{usual}; cat {VAULT}/ledger.csv > /dev/null"),
                ),
                Role::NewDestination => add(
                    m,
                    Expect::Insider("anomaly-new-destination"),
                    format!(
                        "{usual}; exec 3<>/dev/tcp/{}/{}; exec 3>&-",
                        self.address, self.new_port
                    ),
                ),
                Role::NightWorker => add(
                    m,
                    Expect::Insider("anomaly-off-hours"),
                    tasks[..3].join("; "),
                ),
                Role::PeerUniqueBinary => add(
                    m,
                    Expect::Insider("anomaly-new-binary"),
                    format!("{usual}; {TOOLS}/sweep /etc -maxdepth 0 > /dev/null"),
                ),
                // Another tool than the colleague's above: once one of the group ran a program,
                // the group knows it.
                Role::NewcomerTool => add(
                    m,
                    Expect::Insider("anomaly-new-binary"),
                    format!("{usual}; {TOOLS}/probe /etc/hostname > /dev/null"),
                ),
                Role::Newcomer => {}
            }
        }
        // Benign first: an insider's session must not teach the baselines before a benign one.
        cases.sort_by_key(|c| matches!(c.expect, Expect::Insider(_)));
        cases
    }
}

impl Case {
    /// The case's script, marked so its session can be found in the stream.
    pub fn run(&self, helper: &str, home: &Path, index: usize) {
        crate::login_session(
            helper,
            self.uid,
            home,
            &format!(": vb-case-{index}; {}", self.script),
        );
    }
}

/// The session id of each case (by its marker in the shell's command line).
pub fn case_sessions(events: &[Value], count: usize) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "exec") {
        let Some(sid) = e["process"]["sessionid"].as_u64() else {
            continue;
        };
        let argv = e["argv"].to_string();
        if let Some(i) = argv.split("vb-case-").nth(1).and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        }) {
            if i < count {
                out.entry(sid).or_insert(i);
            }
        }
    }
    out
}

impl Drop for Population {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = Command::new("userdel")
                .arg(&m.name)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(VAULT);
        let _ = std::fs::remove_dir_all(TOOLS);
        let _ = std::fs::remove_file(HOARD);
    }
}
