//! Rules files: YAML lists of detections, each with an expression in the rule language. Every
//! problem is reported with the file, the line of the rule, and what is wrong; a file with
//! problems is refused whole.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::expr::{self, Expr};

pub const BUILTIN_RULES: &str = include_str!("builtin-rules.yaml");

pub use crate::event::Severity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: String,
    title: String,
    technique: String,
    severity: Severity,
    risk: u32,
    when: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "enabled")]
    enabled: bool,
    /// Responses when it matches (the respond stage carries them out, `respond.mode` permitting).
    #[serde(default)]
    actions: Vec<crate::event::ResponseAction>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<yaml_serde::Value>,
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub title: String,
    /// MITRE ATT&CK technique id (`T1003.008`).
    pub technique: String,
    pub severity: Severity,
    pub risk: u32,
    pub when: Expr,
    pub description: Option<String>,
    /// Responses the rule asks for: only restricting ones (kill, hold, deny, lock).
    pub actions: Vec<crate::event::ResponseAction>,
    /// Where it came from (`file:line`).
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", problems.join("\n"))]
    Invalid { problems: Vec<String> },
}

/// The line (1-based) where the rule with `id` is declared in `text`, for messages.
fn line_of(text: &str, id: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix("id:")
                .map(|rest| rest.trim().trim_matches(|c| c == '"' || c == '\'') == id)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

fn valid_technique(t: &str) -> bool {
    let b = t.as_bytes();
    let base = b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit);
    base && (b.len() == 5
        || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
}

/// Parses one rules file's text; `name` is how messages name it.
pub fn parse_rules(text: &str, name: &str) -> Result<Vec<Rule>, RulesError> {
    let file: RulesFile = yaml_serde::from_str(text).map_err(|e| RulesError::Invalid {
        problems: vec![format!(
            "{name}{}: {e}",
            e.location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default()
        )],
    })?;
    let mut problems = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    for (i, value) in file.rules.into_iter().enumerate() {
        let id_hint = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
        let line = id_hint.as_deref().and_then(|id| line_of(text, id));
        let at = match (line, &id_hint) {
            (Some(l), Some(id)) => format!("{name}:{l}: rule `{id}`"),
            _ => format!("{name}: rule #{}", i + 1),
        };
        let def: RuleDef = match yaml_serde::from_value(value) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        if !def.enabled {
            continue;
        }
        if def.id.is_empty()
            || !def
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!("{at}: id must be letters, digits, - and _"));
        }
        if let Some(earlier) = rules.iter().find(|r| r.id == def.id) {
            problems.push(format!(
                "{at}: id `{}` is already used at {}",
                def.id, earlier.origin
            ));
        }
        if !valid_technique(&def.technique) {
            problems.push(format!(
                "{at}: technique `{}` is not a MITRE ATT&CK id (T1234 or T1234.001)",
                def.technique
            ));
        }
        if let Some(a) = def.actions.iter().find(|a| !a.restricts()) {
            problems.push(format!(
                "{at}: action `{a}` lifts a response; a rule may only ask for kill_process, kill_session, hold_session, deny_exec, deny_connect or lock_account"
            ));
        }
        if def.risk > 100 {
            problems.push(format!("{at}: risk {} is above 100", def.risk));
        }
        match expr::parse(&def.when) {
            Ok(when) => rules.push(Rule {
                origin: format!("{name}:{}", line.unwrap_or(0)),
                id: def.id,
                title: def.title,
                technique: def.technique,
                severity: def.severity,
                risk: def.risk,
                when,
                description: def.description,
                actions: def.actions,
            }),
            Err(e) => problems.push(format!("{at}: when: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(RulesError::Invalid { problems })
    }
}

/// The built-in rules and the configured files, merged (a file's rule replaces a built-in one
/// with the same id).
pub fn load(builtin: bool, files: &[PathBuf]) -> Result<Vec<Rule>, RulesError> {
    let mut all = if builtin {
        parse_rules(BUILTIN_RULES, "built-in rules")?
    } else {
        Vec::new()
    };
    let mut problems = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        match parse_rules(&text, &path.display().to_string()) {
            Ok(rules) => {
                for r in rules {
                    all.retain(|x| x.id != r.id);
                    all.push(r);
                }
            }
            Err(RulesError::Invalid { problems: p }) => problems.extend(p),
            Err(e) => return Err(e),
        }
    }
    if problems.is_empty() {
        Ok(all)
    } else {
        Err(RulesError::Invalid { problems })
    }
}

/// Rules reloaded when a rules file changes; a version with problems is refused (logged, and
/// counted in `vigil_rules_reload_errors_total`) and the rules in force stay.
pub struct LiveRules {
    builtin: bool,
    watch: crate::watch::FileWatch,
    pub rules: Vec<Rule>,
    /// Bumped at each reload.
    pub generation: u64,
}

const CHECK_EVERY: Duration = Duration::from_secs(1);

impl LiveRules {
    pub fn open(builtin: bool, files: &[PathBuf]) -> Result<Self, RulesError> {
        let rules = load(builtin, files)?;
        tracing::info!(rules = rules.len(), "detection rules loaded");
        Ok(LiveRules {
            builtin,
            watch: crate::watch::FileWatch::new(files.to_vec(), CHECK_EVERY),
            rules,
            generation: 0,
        })
    }

    /// Reloads if a file changed; true when the rules changed.
    pub fn refresh(&mut self) -> bool {
        if !self.watch.changed() {
            return false;
        }
        match load(self.builtin, self.watch.paths()) {
            Ok(rules) => {
                tracing::info!(rules = rules.len(), "detection rules reloaded");
                metrics::counter!("vigil_rules_reloads_total").increment(1);
                self.rules = rules;
                self.generation += 1;
                true
            }
            Err(e) => {
                metrics::counter!("vigil_rules_reload_errors_total").increment(1);
                tracing::error!("rules not reloaded, keeping the rules in force:\n{e}");
                false
            }
        }
    }
}

pub fn path_for_messages(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load_and_carry_techniques() {
        let rules = parse_rules(BUILTIN_RULES, "built-in").unwrap();
        assert!(rules.len() >= 15);
        assert!(rules.iter().all(|r| valid_technique(&r.technique)));
    }

    #[test]
    fn problems_name_the_file_line_and_rule() {
        let text = "rules:\n  - id: ok-rule\n    title: fine\n    technique: T1000\n    severity: low\n    risk: 1\n    when: type == \"exec\"\n  - id: bad-expr\n    title: x\n    technique: T1003.008\n    severity: high\n    risk: 10\n    when: type == \"exec\" and pth == \"/x\"\n  - id: bad-meta\n    title: x\n    technique: \"1003\"\n    severity: urgent\n    risk: 10\n    when: type == \"exec\"\n  - id: ok-rule\n    title: dup\n    technique: T1000\n    severity: low\n    risk: 200\n    when: ok\n";
        let Err(RulesError::Invalid { problems }) = parse_rules(text, "mine.yaml") else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0]
                .starts_with("mine.yaml:8: rule `bad-expr`: when: column 20: unknown field `pth`"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("mine.yaml:14: rule `bad-meta`:")
                && problems[1].contains("unknown variant `urgent`"),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("id `ok-rule` is already used at mine.yaml:2"),
            "{problems:#?}"
        );
        assert!(
            problems[3].contains("risk 200 is above 100"),
            "{problems:#?}"
        );
    }

    #[test]
    fn rules_may_ask_for_restricting_actions_only() {
        let rule = |actions: &str| {
            format!("rules:\n  - id: r\n    title: t\n    technique: T1005\n    severity: high\n    risk: 10\n    actions: {actions}\n    when: type == \"exec\"\n")
        };
        let rules = parse_rules(&rule("[kill_session, deny_connect]"), "a.yaml").unwrap();
        assert_eq!(
            rules[0].actions,
            [
                crate::event::ResponseAction::KillSession,
                crate::event::ResponseAction::DenyConnect
            ]
        );
        let Err(RulesError::Invalid { problems }) =
            parse_rules(&rule("[unlock_account]"), "b.yaml")
        else {
            panic!("a lifting action was accepted")
        };
        assert!(
            problems[0].contains("`unlock_account` lifts a response"),
            "{problems:#?}"
        );
        let Err(RulesError::Invalid { problems }) = parse_rules(&rule("[explode]"), "c.yaml")
        else {
            panic!("an unknown action was accepted")
        };
        assert!(
            problems[0].contains("unknown variant `explode`"),
            "{problems:#?}"
        );
    }
}
