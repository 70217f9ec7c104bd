//! `portguard run`: the service.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use super::args::{HostArgs, ModeArg, PolicyArgs, StateArgs};
use crate::{daemon, policy::Mode};

/// The options only `run` has.
pub(super) struct Extra {
    pub(super) ifaces: Vec<String>,
    pub(super) mode: Option<ModeArg>,
    pub(super) metrics: Option<SocketAddr>,
    pub(super) audit_log: Option<PathBuf>,
}

pub(super) fn run(
    policy: &PolicyArgs,
    host: &HostArgs,
    state: &StateArgs,
    extra: Extra,
) -> anyhow::Result<ExitCode> {
    let Extra {
        ifaces,
        mode,
        metrics,
        audit_log,
    } = extra;
    daemon::run(daemon::Options {
        site: policy.site.clone(),
        policies: policy.policies.clone(),
        ifaces,
        mode: mode.map(|m| match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }),
        host_roles: host.host_roles.clone(),
        pin_dir: state.pin_dir.clone(),
        run_dir: state.run_dir.clone(),
        metrics,
        audit_log,
    })?;
    Ok(ExitCode::SUCCESS)
}
