//! Who could have written a policy file. The policy decides what reaches the host, so a file
//! (or a directory holding it) that a local user can change is a way to root: add yourself to
//! `[failsafe] ssh_from`, wait for the next reload. Such files are refused, not warned about.

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// Group- and world-write permission bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: in a directory, only a file's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// Owners whose files this process may trust: root, and the user running it (whose own files
/// it trusts anyway: nothing is gained by tricking a user into reading their own file).
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    uid == 0 || uid == me
}

/// Why the policy file at `path` cannot be trusted, if it cannot.
pub(super) fn unsafe_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    if !trusted_owner(meta.uid()) {
        return Some(format!(
            "owned by uid {}, not by root: whoever owns it decides what reaches this host \
             (chown root: {})",
            meta.uid(),
            path.display()
        ));
    }
    (mode & WRITABLE_BY_OTHERS != 0).then(|| {
        format!(
            "writable by its group or by every user (mode {mode:04o}): any of them could open \
             the host through it (chmod go-w {})",
            path.display()
        )
    })
}

/// Why the directory holding policy files cannot be trusted, if it cannot: one others may
/// write to lets them replace a file they cannot edit.
pub(super) fn unsafe_dir(dir: &Path) -> Option<String> {
    let meta = std::fs::metadata(dir).ok()?;
    let mode = meta.mode() & 0o7777;
    let shared = mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0;
    if !trusted_owner(meta.uid()) || shared {
        return Some(format!(
            "its directory {} is not root's alone (owner uid {}, mode {mode:04o}): others could \
             replace the file",
            dir.display(),
            meta.uid()
        ));
    }
    None
}
