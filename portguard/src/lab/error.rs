//! What can stop a lab run. Every variant says what the lab was doing; the lab removes what it
//! created whichever way it ends.

use std::path::PathBuf;

use crate::{
    compile::CompileError, ebpf::counters::CountersError, policy::Diagnostics, state::StateError,
};

/// A lab failure.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab creates namespaces and loads programs: only root may.
    #[error(
        "portguard lab needs root: it creates network namespaces and loads XDP programs \
         (run it as root, e.g. `sudo -E cargo run --release -p portguard -- lab`)"
    )]
    NotRoot,
    /// bpffs is not where the daemon pins.
    #[error("/sys/fs/bpf is missing: mount bpffs (`cargo xtask setup` does)")]
    NoBpffs,
    /// The kernel lacks a feature portguard cannot run without.
    #[error(transparent)]
    Kernel(#[from] crate::doctor::Unsupported),
    /// The name prefix cannot be used.
    #[error("--prefix `{prefix}`: {why}")]
    Prefix {
        /// The prefix given.
        prefix: String,
        /// Why not.
        why: &'static str,
    },
    /// A signal (Ctrl-C) arrived; the lab unwinds.
    #[error("interrupted")]
    Interrupted,
    /// The lab's run directory exists and is not a lab's: nothing there is touched.
    #[error("{dir} exists and is not a lab's run directory; choose another --prefix")]
    ForeignRunDir {
        /// The directory.
        dir: PathBuf,
    },
    /// A lab of the same name is up.
    #[error(
        "a lab named `{prefix}` is already up ({found}): take it down with `portguard lab down \
         --prefix {prefix}`, or choose another --prefix"
    )]
    AlreadyUp {
        /// The prefix.
        prefix: String,
        /// What was found of it.
        found: String,
    },
    /// The site's interface name cannot be the lab's device name.
    #[error("{site}: [host] interfaces: `{name}` {why}")]
    Interface {
        /// The site file.
        site: PathBuf,
        /// The name.
        name: String,
        /// Why not.
        why: &'static str,
    },
    /// A command the lab runs (`ip`) failed.
    #[error("{command}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The lab's daemon exited or did not get ready.
    #[error("portguard run {what}; its log ({log}):\n{tail}")]
    Daemon {
        /// What happened.
        what: String,
        /// Its log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// A step with files, sockets, processes or namespaces failed.
    #[error("{action}")]
    Io {
        /// What was being done.
        action: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket option or socket call of a flow failed.
    #[error("a socket call of the lab failed")]
    Socket(#[from] std::io::Error),
    /// A thread working inside a namespace panicked.
    #[error("a lab thread in namespace {ns} panicked")]
    ThreadPanicked {
        /// The namespace.
        ns: String,
    },
    /// A machine of the plan lacks an address the flow needs (a lab bug).
    #[error("{who} has no {family} address (a lab bug)")]
    NoAddress {
        /// The machine.
        who: String,
        /// The family.
        family: &'static str,
    },
    /// The daemon wrote no state.
    #[error("no daemon state in {0}")]
    NoState(PathBuf),
    /// The site policy has errors.
    #[error("the site policy has errors")]
    Policy(#[from] Diagnostics),
    /// The policy cannot be compiled for the lab's host.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The daemon's state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The counters could not be read.
    #[error(transparent)]
    Counters(#[from] CountersError),
}

/// An I/O failure while doing `action`, as a [`LabError::Io`].
pub(crate) fn failed(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let action = action.into();
    move |source| LabError::Io { action, source }
}
