//! Packet-level tests: crafted frames through the real XDP program with `BPF_PROG_TEST_RUN`;
//! verdicts and counters checked against what the policy says.

use std::net::IpAddr;

use integration_tests::{
    DROP, PASS, TestDp,
    addrs::{BCAST4, GUEST4, HOST4, HOST6, PEER4, PEER6, PEERS, STRANGER4},
    frames::{Frame, L4, arp, tcp},
    net::Netns,
    rules::{echo_from_anywhere, rule, ssh_from_peers},
};
use portguard::{
    compile::tables::build,
    policy::{Match, Proto},
};
use portguard_common::{config::Config, reason::Reason};

/// Slot 0: tcp/22 from the peers' networks; slot 1: tcp+udp 5900-6923 from the same; slot 2:
/// icmp echo from anywhere; slot 3: udp 4789 from 198.18.1.7/32.
fn setup() -> TestDp {
    let rules = [
        ssh_from_peers(0),
        rule(
            1,
            &PEERS,
            &[Proto::Tcp, Proto::Udp],
            Match::Ports(vec![5900..=6923]),
        ),
        echo_from_anywhere(2),
        rule(
            3,
            &["198.18.1.7/32"],
            &[Proto::Udp],
            Match::Ports(vec![4789..=4789]),
        ),
    ];
    let tables = build(&rules, Config::default()).unwrap();
    let mut t = TestDp::new(&tables);
    t.dp.set_local_addrs(
        &[IpAddr::from(HOST4), IpAddr::from(HOST6)],
        &[IpAddr::from(BCAST4)],
    )
    .unwrap();
    t
}

/// Tests run in a namespace of their own, so socket lookups never see the machine's sockets.
fn in_ns(f: impl FnOnce() + Send + 'static) {
    Netns::new().run(f);
}

#[test]
fn allowed_and_denied_tcp_are_counted_per_rule_and_reason() {
    in_ns(|| {
        let mut t = setup();
        let f = Frame::v4(PEER4, HOST4, tcp(22)).build();
        assert_eq!(t.run(&f), PASS);
        assert_eq!(t.run(&f), PASS);
        let c = t.dp.rule_counters(0).unwrap();
        assert_eq!(c.packets, 2);
        assert_eq!(c.bytes, 2 * f.len() as u64);
        assert_eq!(t.run(&Frame::v4(PEER4, HOST4, tcp(23)).build()), DROP);
        assert_eq!(t.reason(Reason::PortNotOpen), 1);
        // The ICMP rule's `any` source gives every address a source class: a stranger is
        // "source not allowed" here, not "no source role".
        assert_eq!(t.run(&Frame::v4(STRANGER4, HOST4, tcp(22)).build()), DROP);
        assert_eq!(t.reason(Reason::SourceNotAllowed), 1);
        assert_eq!(
            t.run(
                &Frame::v4(
                    [198, 18, 1, 8],
                    HOST4,
                    L4::Udp {
                        sport: 1,
                        dport: 4789
                    }
                )
                .build()
            ),
            DROP
        );
        assert_eq!(t.reason(Reason::SourceNotAllowed), 2);
        assert_eq!(t.reason(Reason::NoSourceRole), 0);
        assert_eq!(t.rule_total(), 2, "no other rule counted");
    });
}

trait Totals {
    fn rule_total(&self) -> u64;
}

impl Totals for TestDp {
    fn rule_total(&self) -> u64 {
        (0..4)
            .map(|s| self.dp.rule_counters(s).unwrap().packets)
            .sum()
    }
}

#[test]
fn ranges_udp_icmp_and_ipv6_follow_their_rules() {
    in_ns(|| {
        let mut t = setup();
        assert_eq!(
            t.run(
                &Frame::v4(
                    PEER4,
                    HOST4,
                    L4::Udp {
                        sport: 5,
                        dport: 6923
                    }
                )
                .build()
            ),
            PASS
        );
        assert_eq!(
            t.run(
                &Frame::v4(
                    PEER4,
                    HOST4,
                    L4::Udp {
                        sport: 5,
                        dport: 6924
                    }
                )
                .build()
            ),
            DROP
        );
        assert_eq!(t.dp.rule_counters(1).unwrap().packets, 1);
        let echo = L4::Icmp {
            ty: 8,
            code: 0,
            quote: vec![],
        };
        assert_eq!(t.run(&Frame::v4(STRANGER4, HOST4, echo).build()), PASS);
        let ts = L4::Icmp {
            ty: 13,
            code: 0,
            quote: vec![],
        };
        assert_eq!(t.run(&Frame::v4(STRANGER4, HOST4, ts).build()), DROP);
        assert_eq!(t.run(&Frame::v6(PEER6, HOST6, tcp(22)).build()), PASS);
        assert_eq!(
            t.run(
                &Frame::v6(
                    PEER6,
                    HOST6,
                    L4::Icmp {
                        ty: 128,
                        code: 0,
                        quote: vec![]
                    }
                )
                .build()
            ),
            PASS
        );
        assert_eq!(t.run(&Frame::v6(PEER6, HOST6, tcp(80)).build()), DROP);
        assert_eq!(t.dp.rule_counters(0).unwrap().packets, 1);
        assert_eq!(t.dp.rule_counters(2).unwrap().packets, 2);
        assert_eq!(
            t.run(
                &Frame::v4(
                    PEER4,
                    HOST4,
                    L4::Sctp {
                        sport: 1,
                        dport: 22
                    }
                )
                .build()
            ),
            DROP
        );
        assert_eq!(
            t.run(
                &Frame::v4(
                    PEER4,
                    HOST4,
                    L4::Raw {
                        proto: 47,
                        bytes: vec![0; 8]
                    }
                )
                .build()
            ),
            DROP
        );
        assert_eq!(t.reason(Reason::ProtoNotOpen), 1);
    });
}

#[test]
fn arp_non_ip_bridged_guests_and_broadcast_pass_by_default() {
    in_ns(|| {
        let mut t = setup();
        assert_eq!(t.run(&arp()), PASS);
        assert_eq!(t.reason(Reason::Arp), 1);
        let mut lldp = arp();
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(t.run(&lldp), PASS);
        assert_eq!(t.reason(Reason::NonIpPassed), 1);
        // A guest behind the bridge: any port, any source.
        assert_eq!(
            t.run(&Frame::v4(STRANGER4, GUEST4, tcp(3389)).build()),
            PASS
        );
        assert_eq!(t.reason(Reason::NotForHost), 1);
        let mut bc = Frame::v4(
            STRANGER4,
            BCAST4,
            L4::Udp {
                sport: 1,
                dport: 3080,
            },
        );
        bc.dst_mac = [0xff; 6];
        assert_eq!(t.run(&bc.build()), PASS);
        assert_eq!(t.reason(Reason::BroadcastPassed), 1);
    });
}

/// An address the local map does not hold is the host's when the frame is for the host's MAC
/// and the kernel would not forward it: an `AnyIP` route here, an address added a moment ago,
/// one on `lo`. The same address to another station's MAC is a guest's.
#[test]
fn unknown_addresses_sent_to_the_hosts_mac_are_judged_as_the_kernel_routes_them() {
    in_ns(|| {
        let out = std::process::Command::new("ip")
            .args(["route", "add", "local", "198.19.77.0/24", "dev", "lo"])
            .output()
            .expect("ip route");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut t = setup();
        let host_mac = [0x02, 0x70, 0x67, 0, 0, 9];
        t.dp.set_host_macs(&[host_mac]).unwrap();
        let anyip = [198, 19, 77, 5];
        let mut to_host = Frame::v4(STRANGER4, anyip, tcp(23));
        to_host.dst_mac = host_mac;
        assert_eq!(
            t.run(&to_host.build()),
            DROP,
            "AnyIP address, host MAC: judged"
        );
        assert_eq!(t.reason(Reason::PortNotOpen), 1);
        let mut allowed = Frame::v4(PEER4, anyip, tcp(22));
        allowed.dst_mac = host_mac;
        assert_eq!(t.run(&allowed.build()), PASS, "and its rules apply");
        let to_guest = Frame::v4(STRANGER4, anyip, tcp(23));
        assert_eq!(
            t.run(&to_guest.build()),
            PASS,
            "another station's MAC: a guest's"
        );
        assert_eq!(t.reason(Reason::NotForHost), 1);
        // No route at all, forwarding off (a namespace's default): the kernel would drop it,
        // so it is judged rather than passed.
        let mut nowhere = Frame::v4(STRANGER4, [198, 19, 78, 5], tcp(23));
        nowhere.dst_mac = host_mac;
        assert_eq!(
            t.run(&nowhere.build()),
            DROP,
            "unroutable, host MAC: judged"
        );
    });
}

#[test]
fn vlan_tags_are_judged_like_untagged_and_a_third_tag_is_too_deep() {
    in_ns(|| {
        let mut t = setup();
        let mut f = Frame::v4(PEER4, HOST4, tcp(22));
        f.vlans = vec![(0x88a8, 100), (0x8100, 200)];
        assert_eq!(t.run(&f.build()), PASS);
        let mut g = Frame::v4(PEER4, HOST4, tcp(23));
        g.vlans = vec![(0x8100, 5)];
        assert_eq!(t.run(&g.build()), DROP);
        let mut h = Frame::v4(PEER4, HOST4, tcp(22));
        h.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
        assert_eq!(t.run(&h.build()), DROP);
        assert_eq!(t.reason(Reason::TooDeep), 1);
        assert_eq!(t.dp.rule_counters(0).unwrap().packets, 1);
    });
}

#[test]
fn fragments_follow_their_first_fragment_and_are_never_read_as_ports() {
    in_ns(|| {
        let mut t = setup();
        let mut first = Frame::v4(
            PEER4,
            HOST4,
            L4::Udp {
                sport: 9,
                dport: 6000,
            },
        );
        first.frag = Some((77, 0, true));
        assert_eq!(t.run(&first.build()), PASS);
        // Later fragment: its payload starts with bytes that would read as port 22 -- ignored.
        let mut later = Frame::v4(
            PEER4,
            HOST4,
            L4::Raw {
                proto: 17,
                bytes: vec![0, 22, 0, 22, 0, 0, 0, 0],
            },
        );
        later.frag = Some((77, 185, false));
        assert_eq!(t.run(&later.build()), PASS);
        assert_eq!(t.dp.rule_counters(1).unwrap().packets, 2);
        // Before its first fragment (reordered): held by the kernel, which delivers nothing
        // without the first fragment; passed, counted as unmatched.
        let mut orphan = later.clone();
        orphan.frag = Some((78, 185, false));
        assert_eq!(t.run(&orphan.build()), PASS);
        assert_eq!(t.reason(Reason::FragmentUnmatched), 1);
        let mut denied_first = Frame::v4(
            PEER4,
            HOST4,
            L4::Udp {
                sport: 9,
                dport: 7000,
            },
        );
        denied_first.frag = Some((79, 0, true));
        assert_eq!(t.run(&denied_first.build()), DROP);
        let mut its_later = orphan.clone();
        its_later.frag = Some((79, 185, false));
        assert_eq!(t.run(&its_later.build()), DROP);
        assert_eq!(t.reason(Reason::FragmentDropped), 1);
        // IPv6: fragment header after a hop-by-hop and a destination-options header.
        let mut v6 = Frame::v6(PEER6, HOST6, tcp(22));
        v6.v6_ext = vec![(0, vec![0; 6]), (60, vec![0; 14])];
        v6.frag = Some((0xdead_beef, 0, true));
        assert_eq!(t.run(&v6.build()), PASS);
        let mut v6later = Frame::v6(
            PEER6,
            HOST6,
            L4::Raw {
                proto: 6,
                bytes: vec![0; 8],
            },
        );
        v6later.frag = Some((0xdead_beef, 100, false));
        assert_eq!(t.run(&v6later.build()), PASS);
        assert_eq!(t.dp.rule_counters(0).unwrap().packets, 2);
    });
}

#[test]
fn truncation_at_every_byte_never_reaches_a_closed_port() {
    in_ns(|| {
        let mut t = setup();
        for (frame, allowed) in [
            (Frame::v4(PEER4, HOST4, tcp(22)).build(), true),
            (Frame::v4(PEER4, HOST4, tcp(25)).build(), false),
            (Frame::v6(PEER6, HOST6, tcp(22)).build(), true),
            (Frame::v6(PEER6, HOST6, tcp(25)).build(), false),
        ] {
            for len in 0..frame.len() {
                let cut = &frame[..len];
                if cut.len() < 14 {
                    // The kernel refuses test frames shorter than an Ethernet header.
                    continue;
                }
                assert_eq!(t.run(cut), DROP, "truncated at {len} of {}", frame.len());
            }
            assert_eq!(t.run(&frame) == PASS, allowed);
        }
        assert!(t.reason(Reason::Malformed) > 50);
    });
}

#[test]
fn bad_ipv4_header_length_and_tcp_offset_are_malformed() {
    in_ns(|| {
        let mut t = setup();
        let mut f = Frame::v4(PEER4, HOST4, tcp(22)).build();
        f[14] = 0x44; // IHL 4 < 5
        assert_eq!(t.run(&f), DROP);
        let mut g = Frame::v4(PEER4, HOST4, tcp(22)).build();
        g[14] = 0x4f; // IHL 15: options beyond the packet
        assert_eq!(t.run(&g), DROP);
        let mut h = Frame::v4(PEER4, HOST4, tcp(22)).build();
        h[14 + 20 + 12] = 4 << 4; // data offset 4 < 5
        assert_eq!(t.run(&h), DROP);
        assert_eq!(t.reason(Reason::Malformed), 3);
        let mut opts = Frame::v4(PEER4, HOST4, tcp(22));
        opts.v4_options = vec![1, 1, 1, 0, 0x44, 4, 5, 0];
        assert_eq!(
            t.run(&opts.build()),
            PASS,
            "IPv4 options are skipped, not misread"
        );
    });
}
