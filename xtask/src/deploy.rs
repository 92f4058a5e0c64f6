//! `cargo xtask deploy-check`: everything under deploy/ checked offline.
//!
//! - The Helm chart is rendered (with `helm template` when helm is on PATH; otherwise with the
//!   Go template engine `gtmpl` and the handful of Helm functions the chart uses: `toYaml`,
//!   `nindent`, `indent`, `quote`, `default`), with its default values and with the CI values
//!   (every switch flipped).
//! - deploy/kubernetes/vigil.yaml must equal the default rendering (`--write` regenerates it),
//!   so `kubectl apply -f` users and Helm users get the same objects.
//! - Every manifest, rendered or plain, is validated against the Kubernetes schemas with the
//!   `kubernetes-validate` package (strict: unknown fields are errors).
//! - The daemon configuration the chart renders into its ConfigMap is checked by the daemon
//!   itself (`vigil config check`), and so is the systemd unit (`systemd-analyze verify`).
//! - The Dockerfile's `COPY` sources exist and it builds with `cargo xtask build`.
//! - The Grafana dashboard is valid JSON whose Prometheus queries name only metrics the daemon
//!   serves (the e2e scrape checks those names against the running daemon).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use gtmpl::{FuncError, Template, Value};

use crate::workspace;

const K8S_VERSION: &str = "1.33.0";
const RELEASE: &str = "vigil";
const NAMESPACE: &str = "vigil-system";

fn chart_dir() -> PathBuf {
    workspace().join("deploy/helm/vigil")
}

/// YAML → gtmpl value.
fn to_value(v: &yaml_serde::Value) -> Value {
    match v {
        yaml_serde::Value::Null => Value::Nil,
        yaml_serde::Value::Bool(b) => Value::Bool(*b),
        yaml_serde::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        yaml_serde::Value::String(s) => Value::from(s.as_str()),
        yaml_serde::Value::Sequence(items) => Value::Array(items.iter().map(to_value).collect()),
        yaml_serde::Value::Mapping(m) => Value::Map(
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_value(v))))
                .collect(),
        ),
        yaml_serde::Value::Tagged(t) => to_value(&t.value),
    }
}

/// gtmpl value → YAML, for `toYaml`.
fn to_yaml(v: &Value) -> yaml_serde::Value {
    match v {
        Value::Nil | Value::NoValue => yaml_serde::Value::Null,
        Value::Bool(b) => yaml_serde::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                yaml_serde::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                yaml_serde::Value::from(u)
            } else {
                yaml_serde::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => yaml_serde::Value::String(s.clone()),
        Value::Array(a) => yaml_serde::Value::Sequence(a.iter().map(to_yaml).collect()),
        // Sorted, as Helm (Go's YAML encoder) writes maps.
        Value::Map(m) | Value::Object(m) => yaml_serde::Value::Mapping(
            m.iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| (yaml_serde::Value::String(k.clone()), to_yaml(v)))
                .collect(),
        ),
        Value::Function(_) => yaml_serde::Value::Null,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Nil | Value::NoValue => String::new(),
        other => other.to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Nil | Value::NoValue => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Map(m) | Value::Object(m) => !m.is_empty(),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::Function(_) => true,
    }
}

fn arg<'a>(args: &'a [Value], i: usize, f: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::Generic(format!("{f}: missing argument {}", i + 1)))
}

/// Helm's `toYaml`: the value as YAML without the document marker or a final newline.
fn f_to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_yaml(arg(args, 0, "toYaml")?);
    let s = yaml_serde::to_string(&v).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::from(s.trim_end_matches('\n')))
}

fn indent_by(n: &Value, s: &Value) -> Result<String, FuncError> {
    let n = match n {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        other => text(other).parse().unwrap_or(0),
    };
    let pad = " ".repeat(n);
    Ok(text(s)
        .split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `indent N s` (pipelines put the string last).
fn f_indent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(indent_by(
        arg(args, 0, "indent")?,
        arg(args, 1, "indent")?,
    )?))
}

/// `nindent N s`: a newline, then `indent`.
fn f_nindent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(format!(
        "\n{}",
        indent_by(arg(args, 0, "nindent")?, arg(args, 1, "nindent")?)?
    )))
}

fn f_quote(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "quote")?);
    Ok(Value::from(
        serde_json::to_string(&s).map_err(|e| FuncError::Generic(e.to_string()))?,
    ))
}

/// `default D v`: v, unless empty.
fn f_default(args: &[Value]) -> Result<Value, FuncError> {
    let fallback = arg(args, 0, "default")?;
    match args.get(1) {
        Some(v) if truthy(v) => Ok(v.clone()),
        _ => Ok(fallback.clone()),
    }
}

/// Renders every template of the chart with `values` over its values.yaml; returns the
/// manifests in file order, as Helm's `template` prints them.
pub fn render_chart(overrides: Option<&Path>) -> Result<String> {
    if which("helm") {
        let mut cmd = Command::new("helm");
        cmd.args(["template", RELEASE, "--namespace", NAMESPACE])
            .arg(chart_dir());
        if let Some(v) = overrides {
            cmd.arg("--values").arg(v);
        }
        let out = cmd.output().context("cannot run helm")?;
        if !out.status.success() {
            bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
        }
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let read_yaml = |p: &Path| -> Result<yaml_serde::Value> {
        yaml_serde::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))
    };
    let chart = read_yaml(&chart_dir().join("Chart.yaml"))?;
    let mut values = read_yaml(&chart_dir().join("values.yaml"))?;
    if let Some(v) = overrides {
        merge(&mut values, read_yaml(v)?);
    }
    let field = |k: &str| {
        chart
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    ctx.insert("Values".into(), to_value(&values));
    ctx.insert(
        "Release".into(),
        Value::Map(
            [
                ("Name", RELEASE),
                ("Namespace", NAMESPACE),
                ("Service", "Helm"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect(),
        ),
    );
    ctx.insert(
        "Chart".into(),
        Value::Map(
            [
                ("Name", field("name")),
                ("Version", field("version")),
                ("AppVersion", field("appVersion")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect(),
        ),
    );
    let ctx = Value::Map(ctx.into_iter().collect());
    let templates = chart_dir().join("templates");
    let helpers = std::fs::read_to_string(templates.join("_helpers.tpl"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&templates)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let body = std::fs::read_to_string(&file)?;
        let mut t = Template::default();
        t.add_func("toYaml", f_to_yaml);
        t.add_func("nindent", f_nindent);
        t.add_func("indent", f_indent);
        t.add_func("quote", f_quote);
        t.add_func("default", f_default);
        t.parse(format!("{helpers}{body}"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let rendered = t
            .render(&gtmpl::Context::from(ctx.clone()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if rendered.trim().is_empty() {
            continue;
        }
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!(
            "---\n# Source: vigil/templates/{name}\n{}\n",
            rendered.trim_matches('\n')
        ));
    }
    Ok(out)
}

/// Values over values.yaml, map by map, as Helm coalesces them (the daemon layers its
/// configuration the same way in monitor/src/config.rs; xtask does not link the daemon).
fn merge(base: &mut yaml_serde::Value, over: yaml_serde::Value) {
    match (base, over) {
        (yaml_serde::Value::Mapping(b), yaml_serde::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn validate(files: &[PathBuf]) -> Result<()> {
    let tool = crate::setup::venv_bin("kubernetes-validate");
    let out = Command::new(&tool)
        .args(["--strict", "--quiet", "-k", K8S_VERSION])
        .args(files)
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || report.contains("ERROR") || report.contains("INFO did not validate")
    {
        bail!("kubernetes-validate:\n{report}");
    }
    Ok(())
}

/// The `config.yaml` of the rendered ConfigMap.
fn rendered_daemon_config(manifests: &str) -> Result<String> {
    for doc in yaml_serde::Deserializer::from_str(manifests) {
        use serde::Deserialize;
        let v = yaml_serde::Value::deserialize(doc)?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
            if let Some(c) = v
                .get("data")
                .and_then(|d| d.get("config.yaml"))
                .and_then(|c| c.as_str())
            {
                return Ok(c.to_string());
            }
        }
    }
    bail!("the chart renders no ConfigMap with config.yaml")
}

fn check_daemon_config(name: &str, config: &str, dir: &Path) -> Result<()> {
    let path = dir.join(format!("{name}.config.yaml"));
    std::fs::write(&path, config)?;
    let out = Command::new(crate::vigil_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .context("cannot run vigil (cargo xtask build)")?;
    if !out.status.success() {
        bail!(
            "the daemon refuses the configuration the chart renders ({name}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The example ClickHouse makes the daemons' and auditors' users with exactly the grants
/// `vigil db grants` prints (the one definition, in the daemon's schema code).
fn check_clickhouse_grants() -> Result<()> {
    let out = Command::new(crate::vigil_bin())
        .args(["db", "grants"])
        .output()
        .context("cannot run vigil db grants (cargo xtask build)")?;
    if !out.status.success() {
        bail!("vigil db grants: {}", String::from_utf8_lossy(&out.stderr));
    }
    let example = std::fs::read_to_string(workspace().join("deploy/kubernetes/clickhouse.yaml"))?
        .replace("\\`", "`");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let grants: Vec<&str> = printed.lines().filter(|l| l.starts_with("GRANT")).collect();
    if grants.is_empty() {
        bail!("vigil db grants printed no GRANT");
    }
    let made: Vec<&str> = example
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("GRANT"))
        .collect();
    if made != grants {
        bail!(
            "deploy/kubernetes/clickhouse.yaml grants\n  {}\nbut `vigil db grants` says\n  {}",
            made.join("\n  "),
            grants.join("\n  ")
        );
    }
    Ok(())
}

fn check_systemd_unit(dir: &Path) -> Result<()> {
    let unit = workspace().join("deploy/systemd/vigil.service");
    if !which("systemd-analyze") {
        println!("deploy-check: systemd-analyze not installed; unit not verified");
        return Ok(());
    }
    // The unit names /usr/local/bin/vigil; verify a copy pointing at the built binary.
    let text = std::fs::read_to_string(&unit)?.replace(
        "/usr/local/bin/vigil",
        &crate::vigil_bin().display().to_string(),
    );
    let copy = dir.join("vigil.service");
    std::fs::write(&copy, text)?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()?;
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    // Only lines about our unit count (the host's own units may have their own complaints).
    let ours: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("vigil.service"))
        .collect();
    if !out.status.success() || !ours.is_empty() {
        bail!("systemd-analyze verify:\n{report}");
    }
    Ok(())
}

fn check_dockerfile() -> Result<()> {
    let path = workspace().join("deploy/docker/Dockerfile");
    let text = std::fs::read_to_string(&path)?;
    let mut build = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("COPY ") {
            let parts: Vec<&str> = rest
                .split_whitespace()
                .filter(|p| !p.starts_with("--"))
                .collect();
            let from_stage = rest.contains("--from=");
            if !from_stage {
                for src in &parts[..parts.len().saturating_sub(1)] {
                    if !workspace().join(src).exists() {
                        bail!("{}: COPY source {src} does not exist", path.display());
                    }
                }
            }
        }
        build |= line.contains("cargo xtask build");
    }
    if !build {
        bail!(
            "{}: does not build with `cargo xtask build`",
            path.display()
        );
    }
    Ok(())
}

/// The metric names a dashboard's Prometheus queries use.
pub fn dashboard_metrics() -> Result<Vec<String>> {
    let path = workspace().join("deploy/grafana/vigil-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let mut names = Vec::new();
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        bail!("{}: no panels", path.display());
    }
    for p in panels {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(expr) = t["expr"].as_str() {
                let mut rest = expr;
                while let Some(i) = rest.find("vigil_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[i + name.len()..];
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    Ok(names)
}

pub fn check(write: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let default = render_chart(None)?;
    let committed = workspace().join("deploy/kubernetes/vigil.yaml");
    let header = "# Generated from deploy/helm/vigil with its default values by `cargo xtask deploy-check --write`;\n# edit the chart, not this file.\n";
    let generated = format!("{header}{default}");
    if write {
        std::fs::write(&committed, &generated)?;
        println!("deploy-check: wrote {}", committed.display());
    } else if std::fs::read_to_string(&committed).unwrap_or_default() != generated {
        bail!(
            "{} is not the chart's default rendering: run `cargo xtask deploy-check --write`",
            committed.display()
        );
    }
    let ci_values = workspace().join("deploy/helm/ci-values.yaml");
    let flipped = render_chart(Some(&ci_values))?;
    let flipped_path = workspace().join("target/deploy-check/chart-ci-values.yaml");
    std::fs::create_dir_all(flipped_path.parent().unwrap_or(&dir))?;
    std::fs::write(&flipped_path, &flipped)?;
    let mut files = vec![committed, flipped_path];
    for entry in std::fs::read_dir(workspace().join("deploy/kubernetes"))? {
        let p = entry?.path();
        if p.extension().is_some_and(|x| x == "yaml") && !files.contains(&p) {
            files.push(p);
        }
    }
    validate(&files)?;
    check_daemon_config("default", &rendered_daemon_config(&default)?, &dir)?;
    check_daemon_config("ci-values", &rendered_daemon_config(&flipped)?, &dir)?;
    check_clickhouse_grants()?;
    check_systemd_unit(&dir)?;
    check_dockerfile()?;
    let metrics = dashboard_metrics()?;
    println!(
        "deploy-check: chart rendered ({}), {} manifests valid for Kubernetes {K8S_VERSION}, daemon config accepted, systemd unit and Dockerfile checked, dashboard uses {} metrics",
        if which("helm") { "helm" } else { "gtmpl" },
        files.len(),
        metrics.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vigil-deploy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
