//! Why a packet was passed or dropped when no policy rule decided it.

/// Every outcome that is not "allowed by rule N" has a reason, and every reason has its own
/// per-CPU counter (`maps::REASON_STATS`, indexed by the discriminant).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // ---- passed ----
    /// ARP: always passes, a host without ARP falls off its network.
    Arp = 0,
    /// Another ethertype (LLDP, STP, ...), passed by the `non_ip = "pass"` default.
    NonIpPassed = 1,
    /// Unicast to an address that is not this host's: a VM bridged behind the NIC.
    NotForHost = 2,
    /// Broadcast or multicast, passed by the `broadcast = "pass"` default.
    BroadcastPassed = 3,
    /// A reply to a connection or exchange this host initiated (socket lookup).
    Reply = 4,
    /// An ICMP error quoting a flow of this host.
    IcmpErrorForOwnFlow = 5,
    /// Would have been dropped, passed because the policy is in audit mode.
    AuditPassed = 6,
    // ---- dropped ----
    /// Truncated or inconsistent headers on the way to the fields the policy needs.
    Malformed = 7,
    /// The source address belongs to no role used by any rule of this host.
    NoSourceRole = 8,
    /// No rule opens this (protocol, port) or ICMP type on this host.
    PortNotOpen = 9,
    /// The port is open, but not to any role of this source.
    SourceNotAllowed = 10,
    /// An IP protocol the policy has no rule for (GRE, ESP, ...).
    ProtoNotOpen = 11,
    /// A later fragment whose first fragment was denied.
    FragmentDropped = 12,
    /// Non-IP ethertype dropped by `non_ip = "drop"`.
    NonIpDropped = 13,
    /// Unicast for another host, dropped by `not_for_host = "drop"`.
    NotForHostDropped = 14,
    /// More IPv6 extension headers or VLAN tags than the parser follows.
    TooDeep = 15,
    // ---- neither ----
    /// A frame of the daemon's self-test, judged like any other but counted only here.
    SelfTest = 16,
    // ---- passed (added after the others, so existing counters keep their index) ----
    /// A later fragment whose first fragment has not been seen: fragments arrive out of order
    /// (last first, or by different paths), and dropping them loses datagrams a rule allows.
    /// Passing one opens nothing: the kernel reassembles no datagram without its first
    /// fragment, which carries the ports and is judged when it comes (its later fragments
    /// wait in the kernel's bounded reassembly queue until then, or until they expire).
    FragmentUnmatched = 17,
}

/// Number of reasons; the size of the reason counter map.
pub const REASON_COUNT: u32 = 18;

impl Reason {
    /// All reasons in counter-map order.
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::Arp,
        Reason::NonIpPassed,
        Reason::NotForHost,
        Reason::BroadcastPassed,
        Reason::Reply,
        Reason::IcmpErrorForOwnFlow,
        Reason::AuditPassed,
        Reason::Malformed,
        Reason::NoSourceRole,
        Reason::PortNotOpen,
        Reason::SourceNotAllowed,
        Reason::ProtoNotOpen,
        Reason::FragmentDropped,
        Reason::NonIpDropped,
        Reason::NotForHostDropped,
        Reason::TooDeep,
        Reason::SelfTest,
        Reason::FragmentUnmatched,
    ];

    /// Whether packets with this reason are passed to the stack (in enforce mode).
    #[must_use]
    pub const fn passes(self) -> bool {
        (self as u32) <= Reason::AuditPassed as u32 || matches!(self, Reason::FragmentUnmatched)
    }

    /// Stable, lowercase name used in `status`, JSON and metrics labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Arp => "arp",
            Reason::NonIpPassed => "non-ip-passed",
            Reason::NotForHost => "not-for-host",
            Reason::BroadcastPassed => "broadcast-passed",
            Reason::Reply => "reply",
            Reason::IcmpErrorForOwnFlow => "icmp-error-own-flow",
            Reason::AuditPassed => "audit-passed",
            Reason::Malformed => "malformed",
            Reason::NoSourceRole => "no-source-role",
            Reason::PortNotOpen => "port-not-open",
            Reason::SourceNotAllowed => "source-not-allowed",
            Reason::ProtoNotOpen => "proto-not-open",
            Reason::FragmentDropped => "fragment-dropped",
            Reason::NonIpDropped => "non-ip-dropped",
            Reason::NotForHostDropped => "not-for-host-dropped",
            Reason::TooDeep => "too-deep",
            Reason::SelfTest => "self-test",
            Reason::FragmentUnmatched => "fragment-unmatched",
        }
    }

    /// The reason with this discriminant.
    #[must_use]
    pub fn from_u32(v: u32) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }
}
