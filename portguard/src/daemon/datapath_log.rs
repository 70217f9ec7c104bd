//! `run --datapath-log`: the XDP program's own diagnostic messages (aya-log), in the daemon's
//! log. The program only writes them when the policy's `diagnostics` setting asks for them, and
//! only for frames its parser gave up on, so the per-packet path stays free of logging.

use std::path::PathBuf;

use tokio::io::{Interest, unix::AsyncFd};

use crate::ebpf::links::{self, LinkError};

/// Why the program's messages cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathLogError {
    /// The interface's link (and so its program) could not be found.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The program's log ring could not be opened.
    #[error("reading the diagnostic messages of program {id}")]
    Logger {
        /// The program id.
        id: u32,
        /// Cause.
        #[source]
        source: aya_log::Error,
    },
    /// Waiting on the ring failed.
    #[error("waiting for diagnostic messages")]
    Poll(#[source] std::io::Error),
}

/// Forward the messages of the program attached to `iface` until the task is aborted (the
/// daemon restarts it after each program switch: the messages live in the program's own map).
pub async fn follow(pin_dir: PathBuf, iface: String) -> Result<(), DatapathLogError> {
    let id = links::pinned_program_id(&pin_dir, &iface)?;
    let logger = aya_log::EbpfLogger::init_from_id(id)
        .map_err(|source| DatapathLogError::Logger { id, source })?;
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd holds it.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| DatapathLogError::Poll(e.into_parts().1))?;
    log::info!("datapath diagnostics from program {id} follow");
    loop {
        let mut ready = fd.readable_mut().await.map_err(DatapathLogError::Poll)?;
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
