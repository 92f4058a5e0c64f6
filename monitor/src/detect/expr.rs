//! The rule expression language: comparisons of event and session fields, combined with `and`,
//! `or`, `not` and parentheses.
//!
//! ```text
//! type == "file_read" and (path in ["/etc/shadow", "/etc/gshadow"] or path matches "^/root/\.ssh/id_")
//! type == "exec" and filename endswith "/crontab" and not argv contains "-l"
//! ```
//!
//! Operators: `==` `!=` `<` `<=` `>` `>=` `in` `contains` `startswith` `endswith` `matches`
//! (a regular expression). On a list field (argv, ancestry), `contains` tests for an element
//! and `startswith`/`endswith`/`matches` for any element. A field the event does not have makes
//! its comparison false. Fields are checked when the rule is loaded (see [`Field`]), and a
//! literal compared with a field of a closed vocabulary must be one of its words.
//!
//! Hand-written rather than an embedded language (CEL, Rhai): rules must be checked against the
//! event schema at load, with the line and column of each mistake, and evaluated per event
//! without allocation for the common comparisons.

use std::borrow::Cow;

use regex::Regex;

pub use super::fields::{Field, Kind};

/// A field's value for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    List(Vec<Cow<'a, str>>),
    Missing,
}

/// Gives field values; implemented by the detector over an event and its session.
pub trait Fields {
    fn get(&self, field: Field) -> Value<'_>;
}

#[derive(Debug, Clone)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
}

#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// A boolean field on its own.
    Flag(Field),
    Cmp {
        field: Field,
        op: Op,
        value: Literal,
        /// Compiled once, for `matches`.
        regex: Option<Regex>,
    },
}

/// What an expression needs of one field on events of one type (see [`Expr::guard_on`]).
#[derive(Debug, Clone)]
pub enum Guard {
    /// It cannot hold on such events.
    Never,
    /// Nothing of the field: it may hold whatever the field's value.
    Any,
    /// It holds only where this condition on the field alone does.
    On(Expr),
}

/// A mistake in an expression, at a column (1-based) of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
    End,
}

struct Lexer {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// Open parentheses and `not`s around the current position.
    depth: usize,
    /// Comparisons, `and`s and `or`s so far.
    nodes: usize,
}

/// Bounds on an expression, so that a hostile rules file is an error rather than a stack
/// overflow (in the parser, the evaluator or the drop of the tree) in a daemon that reloads it.
pub const MAX_NESTING: usize = 64;
pub const MAX_TERMS: usize = 2000;

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let col = |byte: usize| src[..byte].chars().count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = col(at);
        if c == '"' || c == '\'' {
            let quote = c;
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&(_, d)) = chars.get(i) else {
                    return Err(ParseError {
                        column: start,
                        message: "string is not closed".into(),
                    });
                };
                i += 1;
                if d == quote {
                    break;
                }
                if d == '\\' {
                    // Escapes: the quote and the backslash; anything else keeps its backslash
                    // (regular expressions need them).
                    match chars.get(i).map(|&(_, e)| e) {
                        Some(e) if e == quote || e == '\\' => {
                            s.push(e);
                            i += 1;
                        }
                        _ => s.push('\\'),
                    }
                } else {
                    s.push(d);
                }
            }
            out.push((Tok::Str(s), start));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|&(_, d)| d.is_ascii_digit()))
        {
            let from = at;
            i += 1;
            while chars
                .get(i)
                .is_some_and(|&(_, d)| d.is_ascii_digit() || d == '.' || d == '_')
            {
                i += 1;
            }
            let end = chars.get(i).map(|&(b, _)| b).unwrap_or(src.len());
            let text = src[from..end].replace('_', "");
            let n = text.parse::<f64>().map_err(|_| ParseError {
                column: start,
                message: format!("`{text}` is not a number"),
            })?;
            out.push((Tok::Num(n), start));
        } else if c.is_alphabetic() || c == '_' {
            let from = at;
            while chars
                .get(i)
                .is_some_and(|&(_, d)| d.is_alphanumeric() || d == '_' || d == '.')
            {
                i += 1;
            }
            let end = chars.get(i).map(|&(b, _)| b).unwrap_or(src.len());
            out.push((Tok::Ident(src[from..end].to_string()), start));
        } else {
            let two: String = chars[i..].iter().take(2).map(|&(_, c)| c).collect();
            let sym = ["==", "!=", "<=", ">="]
                .into_iter()
                .find(|s| two == *s)
                .or_else(|| {
                    ["<", ">", "(", ")", "[", "]", ","]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                });
            let Some(sym) = sym else {
                return Err(ParseError {
                    column: start,
                    message: format!("unexpected character `{c}`"),
                });
            };
            i += sym.len();
            out.push((Tok::Sym(sym), start));
        }
    }
    out.push((Tok::End, src.chars().count() + 1));
    Ok(out)
}

/// Parses and checks an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Lexer {
        toks: lex(src)?,
        pos: 0,
        depth: 0,
        nodes: 0,
    };
    let e = p.or()?;
    match p.peek() {
        (Tok::End, _) => Ok(e),
        (t, col) => Err(ParseError {
            column: col,
            message: format!("unexpected {} after a complete expression", describe(&t)),
        }),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Num(n) => format!("number {n}"),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::End => "end of expression".into(),
    }
}

fn field(name: &str, column: usize) -> Result<(Field, Kind), ParseError> {
    if let Some(f) = Field::from_name(name) {
        return Ok((f, f.kind()));
    }
    // The closest known name, for typos.
    let suggestion = Field::ALL
        .iter()
        .map(|f| (f.name(), strsim(name, f.name())))
        .min_by_key(|&(_, d)| d)
        .filter(|&(_, d)| d <= 3)
        .map(|(f, _)| format!(" (did you mean `{f}`?)"))
        .unwrap_or_default();
    Err(ParseError {
        column,
        message: format!("unknown field `{name}`{suggestion}"),
    })
}

/// Edit distance, for suggestions (a dozen lines; not worth a crate).
pub fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Lexer {
    fn peek(&self) -> (Tok, usize) {
        self.toks[self.pos.min(self.toks.len() - 1)].clone()
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek().0, Tok::Ident(ref s) if s == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Counts one more node of the tree, refusing past [`MAX_TERMS`].
    fn node(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_TERMS {
            return Err(ParseError {
                column: self.peek().1,
                message: format!("the expression has more than {MAX_TERMS} terms"),
            });
        }
        Ok(())
    }

    /// Enters one more level of nesting, refusing past [`MAX_NESTING`].
    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ParseError {
                column: self.peek().1,
                message: format!("nested more than {MAX_NESTING} deep"),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.node()?;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.not()?;
        while self.keyword("and") {
            self.node()?;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("not") {
            self.nest()?;
            self.node()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.node()?;
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let (tok, col) = self.next();
        let name = match tok {
            Tok::Sym("(") => {
                self.nest()?;
                let e = self.or()?;
                self.depth -= 1;
                return match self.next() {
                    (Tok::Sym(")"), _) => Ok(e),
                    (t, c) => Err(ParseError {
                        column: c,
                        message: format!("expected `)`, found {}", describe(&t)),
                    }),
                };
            }
            Tok::Ident(name) => name,
            t => {
                return Err(ParseError {
                    column: col,
                    message: format!("expected a field, `not` or `(`, found {}", describe(&t)),
                })
            }
        };
        let (field, kind) = field(&name, col)?;
        let (op_tok, op_col) = self.peek();
        let op = match &op_tok {
            Tok::Sym("==") => Op::Eq,
            Tok::Sym("!=") => Op::Ne,
            Tok::Sym("<") => Op::Lt,
            Tok::Sym("<=") => Op::Le,
            Tok::Sym(">") => Op::Gt,
            Tok::Sym(">=") => Op::Ge,
            Tok::Ident(w) if w == "in" => Op::In,
            Tok::Ident(w) if w == "contains" => Op::Contains,
            Tok::Ident(w) if w == "startswith" => Op::StartsWith,
            Tok::Ident(w) if w == "endswith" => Op::EndsWith,
            Tok::Ident(w) if w == "matches" => Op::Matches,
            _ if kind == Kind::Bool => return Ok(Expr::Flag(field)),
            t => {
                return Err(ParseError {
                    column: op_col,
                    message: format!(
                        "expected an operator after `{field}`, found {}",
                        describe(t)
                    ),
                })
            }
        };
        self.pos += 1;
        let (val_tok, val_col) = self.next();
        let value = match val_tok {
            Tok::Str(s) => Literal::Str(s),
            Tok::Num(n) => Literal::Num(n),
            Tok::Ident(w) if w == "true" || w == "false" => Literal::Bool(w == "true"),
            Tok::Sym("[") => {
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        (Tok::Sym("]"), _) if items.is_empty() => break,
                        (Tok::Str(s), _) => items.push(s),
                        (Tok::Num(n), _) => items.push(n.to_string()),
                        (t, c) => {
                            return Err(ParseError {
                                column: c,
                                message: format!(
                                    "expected a string in the list, found {}",
                                    describe(&t)
                                ),
                            })
                        }
                    }
                    match self.next() {
                        (Tok::Sym(","), _) => continue,
                        (Tok::Sym("]"), _) => break,
                        (t, c) => {
                            return Err(ParseError {
                                column: c,
                                message: format!("expected `,` or `]`, found {}", describe(&t)),
                            })
                        }
                    }
                }
                Literal::List(items)
            }
            t => {
                return Err(ParseError {
                    column: val_col,
                    message: format!("expected a value, found {}", describe(&t)),
                })
            }
        };
        check_types(field, kind, op, &value, op_col, val_col)?;
        let regex = match (&op, &value) {
            (Op::Matches, Literal::Str(pattern)) => {
                Some(Regex::new(pattern).map_err(|e| ParseError {
                    column: val_col,
                    message: format!("bad regular expression: {e}"),
                })?)
            }
            _ => None,
        };
        Ok(Expr::Cmp {
            field,
            op,
            value,
            regex,
        })
    }
}

fn check_types(
    field: Field,
    kind: Kind,
    op: Op,
    value: &Literal,
    op_col: usize,
    val_col: usize,
) -> Result<(), ParseError> {
    let bad = |column, message: String| Err(ParseError { column, message });
    match (op, value) {
        (Op::In, Literal::List(items)) if matches!(kind, Kind::Word(_)) => items
            .iter()
            .try_for_each(|v| one_of(field, kind, v, val_col)),
        (Op::In, Literal::List(_)) => Ok(()),
        (Op::In, _) => bad(val_col, "`in` needs a list: [\"a\", \"b\"]".into()),
        (_, Literal::List(_)) => bad(val_col, "a list only goes after `in`".into()),
        (Op::Lt | Op::Le | Op::Gt | Op::Ge, Literal::Num(_)) if kind == Kind::Num => Ok(()),
        (Op::Lt | Op::Le | Op::Gt | Op::Ge, _) => bad(
            op_col,
            format!("`{field}` is not a number field compared with a number"),
        ),
        (Op::Contains | Op::StartsWith | Op::EndsWith | Op::Matches, Literal::Str(_))
            if kind.is_text() || kind == Kind::List =>
        {
            Ok(())
        }
        (Op::Contains | Op::StartsWith | Op::EndsWith | Op::Matches, _) => bad(
            op_col,
            format!(
                "text operators need a text field and a string; `{field}` is {}",
                kind.describe()
            ),
        ),
        (Op::Eq | Op::Ne, Literal::Num(_)) if kind == Kind::Num => Ok(()),
        (Op::Eq | Op::Ne, Literal::Str(_)) if kind == Kind::Str => Ok(()),
        (Op::Eq | Op::Ne, Literal::Str(v)) if matches!(kind, Kind::Word(_)) => {
            one_of(field, kind, v, val_col)
        }
        (Op::Eq | Op::Ne, Literal::Bool(_)) if kind == Kind::Bool => Ok(()),
        (Op::Eq | Op::Ne, _) => bad(
            val_col,
            format!("`{field}` is {}; the value is not", kind.describe()),
        ),
    }
}

/// A literal compared with a closed vocabulary must be one of its words: a rule written with
/// `access == "read-write"` is refused when it loads instead of never matching.
fn one_of(field: Field, kind: Kind, value: &str, column: usize) -> Result<(), ParseError> {
    let Kind::Word(words) = kind else {
        return Ok(());
    };
    if words.contains(&value) {
        return Ok(());
    }
    let near = words
        .iter()
        .map(|w| (*w, strsim(value, w)))
        .min_by_key(|&(_, d)| d)
        .filter(|&(_, d)| d <= 3)
        .map(|(w, _)| format!(" (did you mean \"{w}\"?)"))
        .unwrap_or_default();
    Err(ParseError {
        column,
        message: format!(
            "\"{value}\" is never a value of `{}`{near}; it is one of {}",
            field.name(),
            words.join(", ")
        ),
    })
}

impl Expr {
    pub fn eval(&self, f: &dyn Fields) -> bool {
        match self {
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
            Expr::Not(a) => !a.eval(f),
            Expr::Flag(field) => f.get(*field) == Value::Bool(true),
            Expr::Cmp {
                field,
                op,
                value,
                regex,
            } => compare(&f.get(*field), *op, value, regex.as_ref()),
        }
    }

    /// What the expression needs of `field` on an event of type `ty`, worked out from the
    /// expression alone: [`Guard::Never`] if it cannot hold for that type (a `type` test fails
    /// in every branch), [`Guard::On`] a condition on `field` alone that must hold for it to,
    /// [`Guard::Any`] if nothing on `field` is needed. A necessary condition only: where the
    /// guard holds, the expression still decides.
    pub fn guard_on(&self, field: Field, ty: crate::event::EventType) -> Guard {
        match self {
            Expr::And(a, b) => match (a.guard_on(field, ty), b.guard_on(field, ty)) {
                (Guard::Never, _) | (_, Guard::Never) => Guard::Never,
                (Guard::Any, g) | (g, Guard::Any) => g,
                (Guard::On(a), Guard::On(b)) => Guard::On(Expr::And(Box::new(a), Box::new(b))),
            },
            Expr::Or(a, b) => match (a.guard_on(field, ty), b.guard_on(field, ty)) {
                (Guard::Never, g) | (g, Guard::Never) => g,
                (Guard::Any, _) | (_, Guard::Any) => Guard::Any,
                (Guard::On(a), Guard::On(b)) => Guard::On(Expr::Or(Box::new(a), Box::new(b))),
            },
            Expr::Cmp {
                field: Field::Type,
                op,
                value,
                ..
            } => {
                let is = |t: &String| crate::event::EventType::from_name(t) == Some(ty);
                let holds = match (op, value) {
                    (Op::Eq, Literal::Str(t)) => is(t),
                    (Op::Ne, Literal::Str(t)) => !is(t),
                    (Op::In, Literal::List(ts)) => ts.iter().any(is),
                    _ => true,
                };
                if holds {
                    Guard::Any
                } else {
                    Guard::Never
                }
            }
            // A leaf, or a negation taken whole: a guard if it reads `field` and nothing else.
            _ => {
                let mut read = Vec::new();
                self.fields(&mut read);
                if !read.is_empty() && read.iter().all(|f| *f == field) {
                    Guard::On(self.clone())
                } else {
                    Guard::Any
                }
            }
        }
    }

    /// Whether a condition of the expression on an open's path (`path`, `requested_path`)
    /// holds for `path` by itself: a rule that could match an open of that file, whatever its
    /// other conditions. Negated conditions are left out: they name what a rule looks away from.
    ///
    /// A branch that cannot hold for an open for reading only (`access != "read"` beside the
    /// path) names nothing here: its caller decides what may be folded, and the kernel folds
    /// read-only opens only (a rule on `/etc/ld.so.cache` written must not stop every program's
    /// read of it from folding).
    pub fn may_name_path(&self, path: &str) -> bool {
        match self {
            Expr::And(a, b) if a.excludes_read_only_opens() || b.excludes_read_only_opens() => {
                false
            }
            Expr::And(a, b) | Expr::Or(a, b) => a.may_name_path(path) || b.may_name_path(path),
            Expr::Not(_) | Expr::Flag(_) => false,
            Expr::Cmp {
                field: Field::Path | Field::RequestedPath,
                op,
                value,
                regex,
            } if *op != Op::Ne => compare(&Value::Str(path.into()), *op, value, regex.as_ref()),
            Expr::Cmp { .. } => false,
        }
    }

    /// The paths the expression's conditions on `path` name: each absolute path compared whole
    /// (`==`, `in`) is a file, and its directory a directory; each absolute prefix
    /// (`startswith`) is a prefix. Patterns (`matches`) and negated conditions are left out.
    /// What the enrich stage knows by inode, so that such a file, or a file in such a
    /// directory, reached through a bind mount or a hard link is still named by it.
    pub fn named_paths(
        &self,
        files: &mut Vec<String>,
        dirs: &mut Vec<String>,
        prefixes: &mut Vec<String>,
    ) {
        fn add(list: &mut Vec<String>, path: &str) {
            if path.starts_with('/') && !list.iter().any(|d| d == path) {
                list.push(path.to_string());
            }
        }
        fn dir_of(path: &str, dirs: &mut Vec<String>) {
            if let Some((dir, _)) = path.rsplit_once('/') {
                add(dirs, dir);
            }
        }
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.named_paths(files, dirs, prefixes);
                b.named_paths(files, dirs, prefixes);
            }
            Expr::Not(_) | Expr::Flag(_) => {}
            Expr::Cmp {
                field: Field::Path,
                op: Op::StartsWith,
                value: Literal::Str(p),
                ..
            } => add(prefixes, p),
            Expr::Cmp {
                field: Field::Path,
                op: Op::Eq,
                value: Literal::Str(p),
                ..
            } => {
                add(files, p);
                dir_of(p, dirs);
            }
            Expr::Cmp {
                field: Field::Path,
                op: Op::In,
                value: Literal::List(ps),
                ..
            } => {
                for p in ps {
                    add(files, p);
                    dir_of(p, dirs);
                }
            }
            Expr::Cmp { .. } => {}
        }
    }

    /// Whether the expression cannot hold for an open for reading only: it asks for another
    /// `access` (`access != "read"`, `access == "write"`, `access in [...]` without `read`), or
    /// for another kind of event (`type == "link"`).
    fn excludes_read_only_opens(&self) -> bool {
        match self {
            Expr::And(a, b) => a.excludes_read_only_opens() || b.excludes_read_only_opens(),
            Expr::Or(a, b) => a.excludes_read_only_opens() && b.excludes_read_only_opens(),
            // An equality (`==`, `!=`, `in`) that a read-only open's word fails, evaluated as
            // the rule would: another access, or another kind of event (`type == "link"`).
            Expr::Cmp {
                field: field @ (Field::Access | Field::Type),
                op: op @ (Op::Eq | Op::Ne | Op::In),
                value,
                regex,
            } => {
                let word = if *field == Field::Access {
                    "read"
                } else {
                    "open"
                };
                !compare(&Value::Str(word.into()), *op, value, regex.as_ref())
            }
            Expr::Not(_) | Expr::Flag(_) | Expr::Cmp { .. } => false,
        }
    }

    /// Every field the expression reads.
    pub fn fields(&self, out: &mut Vec<Field>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Expr::Not(a) => a.fields(out),
            Expr::Flag(f) | Expr::Cmp { field: f, .. } => out.push(*f),
        }
    }
}

fn text_test(s: &str, op: Op, v: &str, regex: Option<&Regex>) -> bool {
    match op {
        Op::Eq => s == v,
        Op::Ne => s != v,
        Op::Contains => s.contains(v),
        Op::StartsWith => s.starts_with(v),
        Op::EndsWith => s.ends_with(v),
        Op::Matches => regex.is_some_and(|r| r.is_match(s)),
        _ => false,
    }
}

fn compare(got: &Value<'_>, op: Op, want: &Literal, regex: Option<&Regex>) -> bool {
    match (got, want) {
        (Value::Missing, _) => false,
        (Value::Str(s), Literal::List(items)) if op == Op::In => items.iter().any(|i| i == s),
        (Value::Num(n), Literal::List(items)) if op == Op::In => {
            items.iter().any(|i| i.parse::<f64>().ok() == Some(*n))
        }
        (Value::Str(s), Literal::Str(v)) => text_test(s, op, v, regex),
        (Value::List(items), Literal::Str(v)) => match op {
            Op::Contains => items.iter().any(|i| i == v),
            Op::Ne => !items.iter().any(|i| i == v),
            _ => items.iter().any(|i| text_test(i, op, v, regex)),
        },
        (Value::List(items), Literal::List(list)) if op == Op::In => {
            items.iter().any(|i| list.iter().any(|l| l == i))
        }
        (Value::Num(n), Literal::Num(v)) => match op {
            Op::Eq => n == v,
            Op::Ne => n != v,
            Op::Lt => n < v,
            Op::Le => n <= v,
            Op::Gt => n > v,
            Op::Ge => n >= v,
            _ => false,
        },
        (Value::Bool(b), Literal::Bool(v)) => match op {
            Op::Eq => b == v,
            Op::Ne => b != v,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path condition beside one that opens for reading only cannot hold (those are the only
    /// opens the kernel folds); the same path read is named.
    #[test]
    fn a_path_named_for_writes_only_does_not_name_reads() {
        let write_only =
            parse(r#"type == "open" and access != "read" and path == "/etc/ld.so.cache""#).unwrap();
        assert!(!write_only.may_name_path("/etc/ld.so.cache"));
        let in_list =
            parse(r#"access in ["write", "read_write"] and path startswith "/etc/x""#).unwrap();
        assert!(!in_list.may_name_path("/etc/x/y"));
        let any = parse(r#"type == "open" and path == "/etc/ld.so.cache""#).unwrap();
        assert!(any.may_name_path("/etc/ld.so.cache"));
        let or_read = parse(r#"(access == "write" or access == "read") and path == "/a""#).unwrap();
        assert!(or_read.may_name_path("/a"));
        let branch = parse(r#"(access != "read" and path == "/a") or path == "/b""#).unwrap();
        assert!(!branch.may_name_path("/a"));
        assert!(branch.may_name_path("/b"));
        // The written-file rules' form: a write, or a name given (no open at all).
        let written = parse(
            r#"ok and (type == "open" and access != "read" or type == "link") and path == "/a""#,
        )
        .unwrap();
        assert!(!written.may_name_path("/a"));
        let or_open = parse(r#"(type == "link" or type == "open") and path == "/a""#).unwrap();
        assert!(or_open.may_name_path("/a"));
    }
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, Value<'static>>);
    impl Fields for Map {
        fn get(&self, field: Field) -> Value<'_> {
            self.0.get(field.name()).cloned().unwrap_or(Value::Missing)
        }
    }

    fn event() -> Map {
        Map(HashMap::from([
            ("type", Value::Str("exec".into())),
            ("filename", Value::Str("/usr/bin/crontab".into())),
            ("argv", Value::List(vec!["crontab".into(), "-e".into()])),
            ("process.euid", Value::Num(0.0)),
            ("gained_root", Value::Bool(true)),
        ]))
    }

    #[test]
    fn hostile_nesting_is_an_error_and_the_largest_allowed_runs_on_a_small_stack() {
        for src in [
            format!(
                "{}type == \"exec\"{}",
                "(".repeat(20_000),
                ")".repeat(20_000)
            ),
            format!("{}type == \"exec\"", "not ".repeat(20_000)),
            vec!["type == \"exec\""; 20_000].join(" and "),
        ] {
            let err = parse(&src).unwrap_err();
            assert!(
                err.message.contains("nested more than")
                    || err.message.contains("more than 2000 terms"),
                "{}",
                err.message
            );
        }
        // The largest expression allowed, evaluated and dropped on a 256 KiB stack (tokio's
        // workers have 2 MiB).
        let big = vec!["type == \"exec\""; MAX_TERMS / 2].join(" and ");
        let nested = format!(
            "{}type == \"exec\"{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let e = parse(&big).unwrap();
                assert!(e.eval(&event()));
                let n = parse(&nested).unwrap();
                assert!(n.eval(&event()));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn evaluates_comparisons_and_logic() {
        let e = event();
        for (src, want) in [
            (r#"type == "exec" and filename endswith "/crontab""#, true),
            (r#"type == "exec" and not argv contains "-l""#, true),
            (r#"argv contains "-l" or process.euid >= 1"#, false),
            (r#"filename in ["/usr/bin/crontab", "/bin/crontab"]"#, true),
            (r#"filename matches "^/usr/(s)?bin/cron""#, true),
            (r#"argv startswith "-""#, true),
            (r#"gained_root and process.euid == 0"#, true),
            (r#"not (gained_root == true)"#, false),
            (r#"path == "/etc/shadow""#, false),
            (r#"not path == "/etc/shadow""#, true),
        ] {
            let expr = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(expr.eval(&e), want, "{src}");
        }
    }

    #[test]
    fn mistakes_are_reported_with_their_column() {
        for (src, col, msg) in [
            (
                r#"type == "exec" and pth == "/x""#,
                20,
                "unknown field `pth` (did you mean `path`?)",
            ),
            (r#"type = "exec""#, 6, "unexpected character `=`"),
            (r#"bytes > "big""#, 7, "not a number field"),
            (r#"path in "/etc""#, 9, "`in` needs a list"),
            (r#"path matches "([""#, 14, "bad regular expression"),
            (r#"(type == "exec""#, 16, "expected `)`"),
            (r#"type == "exec" path"#, 16, "unexpected `path`"),
            (r#"path == "/etc"#, 9, "string is not closed"),
            (
                r#"port contains "2""#,
                6,
                "text operators need a text field",
            ),
        ] {
            let err = parse(src).unwrap_err();
            assert_eq!(err.column, col, "{src}: {err}");
            assert!(err.message.contains(msg), "{src}: {err}");
        }
    }

    #[test]
    fn a_word_outside_a_vocabulary_is_refused_at_load_not_silently_false() {
        // The README once said `read-write`; the decoder writes `read_write`.
        let err = parse(r#"type == "open" and access == "read-write""#).unwrap_err();
        assert_eq!(err.column, 30);
        assert!(
            err.message.contains("did you mean \"read_write\"")
                && err.message.contains("read, write, read_write"),
            "{}",
            err.message
        );
        for src in [
            r#"type == "exec_v2""#,
            r#"type == "connect" and family in ["ipv4", "inet6"]"#,
            r#"type == "priv" and op != "setuid32""#,
            r#"session.entry == "SSH""#,
            r#"type == "exec" and stdin == "socket" and stdout == "sock""#,
        ] {
            assert!(parse(src).is_err(), "{src}");
        }
        for src in [
            r#"type == "open" and access in ["write", "read_write"]"#,
            r#"type == "connect" and family != "unix""#,
            r#"session.entry == "ssh" and type == "priv" and op == "exec""#,
            // Text operators on a vocabulary stay open (prefixes, patterns).
            r#"type startswith "session_""#,
        ] {
            parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn type_and_path_prefilter() {
        use crate::event::EventType::{Connect, Exec, Open};
        let on = |src: &str, ty| parse(src).unwrap().guard_on(Field::Path, ty);
        assert!(matches!(
            on(r#"type == "connect" and port == 22"#, Connect),
            Guard::Any
        ));
        assert!(matches!(
            on(r#"type == "connect" and port == 22"#, Open),
            Guard::Never
        ));
        assert!(matches!(
            on(r#"type == "open" or type == "exec""#, Exec),
            Guard::Any
        ));
        assert!(matches!(
            on(r#"type in ["open", "exec"]"#, Connect),
            Guard::Never
        ));
        assert!(matches!(
            on(r#"type != "alert" and process.left_session"#, Open),
            Guard::Any
        ));
        // Only the branch for the event's type counts, and only its conditions on the path.
        let rule = r#"(type == "exec" and filename endswith "/crontab")
            or (type == "open" and ok and (path startswith "/etc/cron" or path == "/etc/crontab"))"#;
        assert!(matches!(on(rule, Exec), Guard::Any));
        let Guard::On(guard) = on(rule, Open) else {
            panic!("no guard on the path");
        };
        let mut read = Vec::new();
        guard.fields(&mut read);
        assert!(read.iter().all(|f| *f == Field::Path), "{read:?}");
        // A path condition beside something else under `or` decides nothing alone.
        let either = r#"type == "open" and (path == "/etc/shadow" or process.uid == 0)"#;
        assert!(matches!(on(either, Open), Guard::Any));
    }
}
