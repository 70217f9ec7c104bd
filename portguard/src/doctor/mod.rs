//! The kernel probe behind `portguard doctor`, and the check `run` and `lab` make at start.
//!
//! Every kernel feature portguard uses is tried, not inferred from the kernel version: the
//! kernels portguard is for (EL8's 4.18, EL9's 5.14) carry backported BPF features, so a version
//! number says little. Each probe loads a tiny program, creates a map or attaches a link, and
//! the kernel's answer (or the verifier's) is the result. Attach probes work on the loopback
//! device of a network namespace created for the probe and gone when it ends: nothing of the
//! host's is touched.
//!
//! A [`Report`] says, for each [`Feature`], present or absent, the kernel version that added
//! it, and what portguard does without it; [`Report::fatal`] says whether enforcement can work.

mod sys;

use std::{io, os::fd::OwnedFd, path::Path};

use sys::Refused;

/// A kernel feature portguard uses (or, for capabilities and bpffs, needs from the system).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The process may load programs and attach them.
    Capabilities,
    /// The BPF filesystem, where links and maps are pinned.
    Bpffs,
    /// Kernel type information (`/sys/kernel/btf/vmlinux`).
    Btf,
    /// XDP programs at all.
    Xdp,
    /// LPM trie maps (the source-prefix tables).
    LpmTrie,
    /// Arrays mapped into the loader's memory (`BPF_F_MMAPABLE`): the policy image.
    MmapArray,
    /// LRU hash maps (the egress recorder's flows).
    LruHash,
    /// Ring buffer maps (the audit events).
    RingBuf,
    /// `bpf_skc_lookup_tcp` from XDP (replies to the host's TCP connections).
    SkcLookupTcp,
    /// `bpf_sk_lookup_udp` from XDP (replies to connected UDP sockets).
    SkLookupUdp,
    /// `bpf_ktime_get_coarse_ns` (rate limits and the egress recorder's clock).
    KtimeGetCoarseNs,
    /// `bpf_xdp_get_buff_len` (byte counters of multi-buffer frames).
    XdpGetBuffLen,
    /// `BPF_F_XDP_HAS_FRAGS`: XDP on multi-buffer frames (MTU above a page, jumbo frames).
    XdpFrags,
    /// `BPF_PROG_TEST_RUN` for XDP programs.
    ProgTestRun,
    /// XDP attached through a `bpf_link`, which can be pinned.
    XdpLink,
    /// `BPF_LINK_UPDATE` of an XDP link: the atomic program swap of a reload.
    XdpLinkUpdate,
    /// tcx: tc programs attached through a `bpf_link` (the egress recorder).
    Tcx,
}

/// Whether portguard can enforce without a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Without it, nothing is enforced.
    Required,
    /// Without it, enforcement works with less (see [`Feature::without`]).
    Optional,
}

impl Feature {
    /// Every feature, in the order the report lists them.
    pub const ALL: [Feature; 17] = [
        Feature::Capabilities,
        Feature::Bpffs,
        Feature::Btf,
        Feature::Xdp,
        Feature::LpmTrie,
        Feature::MmapArray,
        Feature::LruHash,
        Feature::RingBuf,
        Feature::SkcLookupTcp,
        Feature::SkLookupUdp,
        Feature::KtimeGetCoarseNs,
        Feature::XdpGetBuffLen,
        Feature::XdpFrags,
        Feature::ProgTestRun,
        Feature::XdpLink,
        Feature::XdpLinkUpdate,
        Feature::Tcx,
    ];

    /// Stable identifier (JSON, logs).
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Feature::Capabilities => "capabilities",
            Feature::Bpffs => "bpffs",
            Feature::Btf => "btf",
            Feature::Xdp => "xdp",
            Feature::LpmTrie => "lpm_trie",
            Feature::MmapArray => "mmap_array",
            Feature::LruHash => "lru_hash",
            Feature::RingBuf => "ringbuf",
            Feature::SkcLookupTcp => "skc_lookup_tcp",
            Feature::SkLookupUdp => "sk_lookup_udp",
            Feature::KtimeGetCoarseNs => "ktime_get_coarse_ns",
            Feature::XdpGetBuffLen => "xdp_get_buff_len",
            Feature::XdpFrags => "xdp_frags",
            Feature::ProgTestRun => "prog_test_run",
            Feature::XdpLink => "xdp_link",
            Feature::XdpLinkUpdate => "xdp_link_update",
            Feature::Tcx => "tcx",
        }
    }

    /// What it is, for people.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Feature::Capabilities => "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON (or CAP_SYS_ADMIN)",
            Feature::Bpffs => "bpffs at /sys/fs/bpf",
            Feature::Btf => "kernel BTF (/sys/kernel/btf/vmlinux)",
            Feature::Xdp => "XDP programs",
            Feature::LpmTrie => "LPM trie maps",
            Feature::MmapArray => "memory-mapped arrays (BPF_F_MMAPABLE)",
            Feature::LruHash => "LRU hash maps",
            Feature::RingBuf => "ring buffer maps",
            Feature::SkcLookupTcp => "bpf_skc_lookup_tcp from XDP",
            Feature::SkLookupUdp => "bpf_sk_lookup_udp from XDP",
            Feature::KtimeGetCoarseNs => "bpf_ktime_get_coarse_ns",
            Feature::XdpGetBuffLen => "bpf_xdp_get_buff_len",
            Feature::XdpFrags => "XDP multi-buffer (xdp.frags)",
            Feature::ProgTestRun => "BPF_PROG_TEST_RUN for XDP",
            Feature::XdpLink => "XDP bpf_link",
            Feature::XdpLinkUpdate => "BPF_LINK_UPDATE of an XDP link",
            Feature::Tcx => "tcx (tc bpf_link, egress)",
        }
    }

    /// The mainline kernel release that added it (distribution kernels may have it earlier,
    /// backported: the probe, not this number, decides).
    #[must_use]
    pub fn since(self) -> &'static str {
        match self {
            Feature::Capabilities | Feature::RingBuf => "5.8",
            Feature::Bpffs => "4.4",
            Feature::Btf => "5.4",
            Feature::Xdp => "4.8",
            Feature::LpmTrie => "4.11",
            Feature::MmapArray => "5.5",
            Feature::LruHash => "4.10",
            Feature::SkcLookupTcp => "5.2",
            Feature::SkLookupUdp => "4.20",
            Feature::KtimeGetCoarseNs => "5.11",
            Feature::XdpGetBuffLen | Feature::XdpFrags => "5.18",
            Feature::ProgTestRun => "4.12",
            Feature::XdpLink | Feature::XdpLinkUpdate => "5.9",
            Feature::Tcx => "6.6",
        }
    }

    /// Whether enforcement can work without it.
    #[must_use]
    pub fn need(self) -> Need {
        match self {
            Feature::Btf | Feature::XdpFrags | Feature::ProgTestRun | Feature::Tcx => {
                Need::Optional
            }
            _ => Need::Required,
        }
    }

    /// What portguard does without it.
    #[must_use]
    pub fn without(self) -> &'static str {
        match self {
            Feature::Capabilities => {
                "cannot run: loading and attaching programs needs them (run as root, or as the \
                 unit does with AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON)"
            }
            Feature::Bpffs => {
                "cannot run: enforcement lives in pinned links (when bpffs is only unmounted, \
                 `run` mounts it)"
            }
            Feature::Btf => {
                "nothing changes: the program has no CO-RE relocations and calls no kfuncs; \
                 bpftool shows the maps without type names"
            }
            Feature::Xdp => "cannot run: enforcement is an XDP program",
            Feature::LpmTrie => "cannot run: the source-address tables are LPM tries",
            Feature::MmapArray => {
                "cannot run: the policy tables are one memory-mapped array, written in place on \
                 every reload"
            }
            Feature::LruHash => "cannot run: the program's flow tables are LRU hashes",
            Feature::RingBuf => "cannot run: the program sends audit events through a ring buffer",
            Feature::SkcLookupTcp => {
                "cannot run: the program recognises replies to the host's TCP connections with it"
            }
            Feature::SkLookupUdp => {
                "cannot run: the program recognises replies to connected UDP sockets with it"
            }
            Feature::KtimeGetCoarseNs => {
                "cannot run: the program's audit rate limit and the egress recorder call it"
            }
            Feature::XdpGetBuffLen => "cannot run: the program counts bytes with it",
            Feature::XdpFrags => {
                "the single-buffer program is loaded; an interface whose MTU needs multi-buffer \
                 frames (larger than one page holds: about 3500 bytes with 4 KiB pages, e.g. \
                 jumbo frames) is refused natively by its driver and protected in generic mode \
                 instead (slower; logged)"
            }
            Feature::ProgTestRun => {
                "enforcement works; the self-test of a loaded program (one test packet through \
                 it before it goes in force) is skipped and reported as not run"
            }
            Feature::XdpLink => {
                "cannot run: enforcement is pinned as bpf_links, which outlive the daemon"
            }
            Feature::XdpLinkUpdate => {
                "cannot run: a reload swaps the program in each link atomically with it"
            }
            Feature::Tcx => {
                "the egress recorder is off (logged at start): answers to unconnected UDP \
                 clients of the host (DNS, NTP from unconnected sockets) are judged by the \
                 rules; replies to TCP and connected UDP still pass"
            }
        }
    }
}

/// What the probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The kernel did it.
    Present,
    /// The kernel refused it.
    Absent,
    /// The probe could not ask (no privileges, no private namespace): nothing known.
    Unknown,
}

impl Status {
    /// Name in the table and the JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Absent => "absent",
            Status::Unknown => "unknown",
        }
    }
}

/// One feature's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The feature.
    pub feature: Feature,
    /// What the probe found.
    pub status: Status,
    /// The kernel's answer in words: the errno, the verifier's message, or how it was found.
    pub detail: String,
}

impl Probe {
    /// A result.
    #[must_use]
    pub fn new(feature: Feature, status: Status, detail: impl Into<String>) -> Self {
        Probe {
            feature,
            status,
            detail: detail.into(),
        }
    }
}

/// The overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything portguard uses is there.
    Ok,
    /// Enforcement works; an optional feature is missing or a feature could not be probed.
    Degraded,
    /// A required feature is missing: nothing would be enforced.
    CannotRun,
    /// This process lacks the capabilities to load programs, so the kernel could not be asked:
    /// an environment problem (run as root), not the kernel's.
    Unprivileged,
}

impl Verdict {
    /// Name in the table and the JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::CannotRun => "cannot-run",
            Verdict::Unprivileged => "unprivileged",
        }
    }
}

/// Every feature's result on this kernel.
#[derive(Clone, Debug)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// One result per feature, in [`Feature::ALL`] order.
    pub probes: Vec<Probe>,
}

/// Enforcement cannot work on this kernel or with these privileges.
#[derive(Debug, thiserror::Error)]
#[error("this kernel ({kernel}) cannot run portguard: {}", missing.join("; "))]
pub struct Unsupported {
    /// `uname -r`.
    pub kernel: String,
    /// Each missing required feature, with the version that added it.
    pub missing: Vec<String>,
}

impl Report {
    /// A report of given results (the probe's, or a test's).
    #[must_use]
    pub fn new(kernel: impl Into<String>, probes: Vec<Probe>) -> Self {
        Report {
            kernel: kernel.into(),
            probes,
        }
    }

    /// The result for `feature`.
    #[must_use]
    pub fn status(&self, feature: Feature) -> Status {
        self.probes
            .iter()
            .find(|p| p.feature == feature)
            .map_or(Status::Unknown, |p| p.status)
    }

    /// Whether `feature` is known to be there. Fallbacks key on this: an unknown optional
    /// feature is tried, and its own attach or load error is the answer then.
    #[must_use]
    pub fn has(&self, feature: Feature) -> bool {
        self.status(feature) == Status::Present
    }

    /// Required features the kernel refused.
    pub fn missing_required(&self) -> impl Iterator<Item = &Probe> {
        self.probes
            .iter()
            .filter(|p| p.status == Status::Absent && p.feature.need() == Need::Required)
    }

    /// Optional features the kernel refused: what runs degraded, and how.
    pub fn degraded(&self) -> impl Iterator<Item = &Probe> {
        self.probes
            .iter()
            .filter(|p| p.status == Status::Absent && p.feature.need() == Need::Optional)
    }

    /// The overall answer: unprivileged before anything else (the other results mean nothing
    /// then), then a missing required feature, then anything missing or unknown.
    #[must_use]
    pub fn verdict(&self) -> Verdict {
        if self.status(Feature::Capabilities) == Status::Absent {
            Verdict::Unprivileged
        } else if self.missing_required().next().is_some() {
            Verdict::CannotRun
        } else if self.probes.iter().all(|p| p.status == Status::Present) {
            Verdict::Ok
        } else {
            Verdict::Degraded
        }
    }

    /// Why enforcement cannot work, if it cannot: `run` and `lab` stop with this error.
    #[must_use]
    pub fn fatal(&self) -> Option<Unsupported> {
        let missing: Vec<String> = self
            .missing_required()
            .map(|p| {
                format!(
                    "{} (Linux {}) is missing: {}",
                    p.feature.name(),
                    p.feature.since(),
                    p.detail
                )
            })
            .collect();
        (!missing.is_empty()).then(|| Unsupported {
            kernel: self.kernel.clone(),
            missing,
        })
    }

    /// Log what runs degraded and what could not be probed (at start of `run` and `lab`).
    pub fn log(&self) {
        for p in self.degraded() {
            log::warn!(
                "kernel {}: no {} (Linux {}): {}",
                self.kernel,
                p.feature.name(),
                p.feature.since(),
                p.feature.without()
            );
        }
        for p in self.probes.iter().filter(|p| p.status == Status::Unknown) {
            log::info!(
                "kernel probe: {} not probed: {}",
                p.feature.name(),
                p.detail
            );
        }
    }

    /// The report as JSON (`portguard doctor --json`): stable field names.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let features: Vec<serde_json::Value> = self
            .probes
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.feature.id(),
                    "name": p.feature.name(),
                    "status": p.status.name(),
                    "present": p.status == Status::Present,
                    "since": p.feature.since(),
                    "required": p.feature.need() == Need::Required,
                    "without": p.feature.without(),
                    "detail": p.detail,
                })
            })
            .collect();
        serde_json::json!({
            "kernel": self.kernel,
            "verdict": self.verdict().name(),
            "features": features,
        })
    }
}

/// Try every feature on this kernel. Takes well under a second; needs the daemon's
/// capabilities (see [`Feature::Capabilities`]), and `CAP_SYS_ADMIN` for the attach probes'
/// private network namespace (without it they report [`Status::Unknown`]).
#[must_use]
pub fn probe() -> Report {
    let mut probes = vec![capabilities(), bpffs(), btf()];
    let xdp = sys::prog_load(sys::PROG_TYPE_XDP, 0, &sys::xdp_pass());
    let privileged = probes[0].status == Status::Present;
    match &xdp {
        Ok(_) => probes.push(Probe::new(
            Feature::Xdp,
            Status::Present,
            "loaded a program that returns XDP_PASS",
        )),
        Err(e) => probes.push(refused(Feature::Xdp, e, privileged)),
    }
    // A kernel that loads no XDP program at all (or will not let us) says nothing about the
    // rest: each is unknown then, not absent.
    let base = xdp
        .as_ref()
        .err()
        .map(|e| format!("no XDP program loads: {e}"));
    let unknown = |f: Feature| Probe::new(f, Status::Unknown, base.clone().unwrap_or_default());
    probes.push(map(
        Feature::LpmTrie,
        sys::map_create(sys::MAP_TYPE_LPM_TRIE, 8, 4, 1, sys::F_NO_PREALLOC),
        privileged,
    ));
    probes.push(map(
        Feature::MmapArray,
        sys::map_create(sys::MAP_TYPE_ARRAY, 4, 64, 1, sys::F_MMAPABLE),
        privileged,
    ));
    probes.push(map(
        Feature::LruHash,
        sys::map_create(sys::MAP_TYPE_LRU_HASH, 4, 4, 1, 0),
        privileged,
    ));
    probes.push(map(
        Feature::RingBuf,
        sys::map_create(sys::MAP_TYPE_RINGBUF, 0, 0, page_size(), 0),
        privileged,
    ));
    let Ok(pass) = xdp else {
        probes.extend(
            [
                Feature::SkcLookupTcp,
                Feature::SkLookupUdp,
                Feature::KtimeGetCoarseNs,
                Feature::XdpGetBuffLen,
                Feature::XdpFrags,
                Feature::ProgTestRun,
                Feature::XdpLink,
                Feature::XdpLinkUpdate,
                Feature::Tcx,
            ]
            .map(unknown),
        );
        return Report::new(sys::kernel_release(), probes);
    };
    for (feature, insns) in [
        (
            Feature::SkcLookupTcp,
            sys::xdp_socket_lookup(sys::HELPER_SKC_LOOKUP_TCP),
        ),
        (
            Feature::SkLookupUdp,
            sys::xdp_socket_lookup(sys::HELPER_SK_LOOKUP_UDP),
        ),
        (
            Feature::KtimeGetCoarseNs,
            sys::xdp_call_scalar(sys::HELPER_KTIME_GET_COARSE_NS),
        ),
        (
            Feature::XdpGetBuffLen,
            sys::xdp_call_scalar(sys::HELPER_XDP_GET_BUFF_LEN),
        ),
    ] {
        probes.push(program(
            feature,
            sys::prog_load(sys::PROG_TYPE_XDP, 0, &insns),
            "the verifier accepted a call from XDP",
            privileged,
        ));
    }
    probes.push(program(
        Feature::XdpFrags,
        sys::prog_load(sys::PROG_TYPE_XDP, sys::F_XDP_HAS_FRAGS, &sys::xdp_pass()),
        "loaded an XDP program with BPF_F_XDP_HAS_FRAGS",
        privileged,
    ));
    probes.push(test_run(&pass));
    probes.extend(attach_probes(&pass));
    Report::new(sys::kernel_release(), probes)
}

/// The capabilities loading and attaching need that this process's effective set lacks:
/// `CAP_BPF` (or `CAP_SYS_ADMIN`, before 5.8), `CAP_NET_ADMIN`, and `CAP_PERFMON` (or
/// `CAP_SYS_ADMIN`) for the helpers the program calls.
pub fn missing_capabilities() -> Result<Vec<&'static str>, caps::errors::CapsError> {
    use caps::{CapSet, Capability};
    let effective = caps::read(None, CapSet::Effective)?;
    let has = |c| effective.contains(&c);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(Capability::CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(Capability::CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    Ok(missing)
}

/// Whether this process has what loading and attaching need.
fn capabilities() -> Probe {
    match missing_capabilities() {
        Err(e) => Probe::new(
            Feature::Capabilities,
            Status::Unknown,
            format!("capget: {e}"),
        ),
        Ok(missing) if missing.is_empty() => {
            Probe::new(Feature::Capabilities, Status::Present, "effective")
        }
        Ok(missing) => Probe::new(
            Feature::Capabilities,
            Status::Absent,
            format!("not effective: {}", missing.join(", ")),
        ),
    }
}

/// bpffs mounted at /sys/fs/bpf, or at least known to the kernel (then `run` mounts it).
fn bpffs() -> Probe {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, at, fs) = (f.next(), f.next(), f.next());
        at == Some("/sys/fs/bpf") && fs == Some("bpf")
    }) {
        return Probe::new(Feature::Bpffs, Status::Present, "mounted at /sys/fs/bpf");
    }
    let known = std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("bpf"));
    if known {
        Probe::new(
            Feature::Bpffs,
            Status::Present,
            "not mounted at /sys/fs/bpf; `run` mounts it",
        )
    } else {
        Probe::new(
            Feature::Bpffs,
            Status::Absent,
            "no bpf filesystem in /proc/filesystems",
        )
    }
}

fn btf() -> Probe {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    if path.is_file() {
        Probe::new(Feature::Btf, Status::Present, path.display().to_string())
    } else {
        Probe::new(
            Feature::Btf,
            Status::Absent,
            format!("no {} (CONFIG_DEBUG_INFO_BTF off)", path.display()),
        )
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// EPERM/EACCES without the capabilities means "could not ask", not "absent".
fn denied(e: &io::Error, privileged: bool) -> bool {
    !privileged && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

fn map(feature: Feature, made: io::Result<OwnedFd>, privileged: bool) -> Probe {
    match made {
        Ok(_) => Probe::new(feature, Status::Present, "created one"),
        Err(e) if denied(&e, privileged) => Probe::new(
            feature,
            Status::Unknown,
            format!("not allowed: {}", sys::errno_text(&e)),
        ),
        Err(e) => Probe::new(
            feature,
            Status::Absent,
            format!("map create: {}", sys::errno_text(&e)),
        ),
    }
}

fn refused(feature: Feature, e: &Refused, privileged: bool) -> Probe {
    if denied(&e.error, privileged) {
        Probe::new(feature, Status::Unknown, format!("not allowed: {e}"))
    } else {
        Probe::new(feature, Status::Absent, e.to_string())
    }
}

fn program(
    feature: Feature,
    loaded: Result<OwnedFd, Refused>,
    how: &str,
    privileged: bool,
) -> Probe {
    match loaded {
        Ok(_) => Probe::new(feature, Status::Present, how),
        Err(e) => refused(feature, &e, privileged),
    }
}

fn test_run(pass: &OwnedFd) -> Probe {
    // An Ethernet frame of zeros: the program returns XDP_PASS whatever it holds.
    let frame = [0u8; 64];
    match sys::test_run(pass, &frame) {
        Ok(sys::XDP_PASS) => Probe::new(
            Feature::ProgTestRun,
            Status::Present,
            "ran a frame through a program: XDP_PASS",
        ),
        Ok(other) => Probe::new(
            Feature::ProgTestRun,
            Status::Absent,
            format!("ran, but returned {other} instead of XDP_PASS"),
        ),
        Err(e) => Probe::new(Feature::ProgTestRun, Status::Absent, sys::errno_text(&e)),
    }
}

/// XDP link, its update, and tcx, tried on the loopback device of a private network namespace.
fn attach_probes(pass: &OwnedFd) -> [Probe; 3] {
    let other = sys::prog_load(sys::PROG_TYPE_XDP, 0, &sys::xdp_pass());
    let tc = sys::prog_load(sys::PROG_TYPE_SCHED_CLS, 0, &sys::tc_pass());
    let tried = sys::in_private_netns(|lo| {
        let link = sys::link_create(pass, lo, sys::ATTACH_XDP, sys::XDP_FLAGS_SKB_MODE);
        let xdp_link = match &link {
            Ok(_) => Probe::new(
                Feature::XdpLink,
                Status::Present,
                "attached (generic mode) to lo of a private netns",
            ),
            Err(e) => Probe::new(
                Feature::XdpLink,
                Status::Absent,
                format!("link create: {}", sys::errno_text(e)),
            ),
        };
        let update = match (&link, &other) {
            (Err(_), _) => Probe::new(
                Feature::XdpLinkUpdate,
                Status::Absent,
                "no XDP bpf_link to update",
            ),
            (Ok(_), Err(e)) => Probe::new(
                Feature::XdpLinkUpdate,
                Status::Unknown,
                format!("second program: {e}"),
            ),
            (Ok(link), Ok(new)) => match sys::link_update(link, new) {
                Ok(()) => Probe::new(
                    Feature::XdpLinkUpdate,
                    Status::Present,
                    "swapped the program of an attached link",
                ),
                Err(e) => Probe::new(
                    Feature::XdpLinkUpdate,
                    Status::Absent,
                    format!("link update: {}", sys::errno_text(&e)),
                ),
            },
        };
        let tcx = match &tc {
            Err(e) => Probe::new(
                Feature::Tcx,
                Status::Unknown,
                format!("no tc program loads: {e}"),
            ),
            Ok(tc) => match sys::link_create(tc, lo, sys::ATTACH_TCX_EGRESS, 0) {
                Ok(_) => Probe::new(
                    Feature::Tcx,
                    Status::Present,
                    "attached at tcx egress of lo of a private netns",
                ),
                Err(e) => Probe::new(
                    Feature::Tcx,
                    Status::Absent,
                    format!("link create: {}", sys::errno_text(&e)),
                ),
            },
        };
        [xdp_link, update, tcx]
    });
    tried.unwrap_or_else(|e| {
        let why = format!(
            "not probed: no private network namespace to attach in ({})",
            sys::errno_text(&e)
        );
        [Feature::XdpLink, Feature::XdpLinkUpdate, Feature::Tcx]
            .map(|f| Probe::new(f, Status::Unknown, why.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_present() -> Vec<Probe> {
        Feature::ALL
            .iter()
            .map(|&f| Probe::new(f, Status::Present, "test"))
            .collect()
    }

    fn with(mut probes: Vec<Probe>, feature: Feature, status: Status) -> Report {
        for p in &mut probes {
            if p.feature == feature {
                p.status = status;
            }
        }
        Report::new("test", probes)
    }

    #[test]
    fn everything_present_is_ok() {
        let r = Report::new("test", all_present());
        assert_eq!(r.verdict(), Verdict::Ok);
        assert!(r.fatal().is_none());
        assert_eq!(r.degraded().count(), 0);
    }

    #[test]
    fn each_optional_feature_missing_degrades_and_each_required_one_is_fatal() {
        for f in Feature::ALL {
            let r = with(all_present(), f, Status::Absent);
            match f.need() {
                Need::Optional => {
                    assert_eq!(r.verdict(), Verdict::Degraded, "{f:?}");
                    assert!(r.fatal().is_none(), "{f:?}");
                    assert_eq!(
                        r.degraded().map(|p| p.feature).collect::<Vec<_>>(),
                        [f],
                        "{f:?}"
                    );
                    assert!(!r.has(f));
                }
                Need::Required => {
                    let expect = if f == Feature::Capabilities {
                        Verdict::Unprivileged
                    } else {
                        Verdict::CannotRun
                    };
                    assert_eq!(r.verdict(), expect, "{f:?}");
                    let fatal = r.fatal().expect("fatal").to_string();
                    assert!(
                        fatal.contains(f.name()) && fatal.contains(f.since()),
                        "{fatal}"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_is_degraded_never_fatal() {
        for f in Feature::ALL {
            let r = with(all_present(), f, Status::Unknown);
            assert_eq!(r.verdict(), Verdict::Degraded, "{f:?}");
            assert!(r.fatal().is_none(), "{f:?}");
            assert!(!r.has(f), "{f:?}: unknown must not count as present");
        }
    }

    #[test]
    fn the_expected_fallbacks_are_optional() {
        // Kernels portguard targets lack these; each has a fallback and must not stop `run`.
        for f in [
            Feature::Tcx,
            Feature::XdpFrags,
            Feature::ProgTestRun,
            Feature::Btf,
        ] {
            assert_eq!(f.need(), Need::Optional, "{f:?}");
        }
        // Without these nothing is enforced.
        for f in [
            Feature::XdpLink,
            Feature::XdpLinkUpdate,
            Feature::LpmTrie,
            Feature::MmapArray,
        ] {
            assert_eq!(f.need(), Need::Required, "{f:?}");
        }
    }

    #[test]
    fn missing_capabilities_outrank_missing_features() {
        let mut probes = all_present();
        for p in &mut probes {
            if matches!(p.feature, Feature::Capabilities | Feature::XdpLink) {
                p.status = Status::Absent;
            }
        }
        let r = Report::new("test", probes);
        assert_eq!(r.verdict(), Verdict::Unprivileged);
        assert_eq!(r.fatal().expect("fatal").missing.len(), 2);
    }

    #[test]
    fn json_lists_every_feature_with_version_and_effect() {
        let r = with(all_present(), Feature::Tcx, Status::Absent);
        let j = r.to_json();
        assert_eq!(j["verdict"], "degraded");
        let features = j["features"].as_array().expect("features");
        assert_eq!(features.len(), Feature::ALL.len());
        for (f, j) in Feature::ALL.iter().zip(features) {
            assert_eq!(j["id"], f.id());
            assert_eq!(j["since"], f.since());
            assert!(!j["without"].as_str().expect("without").is_empty());
        }
        assert_eq!(features[Feature::ALL.len() - 1]["present"], false);
    }

    /// Needs `CAP_BPF` (the test suite runs as root): the probes' "absent" is the kernel's own
    /// refusal, seen here for a helper and an attach type no kernel has.
    #[test]
    fn the_kernel_refuses_what_it_does_not_have_and_the_probe_says_absent() {
        let refused = sys::prog_load(sys::PROG_TYPE_XDP, 0, &sys::xdp_call_scalar(100_000))
            .expect_err("helper 100000 does not exist");
        assert!(refused.log.contains("func"), "verifier log: {refused}");
        let p = program(Feature::XdpGetBuffLen, Err(refused), "", true);
        assert_eq!(p.status, Status::Absent);
        let pass = sys::prog_load(sys::PROG_TYPE_XDP, 0, &sys::xdp_pass())
            .expect("a pass program loads (run the tests as root)");
        let err = sys::in_private_netns(|lo| sys::link_create(&pass, lo, 9_999, 0))
            .expect("private netns")
            .expect_err("attach type 9999 does not exist");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r0 = 2; exit  ==  b7 00 00 00 02 00 00 00, 95 00 00 00 00 00 00 00
        assert_eq!(
            sys::xdp_pass(),
            [[0xb7, 0, 0, 0, 2, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]]
        );
        // r2 = r10 puts the source in the high nibble.
        assert_eq!(
            sys::xdp_socket_lookup(99)[3],
            [0xbf, 0xa2, 0, 0, 0, 0, 0, 0]
        );
    }
}
