//! `vigil`: the daemon and its command-line tools (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
