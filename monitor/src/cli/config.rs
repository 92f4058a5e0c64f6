//! `vigil config check | show | default`.

use std::path::PathBuf;

use clap::Subcommand;
use vigil::config::Config;

use super::{load_config, CliError, CliResult};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (with the VIGIL_<SECTION>__<KEY> environment overrides)
    /// and report every problem with its location.
    Check { file: Option<PathBuf> },
    /// Print the effective configuration (default, file, environment) with secrets redacted.
    Show { file: Option<PathBuf> },
    /// Print the embedded default configuration.
    Default,
}

pub fn run(command: ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Check { file } => {
            load_config(file.as_deref())?;
            let name = file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "embedded default".into());
            println!("{name}: ok");
            Ok(())
        }
        ConfigCommand::Show { file } => {
            let (text, origin) = match &file {
                Some(f) => (
                    std::fs::read_to_string(f).map_err(|source| CliError::ReadFile {
                        path: f.clone(),
                        source,
                    })?,
                    f.display().to_string(),
                ),
                None => (String::new(), "embedded default".to_string()),
            };
            print!(
                "{}",
                Config::effective_yaml(&text, &origin, std::env::vars())?
            );
            Ok(())
        }
        ConfigCommand::Default => {
            print!("{}", vigil::config::DEFAULT_CONFIG);
            Ok(())
        }
    }
}
