//! `vigil rules`: list the rules in force, check rules files, import Sigma rules.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use vigil::detect::{rules, sigma::SigmaImport};

use super::{load_config, print_json, CliError, CliResult};

#[derive(Subcommand)]
pub enum RulesCommand {
    /// The detection rules a configuration puts in force (built-ins and rules files).
    List {
        /// Configuration file (its detection: section is used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Check rules files: every problem with its file, line and what is wrong.
    Check {
        /// Rules files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Convert Sigma rules (files or directories of .yml/.yaml) into a Vigil rules file, and
    /// report each rule that cannot be expressed and why.
    ImportSigma {
        /// Sigma rule files or directories (searched recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the rules file here (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Write the import report (JSON) here; a summary goes to standard error regardless.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

pub fn run(command: RulesCommand) -> CliResult {
    match command {
        RulesCommand::List { config, json } => list(config.as_deref(), json),
        RulesCommand::Check { files } => check(&files),
        RulesCommand::ImportSigma {
            paths,
            output,
            report,
        } => import_sigma(&paths, output.as_deref(), report.as_deref()),
    }
}

fn list(config: Option<&Path>, json: bool) -> CliResult {
    let config = load_config(config)?;
    let d = &config.detection;
    let rules = rules::load(d.builtin_rules, &d.rules_files)?;
    if json {
        let list: Vec<serde_json::Value> = rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "title": r.title, "technique": r.technique,
                    "severity": r.severity.as_str(), "risk": r.risk, "origin": r.origin,
                })
            })
            .collect();
        return print_json(&list);
    }
    println!(
        "{:<34} {:<10} {:<9} {:>4}  TITLE",
        "ID", "TECHNIQUE", "SEVERITY", "RISK"
    );
    for r in &rules {
        println!(
            "{:<34} {:<10} {:<9} {:>4}  {}",
            r.id,
            r.technique,
            r.severity.as_str(),
            r.risk,
            r.title
        );
    }
    Ok(())
}

fn check(files: &[PathBuf]) -> CliResult {
    let mut problems = Vec::new();
    for file in files {
        match rules::load(false, std::slice::from_ref(file)) {
            Ok(rules) => println!("{}: ok ({} rules)", file.display(), rules.len()),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::RulesCheck(problems))
    }
}

/// Every .yml/.yaml file under `path` (or `path` itself), in a stable order.
fn sigma_files(path: &Path, out: &mut Vec<PathBuf>) -> CliResult {
    let unreadable = |source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(unreadable)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sigma_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

fn import_sigma(paths: &[PathBuf], output: Option<&Path>, report: Option<&Path>) -> CliResult {
    let mut files = Vec::new();
    for p in paths {
        sigma_files(p, &mut files)?;
    }
    let mut import = SigmaImport::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| CliError::ReadFile {
            path: f.clone(),
            source,
        })?;
        import.add_file(&f.display().to_string(), &text);
    }
    let yaml = import.rules_yaml()?;
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|source| CliError::WriteFile {
            path: p.to_path_buf(),
            source,
        })
    };
    match output {
        Some(p) => write(p, &yaml)?,
        None => print!("{yaml}"),
    }
    if let Some(p) = report {
        let text = serde_json::to_string_pretty(&import)
            .map_err(vigil::detect::sigma::SigmaExportError::Report)?;
        write(p, &text)?;
    }
    eprintln!(
        "imported {} Sigma rules, {} not importable",
        import.imported.len(),
        import.skipped.len()
    );
    for s in &import.skipped {
        eprintln!(
            "  {}{}: {}",
            s.source,
            s.title
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            s.reason
        );
    }
    Ok(())
}
