//! What can go wrong while reading events, writing the log, or querying it.

use std::{io, path::PathBuf};

use aya::maps::MapError;

/// An audit failure; every variant names the file or pinned map involved.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A pinned map could not be opened (datapath not loaded yet, wrong pin directory).
    #[error("opening pinned map {path}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// A pinned map exists but is not of the type the reader expects.
    #[error("pinned map {path} is not a {expected}")]
    MapType {
        /// The pin path.
        path: PathBuf,
        /// The expected map type.
        expected: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// Reading a pinned map failed.
    #[error("reading pinned map {path}")]
    MapRead {
        /// The pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// The ring buffer's descriptor could not be registered with the tokio reactor.
    #[error("waiting for events on {path}")]
    Poll {
        /// The pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The log directory could not be created.
    #[error("creating log directory {dir}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A log file could not be opened or inspected.
    #[error("opening {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Appending to a log file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Renaming a log file during rotation failed.
    #[error("rotating {from} to {to}")]
    Rotate {
        /// The file being moved.
        from: PathBuf,
        /// Its new name.
        to: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading a log file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The thread that sends records to the journal could not be started.
    #[error("starting the journal sender")]
    Journal {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A time given on the command line is neither a duration nor an RFC 3339 time.
    #[error(
        "`{text}` is neither a duration (90s, 10m, 2h, 1d, 1w) nor an RFC 3339 time (2025-01-31T12:00:00Z)"
    )]
    Time {
        /// What was given.
        text: String,
    },
}
