//! What can stop the daemon from starting, or a reload from putting a policy in force.

use std::{io, net::SocketAddr, path::PathBuf};

use crate::{
    compile::CompileError,
    ebpf::{
        DatapathError, counters::CountersError, image::ImageError, instance::InstanceError,
        links::LinkError, policy::PolicyError,
    },
    policy::Diagnostics,
    state::StateError,
};

/// A daemon failure. At start it ends the process (the unit fails and says why); on reload the
/// policy in force stays and the error is recorded in the state file.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The process may not load or attach BPF programs.
    #[error(
        "missing capabilities: {missing} (run as root, or grant them: the unit file's \
         AmbientCapabilities= lists what portguard needs)"
    )]
    Capabilities {
        /// The capabilities missing, comma-separated.
        missing: String,
    },
    /// The kernel lacks a feature portguard cannot run without (`portguard doctor` lists them).
    #[error(transparent)]
    Kernel(#[from] crate::doctor::Unsupported),
    /// A system call the daemon needs failed (capget, rtnetlink, signals, the runtime).
    #[error("{what}")]
    System {
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The site policy has errors; nothing was changed.
    #[error("the site policy has errors (nothing was changed)")]
    Policy(#[from] Diagnostics),
    /// The policy cannot be compiled for this host; nothing was changed.
    #[error("compiling the policy for this host (nothing was changed)")]
    Compile(#[from] CompileError),
    /// More rules than counter slots.
    #[error("no free counter slots for {rules} rules")]
    Slots {
        /// Rules that needed slots.
        rules: usize,
    },
    /// A directory the daemon keeps its pins or state in could not be made ready.
    #[error("{action} {path}")]
    Dir {
        /// What was being done.
        action: &'static str,
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// bpffs is missing and a bpffs mounted here would die with this process.
    #[error(
        "bpffs is not mounted at /sys/fs/bpf here, and this process runs in a mount namespace \
         of its own (as under `ip netns exec`, which remounts /sys): a bpffs mounted here would \
         vanish with it, taking the pinned XDP links and the enforcement along. Run portguard in \
         the host's mount namespace (`nsenter --net=/run/netns/NAME portguard run ...`, or \
         systemd's NetworkNamespacePath=), or mount bpffs at /sys/fs/bpf on the host first"
    )]
    PrivateBpffs,
    /// A directory portguard keeps its pins or state in cannot be trusted.
    #[error("refusing {path}: {why}; remove it and start again")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The state in the run directory could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The program could not be loaded, or its maps written; nothing was attached.
    #[error("loading the XDP program (nothing was changed)")]
    Datapath(#[from] DatapathError),
    /// The policy cannot be laid out as tables for the datapath; nothing was changed.
    #[error("laying out the policy's tables (nothing was changed)")]
    Image(#[from] ImageError),
    /// The pinned program could not be loaded, found, or its tables written.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The pinned program's tables could not be written.
    #[error("switching the tables (the policy in force stays)")]
    Tables(#[from] PolicyError),
    /// A link could not be removed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Counters of a new rule's slot could not be reset.
    #[error(transparent)]
    Counters(#[from] CountersError),
    /// Some interfaces took the policy, others did not; what succeeded is in force and recorded.
    #[error("policy {version} is not in force on every interface: {failures}")]
    PartlyInForce {
        /// The policy version.
        version: String,
        /// Each interface that failed, with why.
        failures: String,
    },
    /// The metrics endpoint could not be bound.
    #[error("binding the metrics endpoint {addr}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl DaemonError {
    /// A failed system call, as a [`DaemonError::System`].
    pub(crate) fn system(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| DaemonError::System { what, source }
    }

    /// A directory that could not be made ready, as a [`DaemonError::Dir`].
    pub(crate) fn dir(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| DaemonError::Dir {
            action,
            path,
            source,
        }
    }
}
