//! The command line: one file per verb, each a thin call into the library.

pub mod args;
mod check;
mod compile;
mod explain;

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

pub use args::Cli;
use args::{Command, HostArgs, PolicyArgs};

use crate::{
    compile::{HostPolicy, for_host, roles_for},
    paths,
    policy::{self, Policy},
};

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { policy, json } => check::run(&policy, json),
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
    }
}

/// Load the site policy, or print every problem as `FILE:LINE:COL: message` and fail.
fn load_policy(args: &PolicyArgs) -> anyhow::Result<Policy> {
    let dir = paths::policies_dir(args.policies.as_deref());
    policy::load(&args.site, &dir).map_err(|diags| anyhow::anyhow!("{diags}"))
}

/// Compile the policy for the host described by `host` (or owning `dst`, or this machine).
fn host_policy(
    policy: &Policy,
    host: &HostArgs,
    dst: Option<std::net::IpAddr>,
) -> anyhow::Result<HostPolicy> {
    let roles = if !host.host_roles.is_empty() {
        host.host_roles
            .iter()
            .map(|r| policy.aliases.get(r).cloned().unwrap_or_else(|| r.clone()))
            .collect()
    } else if let Some(r) = &policy.host.roles {
        r.clone()
    } else {
        let addrs = match dst {
            Some(d) => vec![d],
            None => {
                crate::host::addresses()
                    .context("reading this machine's addresses")?
                    .unicast
            }
        };
        let roles = roles_for(policy, &addrs);
        if roles.is_empty() {
            return Err(crate::compile::CompileError::NoRole {
                addresses: addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
        roles
    };
    Ok(for_host(policy, &roles, None)?)
}
