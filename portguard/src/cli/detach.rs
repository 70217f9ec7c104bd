//! `portguard detach`: stop the daemon, detach from every interface, remove every pin.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;

use super::{
    args::StateArgs,
    reload::{daemon_pid, signal},
};
use crate::{
    ebpf::links,
    paths::{SAMPLE_FILE, STATE_FILE},
    state::State,
};

pub(super) fn run(args: &StateArgs) -> anyhow::Result<ExitCode> {
    // The state file only says which daemon to stop: what is attached is read from the pins
    // (the kernel's view), so a corrupt or missing state file never leaves a link behind.
    let state = State::read(&args.run_dir).unwrap_or_else(|e| {
        eprintln!("portguard: warning: {e}; detaching what is pinned anyway");
        None
    });
    if let Some(state) = state
        && let Some(pid) = daemon_pid(&state)
    {
        // A running daemon would re-attach on the next netlink event: stop it first.
        signal(pid, libc::SIGTERM).context("stopping the daemon")?;
        for _ in 0..100 {
            if daemon_pid(&state).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("stopped the daemon (pid {pid})");
    }
    for name in links::pinned(&args.pin_dir)? {
        links::unpin(&args.pin_dir, &name)?;
        println!("detached from {name}");
    }
    if args.pin_dir.exists() {
        // What is left are map pins: unlinking them frees the maps once no program uses them.
        std::fs::remove_dir_all(&args.pin_dir)
            .with_context(|| format!("removing {}", args.pin_dir.display()))?;
        println!("removed {}", args.pin_dir.display());
    }
    for f in [STATE_FILE, SAMPLE_FILE] {
        let _ = std::fs::remove_file(args.run_dir.join(f));
    }
    Ok(ExitCode::SUCCESS)
}
