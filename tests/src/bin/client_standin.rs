//! `vigil-client-standin`: a stand-in for a credentials client that cannot be installed here
//! (the AWS CLI, helm, a docker-style client without its daemon). Installed by the detection bench as a dpkg package under the client's
//! name, it reads the files the real client reads, so the bench sees a legitimate client read
//! its credentials the way the rules identify one: a packaged program at its own path.

use std::{path::PathBuf, process::ExitCode};

/// The files each client reads, under `$HOME`.
fn files_of(client: &str) -> Option<&'static [&'static str]> {
    match client {
        "aws" => Some(&[".aws/config", ".aws/credentials"]),
        "helm" | "kubectl" => Some(&[".kube/config"]),
        "docker" => Some(&[".docker/config.json"]),
        _ => None,
    }
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let client = argv0.rsplit('/').next().unwrap_or_default().to_string();
    let Some(files) = files_of(&client) else {
        eprintln!("vigil-client-standin: run as aws, helm or docker, not {client:?}");
        return ExitCode::from(2);
    };
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let mut total = 0;
    for f in files {
        match std::fs::read(home.join(f)) {
            Ok(bytes) => total += bytes.len(),
            Err(e) => {
                eprintln!("{client}: cannot read ~/{f}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    println!("{client}: {total} bytes of configuration");
    ExitCode::SUCCESS
}
