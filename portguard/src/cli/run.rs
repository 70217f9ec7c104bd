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
    pub(super) status_group: Option<String>,
    pub(super) datapath_log: bool,
    pub(super) no_xdp_frags: bool,
    pub(super) state_dir: PathBuf,
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
        status_group,
        datapath_log,
        no_xdp_frags,
        state_dir,
    } = extra;
    // At boot, a missing site file fails the unit with this line in the journal; unless a last
    // good policy was saved, which the daemon then enforces (and says why).
    if let Err(e) = super::site_exists(policy)
        && daemon::last_good::LastGood::new(&state_dir)
            .current()
            .is_none()
    {
        return Err(e);
    }
    let status_group = status_group.map(|g| group_id(&g)).transpose()?;
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
        state_dir,
        metrics,
        audit_log,
        status_group,
        datapath_log,
        no_xdp_frags,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A group name or numeric id -> gid.
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name)?;
    // SAFETY: getgrnam returns a pointer into static storage or null; read at once.
    let entry = unsafe { libc::getgrnam(c.as_ptr()) };
    anyhow::ensure!(!entry.is_null(), "--status-group: no group named `{name}`");
    // SAFETY: non-null entry from getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}
