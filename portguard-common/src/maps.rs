//! Map names, sizes and value types shared by the program and the loader.
//!
//! Two kinds of maps. The policy maps (`POLICY`, `SRC_TRIE0`, `SRC_TRIE1`) belong to one loaded
//! program: they hold two generations of tables, and a reload writes the idle one and switches
//! ([`crate::image`]). The state maps (counters, local addresses, fragments, audit) are pinned by
//! name and reused by every program load, so counters survive reloads, restarts and upgrades.

/// Policy: the image of two table generations and the control chunk ([`crate::image`]).
pub const POLICY: &str = "PG_POLICY";
/// Policy: the LPM trie of generation 0 (IPv6 sources, and IPv4 ones when the image's flat
/// table would be too large), keyed by [`crate::image::trie_key`] -> source class.
pub const SRC_TRIE0: &str = "PG_SRC_TRIE0";
/// Policy: the LPM trie of generation 1.
pub const SRC_TRIE1: &str = "PG_SRC_TRIE1";
/// State: this host's addresses when there are few of them ([`LocalSet`]), double-buffered.
pub const LOCAL_FAST: &str = "PG_LOCAL_FAST";
/// State: per-CPU [`Counters`] per rule slot.
pub const RULE_STATS: &str = "PG_RULE_STATS";
/// State: per-CPU [`Counters`] per [`crate::reason::Reason`].
pub const REASON_STATS: &str = "PG_REASON_STATS";
/// State: this host's IPv4 addresses -> [`LOCAL_UNICAST`] or [`LOCAL_BROADCAST`].
pub const LOCAL_V4: &str = "PG_LOCAL_V4";
/// State: this host's IPv6 addresses -> [`LOCAL_UNICAST`].
pub const LOCAL_V6: &str = "PG_LOCAL_V6";
/// State: the MAC addresses of this host's own interfaces (frames the stack receives); the
/// value is unused (1).
pub const HOST_MACS: &str = "PG_HOST_MACS";
/// State: first fragments seen, [`FragKey`] -> their verdict ([`FragVerdict`]).
pub const FRAGS: &str = "PG_FRAGS";
/// State: UDP datagrams this host sent, [`UdpOutKey`] -> coarse time sent (ns), written by the
/// egress program, read by the XDP program for replies to unconnected UDP sockets.
pub const UDP_OUT: &str = "PG_UDP_OUT";
/// State: audit ring buffer of [`crate::event::Event`]s.
pub const AUDIT: &str = "PG_AUDIT";
/// State: per-CPU audit token buckets and loss counters ([`crate::event::AuditState`]).
pub const AUDIT_STATE: &str = "PG_AUDIT_STATE";

/// Counter slots for rules. A policy with more rules than this is refused by the compiler.
pub const MAX_RULES: u32 = 8192;
/// Source prefixes per family (after flattening overlaps).
pub const MAX_PREFIXES: u32 = 262_144;
/// Entries of each generation's trie: both families' prefixes.
pub const MAX_TRIE_ENTRIES: u32 = 2 * MAX_PREFIXES;
/// Entries of `DECISIONS` the compiler may ask for (source classes x port classes).
pub const MAX_DECISIONS: u32 = 1 << 24;
/// Local addresses per family.
pub const MAX_LOCAL_ADDRS: u32 = 4096;
/// MAC addresses of this host's interfaces.
pub const MAX_HOST_MACS: u32 = 1024;
/// First fragments remembered at once (LRU).
pub const MAX_FRAGS: u32 = 65_536;
/// Outbound UDP flows remembered at once (LRU).
pub const MAX_UDP_OUT: u32 = 65_536;
/// How long a datagram the host sent makes the peer's answers replies: the kernel's UDP
/// conntrack timeout for a stream, 180 s.
pub const UDP_OUT_TTL_NS: u64 = 180_000_000_000;
/// Audit ring buffer size in bytes (power of two, multiple of the page size).
pub const AUDIT_RING_BYTES: u32 = 1 << 20;

/// Port-key space per protocol slot: 65536 ports, or `type << 8 | code` for ICMP.
pub const PORT_SPACE: u32 = 65_536;
/// Protocol slots of the `PORTS` table, in order.
pub const PROTO_SLOTS: u32 = 6;
/// Slot of TCP in `PORTS`.
pub const SLOT_TCP: u32 = 0;
/// Slot of UDP in `PORTS`.
pub const SLOT_UDP: u32 = 1;
/// Slot of SCTP in `PORTS`.
pub const SLOT_SCTP: u32 = 2;
/// Slot of ICMP (IPv4) in `PORTS`.
pub const SLOT_ICMP: u32 = 3;
/// Slot of `ICMPv6` in `PORTS`.
pub const SLOT_ICMPV6: u32 = 4;
/// Slot of the other IP protocols in `PORTS`, keyed by protocol number (IGMP, VRRP, GRE...).
pub const SLOT_IP_PROTO: u32 = 5;

/// Value in `LOCAL_V4`/`LOCAL_V6`: a unicast address of this host.
pub const LOCAL_UNICAST: u32 = 1;
/// Value in `LOCAL_V4`: a directed broadcast address of one of this host's subnets.
pub const LOCAL_BROADCAST: u32 = 2;

/// The verdict of a datagram's first fragment, which its later fragments follow: a rule slot
/// (below [`MAX_RULES`]), or [`FragVerdict::PASSED`] plus the discriminant of the reason it
/// passed for (a reply to the host's own request, for example), or [`FragVerdict::DENIED`]
/// plus the reason it was dropped for.
pub struct FragVerdict;

impl FragVerdict {
    /// Marks a verdict that is a pass reason, not a rule slot.
    pub const PASSED: u32 = 1 << 31;
    /// Marks a first fragment that was denied: its later fragments are dropped too.
    pub const DENIED: u32 = 1 << 30;
}

/// Packets and bytes; per-CPU, summed by the reader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (frame length as XDP sees it, linear part plus fragments).
    pub bytes: u64,
}

/// Identifies the fragments of one datagram (RFC 791 / RFC 8200 reassembly key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// Fragment identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Upper-layer protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub pad: [u8; 2],
}

/// IPv4 addresses [`LocalSet`] holds before the host's addresses are looked up in the hash.
pub const LOCAL_FAST_V4: usize = 16;
/// IPv6 addresses [`LocalSet`] holds.
pub const LOCAL_FAST_V6: usize = 16;
/// [`LocalSet::n4`] / [`LocalSet::n6`]: more addresses than the set holds; ask the hash.
pub const LOCAL_OVERFLOW: u32 = u32::MAX;

/// This host's addresses as a short list, so "is this packet for the host?" is a few compares
/// rather than a hash lookup, on hosts with few addresses (the usual case). Two of these make
/// `LOCAL_FAST`: the writer fills the idle one, then flips [`LocalSet::live`] of entry 0 with
/// one aligned store, after a grace period since the previous flip (so no reader is still in
/// the entry it rewrites). The hashes `LOCAL_V4` / `LOCAL_V6` always hold every address, for
/// hosts with more than the list holds.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSet {
    /// Meaningful in entry 0 only: the entry (0 or 1) readers use.
    pub live: u32,
    /// IPv4 addresses in `v4`, or [`LOCAL_OVERFLOW`].
    pub n4: u32,
    /// IPv6 addresses in `v6`, or [`LOCAL_OVERFLOW`].
    pub n6: u32,
    /// Explicit padding.
    pub pad: u32,
    /// IPv4 addresses, each its 4 bytes read as a native-endian u32.
    pub v4: [u32; LOCAL_FAST_V4],
    /// [`LOCAL_UNICAST`] or [`LOCAL_BROADCAST`], per IPv4 address; 0 for an unused entry. Used
    /// entries come first: the program stops at the first 0 (not at `n4`).
    pub v4_kind: [u8; LOCAL_FAST_V4],
    /// IPv6 addresses, each its 16 bytes read as two native-endian u64.
    pub v6: [[u64; 2]; LOCAL_FAST_V6],
    /// [`LOCAL_UNICAST`], per IPv6 address; 0 for an unused entry.
    pub v6_kind: [u8; LOCAL_FAST_V6],
}

impl LocalSet {
    /// No address at all.
    pub const EMPTY: LocalSet = LocalSet {
        live: 0,
        n4: 0,
        n6: 0,
        pad: 0,
        v4: [0; LOCAL_FAST_V4],
        v4_kind: [0; LOCAL_FAST_V4],
        v6: [[0; 2]; LOCAL_FAST_V6],
        v6_kind: [0; LOCAL_FAST_V6],
    };
}

/// A MAC address as a map key (padded to 8 bytes for the hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    /// The address.
    pub mac: [u8; 6],
    /// Explicit padding.
    pub pad: [u8; 2],
}

/// One UDP flow this host started, as the reply will show it (`remote:rport -> local:lport`).
/// The local address is part of the key: on a bridge port, guests' datagrams leave through the
/// same interface, and must not open the host's ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UdpOutKey {
    /// This host's address (IPv4 in the first four bytes).
    pub local: [u8; 16],
    /// The peer's address.
    pub remote: [u8; 16],
    /// This host's port.
    pub lport: u16,
    /// The peer's port.
    pub rport: u16,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<Counters>() == 16);
const _: () = assert!(size_of::<UdpOutKey>() == 40);
const _: () = assert!(size_of::<FragKey>() == 40);
const _: () = assert!(size_of::<MacKey>() == 8);
const _: () = assert!(size_of::<LocalSet>() == 368);

#[cfg(feature = "user")]
mod pod {
    use super::{Counters, FragKey, LocalSet, MacKey, UdpOutKey};

    // SAFETY: repr(C), only integers and byte arrays, no implicit padding (asserted above).
    unsafe impl aya::Pod for Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UdpOutKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MacKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LocalSet {}
}
