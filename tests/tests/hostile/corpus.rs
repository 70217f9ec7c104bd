//! The hostile corpus: named malformed and crafted frames, each with the verdict it must get
//! (the XDP action and the counter that records it) under the policy of [`super::policy`] in
//! its lenient configuration.

use integration_tests::{
    DROP, PASS,
    addrs::{BCAST4, GUEST4, HOST4, HOST6, PEER4, PEER6, STRANGER4},
    frames::{Frame, L4, arp, tcp, udp},
};
use portguard_common::{
    classify::Outcome,
    reason::Reason::{
        self, Arp, BroadcastPassed, FragmentDropped, FragmentUnmatched, Malformed, NonIpPassed,
        NotForHost, PortNotOpen, ProtoNotOpen, SourceNotAllowed, TooDeep,
    },
};

use super::policy::{DIAMETER, DNS, ECHO, SSH, TOO_BIG, TOP, UNREACH};

// ---------------------------------------------------------------------------------------------
// Stated verdicts

/// The verdict a case must get (enforce mode: `Deny` drops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Allowed by the rule in this slot.
    Allow(u32),
    /// Passed for this reason.
    Pass(Reason),
    /// Dropped for this reason.
    Deny(Reason),
}

impl Want {
    /// The XDP action of this verdict.
    pub(super) fn action(self) -> u32 {
        match self {
            Want::Allow(_) | Want::Pass(_) => PASS,
            Want::Deny(_) => DROP,
        }
    }

    /// The verdict of a classifier's outcome.
    pub(super) fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Allow { slot } => Want::Allow(slot),
            Outcome::Pass(r) => Want::Pass(r),
            Outcome::Deny { reason, .. } => Want::Deny(reason),
        }
    }
}

/// One corpus case.
pub(super) struct Case {
    pub(super) name: String,
    pub(super) frame: Vec<u8>,
    pub(super) want: Want,
}

/// The cases, in the order they were added.
#[derive(Default)]
pub(super) struct Corpus(pub(super) Vec<Case>);

impl Corpus {
    fn add(&mut self, name: impl Into<String>, frame: Vec<u8>, want: Want) {
        self.0.push(Case {
            name: name.into(),
            frame,
            want,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Frame pieces

/// Offset of the IP header in an untagged frame.
const IP: usize = 14;
/// Offset of the L4 header after a plain IPv4 header.
const L4_V4: usize = IP + 20;
/// Offset of the first header after the fixed IPv6 header.
const L4_V6: usize = IP + 40;

fn v4(l4: L4) -> Frame {
    Frame::v4(PEER4, HOST4, l4)
}

fn v6(l4: L4) -> Frame {
    Frame::v6(PEER6, HOST6, l4)
}

fn icmp(ty: u8, code: u8, quote: Vec<u8>) -> L4 {
    L4::Icmp { ty, code, quote }
}

fn raw(proto: u8, bytes: Vec<u8>) -> L4 {
    L4::Raw { proto, bytes }
}

/// `f` sent to a guest's MAC (behind the host's bridge), not the host's.
fn to_guest(mut f: Frame) -> Vec<u8> {
    f.dst_mac = [0x02, 0, 0, 0, 0, 0x99];
    f.build()
}

fn with(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

fn frag(mut f: Frame, id: u32, offset: u16, more: bool) -> Frame {
    f.frag = Some((id, offset, more));
    f
}

/// An IPv4 header as an ICMP error quotes it: from `src` to `dst`, protocol `proto`.
fn quoted_v4(ihl_byte: u8, proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut q = vec![ihl_byte, 0, 0, 40, 0, 0, 0, 0, 64, proto, 0, 0];
    q.extend_from_slice(&src);
    q.extend_from_slice(&dst);
    q.extend_from_slice(l4);
    q
}

fn quoted_v6(proto: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
    let mut q = vec![0x60, 0, 0, 0, 0, 20, proto, 64];
    q.extend_from_slice(&src);
    q.extend_from_slice(&dst);
    q.extend_from_slice(l4);
    q
}

/// Ports 22 -> 40000 as the start of a quoted TCP header (this host's port first).
const QUOTED_PORTS: [u8; 8] = [0, 22, 0x9c, 0x40, 0, 0, 0, 1];

// ---------------------------------------------------------------------------------------------
// The corpus

/// Every prefix of `full`: shorter than `headers` bytes is malformed, longer is `complete`.
fn truncations(c: &mut Corpus, name: &str, full: &[u8], headers: usize, complete: Want) {
    assert!(full.len() > headers, "{name}: give the frame a payload");
    for len in 0..=full.len() {
        let want = if len < headers {
            Want::Deny(Malformed)
        } else {
            complete
        };
        c.add(format!("{name} cut at {len}"), full[..len].to_vec(), want);
    }
}

fn truncation_cases(c: &mut Corpus) {
    let mut f = v4(tcp(22));
    f.payload = vec![0xaa; 6];
    truncations(c, "tcp/ipv4", &f.build(), L4_V4 + 20, Want::Allow(SSH));

    let mut f = v6(tcp(22));
    // hop-by-hop (8 bytes), destination options (16), routing (8, type 0, segments left 0)
    f.v6_ext = vec![(0, vec![0; 6]), (60, vec![0; 14]), (43, vec![0; 6])];
    f.payload = vec![0xbb; 5];
    truncations(
        c,
        "tcp/ipv6+ext",
        &f.build(),
        L4_V6 + 32 + 20,
        Want::Allow(SSH),
    );

    let mut f = v4(udp(53));
    f.vlans = vec![(0x88a8, 10), (0x8100, 20)];
    f.payload = vec![0xcc; 4];
    truncations(
        c,
        "udp/ipv4 in QinQ",
        &f.build(),
        IP + 8 + 20 + 8,
        Want::Allow(DNS),
    );

    // A closed port truncated: never anything but malformed or closed.
    let mut f = v4(tcp(23));
    f.payload = vec![1; 3];
    truncations(
        c,
        "tcp/ipv4 closed",
        &f.build(),
        L4_V4 + 20,
        Want::Deny(PortNotOpen),
    );
}

fn ipv4_header_cases(c: &mut Corpus) {
    let ssh = v4(tcp(22)).build();
    for ihl in 0u8..5 {
        c.add(
            format!("ipv4 IHL {ihl} < 5"),
            with(ssh.clone(), IP, &[0x40 | ihl]),
            Want::Deny(Malformed),
        );
    }
    // 20 + 20 bytes of IP payload: IHL 11..15 end beyond the packet.
    for ihl in 11u8..=15 {
        c.add(
            format!("ipv4 IHL {ihl} beyond the packet"),
            with(ssh.clone(), IP, &[0x40 | ihl]),
            Want::Deny(Malformed),
        );
    }
    // IHL 6 without options: the L4 header is read 4 bytes late, where the checksum (0)
    // gives data offset 0: malformed, never a port from the wrong place.
    let mut shifted = v4(tcp(22));
    shifted.payload = vec![0; 4];
    c.add(
        "ipv4 IHL 6 shifts the TCP header",
        with(shifted.build(), IP, &[0x46]),
        Want::Deny(Malformed),
    );
    let mut opts = v4(tcp(22));
    opts.v4_options = vec![1; 40];
    c.add(
        "ipv4 IHL 15 with 40 option bytes",
        opts.build(),
        Want::Allow(SSH),
    );
    let mut opts = v4(tcp(23));
    opts.v4_options = vec![1; 40];
    c.add(
        "ipv4 IHL 15 with options, closed port",
        opts.build(),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "ipv4 version 6 behind ethertype 0x0800",
        with(ssh.clone(), IP, &[0x65]),
        Want::Deny(Malformed),
    );
    c.add(
        "ipv4 19 bytes of header",
        ssh[..IP + 19].to_vec(),
        Want::Deny(Malformed),
    );
    // Total length is not what locates the ports: the parsers ignore it, the kernel discards
    // the packet (longer than the frame) or trims it (the ports stay where they were read).
    for (tot, what) in [
        (1500u16, "larger"),
        (24, "smaller"),
        (0, "zero"),
        (65535, "max"),
    ] {
        c.add(
            format!("ipv4 total length {tot} ({what} than the frame), open port"),
            with(ssh.clone(), IP + 2, &tot.to_be_bytes()),
            Want::Allow(SSH),
        );
        c.add(
            format!("ipv4 total length {tot} ({what} than the frame), closed port"),
            with(v4(tcp(23)).build(), IP + 2, &tot.to_be_bytes()),
            Want::Deny(PortNotOpen),
        );
    }
    c.add(
        "ipv6 payload length larger than the frame, closed port",
        with(v6(tcp(23)).build(), IP + 4, &[0xff, 0xff]),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "ipv6 version 4 behind ethertype 0x86dd",
        with(v6(tcp(22)).build(), IP, &[0x45]),
        Want::Deny(Malformed),
    );
    c.add(
        "ipv6 39 bytes of header",
        v6(tcp(22)).build()[..IP + 39].to_vec(),
        Want::Deny(Malformed),
    );
}

fn ipv6_ext_cases(c: &mut Corpus) {
    let chain = |types: &[u8], l4: L4| {
        let mut f = v6(l4);
        f.v6_ext = types.iter().map(|t| (*t, vec![0; 6])).collect();
        f.build()
    };
    // MAX_IPV6_EXT is 6.
    c.add(
        "ipv6 6 extension headers (the limit)",
        chain(&[0, 60, 43, 60, 43, 60], tcp(22)),
        Want::Allow(SSH),
    );
    c.add(
        "ipv6 7 extension headers",
        chain(&[0, 60, 43, 60, 43, 60, 60], tcp(22)),
        Want::Deny(TooDeep),
    );
    c.add(
        "ipv6 20 destination-options headers in a row",
        chain(&[60; 20], tcp(22)),
        Want::Deny(TooDeep),
    );
    c.add(
        "ipv6 hop-by-hop pointing at hop-by-hop, 8 times",
        chain(&[0; 8], tcp(22)),
        Want::Deny(TooDeep),
    );
    // 6 headers whose last names a seventh that is not there.
    c.add(
        "ipv6 6 headers, the last says another follows",
        with(chain(&[60; 6], tcp(22)), L4_V6 + 40, &[60]),
        Want::Deny(TooDeep),
    );
    // 5 headers then a fragment header as the 7th.
    let mut f = v6(tcp(22));
    f.v6_ext = vec![(60, vec![0; 6]); 6];
    f.frag = Some((9, 0, true));
    c.add(
        "ipv6 6 headers then a fragment header",
        f.build(),
        Want::Deny(TooDeep),
    );
    // One header of 2048 bytes: the walk stops at MAX_HDR_OFFSET before reading past it.
    c.add(
        "ipv6 extension header length 255",
        with(chain(&[60], tcp(22)), L4_V6 + 1, &[255]),
        Want::Deny(TooDeep),
    );
    // One 456-byte header: the TCP header starts at 510, inside MAX_HDR_OFFSET (512).
    let mut f = v6(tcp(22));
    f.v6_ext = vec![(60, vec![0; 454])];
    c.add(
        "ipv6 transport header at offset 510",
        f.build(),
        Want::Allow(SSH),
    );
    let mut f = v6(tcp(22));
    f.v6_ext = vec![(60, vec![0; 462])];
    c.add(
        "ipv6 transport header at offset 518",
        f.build(),
        Want::Deny(TooDeep),
    );
    c.add(
        "ipv6 extension header cut after its next-header byte",
        chain(&[60], tcp(22))[..=L4_V6].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "ipv6 extension header longer than the frame",
        with(chain(&[60], tcp(22)), L4_V6 + 1, &[10]),
        Want::Deny(Malformed),
    );
    for (nh, what) in [
        (59u8, "no next header"),
        (51, "AH"),
        (50, "ESP"),
        (4, "IPv4-in-IPv6"),
        (41, "IPv6-in-IPv6"),
        (135, "mobility"),
        (253, "experimental"),
        (255, "reserved"),
        (1, "ICMPv4 in IPv6"),
    ] {
        c.add(
            format!("ipv6 chain ending in next header {nh} ({what})"),
            chain(&[0, 60], raw(nh, vec![0, 22, 0, 22, 0, 0, 0, 0])),
            Want::Deny(ProtoNotOpen),
        );
    }
}

fn vlan_cases(c: &mut Corpus) {
    let tagged = |tags: &[(u16, u16)], mut f: Frame| {
        f.vlans = tags.to_vec();
        f.build()
    };
    for depth in 3..=5 {
        c.add(
            format!("{depth} 802.1Q tags"),
            tagged(&vec![(0x8100, 7); depth], v4(tcp(22))),
            Want::Deny(TooDeep),
        );
    }
    c.add(
        "3 802.1ad tags",
        tagged(&[(0x88a8, 1); 3], v4(tcp(22))),
        Want::Deny(TooDeep),
    );
    c.add(
        "QinQ (2 tags) to an open port",
        tagged(&[(0x88a8, 1), (0x8100, 2)], v6(tcp(22))),
        Want::Allow(SSH),
    );
    c.add(
        "QinQ to a closed port",
        tagged(&[(0x88a8, 1), (0x8100, 2)], v4(tcp(23))),
        Want::Deny(PortNotOpen),
    );
    let mut a = arp();
    a.splice(12..12, [0x81, 0x00, 0, 5, 0x81, 0x00, 0, 6]);
    c.add("ARP behind 2 tags", a.clone(), Want::Pass(Arp));
    a.splice(12..12, [0x81, 0x00, 0, 4]);
    c.add("ARP behind 3 tags", a, Want::Deny(TooDeep));
    c.add(
        "one tag cut in half",
        tagged(&[(0x8100, 7)], v4(tcp(22)))[..16].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "VLAN id 4095 and priority bits",
        with(tagged(&[(0x8100, 0)], v4(tcp(22))), 14, &[0xff, 0xff]),
        Want::Allow(SSH),
    );
}

fn fragment_cases(c: &mut Corpus) {
    // Tiny first fragments: the ports are there, the rest of the TCP header is not.
    let tiny = |keep: usize, l4: L4, id: u32| {
        let mut b = frag(v4(l4), id, 0, true).build();
        b.truncate(L4_V4 + keep);
        // the IPv4 total length matches what is left
        let tot = (20 + keep) as u16;
        with(b, IP + 2, &tot.to_be_bytes())
    };
    c.add(
        "tiny first fragment: 8 bytes of TCP",
        tiny(8, tcp(22), 10),
        Want::Deny(Malformed),
    );
    c.add(
        "tiny first fragment: 4 bytes of TCP",
        tiny(4, tcp(22), 11),
        Want::Deny(Malformed),
    );
    c.add(
        "tiny first fragment: no transport bytes",
        tiny(0, tcp(22), 12),
        Want::Deny(Malformed),
    );
    c.add(
        "tiny first fragment: 4 bytes of UDP",
        tiny(4, udp(53), 13),
        Want::Deny(Malformed),
    );
    let later = |id: u32, offset: u16, more: bool, bytes: Vec<u8>| {
        frag(v4(raw(6, bytes)), id, offset, more).build()
    };
    c.add(
        "later fragment of a tiny first fragment",
        later(10, 1, false, vec![0; 16]),
        Want::Pass(FragmentUnmatched),
    );
    // Overlap: an allowed first fragment, then pieces that would rewrite its header.
    c.add(
        "first fragment to an open port",
        frag(v4(tcp(22)), 100, 0, true).build(),
        Want::Allow(SSH),
    );
    let header_to_23 = tcp_header(40000, 23);
    c.add(
        "overlapping later fragment (offset 1) shaped like a TCP header to 23",
        later(100, 1, true, header_to_23.clone()),
        Want::Allow(SSH),
    );
    c.add(
        "a second first fragment of the same datagram to a closed port",
        frag(v4(tcp(23)), 100, 0, true).build(),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "last fragment of the allowed datagram",
        later(100, 2, false, vec![0; 8]),
        Want::Allow(SSH),
    );
    c.add(
        "later fragment of the same id from another source",
        {
            let f = Frame::v4([198, 18, 1, 8], HOST4, raw(6, vec![0; 8]));
            frag(f, 100, 1, false).build()
        },
        Want::Pass(FragmentUnmatched),
    );
    c.add(
        "later fragment of the same id with another protocol",
        frag(v4(raw(17, vec![0; 8])), 100, 1, false).build(),
        Want::Pass(FragmentUnmatched),
    );
    // A denied first fragment: its later fragments are dropped too.
    c.add(
        "first fragment to a closed port",
        frag(v4(tcp(23)), 101, 0, true).build(),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "later fragment of the denied datagram",
        later(101, 3, false, header_to_23.clone()),
        Want::Deny(FragmentDropped),
    );
    // Later fragments whose payload starts like a header to an open port: never read as ports.
    // Before any first fragment of their datagram they pass as unmatched (fragments arrive out
    // of order); the kernel delivers nothing without the first fragment, which is judged.
    c.add(
        "orphan later fragment shaped like a TCP header to 22",
        later(102, 1, true, tcp_header(40000, 22)),
        Want::Pass(FragmentUnmatched),
    );
    c.add(
        "orphan later fragment at the maximum offset",
        later(103, 0x1fff, false, tcp_header(40000, 22)),
        Want::Pass(FragmentUnmatched),
    );
}

/// Flag bits around offset 0: only MF and the offset say "fragment".
fn fragment_flag_cases(c: &mut Corpus) {
    let field = |bits: u16, dport: u16| {
        let b = v4(tcp(dport)).build();
        with(b, IP + 6, &bits.to_be_bytes())
    };
    c.add(
        "reserved flag, offset 0, closed port: a whole packet",
        field(0x8000, 23),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "reserved flag, offset 0, open port",
        field(0x8000, 22),
        Want::Allow(SSH),
    );
    c.add(
        "DF and MF, offset 0, closed port: a first fragment",
        field(0x6000, 23),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "all three flags, offset 0, closed port",
        field(0xe000, 23),
        Want::Deny(PortNotOpen),
    );
    // Same datagram (source, id, protocol) as the denied first fragment above.
    c.add(
        "DF only, offset 1: a later fragment without MF",
        field(0x4001, 22),
        Want::Deny(FragmentDropped),
    );
}

fn ipv6_fragment_cases(c: &mut Corpus) {
    let header_to_23 = tcp_header(40000, 23);
    let v6frag = |l4: L4, id: u32, offset: u16, more: bool| frag(v6(l4), id, offset, more).build();
    c.add(
        "ipv6 first fragment to an open port",
        v6frag(tcp(22), 0xdead, 0, true),
        Want::Allow(SSH),
    );
    c.add(
        "ipv6 later fragment shaped like a header to 23",
        v6frag(raw(6, header_to_23.clone()), 0xdead, 1, true),
        Want::Allow(SSH),
    );
    c.add(
        "ipv6 orphan later fragment shaped like a header to 22",
        v6frag(raw(6, tcp_header(40000, 22)), 0xbeef, 1, false),
        Want::Pass(FragmentUnmatched),
    );
    c.add(
        "ipv6 atomic fragment (offset 0, no M) to a closed port",
        v6frag(tcp(23), 0xbeef, 0, false),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "ipv6 tiny first fragment: 8 bytes of TCP",
        {
            let mut b = v6frag(tcp(22), 0xf00d, 0, true);
            b.truncate(L4_V6 + 8 + 8);
            b
        },
        Want::Deny(Malformed),
    );
    c.add(
        "ipv6 fragment header cut to 4 bytes",
        v6frag(tcp(22), 0xf00e, 0, true)[..L4_V6 + 4].to_vec(),
        Want::Deny(Malformed),
    );
    // A fragment header followed by a destination-options header, as RFC 8200 orders them.
    // The first fragment's protocol is the one after the whole chain (TCP), its later
    // fragments' the one after their fragment header (60): IPv6 fragments are therefore keyed
    // without the protocol, as the kernel reassembles them (found by this corpus).
    let body = |offset: u16, more: bool, id: u32| {
        let mut b = vec![0u8; 7];
        b[1..3].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        b[3..7].copy_from_slice(&id.to_be_bytes());
        b
    };
    c.add(
        "ipv6 first fragment, then destination options, to an open port",
        {
            let mut f = v6(tcp(22));
            f.v6_ext = vec![(44, body(0, true, 0xd0d0)), (60, vec![0; 6])];
            f.build()
        },
        Want::Allow(SSH),
    );
    c.add(
        "ipv6 later fragment of that datagram (next header 60, as sent)",
        v6frag(raw(60, vec![0; 16]), 0xd0d0, 2, false),
        Want::Allow(SSH),
    );
    // The outer fragment header says "later" (of a datagram never allowed): what follows it,
    // a first-fragment header and a TCP header to 22, is payload.
    c.add(
        "ipv6 two fragment headers, the outer one a later fragment of nothing",
        {
            let mut f = v6(raw(6, tcp_header(40000, 22)));
            f.v6_ext = vec![(44, vec![0, 0, 0x09, 0, 0, 0x77, 0x77])];
            f.frag = Some((0x1234, 0, true));
            f.build()
        },
        Want::Pass(FragmentUnmatched),
    );
}

/// A 20-byte TCP header (data offset 5, SYN).
fn tcp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x02;
    h
}

fn transport_cases(c: &mut Corpus) {
    let ssh = v4(tcp(22)).build();
    for doff in 0u8..5 {
        c.add(
            format!("TCP data offset {doff} < 5"),
            with(ssh.clone(), L4_V4 + 12, &[doff << 4]),
            Want::Deny(Malformed),
        );
    }
    // Data offset 15 with 20 bytes: the parsers read the ports (where the kernel reads them);
    // the kernel discards the segment for its short header.
    c.add(
        "TCP data offset 15 beyond the packet, open port",
        with(ssh.clone(), L4_V4 + 12, &[0xf0]),
        Want::Allow(SSH),
    );
    c.add(
        "TCP data offset 15 beyond the packet, closed port",
        with(v4(tcp(23)).build(), L4_V4 + 12, &[0xf0]),
        Want::Deny(PortNotOpen),
    );
    let mut long = v4(tcp(22));
    long.payload = vec![1; 40];
    c.add(
        "TCP data offset 15 with 40 option bytes",
        with(long.build(), L4_V4 + 12, &[0xf0]),
        Want::Allow(SSH),
    );
    c.add(
        "TCP 19 bytes",
        ssh[..L4_V4 + 19].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "UDP 7 bytes",
        v4(udp(53)).build()[..L4_V4 + 7].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "SCTP 11 bytes",
        v4(L4::Sctp {
            sport: 1,
            dport: 3868,
        })
        .build()[..L4_V4 + 11]
            .to_vec(),
        Want::Deny(Malformed),
    );
}

/// Zero and maximum ports, each over IPv4 and IPv6.
fn port_cases(c: &mut Corpus) {
    let port_cases: [(&str, L4, Want); 12] = [
        ("TCP dport 0", tcp(0), Want::Deny(PortNotOpen)),
        (
            "TCP sport 0 to an open port",
            L4::Tcp {
                sport: 0,
                dport: 22,
                flags: 2,
            },
            Want::Allow(SSH),
        ),
        ("TCP dport 65535 (open)", tcp(65535), Want::Allow(TOP)),
        ("TCP dport 65534", tcp(65534), Want::Deny(PortNotOpen)),
        ("UDP dport 0", udp(0), Want::Deny(PortNotOpen)),
        (
            "UDP dport 65535 (open on TCP only)",
            udp(65535),
            Want::Deny(PortNotOpen),
        ),
        (
            "UDP sport 65535 to an open port",
            L4::Udp {
                sport: 65535,
                dport: 53,
            },
            Want::Allow(DNS),
        ),
        (
            "SCTP dport 0",
            L4::Sctp { sport: 1, dport: 0 },
            Want::Deny(PortNotOpen),
        ),
        (
            "SCTP dport 65535",
            L4::Sctp {
                sport: 1,
                dport: 65535,
            },
            Want::Deny(PortNotOpen),
        ),
        (
            "SCTP to an open port",
            L4::Sctp {
                sport: 0,
                dport: 3868,
            },
            Want::Allow(DIAMETER),
        ),
        (
            "TCP all flags to a closed port",
            L4::Tcp {
                sport: 80,
                dport: 23,
                flags: 0xff,
            },
            Want::Deny(PortNotOpen),
        ),
        (
            "TCP ACK from port 22 to a closed port (a reply with no socket)",
            L4::Tcp {
                sport: 22,
                dport: 50000,
                flags: 0x10,
            },
            Want::Deny(PortNotOpen),
        ),
    ];
    for (name, l4, want) in port_cases {
        c.add(format!("ipv4 {name}"), v4(l4.clone()).build(), want);
        c.add(format!("ipv6 {name}"), v6(l4).build(), want);
    }
    c.add(
        "TCP to an open port from a source of no rule",
        Frame::v4(STRANGER4, HOST4, tcp(22)).build(),
        Want::Deny(SourceNotAllowed),
    );
}

fn icmp_cases(c: &mut Corpus) {
    let ours = quoted_v4(0x45, 6, HOST4, PEER4, &QUOTED_PORTS);
    let quotes: [(&str, Vec<u8>); 8] = [
        ("a complete quote", ours.clone()),
        ("a quote cut inside the IP header", ours[..12].to_vec()),
        ("a quote cut before the ports", ours[..22].to_vec()),
        ("a quote with IHL 0", with(ours.clone(), 0, &[0x40])),
        ("a quote with IHL 15", with(ours.clone(), 0, &[0x4f])),
        (
            "a forged quote from another host",
            quoted_v4(0x45, 6, GUEST4, PEER4, &QUOTED_PORTS),
        ),
        ("a quote of version 6", with(ours.clone(), 0, &[0x65])),
        ("no quote", vec![]),
    ];
    for (what, quote) in quotes {
        // Destination unreachable is open by type: the quote never changes that.
        c.add(
            format!("ICMP unreachable with {what}"),
            v4(icmp(3, 4, quote.clone())).build(),
            Want::Allow(UNREACH),
        );
        // Time exceeded is not open, and no socket of this host owns the quoted flow.
        c.add(
            format!("ICMP time exceeded with {what}"),
            v4(icmp(11, 0, quote)).build(),
            Want::Deny(PortNotOpen),
        );
    }
    let ours6 = quoted_v6(6, HOST6, PEER6, &QUOTED_PORTS);
    for (what, quote) in [
        ("a complete quote", ours6.clone()),
        ("a quote cut before the ports", ours6[..41].to_vec()),
        ("a forged quote", quoted_v6(17, PEER6, HOST6, &QUOTED_PORTS)),
    ] {
        c.add(
            format!("ICMPv6 packet too big with {what}"),
            v6(icmp(2, 0, quote.clone())).build(),
            Want::Allow(TOO_BIG),
        );
        c.add(
            format!("ICMPv6 unreachable with {what}"),
            v6(icmp(1, 4, quote)).build(),
            Want::Deny(PortNotOpen),
        );
    }
    c.add(
        "ICMP echo",
        Frame::v4(STRANGER4, HOST4, icmp(8, 0, vec![])).build(),
        Want::Allow(ECHO),
    );
    c.add(
        "ICMP header of 4 bytes",
        v4(icmp(8, 0, vec![])).build()[..L4_V4 + 4].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "ICMPv6 echo, 7 bytes",
        v6(icmp(128, 0, vec![])).build()[..L4_V6 + 7].to_vec(),
        Want::Deny(Malformed),
    );
    c.add(
        "ICMPv6 echo reply (129, not open)",
        v6(icmp(129, 0, vec![])).build(),
        Want::Deny(PortNotOpen),
    );
}

fn ethertype_cases(c: &mut Corpus) {
    let body = v4(tcp(22)).build();
    for et in [
        0x88ccu16, 0x0000, 0xffff, 0x05dc, 0x9100, 0x8847, 0x8863, 0x0801,
    ] {
        c.add(
            format!("ethertype {et:#06x}"),
            with(body.clone(), 12, &et.to_be_bytes()),
            Want::Pass(NonIpPassed),
        );
    }
    c.add("ARP", arp(), Want::Pass(Arp));
    c.add("ARP with no body", arp()[..14].to_vec(), Want::Pass(Arp));
    for (proto, what) in [
        (47u8, "GRE"),
        (50, "ESP"),
        (4, "IP-in-IP"),
        (41, "IPv6-in-IPv4"),
        (0, "protocol 0"),
        (58, "ICMPv6 in IPv4"),
        (255, "reserved"),
        (89, "OSPF"),
    ] {
        c.add(
            format!("ipv4 protocol {proto} ({what})"),
            v4(raw(proto, vec![0, 22, 0, 22, 0, 0, 0, 0])).build(),
            Want::Deny(ProtoNotOpen),
        );
    }
}

fn destination_cases(c: &mut Corpus) {
    c.add(
        "TCP to a guest behind the bridge, closed port",
        to_guest(Frame::v4(STRANGER4, GUEST4, tcp(23))),
        Want::Pass(NotForHost),
    );
    c.add(
        "malformed (IHL 3) to a guest",
        with(to_guest(Frame::v4(STRANGER4, GUEST4, tcp(23))), IP, &[0x43]),
        Want::Pass(NotForHost),
    );
    c.add(
        "malformed (IHL 3) to the host",
        with(Frame::v4(STRANGER4, HOST4, tcp(23)).build(), IP, &[0x43]),
        Want::Deny(Malformed),
    );
    c.add(
        "too deep (7 headers) to a guest",
        {
            let mut f = Frame::v6(
                PEER6,
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                tcp(23),
            );
            f.v6_ext = vec![(60, vec![0; 6]); 7];
            to_guest(f)
        },
        Want::Pass(NotForHost),
    );
    // The host's MAC with an address the host has not (yet) got: the kernel would deliver it
    // (an address added a moment ago, one on lo), so it is judged; one the host routes on is
    // the kernel's to forward.
    c.add(
        "TCP to the host's MAC, an address it does not know, closed port",
        Frame::v4(STRANGER4, GUEST4, tcp(23)).build(),
        Want::Deny(PortNotOpen),
    );
    c.add(
        "malformed (IHL 3) to the host's MAC and an unknown address",
        with(Frame::v4(STRANGER4, GUEST4, tcp(23)).build(), IP, &[0x43]),
        Want::Deny(Malformed),
    );
    c.add(
        "TCP to the host's MAC, an address it routes on, closed port",
        Frame::v4(STRANGER4, [198, 19, 200, 9], tcp(23)).build(),
        Want::Pass(NotForHost),
    );
    let mut bc = Frame::v4(STRANGER4, BCAST4, udp(9999));
    bc.dst_mac = [0xff; 6];
    c.add(
        "UDP to the subnet broadcast",
        bc.build(),
        Want::Pass(BroadcastPassed),
    );
    c.add(
        "UDP to 255.255.255.255",
        Frame::v4(STRANGER4, [255; 4], udp(9999)).build(),
        Want::Pass(BroadcastPassed),
    );
    c.add(
        "TCP to a multicast group",
        Frame::v4(STRANGER4, [224, 0, 0, 1], tcp(23)).build(),
        Want::Pass(BroadcastPassed),
    );
    let mut m = with(Frame::v4(STRANGER4, HOST4, tcp(23)).build(), IP, &[0x43]);
    m[0] = 0x01;
    c.add(
        "malformed to the host with a multicast MAC",
        m,
        Want::Deny(Malformed),
    );
}

/// Every case.
pub(super) fn corpus() -> Corpus {
    let mut c = Corpus::default();
    truncation_cases(&mut c);
    ipv4_header_cases(&mut c);
    ipv6_ext_cases(&mut c);
    vlan_cases(&mut c);
    fragment_cases(&mut c);
    fragment_flag_cases(&mut c);
    ipv6_fragment_cases(&mut c);
    transport_cases(&mut c);
    port_cases(&mut c);
    icmp_cases(&mut c);
    ethertype_cases(&mut c);
    destination_cases(&mut c);
    c
}
