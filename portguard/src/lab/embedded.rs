//! The lab's built-in site and the product files it needs, compiled into the binary, so
//! `portguard lab` works from any directory and from an installed binary alike.

use super::{LabError, error::failed};
use std::path::Path;

/// Name the built-in site is shown under (and written as, in the run directory).
pub const SITE_NAME: &str = "policies/examples/lab.toml";

/// `policies/examples/lab.toml`: an RHV host with the Veeam plug-in for oVirt.
pub const SITE: &str = include_str!("../../../policies/examples/lab.toml");

/// Every product file of this checkout, for when no product directory is found at run time.
pub const PRODUCTS: &[(&str, &str)] = &[
    (
        "essentials.toml",
        include_str!("../../../policies/essentials.toml"),
    ),
    ("rhv.toml", include_str!("../../../policies/rhv.toml")),
    (
        "veeam-ovirt.toml",
        include_str!("../../../policies/veeam-ovirt.toml"),
    ),
    (
        "veeam-proxmox.toml",
        include_str!("../../../policies/veeam-proxmox.toml"),
    ),
    ("avi.toml", include_str!("../../../policies/avi.toml")),
    (
        "kvmnet2.toml",
        include_str!("../../../policies/kvmnet2.toml"),
    ),
    (
        "proxmox-ve.toml",
        include_str!("../../../policies/proxmox-ve.toml"),
    ),
];

/// Write the built-in product files into `dir` (created if needed).
pub fn write_products(dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(failed(format!("creating {}", dir.display())))?;
    for (name, text) in PRODUCTS {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(failed(format!("writing {}", path.display())))?;
    }
    Ok(())
}
