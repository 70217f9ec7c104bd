//! Hostile packets: a named corpus of malformed and crafted frames, each with the verdict it must
//! get (XDP action and the counter that records it), run through the real program
//! (`BPF_PROG_TEST_RUN`) and the reference classifier; then a campaign of mutated frames.
//!
//! The property behind every case: no malformed packet reaches a port the policy does not open.
//! An `XDP_PASS` must be explained by a rule that covers the port the packet really carries (read
//! by an independent, unlimited parser modelled on what the Linux stack delivers, not by the two
//! parsers under test), or by a pass reason that is not about ports (ARP, another ethertype,
//! another host's unicast, broadcast) and that the configuration allows.
//!
//! Replay a campaign with `PORTGUARD_SEED=<seed printed by the test>`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use Reason::{
    Arp, BroadcastPassed, FragmentDropped, Malformed, NonIpPassed, NotForHost, PortNotOpen,
    ProtoNotOpen, SourceNotAllowed, TooDeep,
};
use integration_tests::{
    DROP, PASS, TestDp,
    frames::{Frame, L4, arp},
    net::Netns,
};
use portguard::{
    compile::tables::{TableRule, build},
    policy::{Match, Proto},
};
use portguard_common::{
    classify::{Outcome, frag_key},
    config::{Config, DROP as CFG_DROP, JUDGE, PASS as CFG_PASS},
    maps::{FragKey, LOCAL_BROADCAST, LOCAL_UNICAST},
    packet::{Family, Frag, Kind, Packet},
    reason::{REASON_COUNT, Reason},
    reference::{RefEnv, parse},
    tables::Tables,
};
use rand::{Rng, SeedableRng, rngs::SmallRng, seq::IndexedRandom};

// ---------------------------------------------------------------------------------------------
// The policy every case is judged against

const HOST4: [u8; 4] = [198, 18, 0, 1];
const BCAST4: [u8; 4] = [198, 18, 0, 255];
const PEER4: [u8; 4] = [198, 18, 1, 7];
const STRANGER4: [u8; 4] = [198, 19, 200, 1];
const GUEST4: [u8; 4] = [198, 18, 0, 50];
const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PEER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// Rule slots, named so the corpus reads as the policy does.
const SSH: u32 = 0;
const DNS: u32 = 1;
const TOP: u32 = 2;
const ECHO: u32 = 3;
const DIAMETER: u32 = 4;
const UNREACH: u32 = 5;
const TOO_BIG: u32 = 6;

fn rule(slot: u32, sources: &[&str], protos: &[Proto], matches: Match) -> TableRule {
    TableRule {
        slot,
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        protos: protos.to_vec(),
        matches,
    }
}

/// A few open ports from the peers' networks, echo and two ICMP errors from anywhere. Port 0
/// is never open (the loader refuses it); port 65535 is open on TCP only.
fn rules() -> Vec<TableRule> {
    let peers = ["198.18.1.0/24", "2001:db8:1::/48"];
    let any = ["0.0.0.0/0", "::/0"];
    let icmp = |types: Vec<std::ops::RangeInclusive<u8>>| Match::Icmp { types, code: None };
    vec![
        rule(SSH, &peers, &[Proto::Tcp], Match::Ports(vec![22..=22])),
        rule(
            DNS,
            &peers,
            &[Proto::Tcp, Proto::Udp],
            Match::Ports(vec![53..=53]),
        ),
        rule(
            TOP,
            &peers,
            &[Proto::Tcp],
            Match::Ports(vec![65535..=65535]),
        ),
        rule(
            ECHO,
            &any,
            &[Proto::Icmp, Proto::Icmpv6],
            icmp(vec![8..=8, 128..=128]),
        ),
        rule(
            DIAMETER,
            &peers,
            &[Proto::Sctp],
            Match::Ports(vec![3868..=3868]),
        ),
        rule(UNREACH, &any, &[Proto::Icmp], icmp(vec![3..=3])),
        rule(TOO_BIG, &any, &[Proto::Icmpv6], icmp(vec![2..=2])),
    ]
}

/// The datapath's defaults: pass ARP, other ethertypes, other hosts' unicast and broadcast.
fn lenient() -> Config {
    Config::default()
}

/// Everything optional switched the other way: judge broadcast, drop the rest.
fn strict() -> Config {
    Config {
        broadcast: JUDGE,
        non_ip: CFG_DROP,
        not_for_host: CFG_DROP,
        ..Config::default()
    }
}

fn locals() -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        vec![IpAddr::from(HOST4), IpAddr::from(HOST6)],
        vec![IpAddr::from(BCAST4)],
    )
}

fn wide(a: &[u8]) -> [u8; 16] {
    let mut w = [0u8; 16];
    w[..a.len()].copy_from_slice(a);
    w
}

/// Both classifiers over the same tables and the same local addresses.
struct Bench<'t> {
    dp: TestDp,
    env: RefEnv<'t>,
}

impl<'t> Bench<'t> {
    fn new(tables: &'t Tables) -> Self {
        let mut dp = TestDp::new(tables);
        let (unicast, broadcast) = locals();
        dp.dp.set_local_addrs(&unicast, &broadcast).unwrap();
        let mut env = RefEnv::new(tables);
        env.local.insert((Family::V4, wide(&HOST4)), LOCAL_UNICAST);
        env.local.insert((Family::V6, HOST6), LOCAL_UNICAST);
        env.local
            .insert((Family::V4, wide(&BCAST4)), LOCAL_BROADCAST);
        Bench { dp, env }
    }

    /// Every counter: rule slots 0..=6, then reasons.
    fn counters(&self) -> Vec<u64> {
        let mut out: Vec<u64> = (0..=TOO_BIG)
            .map(|s| self.dp.dp.rule_counters(s).unwrap().packets)
            .collect();
        let mut reasons = [0u64; REASON_COUNT as usize];
        for (r, c) in self.dp.dp.reason_counters().unwrap() {
            reasons[r as usize] = c.packets;
        }
        out.extend(reasons);
        out
    }
}

/// Index of a verdict's counter in [`Bench::counters`].
fn counter_index(want: Want) -> usize {
    match want {
        Want::Allow(slot) => slot as usize,
        Want::Pass(r) | Want::Deny(r) => (TOO_BIG + 1) as usize + r as usize,
    }
}

// ---------------------------------------------------------------------------------------------
// Stated verdicts

/// The verdict a case must get (enforce mode: `Deny` drops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Allowed by the rule in this slot.
    Allow(u32),
    /// Passed for this reason.
    Pass(Reason),
    /// Dropped for this reason.
    Deny(Reason),
}

impl Want {
    fn action(self) -> u32 {
        match self {
            Want::Allow(_) | Want::Pass(_) => PASS,
            Want::Deny(_) => DROP,
        }
    }

    fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Allow { slot } => Want::Allow(slot),
            Outcome::Pass(r) => Want::Pass(r),
            Outcome::Deny { reason, .. } => Want::Deny(reason),
        }
    }
}

/// One corpus case.
struct Case {
    name: String,
    frame: Vec<u8>,
    want: Want,
}

#[derive(Default)]
struct Corpus(Vec<Case>);

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

fn tcp(dport: u16) -> L4 {
    L4::Tcp {
        sport: 40000,
        dport,
        flags: 0x02,
    }
}

fn udp(dport: u16) -> L4 {
    L4::Udp {
        sport: 40000,
        dport,
    }
}

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
        Want::Deny(FragmentDropped),
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
        Want::Deny(FragmentDropped),
    );
    c.add(
        "later fragment of the same id with another protocol",
        frag(v4(raw(17, vec![0; 8])), 100, 1, false).build(),
        Want::Deny(FragmentDropped),
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
    c.add(
        "orphan later fragment shaped like a TCP header to 22",
        later(102, 1, true, tcp_header(40000, 22)),
        Want::Deny(FragmentDropped),
    );
    c.add(
        "orphan later fragment at the maximum offset",
        later(103, 0x1fff, false, tcp_header(40000, 22)),
        Want::Deny(FragmentDropped),
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
        Want::Deny(FragmentDropped),
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
        Want::Deny(FragmentDropped),
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
        Frame::v4(STRANGER4, GUEST4, tcp(23)).build(),
        Want::Pass(NotForHost),
    );
    c.add(
        "malformed (IHL 3) to a guest",
        with(Frame::v4(STRANGER4, GUEST4, tcp(23)).build(), IP, &[0x43]),
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
            f.build()
        },
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

fn corpus() -> Corpus {
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

// ---------------------------------------------------------------------------------------------
// What the host's stack would see: an independent, unlimited reading of the frame

/// What an upper-layer header says, as the Linux stack would deliver it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    /// The stack discards the packet before any socket sees it (lengths do not add up,
    /// transport header cut short).
    Discarded,
    /// A non-first fragment: the datagram's port is in its first fragment.
    Later,
    /// TCP, UDP or SCTP to this destination port.
    Port(Proto, u16),
    /// ICMP or `ICMPv6` of this type and code.
    Icmp(Proto, u8, u8),
    /// Another protocol.
    Other(u8),
}

/// The IP layer of a frame.
#[derive(Clone, Copy, Debug)]
struct IpView {
    src: IpAddr,
    dst: IpAddr,
    upper: Upper,
}

/// The whole frame.
#[derive(Clone, Copy, Debug)]
enum View {
    /// Shorter than an Ethernet header.
    Runt,
    Arp,
    OtherEthertype,
    /// IPv4 or IPv6 ethertype; `None` when there is no readable fixed header of that version.
    Ip(Option<IpView>),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the frame the way the host's stack would: every VLAN tag (no depth limit), IPv4 with
/// its total length, IPv6 with its payload length and every extension header.
fn stack_view(f: &[u8]) -> View {
    if f.len() < 14 {
        return View::Runt;
    }
    let mut off = 12;
    let mut et = be16(f, off);
    while et == 0x8100 || et == 0x88a8 {
        off += 4;
        if f.len() < off + 2 {
            return View::Runt;
        }
        et = be16(f, off);
    }
    let rest = &f[off + 2..];
    match et {
        0x0806 => View::Arp,
        0x0800 => View::Ip(stack_v4(rest)),
        0x86dd => View::Ip(stack_v6(rest)),
        _ => View::OtherEthertype,
    }
}

fn stack_v4(h: &[u8]) -> Option<IpView> {
    if h.len() < 20 || h[0] >> 4 != 4 {
        return None;
    }
    let addr = |at: usize| IpAddr::from(Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3]));
    let (src, dst) = (addr(12), addr(16));
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16(h, 2));
    let upper = if ihl < 20 || total < ihl || total > h.len() {
        Upper::Discarded
    } else if be16(h, 6) & 0x1fff != 0 {
        Upper::Later
    } else {
        transport(Family::V4, h[9], &h[ihl..total])
    };
    Some(IpView { src, dst, upper })
}

fn stack_v6(h: &[u8]) -> Option<IpView> {
    if h.len() < 40 || h[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        IpAddr::from(Ipv6Addr::from(a))
    };
    let (src, dst) = (addr(8), addr(24));
    let len = usize::from(be16(h, 4));
    let view = |upper| Some(IpView { src, dst, upper });
    if 40 + len > h.len() {
        return view(Upper::Discarded);
    }
    let data = &h[40..40 + len];
    let mut next = h[6];
    let mut at = 0;
    // However long the chain: the stack has no limit but the packet's length.
    loop {
        match next {
            0 | 43 | 60 => {
                if data.len() < at + 2 || data.len() < at + (usize::from(data[at + 1]) + 1) * 8 {
                    return view(Upper::Discarded);
                }
                next = data[at];
                at += (usize::from(data[at + 1]) + 1) * 8;
            }
            44 => {
                if data.len() < at + 8 {
                    return view(Upper::Discarded);
                }
                if be16(data, at + 2) >> 3 != 0 {
                    return view(Upper::Later);
                }
                next = data[at];
                at += 8;
            }
            _ => return view(transport(Family::V6, next, &data[at..])),
        }
    }
}

fn transport(family: Family, proto: u8, l4: &[u8]) -> Upper {
    let port = |p| {
        if l4.len() < 4 {
            Upper::Discarded
        } else {
            Upper::Port(p, be16(l4, 2))
        }
    };
    match (family, proto) {
        (_, 6) => port(Proto::Tcp),
        (_, 17) => port(Proto::Udp),
        (_, 132) => port(Proto::Sctp),
        (Family::V4, 1) | (Family::V6, 58) if l4.len() < 8 => Upper::Discarded,
        (Family::V4, 1) => Upper::Icmp(Proto::Icmp, l4[0], l4[1]),
        (Family::V6, 58) => Upper::Icmp(Proto::Icmpv6, l4[0], l4[1]),
        _ => Upper::Other(proto),
    }
}

// ---------------------------------------------------------------------------------------------
// The invariant

fn opens(r: &TableRule, src: IpAddr, upper: Upper) -> bool {
    let port_or_type = match (upper, &r.matches) {
        (Upper::Port(p, port), Match::Ports(ranges)) => {
            r.protos.contains(&p) && ranges.iter().any(|x| x.contains(&port))
        }
        (Upper::Icmp(p, ty, code), Match::Icmp { types, code: want }) => {
            r.protos.contains(&p)
                && types.iter().any(|x| x.contains(&ty))
                && want.is_none_or(|w| w == code)
        }
        _ => false,
    };
    port_or_type && r.sources.iter().any(|n| n.contains(&src))
}

fn is_local(dst: IpAddr) -> bool {
    locals().0.contains(&dst)
}

fn is_group_or_broadcast(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || locals().1.contains(&dst),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// Whether a verdict is one the policy and configuration explain (see the module doc).
/// `firsts` holds the rule that allowed each first fragment seen so far.
fn explained(
    outcome: Outcome,
    p: &Packet,
    frame: &[u8],
    cfg: &Config,
    rules: &[TableRule],
    firsts: &mut HashMap<FragKey, u32>,
) -> Result<(), String> {
    let view = stack_view(frame);
    match outcome {
        Outcome::Deny { .. } => Ok(()),
        Outcome::Allow { slot } => {
            let rule = rules
                .iter()
                .find(|r| r.slot == slot)
                .ok_or_else(|| format!("allowed by unknown slot {slot}"))?;
            let View::Ip(Some(ip)) = view else {
                return Err(format!("allowed by {slot}, but the stack sees {view:?}"));
            };
            if p.kind != Kind::Ip {
                return Err(format!("allowed a {:?} packet", p.kind));
            }
            if p.frag == Frag::Later {
                if !matches!(ip.upper, Upper::Later | Upper::Discarded) {
                    return Err(format!(
                        "judged as a later fragment, but the stack reads {:?}",
                        ip.upper
                    ));
                }
                return match firsts.get(&frag_key(p)) {
                    Some(s) if *s == slot => Ok(()),
                    other => Err(format!(
                        "later fragment allowed by {slot}; its first fragment was allowed by {other:?}"
                    )),
                };
            }
            if p.frag == Frag::First {
                firsts.insert(frag_key(p), slot);
            }
            match ip.upper {
                Upper::Discarded => Ok(()),
                upper if opens(rule, ip.src, upper) => Ok(()),
                upper => Err(format!(
                    "allowed by slot {slot} ({rule:?}), but the stack delivers {upper:?} from {}",
                    ip.src
                )),
            }
        }
        Outcome::Pass(reason) => {
            let ok = match (reason, view) {
                (Arp, View::Arp) => true,
                (NonIpPassed, View::OtherEthertype) => cfg.non_ip == CFG_PASS,
                (NotForHost, View::Ip(Some(ip))) => {
                    cfg.not_for_host == CFG_PASS
                        && !is_local(ip.dst)
                        && !is_group_or_broadcast(ip.dst)
                }
                (BroadcastPassed, View::Ip(Some(ip))) => {
                    cfg.broadcast == CFG_PASS && is_group_or_broadcast(ip.dst)
                }
                // No socket in the test's namespace, enforce mode: nothing else may pass.
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("passed as {reason:?}, but the stack sees {view:?}"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus test

#[test]
fn hostile_corpus_gets_its_stated_verdicts_in_both_classifiers() {
    Netns::new().run(|| {
        let rules = rules();
        let cfg = lenient();
        let tables = build(&rules, cfg).expect("tables");
        let mut b = Bench::new(&tables);
        let corpus = corpus();
        let mut firsts = HashMap::new();
        let mut failures = Vec::new();
        for case in &corpus.0 {
            let parsed = parse(&case.frame);
            let outcome = b.env.judge(&case.frame);
            let mut problems = Vec::new();
            if Want::of(outcome) != case.want {
                problems.push(format!("reference: {outcome:?}"));
            }
            if let Err(e) = explained(outcome, &parsed, &case.frame, &cfg, &rules, &mut firsts) {
                problems.push(format!("invariant: {e}"));
            }
            // The kernel refuses test runs shorter than an Ethernet header.
            if case.frame.len() >= 14 {
                let before = b.counters();
                let action = b.dp.run(&case.frame);
                let after = b.counters();
                if action != case.want.action() {
                    problems.push(format!("XDP action {action}"));
                }
                let moved: Vec<usize> = (0..after.len())
                    .filter(|i| after[*i] != before[*i])
                    .collect();
                if moved != [counter_index(case.want)] {
                    problems.push(format!(
                        "XDP counted under {moved:?}, want [{}]",
                        counter_index(case.want)
                    ));
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{}: want {:?}; {}\n  frame: {:02x?}",
                    case.name,
                    case.want,
                    problems.join("; "),
                    case.frame
                ));
            }
        }
        println!("hostile corpus: {} cases", corpus.0.len());
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            corpus.0.len(),
            failures.join("\n")
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The campaign: mutated corpus frames

const CAMPAIGN_FRAMES: usize = 200_000;
/// Frames per loaded program: a fresh fragment table and counters every batch, well inside the
/// fragment map's LRU capacity so that its evictions cannot make the two sides differ.
const BATCH: usize = 20_000;

/// Offsets where a header field starts in the common layouts (untagged, one tag, two tags).
const HOT: [usize; 24] = [
    12, 13, 14, 15, 16, 17, 18, 20, 21, 23, 30, 34, 36, 40, 46, 47, 54, 55, 56, 57, 58, 60, 62, 66,
];
const EXTREMES: [u8; 12] = [
    0x00, 0xff, 0x0f, 0xf0, 0x45, 0x4f, 0x40, 0x60, 0x81, 0x88, 0x86, 0x2c,
];

fn mutate(r: &mut SmallRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    for _ in 0..r.random_range(1..=4) {
        match r.random_range(0..10) {
            0 | 1 if !f.is_empty() => {
                let i = r.random_range(0..f.len());
                f[i] = r.random();
            }
            2 | 3 => {
                let i = *HOT.choose(r).unwrap();
                if i < f.len() {
                    f[i] = *EXTREMES.choose(r).unwrap();
                }
            }
            4 => {
                let len = r.random_range(0..=f.len());
                f.truncate(len);
            }
            5 => {
                let at = r.random_range(0..=f.len());
                let n = *[1usize, 2, 4, 8, 40].choose(r).unwrap();
                let bytes: Vec<u8> = (0..n).map(|_| r.random()).collect();
                f.splice(at..at, bytes);
            }
            6 if !f.is_empty() => {
                let at = r.random_range(0..f.len());
                let n = r.random_range(1..=8usize.min(f.len() - at));
                f.drain(at..at + n);
            }
            // Duplicate a block: repeated VLAN tags, extension headers, IP headers.
            7 if f.len() > 16 => {
                let at = r.random_range(12..f.len());
                let n = *[4usize, 8, 16, 20, 40].choose(r).unwrap();
                let end = (at + n).min(f.len());
                let block = f[at..end].to_vec();
                f.splice(at..at, block);
            }
            // Splice: this frame's head onto another's tail.
            8 => {
                let cut = r.random_range(0..=f.len());
                let from = r.random_range(0..=other.len());
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            // Ethertype or VLAN TPID swapped for another known one.
            _ => {
                let at = *[12usize, 16, 20].choose(r).unwrap();
                if at + 2 <= f.len() {
                    let et: u16 = *[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]
                        .choose(r)
                        .unwrap();
                    f[at..at + 2].copy_from_slice(&et.to_be_bytes());
                }
            }
        }
    }
    f.truncate(1500);
    f
}

#[test]
fn mutated_hostile_frames_never_reach_a_closed_port() {
    let seed: u64 = std::env::var("PORTGUARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("hostile campaign seed: {seed} (replay with PORTGUARD_SEED={seed})");
    let frames = Netns::new().run(move || campaign(seed));
    assert_eq!(frames, CAMPAIGN_FRAMES);
}

fn campaign(seed: u64) -> usize {
    let mut r = SmallRng::seed_from_u64(seed);
    let corpus: Vec<Vec<u8>> = corpus().0.into_iter().map(|c| c.frame).collect();
    let rules = rules();
    let mut done = 0;
    // Allowed by a rule, passed for another reason, dropped: evidence the campaign reaches all.
    let mut tally = [0usize; 3];
    for batch in 0..CAMPAIGN_FRAMES / BATCH {
        let cfg = if batch % 2 == 0 { lenient() } else { strict() };
        let tables = build(&rules, cfg).expect("tables");
        let mut b = Bench::new(&tables);
        let mut firsts = HashMap::new();
        let mut want = vec![0u64; (TOO_BIG + 1 + REASON_COUNT) as usize];
        for i in 0..BATCH {
            let base = corpus.choose(&mut r).unwrap();
            let other = corpus.choose(&mut r).unwrap();
            let frame = mutate(&mut r, base, other);
            let parsed = parse(&frame);
            let outcome = b.env.judge(&frame);
            let at = || format!("seed {seed}, batch {batch}, frame {i}");
            if let Err(e) = explained(outcome, &parsed, &frame, &cfg, &rules, &mut firsts) {
                panic!(
                    "{}: {e}\n  reference: {outcome:?}\n  frame: {frame:02x?}",
                    at()
                );
            }
            if frame.len() < 14 {
                continue;
            }
            want[counter_index(Want::of(outcome))] += 1;
            tally[match outcome {
                Outcome::Allow { .. } => 0,
                Outcome::Pass(_) => 1,
                Outcome::Deny { .. } => 2,
            }] += 1;
            let action = b.dp.run(&frame);
            assert_eq!(
                action,
                Want::of(outcome).action(),
                "{}: XDP action {action}, reference {outcome:?}\n  frame: {frame:02x?}",
                at()
            );
        }
        assert_eq!(
            b.counters(),
            want,
            "seed {seed}, batch {batch}: XDP counters (rule slots 0..=6, then reasons) differ from the reference's"
        );
        done += BATCH;
    }
    let [allowed, passed, dropped] = tally;
    println!(
        "hostile campaign: {done} frames ({allowed} allowed by a rule, {passed} passed for another reason, {dropped} dropped), 0 unexplained passes, 0 disagreements"
    );
    done
}
