//! A policy's configuration: the site's host-safety choices and the table geometry.

/// Per-policy settings: the first chunk of each generation of the policy image
/// ([`crate::image`]), so they switch together with the tables they describe. Each choice is its
/// own field (no flag bits) so `bpftool map dump` reads plainly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Hash of the compiled tables; `status` shows it, restart compares it to adopt or replace.
    pub policy_version: u64,
    /// [`MODE_ENFORCE`] or [`MODE_AUDIT`].
    pub mode: u32,
    /// [`JUDGE`] (default) or [`PASS`]: what happens to broadcast/multicast addressed to this
    /// host.
    pub broadcast: u32,
    /// [`PASS`] or [`DROP`]: non-IP ethertypes other than ARP.
    pub non_ip: u32,
    /// [`PASS`] or [`DROP`]: unicast for addresses that are not this host's (bridged VMs).
    pub not_for_host: u32,
    /// Number of port classes: the row stride of the decision table.
    pub port_classes: u32,
    /// Audit events each CPU may emit per second (token bucket refill), 0 = no events.
    pub audit_rate: u32,
    /// Token bucket depth: events a CPU may emit in a burst.
    pub audit_burst: u32,
    /// [`DIAG_OFF`] or [`DIAG_UNPARSED`]: the program's own diagnostic messages (aya-log).
    /// Off by default: logging costs a ring write per message, kept off the per-packet path.
    pub diagnostics: u32,
    /// Frames with this ingress interface index are the daemon's self-test (through
    /// `BPF_PROG_TEST_RUN`, whose frames arrive on loopback): judged like any frame, counted
    /// only under [`crate::reason::Reason::SelfTest`], never audited. 0 = none (no real
    /// interface has index 0; the daemon never attaches to loopback).
    pub probe_ifindex: u32,
    /// Where IPv4 sources are classified: [`crate::image::SRC4_DIR`] (the image's flat
    /// 16-8-8 table) or [`crate::image::SRC4_TRIE`] (the generation's LPM trie, for prefix
    /// sets the flat table would make too large). Written by the image builder.
    pub src4: u32,
    /// Word offset, in the generation, of the IPv4 table's 256-entry groups.
    pub groups_at: u32,
    /// Word offset of the port classes (u16, two per word).
    pub ports_at: u32,
    /// Word offset of the decision table (u16, two per word).
    pub decisions_at: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// Enforce: denied packets are dropped.
pub const MODE_ENFORCE: u32 = 0;
/// Audit: denied packets are counted and reported as would-deny, then passed.
pub const MODE_AUDIT: u32 = 1;
/// Pass the class of traffic untouched (counted under its reason).
pub const PASS: u32 = 0;
/// Judge broadcast/multicast by the rules, as if unicast to the host.
pub const JUDGE: u32 = 1;
/// Drop the class of traffic.
pub const DROP: u32 = 2;

/// No diagnostic messages from the program.
pub const DIAG_OFF: u32 = 0;
/// Log every frame the parser gives up on (malformed, too deep), with its length and why.
pub const DIAG_UNPARSED: u32 = 1;

const _: () = assert!(size_of::<Config>() == 64);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integers, no implicit padding (asserted above).
unsafe impl aya::Pod for Config {}
