//! What a parser extracts from a frame: exactly the fields the classifier needs, nothing more.

/// How deep the parsers follow header chains. Anything deeper is [`Kind::TooDeep`].
pub mod limits {
    /// 802.1Q / 802.1ad tags followed (`QinQ` = 2).
    pub const MAX_VLAN_TAGS: usize = 2;
    /// IPv6 extension headers followed before the upper-layer header.
    pub const MAX_IPV6_EXT: usize = 6;
    /// Furthest offset from the frame start at which an upper-layer header may begin. Bounds
    /// the extension-header walk for the verifier; legitimate chains end far sooner.
    pub const MAX_HDR_OFFSET: usize = 512;
}

/// Header layouts: lengths and field offsets, as RFCs 791, 8200, 793, 768, 4960 and 792 and
/// IEEE 802.1Q draw them. Both parsers (the XDP program's and the reference one) read fields
/// only through these names.
pub mod hdr {
    /// Ethernet II.
    pub mod eth {
        /// Header length.
        pub const LEN: usize = 14;
        /// Destination MAC address (6 bytes).
        pub const DST: usize = 0;
        /// `EtherType` (2 bytes).
        pub const TYPE: usize = 12;
    }
    /// 802.1Q / 802.1ad tag, following the `EtherType` that announced it.
    pub mod vlan {
        /// Tag length.
        pub const LEN: usize = 4;
        /// Tag control information (priority, DEI, 12-bit VLAN id).
        pub const TCI: usize = 0;
        /// The next `EtherType`.
        pub const TYPE: usize = 2;
    }
    /// IPv4.
    pub mod ipv4 {
        /// Length without options.
        pub const MIN_LEN: usize = 20;
        /// Version (high nibble) and header length in 32-bit words (low nibble).
        pub const VER_IHL: usize = 0;
        /// Identification (2 bytes).
        pub const ID: usize = 4;
        /// Flags and fragment offset (2 bytes).
        pub const FRAG: usize = 6;
        /// Protocol.
        pub const PROTO: usize = 9;
        /// Source address (4 bytes).
        pub const SRC: usize = 12;
        /// Destination address (4 bytes).
        pub const DST: usize = 16;
        /// Fragment field: more fragments.
        pub const MF: u16 = 0x2000;
        /// Fragment field: offset bits.
        pub const OFFSET_MASK: u16 = 0x1fff;
    }
    /// IPv6 fixed header and extension headers.
    pub mod ipv6 {
        /// Fixed header length.
        pub const LEN: usize = 40;
        /// Version (high nibble).
        pub const VER: usize = 0;
        /// Next header.
        pub const NEXT: usize = 6;
        /// Source address (16 bytes).
        pub const SRC: usize = 8;
        /// Destination address (16 bytes).
        pub const DST: usize = 24;
        /// Extension header: next header.
        pub const EXT_NEXT: usize = 0;
        /// Extension header: length in 8-byte units, not counting the first 8.
        pub const EXT_LEN: usize = 1;
        /// Fragment header length.
        pub const FRAG_LEN: usize = 8;
        /// Fragment header: offset (13 bits), reserved, M flag (2 bytes).
        pub const FRAG_OFFSET: usize = 2;
        /// Fragment header: identification (4 bytes).
        pub const FRAG_ID: usize = 4;
    }
    /// TCP, UDP and SCTP share the port layout.
    pub mod l4 {
        /// Source port (2 bytes).
        pub const SPORT: usize = 0;
        /// Destination port (2 bytes).
        pub const DPORT: usize = 2;
        /// TCP: data offset (high nibble).
        pub const TCP_DOFF: usize = 12;
        /// TCP: flags.
        pub const TCP_FLAGS: usize = 13;
        /// TCP header length without options.
        pub const TCP_LEN: usize = 20;
        /// UDP header length.
        pub const UDP_LEN: usize = 8;
        /// SCTP common header length.
        pub const SCTP_LEN: usize = 12;
    }
    /// ICMP and `ICMPv6`.
    pub mod icmp {
        /// Header length (type, code, checksum, 4 bytes of rest-of-header).
        pub const LEN: usize = 8;
        /// Type.
        pub const TYPE: usize = 0;
        /// Code.
        pub const CODE: usize = 1;
    }
}

/// `EtherType` values the parsers recognise.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (`QinQ` outer).
    pub const QINQ: u16 = 0x88A8;
}

/// IP protocol numbers the parsers recognise.
pub mod ipproto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// `ICMPv6`.
    pub const ICMPV6: u8 = 58;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits (the 13th byte of the TCP header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Link-layer destination class, from the destination MAC.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cast {
    /// A single station.
    Unicast = 0,
    /// ff:ff:ff:ff:ff:ff.
    Broadcast = 1,
    /// Group bit set, not broadcast.
    Multicast = 2,
}

/// Address family of an IP packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: addresses in the first 4 bytes of the 16-byte fields.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// Fragment position of an IP packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    None = 0,
    /// Offset 0 with more fragments: carries the L4 header.
    First = 1,
    /// Offset > 0: carries no L4 header, never read as ports.
    Later = 2,
}

/// What the parser found in a frame.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Headers ended before the fields the policy needs, or contradict themselves.
    #[default]
    Malformed = 0,
    /// More VLAN tags or IPv6 extension headers than [`limits`] allow.
    TooDeep = 1,
    /// ARP.
    Arp = 2,
    /// Another non-IP ethertype (`Packet::ethertype`).
    NonIp = 3,
    /// An IPv4 or IPv6 packet with its fields filled in.
    Ip = 4,
}

/// What the upper-layer fields of an IP packet hold.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L4Kind {
    /// No upper-layer header: a non-first fragment (never read as ports).
    #[default]
    None = 0,
    /// TCP, UDP or SCTP: `sport`, `dport`, `tcp_flags`.
    Ports = 1,
    /// ICMP or `ICMPv6`: `icmp_type`, `icmp_code`, and the `quote` of errors.
    Icmp = 2,
    /// Another IP protocol (IGMP, VRRP, GRE...): judged by its protocol number alone.
    Other = 3,
}

/// The parse of one frame: one flat, always fully initialised record.
///
/// Flat on purpose. Rust enums with payloads leave the bytes of inactive variants undefined;
/// LLVM then copies them through registers the BPF verifier sees as uninitialised and rejects
/// the program. A `repr(C)` struct that starts from [`Packet::EMPTY`] has no such bytes.
/// Aligned to 8 so the addresses can be read as pairs of u64 on the stack (the verifier refuses
/// misaligned stack access).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address (valid when `dst_known`).
    pub dst: [u8; 16],
    /// For ICMP errors with `has_quote`: the remote address of the quoted flow.
    pub quote_remote: [u8; 16],
    /// Fragment identification (valid when `frag != Frag::None`).
    pub frag_id: u32,
    /// Source port (`L4Kind::Ports`).
    pub sport: u16,
    /// Destination port (`L4Kind::Ports`).
    pub dport: u16,
    /// Innermost VLAN id (0 = untagged).
    pub vlan: u16,
    /// Ethertype (innermost) for `Kind::NonIp`.
    pub ethertype: u16,
    /// Quoted flow: this host's port.
    pub quote_lport: u16,
    /// Quoted flow: the remote's port.
    pub quote_rport: u16,
    /// Destination MAC address: whether a frame for an unknown address is for this host's
    /// stack at all (the bridge hands a guest's frames to the guest, not to the host).
    pub dst_mac: [u8; 6],
    /// What was found.
    pub kind: Kind,
    /// Link-layer destination class.
    pub cast: Cast,
    /// Address family (for `Kind::Ip`, and for malformed packets whose IP header was read).
    pub family: Family,
    /// Whether `dst` was read (the IP fixed header was intact).
    pub dst_known: bool,
    /// Upper-layer protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Fragment position.
    pub frag: Frag,
    /// What `sport`/`dport`/`icmp_*` hold.
    pub l4: L4Kind,
    /// TCP flags byte (0 otherwise).
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Whether an ICMP error's quoted TCP/UDP flow (sent from `dst`) was read.
    pub has_quote: bool,
    /// Quoted flow's protocol.
    pub quote_proto: u8,
    /// Explicit padding.
    pub pad: [u8; 6],
}

impl Packet {
    /// All fields zero: `Kind::Malformed`, unicast, IPv4, nothing known.
    pub const EMPTY: Packet = Packet {
        src: [0; 16],
        dst: [0; 16],
        quote_remote: [0; 16],
        frag_id: 0,
        sport: 0,
        dport: 0,
        vlan: 0,
        ethertype: 0,
        quote_lport: 0,
        quote_rport: 0,
        dst_mac: [0; 6],
        kind: Kind::Malformed,
        cast: Cast::Unicast,
        family: Family::V4,
        dst_known: false,
        proto: 0,
        frag: Frag::None,
        l4: L4Kind::None,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        has_quote: false,
        quote_proto: 0,
        pad: [0; 6],
    };
}

const _: () = assert!(size_of::<Packet>() == 88);

/// Whether an ICMP(v6) type is an error that quotes the offending packet.
#[must_use]
pub const fn icmp_is_error(family: Family, ty: u8) -> bool {
    match family {
        // destination unreachable, source quench, redirect, time exceeded, parameter problem
        Family::V4 => matches!(ty, 3 | 4 | 5 | 11 | 12),
        // destination unreachable, packet too big, time exceeded, parameter problem
        Family::V6 => matches!(ty, 1..=4),
    }
}

/// Classify a destination MAC address.
#[must_use]
pub fn cast_of(mac: &[u8; 6]) -> Cast {
    if *mac == [0xff; 6] {
        Cast::Broadcast
    } else if mac[0] & 1 == 1 {
        Cast::Multicast
    } else {
        Cast::Unicast
    }
}
