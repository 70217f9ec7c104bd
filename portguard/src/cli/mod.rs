//! The command line: one file per verb, each a thin call into the library.

pub mod args;
mod audit;
mod check;
mod compile;
mod detach;
mod explain;
mod lab;
mod reload;
mod run;
mod status;
mod trial;

use std::{io::Write as _, process::ExitCode};

use clap::CommandFactory as _;

pub use args::Cli;
use args::{Command, HostArgs, PolicyArgs};

use crate::{
    compile::{HostPolicy, for_host},
    paths,
    policy::{self, Policy},
};

/// The whole program: parse the command line, run it, map errors to exit code 2. Logs go to
/// stderr without colour when it is not a terminal, which is how journald keeps them best.
#[must_use]
pub fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Under systemd: journald stamps the time itself and reads the level from an sd-daemon
        // `<N>` prefix, so `journalctl -p err -u portguard` filters by severity.
        logger.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    logger.init();
    let cli = <Cli as clap::Parser>::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A command piped into `head` ends quietly when the pipe closes, as other Unix tools
        // do. The daemon keeps Rust's default (SIGPIPE ignored): a closed log stream must not
        // kill the process that keeps enforcement current.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portguard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            policy,
            json,
            force,
        } => check::run(&policy, json, force),
        Command::Compile {
            policy,
            host,
            dst,
            json,
        } => compile::run(&policy, &host, dst, json),
        Command::Explain {
            policy,
            host,
            src,
            dst,
            proto,
            dport,
            sport,
            icmp_type,
            icmp_code,
            json,
        } => {
            let flow = explain::Flow {
                src,
                dst,
                proto,
                dport,
                sport,
                icmp_type,
                icmp_code,
            };
            explain::run(&policy, &host, &flow, json)
        }
        Command::Run {
            policy,
            host,
            state,
            ifaces,
            mode,
            metrics,
            audit_log,
            status_group,
            datapath_log,
        } => run::run(
            &policy,
            &host,
            &state,
            run::Extra {
                ifaces,
                mode,
                metrics,
                audit_log,
                status_group,
                datapath_log,
            },
        ),
        Command::Reload { state, timeout } => reload::run(&state, timeout),
        Command::Apply {
            state,
            confirm_within,
            force,
        } => trial::apply(&state, confirm_within, force),
        Command::Confirm { state } => trial::confirm(&state),
        Command::Status { state, json, watch } => status::run(&state, json, watch),
        Command::Detach { state } => detach::run(&state),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "portguard",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => audit::run(&args),
        Command::Lab(args) => lab::run(&args),
    }
}

/// Load the site policy, or print every problem as `FILE:LINE:COL: message` and fail.
fn load_policy(args: &PolicyArgs) -> anyhow::Result<Policy> {
    let dir = paths::policies_dir(args.policies.as_deref());
    Ok(policy::load(&args.site, &dir)?)
}

/// Compile the policy for the host described by `host` (or owning `dst`, or this machine).
fn host_policy(
    policy: &Policy,
    host: &HostArgs,
    dst: Option<std::net::IpAddr>,
) -> anyhow::Result<HostPolicy> {
    let roles = crate::compile::host_roles(policy, &host.host_roles, dst)?;
    Ok(for_host(policy, &roles)?)
}
