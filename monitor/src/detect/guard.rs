//! Which rules can match an event, decided before any rule is evaluated: by the event's type,
//! and then by its path, once per distinct path.
//!
//! A rule that cannot hold for a type (every branch of it tests `type` for another) is never
//! evaluated on that type's events. Most rules on an open also name the files they are about
//! (`path in [...]`, `path matches ...`) beside conditions on other fields, and most opens are of
//! files no rule names. What a rule needs of the path ([`Expr::guard_on`]) reads the path and
//! nothing else, so its outcome for a path is the same on every event that has it: worked out on
//! the first and remembered, a rule whose path guard fails is skipped. A rule is still evaluated
//! whole wherever its guard holds, so this only ever skips a rule that could not match.
//!
//! Bounded against a user who opens a new name on every call: paths longer than [`MAX_PATH`]
//! are not remembered, and a type's table is emptied once it holds [`MAX_PATHS`]. Either way the
//! rules are then decided as they would be without it: the cost is what it was, and nothing is
//! missed.

use std::{borrow::Cow, collections::HashMap};

use super::expr::{Expr, Field, Fields, Guard, Value};
use crate::event::EventType;

/// Longest path remembered, in bytes.
const MAX_PATH: usize = 512;
/// Paths remembered at once, per event type.
const MAX_PATHS: usize = 4096;

/// Evaluates path guards against one path (they read no other field).
struct PathOnly<'a>(&'a str);

impl Fields for PathOnly<'_> {
    fn get(&self, field: Field) -> Value<'_> {
        match field {
            Field::Path => Value::Str(self.0.into()),
            _ => Value::Missing,
        }
    }
}

/// The rules that can match events of one type.
#[derive(Default)]
pub struct Candidates {
    /// Rule index among the rules, and the index of its path guard in `guards`, if it has one.
    rules: Vec<(usize, Option<usize>)>,
    guards: Vec<Expr>,
    /// Per path: which guards hold for it.
    verdicts: HashMap<Box<str>, Box<[bool]>>,
}

impl Candidates {
    /// Indexes `rules` (their conditions, in rule order) by the types they can match.
    pub fn index<'a>(rules: impl Iterator<Item = &'a Expr> + Clone) -> HashMap<EventType, Self> {
        let mut by_type = HashMap::new();
        for &ty in EventType::ALL {
            let mut c = Candidates::default();
            for (i, when) in rules.clone().enumerate() {
                match when.guard_on(Field::Path, ty) {
                    Guard::Never => {}
                    Guard::Any => c.rules.push((i, None)),
                    Guard::On(guard) => {
                        c.guards.push(guard);
                        c.rules.push((i, Some(c.guards.len() - 1)));
                    }
                }
            }
            if !c.rules.is_empty() {
                by_type.insert(ty, c);
            }
        }
        by_type
    }

    /// The rules (by index) that an event with this `path` (its `Fields` value) leaves to
    /// evaluate, in rule order.
    pub fn in_play<'a>(&'a mut self, path: &Value<'_>) -> impl Iterator<Item = usize> + 'a {
        let held = match path {
            Value::Str(path) if !self.guards.is_empty() => {
                Some(held(&self.guards, &mut self.verdicts, path))
            }
            // No path (or nothing to decide on it): every condition on the path is left to the
            // rule (`not path == x` holds on an event without one).
            _ => None,
        };
        self.rules.iter().filter_map(move |&(rule, guard)| {
            let open = match (&held, guard) {
                (Some(held), Some(g)) => held.get(g).copied().unwrap_or(true),
                _ => true,
            };
            open.then_some(rule)
        })
    }
}

/// Which of `guards` hold for `path`: remembered, or worked out (and remembered if it fits).
fn held<'a>(
    guards: &[Expr],
    verdicts: &'a mut HashMap<Box<str>, Box<[bool]>>,
    path: &str,
) -> Cow<'a, [bool]> {
    let evaluate = || -> Box<[bool]> {
        let only = PathOnly(path);
        guards.iter().map(|g| g.eval(&only)).collect()
    };
    if path.len() > MAX_PATH {
        return Cow::Owned(evaluate().into_vec());
    }
    if !verdicts.contains_key(path) {
        if verdicts.len() >= MAX_PATHS {
            verdicts.clear();
        }
        verdicts.insert(path.into(), evaluate());
    }
    match verdicts.get(path) {
        Some(v) => Cow::Borrowed(&v[..]),
        None => Cow::Owned(evaluate().into_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::expr::parse;

    fn index(rules: &[&str]) -> HashMap<EventType, Candidates> {
        let exprs: Vec<Expr> = rules.iter().map(|r| parse(r).unwrap()).collect();
        Candidates::index(exprs.iter())
    }

    fn in_play(
        c: &mut HashMap<EventType, Candidates>,
        ty: EventType,
        path: Option<&str>,
    ) -> Vec<usize> {
        let value = path.map(|p| Value::Str(p.into())).unwrap_or(Value::Missing);
        match c.get_mut(&ty) {
            Some(c) => c.in_play(&value).collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn a_rule_is_skipped_only_where_its_type_or_path_conditions_fail() {
        use EventType::{Connect, Exec, Open};
        let mut c = index(&[
            r#"type == "open" and path in ["/etc/shadow", "/etc/gshadow"] and not process.name == "sudo""#,
            r#"type == "open" and path matches "/\.ssh/id_[^/]*$" and not path endswith ".pub""#,
            // A path condition under `or` beside another field decides nothing alone.
            r#"type == "open" and (path == "/etc/shadow" or process.uid == 0)"#,
            r#"type == "exec" and filename endswith "/crontab""#,
            r#"(type == "exec" and argv contains "/var/log/x") or (type == "open" and path startswith "/var/log/")"#,
        ]);
        assert_eq!(in_play(&mut c, Open, Some("/tmp/data.bin")), [2]);
        assert_eq!(in_play(&mut c, Open, Some("/etc/shadow")), [0, 2]);
        assert_eq!(in_play(&mut c, Open, Some("/root/.ssh/id_ed25519")), [1, 2]);
        assert_eq!(
            in_play(&mut c, Open, Some("/root/.ssh/id_ed25519.pub")),
            [2]
        );
        assert_eq!(in_play(&mut c, Open, Some("/var/log/auth.log")), [2, 4]);
        // Asked again: the remembered verdict is the same.
        assert_eq!(in_play(&mut c, Open, Some("/etc/shadow")), [0, 2]);
        // No path at all: every rule for the type is evaluated as it stands.
        assert_eq!(in_play(&mut c, Open, None), [0, 1, 2, 4]);
        // By type: an exec has no path, and no rule here is about connects.
        assert_eq!(in_play(&mut c, Exec, None), [3, 4]);
        assert_eq!(in_play(&mut c, Connect, None), Vec::<usize>::new());
    }

    #[test]
    fn new_names_on_every_call_neither_grow_the_table_nor_change_a_verdict() {
        let mut c = index(&[r#"type == "open" and path startswith "/etc/""#]);
        for i in 0..(3 * MAX_PATHS) {
            let path = format!("/tmp/f{i}");
            assert!(in_play(&mut c, EventType::Open, Some(&path)).is_empty());
            assert!(c[&EventType::Open].verdicts.len() <= MAX_PATHS);
        }
        let long = format!("/etc/{}", "a".repeat(MAX_PATH));
        assert_eq!(in_play(&mut c, EventType::Open, Some(&long)), [0]);
        assert!(!c[&EventType::Open].verdicts.contains_key(long.as_str()));
    }

    #[test]
    fn every_builtin_rule_still_reaches_the_types_it_names() {
        // The index drops a rule for a type only where the rule cannot hold for it: every
        // built-in rule is a candidate for at least one type.
        let rules = crate::detect::rules::parse_rules(crate::detect::rules::BUILTIN_RULES, "b")
            .expect("built-in rules");
        let by_type = Candidates::index(rules.iter().map(|r| &r.when));
        for (i, r) in rules.iter().enumerate() {
            assert!(
                by_type
                    .values()
                    .any(|c| c.rules.iter().any(|&(j, _)| j == i)),
                "{} is evaluated on no event type",
                r.id
            );
        }
    }
}
