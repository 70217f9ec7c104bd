//! XDP links pinned in bpffs: attach, adopt, switch programs atomically, and detach.
//!
//! Every interface gets a `bpf_link` pinned at `<pin dir>/links/<ifname>`. The pin, not the
//! daemon, keeps the program attached: the daemon can exit or be killed and enforcement goes
//! on. Every link runs the same pinned program ([`super::instance`]); a reload switches that
//! program's tables, not the program. Only a program of another build (an upgrade) is swapped
//! into each link, with `BPF_LINK_UPDATE`, which replaces the program of a link in one step:
//! every packet is judged either wholly by the old program and tables or wholly by the new ones.

use std::path::{Path, PathBuf};

use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, LinkError as AyaLinkError, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};

use aya::programs::SchedClassifier;

use super::DatapathError;
use crate::paths::LINKS_SUBDIR;

/// Why a link could not be attached, opened, switched or removed; every variant names the
/// interface or pin.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The program could not be loaded (see [`DatapathError`]).
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Attaching the program to an interface failed.
    #[error(
        "{ifname}: attaching {what} (does the interface exist? is another XDP program attached?)"
    )]
    Attach {
        /// The interface.
        ifname: String,
        /// The XDP program or the egress recorder.
        what: &'static str,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// The kernel attached without a `bpf_link`, which nothing could pin.
    #[error("{ifname}: the kernel attached {what} without a bpf_link (Linux >= {needs} needed)")]
    NoLink {
        /// The interface.
        ifname: String,
        /// The XDP program or the egress recorder.
        what: &'static str,
        /// The kernel version that added such links.
        needs: &'static str,
    },
    /// A link exists but could not be used as the kind expected.
    #[error("{ifname}: {what}")]
    Link {
        /// The interface.
        ifname: String,
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: AyaLinkError,
    },
    /// Replacing the program of a pinned link failed.
    #[error("{ifname}: replacing the program in its link")]
    Switch {
        /// The interface.
        ifname: String,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// Creating, reading or removing a pin (or the links directory) failed.
    #[error("{action} {path}")]
    Pin {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A new link could not be pinned.
    #[error("pinning link at {path}")]
    PinLink {
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::pin::PinError,
    },
    /// A pinned link could not be opened.
    #[error("opening pinned link {path}")]
    Open {
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: AyaLinkError,
    },
    /// A pinned link could not be read.
    #[error("reading pinned link {path}")]
    Read {
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn pin_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LinkError {
    let path = path.to_owned();
    move |source| LinkError::Pin {
        action,
        path,
        source,
    }
}

/// How an interface runs the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Driver,
    /// In the generic (skb) path, for drivers without native XDP.
    Generic,
}

impl AttachMode {
    /// Name used in state, status and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        }
    }
}

/// Directory of the link pins.
#[must_use]
pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(LINKS_SUBDIR)
}

/// Pin path of the link of `ifname`.
#[must_use]
pub fn link_pin(pin_dir: &Path, ifname: &str) -> PathBuf {
    links_dir(pin_dir).join(pin_name(ifname))
}

/// bpffs refuses names with a `.` (reserved for its own files), and interface names may have
/// one (VLAN devices: `eth1.100`); they can never have a `:`, so that stands in for it.
fn pin_name(ifname: &str) -> String {
    ifname.replace('.', ":")
}

/// The interface a pin name stands for.
fn if_name(pin: &str) -> String {
    pin.replace(':', ".")
}

/// Pin path of the egress recorder's link on `ifname`.
#[must_use]
pub fn egress_pin(pin_dir: &Path, ifname: &str) -> PathBuf {
    links_dir(pin_dir).join(format!("{EGRESS_PREFIX}{}", pin_name(ifname)))
}

/// Prefix of the egress recorder's link pins; the XDP link pins have the interface's name.
/// No interface name has a `:`, so none can be mistaken for the other.
const EGRESS_PREFIX: &str = "egress:";

/// Attach the egress recorder to `ifname` (tcx, Linux 6.6) and pin its link. Replies to
/// unconnected UDP sockets depend on it; enforcement does not, so callers only log a failure.
pub fn attach_egress(
    prog: &mut SchedClassifier,
    pin_dir: &Path,
    ifname: &str,
) -> Result<(), LinkError> {
    const WHAT: &str = "the egress recorder";
    let attach_err = |source| LinkError::Attach {
        ifname: ifname.to_owned(),
        what: WHAT,
        source,
    };
    let id = prog
        .attach(ifname, aya::programs::TcAttachType::Egress)
        .map_err(attach_err)?;
    let link = prog.take_link(id).map_err(attach_err)?;
    let link = FdLink::try_from(link).map_err(|_| LinkError::NoLink {
        ifname: ifname.to_owned(),
        what: WHAT,
        needs: "6.6",
    })?;
    let path = egress_pin(pin_dir, ifname);
    drop(link.pin(&path).map_err(|e| pin_error(&path, e))?);
    Ok(())
}

/// A link that could not be pinned at `path`.
fn pin_error(path: &Path, source: aya::pin::PinError) -> LinkError {
    LinkError::PinLink {
        path: path.to_owned(),
        source,
    }
}

/// Interfaces that have a pinned link.
pub fn pinned(pin_dir: &Path) -> Result<Vec<String>, LinkError> {
    let dir = links_dir(pin_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(pin_err("listing", &dir)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(EGRESS_PREFIX))
        .map(|n| if_name(&n))
        .collect();
    names.sort();
    Ok(names)
}

/// Kernel id of the program a pinned link runs, to tell whether it is the one expected.
pub fn pinned_program_id(pin_dir: &Path, ifname: &str) -> Result<u32, LinkError> {
    pinned_attachment(pin_dir, ifname).map(|a| a.program_id)
}

fn open(pin_dir: &Path, ifname: &str) -> Result<PinnedLink, LinkError> {
    let path = link_pin(pin_dir, ifname);
    PinnedLink::from_pin(&path).map_err(|source| LinkError::Open {
        path: path.clone(),
        source,
    })
}

/// Give up our handle of a link without detaching it: the pin keeps it attached.
fn release(prog: &mut Xdp, ifname: &str, id: XdpLinkId) -> Result<(), LinkError> {
    let link = prog.take_link(id).map_err(|source| LinkError::Switch {
        ifname: ifname.to_owned(),
        source,
    })?;
    // Dropping an fd-based link closes our fd only; the kernel object lives on through its pin.
    drop(link);
    Ok(())
}

/// The largest MTU whose frames every driver takes in one buffer: a 4 KiB page less the XDP
/// headroom, the shared info and the Ethernet header (veth's limit, about 3.5 K; other
/// drivers' limits are close).
const SINGLE_BUFFER_MTU: u32 = 3400;

/// Attach `prog` to `ifname` and pin the link. Native mode where the driver has it, generic
/// otherwise (logged, since generic mode costs an skb per packet).
pub fn attach(prog: &mut Xdp, pin_dir: &Path, ifname: &str) -> Result<AttachMode, LinkError> {
    const WHAT: &str = "the XDP program";
    let attach_err = |source| LinkError::Attach {
        ifname: ifname.to_owned(),
        what: WHAT,
        source,
    };
    let (id, mode) = match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Driver),
        Err(native) => {
            // A driver refuses a single-buffer program natively on an interface whose frames
            // do not fit one page: say so, it is the usual cause on kernels before 5.18.
            let mtu = crate::host::links()
                .ok()
                .and_then(|l| l.into_iter().find(|l| l.name == ifname)?.mtu)
                .filter(|m| *m > SINGLE_BUFFER_MTU)
                .map(|m| {
                    format!(
                        "; an MTU of {m} needs multi-buffer XDP natively (xdp.frags, Linux 5.18, \
                         and no --no-xdp-frags)"
                    )
                })
                .unwrap_or_default();
            log::warn!(
                "{ifname}: native XDP refused ({native}){mtu}; attaching in generic mode, which \
                 is slower"
            );
            let id = prog.attach(ifname, XdpMode::Skb).map_err(attach_err)?;
            (id, AttachMode::Generic)
        }
    };
    let link = prog.take_link(id).map_err(attach_err)?;
    let link = FdLink::try_from(link).map_err(|e| match e {
        AyaLinkError::InvalidLink => LinkError::NoLink {
            ifname: ifname.to_owned(),
            what: WHAT,
            needs: "5.9",
        },
        source => LinkError::Link {
            ifname: ifname.to_owned(),
            what: "taking the new link",
            source,
        },
    })?;
    let path = link_pin(pin_dir, ifname);
    let dir = links_dir(pin_dir);
    std::fs::create_dir_all(&dir).map_err(pin_err("creating", &dir))?;
    // Pinning consumes the link; dropping the returned handle leaves it attached.
    let pinned = link.pin(&path).map_err(|e| pin_error(&path, e))?;
    drop(pinned);
    Ok(mode)
}

/// Swap `prog` into the pinned link of `ifname`, atomically (`BPF_LINK_UPDATE`).
pub fn switch(prog: &mut Xdp, pin_dir: &Path, ifname: &str) -> Result<(), LinkError> {
    let fd: FdLink = open(pin_dir, ifname)?.into();
    let link = XdpLink::try_from(fd).map_err(|source| LinkError::Link {
        ifname: ifname.to_owned(),
        what: "the pin is not an XDP link",
        source,
    })?;
    let id = prog
        .attach_to_link(link)
        .map_err(|source| LinkError::Switch {
            ifname: ifname.to_owned(),
            source,
        })?;
    release(prog, ifname, id)
}

/// Remove the pinned link of `ifname`. The program is detached once no process holds the link.
pub fn unpin(pin_dir: &Path, ifname: &str) -> Result<(), LinkError> {
    let egress = egress_pin(pin_dir, ifname);
    if egress.exists() {
        if let Err(e) = link_detach(&egress) {
            log::warn!("{ifname}: detaching the egress recorder: {e}");
        }
        std::fs::remove_file(&egress).map_err(pin_err("removing", &egress))?;
    }
    let path = link_pin(pin_dir, ifname);
    // Detach explicitly (BPF_LINK_DETACH) before unpinning: that frees the interface even if
    // another process still holds the link open.
    if let Err(e) = link_detach(&path) {
        log::warn!("{ifname}: BPF_LINK_DETACH failed ({e}); removing the pin only");
    }
    std::fs::remove_file(&path).map_err(pin_err("removing", &path))
}

/// bpf(2) commands aya has no call for.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `bpf(cmd, attr)`; `bpf_attr` is a union of per-command structs, and 128 zeroed bytes cover
/// every one used here.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<libc::c_long> {
    // SAFETY: the attr buffer outlives the call and is larger than the kernel reads; pointers
    // in it are the caller's and live as long as `attr`'s borrow.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// `BPF_OBJ_GET` the object pinned at `path`.
fn obj_get(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us; OwnedFd closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET` the link pinned at `path`, then `BPF_LINK_DETACH` it.
fn link_detach(path: &Path) -> std::io::Result<()> {
    let fd = obj_get(path)?;
    let mut attr = [0u64; 16];
    attr[0] = u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(0);
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// Where a pinned XDP link runs, as the kernel's link object says: independent of the
/// network namespace the caller is in, and of interface names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// Program the link runs.
    pub program_id: u32,
    /// Interface it is attached to; 0 once the interface is gone or the link was detached.
    pub ifindex: u32,
}

/// The attachment of the link pinned for `ifname` (`BPF_OBJ_GET_INFO_BY_FD`: aya's link info
/// leaves out the per-type part that holds the interface).
pub fn pinned_attachment(pin_dir: &Path, ifname: &str) -> Result<Attachment, LinkError> {
    let path = link_pin(pin_dir, ifname);
    let io = |source| LinkError::Read {
        path: path.clone(),
        source,
    };
    let fd = obj_get(&path).map_err(io)?;
    // struct bpf_link_info: type, id, prog_id (u32 each), then the per-type union at byte 16,
    // whose xdp member starts with the ifindex.
    let mut info = [0u32; 16];
    let mut attr = [0u64; 16];
    attr[0] = u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(0)
        | (u64::try_from(size_of_val(&info)).unwrap_or(0) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(io)?;
    Ok(Attachment {
        program_id: info[2],
        ifindex: info[4],
    })
}
