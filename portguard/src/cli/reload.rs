//! `portguard reload`: SIGHUP the daemon and wait for its verdict in the state file.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::args::StateArgs;
use crate::state::State;

pub(super) fn run(args: &StateArgs, timeout: u64) -> anyhow::Result<ExitCode> {
    let before = State::read(&args.run_dir)?.with_context(|| {
        format!(
            "no state in {}: is portguard running?",
            args.run_dir.display()
        )
    })?;
    let Some(pid) = daemon_pid(&before) else {
        bail!(
            "the daemon (pid {}) is not running; start it with `portguard run` or `systemctl start portguard`",
            before.pid
        );
    };
    signal(pid, libc::SIGHUP).context("sending SIGHUP to the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(Some(now)) = State::read(&args.run_dir) else {
            continue;
        };
        if now.reload.count > before.reload.count {
            return Ok(match now.reload.error {
                Some(e) => {
                    eprintln!(
                        "portguard: reload failed; policy {} stays in force:\n{e}",
                        now.policy_version
                    );
                    ExitCode::from(1)
                }
                None if now.reload.switched => {
                    println!(
                        "policy {} in force (switched in {} µs)",
                        now.policy_version, now.reload.switch_us
                    );
                    ExitCode::SUCCESS
                }
                None => {
                    println!("policy {} unchanged", now.policy_version);
                    ExitCode::SUCCESS
                }
            });
        }
    }
    bail!("the daemon did not answer within {timeout} s; see its log (journalctl -u portguard)")
}

/// The daemon's pid, as `kill(2)` takes it, if it runs.
pub(super) fn daemon_pid(state: &State) -> Option<i32> {
    state.daemon_pid().and_then(|p| i32::try_from(p).ok())
}

/// Send `sig` to `pid`.
pub(super) fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) with a pid we read from our own state file and checked.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
