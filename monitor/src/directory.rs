//! The corporate directory: an export from the identity provider (CSV or YAML) mapping host
//! user names to a person, email, team, role and peer group. Sessions carry the entry of their
//! login user, so `alice` on a host reads as Alice Example of the platform team.
//!
//! Every problem in the file is reported at once, each with its place (CSV line, or YAML entry),
//! so an export can be fixed in one pass.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// A person behind a host account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorporateIdentity {
    pub person: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whom this person is compared with (baselines); the team when the file does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read identity mapping {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity mapping {path}: the file name must end in .csv, .yaml or .yml")]
    UnknownFormat { path: PathBuf },
    #[error("identity mapping {path}:\n  {}", problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// One row as written in the file, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    person: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    peer_group: Option<String>,
}

/// The YAML form: a list of records, or `people:` holding one.
#[derive(Deserialize)]
#[serde(untagged)]
enum YamlFile {
    List(Vec<yaml_serde::Value>),
    People { people: Vec<yaml_serde::Value> },
}

const COLUMNS: &[&str] = &["username", "person", "email", "team", "role", "peer_group"];

#[derive(Debug, Default, Clone)]
pub struct Directory {
    by_user: HashMap<String, Arc<CorporateIdentity>>,
}

fn clean(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn valid_email(e: &str) -> bool {
    let mut parts = e.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                && !domain.ends_with('.') && !e.chars().any(char::is_whitespace)
    )
}

impl Directory {
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let parsed = match ext.as_deref() {
            Some("csv") => Directory::from_csv(&text),
            Some("yaml" | "yml") => Directory::from_yaml(&text),
            _ => {
                return Err(DirectoryError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        parsed.map_err(|problems| DirectoryError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Records with their place in the file ("line 4"), validated together.
    fn build(
        records: Vec<(String, Record)>,
        mut problems: Vec<String>,
    ) -> Result<Self, Vec<String>> {
        let mut by_user = HashMap::new();
        let mut first_seen: HashMap<String, String> = HashMap::new();
        for (place, r) in records {
            let username = clean(r.username);
            let person = clean(r.person);
            let Some(username) = username else {
                problems.push(format!("{place}: username is missing"));
                continue;
            };
            if username
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '/')
            {
                problems.push(format!(
                    "{place}: username `{}` is not a valid account name",
                    username.escape_debug()
                ));
                continue;
            }
            if let Some(earlier) = first_seen.get(&username) {
                problems.push(format!(
                    "{place}: username `{username}` is already mapped at {earlier}"
                ));
                continue;
            }
            first_seen.insert(username.clone(), place.clone());
            let Some(person) = person else {
                problems.push(format!("{place}: person is missing for `{username}`"));
                continue;
            };
            let email = clean(r.email);
            if let Some(e) = &email {
                if !valid_email(e) {
                    problems.push(format!(
                        "{place}: email `{}` of `{username}` is not an address",
                        e.escape_debug()
                    ));
                    continue;
                }
            }
            let team = clean(r.team);
            let peer_group = clean(r.peer_group).or_else(|| team.clone());
            by_user.insert(
                username,
                Arc::new(CorporateIdentity {
                    person,
                    email,
                    team,
                    role: clean(r.role),
                    peer_group,
                }),
            );
        }
        if problems.is_empty() {
            Ok(Directory { by_user })
        } else {
            Err(problems)
        }
    }

    pub fn from_csv(text: &str) -> Result<Self, Vec<String>> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(vec![format!("header: {e}")]),
        };
        let mut problems = Vec::new();
        for h in headers.iter() {
            if !COLUMNS.contains(&h) {
                problems.push(format!(
                    "line 1: unknown column `{}` (known: {})",
                    h.escape_debug(),
                    COLUMNS.join(", ")
                ));
            }
        }
        for required in ["username", "person"] {
            if !headers.iter().any(|h| h == required) {
                problems.push(format!("line 1: the `{required}` column is missing"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut records = Vec::new();
        for row in reader.records() {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    problems.push(format!("line {line}: {e}"));
                    continue;
                }
            };
            let line = row.position().map(|p| p.line()).unwrap_or(0);
            let field = |name: &str| {
                headers
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| row.get(i))
                    .map(str::to_string)
            };
            records.push((
                format!("line {line}"),
                Record {
                    username: field("username"),
                    person: field("person"),
                    email: field("email"),
                    team: field("team"),
                    role: field("role"),
                    peer_group: field("peer_group"),
                },
            ));
        }
        Directory::build(records, problems)
    }

    pub fn from_yaml(text: &str) -> Result<Self, Vec<String>> {
        let file: YamlFile = yaml_serde::from_str(text).map_err(|e| {
            vec![format!(
                "{e} (expected a list of entries with username, person, email, team, role, \
                 peer_group, or `people:` holding one)"
            )]
        })?;
        let values = match file {
            YamlFile::List(v) | YamlFile::People { people: v } => v,
        };
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            let hint = value
                .get("username")
                .and_then(|u| u.as_str())
                .map(|u| format!(" (username {u})"))
                .unwrap_or_default();
            let place = format!("entry {}{hint}", i + 1);
            match yaml_serde::from_value::<Record>(value) {
                Ok(r) => records.push((place, r)),
                Err(e) => problems.push(format!("{place}: {e}")),
            }
        }
        Directory::build(records, problems)
    }

    pub fn get(&self, username: &str) -> Option<Arc<CorporateIdentity>> {
        self.by_user.get(username).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

/// How often the mapping file is checked for a new version.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The directory of a mapping file, reloaded when the file changes. A new version with problems
/// is refused (logged) and the previous one stays in force.
pub struct LiveDirectory {
    path: Option<PathBuf>,
    current: Directory,
    watch: crate::watch::FileWatch,
}

impl LiveDirectory {
    /// No mapping: nobody has a corporate identity.
    pub fn none() -> Self {
        LiveDirectory {
            path: None,
            current: Directory::default(),
            watch: crate::watch::FileWatch::new(Vec::new(), CHECK_EVERY),
        }
    }

    /// Loads `path`; a bad file here is a start-up error.
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        let current = Directory::load(path)?;
        tracing::info!(path = %path.display(), people = current.len(), "identity mapping loaded");
        Ok(LiveDirectory {
            path: Some(path.to_path_buf()),
            current,
            watch: crate::watch::FileWatch::new(vec![path.to_path_buf()], CHECK_EVERY),
        })
    }

    pub fn get(&mut self, username: &str) -> Option<Arc<CorporateIdentity>> {
        if let Some(path) = self.path.as_ref().filter(|_| self.watch.changed()) {
            match Directory::load(path) {
                Ok(d) => {
                    tracing::info!(path = %path.display(), people = d.len(), "identity mapping reloaded");
                    self.current = d;
                }
                Err(e) => {
                    metrics::counter!("vigil_identity_mapping_errors_total").increment(1);
                    tracing::error!("{e}; keeping the previous mapping");
                }
            }
        }
        self.current.get(username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_maps_users_to_people_with_team_as_default_peer_group() {
        let d = Directory::from_csv(
            "username,person,email,team,role\n\
             # exported 2026-11-01\n\
             alice, Alice Example ,alice@example.com,platform,sre\n\
             bob,Bob Builder,,data,\n",
        )
        .unwrap();
        let a = d.get("alice").unwrap();
        assert_eq!(a.person, "Alice Example");
        assert_eq!(a.email.as_deref(), Some("alice@example.com"));
        assert_eq!(a.peer_group.as_deref(), Some("platform"));
        let b = d.get("bob").unwrap();
        assert_eq!(b.email, None);
        assert_eq!(b.role, None);
        assert!(d.get("carol").is_none());
    }

    #[test]
    fn csv_problems_are_all_reported_with_their_lines() {
        let err = Directory::from_csv(
            "username,person,email\n\
             alice,Alice,alice@example.com\n\
             alice,Alice Again,a2@example.com\n\
             ,Nobody,\n\
             carol,,carol@example.com\n\
             dave,Dave,not-an-address\n",
        )
        .unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
        assert!(err[0].starts_with("line 3: username `alice` is already mapped at line 2"));
        assert!(err[1].starts_with("line 4: username is missing"));
        assert!(err[2].starts_with("line 5: person is missing for `carol`"));
        assert!(err[3].contains("line 6: email `not-an-address`"));
    }

    #[test]
    fn csv_header_must_name_known_columns() {
        let err = Directory::from_csv("user,person,manager\nalice,Alice,bob\n").unwrap_err();
        assert!(
            err.iter().any(|e| e.contains("unknown column `user`")),
            "{err:?}"
        );
        assert!(err.iter().any(|e| e.contains("unknown column `manager`")));
        assert!(err
            .iter()
            .any(|e| e.contains("`username` column is missing")));
        let err = Directory::from_csv("username,person\nalice,Alice,extra\n").unwrap_err();
        assert!(err[0].starts_with("line 2:"), "{err:?}");
    }

    #[test]
    fn yaml_list_or_people_key() {
        let d = Directory::from_yaml(
            "people:\n  - username: alice\n    person: Alice\n    peer_group: sre\n",
        )
        .unwrap();
        assert_eq!(d.get("alice").unwrap().peer_group.as_deref(), Some("sre"));
        let d = Directory::from_yaml("- {username: bob, person: Bob, team: data}\n").unwrap();
        assert_eq!(d.get("bob").unwrap().team.as_deref(), Some("data"));
        let err =
            Directory::from_yaml("- {username: bob, person: Bob, tema: data}\n- {username: eve}\n")
                .unwrap_err();
        assert!(
            err[0].starts_with("entry 1 (username bob): unknown field `tema`"),
            "{err:?}"
        );
        assert!(err[1].starts_with("entry 2 (username eve): person is missing"));
        assert!(Directory::from_yaml("just text").is_err());
    }

    #[test]
    fn file_format_comes_from_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("people.json");
        std::fs::write(&p, "{}").unwrap();
        assert!(matches!(
            Directory::load(&p),
            Err(DirectoryError::UnknownFormat { .. })
        ));
        let p = dir.path().join("people.csv");
        std::fs::write(&p, "username,person\nalice,\n").unwrap();
        let msg = Directory::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("people.csv") && msg.contains("line 2"),
            "{msg}"
        );
    }
}
