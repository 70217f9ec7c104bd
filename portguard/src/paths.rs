//! Every path portguard uses, with the systemd directive that owns it.

use std::path::{Path, PathBuf};

/// The site file (`ConfigurationDirectory=portguard`).
pub const SITE_FILE: &str = "/etc/portguard/site.toml";
/// Installed product files (`cargo xtask install`).
pub const POLICIES_DIR: &str = "/usr/share/portguard/policies";
/// Pinned programs, links and maps (bpffs; not a systemd directory: it must outlive the unit).
pub const PIN_DIR: &str = "/sys/fs/bpf/portguard";
/// Runtime state: rule names per slot, interfaces, policy version (`RuntimeDirectory=portguard`).
pub const RUN_DIR: &str = "/run/portguard";

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
