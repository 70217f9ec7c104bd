//! `portguard apply --confirm-within` and `portguard confirm`: policy changes that undo
//! themselves unless the administrator, still connected, says to keep them.
//!
//! The daemon, not this process, keeps the deadline: if the change cuts off the session this
//! command runs in, the daemon still reverts (and a daemon restarted meanwhile too).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    args::StateArgs,
    reload::{daemon_pid, signal},
};
use crate::{
    lockout::Guard,
    paths::TRIAL_REQUEST,
    state::{self, State, TrialRequest},
};

fn running(args: &StateArgs) -> anyhow::Result<(State, i32)> {
    let st = State::read(&args.run_dir)?.with_context(|| {
        format!(
            "no state in {}: is portguard running?",
            args.run_dir.display()
        )
    })?;
    let pid = daemon_pid(&st).context("the daemon is not running")?;
    Ok((st, pid))
}

pub(super) fn apply(
    args: &StateArgs,
    confirm_within: u64,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let (before, pid) = running(args)?;
    // Refuse here, before the daemon sees anything, a policy that locks this session out.
    let dir = crate::paths::policies_dir(before.policies.as_deref());
    if let Ok(p) = crate::policy::load(&before.site, &dir) {
        match crate::lockout::session_cut(&p, &before.host_roles) {
            Guard::Clear => {}
            Guard::Cut(cut) if !force => bail!("{}: {cut}", before.site.display()),
            Guard::Cut(cut) => eprintln!("portguard: warning (forced): {cut}"),
            Guard::Unknown(why) => eprintln!("portguard: warning: {why}"),
        }
    }
    state::write_json(
        &args.run_dir,
        TRIAL_REQUEST,
        &TrialRequest { confirm_within },
    )?;
    signal(pid, libc::SIGHUP).context("signalling the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(Some(now)) = State::read(&args.run_dir) else {
            continue;
        };
        if now.reload.count <= before.reload.count {
            continue;
        }
        if let Some(e) = now.reload.error {
            eprintln!(
                "portguard: the new policy was refused; {} stays in force:\n{e}",
                now.policy_version
            );
            return Ok(ExitCode::from(1));
        }
        match now.trial {
            Some(t) => println!(
                "policy {} on trial: run `portguard confirm` within {confirm_within} s, or {} comes back",
                now.policy_version, t.previous_version
            ),
            None => println!(
                "policy {} unchanged: nothing to confirm",
                now.policy_version
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    bail!("the daemon did not answer within 60 s")
}

pub(super) fn confirm(args: &StateArgs) -> anyhow::Result<ExitCode> {
    let (before, pid) = running(args)?;
    if before.trial.is_none() {
        println!("no policy on trial");
        return Ok(ExitCode::SUCCESS);
    }
    signal(pid, libc::SIGUSR1).context("signalling the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Some(now)) = State::read(&args.run_dir)
            && now.trial.is_none()
        {
            if now.policy_version == before.policy_version {
                println!("policy {} confirmed", now.policy_version);
                return Ok(ExitCode::SUCCESS);
            }
            bail!(
                "too late: the trial had already reverted to {}",
                now.policy_version
            );
        }
    }
    bail!("the daemon did not answer within 30 s")
}
