//! What the daemon asks of the system before it starts: capabilities, bpffs, and systemd.

use std::path::Path;

use super::DaemonError;

/// Fail, naming what is missing, unless this process may load and attach XDP programs:
/// `CAP_BPF` (or `CAP_SYS_ADMIN` on kernels before 5.8), `CAP_NET_ADMIN`, and `CAP_PERFMON`
/// (or `CAP_SYS_ADMIN`) for the helpers the program calls.
pub fn check_capabilities() -> Result<(), DaemonError> {
    let missing = crate::doctor::missing_capabilities().map_err(|e| DaemonError::System {
        what: "reading this process's capabilities",
        source: std::io::Error::other(e),
    })?;
    if !missing.is_empty() {
        return Err(DaemonError::Capabilities {
            missing: missing.join(", "),
        });
    }
    Ok(())
}

/// Make sure `pin_dir` is on a mounted bpffs that outlives this process, mounting one at
/// `/sys/fs/bpf` if none is there and this process shares the host's mount namespace, and
/// create it with mode 0700, owned by us.
///
/// The pins are the enforcement: a bpffs that lives only in a mount namespace of this
/// process's own (as under `ip netns exec`, which remounts /sys) would take the pinned links,
/// and with them the XDP programs, along when the process ends. Refusing to start there is the
/// only safe answer.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), DaemonError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && fs_magic(root)? != BPF_FS_MAGIC {
        if !in_host_mount_namespace() {
            return Err(DaemonError::PrivateBpffs);
        }
        let target = std::ffi::CString::new("/sys/fs/bpf").expect("literal");
        let fstype = std::ffi::CString::new("bpf").expect("literal");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(DaemonError::dir("mounting bpffs at", root)(
                std::io::Error::last_os_error(),
            ));
        }
        log::info!("mounted bpffs at /sys/fs/bpf");
    }
    own_dir(pin_dir, 0o700)
}

/// Whether this process shares PID 1's mount namespace (where a mount outlives it). Unknown
/// (no access to PID 1's namespace link) counts as no.
fn in_host_mount_namespace() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let mine = ns("/proc/self/ns/mnt");
    mine.is_some() && mine == ns("/proc/1/ns/mnt")
}

/// Create `dir` (and its parents) with `mode`, or take an existing one over if it is safe to:
/// a real directory (not a symlink) owned by this process's user. Where the parent is
/// world-writable (a bpffs mounted 1777), a directory another user created first would let
/// that user remove the pins inside it, and with them the enforcement.
pub fn own_dir(dir: &Path, mode: u32) -> Result<(), DaemonError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            // SAFETY: geteuid has no failure mode.
            let me = unsafe { libc::geteuid() };
            if meta.file_type().is_symlink() || !meta.is_dir() {
                return Err(DaemonError::UnsafeDir {
                    path: dir.to_owned(),
                    why: "it is not a directory (a symlink or a file stands there)".to_owned(),
                });
            }
            if meta.uid() != me {
                return Err(DaemonError::UnsafeDir {
                    path: dir.to_owned(),
                    why: format!(
                        "it is owned by uid {}, not by this process's user {me}: someone \
                         created it first",
                        meta.uid()
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(DaemonError::dir("creating", dir))?;
        }
        Err(e) => return Err(DaemonError::dir("inspecting", dir)(e)),
    }
    // Whatever the umask, and whatever a previous run left.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(DaemonError::dir("setting the mode of", dir))
}

fn fs_magic(path: &Path) -> Result<i64, DaemonError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| DaemonError::dir("statfs", path)(e.into()))?;
    // SAFETY: statfs fills the struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(DaemonError::dir("statfs", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_type)
}

/// Tell systemd (Type=notify) about our state; a no-op outside systemd.
pub fn notify(state: &str) {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        std::os::unix::net::SocketAddr::from_pathname(&path)
    };
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        log::warn!("sd_notify({state:?}) to {path}: {e}");
    }
}

/// `MONOTONIC_USEC=` value for `RELOADING=1` notifications.
#[must_use]
pub fn monotonic_usec() -> u64 {
    crate::audit::clock::monotonic_ns() / 1000
}
