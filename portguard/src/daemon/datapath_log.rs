//! `run --datapath-log`: the XDP program's own diagnostic messages (aya-log), in the daemon's
//! log. The program only writes them when the policy's `diagnostics` setting asks for them, and
//! only for frames its parser gave up on, so the per-packet path stays free of logging.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::io::{Interest, unix::AsyncFd};

use super::links;

/// Forward the messages of the program attached to `iface` until the task is aborted (the
/// daemon restarts it after each program switch: the messages live in the program's own map).
pub async fn follow(pin_dir: PathBuf, iface: String) -> anyhow::Result<()> {
    let id = links::pinned_program_id(&pin_dir, &iface)?;
    let logger = aya_log::EbpfLogger::init_from_id(id)
        .with_context(|| format!("reading the diagnostic messages of program {id}"))?;
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd holds it.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE)? };
    log::info!("datapath diagnostics from program {id} follow");
    loop {
        let mut ready = fd.readable_mut().await?;
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
