//! `portguard`: parse, run, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser as _;
use portguard::cli::{Cli, run};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portguard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
