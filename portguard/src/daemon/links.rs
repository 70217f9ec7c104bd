//! XDP links pinned in bpffs: attach, adopt, switch programs atomically, and detach.
//!
//! Every interface gets a `bpf_link` pinned at `<pin dir>/links/<ifname>`. The pin, not the
//! daemon, keeps the program attached: the daemon can exit or be killed and enforcement goes
//! on. A reload loads a new program with new tables and swaps it into each link with
//! `BPF_LINK_UPDATE`, which replaces the program of a link in one step: every packet is judged
//! either wholly by the old program and tables or wholly by the new ones.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};

use crate::ebpf::Datapath;

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
    pin_dir.join("links")
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
pub fn attach_egress(dp: &mut Datapath, pin_dir: &Path, ifname: &str) -> anyhow::Result<()> {
    let prog = dp.egress()?;
    let id = prog
        .attach(ifname, aya::programs::TcAttachType::Egress)
        .with_context(|| format!("{ifname}: attaching the egress recorder"))?;
    let link = prog.take_link(id).context("taking link")?;
    let link = FdLink::try_from(link).map_err(|_| {
        anyhow::anyhow!("{ifname}: tc attached without a link (Linux >= 6.6 needed)")
    })?;
    let path = egress_pin(pin_dir, ifname);
    drop(
        link.pin(&path)
            .with_context(|| format!("pinning link at {}", path.display()))?,
    );
    Ok(())
}

/// Interfaces that have a pinned link.
pub fn pinned(pin_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = links_dir(pin_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
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
pub fn pinned_program_id(pin_dir: &Path, ifname: &str) -> anyhow::Result<u32> {
    let link: FdLink = open(pin_dir, ifname)?.into();
    Ok(link.info().context("reading link info")?.program_id())
}

fn open(pin_dir: &Path, ifname: &str) -> anyhow::Result<PinnedLink> {
    let path = link_pin(pin_dir, ifname);
    PinnedLink::from_pin(&path).with_context(|| format!("opening pinned link {}", path.display()))
}

/// Give up our handle of a link without detaching it: the pin keeps it attached.
fn release(prog: &mut Xdp, id: XdpLinkId) -> anyhow::Result<()> {
    let link = prog.take_link(id).context("taking link")?;
    // Dropping an fd-based link closes our fd only; the kernel object lives on through its pin.
    drop(link);
    Ok(())
}

/// Attach the datapath's program to `ifname` and pin the link. Native mode where the driver
/// has it, generic otherwise (logged, since generic mode costs an skb per packet).
pub fn attach(dp: &mut Datapath, pin_dir: &Path, ifname: &str) -> anyhow::Result<AttachMode> {
    let prog = dp.program()?;
    let (id, mode) = match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Driver),
        Err(native) => {
            log::warn!(
                "{ifname}: native XDP refused ({native}); attaching in generic mode, which is slower"
            );
            let id = prog.attach(ifname, XdpMode::Skb).with_context(|| {
                format!(
                    "attaching to {ifname} (does the interface exist? is another XDP program attached?)"
                )
            })?;
            (id, AttachMode::Generic)
        }
    };
    let link = prog.take_link(id).context("taking link")?;
    let link = FdLink::try_from(link).map_err(|e| match e {
        LinkError::InvalidLink => {
            anyhow::anyhow!("{ifname}: the kernel attached without bpf_link (Linux >= 5.9 needed)")
        }
        other => anyhow::Error::new(other),
    })?;
    let path = link_pin(pin_dir, ifname);
    std::fs::create_dir_all(links_dir(pin_dir))
        .with_context(|| format!("creating {}", links_dir(pin_dir).display()))?;
    // Pinning consumes the link; dropping the returned handle leaves it attached.
    let pinned = link
        .pin(&path)
        .with_context(|| format!("pinning link at {}", path.display()))?;
    drop(pinned);
    Ok(mode)
}

/// Swap the datapath's program into the pinned link of `ifname`, atomically.
pub fn switch(dp: &mut Datapath, pin_dir: &Path, ifname: &str) -> anyhow::Result<()> {
    let fd: FdLink = open(pin_dir, ifname)?.into();
    let link =
        XdpLink::try_from(fd).with_context(|| format!("{ifname}: pin is not an XDP link"))?;
    let prog = dp.program()?;
    let id = prog
        .attach_to_link(link)
        .with_context(|| format!("{ifname}: replacing the program in its link"))?;
    release(prog, id)
}

/// Remove the pinned link of `ifname`. The program is detached once no process holds the link.
pub fn unpin(pin_dir: &Path, ifname: &str) -> anyhow::Result<()> {
    let egress = egress_pin(pin_dir, ifname);
    if egress.exists() {
        if let Err(e) = link_detach(&egress) {
            log::warn!("{ifname}: detaching the egress recorder: {e}");
        }
        std::fs::remove_file(&egress).with_context(|| format!("removing {}", egress.display()))?;
    }
    let path = link_pin(pin_dir, ifname);
    // Detach explicitly (BPF_LINK_DETACH) before unpinning: that frees the interface even if
    // another process still holds the link open.
    if let Err(e) = link_detach(&path) {
        log::warn!("{ifname}: BPF_LINK_DETACH failed ({e}); removing the pin only");
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// `BPF_OBJ_GET` the link pinned at `path`, then `BPF_LINK_DETACH` it (aya has no call for it).
fn link_detach(path: &Path) -> std::io::Result<()> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // bpf_attr is a union of per-command structs; 128 zeroed bytes cover both used here.
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: the attr buffer outlives the call and is larger than the kernel reads.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 128) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; OwnedFd closes it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u64; 16];
    attr[0] = u64::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap_or(0);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_mut_ptr(), 128) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
