//! Every path portguard uses, with the systemd directive that owns it.
//!
//! Directories are given on the command line (`--pin-dir`, `--run-dir`, `--site`); the names of
//! the files inside them are fixed here, so the daemon, the CLI verbs and the lab agree.

use std::path::{Path, PathBuf};

/// The site file (`ConfigurationDirectory=portguard`).
pub const SITE_FILE: &str = "/etc/portguard/site.toml";
/// Installed product files (the package, or `cargo xtask install`).
pub const POLICIES_DIR: &str = "/usr/share/portguard/policies";
/// Pinned programs, links and maps (bpffs; not a systemd directory: it must outlive the unit).
pub const PIN_DIR: &str = "/sys/fs/bpf/portguard";
/// Runtime state: rule names per slot, interfaces, policy version (`RuntimeDirectory=portguard`).
pub const RUN_DIR: &str = "/run/portguard";
/// What survives reboots: the last good policy (`StateDirectory=portguard`).
pub const STATE_DIR: &str = "/var/lib/portguard";
/// The audit log of denied flows (`LogsDirectory=portguard`); the site's `[audit] path`
/// overrides it.
pub const AUDIT_LOG: &str = "/var/log/portguard/audit.jsonl";

/// In the run directory: what the daemon has put in force (`crate::state::State`).
pub const STATE_FILE: &str = "state.json";
/// In the run directory: the daemon's latest counter sample (rates, last hits).
pub const SAMPLE_FILE: &str = "counters.json";
/// In the run directory: a pending `portguard apply` request, read by the daemon on SIGHUP.
pub const TRIAL_REQUEST: &str = "trial-request.json";
/// In the run directory: the site file as it was when its policy was last confirmed, which a
/// trial that is not confirmed puts back.
pub const CONFIRMED_SITE: &str = "confirmed-site.toml";

/// In the pin directory: the links, one per interface.
pub const LINKS_SUBDIR: &str = "links";

/// The product-file directory: the one given, else the installed one, else `./policies`.
#[must_use]
pub fn policies_dir(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_owned();
    }
    let installed = Path::new(POLICIES_DIR);
    if installed.is_dir() {
        installed.to_owned()
    } else {
        PathBuf::from("policies")
    }
}
